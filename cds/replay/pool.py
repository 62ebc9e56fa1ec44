"""Ordered, bounded evaluation over worker processes that never loses an input.

- Ordered: results come out in input order whatever the number of workers.
- Bounded: at most `window` sources are in flight or waiting to be written, so memory
  stays flat however many inputs there are (sources are pulled lazily from discovery).
- Never loses an input: every input gets exactly one result. Each worker is a process
  of its own with a pipe; it sends every result as soon as it has it (and names each
  input of a split Bundle before it starts it), so when a worker dies (a native crash
  such as SIGSEGV in the C rule engine, the OS or a person killing it) or overruns the
  per-input `deadline` (it is then killed), the parent knows exactly which input it was
  on and which were done. That input is tried again on a fresh worker, up to
  `max_tries` times in all; then it is reported failed with an OperationOutcome saying
  why. The inputs that were waiting behind it are handed out again without penalty;
  results already received are kept, so nothing is evaluated into the report twice.

`workers=0` evaluates in this process (no containment; for debugging and profiling).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from cds.contracts.outcome import error_outcome
from cds.replay import worker
from cds.replay.worker import InputResult, WorkerSettings

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from cds.pipeline import Evaluator
    from cds.replay.inputs import Source

#: Seconds one input may take in a worker before the worker is taken to be hung.
DEFAULT_DEADLINE = 120.0
#: Times an input is started on a worker before it is reported failed.
DEFAULT_MAX_TRIES = 3


class EngineError(RuntimeError):
    """An engine cannot run the replay at all (not installed, cluster unreachable, other
    rules on its workers); the message says what to do. `cds replay` exits 2."""


def crash_result(name: str, key: str, tries: int) -> InputResult:
    """The result of an input whose worker process died each time it evaluated it."""
    return InputResult.of(
        name,
        key,
        [],
        error_outcome(
            f"{name}: the worker process evaluating this input died {tries} times (a native "
            "crash such as SIGSEGV in the rule engine, or killed by the operating system); "
            "the input is marked failed and the run went on. Reproduce it alone with "
            f"`cds explain {name}` and report it with the input.",
            code="exception",
        ),
        "failed",
    )


def hung_result(name: str, key: str, tries: int, deadline: float) -> InputResult:
    """The result of an input that overran the per-input deadline each time it ran."""
    return InputResult.of(
        name,
        key,
        [],
        error_outcome(
            f"{name}: evaluating this input took longer than {deadline:g} s, {tries} times; "
            "its worker was stopped and replaced, the input is marked failed and the run "
            f"went on. Reproduce it alone with `cds explain {name}`, or raise --deadline.",
            code="timeout",
        ),
        "failed",
    )


# ------------------------------------------------------------------ the worker side

#: Parent ends of the pipes, closed in each new worker (so a pipe's only other end is
#: its own worker: its death is then an end of file, never a silent stall).
_parent_ends: list[Connection] = []


def _serve(conn: Connection, settings: WorkerSettings) -> None:
    """A worker's loop: receive [(seq, source, skip)], send ("result", seq, result, last)
    per input (a source's last one ends it), ("begin", seq, name, key) before each input
    of a source holding several, and ("end", seq, ...) for a source with none left."""
    for other in _parent_ends:
        other.close()
    worker.init_worker(settings)
    while True:
        try:
            tasks = conn.recv()
        except EOFError:
            return
        if tasks is None:
            return
        for seq, source, skip in tasks:
            items = worker.read_items(source)
            if skip >= len(items):  # nothing (left) to evaluate: end the source
                conn.send(("end", seq, None, None))
            for index, item in enumerate(items):
                if index < skip:
                    continue
                if len(items) > 1:  # name the input of a split Bundle before it runs
                    conn.send(("begin", seq, item.name, item.key))
                result = worker.process_item(item)
                last = index == len(items) - 1
                try:
                    conn.send(("result", seq, result, last))
                except (TypeError, ValueError, AttributeError) as exc:  # cannot be pickled
                    failed = worker.internal_error(item.name, item.key, exc)
                    conn.send(("result", seq, failed, last))


# ------------------------------------------------------------------ the parent side


@dataclass
class _Slot:
    """One source in flight: what it gave so far and how often its current item ran."""

    source: Source
    results: list[InputResult] = field(default_factory=list)
    tries: int = 0  # worker deaths while on the item at index len(results)
    timeouts: int = 0
    done: bool = False


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    tasks: list[int] = field(default_factory=list)  # seqs handed to it, not yet ended
    current: tuple[int, str, str] | None = None  # (seq, name, key) being evaluated
    started: float = 0.0


class ReplayPool:
    """Evaluate sources over `workers` processes, yielding results in input order."""

    def __init__(  # noqa: PLR0913 (the pool's options, by keyword, as DaskPool's)
        self,
        settings: WorkerSettings,
        workers: int,
        *,
        batch_size: int = 8,
        window: int | None = None,
        evaluator: Evaluator | None = None,
        deadline: float = DEFAULT_DEADLINE,
        max_tries: int = DEFAULT_MAX_TRIES,
        scratch: str | None = None,
    ) -> None:
        self.settings = settings
        #: Where an export's grouping keeps its temporary files (None: TMPDIR).
        self.scratch = scratch
        self.workers = workers
        self.batch_size = max(1, batch_size)
        self.window = window if window is not None else max(16, workers * batch_size * 4)
        self.evaluator = evaluator
        self.deadline = deadline
        self.max_tries = max(1, max_tries)
        self.restarts = 0
        self._context: Any = None
        self._live: list[_Worker] = []

    def pids(self) -> list[int]:
        """The process ids of the live workers (for tests that kill them)."""
        return [w.process.pid for w in self._live if w.process.pid is not None]

    def group_export(self, folder: str, key: str | None = None) -> Iterator[Source]:
        """An export's inputs, grouped in this process (`cds.replay.export`)."""
        from cds.replay.export import export_sources

        return export_sources(folder, key, self.scratch)

    def run(self, sources: Iterable[Source]) -> Iterator[InputResult]:
        """Results of every source, in order (several per split Bundle)."""
        # Build (or take) the Evaluator here first: in-process runs use it, and forked
        # workers inherit it instead of loading the rules again.
        worker.init_local(self.settings, self.evaluator)
        if self.workers <= 0:
            for source in sources:
                yield from worker.process_source(source)
            return
        self._context = self._start_context()
        try:
            yield from self._run(iter(sources))
        finally:
            for w in self._live:
                self._stop(w)
            self._live.clear()
            _parent_ends.clear()
            gc.unfreeze()  # what _start_context froze is collectable again

    # -------------------------------------------------------------- scheduling

    def _run(self, sources: Iterator[Source]) -> Iterator[InputResult]:
        slots: dict[int, _Slot] = {}
        retry: deque[int] = deque()
        fresh: deque[int] = deque()
        next_seq = 0
        next_out = 0
        exhausted = False
        self._live = [self._spawn() for _ in range(self.workers)]
        while True:
            # Pull sources while the window has room.
            while not exhausted and len(slots) < self.window:
                batch = list(islice(sources, self.batch_size))
                if not batch:
                    exhausted = True
                    break
                for source in batch:
                    slots[next_seq] = _Slot(source)
                    fresh.append(next_seq)
                    next_seq += 1
            # Hand work to idle workers: retries first, one at a time.
            for w in self._live:
                if w.tasks:
                    continue
                if retry:
                    self._send(w, [retry.popleft()], slots)
                elif fresh:
                    take = [fresh.popleft() for _ in range(min(self.batch_size, len(fresh)))]
                    self._send(w, take, slots)
            # Write what is complete, in order.
            while next_out in slots and slots[next_out].done:
                yield from slots.pop(next_out).results
                next_out += 1
            if exhausted and not slots:
                return
            busy = [w for w in self._live if w.tasks]
            if not busy:
                continue
            now = time.monotonic()
            timeout = min(max(0.0, w.started + self.deadline - now) for w in busy)
            handles: list[Any] = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            ready = set(wait(handles, timeout=timeout))
            for w in busy:
                dead = False
                if w.conn in ready:
                    dead = not self._receive(w, slots)
                if dead or w.process.sentinel in ready:
                    self._drain(w, slots)
                    self._replace(w, slots, retry, hung=False)
                elif time.monotonic() - w.started > self.deadline:
                    self._drain(w, slots)
                    self._replace(w, slots, retry, hung=True)

    def _send(self, w: _Worker, seqs: list[int], slots: dict[int, _Slot]) -> None:
        tasks = [(seq, slots[seq].source, len(slots[seq].results)) for seq in seqs]
        w.tasks = list(seqs)
        w.current = None
        w.started = time.monotonic()
        with contextlib.suppress(OSError):  # it died already: the next wait sees it
            w.conn.send(tasks)

    def _receive(self, w: _Worker, slots: dict[int, _Slot]) -> bool:
        """Read every message waiting on the worker's pipe; False at end of file."""
        try:
            while w.conn.poll():
                self._handle(w, w.conn.recv(), slots)
        except (EOFError, OSError):
            return False
        return True

    def _drain(self, w: _Worker, slots: dict[int, _Slot]) -> None:
        """Messages a dead (or about to be killed) worker sent before it stopped."""
        self._receive(w, slots)

    def _handle(
        self, w: _Worker, message: tuple[str, int, Any, Any], slots: dict[int, _Slot]
    ) -> None:
        kind, seq, a, b = message
        slot = slots[seq]
        w.started = time.monotonic()  # the deadline runs per input
        if kind == "begin":
            w.current = (seq, a, b)
            return
        w.current = None
        if kind == "result":
            slot.results.append(a)
            slot.tries = 0
            slot.timeouts = 0
            if not b:
                return
        slot.done = True
        w.tasks.remove(seq)

    def _replace(
        self, w: _Worker, slots: dict[int, _Slot], retry: deque[int], *, hung: bool
    ) -> None:
        """A worker died or overran: settle the input it was on, requeue the rest."""
        self._stop(w, kill=True)
        self.restarts += 1
        if w.tasks:
            seq = w.tasks[0]
            slot = slots[seq]
            name, key = (w.current[1], w.current[2]) if w.current else (None, None)
            slot.tries += 1
            if hung:
                slot.timeouts += 1
            if slot.tries >= self.max_tries:
                shown = name or slot.source.name
                shown_key = key or slot.source.key
                slot.results.append(
                    hung_result(shown, shown_key, slot.tries, self.deadline)
                    if slot.timeouts >= slot.tries
                    else crash_result(shown, shown_key, slot.tries)
                )
                slot.tries = 0
                slot.timeouts = 0
            retry.extend(w.tasks)
        index = self._live.index(w)
        self._live[index] = self._spawn()

    # -------------------------------------------------------------- processes

    def _start_context(self) -> Any:
        # fork (Linux): workers inherit the parent's loaded Evaluator, so starting and
        # restarting a worker costs nothing (loading the rules takes seconds). The parent
        # runs no other thread of its own when it forks. Elsewhere: spawn, each worker
        # loads the rules.
        methods = multiprocessing.get_all_start_methods()
        if sys.platform.startswith("linux") and "fork" in methods:
            # Move everything the parent holds (the Evaluator, modules) out of the
            # collector's reach: forked workers then never traverse it in full
            # collections (and never write to those pages, which would copy them).
            gc.freeze()
            return multiprocessing.get_context("fork")
        return multiprocessing.get_context("spawn")

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        _parent_ends.append(parent_end)  # closed in the child (it has child_end)
        process = self._context.Process(target=_serve, args=(child_end, self.settings), daemon=True)
        process.start()
        child_end.close()
        return _Worker(process, parent_end)

    def _stop(self, w: _Worker, *, kill: bool = False) -> None:
        if w.conn in _parent_ends:
            _parent_ends.remove(w.conn)
        if not kill and w.process.is_alive():
            with contextlib.suppress(OSError):
                w.conn.send(None)
            w.process.join(timeout=5)
        if w.process.is_alive() and w.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.process.pid, signal.SIGKILL)
        w.process.join()
        w.conn.close()
