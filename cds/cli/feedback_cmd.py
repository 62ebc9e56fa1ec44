"""`cds feedback report`: how clinicians answered each rule's cards (alert fatigue)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

import typer

app = typer.Typer(help="Feedback analytics from the service's store.", no_args_is_help=True)


class ReportFormat(StrEnum):
    text = "text"
    json = "json"
    csv = "csv"


def _since(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO date (YYYY-MM-DD)", param_hint="--since"
        ) from None


@app.command()
def report(
    since: Annotated[
        str | None,
        typer.Option(help="Only cards issued and answered on or after this UTC day (YYYY-MM-DD)."),
    ] = None,
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.text,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL of the store (default: OSTEOHOOKS_DATABASE_URL, else the "
            "service's default sqlite:///./osteohooks.db)."
        ),
    ] = None,
) -> None:
    """Per rule and topic: cards issued, accepted, overridden, override reasons and the
    acceptance trend by week; the most overridden rules first."""
    from cds.feedback_report import RENDERERS, FeedbackStoreError, build_report
    from cds.settings import Settings

    day = _since(since)
    url = database_url or Settings().database_url
    try:
        result = build_report(url, day)
    except FeedbackStoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(RENDERERS[format.value](result), nl=False)
