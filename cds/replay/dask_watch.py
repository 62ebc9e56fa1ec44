"""The deadline of the Dask engine's tasks: evaluation tasks (`cds.replay.dask_pool`) and
grouping tasks (`cds.replay.dask_export`) are watched by one `Watch`.

- On a worker, a task notes (`note`) which of its units it is on whenever it makes
  progress: an evaluation task before each input, a grouping task every few thousand
  lines or patients. `progress` tells, for each task the worker runs, that unit and for
  how many seconds the task has been on it without progress (measured on the worker:
  no clocks are compared).
- Here, `Watch.check` asks every busy worker for its `progress` at once (about once a
  second, from the one loop that waits on the cluster, whichever it is), and hands back
  each watched task that has been without progress for longer than the deadline, after
  stopping its worker (`kill`; its nanny starts a new one). A worker too stuck to answer
  (native code holding the GIL) is judged from its last answer, or from when its task
  was first seen processing there.
- A task that fails with `KilledWorker` because its worker was stopped here (for another
  task that overran) was not the cause: `charged` says how many deaths to count.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from distributed import Client
from distributed.scheduler import KilledWorker

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Seconds to wait for the workers' answers to `progress`.
ANSWER_TIMEOUT = 5.0

#: On a worker: task key -> (index of the unit it is on, time.monotonic() of its last
#: progress). Read by `progress`.
_running: dict[str, tuple[int, float]] = {}


def note(key: str, unit: int = 0) -> None:
    """On a worker: the task `key` made progress, on its unit `unit`."""
    _running[key] = (unit, time.monotonic())


@contextlib.contextmanager
def running(key: str) -> Iterator[None]:
    """On a worker: the task `key` runs (started: its first progress) until the end of
    the block, whatever ends it."""
    note(key)
    try:
        yield
    finally:
        _running.pop(key, None)


def progress() -> dict[str, tuple[int, float]]:
    """On a worker: for each task it is running, the unit it is on and for how many
    seconds it has made no progress."""
    now = time.monotonic()
    return {key: (unit, now - since) for key, (unit, since) in list(_running.items())}


async def _progress_of(
    client: Client, workers: list[str], timeout: float
) -> dict[str, dict[str, tuple[int, float]] | None]:
    """`progress` of each worker, asked of all at once; None for one that does not
    answer within `timeout` (stuck in native code holding the GIL, or gone): the others
    still answer for their own tasks."""

    async def one(addr: str) -> tuple[str, dict[str, tuple[int, float]] | None]:
        try:
            answers = await asyncio.wait_for(
                client._run(progress, workers=[addr], on_error="ignore"), timeout
            )
        except Exception:
            return addr, None
        return addr, answers.get(addr)

    return dict(await asyncio.gather(*(one(addr) for addr in workers)))


@dataclass
class Tracked:
    """What the watch knows of one task it watches."""

    #: When (here) the task last made progress, as last reported by its worker (or when
    #: it was first seen processing there): the deadline when the worker cannot answer.
    started: float | None = None
    worker: str | None = None
    #: The unit its worker last reported it on (None: never reported).
    unit: int | None = None


#: Watched tasks (key -> Tracked) and what to do with one that overran (its worker is
#: stopped already; it is no longer in the mapping).
Watched = tuple[dict[str, Any], Callable[[str, Any], None]]


class Watch:
    """The deadline of every task of one run (module docstring)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        #: Workers that died (or were stopped here) during the run.
        self.dead: set[str] = set()
        #: Workers stopped here because a task overran on them.
        self.stopped: set[str] = set()
        self._pids: dict[str, int] = {}  # worker address -> process id (to stop a hung one)

    @property
    def restarts(self) -> int:
        return len(self.dead)

    def charged(self, exc: KilledWorker) -> int:
        """Deaths to count against a task that failed with `exc` (0 when its worker was
        stopped here for another task: this one only waited there)."""
        addr = exc.last_worker.address
        self.dead.add(addr)
        return 0 if addr in self.stopped else exc.allowed_failures + 1

    def check(self, client: Client, now: float, watched: Iterable[Watched]) -> None:
        """Stop the worker of every watched task without progress for longer than the
        deadline, take the task out of its mapping and hand it to its handler."""
        groups = list(watched)
        if not any(tasks for tasks, _ in groups):
            return
        try:
            processing: dict[str, list[str]] = client.processing()  # type: ignore[no-untyped-call]
        except Exception:  # the scheduler is busy or a worker is leaving: next time
            return
        on: dict[str, str] = {key: addr for addr, keys in processing.items() for key in keys}
        busy = [addr for addr, keys in processing.items() if keys]
        new = [addr for addr in busy if addr not in self._pids]
        if new:  # asked once per worker, while it answers
            with contextlib.suppress(Exception):
                self._pids.update(client.run(os.getpid, workers=new, on_error="ignore"))
        reports: dict[str, dict[str, tuple[int, float]] | None] = {}
        if busy:
            with contextlib.suppress(Exception):
                reports = client.sync(  # type: ignore[no-untyped-call]
                    _progress_of, client, busy, ANSWER_TIMEOUT
                )
        for tasks, overran in groups:
            for key, task in list(tasks.items()):
                addr = on.get(key)
                if addr is None:
                    task.started, task.worker, task.unit = None, None, None
                    continue
                if task.worker != addr:
                    task.started, task.worker, task.unit = now, addr, None
                report = reports.get(addr)
                if report is not None:  # the worker answered: its word on this task
                    unit, seconds = report.get(key, (None, 0.0))
                    task.started, task.unit = now - seconds, unit
                if task.started is not None and now - task.started > self.deadline:
                    del tasks[key]
                    self.kill(client, addr)
                    overran(key, task)

    def kill(self, client: Client, addr: str) -> None:
        """Stop a hung worker (its nanny starts a new one): SIGKILL when it runs on this
        machine (loopback address), else through its nanny, which kills it when it does
        not stop."""
        self.dead.add(addr)
        self.stopped.add(addr)
        pid = self._pids.get(addr)
        host = urlsplit(addr).hostname or ""
        if pid and host in LOOPBACK:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)
                return
        with contextlib.suppress(Exception):
            client.restart_workers([addr], raise_for_error=False)
