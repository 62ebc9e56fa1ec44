"""The CDS Hooks 2.0.1 service: `create_app(settings, evaluator=None)`.

Layers, outermost first: CORS (when origins are configured) -> `RequestGuard` (413 on
bodies over the limit, JWT authentication of every `/cds-services` call) -> FastAPI routes.
Routes read the body themselves so that the order of checks is fixed and documented:
413, 401, 404 unknown service, 400 malformed JSON or shape, 412 missing data, 422 unusable
FHIR, then evaluation (500 on an internal failure, never an empty card list).

The concerns, one module each: `state` (what the routes share), `discovery`, `guard`
(size limit, JWT), `lifecycle` (lifespan, rule reloads), `body` (parsing and validation),
`hooks` (service calls), `feedback`, `health` (/health, /ready, /metrics), `handlers`
(error answers), `openapi`; this module builds the app from them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import date

import httpx
from fastapi import FastAPI, Request
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

import cds
from cds import metrics
from cds.api import prefetch as prefetch_mod
from cds.api.auth import JwtVerifier, TrustedIssuer, load_trusted_issuers
from cds.api.discovery import SERVICE_DEFS, build_discovery, observation_codes
from cds.api.feedback import answer_feedback
from cds.api.guard import RequestGuard
from cds.api.handlers import add_error_handlers
from cds.api.health import add_operations
from cds.api.hooks import answer_call
from cds.api.lifecycle import lifespan_of
from cds.api.models import (
    CdsResponse,
    Discovery,
    FeedbackReceipt,
)
from cds.api.offload import Offload
from cds.api.openapi import ERROR_DOCS, add_openapi, body_doc
from cds.api.ruleset import EvaluatorLike, RuleSetHolder, load_evaluator
from cds.api.state import JSON, ServiceState
from cds.settings import Settings
from cds.store import Store

log = logging.getLogger("osteohooks.api")

BASE_URL_REQUIRED = (
    "OSTEOHOOKS_AUTH=jwt needs OSTEOHOOKS_BASE_URL, the public URL the EHR calls (e.g. "
    "https://cds.example.org): a JWT's aud is checked against it, never against the Host or "
    "X-Forwarded-Proto of the request, which a caller can choose"
)


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
    issuers = _trusted_issuers(settings, verifier)
    store = store or Store(settings.database_url, spool_path=settings.audit_spool)
    verifier = _verifier(settings, issuers, verifier, store)
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
    if holder.rules_dir is not None and settings.eval_processes > 0 and fhir_transport is None:
        # (a FHIR transport given here cannot travel to another process)
        state.offload = Offload(settings, holder.rules_dir, templates)
    return _app(state)


def _trusted_issuers(
    settings: Settings, verifier: JwtVerifier | None
) -> dict[str, TrustedIssuer] | None:
    """The trusted issuers file, read when JWT auth is on and no verifier is given."""
    if verifier is not None or settings.auth != "jwt":
        return None
    if settings.trusted_issuers is None:
        raise ValueError(
            "OSTEOHOOKS_AUTH=jwt needs OSTEOHOOKS_TRUSTED_ISSUERS (a JSON file of trusted "
            "issuers and their keys); set OSTEOHOOKS_AUTH=none only for development"
        )
    return load_trusted_issuers(settings.trusted_issuers)


def _verifier(
    settings: Settings,
    issuers: dict[str, TrustedIssuer] | None,
    verifier: JwtVerifier | None,
    store: Store,
) -> JwtVerifier | None:
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
        log.warning(
            "AUTHENTICATION IS OFF (OSTEOHOOKS_AUTH=none): any caller can use this service. "
            "Development only.",
            extra={"event": "auth-off"},
        )
        return None
    return verifier


def _app(state: ServiceState) -> FastAPI:
    app = FastAPI(
        title="osteohooks CDS Hooks service",
        version=cds.__version__,
        description="CDS Hooks 2.0.1 decision support for bone density (DXA).",
        lifespan=lifespan_of(state),
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = state
    metrics.set_services(frozenset(SERVICE_DEFS))
    metrics.rules_version(state.holder.evaluator.ruleset_version)
    add_operations(app, state)
    _routes(app, state)
    add_error_handlers(app)
    add_openapi(app)
    app.add_middleware(RequestGuard, state=state)
    app.add_middleware(metrics.MetricsMiddleware)
    if state.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=state.settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    return app


def _routes(app: FastAPI, state: ServiceState) -> None:
    @app.get(
        "/cds-services",
        response_model=Discovery,
        response_model_exclude_none=True,
        summary="CDS Hooks discovery",
        responses={401: ERROR_DOCS[401]},
    )
    async def discovery() -> Response:
        return Response(state.discovery_body, media_type=JSON)

    @app.post(
        "/cds-services/{service_id}",
        response_model=CdsResponse,
        response_model_exclude_none=True,
        summary="Call a CDS service (patient-view, order-select, order-sign)",
        responses=ERROR_DOCS,
        openapi_extra=body_doc("CdsRequest"),
    )
    async def call_service(service_id: str, request: Request) -> Response:
        return await answer_call(state, service_id, await request.body())

    @app.post(
        "/cds-services/{service_id}/feedback",
        response_model=FeedbackReceipt,
        summary="Feedback on cards (accepted / overridden)",
        responses={k: ERROR_DOCS[k] for k in (400, 401, 404, 413, 500, 503)},
        openapi_extra=body_doc("FeedbackRequest"),
    )
    async def feedback(service_id: str, request: Request) -> Response:
        return await answer_feedback(state, service_id, await request.body())
