"""`cds replay`: discover inputs, evaluate them over workers, report, compare goldens."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from cds.replay import golden as golden_files
from cds.replay.formats import JunitWriter, NdjsonWriter, Sink, TextWriter, Writer
from cds.replay.inputs import discover
from cds.replay.pool import DEFAULT_DEADLINE, DEFAULT_MAX_TRIES, EngineError, ReplayPool
from cds.replay.summary import Summary
from cds.replay.worker import WorkerSettings

if TYPE_CHECKING:
    from rich.console import Console

    from cds.pipeline import Evaluator
    from cds.replay.dask_pool import DaskPool

#: TEST ONLY: name of one input whose worker process kills itself with SIGSEGV, to test
#: that a native crash is contained (see cds.replay.worker.WorkerSettings.crash_input).
TEST_CRASH_ENV = "OSTEOHOOKS_REPLAY_TEST_CRASH"
#: TEST ONLY: name of one input whose worker process hangs, to test the per-input deadline.
TEST_HANG_ENV = "OSTEOHOOKS_REPLAY_TEST_HANG"


@dataclass
class ReplayOptions:
    """Everything `cds replay` was asked to do."""

    paths: list[str]
    as_of: date
    rules_dir: Path
    hook: str | None = None
    format: str = "text"
    expect: Path | None = None
    update_expect: bool = False
    workers: int = 1
    batch_size: int = 8
    deadline: float = DEFAULT_DEADLINE
    max_tries: int = DEFAULT_MAX_TRIES
    progress: bool = False
    #: "local" (ReplayPool, the default) or "dask" (cds.replay.dask_pool.DaskPool).
    engine: str = "local"
    #: With engine "dask": the address of an existing scheduler (else a LocalCluster).
    scheduler: str | None = None
    summary_in_report: bool = True
    properties: dict[str, str] = field(default_factory=dict)
    #: The results folder of `--format parquet` (the other formats write to a stream).
    out_dir: Path | None = None
    #: Where an export's grouping keeps its temporary files (`--scratch`; None: TMPDIR).
    scratch: Path | None = None


def _writer(options: ReplayOptions, stream: Sink) -> Writer:
    if options.format == "ndjson":
        return NdjsonWriter(stream)
    if options.format == "junit":
        return JunitWriter(stream, options.properties)
    if options.format == "parquet":
        from cds.replay.parquet import ParquetWriter  # pyarrow: imported only when asked for

        if options.out_dir is None:
            raise ValueError("--format parquet writes a folder: give --out DIR")
        return ParquetWriter(options.out_dir)
    return TextWriter(stream, closing_summary=options.summary_in_report)


@contextmanager
def _progress(console: Console | None, options: ReplayOptions) -> Iterator[Callable[[], None]]:
    """A function to call once per result: a rich progress bar on a terminal, else nothing."""
    if console is None or not options.progress:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    total = sum(1 for _ in discover(options.paths))
    # auto_refresh=False: no refresh thread, so forked workers never copy a live thread.
    with Progress(
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        auto_refresh=False,
    ) as progress:
        task = progress.add_task("replay", total=total)
        last = 0.0

        def advance() -> None:
            nonlocal last, total
            progress.advance(task)
            done = progress.tasks[0].completed
            if done > total:  # a Bundle split per patient gives more inputs than files
                total = int(done)
                progress.update(task, total=total)
            now = time.monotonic()
            if now - last >= 0.1:
                last = now
                progress.refresh()

        yield advance
        progress.refresh()


def run_replay(
    options: ReplayOptions,
    stream: Sink,
    *,
    evaluator: Evaluator | None = None,
    console: Console | None = None,
) -> Summary:
    """Replay every input; write the report to `stream`; return the counters.

    The caller builds (and so validates) the Evaluator once before any input is read:
    a broken rule set stops the run before it starts.
    """
    settings = WorkerSettings(
        rules_dir=options.rules_dir,
        as_of=options.as_of,
        hook=options.hook,
        crash_input=os.environ.get(TEST_CRASH_ENV) or None,
        hang_input=os.environ.get(TEST_HANG_ENV) or None,
    )
    pool = make_pool(options, settings, evaluator)
    writer = _writer(options, stream)
    summary = Summary()
    with _progress(console, options) as advance:
        keys: dict[str, str] = {}  # golden key -> the input that used it first
        for result in pool.run(discover(options.paths, pool.group_export)):
            check = None
            if options.expect is not None:
                first = keys.setdefault(result.key, result.name)
                if first != result.name:
                    check = golden_files.collision(options.expect, result, first)
                elif options.update_expect:
                    golden_files.write_golden(options.expect, result)
                    summary.golden_written += 1
                else:
                    check = golden_files.check(options.expect, result)
            summary.add(result, check)
            writer.write(result, check)
            advance()
    summary.finish()
    writer.close(summary)
    if console is not None and options.progress:
        console.print(summary_table(summary))
    return summary


class EngineUnavailable(EngineError):
    """The engine asked for is not installed (the message says how to install it)."""


DASK_MISSING = (
    "--engine dask needs Dask, which is not installed: pip install 'osteohooks[dask]' "
    "(or pip install 'dask[distributed]'), or use --engine local"
)


def check_engine(engine: str) -> None:
    """Raise EngineUnavailable when `engine` cannot run here."""
    if engine != "dask":
        return
    try:
        import cds.replay.dask_pool  # noqa: F401
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("dask", "distributed"):
            raise EngineUnavailable(DASK_MISSING) from None
        raise


def make_pool(
    options: ReplayOptions, settings: WorkerSettings, evaluator: Evaluator | None
) -> ReplayPool | DaskPool:
    """The pool of the chosen engine (same `run(sources)` contract)."""
    scratch = str(options.scratch) if options.scratch is not None else None
    if options.engine == "dask":
        check_engine("dask")
        from cds.replay.dask_pool import DaskPool

        return DaskPool(
            settings,
            options.workers,
            scheduler=options.scheduler,
            evaluator=evaluator,
            deadline=options.deadline,
            max_tries=options.max_tries,
            scratch=scratch,
        )
    return ReplayPool(
        settings,
        options.workers,
        batch_size=options.batch_size,
        evaluator=evaluator,
        deadline=options.deadline,
        max_tries=options.max_tries,
        scratch=scratch,
    )


def summary_table(summary: Summary) -> object:
    """The closing rich table for a terminal."""
    from rich.table import Table

    table = Table(title="cds replay", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("inputs", str(summary.inputs))
    table.add_row("evaluated", str(summary.evaluated))
    table.add_row("unreadable", str(summary.unreadable), style="red" if summary.unreadable else "")
    table.add_row("failed", str(summary.failed), style="red" if summary.failed else "")
    table.add_row(
        "data errors",
        f"{summary.data_errors} in {summary.inputs_with_data_errors} inputs",
        style="yellow" if summary.data_errors else "",
    )
    table.add_row("cards", str(summary.cards))
    for topic, count in sorted(summary.topics.items()):
        table.add_row(f"  {topic}", str(count))
    if summary.golden_matched or summary.golden_differed:
        table.add_row("golden matched", str(summary.golden_matched))
        table.add_row(
            "golden differed",
            str(summary.golden_differed),
            style="red" if summary.golden_differed else "",
        )
    if summary.golden_written:
        table.add_row("golden written", str(summary.golden_written))
    table.add_row("time", f"{summary.seconds:.2f} s")
    table.add_row("inputs/s", f"{summary.rate:.1f}")
    return table
