"""Turning one `Source` (a file or an NDJSON line) into evaluation jobs.

Runs in the worker processes, so JSON parsing is spread over the workers. A document is

- a CDS Hooks request (a JSON object with `hook` and `context`): its own hook,
  `context.patientId`, the prefetch values as resources, `context.draftOrders` and
  `context.selections`;
- a FHIR Bundle of any type: evaluated as `--hook` (default patient-view); a Bundle with
  several Patients is split into one job per patient (name `...#Patient/<id>`); with
  order-select / order-sign its ServiceRequests and MedicationRequests with status
  `draft` are the draft orders (and, for order-select, all of them are selected);
- a single FHIR resource: evaluated like a Bundle holding only that resource.

Anything else cannot be read: an `Unreadable` with an OperationOutcome saying why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from cds.jsontext import loads
from cds.replay.inputs import Source
from cds.replay.outcome import operation_outcome

HOOKS = ("patient-view", "order-select", "order-sign")
ORDER_HOOKS = ("order-select", "order-sign")
DRAFT_ORDER_TYPES = ("ServiceRequest", "MedicationRequest")

if TYPE_CHECKING:
    from cds.pipeline import EvaluationInput

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Job:
    """One evaluation: the arguments of `cds.pipeline.EvaluationInput` plus the names."""

    name: str
    key: str
    hook: str
    resources: list[JsonObject]
    patient_id: str | None = None
    draft_orders: list[JsonObject] = field(default_factory=list)
    selections: list[str] = field(default_factory=list)

    def to_input(self, as_of: date) -> EvaluationInput:
        """The pipeline's input for this job (uuids seeded by its name: reproducible), the
        one mapping replay, explain and the studio share."""
        from cds.pipeline import EvaluationInput

        return EvaluationInput(
            hook=self.hook,
            resources=self.resources,
            as_of=as_of,
            patient_id=self.patient_id,
            draft_orders=self.draft_orders,
            selections=self.selections,
            uuid_seed=self.name,
        )


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An input that cannot be evaluated at all, with the OperationOutcome saying why."""

    name: str
    key: str
    outcome: JsonObject


def _unreadable(source: Source, message: str, code: str = "structure") -> Unreadable:
    return Unreadable(source.name, source.key, operation_outcome(message, code=code))


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


def flatten(bundle: JsonObject) -> list[JsonObject]:
    """The resources of a Bundle's entries (nested Bundles flattened), in entry order.

    Entries without a resource object are left to the FHIR stage, which reports them:
    this only looks for Patients and draft orders.
    """
    resources: list[JsonObject] = []
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return resources
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") == "Bundle":
            resources.extend(flatten(resource))
        else:
            resources.append(resource)
    return resources


def _patient_ids(resources: list[JsonObject]) -> list[str]:
    ids: list[str] = []
    for resource in resources:
        if resource.get("resourceType") == "Patient":
            rid = resource.get("id")
            if isinstance(rid, str) and rid not in ids:
                ids.append(rid)
    return ids


def _split(document: JsonObject) -> dict[str, list[JsonObject]]:
    """Per-patient resource lists of a multi-patient Bundle (cds.fhir does the grouping,
    with the Bundle's fullUrls, so urn:uuid references resolve)."""
    from cds.fhir import split_by_patient

    return split_by_patient([document])


def _is_draft_order(resource: JsonObject) -> bool:
    return resource.get("resourceType") in DRAFT_ORDER_TYPES and resource.get("status") == "draft"


def _bundle_job(
    name: str,
    key: str,
    hook: str,
    resources: list[JsonObject],
    patient_id: str | None,
    original: JsonObject | None,
) -> Job:
    if hook not in ORDER_HOOKS:
        # Hand over the Bundle itself when it is whole: the FHIR stage reports malformed
        # entries with their position, which a flattened list would have lost.
        given = [original] if original is not None else resources
        return Job(name, key, hook, given, patient_id)
    drafts = [r for r in resources if _is_draft_order(r)]
    rest = [r for r in resources if not _is_draft_order(r)]
    selections = (
        [f"{r.get('resourceType')}/{r.get('id')}" for r in drafts] if hook == "order-select" else []
    )
    return Job(name, key, hook, rest, patient_id, drafts, selections)


def _bundle_jobs(source: Source, document: JsonObject, hook: str) -> list[Job]:
    if document.get("resourceType") == "Bundle":
        resources = flatten(document)
        original: JsonObject | None = document
    else:
        resources = [document]
        original = None
    patients = _patient_ids(resources)
    if len(patients) <= 1:
        pid = patients[0] if patients else None
        return [_bundle_job(source.name, source.key, hook, resources, pid, original)]
    jobs: list[Job] = []
    for pid, own in _split(document).items():
        suffix = f"#Patient/{pid}"
        jobs.append(_bundle_job(source.name + suffix, source.key + suffix, hook, own, pid, None))
    return jobs


def _draft_orders(value: Any) -> list[JsonObject] | str:
    if value is None:
        return []
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        return flatten(value)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return list(value)
    return "context.draftOrders must be a FHIR Bundle"


def _request_job(source: Source, document: JsonObject) -> Job | Unreadable:
    hook = document.get("hook")
    if hook not in HOOKS:
        return _unreadable(
            source,
            f"{source.name}: hook {hook!r} is not one this service answers "
            f"(use one of {', '.join(HOOKS)})",
            "not-supported",
        )
    context = document.get("context")
    if not isinstance(context, dict):
        return _unreadable(source, f"{source.name}: context must be a JSON object")
    patient_id = context.get("patientId")
    if patient_id is not None and not isinstance(patient_id, str):
        return _unreadable(source, f"{source.name}: context.patientId must be a string")
    prefetch = document.get("prefetch")
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, dict):
        return _unreadable(source, f"{source.name}: prefetch must be a JSON object")
    resources: list[JsonObject] = []
    for prefetch_key, value in prefetch.items():
        if value is None:
            continue
        if not isinstance(value, dict):
            return _unreadable(
                source,
                f"{source.name}: prefetch.{prefetch_key} must be a FHIR resource or Bundle "
                f"(or null), found a JSON {type(value).__name__}",
            )
        resources.append(value)
    drafts: list[JsonObject] = []
    selections: list[str] = []
    if hook in ORDER_HOOKS:
        found = _draft_orders(context.get("draftOrders"))
        if isinstance(found, str):
            return _unreadable(source, f"{source.name}: {found}")
        drafts = found
    if hook == "order-select":
        raw = context.get("selections") or []
        if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
            return _unreadable(source, f"{source.name}: context.selections must be strings")
        selections = list(raw)
    return Job(source.name, source.key, hook, resources, patient_id, drafts, selections)


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
