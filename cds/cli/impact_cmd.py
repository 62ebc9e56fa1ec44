"""`cds impact`: which patients' answers a rule change changes, before it ships.

Exit status: 0 when the comparison ran (with `--fail-on-change`: 1 when any answer
changes); 2 for a usage error, a rule set that does not load or a base that cannot be had.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cds.cli import replay_cmd
from cds.cli.replay_cmd import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Engine,
    Hook,
    ScratchOption,
    default_rules_dir,
    default_workers,
    parse_as_of,
)


class ImpactFormat(StrEnum):
    text = "text"
    json = "json"
    html = "html"


def impact(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="The population: Bundles, CDS Hooks requests, NDJSON files, Bulk Data "
            "exports, folders or globs (as `cds replay` takes them).",
            show_default=False,
            metavar="INPUTS",
        ),
    ],
    rules: Annotated[
        Path | None,
        typer.Option(help="The new rules folder (default: OSTEOHOOKS_RULES or the bundled rules)."),
    ] = None,
    base_rules: Annotated[
        Path | None,
        typer.Option("--base-rules", help="The rules folder to compare with."),
    ] = None,
    base_rev: Annotated[
        str | None,
        typer.Option(
            "--base-rev",
            help="Compare with the rules folder as it is in this git revision "
            "(default when --base-rules is not given: HEAD, i.e. your uncommitted edits).",
        ),
    ] = None,
    hook: Annotated[
        Hook | None, typer.Option(help="Hook for Bundles. Default patient-view.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="'Today' as an ISO date, for reproducible results."),
    ] = None,
    format: Annotated[
        ImpactFormat,
        typer.Option("--format", help="Report format (html: a self-contained page, use --out)."),
    ] = (ImpactFormat.text),
    examples: Annotated[
        int, typer.Option(min=0, help="Example patients shown per group of changes.")
    ] = 3,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Worker processes (default: one per CPU).", show_default=False),
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            help="local: a process pool on this machine; dask: a dask.distributed cluster."
        ),
    ] = Engine.local,
    scheduler: Annotated[
        str | None,
        typer.Option(metavar="tcp://HOST:PORT", help="With --engine dask: an existing cluster."),
    ] = None,
    scratch: ScratchOption = None,
    out: Annotated[Path | None, typer.Option(help="Write the report to this file.")] = None,
    fail_on_change: Annotated[
        bool,
        typer.Option("--fail-on-change", help="Exit 1 when any answer changes (for CI)."),
    ] = False,
) -> None:
    """Evaluate a population with the base and the new rules; report which answers change,
    by topic, rule and kind of change, with example patients."""
    from cds.replay.impact import (
        ImpactError,
        ImpactOptions,
        render_html,
        render_text,
        rules_at_revision,
        run_impact,
    )
    from cds.replay.pool import EngineError
    from cds.replay.runner import check_engine

    if scheduler is not None and engine is not Engine.dask:
        raise typer.BadParameter("--scheduler needs --engine dask", param_hint="--scheduler")
    if engine is Engine.dask and workers == 0:
        raise typer.BadParameter("--engine dask needs --workers 1 or more", param_hint="--workers")
    try:
        check_engine(engine.value)
    except EngineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    if base_rules is not None and base_rev is not None:
        raise typer.BadParameter(
            "give --base-rules or --base-rev, not both", param_hint="--base-rev"
        )
    day = parse_as_of(as_of)
    new_dir = rules or default_rules_dir()
    with ExitStack() as stack:
        if base_rules is not None:
            base_dir, base_label = base_rules, str(base_rules)
        else:
            try:
                base_dir, base_label = stack.enter_context(
                    rules_at_revision(new_dir, base_rev or "HEAD")
                )
            except ImpactError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(EXIT_USAGE) from None
        # Both loaded (and so validated) before any input is read: a broken rule set stops
        # the run before it starts. Like `cds replay`, they live as long as the command.
        base_evaluator = replay_cmd._load_evaluator(base_dir)
        new_evaluator = replay_cmd._load_evaluator(new_dir)
        options = ImpactOptions(
            paths=list(paths),
            as_of=day,
            new_rules=new_dir,
            base_rules=base_dir,
            base_label=base_label,
            new_label=str(new_dir),
            hook=hook.value if hook is not None else None,
            workers=workers if workers is not None else default_workers(),
            examples=examples,
            engine=engine.value,
            scheduler=scheduler,
            scratch=scratch,
        )
        try:
            result = run_impact(options, base_evaluator=base_evaluator, new_evaluator=new_evaluator)
        except ImpactError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_FAILED) from None
        except EngineError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: no report", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if format is ImpactFormat.json:
        import json

        text = json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n"
    elif format is ImpactFormat.html:
        text = render_html(result)
    else:
        text = render_text(result)
    if out is not None:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        typer.echo(
            f"{result.changed} of {result.inputs} inputs with a changed answer; report in {out}",
            err=True,
        )
    else:
        sys.stdout.write(text)
    raise typer.Exit(EXIT_FAILED if fail_on_change and result.changed else EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add `impact` to the top-level app."""
    app.command("impact")(impact)
