"""cds.api: see docs/architecture.md."""
