"""cds.api: the CDS Hooks 2.0.1 HTTP service (see docs/architecture.md, docs/ehr-integration.md)."""

from cds.api.app import create_app

__all__ = ["create_app"]
