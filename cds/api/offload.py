"""Big bodies off the event loop and the GIL: worker processes that compute hook calls.

Parsing a 35 MB patient body is one `orjson.loads` that holds the GIL for about two
seconds; a thread does not help, since every other thread of the process (the event loop
answering discovery, health, small calls) waits for the GIL meanwhile. A call whose body
is larger than `settings.process_body_bytes` (`OSTEOHOOKS_PROCESS_BODY_BYTES`) is therefore
computed in a worker process by the same code as every other call
(`cds.api.hooks.compute`: parse, validate, resolve the prefetch, evaluate, encode the
cards); only the small `Answered` comes back, and the service process audits, counts and
logs it as any call. So is a call whose fallback fetch from its `fhirServer` answers more
than `process_body_bytes`: the service process stops reading that answer (unparsed) and
the call is computed again, fetches included, in a worker process (`cds.api.prefetch`).

The pool: `settings.eval_processes` (`OSTEOHOOKS_EVAL_PROCESSES`) processes per service
process (`cds serve --workers N` has N pools), started by the service's start-up
(`start`, from the lifespan) and warmed in the background ("spawn": a fresh interpreter
that imports the service and loads the rule set from the rules folder, a few seconds
once), so no call pays for it; `/ready` answers 503 until they are up (`problem`). Each
call names the rule-set version in service; a worker process holding another version (the
service reloaded on SIGHUP or a folder change) loads the folder again before computing, so
a call is always answered with the rule set the service had when the call arrived. If the
folder has changed again in between, the call is computed in the service process instead
(logged). A service whose evaluator was not loaded from a folder (tests' doubles), or that
was given its own FHIR transport (`create_app(fhir_transport=...)`, which cannot travel to
another process), has no pool: its big bodies are parsed and evaluated in threads as
before.

A worker process that dies (out of memory, killed) fails its call with a 500
OperationOutcome that is audited like every answer: the worker process notes each call's
hookInstance in a table shared with the service process (`_Pool.heard`) as soon as it has
parsed the body, so the audit row names it (`UNREAD_HOOK_INSTANCE` when the process died
before). A fresh pool is started (and warmed) at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import anyio

from cds.api.hooks import Answered, compute, internal_error
from cds.api.ruleset import EvaluatorLike, load_evaluator
from cds.api.state import CallEnv
from cds.settings import Settings

log = logging.getLogger("osteohooks.api")

#: calls in flight per pool whose hookInstance the worker processes can note (more wait
#: as usual, but a dead worker's audit row of such a call says UNREAD_HOOK_INSTANCE)
SLOTS = 256
_SLOT_BYTES = 65  # a length byte, then up to 64 bytes (the audit column's width)
#: the audit row's hookInstance of a call whose worker process died before it had parsed
#: the body (a hookInstance is a UUID: this cannot be one)
UNREAD_HOOK_INSTANCE = "(unread: worker process died)"
STARTING = "the worker processes for big bodies are starting (OSTEOHOOKS_EVAL_PROCESSES)"


@dataclass
class _Worker:
    """A worker process's rule set and configuration (set by `_start`)."""

    settings: Settings
    rules_dir: Path
    templates: dict[str, str]
    evaluator: EvaluatorLike
    heard: Any  # the pool's table of hookInstances (`_Pool.heard`)


_worker: _Worker | None = None


def _start(settings: Settings, rules_dir: Path, templates: dict[str, str], heard: Any) -> None:
    """A worker process's initializer: the service's logging, its rule set, and the
    service process's heap settling (`cds.runtime.settle_heap`)."""
    from cds.api.logs import configure
    from cds.runtime import settle_heap

    configure(settings.log_level)
    global _worker
    _worker = _Worker(settings, rules_dir, templates, load_evaluator(rules_dir), heard)
    settle_heap()


def _pid() -> int:
    return os.getpid()


def _compute(service_id: str, body: bytes, as_of: date, version: str, slot: int) -> Answered | None:
    """One call in a worker process, with rule-set `version` (None: not available)."""
    worker = _worker
    assert worker is not None, "the pool initializer sets the worker"
    if worker.evaluator.ruleset_version != version:
        retired = worker.evaluator
        worker.evaluator = load_evaluator(worker.rules_dir)
        close = getattr(retired, "close", None)
        if callable(close):  # this process runs one call at a time: nothing else uses it
            close()
        if worker.evaluator.ruleset_version != version:
            return None

    def heard(hook_instance: str) -> None:
        if slot >= 0:
            _note(worker.heard, slot, hook_instance)

    env = CallEnv(
        settings=worker.settings,
        templates=worker.templates,
        evaluator=worker.evaluator,
        as_of=as_of,
        heard=heard,
    )
    return asyncio.run(compute(env, service_id, body))


def _note(table: Any, slot: int, hook_instance: str) -> None:
    """Write `hook_instance` into `slot`: the text first, its length last (a process
    killed in between leaves the slot empty, never half a value)."""
    data = hook_instance.encode("utf-8")[: _SLOT_BYTES - 1]
    start = slot * _SLOT_BYTES
    table[start + 1 : start + 1 + len(data)] = data
    table[start] = bytes([len(data)])


class _Pool:
    """One set of worker processes and the table where they note each call's hookInstance
    (shared memory: the service process reads it without waiting on anything)."""

    def __init__(self, size: int, initargs: tuple[Settings, Path, dict[str, str]]) -> None:
        context = multiprocessing.get_context("spawn")
        self.heard: Any = context.RawArray(ctypes.c_char, SLOTS * _SLOT_BYTES)
        self.free = list(range(SLOTS))
        self.executor = ProcessPoolExecutor(
            size, mp_context=context, initializer=_start, initargs=(*initargs, self.heard)
        )

    def take_slot(self) -> int:
        """A slot for one call's hookInstance, emptied (-1: all in use, none noted)."""
        if not self.free:
            return -1
        slot = self.free.pop()
        self.heard[slot * _SLOT_BYTES] = b"\0"
        return slot

    def give_back(self, slot: int) -> str | None:
        """The hookInstance noted in `slot` (None: none), and the slot free again."""
        if slot < 0:
            return None
        self.free.append(slot)
        start = slot * _SLOT_BYTES
        length = self.heard[start][0]
        if not length:
            return None
        return bytes(self.heard[start + 1 : start + 1 + length]).decode("utf-8", "replace")

    def stop(self, *, wait: bool) -> None:
        """Stop the processes: after the calls in flight (`wait`), or now (killed)."""
        if wait:
            self.executor.shutdown(wait=True, cancel_futures=True)
            return
        processes = list((getattr(self.executor, "_processes", None) or {}).values())
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        for process in processes:
            process.join(10)


class Offload:
    """The worker processes of one service process (`start`ed with the service)."""

    def __init__(self, settings: Settings, rules_dir: Path, templates: dict[str, str]) -> None:
        self._initargs = (settings, rules_dir, templates)
        self._size = settings.eval_processes
        self._pool: _Pool | None = None
        self._warming: asyncio.Task[list[int]] | None = None
        self._warm = False  # the processes of the current pool are up
        self._failed: str | None = None  # why the last start failed

    def _current(self) -> _Pool:
        if self._pool is None:
            self._pool = _Pool(self._size, self._initargs)
            self._warm = False
        return self._pool

    def start(self) -> None:
        """Start the processes and warm them in the background (the service's start-up,
        and again after one died): `problem` says when they are up."""
        if self._warming is None or self._warming.done():
            self._warming = asyncio.get_running_loop().create_task(self._start_warm())

    async def _start_warm(self) -> list[int]:
        try:
            return await self.warm()
        except BrokenProcessPool as exc:  # the initializer failed (the rules folder?)
            self._failed = f"{type(exc).__name__}: {exc}"
            log.error(
                "the worker processes for big bodies did not start (%s); the next big call "
                "starts them again",
                self._failed,
                extra={"event": "offload-start-failed"},
            )
            self._drop(self._pool)
            return []

    def problem(self) -> str | None:
        """Why the pool cannot take a call at once (for `/ready`); None: it can."""
        if self._warm:
            return None
        if self._failed is not None:
            return f"the worker processes for big bodies did not start: {self._failed}"
        return STARTING

    async def compute(self, env: CallEnv, service_id: str, body: bytes) -> Answered | None:
        """The call computed in a worker process; None when it must be computed here
        (the rules folder changed again since the service loaded it)."""
        pool = self._current()
        loop = asyncio.get_running_loop()
        version = env.evaluator.ruleset_version
        slot = pool.take_slot()
        try:
            answered = await loop.run_in_executor(
                pool.executor, _compute, service_id, body, env.as_of, version, slot
            )
        except BrokenProcessPool:
            return self._died(pool, pool.give_back(slot), service_id, version)
        pool.give_back(slot)
        if answered is None:
            log.warning(
                "the rules folder changed while a worker process reloaded it: this call is "
                "computed in the service process",
                extra={"event": "offload-version", "service": service_id},
            )
        return answered

    def _died(
        self, pool: _Pool, hook_instance: str | None, service_id: str, version: str
    ) -> Answered:
        """The 500 of a call whose worker process died; a fresh pool is started."""
        hook_instance = hook_instance or UNREAD_HOOK_INSTANCE
        log.error(
            "a worker process for big bodies died during a call; a fresh pool starts",
            extra={"event": "offload-broken", "service": service_id, "hookInstance": hook_instance},
        )
        if self._drop(pool):
            self.start()
        return internal_error(
            hook_instance,
            version,
            f"in the worker process computing hookInstance {hook_instance}: it stopped (out "
            "of memory?); send the call again",
        )

    def _drop(self, pool: _Pool | None) -> bool:
        """Forget `pool` if it is the current one (True: it was) and stop it."""
        if pool is None:
            return False
        current = self._pool is pool
        if current:
            self._pool = None
            self._warm = False
        pool.stop(wait=False)
        return current

    async def warm(self) -> list[int]:
        """Start the processes (loading the rule set) now; their pids, as far as seen."""
        pool = self._current()
        loop = asyncio.get_running_loop()
        pids = await asyncio.gather(
            *(loop.run_in_executor(pool.executor, _pid) for _ in range(self._size))
        )
        if self._pool is pool:
            self._warm = True
            self._failed = None
        return sorted(set(pids))

    async def close(self) -> None:
        """Stop the processes: calls in flight are finished first; processes still
        starting are stopped at once (nothing waits for them)."""
        if self._warming is not None:
            self._warming.cancel()
        pool, self._pool = self._pool, None
        if pool is not None:
            await anyio.to_thread.run_sync(functools.partial(pool.stop, wait=self._warm))
