"""`cds report RESULTS --out report.html`: the population report of a replay run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EXIT_OK = 0
EXIT_FAILED = 1


def report(
    results: Annotated[
        Path,
        typer.Argument(
            help="Replay results: an NDJSON file (`cds replay ... --format ndjson --out "
            "FILE`) or a Parquet folder (`--format parquet --out DIR`).",
            show_default=False,
            metavar="RESULTS",
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="The HTML page to write (one self-contained file).")
    ] = Path("report.html"),
) -> None:
    """Charts of a replay run: categories, cards, rules, findings, rescans, data errors."""
    from cds.replay.population import ReportError, write_report

    try:
        counts = write_report(results, out)
    except ReportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    except OSError as exc:
        typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    typer.echo(f"{out}: {counts.inputs} inputs, {counts.cards} cards", err=True)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
