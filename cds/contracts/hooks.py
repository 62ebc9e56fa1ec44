"""The CDS Hooks request -> evaluation input contract: the one mapping of a request.

A CDS Hooks request (`hook`, `context`, `prefetch`) maps to one `HookCall`, whatever reads
it: the service (after validating the body with `cds.api.models` and fetching what the
prefetch lacks from `fhirServer`) and `cds replay` / `cds explain` / the studio (request
files). `request_call` is that mapping:

- `hook` is one of `HOOKS`;
- `context.patientId` (a string, or absent) is the patient;
- the prefetch values that are not null are the `resources` (a caller that resolved the
  prefetch itself, the service, passes its `resources=` instead);
- for order-select and order-sign, `context.draftOrders` (a FHIR Bundle, passed on whole,
  or a list of resources) are the draft orders: the FHIR stage reads them, as it reads
  prefetch Bundles, and reports a bad entry as a data error (a walk here would drop it);
- for order-select, `context.selections` restricts them.

A caller that walks FHIR input itself before the FHIR stage reads it (`cds replay`, which
splits a plain Bundle by patient and into record and draft orders with the FHIR stage's
walk) hands on the data errors that walk found as `HookCall.issues`: the pipeline reports
them with the stage's own, so nothing is dropped. `HookCall.to_input(as_of)` is the
pipeline's `EvaluationInput` for it. Shape errors raise
`RequestError` (what is wrong, the element, a FHIR IssueType code); the service validates
first, so only request files can meet them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from cds.contracts.outcome import DataIssue

__all__ = [
    "HOOKS",
    "ORDER_HOOKS",
    "EvaluationInput",
    "Hook",
    "HookCall",
    "RequestError",
    "request_call",
]

Hook = Literal["patient-view", "order-select", "order-sign"]
#: The hooks this service answers.
HOOKS: tuple[str, ...] = ("patient-view", "order-select", "order-sign")
#: The hooks that carry draft orders (context.draftOrders).
ORDER_HOOKS: tuple[str, ...] = ("order-select", "order-sign")

JsonObject = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class EvaluationInput:
    """One evaluation: the hook, raw FHIR JSON and the as-of date ("today")."""

    hook: str = "patient-view"
    resources: Sequence[Any] = ()
    as_of: date
    patient_id: str | None = None
    draft_orders: Sequence[Any] | Any = ()
    selections: Sequence[str] = ()
    deterministic: bool = False
    #: Seed for name-based card and suggestion uuids (e.g. replay's input name): reruns
    #: with the same seed, rules and input give the same uuids. Implies deterministic.
    uuid_seed: str | None = None
    #: Data errors of the input found before the FHIR stage read it (replay's walk of a
    #: Bundle it split): in the result's outcome with the stage's own.
    issues: Sequence[DataIssue] = ()


@dataclass(frozen=True, slots=True)
class HookCall:
    """What one hook call evaluates: the arguments of `EvaluationInput` but the date."""

    hook: str
    resources: list[JsonObject]
    patient_id: str | None = None
    draft_orders: list[JsonObject] = field(default_factory=list)
    selections: list[str] = field(default_factory=list)
    #: data errors of entries a walk before the FHIR stage left out (see the module text)
    issues: list[DataIssue] = field(default_factory=list)

    def to_input(self, as_of: date, *, uuid_seed: str | None = None) -> EvaluationInput:
        """The pipeline's input for this call as of `as_of` (uuids seeded by `uuid_seed`
        when given: reproducible)."""
        return EvaluationInput(
            hook=self.hook,
            resources=self.resources,
            as_of=as_of,
            patient_id=self.patient_id,
            draft_orders=self.draft_orders,
            selections=self.selections,
            uuid_seed=uuid_seed,
            issues=self.issues,
        )


class RequestError(ValueError):
    """A request that cannot be mapped: what is wrong, with a FHIR IssueType `code`
    (`not-supported` for a hook this service does not answer, else `structure`) and the
    element (`expression`)."""

    def __init__(self, message: str, *, code: str = "structure", expression: str) -> None:
        super().__init__(message)
        self.code = code
        self.expression = expression


def _draft_orders(value: Any) -> list[JsonObject]:
    if value is None:
        return []
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return list(value)
    raise RequestError(
        "context.draftOrders must be a FHIR Bundle", expression="context.draftOrders"
    )


def _prefetch_resources(request: Mapping[str, Any]) -> list[JsonObject]:
    prefetch = request.get("prefetch")
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, dict):
        raise RequestError("prefetch must be a JSON object", expression="prefetch")
    resources: list[JsonObject] = []
    for key, value in prefetch.items():
        if value is None:
            continue
        if not isinstance(value, dict):
            raise RequestError(
                f"prefetch.{key} must be a FHIR resource or Bundle (or null), found a JSON "
                f"{type(value).__name__}",
                expression=f"prefetch.{key}",
            )
        resources.append(value)
    return resources


def request_call(
    request: Mapping[str, Any], *, resources: Sequence[JsonObject] | None = None
) -> HookCall:
    """The one CDS Hooks request -> `HookCall` mapping (see the module text).

    `resources` replaces the request's prefetch values (the service passes what it
    resolved: the prefetch plus what it fetched from fhirServer, OperationOutcomes read as
    no data). Raises `RequestError` on a request of the wrong shape.
    """
    hook = request.get("hook")
    if hook not in HOOKS:
        raise RequestError(
            f"hook {hook!r} is not one this service answers (use one of {', '.join(HOOKS)})",
            code="not-supported",
            expression="hook",
        )
    context = request.get("context")
    if not isinstance(context, dict):
        raise RequestError("context must be a JSON object", expression="context")
    patient_id = context.get("patientId")
    if patient_id is not None and not isinstance(patient_id, str):
        raise RequestError("context.patientId must be a string", expression="context.patientId")
    found = _prefetch_resources(request) if resources is None else list(resources)
    drafts: list[JsonObject] = []
    selections: list[str] = []
    if hook in ORDER_HOOKS:
        drafts = _draft_orders(context.get("draftOrders"))
    if hook == "order-select":
        raw = context.get("selections") or []
        if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
            raise RequestError(
                "context.selections must be strings", expression="context.selections"
            )
        selections = list(raw)
    return HookCall(hook, found, patient_id, drafts, selections)
