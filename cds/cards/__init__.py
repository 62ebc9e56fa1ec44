"""cds.cards: see docs/architecture.md."""
