"""Big bodies off the event loop and the GIL: worker processes that compute hook calls.

Parsing a 35 MB patient body is one `orjson.loads` that holds the GIL for about two
seconds; a thread does not help, since every other thread of the process (the event loop
answering discovery, health, small calls) waits for the GIL meanwhile. A call whose body
is larger than `settings.process_body_bytes` (`OSTEOHOOKS_PROCESS_BODY_BYTES`) is therefore
computed in a worker process by the same code as every other call
(`cds.api.hooks.compute`: parse, validate, resolve the prefetch, evaluate, encode the
cards); only the small `Answered` comes back, and the service process audits, counts and
logs it as any call.

The pool: `settings.eval_processes` (`OSTEOHOOKS_EVAL_PROCESSES`) processes per service
process (`cds serve --workers N` has N pools), started with the first big body ("spawn":
a fresh interpreter that imports the service and loads the rule set from the rules folder,
a few seconds once). Each call names the rule-set version in service; a worker process
holding another version (the service reloaded on SIGHUP or a folder change) loads the
folder again before computing, so a call is always answered with the rule set the service
had when the call arrived. If the folder has changed again in between, the call is
computed in the service process instead (logged). A service whose evaluator was not loaded
from a folder (tests' doubles), or that was given its own FHIR transport
(`create_app(fhir_transport=...)`, which cannot travel to another process), has no pool:
its big bodies are parsed and evaluated in threads as before. A worker process that dies
(out of memory) fails its call with a 500 and the next big body starts a fresh pool.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from cds.api.hooks import Answered, compute
from cds.api.ruleset import EvaluatorLike, load_evaluator
from cds.api.state import CallEnv
from cds.settings import Settings

log = logging.getLogger("osteohooks.api")


@dataclass
class _Worker:
    """A worker process's rule set and configuration (set by `_start`)."""

    settings: Settings
    rules_dir: Path
    templates: dict[str, str]
    evaluator: EvaluatorLike


_worker: _Worker | None = None


def _start(settings: Settings, rules_dir: Path, templates: dict[str, str]) -> None:
    """A worker process's initializer: the service's logging, its rule set, and the
    service process's heap settling (`cds.runtime.settle_heap`)."""
    from cds.api.logs import configure
    from cds.runtime import settle_heap

    configure(settings.log_level)
    global _worker
    _worker = _Worker(settings, rules_dir, templates, load_evaluator(rules_dir))
    settle_heap()


def _pid() -> int:
    return os.getpid()


def _compute(service_id: str, body: bytes, as_of: date, version: str) -> Answered | None:
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
    env = CallEnv(
        settings=worker.settings,
        templates=worker.templates,
        evaluator=worker.evaluator,
        as_of=as_of,
    )
    return asyncio.run(compute(env, service_id, body))


class Offload:
    """The worker processes of one service process (created on first use)."""

    def __init__(self, settings: Settings, rules_dir: Path, templates: dict[str, str]) -> None:
        self._initargs = (settings, rules_dir, templates)
        self._size = settings.eval_processes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self._size,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=self._initargs,
            )
        return self._pool

    async def compute(self, env: CallEnv, service_id: str, body: bytes) -> Answered | None:
        """The call computed in a worker process; None when it must be computed here
        (the rules folder changed again since the service loaded it)."""
        pool = self._executor()
        loop = asyncio.get_running_loop()
        version = env.evaluator.ruleset_version
        try:
            answered = await loop.run_in_executor(
                pool, _compute, service_id, body, env.as_of, version
            )
        except BrokenProcessPool:
            log.error(
                "a worker process for big bodies died; the next one starts a fresh pool",
                extra={"event": "offload-broken", "service": service_id},
            )
            if self._pool is pool:
                self._pool = None
            pool.shutdown(wait=False)
            raise
        if answered is None:
            log.warning(
                "the rules folder changed while a worker process reloaded it: this call is "
                "computed in the service process",
                extra={"event": "offload-version", "service": service_id},
            )
        return answered

    async def warm(self) -> list[int]:
        """Start the processes (loading the rule set) now; their pids, as far as seen."""
        pool = self._executor()
        loop = asyncio.get_running_loop()
        pids = await asyncio.gather(*(loop.run_in_executor(pool, _pid) for _ in range(self._size)))
        return sorted(set(pids))

    def close(self) -> None:
        """Stop the processes (calls in flight are finished first)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
