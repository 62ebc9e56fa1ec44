"""CDS service calls (`POST /cds-services/{id}`): parse -> resolve prefetch -> evaluate ->
respond -> audit. Order of answers: 400 shape, 412 missing data, 422 unusable FHIR, 500 on
an internal failure (never an empty card list), else 200 with the cards."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from starlette.responses import Response

from cds import metrics
from cds.api import prefetch as prefetch_mod
from cds.api.body import parsed, validated
from cds.api.discovery import service_of
from cds.api.errors import (
    ApiError,
    issue,
    outcome_response,
)
from cds.api.models import (
    CONTEXT_MODELS,
    CdsRequest,
    OrderSignContext,
    PatientViewContext,
)
from cds.api.prefetch import PrefetchResult
from cds.api.state import JSON, CallEnv, ServiceState
from cds.cards.invariants import empty_elements
from cds.contracts.cards import EXTENSION_KEY, Card, dump_cards
from cds.contracts.hooks import HookCall, RequestError, request_call
from cds.contracts.outcome import is_fatal
from cds.jsontext import dumps
from cds.store import AuditRecord, IssuedCard

log = logging.getLogger("osteohooks.api")

#: Patients with more resources than this are evaluated in a worker thread.
EVALUATE_IN_THREAD_ENTRIES = 200


@dataclass(frozen=True)
class Answered:
    """One computed call, for its answer, audit row, metrics and log line (picklable: a
    worker process returns it). `payload` is the 200 body; other statuses carry `issues`
    (OperationOutcome issues, as models or the pipeline's JSON) and `headers`."""

    hook_instance: str
    status: int
    version: str | None = None
    payload: bytes = b""
    issues: list[Any] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    reason: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)
    cards: list[IssuedCard] = field(default_factory=list)
    indicators: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    no_data: list[str] = field(default_factory=list)
    fetch_ms: float | None = None
    eval_ms: float | None = None


async def answer_call(state: ServiceState, service_id: str, body: bytes) -> Response:
    """`POST /cds-services/{id}`: parse -> resolve the prefetch -> evaluate -> respond, with
    every answer (refusals and failures included) audited. Bodies above
    `settings.process_body_bytes`, and calls whose fallback fetch answers more than that,
    are computed in a worker process (`cds.api.offload`)."""
    started = time.perf_counter()
    hook, _title, _desc = service_of(service_id)
    env = state.env()
    answered = None
    offload = state.offload
    if offload is not None and len(body) > state.settings.process_body_bytes:
        answered = await offload.compute(env, service_id, body)
    if answered is None:
        try:
            answered = await compute(env, service_id, body)
        except prefetch_mod.ComputeElsewhere:  # a fetched answer too big to parse here
            assert offload is not None  # (only raised when env.parse_here_bytes is set)
            answered = await offload.compute(env, service_id, body)
            if answered is None:  # the rules changed again: here after all, in a thread
                answered = await compute(replace(env, parse_here_bytes=None), service_id, body)
    return _finish(state, service_id, hook, started, answered)


async def compute(env: CallEnv, service_id: str, body: bytes) -> Answered:
    """The call computed: parse (400 before the hookInstance is known raises ApiError),
    then every other answer as an `Answered` (`ComputeElsewhere` propagates)."""
    hook, _title, _desc = service_of(service_id)
    request: CdsRequest = await parsed(env.limiter, CdsRequest, body, "CDS Hooks request")
    if env.heard is not None:
        env.heard(request.hookInstance)
    try:
        return await _answer(env, service_id, hook, request)
    except ApiError as exc:
        return Answered(
            request.hookInstance,
            exc.status,
            issues=exc.issues,
            headers=exc.headers,
            reason=exc.expressions(),
        )
    except prefetch_mod.ComputeElsewhere:
        raise
    except Exception:
        log.exception(
            "hook call failed",
            extra={
                "event": "internal-error",
                "hookInstance": request.hookInstance,
                "service": service_id,
            },
        )
        return Answered(
            request.hookInstance,
            500,
            issues=[issue("Internal error; the service log has the details.", code="exception")],
        )


def _finish(
    state: ServiceState, service_id: str, hook: str, started: float, answered: Answered
) -> Response:
    """Audit, metrics and log of a computed call, then its answer."""
    if answered.fetch_ms is not None:
        metrics.child(metrics.STAGE, "fetch").observe(answered.fetch_ms / 1000)
    if answered.fetched:
        metrics.FALLBACK_FETCHES.inc(len(answered.fetched))
    if answered.eval_ms is not None:
        metrics.child(metrics.STAGE, "evaluate").observe(answered.eval_ms / 1000)
    state.store.record(
        AuditRecord(
            service=service_id,
            hook=hook,
            hook_instance=answered.hook_instance,
            ruleset_version=answered.version,
            status=answered.status,
            rules_fired=answered.fired,
            cards=[c for c in answered.cards if c.uuid != "None"],
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
    )
    if answered.status == 200:
        for origin, indicator in zip(answered.cards, answered.indicators, strict=True):
            metrics.child(metrics.CARDS, service_id, origin.topic or "none", indicator).inc()
        _log_answer(service_id, hook, started, answered)
        return Response(answered.payload, media_type=JSON)
    if answered.status < 500:  # a refused call is logged (status and elements only)
        unusable = answered.status == 422 and not answered.reason  # the pipeline's outcome
        log.info(
            "unusable FHIR data" if unusable else "hook refused",
            extra={
                "event": "hook" if unusable else "refused",
                "service": service_id,
                "hookInstance": answered.hook_instance,
                "status": answered.status,
                "reason": answered.reason or None,
            },
        )
    return outcome_response(answered.status, answered.issues, headers=answered.headers)


def _context(
    service_id: str, hook: str, request: CdsRequest
) -> PatientViewContext | OrderSignContext:
    """The request's context, validated for its hook (400 naming the element)."""
    if request.hook != hook:
        raise ApiError(
            400,
            f"hook is {request.hook!r} but service {service_id!r} answers {hook!r}; "
            "call the service whose discovery entry names your hook",
            expression=["hook"],
        )
    context: PatientViewContext | OrderSignContext = validated(
        CONTEXT_MODELS[hook], request.context, "context"
    )
    auth = request.fhirAuthorization
    if auth is not None and auth.patient_scope_without_patient():
        log.warning(
            "cds-r-2: fhirAuthorization has patient/ scopes but no patient",
            extra={"hookInstance": request.hookInstance, "service": service_id},
        )
    return context


async def _resolve(env: CallEnv, request: CdsRequest, patient_id: str) -> PrefetchResult:
    """The prefetch, and what it lacks fetched from an allowlisted fhirServer (412 else)."""
    auth = request.fhirAuthorization
    settings = env.settings
    return await prefetch_mod.resolve(
        templates=env.templates,
        prefetch=request.prefetch,
        patient_id=patient_id,
        fhir_server=request.fhirServer,
        access_token=auth.access_token if auth else None,
        allowlist=settings.fhir_server_allowlist,
        timeout=settings.fhir_timeout,
        max_pages=settings.fhir_max_pages,
        deadline=settings.fhir_deadline_ms / 1000,
        max_bytes=settings.fhir_max_bytes,
        transport=env.fhir_transport,
        parse_here_bytes=env.parse_here_bytes,
    )


async def _answer(env: CallEnv, service_id: str, hook: str, request: CdsRequest) -> Answered:
    context = _context(service_id, hook, request)
    fetch_started = time.perf_counter()
    data = await _resolve(env, request, context.patientId)
    fetch_ms = (time.perf_counter() - fetch_started) * 1000
    _check_patient(data.resources, context.patientId)
    hook_call = _call_of(request, data.resources)
    evaluator = env.evaluator
    version: str | None = None
    eval_started = time.perf_counter()
    try:
        version = evaluator.ruleset_version
        result, cards, cards_json = await _evaluate(env, hook_call)
    except Exception:
        return _failed(service_id, request.hookInstance, version, fetch_ms)
    eval_ms = (time.perf_counter() - eval_started) * 1000
    outcome = getattr(result, "outcome", None)
    fired = [str(r) for r in getattr(result, "fired", [])]
    if is_fatal(outcome):
        # nothing could be evaluated (no usable Patient, no birth date...): 422, not "no cards"
        assert outcome is not None
        issues = outcome.get("issue") or []
        return Answered(
            request.hookInstance,
            422,
            version,
            issues=issues,
            fired=fired,
            fetch_ms=fetch_ms,
            eval_ms=eval_ms,
        )
    issued = [_issued(card) for card in cards]
    return Answered(
        request.hookInstance,
        200,
        version,
        payload=_payload(cards_json, outcome, data),
        fired=fired,
        cards=issued,
        indicators=[card.indicator for card in cards],
        fetched=data.fetched,
        no_data=data.no_data,
        fetch_ms=fetch_ms,
        eval_ms=eval_ms,
    )


async def _evaluate(env: CallEnv, hook_call: HookCall) -> tuple[Any, list[Card], str]:
    """The pipeline's result, its cards (the contract's `Card`, validated when built) and
    their compact JSON (raises on any failure: the caller answers 500)."""

    def evaluate() -> tuple[Any, list[Card], str]:
        result = env.evaluator.evaluate(hook_call.to_input(env.as_of))
        cards: list[Card] = list(result.cards)
        values = dump_cards(cards)
        cards_json = dumps(values)
        if _maybe_empty(cards_json):  # cheap scan of the JSON; the exact walk only on a hit
            _no_empty(values, "cards")
        return result, cards, cards_json

    if _entries(hook_call.resources) > EVALUATE_IN_THREAD_ENTRIES:
        # off the event loop (the engine serialises its own access): discovery and
        # other calls are answered while a big patient is evaluated
        return await anyio.to_thread.run_sync(evaluate, limiter=env.limiter)
    return evaluate()  # a typical patient (~1.5 ms) costs less on the loop than a thread hop


def _failed(service_id: str, hook_instance: str, version: str | None, fetch_ms: float) -> Answered:
    """500 for a failed evaluation: logged with the hookInstance, never "no cards"."""
    log.exception(
        "evaluation failed",
        extra={"event": "evaluation-failed", "hookInstance": hook_instance, "service": service_id},
    )
    return internal_error(
        hook_instance, version, f"while evaluating hookInstance {hook_instance}", fetch_ms
    )


def internal_error(
    hook_instance: str, version: str | None, what: str, fetch_ms: float | None = None
) -> Answered:
    """The 500 of a call that failed `what` (e.g. "while evaluating hookInstance ..."):
    no decision support was computed, which the answer says is not "no cards"."""
    return Answered(
        hook_instance,
        500,
        version,
        issues=[
            issue(
                f"Internal error {what}; no decision support was computed (this is not "
                "'no cards'). The service log has the details under this hookInstance.",
                code="exception",
            )
        ],
        fetch_ms=fetch_ms,
    )


def _payload(cards_json: str, outcome: dict[str, Any] | None, data: PrefetchResult) -> bytes:
    """The 200 body: the cards, and the data errors and prefetch notes in the extension
    (encoded before the audit: the audit records what the client gets)."""
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
    return body.encode()


def _log_answer(service_id: str, hook: str, started: float, answered: Answered) -> None:
    log.info(
        "hook answered",
        extra={
            "event": "hook",
            "service": service_id,
            "hook": hook,
            "hookInstance": answered.hook_instance,
            "status": 200,
            "fired": answered.fired,
            "topics": [c.topic for c in answered.cards if c.topic],
            "cards": len(answered.cards),
            "fetched": answered.fetched or None,
            "noData": answered.no_data or None,
            "rulesetVersion": answered.version,
            "fetchMs": round(answered.fetch_ms or 0.0, 2),
            "evaluateMs": round(answered.eval_ms or 0.0, 2),
            "latencyMs": round((time.perf_counter() - started) * 1000, 2),
        },
    )


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


def _issued(card: Card) -> IssuedCard:
    return IssuedCard(uuid=str(card.uuid), rule=card.payload.get("rule"), topic=card.topic or None)
