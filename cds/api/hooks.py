"""CDS service calls (`POST /cds-services/{id}`): parse -> resolve prefetch -> evaluate ->
respond -> audit. Order of answers: 400 shape, 412 missing data, 422 unusable FHIR, 500 on
an internal failure (never an empty card list), else 200 with the cards."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
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
from cds.api.ruleset import EvaluatorLike
from cds.api.state import JSON, ServiceState
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
class _Call:
    """One call of a CDS service in progress: what its audit row and log lines name."""

    state: ServiceState
    service_id: str
    hook: str
    hook_instance: str
    started: float

    def audit(
        self,
        version: str | None,
        status: int,
        fired: Sequence[str] = (),
        cards: Sequence[IssuedCard] = (),
    ) -> None:
        """The call's audit row (cards without a uuid are not recorded)."""
        self.state.store.record(
            AuditRecord(
                service=self.service_id,
                hook=self.hook,
                hook_instance=self.hook_instance,
                ruleset_version=version,
                status=status,
                rules_fired=list(fired),
                cards=[c for c in cards if c.uuid != "None"],
                latency_ms=round((time.perf_counter() - self.started) * 1000, 3),
            )
        )


async def answer_call(state: ServiceState, service_id: str, body: bytes) -> Response:
    """`POST /cds-services/{id}`: parse -> resolve the prefetch -> evaluate -> respond, with
    every answer (refusals and failures included) audited."""
    started = time.perf_counter()
    hook, _title, _desc = service_of(service_id)
    request: CdsRequest = await parsed(state, CdsRequest, body, "CDS Hooks request")
    call = _Call(state, service_id, hook, request.hookInstance, started)
    try:
        return await _answer(call, request)
    except ApiError as exc:  # a refused call is audited and logged (status and elements only)
        call.audit(None, exc.status)
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
        call.audit(None, 500)
        raise


def _context(call: _Call, request: CdsRequest) -> PatientViewContext | OrderSignContext:
    """The request's context, validated for its hook (400 naming the element)."""
    if request.hook != call.hook:
        raise ApiError(
            400,
            f"hook is {request.hook!r} but service {call.service_id!r} answers {call.hook!r}; "
            "call the service whose discovery entry names your hook",
            expression=["hook"],
        )
    context: PatientViewContext | OrderSignContext = validated(
        CONTEXT_MODELS[call.hook], request.context, "context"
    )
    auth = request.fhirAuthorization
    if auth is not None and auth.patient_scope_without_patient():
        log.warning(
            "cds-r-2: fhirAuthorization has patient/ scopes but no patient",
            extra={"hookInstance": call.hook_instance, "service": call.service_id},
        )
    return context


async def _resolve(state: ServiceState, request: CdsRequest, patient_id: str) -> PrefetchResult:
    """The prefetch, and what it lacks fetched from an allowlisted fhirServer (412 else)."""
    auth = request.fhirAuthorization
    return await prefetch_mod.resolve(
        templates=state.templates,
        prefetch=request.prefetch,
        patient_id=patient_id,
        fhir_server=request.fhirServer,
        access_token=auth.access_token if auth else None,
        allowlist=state.settings.fhir_server_allowlist,
        timeout=state.settings.fhir_timeout,
        max_pages=state.settings.fhir_max_pages,
        deadline=state.settings.fhir_deadline_ms / 1000,
        max_bytes=state.settings.fhir_max_bytes,
        transport=state.fhir_transport,
    )


async def _answer(call: _Call, request: CdsRequest) -> Response:
    state = call.state
    context = _context(call, request)
    fetch_started = time.perf_counter()
    data = await _resolve(state, request, context.patientId)
    fetch_ms = (time.perf_counter() - fetch_started) * 1000
    metrics.STAGE.labels(stage="fetch").observe(fetch_ms / 1000)
    if data.fetched:
        metrics.FALLBACK_FETCHES.inc(len(data.fetched))
    _check_patient(data.resources, context.patientId)
    hook_call = _call_of(request, data.resources)
    evaluator = state.holder.evaluator
    version: str | None = None
    eval_started = time.perf_counter()
    as_of = state.settings.as_of or state.today()
    try:
        version = evaluator.ruleset_version
        result, cards, cards_json = await _evaluate(state, evaluator, hook_call, as_of)
    except Exception:
        return _failed(call, version)
    eval_ms = (time.perf_counter() - eval_started) * 1000
    metrics.STAGE.labels(stage="evaluate").observe(eval_ms / 1000)
    outcome = getattr(result, "outcome", None)
    fired = [str(r) for r in getattr(result, "fired", [])]
    if is_fatal(outcome):
        # nothing could be evaluated (no usable Patient, no birth date...): 422, not "no cards"
        assert outcome is not None
        call.audit(version, 422, fired)
        log.info(
            "unusable FHIR data",
            extra={
                "event": "hook",
                "service": call.service_id,
                "hookInstance": call.hook_instance,
                "status": 422,
            },
        )
        return outcome_response(422, outcome.get("issue") or [])
    issued = _respond(call, cards, cards_json, outcome, data)
    call.audit(version, 200, fired, issued.cards)
    _log_answer(call, data, issued, fired, version, fetch_ms, eval_ms)
    return Response(issued.payload, media_type=JSON)


async def _evaluate(
    state: ServiceState, evaluator: EvaluatorLike, hook_call: HookCall, as_of: date
) -> tuple[Any, list[Card], str]:
    """The pipeline's result, its cards (the contract's `Card`, validated when built) and
    their compact JSON (raises on any failure: the caller answers 500)."""

    def evaluate() -> tuple[Any, list[Card], str]:
        result = evaluator.evaluate(hook_call.to_input(as_of))
        cards: list[Card] = list(result.cards)
        values = dump_cards(cards)
        cards_json = dumps(values)
        if _maybe_empty(cards_json):  # cheap scan of the JSON; the exact walk only on a hit
            _no_empty(values, "cards")
        return result, cards, cards_json

    if _entries(hook_call.resources) > EVALUATE_IN_THREAD_ENTRIES:
        # off the event loop (the engine serialises its own access): discovery and
        # other calls are answered while a big patient is evaluated
        return await anyio.to_thread.run_sync(evaluate, limiter=state.eval_limiter)
    return evaluate()  # a typical patient (~1.5 ms) costs less on the loop than a thread hop


def _failed(call: _Call, version: str | None) -> Response:
    """500 for a failed evaluation: logged with the hookInstance, never "no cards"."""
    log.exception(
        "evaluation failed",
        extra={
            "event": "evaluation-failed",
            "hookInstance": call.hook_instance,
            "service": call.service_id,
        },
    )
    call.audit(version, 500)
    return outcome_response(
        500,
        [
            issue(
                f"Internal error while evaluating hookInstance {call.hook_instance}; no "
                "decision support was computed (this is not 'no cards'). The service log has "
                "the details under this hookInstance.",
                code="exception",
            )
        ],
    )


@dataclass(frozen=True)
class _Answer:
    """The body sent (encoded before the audit: the audit records what the client gets)
    and the cards it issued."""

    payload: bytes
    cards: list[IssuedCard]


def _respond(
    call: _Call,
    cards: list[Card],
    cards_json: str,
    outcome: dict[str, Any] | None,
    data: PrefetchResult,
) -> _Answer:
    """The 200 body: the cards, and the data errors and prefetch notes in the extension."""
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
    payload = body.encode()
    issued = [_issued(card) for card in cards]
    for card, origin in zip(cards, issued, strict=True):
        metrics.CARDS.labels(
            service=call.service_id,
            topic=origin.topic or "none",
            indicator=card.indicator,
        ).inc()
    return _Answer(payload, issued)


def _log_answer(
    call: _Call,
    data: PrefetchResult,
    answer: _Answer,
    fired: list[str],
    version: str | None,
    fetch_ms: float,
    eval_ms: float,
) -> None:
    log.info(
        "hook answered",
        extra={
            "event": "hook",
            "service": call.service_id,
            "hook": call.hook,
            "hookInstance": call.hook_instance,
            "status": 200,
            "fired": fired,
            "topics": [c.topic for c in answer.cards if c.topic],
            "cards": len(answer.cards),
            "fetched": data.fetched or None,
            "noData": data.no_data or None,
            "rulesetVersion": version,
            "fetchMs": round(fetch_ms, 2),
            "evaluateMs": round(eval_ms, 2),
            "latencyMs": round((time.perf_counter() - call.started) * 1000, 2),
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
