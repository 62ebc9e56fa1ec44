"""cds.fhir: see docs/architecture.md."""
