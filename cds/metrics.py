"""Prometheus metrics of the service (`GET /metrics`, prometheus-client); shared by the
HTTP layer and the store, so it sits at the package top.

One process: the metrics below live in prometheus-client's default registry. Several
workers (`cds serve --workers N`): `cds serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh
folder before any worker starts (or keeps the one the operator set), every worker writes its
values there, and `/metrics` on any worker sums all of them (prometheus-client's
multiprocess mode: counters and histograms add up, gauges as documented per metric).

Labels hold only fixed vocabularies (service ids, HTTP statuses, topics, indicators,
reasons): never a patient id, a token or request text.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Latency buckets around the service's range (a few ms evaluated, up to the FHIR deadline).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CALLS = Counter("osteohooks_calls", "HTTP calls to /cds-services endpoints", ["service", "status"])
LATENCY = Histogram(
    "osteohooks_call_seconds",
    "Time to answer a /cds-services call",
    ["service", "status"],
    buckets=_BUCKETS,
)
CARDS = Counter("osteohooks_cards", "Cards issued", ["service", "topic", "indicator"])
STAGE = Histogram(
    "osteohooks_stage_seconds",
    "Time per stage of a hook call (fetch: prefetch fallback; evaluate: facts, rules, cards)",
    ["stage"],
    buckets=_BUCKETS,
)
FALLBACK_FETCHES = Counter(
    "osteohooks_fallback_fetches", "Prefetch keys fetched from the request's fhirServer"
)
AUTH_FAILURES = Counter("osteohooks_auth_failures", "Calls refused with 401, by reason", ["reason"])
STORE_FAILURES = Counter(
    "osteohooks_store_failures",
    "Store writes that failed (audit, issued cards, feedback, jti)",
    ["operation"],
)
STORE_DROPPED = Counter(
    "osteohooks_store_dropped",
    "Audit records given up because the spool was full (each named in the log, no PHI)",
    ["kind"],
)
SPOOL_DEPTH = Gauge(
    "osteohooks_spool_depth",
    "Audit records waiting in the spool for the store to come back",
    multiprocess_mode="livesum",
)
RULES = Gauge(
    "osteohooks_rules_loaded",
    "1 for the rule-set version in service (per worker; 0 for a version reloaded away)",
    ["version"],
    multiprocess_mode="liveall",
)

_FIXED_SERVICES: frozenset[str] = frozenset()
_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Counter | Histogram, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once per label values (the hot path's metrics:
    `labels()` takes a lock and builds its key on every call). Label values come from
    fixed vocabularies, so the cache stays small."""
    key = (id(metric), values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found


def set_services(services: frozenset[str]) -> None:
    """The service ids a `service` label may take (anything else is `other`)."""
    global _FIXED_SERVICES
    _FIXED_SERVICES = services


def rules_version(version: str | None, previous: str | None = None) -> None:
    if previous is not None and previous != version:
        RULES.labels(version=previous).set(0)
    if version is not None:
        RULES.labels(version=version).set(1)


def render() -> tuple[bytes, str]:
    """The exposition text: this process, or every worker's in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE
    return generate_latest(REGISTRY), CONTENT_TYPE


def mark_dead_worker(pid: int) -> None:
    """Drop a dead worker's live gauges (multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _service_label(path: str) -> str:
    parts = path.split("/")
    if len(parts) < 3 or not parts[2]:
        return "discovery"
    service = parts[2] if parts[2] in _FIXED_SERVICES else "other"
    return f"{service}/feedback" if len(parts) > 3 and parts[3] == "feedback" else service


class MetricsMiddleware:
    """Pure ASGI: counts and times every /cds-services call by service and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/cds-services"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            service, code = _service_label(path), str(status[0])
            child(CALLS, service, code).inc()
            child(LATENCY, service, code).observe(time.perf_counter() - started)
