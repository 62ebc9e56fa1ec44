"""`cds replay` and `cds explain`: offline evaluation for QA (owned by the replay work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `replay` and `explain` to the top-level app."""
