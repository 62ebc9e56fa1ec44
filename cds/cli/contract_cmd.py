"""`cds contract schema`: the JSON Schema of the card payload, for integrators."""

from __future__ import annotations

import json

import typer

from cds.contracts.cards import payload_schema

app = typer.Typer(help="The public card contract (docs/card-contract.md).", no_args_is_help=True)


@app.command()
def schema() -> None:
    """Print the JSON Schema (2020-12) of a card's topic and payload."""
    typer.echo(json.dumps(payload_schema(), indent=2, sort_keys=True))
