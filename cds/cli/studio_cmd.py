"""`cds studio`: the rule studio on loopback (cds.studio)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def studio(
    rules: Annotated[
        Path | None, typer.Option(help="Rules folder (default: OSTEOHOOKS_RULES or rules/).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder of patients to pick from (default: the bundled stories)."),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="'Today' as an ISO date (default: today).")
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Store of the feedback page (default: OSTEOHOOKS_DATABASE_URL, else the "
            "service's default sqlite:///./osteohooks.db)."
        ),
    ] = None,
) -> None:
    """Open the rule studio at http://127.0.0.1:PORT/ (loopback only)."""
    import uvicorn

    from cds.cli.replay_cmd import parse_as_of
    from cds.rules import RuleSetError, default_rules_dir
    from cds.settings import Settings
    from cds.studio.app import Studio, create_app

    rules_dir = rules or default_rules_dir()
    data_dir = data
    if data_dir is None:
        bundled = rules_dir.resolve().parent / "tests" / "fixtures" / "stories"
        data_dir = bundled if bundled.is_dir() else None
    try:
        state = Studio(
            rules_dir, data_dir, parse_as_of(as_of), database_url or Settings().database_url
        )
    except RuleSetError as exc:
        typer.echo(f"error: the rules in {rules_dir} do not load:\n{exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"rule studio: http://127.0.0.1:{port}/  (rules {state.rules_dir})")
    uvicorn.run(create_app(state), host="127.0.0.1", port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("studio")(studio)
