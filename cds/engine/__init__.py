"""cds.engine: see docs/architecture.md."""
