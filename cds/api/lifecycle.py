"""The service's lifespan: the evaluation thread limiter, rule reloads (SIGHUP and the
folder poll), the runtime settings at startup (cds.runtime.settle_heap), the worker
processes for big bodies (started and warmed at startup, `cds.api.offload`), closing them
and the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable

import anyio
from fastapi import FastAPI

from cds import metrics
from cds.api.state import ServiceState
from cds.runtime import settle_heap

log = logging.getLogger("osteohooks.api")


def lifespan_of(
    state: ServiceState,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        state.eval_limiter = anyio.CapacityLimiter(state.settings.eval_threads)
        tasks: list[asyncio.Task[None]] = []

        def on_sighup() -> None:
            log.info("SIGHUP: reloading rules", extra={"event": "sighup"})
            tasks.append(loop.create_task(_reload(state)))

        sighup = False
        if hasattr(signal, "SIGHUP") and state.holder.rules_dir is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, on_sighup)
                sighup = True
        if state.settings.reload_rules and state.holder.rules_dir is not None:
            tasks.append(loop.create_task(_poll_rules(state)))
        settle_heap()  # once per process: gc.freeze of the start-up heap, gen0 threshold
        if state.offload is not None:
            state.offload.start()  # big bodies' worker processes, warmed in the background
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if sighup:
                loop.remove_signal_handler(signal.SIGHUP)
            if state.offload is not None:
                await state.offload.close()
            await anyio.to_thread.run_sync(state.store.close)

    return lifespan


async def _reload(state: ServiceState) -> None:
    before = state.holder.evaluator.ruleset_version
    await anyio.to_thread.run_sync(state.holder.reload)
    metrics.rules_version(state.holder.evaluator.ruleset_version, before)


async def _poll_rules(state: ServiceState) -> None:
    while True:
        await asyncio.sleep(state.settings.reload_interval)
        try:
            if await anyio.to_thread.run_sync(state.holder.changed):
                await _reload(state)
        except Exception:
            log.exception("rule folder poll failed")
