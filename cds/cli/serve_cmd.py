"""`cds serve`: the CDS Hooks HTTP service under uvicorn (owned by the service work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `serve` to the top-level app."""
