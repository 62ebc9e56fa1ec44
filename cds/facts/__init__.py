"""cds.facts: see docs/architecture.md."""
