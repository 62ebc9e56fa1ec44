"""`cds rules lint|test|docs|compile`: rule author tooling (owned by the rule engine work)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Lint, test, document and compile the YAML rules.", no_args_is_help=True)
