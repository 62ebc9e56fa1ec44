"""The CDS Hooks 2.0.1 service: `create_app(settings, evaluator=None)`.

Layers, outermost first: CORS (when origins are configured) -> `RequestGuard` (413 on
bodies over the limit, JWT authentication of every `/cds-services` call) -> FastAPI routes.
Routes read the body themselves so that the order of checks is fixed and documented:
413, 401, 404 unknown service, 400 malformed JSON or shape, 412 missing data, 422 unusable
FHIR, then evaluation (500 on an internal failure, never an empty card list).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import cds
from cds import metrics
from cds.api import prefetch as prefetch_mod
from cds.api.auth import AuthError, JwtVerifier, bearer_token, load_trusted_issuers
from cds.api.errors import (
    ApiError,
    error_response,
    issue,
    outcome_response,
    unauthorized,
    validation_issues,
)
from cds.api.health import add_operations
from cds.api.models import (
    CONTEXT_MODELS,
    CdsRequest,
    CdsResponse,
    Discovery,
    FeedbackReceipt,
    FeedbackRequest,
    OrderSelectContext,
    OrderSignContext,
    PatientViewContext,
    Service,
)
from cds.api.ruleset import EvaluatorLike, RuleSetHolder, load_evaluator
from cds.cards.invariants import empty_elements
from cds.contracts.cards import EXTENSION_KEY
from cds.contracts.hooks import HookCall, RequestError, request_call
from cds.contracts.outcome import is_fatal
from cds.fhir.profiles import load_profiles
from cds.jsontext import dumps, loads, lone_surrogate
from cds.settings import Settings
from cds.store import AuditRecord, FeedbackItem, IssuedCard, Store, StoreUnavailable

log = logging.getLogger("osteohooks.api")

JSON = "application/json"
FEEDBACK_SECONDS = 2.0  # feedback not committed by then: 503 with Retry-After
RETRY_AFTER_SECONDS = "5"

SERVICE_DEFS: dict[str, tuple[str, str, str]] = {
    "bmd-patient-view": (
        "patient-view",
        "Bone density (DXA) interpretation",
        "Reads the patient's DXA results (lumbar spine, hip, femoral neck T- and Z-scores, BMD, "
        "TBS), bone-active medications, conditions and procedures, and answers with cards: "
        "densitometric category, artifacts that bias lumbar BMD, change since the last scan, "
        "TBS, workup, rescan interval and therapy safety.",
    ),
    "bmd-order-select": (
        "order-select",
        "DXA order timing (order selected)",
        "When a DXA is selected, checks its timing against the last axial DXA (repeat-scan "
        "interval and coverage), names the exceptions and suggests the previous scanner. "
        "Other bone density cards are left to patient-view, except a critical safety card.",
    ),
    "bmd-order-sign": (
        "order-sign",
        "DXA order timing (order signed)",
        "Before draft orders are signed: the same checks as bmd-order-select on every draft "
        "order in context.draftOrders.",
    ),
}

USAGE = (
    "Send every prefetch key (null when there is no data), or an allowlisted fhirServer "
    "with fhirAuthorization so the service can fetch what is missing; otherwise the answer "
    "is 412. Feedback: POST /cds-services/{id}/feedback. Cards carry a machine-readable "
    "payload at extension['org.osteohooks']."
)

BASE_URL_REQUIRED = (
    "OSTEOHOOKS_AUTH=jwt needs OSTEOHOOKS_BASE_URL, the public URL the EHR calls (e.g. "
    "https://cds.example.org): a JWT's aud is checked against it, never against the Host or "
    "X-Forwarded-Proto of the request, which a caller can choose"
)

NO_AUTH_WARNING = (
    "WARNING: AUTHENTICATION IS OFF (OSTEOHOOKS_AUTH=none): development only, never expose "
    "this service to patient data. "
)


# --------------------------------------------------------------------------- state


@dataclass
class ServiceState:
    settings: Settings
    holder: RuleSetHolder
    store: Store
    verifier: JwtVerifier | None
    templates: dict[str, str]
    discovery_body: bytes
    fhir_transport: httpx.AsyncBaseTransport | None = None
    today: Callable[[], date] = field(default=lambda: datetime.now(UTC).date())
    eval_limiter: anyio.CapacityLimiter | None = None


def observation_codes(settings: Settings) -> list[str]:
    """The Observation codes the facts stage reads, from fhir_profiles/ (else CS-1.7)."""
    codes = list(load_profiles(settings.fhir_profiles).observation_codes)
    return codes or list(prefetch_mod.CS_1_7_OBSERVATION_CODES)


def build_discovery(settings: Settings, templates: Mapping[str, str]) -> Discovery:
    warning = NO_AUTH_WARNING if settings.auth == "none" else ""
    return Discovery(
        services=[
            Service(
                hook=hook,
                title=title,
                description=warning + description,
                id=service_id,
                prefetch=dict(templates),
                usageRequirements=warning + USAGE,
            )
            for service_id, (hook, title, description) in SERVICE_DEFS.items()
        ]
    )


# --------------------------------------------------------------------------- guard


class RequestGuard:
    """Pure ASGI: body size limit and JWT authentication before any route runs."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state
        self.limit = state.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "Content-Length is not a number")(scope, receive, send)
                return
            if int(declared) > self.limit:
                await self._too_large(scope, receive, send)
                return
        path: str = scope["path"]
        needs_auth = self.state.verifier is not None and path.startswith("/cds-services")
        if needs_auth:
            try:
                authenticated = await self._authenticated(scope, headers, path)
            except StoreUnavailable as exc:  # the jti cannot be checked: not the caller's fault
                log.error("503: %s", exc, extra={"event": "store-unavailable", "path": path})
                await store_unavailable().response()(scope, receive, send)
                return
            if not authenticated:
                await unauthorized().response()(scope, receive, send)
                return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self._read(receive)
            if body is None:
                await self._too_large(scope, receive, send)
                return
            receive = _replay(body)
        await self.app(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        mb = self.limit / (1024 * 1024)
        await error_response(
            413,
            f"Request body larger than {mb:g} MB. Send only the prefetch keys advertised in "
            "discovery (the Observation search is restricted to the codes the rules read).",
        )(scope, receive, send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _authenticated(self, scope: Scope, headers: Mapping[str, str], path: str) -> bool:
        assert self.state.verifier is not None
        token = bearer_token(headers.get("authorization"))
        if token is None:
            log.debug("401: no bearer token", extra={"reason": "no-bearer", "path": path})
            metrics.AUTH_FAILURES.labels(reason="no-bearer").inc()
            return False
        base = self.state.settings.base_url
        assert base is not None  # create_app refuses JWT auth without OSTEOHOOKS_BASE_URL
        audiences = [base + path.rstrip("/")]
        parts = path.rstrip("/").split("/")
        if len(parts) == 4 and parts[3] == "feedback":  # aud may name the service itself
            audiences.append(base + "/".join(parts[:3]))
        try:
            claims = await self.state.verifier.verify(token, audiences)
        except AuthError as exc:
            log.debug("401: %s", exc, extra={"reason": str(exc), "path": path})
            metrics.AUTH_FAILURES.labels(reason=exc.reason).inc()
            return False
        except StoreUnavailable:
            raise
        except Exception:  # a verifier bug must not open the door
            log.exception("401: token verification crashed", extra={"path": path})
            metrics.AUTH_FAILURES.labels(reason="error").inc()
            return False
        scope.setdefault("state", {})["jwt_iss"] = claims.get("iss")
        return True


def store_unavailable() -> ApiError:
    return ApiError(
        503,
        "The service's store cannot take a write right now; nothing was recorded. Send the "
        f"same request again after {RETRY_AFTER_SECONDS} s (feedback is idempotent).",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


# --------------------------------------------------------------------------- app


def create_app(
    settings: Settings | None = None,
    evaluator: EvaluatorLike | None = None,
    *,
    store: Store | None = None,
    verifier: JwtVerifier | None = None,
    fhir_transport: httpx.AsyncBaseTransport | None = None,
    today: Callable[[], date] | None = None,
) -> FastAPI:
    """Build the service. `evaluator` defaults to the rules in `settings.rules`."""
    settings = settings or Settings()
    if settings.auth == "jwt" and settings.base_url is None:
        raise ValueError(BASE_URL_REQUIRED)
    issuers = None
    if verifier is None and settings.auth == "jwt":
        if settings.trusted_issuers is None:
            raise ValueError(
                "OSTEOHOOKS_AUTH=jwt needs OSTEOHOOKS_TRUSTED_ISSUERS (a JSON file of trusted "
                "issuers and their keys); set OSTEOHOOKS_AUTH=none only for development"
            )
        issuers = load_trusted_issuers(settings.trusted_issuers)
    store = store or Store(settings.database_url, spool_path=settings.audit_spool)
    if issuers is not None:
        verifier = JwtVerifier(
            issuers,
            tenants=settings.trusted_tenants,
            leeway=settings.jwt_leeway,
            max_lifetime=settings.jwt_max_lifetime,
            jwks_ttl=settings.jwks_cache_ttl,
            replay=store,  # one jti guard for every worker and instance on this database
        )
    if settings.auth == "none":
        verifier = None
        log.warning(
            "AUTHENTICATION IS OFF (OSTEOHOOKS_AUTH=none): any caller can use this service. "
            "Development only.",
            extra={"event": "auth-off"},
        )
    if evaluator is None:  # after the configuration checks: compiling rules takes a while
        holder = RuleSetHolder(load_evaluator(settings.rules), settings.rules)
    else:
        holder = RuleSetHolder(evaluator, None)
    templates = prefetch_mod.prefetch_templates(observation_codes(settings))
    discovery = build_discovery(settings, templates)
    state = ServiceState(
        settings=settings,
        holder=holder,
        store=store,
        verifier=verifier,
        templates=templates,
        discovery_body=json.dumps(discovery.dump(), separators=(",", ":")).encode(),
        fhir_transport=fhir_transport,
    )
    if today is not None:
        state.today = today

    app = FastAPI(
        title="osteohooks CDS Hooks service",
        version=cds.__version__,
        description="CDS Hooks 2.0.1 decision support for bone density (DXA).",
        lifespan=_lifespan(state),
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = state
    metrics.set_services(frozenset(SERVICE_DEFS))
    metrics.rules_version(holder.evaluator.ruleset_version)
    add_operations(app, state)
    _routes(app, state)
    _handlers(app)
    _openapi(app)
    app.add_middleware(RequestGuard, state=state)
    app.add_middleware(metrics.MetricsMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    return app


def _lifespan(
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
        _freeze_startup_heap()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if sighup:
                loop.remove_signal_handler(signal.SIGHUP)
            await anyio.to_thread.run_sync(state.store.close)

    return lifespan


_heap_frozen = False


def _freeze_startup_heap() -> None:
    """Once per process, at the first startup: collect, then move every surviving object
    to the collector's permanent generation (`gc.freeze`). The compiled rule set, the
    fhir.resources models and the imports are ~130k long-lived objects that each full
    collection walked (~80 ms, a pause for every call in flight, every few hundred calls);
    objects made while serving, and a reloaded rule set, are collected as before."""
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


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


# --------------------------------------------------------------------------- routes


def _routes(app: FastAPI, state: ServiceState) -> None:
    error_docs: dict[int | str, dict[str, Any]] = {
        code: {"description": text, "content": {"application/fhir+json": {}}}
        for code, text in {
            400: "Malformed JSON or request shape (OperationOutcome)",
            401: "Missing or invalid JWT (OperationOutcome)",
            404: "Unknown service (OperationOutcome)",
            412: "Required prefetch data neither sent nor fetchable (OperationOutcome)",
            413: "Body over 5 MB (OperationOutcome)",
            422: "FHIR data too unusable to evaluate (OperationOutcome)",
            500: "Internal failure (OperationOutcome)",
            503: "Store unavailable: nothing recorded, retry after Retry-After (OperationOutcome)",
        }.items()
    }

    @app.get(
        "/cds-services",
        response_model=Discovery,
        response_model_exclude_none=True,
        summary="CDS Hooks discovery",
        responses={401: error_docs[401]},
    )
    async def discovery() -> Response:
        return Response(state.discovery_body, media_type=JSON)

    @app.post(
        "/cds-services/{service_id}",
        response_model=CdsResponse,
        response_model_exclude_none=True,
        summary="Call a CDS service (patient-view, order-select, order-sign)",
        responses=error_docs,
        openapi_extra=_body_doc("CdsRequest"),
    )
    async def call_service(service_id: str, request: Request) -> Response:
        return await _call(state, service_id, await request.body())

    @app.post(
        "/cds-services/{service_id}/feedback",
        response_model=FeedbackReceipt,
        summary="Feedback on cards (accepted / overridden)",
        responses={k: error_docs[k] for k in (400, 401, 404, 413, 500, 503)},
        openapi_extra=_body_doc("FeedbackRequest"),
    )
    async def feedback(service_id: str, request: Request) -> Response:
        return await _feedback(state, service_id, await request.body())


def _body_doc(model: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{model}"}}},
        }
    }


def _service(service_id: str) -> tuple[str, str, str]:
    try:
        return SERVICE_DEFS[service_id]
    except KeyError:
        raise ApiError(
            404,
            f"No CDS service {service_id!r}. Services: {', '.join(SERVICE_DEFS)} "
            "(GET /cds-services lists them).",
            expression=["id"],
        ) from None


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = loads(body)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"The body is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
            f"Send a {what} as application/json.",
        ) from None
    except UnicodeDecodeError:
        raise ApiError(400, f"The body is not UTF-8 text. Send a {what} as JSON.") from None
    except RecursionError:
        raise ApiError(400, "The body nests JSON too deeply to read.") from None
    except ValueError as exc:  # Python's limit on integer digits (4300)
        raise ApiError(
            400,
            f"The body holds a number too long to read ({exc}). Send numbers of at most "
            "4300 digits (FHIR decimals and integers are far shorter).",
        ) from None
    where = lone_surrogate(body, data)
    if where is not None:
        raise ApiError(
            400,
            f"The body holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF without its "
            f"pair) at {where}: that is not Unicode text. Send valid UTF-8 strings.",
            expression=[where],
        )
    if not isinstance(data, dict):
        raise ApiError(
            400, f"The body must be a JSON object (a {what}), not {type(data).__name__}."
        )
    return data


#: Bodies above this many bytes are parsed and validated in a worker thread: a small body
#: costs less than the thread hop, a 5 MB one would hold the event loop for tens of ms.
PARSE_IN_THREAD_BYTES = 64 * 1024


async def _parsed(state: ServiceState, model: type[BaseModel], body: bytes, what: str) -> Any:
    def parse() -> Any:
        return _validate(model, _json_object(body, what))

    if len(body) <= PARSE_IN_THREAD_BYTES:
        return parse()
    return await anyio.to_thread.run_sync(parse, limiter=state.eval_limiter)


def _validate(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = validation_issues(exc, prefix)
        raise ApiError(400, issues[0].diagnostics or "", issues=issues) from None
    except RecursionError:
        raise ApiError(400, "The body nests JSON too deeply to read.") from None


async def _call(state: ServiceState, service_id: str, body: bytes) -> Response:
    started = time.perf_counter()
    hook, _title, _desc = _service(service_id)
    request: CdsRequest = await _parsed(state, CdsRequest, body, "CDS Hooks request")
    try:
        return await _answer(state, service_id, hook, request, started)
    except ApiError as exc:  # a refused call is audited and logged (status and elements only)
        _audit(state, service_id, hook, request.hookInstance, None, exc.status, [], [], started)
        log.info(
            "hook refused",
            extra={
                "event": "refused",
                "service": service_id,
                "hookInstance": request.hookInstance,
                "status": exc.status,
                "reason": exc.expressions() or None,
            },
        )
        raise
    except Exception:  # answered 500 by the crash handler: the audit says 500 too
        _audit(state, service_id, hook, request.hookInstance, None, 500, [], [], started)
        raise


async def _answer(
    state: ServiceState, service_id: str, hook: str, request: CdsRequest, started: float
) -> Response:
    hook_instance = request.hookInstance
    if request.hook != hook:
        raise ApiError(
            400,
            f"hook is {request.hook!r} but service {service_id!r} answers {hook!r}; call the "
            "service whose discovery entry names your hook",
            expression=["hook"],
        )
    context_model = CONTEXT_MODELS[hook]
    context = _validate(context_model, request.context, "context")
    auth = request.fhirAuthorization
    if auth is not None and auth.patient_scope_without_patient():
        log.warning(
            "cds-r-2: fhirAuthorization has patient/ scopes but no patient",
            extra={"hookInstance": hook_instance, "service": service_id},
        )
    fetch_started = time.perf_counter()
    data = await prefetch_mod.resolve(
        templates=state.templates,
        prefetch=request.prefetch,
        patient_id=context.patientId,
        fhir_server=request.fhirServer,
        access_token=auth.access_token if auth else None,
        allowlist=state.settings.fhir_server_allowlist,
        timeout=state.settings.fhir_timeout,
        max_pages=state.settings.fhir_max_pages,
        deadline=state.settings.fhir_deadline_ms / 1000,
        max_bytes=state.settings.fhir_max_bytes,
        transport=state.fhir_transport,
    )
    fetch_ms = (time.perf_counter() - fetch_started) * 1000
    metrics.STAGE.labels(stage="fetch").observe(fetch_ms / 1000)
    if data.fetched:
        metrics.FALLBACK_FETCHES.inc(len(data.fetched))
    _check_patient(data.resources, context.patientId)
    call = _call_of(request, data.resources)

    evaluator = state.holder.evaluator
    version: str | None = None
    eval_started = time.perf_counter()
    as_of = state.settings.as_of or state.today()

    def evaluate() -> tuple[Any, list[dict[str, Any]], str]:
        result = evaluator.evaluate(call.to_input(as_of))
        cards: list[dict[str, Any]] = list(result.cards)
        CdsResponse.model_validate({"cards": cards})
        cards_json = dumps(cards)
        if _maybe_empty(cards_json):  # cheap scan of the JSON; the exact walk only on a hit
            _no_empty(cards, "cards")
        return result, cards, cards_json

    try:
        version = evaluator.ruleset_version
        if _entries(data.resources) > EVALUATE_IN_THREAD_ENTRIES:
            # off the event loop (the engine serialises its own access): discovery and
            # other calls are answered while a big patient is evaluated
            result, cards, cards_json = await anyio.to_thread.run_sync(
                evaluate, limiter=state.eval_limiter
            )
        else:  # a typical patient (~1.5 ms) costs less on the loop than a thread hop
            result, cards, cards_json = evaluate()
    except Exception:
        log.exception(
            "evaluation failed",
            extra={
                "event": "evaluation-failed",
                "hookInstance": hook_instance,
                "service": service_id,
            },
        )
        _audit(state, service_id, hook, hook_instance, version, 500, [], [], started)
        return outcome_response(
            500,
            [
                issue(
                    f"Internal error while evaluating hookInstance {hook_instance}; no decision "
                    "support was computed (this is not 'no cards'). The service log has the "
                    "details under this hookInstance.",
                    code="exception",
                )
            ],
        )
    eval_ms = (time.perf_counter() - eval_started) * 1000
    metrics.STAGE.labels(stage="evaluate").observe(eval_ms / 1000)
    outcome = getattr(result, "outcome", None)
    fired = [str(r) for r in getattr(result, "fired", [])]
    if is_fatal(outcome):
        # nothing could be evaluated (no usable Patient, no birth date...): 422, not "no cards"
        assert outcome is not None
        _audit(state, service_id, hook, hook_instance, version, 422, fired, [], started)
        log.info(
            "unusable FHIR data",
            extra={
                "event": "hook",
                "service": service_id,
                "hookInstance": hook_instance,
                "status": 422,
            },
        )
        return outcome_response(422, outcome.get("issue") or [])
    body = '{"cards":' + cards_json
    notes = data.notes
    if outcome or notes:
        ext: dict[str, Any] = {}
        if outcome:
            ext["outcome"] = outcome
        if notes:
            ext["prefetch"] = notes
        body += ',"extension":' + dumps({EXTENSION_KEY: ext})
    body += "}"
    payload = body.encode()  # before the audit: the audit records what the client gets
    issued = [_issued(card) for card in cards]
    for card, origin in zip(cards, issued, strict=True):
        metrics.CARDS.labels(
            service=service_id,
            topic=origin.topic or "none",
            indicator=str(card.get("indicator")),
        ).inc()
    _audit(state, service_id, hook, hook_instance, version, 200, fired, issued, started)
    log.info(
        "hook answered",
        extra={
            "event": "hook",
            "service": service_id,
            "hook": hook,
            "hookInstance": hook_instance,
            "status": 200,
            "fired": fired,
            "topics": [c.topic for c in issued if c.topic],
            "cards": len(cards),
            "fetched": data.fetched or None,
            "noData": data.no_data or None,
            "rulesetVersion": version,
            "fetchMs": round(fetch_ms, 2),
            "evaluateMs": round(eval_ms, 2),
            "latencyMs": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return Response(payload, media_type=JSON)


#: Patients with more resources than this are evaluated in a worker thread.
EVALUATE_IN_THREAD_ENTRIES = 200


def _entries(resources: list[dict[str, Any]]) -> int:
    """Resources to evaluate: a Bundle counts its entries, anything else one."""
    total = 0
    for value in resources:
        entry = value.get("entry") if value.get("resourceType") == "Bundle" else None
        total += len(entry) if isinstance(entry, list) else 1
    return total


def _call_of(request: CdsRequest, resources: list[dict[str, Any]]) -> HookCall:
    """The validated request and its resolved prefetch as one `HookCall`: the mapping
    replay uses for request files (`cds.contracts.hooks.request_call`)."""
    try:
        return request_call({"hook": request.hook, "context": request.context}, resources=resources)
    except RequestError as exc:  # the context models accept nothing it refuses
        raise ApiError(400, str(exc), expression=[exc.expression]) from None


def _check_patient(resources: list[dict[str, Any]], patient_id: str) -> None:
    for resource in resources:
        if resource.get("resourceType") == "Patient":
            rid = resource.get("id")
            if isinstance(rid, str) and rid != patient_id:
                raise ApiError(
                    422,
                    f"prefetch.patient is Patient/{rid} but context.patientId is {patient_id}: "
                    "refusing to evaluate one patient's data for another",
                    expression=["prefetch.patient.id"],
                )


_NULL_MARKS = (":null", "[null", ",null")


def _maybe_empty(text: str) -> bool:
    """False when compact JSON certainly holds no null, "", [] or {} (a hit may be text).
    One scan for "null" stands for its three contexts (":null", "[null", ",null")."""
    return (
        '""' in text
        or "[]" in text
        or "{}" in text
        or ("null" in text and any(mark in text for mark in _NULL_MARKS))
    )


def _no_empty(cards: list[dict[str, Any]], where: str) -> None:
    """CDS Hooks: no null, "", [] or {} in what we send (internal check of the cards),
    but the nulls the card contract specifies (`cds.cards.invariants.empty_elements`)."""
    for index, card in enumerate(cards):
        found = empty_elements(card)
        if found:
            raise ValueError(f"{where}[{index}] hold a null or empty element: {found[0]}")


def _issued(card: Mapping[str, Any]) -> IssuedCard:
    ext = card.get("extension", {}).get(EXTENSION_KEY, {})
    topic = card.get("source", {}).get("topic", {}).get("code")
    return IssuedCard(
        uuid=str(card.get("uuid")), rule=ext.get("rule"), topic=topic if topic else None
    )


def _audit(
    state: ServiceState,
    service: str,
    hook: str,
    hook_instance: str,
    version: str | None,
    status: int,
    fired: list[str],
    cards: list[IssuedCard],
    started: float,
) -> None:
    state.store.record(
        AuditRecord(
            service=service,
            hook=hook,
            hook_instance=hook_instance,
            ruleset_version=version,
            status=status,
            rules_fired=fired,
            cards=[c for c in cards if c.uuid != "None"],
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
    )


async def _feedback(state: ServiceState, service_id: str, body: bytes) -> Response:
    _service(service_id)
    request: FeedbackRequest = await _parsed(state, FeedbackRequest, body, "feedback object")
    items = [
        FeedbackItem(
            card=f.card,
            outcome=f.outcome,
            outcome_timestamp=f.outcomeTimestamp,
            accepted_suggestions=[s.id for s in f.acceptedSuggestions or []],
            override_system=f.overrideReason.reason.system
            if f.overrideReason and f.overrideReason.reason
            else None,
            override_code=f.overrideReason.reason.code
            if f.overrideReason and f.overrideReason.reason
            else None,
            override_display=f.overrideReason.reason.display
            if f.overrideReason and f.overrideReason.reason
            else None,
            user_comment=f.overrideReason.userComment if f.overrideReason else None,
        )
        for f in request.feedback
    ]
    try:
        # acknowledged only once committed; a store that cannot commit within
        # FEEDBACK_SECONDS is a fast 503 (a late commit is harmless: feedback is idempotent)
        with anyio.fail_after(FEEDBACK_SECONDS):
            stored, duplicates = await anyio.to_thread.run_sync(
                state.store.store_feedback, service_id, items, abandon_on_cancel=True
            )
    except (TimeoutError, StoreUnavailable, SQLAlchemyError, OSError) as exc:
        metrics.STORE_FAILURES.labels(operation="feedback").inc()
        log.error(
            "feedback not stored (answered 503): %s",
            type(exc).__name__ if isinstance(exc, TimeoutError) else _first_line(exc),
            extra={"event": "feedback-unavailable", "service": service_id, "cards": len(items)},
        )
        raise store_unavailable() from None
    log.info(
        "feedback stored",
        extra={"event": "feedback", "service": service_id, "cards": len(items)},
    )
    receipt = FeedbackReceipt(stored=stored, duplicates=duplicates)
    return Response(json.dumps(receipt.dump()).encode(), media_type=JSON)


def _first_line(exc: BaseException) -> str:
    """The exception's class and first line, never the SQL parameters (user comments)."""
    if isinstance(exc, SQLAlchemyError):
        return f"{type(exc).__name__}: {getattr(exc, 'orig', None) or 'database error'}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


# --------------------------------------------------------------------------- errors


def _handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            text = (
                f"No such endpoint {request.method} {request.url.path}. CDS Hooks endpoints: "
                "GET /cds-services, POST /cds-services/{id}, POST /cds-services/{id}/feedback."
            )
        elif exc.status_code == 405:
            text = f"{request.method} is not allowed on {request.url.path}."
        else:
            text = str(exc.detail)
        return error_response(exc.status_code, text)

    async def invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        issues = [
            issue(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}", code="structure")
            for e in exc.errors()
        ]
        return outcome_response(400, issues or [issue("Invalid request", code="structure")])

    async def crash(request: Request, exc: Exception) -> Response:
        log.error(
            "unhandled error on %s %s",
            request.method,
            request.url.path,
            exc_info=exc,
            extra={"event": "internal-error"},
        )
        return error_response(500, "Internal error; the service log has the details.")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, crash)


def _openapi(app: FastAPI) -> None:
    def custom() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, defs = models_json_schema(
            [
                (m, "validation")
                for m in (
                    CdsRequest,
                    FeedbackRequest,
                    PatientViewContext,
                    OrderSelectContext,
                    OrderSignContext,
                )
            ],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        app.openapi_schema = schema
        return schema

    app.openapi = custom  # type: ignore[method-assign]
