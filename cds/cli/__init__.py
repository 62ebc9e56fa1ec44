"""The `cds` command line (typer). Each command group lives in its own module."""

from __future__ import annotations

from typing import Annotated

import typer

from cds.cli import (
    contract_cmd,
    feedback_cmd,
    impact_cmd,
    replay_cmd,
    report_cmd,
    rules_cmd,
    serve_cmd,
    studio_cmd,
)

app = typer.Typer(
    name="cds",
    help="osteohooks: bone density decision support (CDS Hooks 2.0.1).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        import cds

        typer.echo(f"osteohooks {cds.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """osteohooks: bone density decision support (CDS Hooks 2.0.1)."""


app.add_typer(rules_cmd.app, name="rules")
app.add_typer(contract_cmd.app, name="contract")
app.add_typer(feedback_cmd.app, name="feedback")
replay_cmd.register(app)
impact_cmd.register(app)
report_cmd.register(app)
serve_cmd.register(app)
studio_cmd.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
