"""Operations endpoints, open without a JWT (they carry no patient data):

- `GET /health`: liveness, 200 while the process serves requests.
- `GET /ready`: readiness, 200 when a rule set is in service, the store takes a write
  within `READY_STORE_SECONDS` and the worker processes for big bodies (when the service
  has them, `cds.api.offload`) are up; else 503 with what is wrong (rules, store, pool).
- `GET /metrics`: Prometheus text exposition (`cds.api.metrics`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI
from starlette.responses import Response

import cds
from cds import metrics

if TYPE_CHECKING:
    from cds.api.state import ServiceState

READY_STORE_SECONDS = 1.0
OPEN_PATHS = ("/health", "/ready", "/metrics")


def add_operations(app: FastAPI, state: ServiceState) -> None:
    @app.get("/health", summary="Liveness (no JWT)", include_in_schema=True)
    async def health() -> Response:
        return _json(200, {"status": "ok", "version": cds.__version__})

    @app.get("/ready", summary="Readiness: rules loaded, store writable, pool up (no JWT)")
    async def ready() -> Response:
        problems: list[str] = []
        version: str | None = None
        try:
            version = state.holder.evaluator.ruleset_version
        except Exception:
            problems.append("no rule set in service")
        if state.offload is not None and (starting := state.offload.problem()) is not None:
            problems.append(starting)
        with anyio.move_on_after(READY_STORE_SECONDS) as scope:
            error = await anyio.to_thread.run_sync(state.store.probe, abandon_on_cancel=True)
            if error:
                problems.append(f"store not writable: {error}")
        if scope.cancelled_caught:
            problems.append(f"store did not take a write within {READY_STORE_SECONDS:g} s")
        body: dict[str, Any] = {
            "status": "ready" if not problems else "not-ready",
            "rulesetVersion": version,
            "spoolDepth": state.store.spool_depth(),
        }
        if problems:
            body["problems"] = problems
        if state.holder.last_error:
            body["lastReloadErrors"] = state.holder.last_error
        return _json(503 if problems else 200, body)

    @app.get("/metrics", summary="Prometheus metrics (no JWT)")
    async def metrics_text() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps({k: v for k, v in body.items() if v is not None}).encode(),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
