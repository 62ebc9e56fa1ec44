"""The rule studio: a local page for rule authors (see cds.studio.app)."""
