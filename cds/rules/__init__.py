"""cds.rules: see docs/architecture.md."""
