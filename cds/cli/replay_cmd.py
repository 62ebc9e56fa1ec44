"""`cds replay` and `cds explain`: offline evaluation for QA (owned by the replay work).

Exit status of `cds replay`: 0 when every input was read and evaluated (and, with
`--expect`, matched its golden result); 1 when any input could not be read or evaluated,
or differed from its golden result; 2 for a usage error or a rule set that does not load.
"""

from __future__ import annotations

import os
import sys
from datetime import date
from enum import StrEnum
from io import TextIOBase
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cds.pipeline import Evaluator

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Hook(StrEnum):
    patient_view = "patient-view"
    order_select = "order-select"
    order_sign = "order-sign"


class ReplayFormat(StrEnum):
    text = "text"
    ndjson = "ndjson"
    junit = "junit"
    parquet = "parquet"


class Engine(StrEnum):
    local = "local"
    dask = "dask"


class ExplainFormat(StrEnum):
    text = "text"
    json = "json"


#: `--scratch DIR` of `cds replay` and `cds impact`: where an export is grouped.
ScratchOption = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        file_okay=False,
        writable=True,
        help="Folder for the temporary files of grouping a Bulk Data export (it needs "
        "about the export's uncompressed size of free disk; default: the system's "
        "temporary folder, TMPDIR). With --engine dask the workers must reach it at "
        "the same path.",
        show_default=False,
    ),
]


def default_rules_dir() -> Path:
    """OSTEOHOOKS_RULES, else the bundled `rules/` folder (as the service uses)."""
    from cds.rules import default_rules_dir as rules_default

    return rules_default()


def default_workers() -> int:
    """One worker process per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def parse_as_of(value: str | None) -> date:
    """The --as-of date (ISO 8601, YYYY-MM-DD); today when not given."""
    if value is None:
        return date.today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO date (YYYY-MM-DD)", param_hint="--as-of"
        ) from None


def _load_evaluator(rules_dir: Path) -> Evaluator:
    from cds.pipeline import Evaluator

    if not rules_dir.is_dir():
        typer.echo(
            f"error: rules folder {rules_dir} does not exist "
            "(give --rules DIR or set OSTEOHOOKS_RULES)",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    try:
        return Evaluator.from_rules_dir(rules_dir)
    except Exception as exc:  # RuleSetError and anything else that stops the rules loading
        typer.echo(f"error: the rules in {rules_dir} do not load:\n{exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


class _Stdout:
    """Writes to whatever `sys.stdout` is now: under the progress bar rich swaps in a
    proxy that prints above the bar, so report lines and the bar do not collide."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def replay(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="FHIR Bundle / CDS Hooks request / NDJSON files, folders (recursive) or "
            "globs (quote them: 'cases/**/*.json').",
            show_default=False,
            metavar="PATH",
        ),
    ],
    hook: Annotated[
        Hook | None,
        typer.Option(help="Hook for Bundles (requests name their own). Default patient-view."),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="'Today' as an ISO date, for reproducible results."),
    ] = None,
    rules: Annotated[
        Path | None,
        typer.Option(help="Rules folder (default: OSTEOHOOKS_RULES or the bundled rules)."),
    ] = None,
    format: Annotated[
        ReplayFormat, typer.Option("--format", help="Report format.")
    ] = ReplayFormat.text,
    expect: Annotated[
        Path | None,
        typer.Option(help="Golden results folder: compare (uuids and card order ignored)."),
    ] = None,
    update_expect: Annotated[
        bool, typer.Option("--update-expect", help="Write the golden results into --expect.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Worker processes (default: one per CPU; 0: evaluate in this process, "
            "no crash containment).",
            show_default=False,
        ),
    ] = None,
    deadline: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds one input may take in a worker; a worker over it is replaced and "
            "the input tried again.",
        ),
    ] = 120.0,
    max_tries: Annotated[
        int,
        typer.Option(
            min=1,
            help="Times an input is tried when its worker dies or overruns --deadline; then "
            "it is reported failed.",
        ),
    ] = 3,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the report to this file instead of stdout (--format parquet: the "
            "folder of cards.parquet, data_errors.parquet and inputs.parquet)."
        ),
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            help="local: a process pool on this machine; dask: a dask.distributed cluster "
            "(pip install 'osteohooks[dask]'), local worker processes unless --scheduler.",
        ),
    ] = Engine.local,
    scheduler: Annotated[
        str | None,
        typer.Option(
            metavar="tcp://HOST:PORT",
            help="With --engine dask: the scheduler of an existing cluster (--workers is "
            "then ignored).",
        ),
    ] = None,
    scratch: ScratchOption = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar and summary table (default: when stdout is a terminal).",
        ),
    ] = None,
) -> None:
    """Evaluate FHIR Bundles or CDS Hooks requests offline, reproducibly, in parallel."""
    from rich.console import Console

    from cds.replay.pool import EngineError
    from cds.replay.runner import ReplayOptions, check_engine, run_replay

    if update_expect and expect is None:
        raise typer.BadParameter("--update-expect needs --expect DIR", param_hint="--update-expect")
    parquet = format is ReplayFormat.parquet
    if parquet and out is None:
        raise typer.BadParameter(
            "--format parquet writes a folder of Parquet files: give --out DIR "
            "(e.g. --out results/)",
            param_hint="--out",
        )
    if parquet and out is not None and out.exists() and not out.is_dir():
        raise typer.BadParameter(
            f"{out} is a file; --format parquet writes a folder: give a folder path",
            param_hint="--out",
        )
    if scheduler is not None and engine is not Engine.dask:
        raise typer.BadParameter("--scheduler needs --engine dask", param_hint="--scheduler")
    if engine is Engine.dask and workers == 0:
        raise typer.BadParameter(
            "--engine dask runs in worker processes: give --workers 1 or more "
            "(--workers 0 is for --engine local)",
            param_hint="--workers",
        )
    try:
        check_engine(engine.value)
    except EngineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    day = parse_as_of(as_of)
    rules_dir = rules or default_rules_dir()
    evaluator = _load_evaluator(rules_dir)
    interactive = sys.stdout.isatty() if progress is None else progress
    options = ReplayOptions(
        paths=list(paths),
        as_of=day,
        rules_dir=rules_dir,
        hook=hook.value if hook is not None else None,
        format=format.value,
        expect=expect,
        update_expect=update_expect,
        workers=workers if workers is not None else default_workers(),
        deadline=deadline,
        max_tries=max_tries,
        engine=engine.value,
        scheduler=scheduler,
        progress=interactive,
        summary_in_report=out is not None or not interactive,
        out_dir=out if parquet else None,
        scratch=scratch,
        properties={
            "as-of": day.isoformat(),
            "rules": str(rules_dir),
            "ruleset-version": str(getattr(evaluator, "ruleset_version", "")),
            "hook": hook.value if hook is not None else "patient-view",
        },
    )
    # soft_wrap: report lines printed above the bar keep their length (no re-wrapping)
    console = Console(stderr=True, soft_wrap=True) if interactive else None
    stream: IO[str] | _Stdout
    if out is not None and parquet:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            typer.echo(f"error: cannot create the folder {out}: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        stream = _Stdout()  # nothing is written to it: the Parquet files are the report
    elif out is not None:
        try:
            stream = open(out, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        except OSError as exc:
            typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
    else:
        stream = _Stdout()
    try:
        summary = run_replay(options, stream, evaluator=evaluator, console=console)
    except EngineError as exc:  # the engine cannot run at all (e.g. no Dask scheduler there)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: the report is incomplete", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # The reader went away (`cds replay ... | head`): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        if isinstance(stream, TextIOBase):
            stream.close()
    summary_shown = format is ReplayFormat.text and out is None
    if not interactive and not summary_shown and not summary.ok:
        typer.echo(summary.line(), err=True)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


def explain(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="One FHIR Bundle, CDS Hooks request or NDJSON line "
            "(file.ndjson#L3), optionally #Patient/<id>.",
        ),
    ],
    hook: Annotated[Hook | None, typer.Option(help="Hook for a Bundle.")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="'Today' as an ISO date.")] = None,
    rules: Annotated[Path | None, typer.Option(help="Rules folder.")] = None,
    format: Annotated[
        ExplainFormat, typer.Option("--format", help="text for people, json for tools.")
    ] = ExplainFormat.text,
) -> None:
    """Show how one input was evaluated: facts, rules fired and nearly fired, cards."""
    from cds.authoring.explain import ExplainError, explain_input, render_text

    day = parse_as_of(as_of)
    rules_dir = rules or default_rules_dir()
    evaluator = _load_evaluator(rules_dir)
    try:
        report = explain_input(
            file,
            evaluator=evaluator,
            as_of=day,
            hook=hook.value if hook is not None else None,
        )
    except ExplainError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    if format is ExplainFormat.json:
        import json

        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        typer.echo(render_text(report), nl=False)


def register(app: typer.Typer) -> None:
    """Add `replay` and `explain` to the top-level app."""
    app.command("replay")(replay)
    app.command("explain")(explain)
