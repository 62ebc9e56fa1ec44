"""Turning one `Source` (a file or an NDJSON line) into evaluation jobs.

Runs in the worker processes, so JSON parsing is spread over the workers. A document is

- a CDS Hooks request (a JSON object with `hook` and `context`): mapped as the service
  maps it, by `cds.contracts.hooks.request_call` (its hook, `context.patientId`, the
  prefetch values as resources, `context.draftOrders` and `context.selections`);
- a FHIR Bundle of any type: evaluated as `--hook` (default patient-view); a Bundle with
  several Patients is split into one job per patient (name `...#Patient/<id>`); with
  order-select / order-sign its ServiceRequests and MedicationRequests with status
  `draft` are the draft orders (and, for order-select, all of them are selected);
- a single FHIR resource: evaluated like a Bundle holding only that resource.

The Bundle is walked by the FHIR stage's walk (`cds.fhir.bundle.flatten`), the one walk
of FHIR input. Where the job hands the FHIR stage the Bundle itself (patient-view, one
patient), the stage reports its entries that are no resource; where it hands on resources
taken out of it (an order hook, or a Bundle split by patient), the walk's data errors go
with the job (`HookCall.issues`, every patient's job of a split Bundle: an entry that is
no resource belongs to none of them) and are in its outcome, as the FHIR stage reports
the same entry of a request's `context.draftOrders` (`request_call`; the HTTP service's
body validation refuses such a draftOrders entry before that) or of a prefetch Bundle.

Anything else cannot be read: an `Unreadable` with an OperationOutcome saying why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds.contracts.hooks import (
    ORDER_HOOKS,
    EvaluationInput,
    HookCall,
    RequestError,
    request_call,
)
from cds.contracts.outcome import DataIssue, error_outcome
from cds.fhir.bundle import Entry, flatten, group_by_patient
from cds.fhir.trace import Trace
from cds.jsontext import loads
from cds.replay.inputs import Source

__all__ = ["Job", "Unreadable", "read_source"]

DRAFT_ORDER_TYPES = ("ServiceRequest", "MedicationRequest")

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Job:
    """One evaluation: a `HookCall` (`cds.contracts.hooks`) plus the input's names."""

    name: str
    key: str
    call: HookCall

    @property
    def hook(self) -> str:
        return self.call.hook

    @property
    def resources(self) -> list[JsonObject]:
        return self.call.resources

    @property
    def patient_id(self) -> str | None:
        return self.call.patient_id

    @property
    def draft_orders(self) -> list[JsonObject]:
        return self.call.draft_orders

    @property
    def selections(self) -> list[str]:
        return self.call.selections

    def to_input(self, as_of: date) -> EvaluationInput:
        """The pipeline's input for this job (uuids seeded by its name: reproducible), the
        one mapping replay, explain and the studio share."""
        return self.call.to_input(as_of, uuid_seed=self.name)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An input that cannot be evaluated at all, with the OperationOutcome saying why."""

    name: str
    key: str
    outcome: JsonObject


def _unreadable(source: Source, message: str, code: str = "structure") -> Unreadable:
    return Unreadable(source.name, source.key, error_outcome(message, code=code))


def _parse(source: Source) -> JsonObject | Unreadable:
    if source.error is not None:
        code = (
            "not-found" if "no such" in source.error or "no file" in source.error else "exception"
        )
        return _unreadable(source, f"{source.name}: {source.error}", code)
    where = source.name
    try:
        if source.text is not None:
            document = loads(source.text)
        else:
            assert source.path is not None
            with open(source.path, "rb") as handle:
                document = loads(handle.read())
    except OSError as exc:
        return _unreadable(source, f"{where}: cannot read the file: {exc.strerror}", "exception")
    except UnicodeDecodeError as exc:
        return _unreadable(source, f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    except json.JSONDecodeError as exc:
        return _unreadable(
            source,
            f"{where}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        )
    except RecursionError:
        return _unreadable(source, f"{where}: JSON nested too deeply")
    if not isinstance(document, dict):
        return _unreadable(
            source,
            f"{where}: expected a JSON object (a FHIR Bundle or a CDS Hooks request), "
            f"found a JSON {type(document).__name__}",
        )
    return document


def _patient_ids(entries: list[Entry]) -> list[str]:
    ids: list[str] = []
    for e in entries:
        if e.rtype == "Patient":
            rid = e.raw.get("id")
            if isinstance(rid, str) and rid not in ids:
                ids.append(rid)
    return ids


def _is_draft_order(resource: JsonObject) -> bool:
    return resource.get("resourceType") in DRAFT_ORDER_TYPES and resource.get("status") == "draft"


def _bundle_job(
    name: str,
    key: str,
    hook: str,
    resources: list[JsonObject],
    patient_id: str | None,
    issues: list[DataIssue],
) -> Job:
    """The job of resources taken out of a Bundle (or of one resource), with the data
    errors of the walk that took them out."""
    if hook not in ORDER_HOOKS:
        return Job(name, key, HookCall(hook, resources, patient_id, issues=issues))
    drafts = [r for r in resources if _is_draft_order(r)]
    rest = [r for r in resources if not _is_draft_order(r)]
    selections = (
        [f"{r.get('resourceType')}/{r.get('id')}" for r in drafts] if hook == "order-select" else []
    )
    return Job(name, key, HookCall(hook, rest, patient_id, drafts, selections, issues))


def _bundle_jobs(source: Source, document: JsonObject, hook: str) -> list[Job]:
    name, key = source.name, source.key
    if document.get("resourceType") != "Bundle":
        rid = document.get("id")
        pid = rid if document.get("resourceType") == "Patient" and isinstance(rid, str) else None
        return [_bundle_job(name, key, hook, [document], pid, [])]
    issues: list[DataIssue] = []
    # OperationOutcomes stay entries: handed on with the record, the FHIR stage traces
    # them as "no data", as it does in the Bundle itself
    entries = flatten([document], issues, Trace(), outcomes=True)
    patients = _patient_ids(entries)
    if len(patients) > 1:
        return [
            _bundle_job(f"{name}#Patient/{pid}", f"{key}#Patient/{pid}", hook, own, pid, issues)
            for pid, own in group_by_patient(entries).items()
        ]
    pid = patients[0] if patients else None
    if hook not in ORDER_HOOKS:
        # The Bundle itself, whole: the FHIR stage walks it and reports its entries that
        # are no resource with their position (`issues` holds those same data errors).
        return [Job(name, key, HookCall(hook, [document], pid))]
    return [_bundle_job(name, key, hook, [e.raw for e in entries], pid, issues)]


def _request_job(source: Source, document: JsonObject) -> Job | Unreadable:
    try:
        call = request_call(document)
    except RequestError as exc:
        return _unreadable(source, f"{source.name}: {exc}", exc.code)
    return Job(source.name, source.key, call)


def read_source(source: Source, default_hook: str | None) -> list[Job | Unreadable]:
    """The jobs for one source, or why it cannot be read (never raises for bad input)."""
    parsed = _parse(source)
    if isinstance(parsed, Unreadable):
        return [parsed]
    if "hook" in parsed and "context" in parsed:
        return [_request_job(source, parsed)]
    if not isinstance(parsed.get("resourceType"), str):
        return [
            _unreadable(
                source,
                f"{source.name}: neither a FHIR resource (no resourceType) nor a CDS Hooks "
                "request (no hook and context)",
            )
        ]
    return list(_bundle_jobs(source, parsed, default_hook or "patient-view"))
