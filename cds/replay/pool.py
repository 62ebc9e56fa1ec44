"""Ordered, bounded, crash-contained evaluation over worker processes.

- Ordered: results come out in input order whatever the number of workers.
- Bounded: at most `window` batches are in flight, so memory stays flat however many
  inputs there are (sources are pulled lazily from the discovery generator).
- Crash-contained: when a worker dies (a native crash such as SIGSEGV in the C rule
  engine, or the OS killing it), the pool is broken. It is replaced, and every source
  that was in flight and had no result is re-run alone, one at a time, so the one that
  kills its worker again is identified exactly: it fails with an OperationOutcome and
  the run goes on. A source that only died as a bystander gets its normal result.

`workers=0` evaluates in this process (no containment; for debugging and profiling).
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import TYPE_CHECKING

from cds.replay import worker
from cds.replay.outcome import operation_outcome
from cds.replay.reader import read_source
from cds.replay.worker import InputResult, WorkerSettings

if TYPE_CHECKING:
    from cds.pipeline import Evaluator
    from cds.replay.inputs import Source

Batch = list["Source"]


def crash_result(name: str, key: str) -> InputResult:
    """The result of an input whose worker process died while evaluating it."""
    return InputResult.of(
        name,
        key,
        [],
        operation_outcome(
            f"{name}: the worker process evaluating this input died (a native crash such as "
            "SIGSEGV in the rule engine, or killed by the operating system); the input is "
            f"marked failed and the run went on. Reproduce it alone with `cds explain {name}` "
            "and report it with the input.",
            code="exception",
        ),
        "failed",
    )


def _batches(sources: Iterable[Source], size: int) -> Iterator[Batch]:
    iterator = iter(sources)
    while batch := list(islice(iterator, size)):
        yield batch


class ReplayPool:
    """Evaluate sources over `workers` processes, yielding results in input order."""

    def __init__(
        self,
        settings: WorkerSettings,
        workers: int,
        *,
        batch_size: int = 8,
        window: int | None = None,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.batch_size = max(1, batch_size)
        self.window = window if window is not None else max(2, workers * 4)
        self.evaluator = evaluator
        self.restarts = 0
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[tuple[Batch, Future[list[list[InputResult]]]]] = deque()

    def run(self, sources: Iterable[Source]) -> Iterator[InputResult]:
        """Results of every source, in order (several per split Bundle)."""
        # Build (or take) the Evaluator here first: in-process runs use it, and forked
        # workers inherit it instead of loading the rules again.
        worker.init_local(self.settings, self.evaluator)
        if self.workers <= 0:
            for source in sources:
                yield from worker.process_source(source)
            return
        self._pool = self._new_pool()
        try:
            for batch in _batches(sources, self.batch_size):
                while len(self._pending) >= self.window:
                    yield from self._drain_one()
                self._pending.append((batch, self._submit(batch)))
            while self._pending:
                yield from self._drain_one()
        finally:
            self._pending.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            gc.unfreeze()  # what _new_pool froze is collectable again in this process

    def _new_pool(self) -> ProcessPoolExecutor:
        # fork (Linux): workers inherit the parent's loaded Evaluator, so starting and
        # restarting a worker costs nothing (loading the rules takes seconds). The parent
        # runs no other thread when it forks (the progress bar refreshes from the main
        # thread; the executor forks all workers before starting its own thread).
        # Elsewhere: a clean server process per platform default, each worker loads.
        methods = multiprocessing.get_all_start_methods()
        if sys.platform.startswith("linux") and "fork" in methods:
            method = "fork"
        else:
            method = "forkserver" if "forkserver" in methods else "spawn"
        if method == "fork":
            # Move everything the parent holds (the Evaluator, modules) out of the
            # collector's reach: forked workers then never traverse it in full
            # collections (and never write to those pages, which would copy them).
            gc.freeze()
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(["cds.replay.worker", "cds.pipeline"])
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=worker.init_worker,
            initargs=(self.settings,),
        )

    def _submit(self, batch: Batch) -> Future[list[list[InputResult]]]:
        assert self._pool is not None
        return self._pool.submit(worker.process_batch, batch)

    def _restart(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.restarts += 1
        self._pool = self._new_pool()

    def _drain_one(self) -> Iterator[InputResult]:
        batch, future = self._pending.popleft()
        try:
            per_source = future.result()
        except BrokenProcessPool:
            yield from self._recover([(batch, future), *self._pending])
            return
        except Exception as exc:  # e.g. a result that cannot be sent back: fail the batch
            for source in batch:
                yield worker.internal_error(source.name, source.key, exc)
            return
        for results in per_source:
            yield from results

    def _recover(
        self, in_flight: list[tuple[Batch, Future[list[list[InputResult]]]]]
    ) -> Iterator[InputResult]:
        """After a worker died: keep finished results, re-run the rest one by one."""
        self._pending.clear()
        self._restart()
        for batch, future in in_flight:
            finished = future.done() and not future.cancelled() and future.exception() is None
            if finished:
                for results in future.result():
                    yield from results
                continue
            for source in batch:
                yield from self._run_alone(source)

    def _run_alone(self, source: Source) -> Iterator[InputResult]:
        try:
            per_source = self._submit([source]).result()
        except BrokenProcessPool:
            self._restart()
        except Exception as exc:
            yield worker.internal_error(source.name, source.key, exc)
            return
        else:
            for results in per_source:
                yield from results
            return
        # The source killed its worker. When it holds several inputs (a Bundle split per
        # patient), evaluate them one by one so only the one that crashes fails.
        try:
            items = read_source(source, self.settings.hook)
        except Exception:
            items = []
        if len(items) <= 1:
            yield crash_result(source.name, source.key)
            return
        for item in items:
            assert self._pool is not None
            try:
                result = self._pool.submit(worker.process_item, item).result()
            except BrokenProcessPool:
                self._restart()
                result = crash_result(item.name, item.key)
            except Exception as exc:
                result = worker.internal_error(item.name, item.key, exc)
            yield result
