"""Reading FHIR input: flatten Bundles, pick the patient, validate what is used, and turn
each usable resource into a typed record. Every problem is a DataIssue; every resource
not used is listed in the trace with the reason. Nothing here raises on bad data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, NamedTuple

from pydantic import ValidationError

from cds.contracts.outcome import DataIssue, issue_sort_key
from cds.fhir import models as m
from cds.fhir.dates import When, parse_when
from cds.fhir.profiles import (
    ATC,
    ICD10CM,
    PREFIX_SYSTEMS,
    RXNORM,
    CodeEntry,
    CodeList,
    HarmingDrug,
    Ingredient,
    Profiles,
    StructuralFindingProfile,
    _norm,
)
from cds.fhir.structure import CompiledProfile, check, compile_profile
from cds.fhir.trace import Trace

Validation = Literal["fast", "full"]
Manufacturer = Literal["hologic", "ge-lunar", "other", "unknown"]

MAX_BUNDLE_DEPTH = 8
MAX_ISSUES_PER_RESOURCE = 5

OBS_USED = {"final": False, "amended": False, "corrected": False, "preliminary": True}
OBS_IGNORED = {"registered", "cancelled", "entered-in-error", "unknown"}
COND_ACTIVE = {"active", "recurrence", "relapse"}
VERIFICATION_EXCLUDED = {"entered-in-error", "refuted"}
VERIFICATION_UNCONFIRMED = {"unconfirmed", "provisional", "differential"}
PROC_USED = {"completed", "in-progress"}
MS_USED = {"active", "completed", "stopped", "on-hold"}
MR_USED = {"active", "completed", "stopped", "on-hold"}
MR_ORDER_INTENTS = {"order", "original-order", "reflex-order", "filler-order", "instance-order"}
MA_USED = {"completed", "in-progress"}
DRAFT_USED = {"draft", "active"}

_ONE = Decimal(1)
_RANGE_KEY = {"ALP": "alkaline_phosphatase", "HEIGHT": "height", "EGFR": "egfr"}
_WHAT = {
    "T": "T-score",
    "Z": "Z-score",
    "BMD": "BMD",
    "TBS": "TBS",
    "ALP": "alkaline phosphatase",
    "HEIGHT": "body height",
    "EGFR": "eGFR",
}
_ORDINAL = {"first": "L1", "second": "L2", "third": "L3", "fourth": "L4"}
_SINGLE = re.compile(
    r"^\s*L\s*([1-4])\s*$|\b(first|second|third|fourth) lumbar vertebra", re.IGNORECASE
)
_RANGE = re.compile(r"\bL\s*([1-5])\s*(?:-|–|to)\s*L?\s*([1-5])\b", re.IGNORECASE)


# ---------------------------------------------------------------------------- records


#: A display that is only a relative or absolute FHIR reference ("Device/abc").
_REFERENCE_TEXT = re.compile(r"^(?:\S*/)?[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True, slots=True)
class Scanner:
    identity: str | None  # Device/x or identifier system|value; None: not identified
    label: str | None
    manufacturer: Manufacturer


class Measurement(NamedTuple):
    """One numeric result. Immutable like the other records; a NamedTuple rather than a
    frozen dataclass because it is made for every result read (a frozen dataclass sets each
    of its 11 fields through object.__setattr__: ~2.4 us against ~1 us)."""

    ref: str
    kind: Literal["dxa", "tbs", "alp", "height", "egfr"]
    site: str | None  # DxaSite for dxa
    score: str  # T, Z, BMD, TBS, ALP, HEIGHT
    side: str | None
    vertebra: str | None
    vertebra_count: int | None
    value: Decimal  # normalised (g/cm2, U/L, cm)
    when: When
    preliminary: bool
    scanner: Scanner | None


class MedRecord(NamedTuple):
    """One medication record (a NamedTuple for the reason given at Measurement)."""

    ref: str
    ingredient: Ingredient
    med_class: str
    source: Literal["statement", "request", "administration"]
    status: str
    start: date | None
    end: date | None
    ongoing: bool
    dose_date: date | None  # administrations
    mg_day: Decimal | None  # prednisone-equivalent, glucocorticoids only
    label: str
    oncology: bool = False  # CS-1.8 rev 2: Xgeva / oncology zoledronic acid


@dataclass(frozen=True, slots=True)
class HarmingRecord:
    """A drug that harms bone (CS-6.8)."""

    ref: str
    drug: HarmingDrug
    start: date | None
    ongoing: bool
    label: str


@dataclass(frozen=True, slots=True)
class FractureRecord:
    ref: str
    kind: Literal["hip", "vertebral", "other", "self-reported-vertebral"]
    code: str
    display: str
    when: When | None
    #: an injury code (CS-1.10 rev 2): the mechanism is unknown, assumed low-trauma from 50
    injury: bool = False
    #: a vertebral augmentation procedure: the fracture it treated, not one more fracture
    augmentation: bool = False


@dataclass(frozen=True, slots=True)
class FindingRecord:
    ref: str
    finding: str
    display: str


@dataclass(frozen=True, slots=True)
class ContrastRecord:
    ref: str
    display: str
    when: When


@dataclass(frozen=True, slots=True)
class DraftRecord:
    ref: str
    display: str
    authored: When | None


@dataclass
class PatientData:
    """Everything read for one patient."""

    patient_ref: str | None = None
    gender: str | None = None
    birth_date: date | None = None
    measurements: list[Measurement] = field(default_factory=list)
    menopause: list[tuple[str, str, When | None]] = field(default_factory=list)  # status, ref
    meds: list[MedRecord] = field(default_factory=list)
    hyperparathyroidism: list[str] = field(default_factory=list)
    hypophosphatasia: list[str] = field(default_factory=list)
    advanced_ckd: list[str] = field(default_factory=list)  # CS-9.1
    harming: list[HarmingRecord] = field(default_factory=list)  # CS-6.8
    #: (order key, result date, Observation) of laboratory tests a card may order (CS-6.1)
    lab_results: list[tuple[str, date, str]] = field(default_factory=list)
    fractures: list[FractureRecord] = field(default_factory=list)
    #: myocardial infarction or stroke Conditions (CS-6.4 rev 2): (ref, date or None)
    cv_events: list[tuple[str, When | None]] = field(default_factory=list)
    findings: list[FindingRecord] = field(default_factory=list)
    contrast: list[ContrastRecord] = field(default_factory=list)
    drafts: list[DraftRecord] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    trace: Trace = field(default_factory=Trace)


# ---------------------------------------------------------------------------- flattening


class Entry(NamedTuple):
    """One resource of the input (a NamedTuple: made for every resource, see Measurement)."""

    raw: dict[str, Any]
    rtype: str
    ref: str
    full_url: str | None


def _content_ref(rtype: str, raw: dict[str, Any]) -> str:
    try:
        blob = json.dumps(raw, sort_keys=True, default=str)
    except (TypeError, ValueError):
        blob = repr(raw)
    return f"{rtype}/#{hashlib.sha1(blob.encode(), usedforsecurity=False).hexdigest()[:10]}"


def _ref_of(raw: dict[str, Any], rtype: str) -> str:
    rid = raw.get("id")
    if isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    return _content_ref(rtype, raw)


def flatten(
    items: Iterable[Any], issues: list[DataIssue], trace: Trace, label: str = "input"
) -> list[Entry]:
    """Flatten Bundles (any type, nested) and loose resources into entries."""
    out: list[Entry] = []

    def visit(obj: Any, where: str, full_url: str | None, depth: int) -> None:
        if obj is None:
            trace.ignore(where, "no data (null)")
            return
        if not isinstance(obj, dict):
            issues.append(
                DataIssue(
                    severity="error",
                    code="structure",
                    resource=where,
                    message=f"{where} is not a FHIR resource (a JSON object), "
                    f"it is {type(obj).__name__}",
                )
            )
            return
        rtype = obj.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            issues.append(
                DataIssue(
                    severity="error",
                    code="structure",
                    resource=where,
                    expression="resourceType",
                    message=f"{where} has no resourceType: not a FHIR resource",
                )
            )
            return
        if rtype == "Bundle":
            if depth >= MAX_BUNDLE_DEPTH:
                issues.append(
                    DataIssue(
                        severity="error",
                        code="structure",
                        resource=_ref_of(obj, rtype),
                        expression="Bundle.entry",
                        message=f"Bundles nested deeper than {MAX_BUNDLE_DEPTH} are not read",
                    )
                )
                return
            entries = obj.get("entry")
            if entries is None:
                return
            if not isinstance(entries, list):
                issues.append(
                    DataIssue(
                        severity="error",
                        code="structure",
                        resource=_ref_of(obj, rtype),
                        expression="Bundle.entry",
                        message="Bundle.entry must be a list",
                    )
                )
                return
            # The Bundle's own reference names bad entries only; without an id it is a
            # hash of the whole Bundle (~0.1 ms for a prefetch searchset), so it is made
            # when first needed.
            bref: str | None = None
            for i, e in enumerate(entries):
                if type(e) is dict:
                    res = e.get("resource")
                    if type(res) is dict:
                        rt = res.get("resourceType")
                        if type(rt) is str and rt and rt != "Bundle" and rt != "OperationOutcome":
                            # the common case, a plain resource: what visit(res, ...) below
                            # does for it, without building the entry's `where` text (only
                            # used to name bad entries) or a recursive call
                            fu = e.get("fullUrl")
                            url = fu if isinstance(fu, str) else None
                            out.append(Entry(res, rt, _ref_of(res, rt), url))
                            continue
                if bref is None:
                    bref = _ref_of(obj, rtype)
                ewhere = f"{bref} entry[{i}]"
                if not isinstance(e, dict):
                    issues.append(
                        DataIssue(
                            severity="error",
                            code="structure",
                            resource=bref,
                            expression=f"Bundle.entry[{i}]",
                            message="a Bundle entry must be a JSON object",
                        )
                    )
                    continue
                fu = e.get("fullUrl")
                res = e.get("resource")
                if res is None:
                    continue  # e.g. a deleted entry in a history Bundle
                visit(res, ewhere, fu if isinstance(fu, str) else None, depth + 1)
            return
        ref = _ref_of(obj, rtype)
        if rtype == "OperationOutcome":
            text = ""
            iss = obj.get("issue")
            if isinstance(iss, list) and iss and isinstance(iss[0], dict):
                diag = iss[0].get("diagnostics")
                if isinstance(diag, str):
                    text = f": {diag[:200]}"
            trace.ignore(ref, f"no data (the source sent an OperationOutcome{text})")
            return
        out.append(Entry(obj, rtype, ref, full_url))

    for i, item in enumerate(items):
        visit(item, f"{label}[{i}]", None, 0)
    return out


def _entry_ref(e: Entry) -> str:
    return e.ref


def _dedupe(entries: list[Entry], trace: Trace) -> list[Entry]:
    """One entry per Type/id; when copies differ, keep the latest (meta.lastUpdated, then
    content), so input order never matters."""
    if len({e.ref for e in entries}) == len(entries):
        # no duplicates (the common case): every group below has one entry
        return sorted(entries, key=_entry_ref)
    by_ref: dict[str, list[Entry]] = {}
    for e in entries:
        by_ref.setdefault(e.ref, []).append(e)
    out: list[Entry] = []
    for ref in sorted(by_ref):
        group = by_ref[ref]
        if len(group) == 1:
            out.append(group[0])
            continue

        def key(e: Entry) -> tuple[str, str]:
            meta = e.raw.get("meta")
            lu = meta.get("lastUpdated") if isinstance(meta, dict) else None
            try:
                blob = json.dumps(e.raw, sort_keys=True, default=str)
            except (TypeError, ValueError):
                blob = repr(e.raw)
            return (lu if isinstance(lu, str) else "", blob)

        group.sort(key=key)
        out.append(group[-1])
        for _ in group[:-1]:
            trace.ignore(ref, "duplicate of a later copy of the same resource")
    return out


def _ref_target(reference: str, urls: dict[str, str]) -> str | None:
    """Normalise a reference to Type/id (relative, absolute URL, or a Bundle fullUrl)."""
    if reference in urls:
        return urls[reference]
    if reference.startswith(("urn:", "#")):
        return None
    parts = [p for p in reference.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return None


def _subject_of(raw: dict[str, Any]) -> Any:
    for key in ("subject", "patient"):
        val = raw.get(key)
        if isinstance(val, dict):
            return val.get("reference")
    return None


def patient_of(raw: dict[str, Any]) -> str | None:
    """The id of the Patient a resource belongs to by its `subject`/`patient` reference
    (relative or absolute), or None (no such reference, or it names no Patient)."""
    target = _subject_of(raw)
    norm = _ref_target(target, {}) if isinstance(target, str) else None
    return norm.split("/", 1)[1] if norm and norm.startswith("Patient/") else None


def _url_map(entries: list[Entry]) -> dict[str, str]:
    return {e.full_url: e.ref for e in entries if e.full_url}


def split_by_patient(resources: Iterable[Any]) -> dict[str, list[dict[str, Any]]]:
    """Group resources by the patient they belong to (via subject/patient references).

    Each Patient goes to its own group; resources referring to a patient go to that
    patient's group (also when the Patient itself is absent, so that evaluating the group
    reports it); resources without a patient reference (Device, Medication, ...) go to
    every group. Bundles are flattened; nulls and OperationOutcomes are dropped.

    The Bundle's ``fullUrl``s do not travel with the groups, so references that only a
    fullUrl resolves (``urn:uuid:...``) in ``subject``, ``patient``, ``device`` and
    ``medicationReference`` are rewritten to ``Type/id`` in shallow copies (the input is
    never modified): each group is self-contained.
    """
    issues: list[DataIssue] = []
    entries = flatten(resources, issues, Trace())
    urls = _url_map(entries)
    groups: dict[str, list[dict[str, Any]]] = {}
    shared: list[dict[str, Any]] = []
    for e in entries:
        raw = _resolve_urls(e.raw, urls) if urls else e.raw
        if e.rtype == "Patient":
            groups.setdefault(e.ref.split("/", 1)[1], []).append(raw)
            continue
        target = _subject_of(raw)
        if isinstance(target, str):
            norm = _ref_target(target, urls)
            if norm and norm.startswith("Patient/"):
                groups.setdefault(norm.split("/", 1)[1], []).append(raw)
                continue
        shared.append(raw)
    for pid in groups:
        groups[pid].extend(shared)
    return dict(sorted(groups.items()))


_REFERENCE_KEYS = ("subject", "patient", "device", "medicationReference")


def _resolve_urls(raw: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
    """A shallow copy of raw with fullUrl-only references rewritten to Type/id."""
    out = raw
    for key in _REFERENCE_KEYS:
        ref = raw.get(key)
        if isinstance(ref, dict):
            target = ref.get("reference")
            if isinstance(target, str) and target in urls:
                if out is raw:
                    out = dict(raw)
                out[key] = {**ref, "reference": urls[target]}
    return out


# ---------------------------------------------------------------------------- reading


def _errors_to_issues(exc: ValidationError, rtype: str, ref: str) -> list[DataIssue]:
    out: list[DataIssue] = []
    for err in exc.errors()[:MAX_ISSUES_PER_RESOURCE]:
        path = rtype
        for p in err["loc"]:
            path += f"[{p}]" if isinstance(p, int) else f".{p}"
        got = err.get("input")
        shown = repr(got)[:60] if not isinstance(got, dict | list) else type(got).__name__
        out.append(
            DataIssue(
                severity="error",
                code="structure" if err["type"] in ("model_type", "list_type") else "value",
                resource=ref,
                expression=path,
                message=f"{path}: {err['msg']} (got {shown}); the resource is not used",
            )
        )
    return out


def _when(
    text: str | None, expr: str, ref: str, issues: list[DataIssue], required: bool = True
) -> When | None:
    if text is None:
        if required:
            issues.append(
                DataIssue(
                    severity="error",
                    code="required",
                    resource=ref,
                    expression=expr,
                    message=f"{expr} is missing: the date is needed; the resource is not used",
                )
            )
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        issues.append(
            DataIssue(
                severity="error" if required else "warning",
                code="value",
                resource=ref,
                expression=expr,
                message=f"{expr}: {exc}; "
                + ("the resource is not used" if required else "the date is left out"),
            )
        )
        return None


#: model_validate of each model in m.MODELS, by resourceType, without its Python wrapper
#: (the same validator, ~1 us less each)
_VALIDATE = {
    rtype: model.__pydantic_validator__.validate_python for rtype, model in m.MODELS.items()
}
#: read for the others, not dispatched themselves
_NOT_DISPATCHED = frozenset({"Patient", "Device", "Medication"})


class Reader:
    """Reads one patient's resources into a PatientData."""

    def __init__(self, profiles: Profiles, as_of: date, validation: Validation = "fast") -> None:
        self.p = profiles
        self.as_of = as_of
        self.validation = validation
        self._sd = _compiled(profiles)
        self._obs_kinds = _obs_index(profiles)
        self._codes = _code_index(profiles)
        self._unit_factors = _unit_factors(profiles)
        self._lab_orders = _lab_order_index(profiles)
        # by the Reference's fields (reference, display, identifier): equal keys are equal
        # Reference models, and hashing a str tuple is cheaper than hashing the model
        self._scanners: dict[tuple[str | None, str | None, m.Identifier | None], Scanner] = {}

    # -- entry point

    def read(
        self,
        resources: Iterable[Any],
        patient_id: str | None,
        draft_orders: Any,
    ) -> PatientData:
        data = PatientData()
        issues, trace = data.issues, data.trace
        entries = _dedupe(flatten(resources, issues, trace), trace)
        urls = _url_map(entries)
        parsed: dict[str, tuple[Entry, m.Resource]] = {}
        # by resourceType: a validated model is an instance of exactly MODELS[rtype] (no
        # model there subclasses another), so these are the isinstance filters of `parsed`
        patients: dict[str, m.Resource] = {}
        devices: dict[str, m.Resource] = {}
        medications: dict[str, m.Resource] = {}
        for e in entries:
            rtype = e.rtype
            validate = _VALIDATE.get(rtype)
            if validate is None:
                trace.ignore(e.ref, f"resource type {rtype} is not read")
                continue
            try:
                res: m.Resource = validate(e.raw)
            except ValidationError as exc:
                issues.extend(_errors_to_issues(exc, rtype, e.ref))
                trace.ignore(e.ref, _why(issues, e.ref))
                continue
            parsed[e.ref] = (e, res)
            if rtype == "Patient":
                patients[e.ref] = res
            elif rtype == "Device":
                devices[e.ref] = res
            elif rtype == "Medication":
                medications[e.ref] = res

        chosen = self._choose_patient(patients, patient_id, issues)
        if chosen is not None:
            data.patient_ref = chosen
            pat = patients[chosen]
            assert isinstance(pat, m.Patient)
            self._read_patient(pat, chosen, data)
        for ref in sorted(patients):
            if ref != chosen:
                trace.ignore(ref, "not the patient evaluated")

        # _ref_target of each distinct subject, once (every resource names the same patient)
        targets: dict[str, str | None] = {}
        full = self.validation == "full"
        # in ref order: _dedupe returns the entries sorted by (unique) ref, and parsed keeps
        # their order
        for ref, (e, res) in parsed.items():
            if e.rtype in _NOT_DISPATCHED:
                continue
            subject = _subject_of(e.raw)
            if isinstance(subject, str) and chosen is not None:
                if subject in targets:
                    target = targets[subject]
                else:
                    target = targets[subject] = _ref_target(subject, urls)
                if target != chosen:
                    trace.ignore(ref, f"not this patient (subject {subject})")
                    continue
            if full and not self._full_ok(e, ref, issues, trace):
                continue
            try:
                self._dispatch(e, res, ref, data, devices, medications, urls)
            except (ArithmeticError, ValueError, OverflowError) as exc:  # defensive: never raise
                issues.append(
                    DataIssue(
                        severity="error",
                        code="value",
                        resource=ref,
                        message=f"cannot be used: {exc}",
                    )
                )
                trace.ignore(ref, _why(issues, ref))
        scanned = {mm.scanner.identity for mm in data.measurements if mm.scanner is not None}
        for ref in sorted(devices):
            if ref not in scanned:
                trace.ignore(ref, "Device not referenced by a DXA result used")

        self._read_drafts(draft_orders, data, chosen)
        issues.sort(key=issue_sort_key)
        trace.sort()
        return data

    def _full_ok(self, e: Entry, ref: str, issues: list[DataIssue], trace: Trace) -> bool:
        if self.validation != "full":
            return True
        from fhir.resources.R4B import get_fhir_model_class

        try:
            cls = get_fhir_model_class(e.rtype)
            cls.model_validate(e.raw)
        except ValidationError as exc:
            issues.extend(_errors_to_issues(exc, e.rtype, ref))
            trace.ignore(ref, _why(issues, ref))
            return False
        except (KeyError, ValueError, TypeError) as exc:
            issues.append(
                DataIssue(
                    severity="error",
                    code="structure",
                    resource=ref,
                    message=f"not valid FHIR R4: {exc}",
                )
            )
            trace.ignore(ref, _why(issues, ref))
            return False
        return True

    def _choose_patient(
        self, patients: Mapping[str, m.Resource], patient_id: str | None, issues: list[DataIssue]
    ) -> str | None:
        if patient_id is not None:
            ref = f"Patient/{patient_id}"
            if ref in patients:
                return ref
            issues.append(
                DataIssue(
                    severity="fatal",
                    code="not-found",
                    resource=ref,
                    expression="Patient",
                    message=f"{ref} is not in the input (patients present: "
                    f"{', '.join(sorted(patients)) or 'none'})",
                )
            )
            return None
        if len(patients) == 1:
            return next(iter(patients))
        if not patients:
            issues.append(
                DataIssue(
                    severity="fatal",
                    code="required",
                    expression="Patient",
                    message="no usable Patient resource in the input: age and sex are "
                    "needed (send the patient prefetch)",
                )
            )
        else:
            issues.append(
                DataIssue(
                    severity="fatal",
                    code="multiple-matches",
                    expression="Patient",
                    message=f"several patients in the input ({', '.join(sorted(patients))}): "
                    "say which one (patient_id)",
                )
            )
        return None

    def _read_patient(self, pat: m.Patient, ref: str, data: PatientData) -> None:
        data.gender = pat.gender
        if pat.gender not in (None, "male", "female", "other", "unknown"):
            data.issues.append(
                DataIssue(
                    severity="warning",
                    code="code-invalid",
                    resource=ref,
                    expression="Patient.gender",
                    message=f"Patient.gender {pat.gender!r} is not male, female, other or "
                    "unknown; sex is taken as unknown",
                )
            )
            data.gender = None
        when = _when(pat.birthDate, "Patient.birthDate", ref, data.issues)
        if when is not None:
            if when.partial:
                data.trace.assumptions.append(
                    f"{ref}: birth date {when.text} is partial; its first day is used"
                )
            data.birth_date = when.date
            data.trace.use(ref, "age and sex")

    # -- dispatch

    def _dispatch(
        self,
        e: Entry,
        res: m.Resource,
        ref: str,
        data: PatientData,
        devices: Mapping[str, m.Resource],
        meds: Mapping[str, m.Resource],
        urls: dict[str, str],
    ) -> None:
        if isinstance(res, m.Observation):
            self._observation(e, res, ref, data, devices, urls)
        elif isinstance(res, m.Condition):
            self._condition(res, ref, data)
        elif isinstance(res, m.Procedure):
            self._procedure(res, ref, data)
        elif isinstance(
            res, m.MedicationStatement | m.MedicationRequest | m.MedicationAdministration
        ):
            self._medication(res, ref, data, meds, urls)
        elif isinstance(res, m.ServiceRequest):
            data.trace.ignore(
                ref, "ServiceRequest in the record (draft orders come from context.draftOrders)"
            )

    # -- observations

    def _observation(
        self,
        e: Entry,
        obs: m.Observation,
        ref: str,
        data: PatientData,
        devices: Mapping[str, m.Resource],
        urls: dict[str, str],
    ) -> None:
        issues, trace = data.issues, data.trace
        if obs.status is None:
            issues.append(
                DataIssue(
                    severity="error",
                    code="required",
                    resource=ref,
                    expression="Observation.status",
                    message="Observation.status is missing; the Observation is not used",
                )
            )
            trace.ignore(ref, "no status")
            return
        if obs.status in OBS_IGNORED:
            trace.ignore(ref, f"status {obs.status}")
            return
        if obs.status not in OBS_USED:
            issues.append(
                DataIssue(
                    severity="error",
                    code="code-invalid",
                    resource=ref,
                    expression="Observation.status",
                    message=f"Observation.status {obs.status!r} is not a FHIR observation "
                    "status; the Observation is not used",
                )
            )
            trace.ignore(ref, f"unknown status {obs.status}")
            return
        preliminary = OBS_USED[obs.status]
        lab = self._lab_result(obs, ref, data)

        # menopausal status (code, or value)
        kind = self._classify(obs.code)
        if kind is None:
            meno = self._menopause(obs.code) or self._menopause(obs.valueCodeableConcept)
            if meno is not None:
                when = _when(self._obs_date(obs), "Observation.effective[x]", ref, [], False)
                data.menopause.append((meno, ref, when))
                trace.use(ref, f"menopausal status: {meno}")
                return
        if kind is None and obs.component:
            made = 0
            when = self._obs_when(obs, ref, issues)
            if when is None:
                trace.ignore(ref, _why(issues, ref))
                return
            if when.date > self.as_of:
                trace.ignore(ref, f"dated {when.date} after the as-of date {self.as_of}")
                return
            scanner = self._scanner(obs.device, devices, urls)
            for i, comp in enumerate(obs.component):
                ckind = self._classify(comp.code)
                if ckind is None:
                    continue
                mm = self._measure(
                    ckind,
                    comp,
                    f"Observation.component[{i}]",
                    ref,
                    when,
                    preliminary,
                    None,
                    scanner,
                    issues,
                )
                if mm is not None:
                    data.measurements.append(mm)
                    trace.use(ref, f"component[{i}]: {self._describe(mm)}")
                    made += 1
            if not made:
                trace.ignore(
                    ref, f"no recognised component ({obs.code.label() if obs.code else ''})"
                )
            return
        if kind is None:
            label = obs.code.label() if obs.code else "no code"
            if lab is not None:
                trace.use(ref, lab)
            else:
                trace.ignore(ref, f"unknown code ({label})")
            return

        # profile check (lumbar BMD/score, TBS)
        sd_id = self._profile_for(kind)
        if sd_id is not None and sd_id in self._sd:
            found = check(self._sd[sd_id], e.raw, ref)
            if found:
                issues.extend(found)
                trace.ignore(ref, f"does not conform to profile {sd_id}: {found[0].message}")
                return
        when = self._obs_when(obs, ref, issues)
        if when is None:
            trace.ignore(ref, _why(issues, ref))
            return
        if when.date > self.as_of:
            trace.ignore(ref, f"dated {when.date} after the as-of date {self.as_of}")
            return
        if when.partial:
            trace.assumptions.append(f"{ref}: partial date {when.text} read as {when.date}")
        scanner = self._scanner(obs.device, devices, urls) if kind[0] in ("dxa", "tbs") else None
        mm = self._measure(
            kind, obs, "Observation", ref, when, preliminary, obs.bodySite, scanner, issues
        )
        if mm is None:
            trace.ignore(ref, _why(issues, ref))
            return
        data.measurements.append(mm)
        trace.use(ref, self._describe(mm) + (" (preliminary)" if preliminary else ""))

    @staticmethod
    def _describe(mm: Measurement) -> str:
        where = mm.site or mm.kind
        if mm.vertebra:
            where += f" {mm.vertebra}"
        if mm.side:
            where += f" ({mm.side})"
        # !s: str() is what format(x, "") gives for a date and a finite Decimal, without
        # their __format__ (which parses the empty format spec: ~0.5 us more per result)
        return f"{where} {mm.score} {mm.value!s} on {mm.when.date!s}"

    @staticmethod
    def _obs_date(obs: m.Observation) -> str | None:
        if obs.effectiveDateTime is not None:
            return obs.effectiveDateTime
        if obs.effectivePeriod is not None and obs.effectivePeriod.start is not None:
            return obs.effectivePeriod.start
        return obs.effectiveInstant

    @staticmethod
    def _obs_when(obs: m.Observation, ref: str, issues: list[DataIssue]) -> When | None:
        """_when of _obs_date(obs), naming the element it comes from."""
        text = obs.effectiveDateTime
        if text is not None:
            return _when(text, "Observation.effectiveDateTime", ref, issues)
        period = obs.effectivePeriod
        if period is not None and period.start is not None:
            return _when(period.start, "Observation.effectivePeriod.start", ref, issues)
        text = obs.effectiveInstant
        if text is not None:
            return _when(text, "Observation.effectiveInstant", ref, issues)
        return _when(None, "Observation.effective[x]", ref, issues)

    def _menopause(self, cc: m.CodeableConcept | None) -> str | None:
        if cc is None:
            return None
        if self.p.postmenopausal.match(cc) is not None:
            return "postmenopausal"
        if self.p.premenopausal.match(cc) is not None:
            return "premenopausal"
        return None

    def _lab_result(self, obs: m.Observation, ref: str, data: PatientData) -> str | None:
        """CS-6.1 rev 2: the date of a laboratory test a card may order, by its order code
        (fhir_profiles/order-codes.json); the trace words, None when it is not one."""
        if obs.code is None:
            return None
        for c in obs.code.coding:
            key = self._lab_orders.get((c.system or "", c.code or ""))
            if key is None:
                continue
            when = _when(self._obs_date(obs), "Observation.effective[x]", ref, [], False)
            if when is None or when.date > self.as_of:
                return None
            data.lab_results.append((key, when.date, ref))
            return f"result of {key} on {when.date} (CS-6.1: not ordered again while recent)"
        return None

    def _classify(
        self, cc: m.CodeableConcept | None
    ) -> tuple[str, str | None, str, str | None] | None:
        """(kind, site, score, side) of an Observation code, or None."""
        if cc is None:
            return None
        index = self._obs_kinds
        for c in cc.coding:
            hit = index.get((c.system or "", c.code or ""))
            if hit is not None:
                return hit
        words = cc.words()
        if words:
            for pattern in self.p.tbs_text:
                if pattern in words:
                    return ("tbs", None, "TBS", None)
            for needles, score in self.p.femoral_neck_text:
                if all(n in words for n in needles):
                    return ("dxa", "femoral-neck", score, None)
        return None

    @staticmethod
    def _profile_for(kind: tuple[str, str | None, str, str | None]) -> str | None:
        if kind[0] == "tbs":
            return "osteohooks-tbs"
        if kind[0] == "dxa" and kind[1] == "lumbar-spine":
            return "osteohooks-lumbar-bmd" if kind[2] == "BMD" else "osteohooks-lumbar-score"
        return None

    def _vertebra(self, site: m.CodeableConcept | None) -> tuple[str | None, int | None]:
        if site is None:
            return None, None
        for c in site.coding:
            v = self.p.vertebrae.get(_norm(c.system, c.code))
            if v is not None:
                return v, 1
        chunks = [site.text or ""] + [c.display or "" for c in site.coding]
        for chunk in chunks:
            mt = _RANGE.search(chunk)
            if mt:
                a, b = int(mt.group(1)), int(mt.group(2))
                return None, abs(b - a) + 1
        for chunk in chunks:
            ms = _SINGLE.search(chunk)
            if ms:
                return (f"L{ms.group(1)}" if ms.group(1) else _ORDINAL[ms.group(2).lower()]), 1
        return None, None

    def _measure(
        self,
        kind: tuple[str, str | None, str, str | None],
        holder: m.Observation | m.ObservationComponent,
        prefix: str,
        ref: str,
        when: When,
        preliminary: bool,
        body_site: m.CodeableConcept | None,
        scanner: Scanner | None,
        issues: list[DataIssue],
    ) -> Measurement | None:
        # the element paths of the messages (vexpr, uexpr) are only formatted for a message
        kname, site, score, side = kind
        what = _WHAT[score]
        q = holder.valueQuantity
        value: Decimal | None = None
        unit: str | None = None
        if q is not None:
            value = q.value
            if value is None:
                issues.append(
                    DataIssue(
                        severity="error",
                        code="required",
                        resource=ref,
                        expression=f"{prefix}.valueQuantity.value",
                        message=f"{what} has no value; the result is not used",
                    )
                )
                return None
            if q.comparator is not None:
                issues.append(
                    DataIssue(
                        severity="error",
                        code="value",
                        resource=ref,
                        expression=f"{prefix}.valueQuantity.comparator",
                        message=f"{what} has comparator {q.comparator!r}: not an exact value; "
                        "the result is not used",
                    )
                )
                return None
            code = q.code
            unit = (code if code is not None else q.unit or "").strip()
        elif holder.valueInteger is not None:
            value = Decimal(holder.valueInteger)
            unit = ""
        else:
            other = next(
                (
                    name
                    for name in ("valueString", "valueCodeableConcept", "valueBoolean")
                    if getattr(holder, name) is not None
                ),
                None,
            )
            if other is not None:
                issues.append(
                    DataIssue(
                        severity="error",
                        code="value",
                        resource=ref,
                        expression=f"{prefix}.{other}",
                        message=f"{what} is not numeric ({other} "
                        f"{str(getattr(holder, other))[:40]!r}); send valueQuantity",
                    )
                )
            else:
                issues.append(
                    DataIssue(
                        severity="error",
                        code="required",
                        resource=ref,
                        expression=f"{prefix}.value[x]",
                        message=f"{what} has no value; the result is not used",
                    )
                )
            return None

        factor = self._unit_factors[score].get(unit)
        if factor is None:
            if q is None:
                uexpr = f"{prefix}.valueInteger"
            elif q.code is not None:
                uexpr = f"{prefix}.valueQuantity.code"
            else:
                uexpr = f"{prefix}.valueQuantity.unit"
            allowed = ", ".join(sorted(u or "no unit" for u in self._unit_factors[score]))
            issues.append(
                DataIssue(
                    severity="error",
                    code="value",
                    resource=ref,
                    expression=uexpr,
                    message=f"{what} unit {unit!r} is not accepted (use {allowed}); "
                    "the result is not used",
                )
            )
            return None
        try:
            norm = value * factor
        except InvalidOperation:
            return None
        rkey = _RANGE_KEY.get(score, score)
        lo, hi = self.p.ranges[rkey]
        if not (lo <= norm <= hi):
            issues.append(
                DataIssue(
                    severity="error",
                    code="value",
                    resource=ref,
                    expression=f"{prefix}.valueQuantity.value"
                    if q is not None
                    else f"{prefix}.valueInteger",
                    message=f"{what} {value} is outside the plausible range {lo}..{hi} "
                    f"(fhir_profiles/plausible-ranges.json); the result is not used",
                )
            )
            return None
        vertebra, count = (None, None)
        if kname == "dxa" and site == "lumbar-spine":
            vertebra, count = self._vertebra(body_site)
        return Measurement(
            ref=ref,
            kind=kname,  # type: ignore[arg-type]
            site=site,
            score=score,
            side=side,
            vertebra=vertebra,
            vertebra_count=count,
            value=norm,
            when=when,
            preliminary=preliminary,
            scanner=scanner,
        )

    def _scanner(
        self, device: m.Reference | None, devices: Mapping[str, m.Resource], urls: dict[str, str]
    ) -> Scanner | None:
        if device is None:
            return None
        key = (device.reference, device.display, device.identifier)
        hit = self._scanners.get(key)  # one scanner is referenced by many results
        if hit is None:
            hit = self._scanners[key] = self._read_scanner(device, devices, urls)
        return hit

    def _read_scanner(
        self, device: m.Reference, devices: Mapping[str, m.Resource], urls: dict[str, str]
    ) -> Scanner:
        """CS-1.4 (rev 2): identity by Device reference, by identifier, or by a display that
        carries a serial number or other identifier (profile patterns), compared case- and
        whitespace-insensitively; the label is the Device's manufacturer and model when
        known, else the display, never the raw reference (None: nothing to show)."""
        identity: str | None = None
        display = " ".join((device.display or "").split()) or None
        if display is not None and _REFERENCE_TEXT.match(display):
            display = None  # a reference copied into the display names nothing (CS-1.4)
        label = display
        texts: list[str] = [device.display or ""]
        if device.reference:
            identity = _ref_target(device.reference, urls) or device.reference
            dev = devices.get(identity)
            if isinstance(dev, m.Device):
                names = [n.name for n in dev.deviceName if n.name]
                texts += [dev.manufacturer or "", dev.modelNumber or "", *names]
                if dev.type is not None:
                    texts.append(dev.type.words())
                model = dev.modelNumber or (names[0] if names else None)
                known = [t for t in (dev.manufacturer, model) if t]
                if dev.manufacturer and model and dev.manufacturer.lower() in model.lower():
                    known = [model]  # deviceName "Hologic Horizon A" already names it
                label = " ".join(known) or label
        elif device.identifier is not None and device.identifier.value:
            identity = f"{device.identifier.system or ''}|{device.identifier.value}"
        elif display is not None and any(p.search(display) for p in self.p.device_identifiers):
            identity = f"display|{display.casefold()}"
        words = " ".join(t for t in texts if t).lower()
        manufacturer: Manufacturer = "unknown"
        if words.strip():
            manufacturer = "other"
            for needle, mf in self.p.manufacturers:
                if needle in words:
                    manufacturer = mf  # type: ignore[assignment]
                    break
        return Scanner(identity=identity, label=label, manufacturer=manufacturer)

    # -- conditions and procedures

    def _condition(self, cond: m.Condition, ref: str, data: PatientData) -> None:
        trace = data.trace
        ver = _status_code(cond.verificationStatus)
        if ver in VERIFICATION_EXCLUDED:
            trace.ignore(ref, f"verificationStatus {ver}")
            return
        unconfirmed = ver in VERIFICATION_UNCONFIRMED
        clin = _status_code(cond.clinicalStatus)
        active = clin in COND_ACTIVE
        cc = cond.code
        if cc is None:
            trace.ignore(ref, "no code")
            return
        hits = self._codes.hits(cc)
        label = _display(cc, next(iter(hits.values()), None))
        onset = cond.onsetDateTime or (cond.onsetPeriod.start if cond.onsetPeriod else None)
        when = None
        if onset is not None:
            expr = (
                "Condition.onsetDateTime"
                if cond.onsetDateTime is not None
                else "Condition.onsetPeriod.start"
            )
            when = _when(onset, expr, ref, data.issues, False)
        elif cond.recordedDate is not None:
            when = _when(cond.recordedDate, "Condition.recordedDate", ref, data.issues, False)
        used: list[str] = []

        # fractures are history: resolved ones count too
        frac = self._fracture(hits, unconfirmed)
        if frac is not None:
            kind, _entry, coding = frac
            code = coding.code or ""
            injury = (coding.system or "") == ICD10CM and code.upper().startswith(
                self.p.fracture_injury_prefixes
            )
            data.fractures.append(
                FractureRecord(
                    ref=ref, kind=kind, code=code, display=label, when=when, injury=injury
                )
            )
            used.append(
                f"{kind} fracture"
                if kind != "self-reported-vertebral"
                else "self-reported vertebral fracture"
            )

        if "cv" in hits and not unconfirmed:
            # an infarction or stroke is history too: resolved ones count (CS-6.4 rev 2)
            data.cv_events.append((ref, when))
            used.append("myocardial infarction or stroke")

        if not active:
            reason = (
                f"clinicalStatus {clin}" if clin else "no clinicalStatus (not known to be active)"
            )
            if used:
                trace.use(ref, "; ".join(used) + f" (history; {reason})")
            else:
                trace.ignore(ref, f"{reason} ({label})")
            return
        if unconfirmed:
            if used:
                trace.use(ref, "; ".join(used))
            else:
                trace.ignore(ref, f"verificationStatus {ver} ({label})")
            return
        meno = "postmenopausal" if "post" in hits else "premenopausal" if "pre" in hits else None
        if meno is not None:
            data.menopause.append((meno, ref, when))
            used.append(f"menopausal status: {meno}")
        if "hpt" in hits:
            data.hyperparathyroidism.append(ref)
            used.append("primary hyperparathyroidism")
        if "hpp" in hits or (
            "hpp-if-named" in hits and any(t in cc.words() for t in self.p.hypophosphatasia_text)
        ):
            data.hypophosphatasia.append(ref)
            used.append("hypophosphatasia")
        not_hpp = None
        if "hpp-if-named" in hits and "hypophosphatasia" not in used:
            hpp_code = hits["hpp-if-named"][1].code
            not_hpp = (
                f"not counted as hypophosphatasia: {hpp_code} ({label}) does not name it, and "
                f"{hpp_code} also codes other disorders such as hypophosphatemia (CS-3.6)"
            )
        if "ckd" in hits:
            data.advanced_ckd.append(ref)
            used.append("CKD stage 4-5 or dialysis (CS-9.1)")
        for sf, key in self._codes.structural:
            hit = hits.get(key)
            if hit is not None:
                data.findings.append(
                    FindingRecord(ref=ref, finding=sf.finding, display=_display(cc, hit))
                )
                used.append(f"structural finding {sf.finding}")
        if used:
            trace.use(ref, "; ".join(used if not_hpp is None else [*used, not_hpp]))
        else:
            trace.ignore(ref, not_hpp or f"unknown code ({label})")

    @staticmethod
    def _fracture(
        hits: Hits, unconfirmed: bool
    ) -> (
        tuple[Literal["hip", "vertebral", "other", "self-reported-vertebral"], CodeEntry, m.Coding]
        | None
    ):
        hit = hits.get("fx-self")
        if hit is not None:
            return ("self-reported-vertebral", hit[0], hit[1])
        hit = hits.get("fx-vertebral")
        if hit is not None:
            return ("self-reported-vertebral" if unconfirmed else "vertebral", hit[0], hit[1])
        if unconfirmed:
            return None
        hit = hits.get("fx-hip")
        if hit is not None:
            return ("hip", hit[0], hit[1])
        hit = hits.get("fx-other")
        if hit is not None:
            return ("other", hit[0], hit[1])
        return None

    def _procedure(self, proc: m.Procedure, ref: str, data: PatientData) -> None:
        trace = data.trace
        if proc.status not in PROC_USED:
            trace.ignore(ref, f"status {proc.status}")
            return
        cc = proc.code
        if cc is None:
            trace.ignore(ref, "no code")
            return
        words = cc.words()
        used: list[str] = []
        hits = self._codes.hits(cc)
        label = _display(cc, next(iter(hits.values()), None))
        for sf, key in self._codes.structural:
            hit = hits.get(key)
            if hit is not None or any(t in words for t in sf.text_patterns):
                data.findings.append(
                    FindingRecord(ref=ref, finding=sf.finding, display=_display(cc, hit))
                )
                used.append(f"structural finding {sf.finding}")
        ahit = hits.get("fx-augmentation")
        if ahit is not None or any(t in words for t in self.p.fracture_augmentation_text):
            # vertebral augmentation treats a vertebral fracture (CS-1.10 rev 2)
            performed_at = proc.performedDateTime or (
                proc.performedPeriod.start if proc.performedPeriod else None
            )
            at = (
                _when(performed_at, "Procedure.performed[x]", ref, data.issues, False)
                if performed_at is not None
                else None
            )
            data.fractures.append(
                FractureRecord(
                    ref=ref,
                    kind="vertebral",
                    code=(ahit[1].code or "") if ahit is not None else "",
                    display=_display(cc, ahit),
                    when=at,
                    augmentation=True,
                )
            )
            used.append("vertebral fracture (vertebral augmentation)")
        chit = hits.get("contrast")
        if chit is not None or any(t in words for t in self.p.contrast_text):
            label = _display(cc, chit)
            performed = proc.performedDateTime or (
                proc.performedPeriod.start if proc.performedPeriod else None
            )
            expr = (
                "Procedure.performedDateTime"
                if proc.performedDateTime is not None
                else "Procedure.performed[x]"
            )
            when = _when(performed, expr, ref, data.issues)
            if when is not None:
                if when.date > self.as_of:
                    trace.ignore(ref, f"dated {when.date} after the as-of date {self.as_of}")
                    return
                data.contrast.append(ContrastRecord(ref=ref, display=label, when=when))
                used.append(f"contrast study on {when.date}")
        if used:
            trace.use(ref, "; ".join(used))
        else:
            trace.ignore(ref, f"unknown code ({label})")

    # -- medications

    def _recognise(self, cc: m.CodeableConcept | None, extra: str) -> Ingredient | None:
        if cc is not None:
            for c in cc.coding:
                if not c.code:
                    continue
                if c.system == RXNORM and c.code in self.p.rxnorm:
                    return self.p.rxnorm[c.code]
                if c.system == ATC and c.code.upper() in self.p.atc:
                    return self.p.atc[c.code.upper()]
        words = ((cc.words() if cc is not None else "") + " | " + extra.lower()).strip()
        for name, ing in self.p.med_names:
            if name in words:
                return ing
        return None

    def _medication(
        self,
        res: m.MedicationStatement | m.MedicationRequest | m.MedicationAdministration,
        ref: str,
        data: PatientData,
        meds: Mapping[str, m.Resource],
        urls: dict[str, str],
    ) -> None:
        trace, issues = data.trace, data.issues
        rtype = res.resourceType
        cc = res.medicationCodeableConcept
        extra = ""
        form: m.CodeableConcept | None = None
        if cc is None and res.medicationReference is not None:
            mr = res.medicationReference
            extra = mr.display or ""
            if mr.reference:
                target = _ref_target(mr.reference, urls)
                med = meds.get(target or "")
                if isinstance(med, m.Medication) and med.code is not None:
                    cc = med.code
                    form = med.form
        ing = self._recognise(cc, extra)
        label = (cc.label() if cc is not None else "") or extra or "no medication code"
        harm = self._harming(cc, extra) if ing is None else None
        if ing is None and harm is None:
            trace.ignore(
                ref, f"not a bone-active, glucocorticoid or bone-harming medication ({label})"
            )
            return
        status = res.status or ""
        start: When | None = None
        end: When | None = None
        dose_date: When | None = None
        ongoing = False
        dosages: list[tuple[str, m.Quantity | None, m.Timing | None]] = []
        routes: list[m.CodeableConcept] = []
        texts: list[str] = []
        if isinstance(res, m.MedicationStatement):
            if status not in MS_USED:
                trace.ignore(ref, f"status {status or 'missing'} ({label})")
                return
            if res.effectivePeriod is not None:
                start = _when(
                    res.effectivePeriod.start,
                    "MedicationStatement.effectivePeriod.start",
                    ref,
                    issues,
                    False,
                )
                end = _when(
                    res.effectivePeriod.end,
                    "MedicationStatement.effectivePeriod.end",
                    ref,
                    issues,
                    False,
                )
            if start is None and res.effectiveDateTime is not None:
                start = _when(
                    res.effectiveDateTime,
                    "MedicationStatement.effectiveDateTime",
                    ref,
                    issues,
                    False,
                )
            ongoing = status == "active" and (end is None or end.date >= self.as_of)
            if status in ("completed", "stopped") and end is None and res.effectiveDateTime:
                end = start
            for i, d in enumerate(res.dosage):
                routes.extend([d.route] if d.route is not None else [])
                texts.extend([d.text] if d.text else [])
                for j, dr in enumerate(d.doseAndRate):
                    dosages.append(
                        (
                            f"MedicationStatement.dosage[{i}].doseAndRate[{j}].doseQuantity",
                            dr.doseQuantity,
                            d.timing,
                        )
                    )
        elif isinstance(res, m.MedicationRequest):
            if status not in MR_USED:
                trace.ignore(ref, f"status {status or 'missing'} ({label})")
                return
            if res.intent is not None and res.intent not in MR_ORDER_INTENTS:
                trace.ignore(ref, f"intent {res.intent}: not an order ({label})")
                return
            start = _when(res.authoredOn, "MedicationRequest.authoredOn", ref, issues, False)
            ongoing = status == "active"
            for i, d in enumerate(res.dosageInstruction):
                routes.extend([d.route] if d.route is not None else [])
                texts.extend([d.text] if d.text else [])
                for j, dr in enumerate(d.doseAndRate):
                    dosages.append(
                        (
                            f"MedicationRequest.dosageInstruction[{i}].doseAndRate[{j}].doseQuantity",
                            dr.doseQuantity,
                            d.timing,
                        )
                    )
        else:
            if status not in MA_USED:
                trace.ignore(ref, f"status {status or 'missing'} ({label})")
                return
            text = res.effectiveDateTime or (
                res.effectivePeriod.start if res.effectivePeriod else None
            )
            dose_date = _when(text, "MedicationAdministration.effective[x]", ref, issues)
            if dose_date is None:
                trace.ignore(ref, _why(issues, ref))
                return
            start = dose_date
            if res.dosage is not None:
                dosages.append(("MedicationAdministration.dosage.dose", res.dosage.dose, None))
                routes.extend([res.dosage.route] if res.dosage.route is not None else [])
                texts.extend([res.dosage.text] if res.dosage.text else [])
        if start is not None and start.date > self.as_of:
            trace.ignore(ref, f"starts {start.date} after the as-of date {self.as_of}")
            return
        if ing is None:
            assert harm is not None
            data.harming.append(
                HarmingRecord(
                    ref=ref,
                    drug=harm,
                    start=start.date if start else None,
                    ongoing=ongoing,
                    label=label,
                )
            )
            trace.use(ref, f"{harm.ingredient} ({harm.class_display}, harms bone: CS-6.8)")
            return
        words = " | ".join(
            [cc.words() if cc is not None else "", extra.lower()]
            + [t.lower() for t in texts]
            + [r.words() for r in routes]
            + [form.words() if form is not None else ""]
        )
        if ing.med_class == "glucocorticoid":
            why = self._not_systemic(routes, words)
            if why is not None:
                trace.ignore(
                    ref,
                    f"{ing.ingredient}: not systemic ({why}); only oral, intravenous or "
                    "intramuscular glucocorticoids count (CS-1.8)",
                )
                return
        oncology = self._oncology(ing, words, dosages)
        mg_day = None
        if ing.med_class == "glucocorticoid" and dosages:
            mg_day = self._mg_day(ing, dosages, ref, issues)
        data.meds.append(
            MedRecord(
                ref=ref,
                ingredient=ing,
                med_class=ing.med_class,
                source="statement"
                if rtype == "MedicationStatement"
                else "request"
                if rtype == "MedicationRequest"
                else "administration",
                status=status,
                start=start.date if start else None,
                end=end.date if end else None,
                ongoing=ongoing,
                dose_date=dose_date.date if dose_date else None,
                mg_day=mg_day,
                label=label,
                oncology=oncology,
            )
        )
        what = f"{ing.ingredient} ({ing.med_class})"
        if oncology:
            what += (
                ", oncology regimen: not osteoporosis therapy for CS-7 and CS-9.2-9.4; "
                "CS-9.1 still applies (CS-1.8)"
            )
        if mg_day is not None:
            what += f", {mg_day} mg/day prednisone-equivalent"
        trace.use(ref, what)

    def _harming(self, cc: m.CodeableConcept | None, extra: str) -> HarmingDrug | None:
        """A drug that harms bone (CS-6.8), by ATC code or by name."""
        if cc is not None:
            for c in cc.coding:
                if c.code and c.system == self.p.harming_atc_system:
                    hit = self.p.harming_atc.get(c.code.upper())
                    if hit is not None:
                        return hit
        words = (cc.words() if cc is not None else "") + " | " + extra.lower()
        for name, drug in self.p.harming_names:
            if name in words:
                return drug
        return None

    def _not_systemic(self, routes: list[m.CodeableConcept], words: str) -> str | None:
        """Why a glucocorticoid record is not systemic (CS-1.8 rev 2), None when it is."""
        for route in routes:
            for c in route.coding:
                if (
                    c.system == self.p.systemic_route_system
                    and c.code in self.p.systemic_route_codes
                ):
                    return None
        hit = self.p.non_systemic_words.search(words)
        if hit is None:
            return None
        return f"it says {hit.group(0)!r}"

    def _oncology(
        self,
        ing: Ingredient,
        words: str,
        dosages: list[tuple[str, m.Quantity | None, m.Timing | None]],
    ) -> bool:
        """Denosumab 120 mg (Xgeva) or zoledronic acid 4 mg (CS-1.8 rev 2)."""
        dose = self.p.oncology_doses_mg.get(ing.ingredient)
        if dose is None:
            return False
        if any(v == ing.ingredient and n in words for n, v in self.p.oncology_names.items()):
            return True
        for _, q, _ in dosages:
            unit = (q.code or q.unit or "").strip() if q is not None else ""
            if q is not None and q.value is not None and unit == "mg" and q.value == dose:
                return True
        return re.search(rf"\b{re.escape(str(dose))}\s*mg\b", words) is not None

    def _mg_day(
        self,
        ing: Ingredient,
        dosages: list[tuple[str, m.Quantity | None, m.Timing | None]],
        ref: str,
        issues: list[DataIssue],
    ) -> Decimal | None:
        total = Decimal(0)
        found = False
        factor = ing.prednisone_factor or Decimal(1)
        for expr, q, timing in dosages:
            if q is None or q.value is None:
                continue
            unit = (q.code if q.code is not None else q.unit or "").strip()
            uf = self.p.dose_units.get(unit)
            if uf is None:
                issues.append(
                    DataIssue(
                        severity="warning",
                        code="value",
                        resource=ref,
                        expression=f"{expr}.unit" if q.code is None else f"{expr}.code",
                        message=f"glucocorticoid dose unit {unit!r} is not mg, g or ug: the "
                        "dose is unknown",
                    )
                )
                return None
            per_day = Decimal(1)
            rep = timing.repeat if timing is not None else None
            if rep is not None:
                freq = Decimal(rep.frequency) if rep.frequency is not None else Decimal(1)
                period = rep.period if rep.period is not None else Decimal(1)
                days = {
                    "d": Decimal(1),
                    "h": Decimal(1) / 24,
                    "wk": Decimal(7),
                    "mo": Decimal("30.4375"),
                }.get(rep.periodUnit or "d")
                if days is None or period <= 0 or freq < 0:
                    issues.append(
                        DataIssue(
                            severity="warning",
                            code="value",
                            resource=ref,
                            expression=f"{expr.rsplit('.doseAndRate', 1)[0]}.timing.repeat",
                            message="glucocorticoid dose timing cannot be read as a daily "
                            "frequency: the dose is unknown",
                        )
                    )
                    return None
                per_day = freq / (period * days)
            total += q.value * uf * per_day * factor
            found = True
        if not found or total < 0:
            return None
        return total.quantize(Decimal("0.01"))

    # -- draft orders

    def _read_drafts(self, draft_orders: Any, data: PatientData, chosen: str | None) -> None:
        if draft_orders is None or (isinstance(draft_orders, list | tuple) and not draft_orders):
            return  # none (patient-view): nothing below would happen
        items: list[Any] = (
            list(draft_orders) if isinstance(draft_orders, list | tuple) else [draft_orders]
        )
        entries = flatten(items, data.issues, data.trace, label="draftOrders")
        urls = _url_map(entries)
        for e in sorted(entries, key=lambda x: x.ref):
            if e.rtype != "ServiceRequest":
                data.trace.ignore(e.ref, f"draft {e.rtype} is not a DXA order")
                continue
            try:
                sr = m.ServiceRequest.model_validate(e.raw)
            except ValidationError as exc:
                data.issues.extend(_errors_to_issues(exc, e.rtype, e.ref))
                data.trace.ignore(e.ref, _why(data.issues, e.ref))
                continue
            if sr.status is not None and sr.status not in DRAFT_USED:
                data.trace.ignore(e.ref, f"status {sr.status}")
                continue
            subject = _subject_of(e.raw)
            if (
                isinstance(subject, str)
                and chosen is not None
                and _ref_target(subject, urls) != chosen
            ):
                data.trace.ignore(e.ref, f"not this patient (subject {subject})")
                continue
            hit = self.p.dxa_orders.match(sr.code)
            if hit is None or sr.code is None:
                label = sr.code.label() if sr.code else "no code"
                data.trace.ignore(e.ref, f"not a DXA order ({label})")
                continue
            authored = _when(sr.authoredOn, "ServiceRequest.authoredOn", e.ref, data.issues, False)
            display = _display(sr.code, hit)
            data.drafts.append(DraftRecord(ref=e.ref, display=display, authored=authored))
            data.trace.use(e.ref, "draft DXA order")


def _display(cc: m.CodeableConcept, hit: tuple[CodeEntry, m.Coding] | None) -> str:
    """The resource's own text or display, else the profile's display of the matched code."""
    if cc.text:
        return cc.text
    for c in cc.coding:
        if c.display:
            return c.display
    if hit is not None:
        return f"{hit[0].display} ({hit[1].code})"
    return cc.label()


ObsKind = tuple[str, str | None, str, str | None]


def _lab_order_index(profiles: Profiles) -> dict[tuple[str, str], str]:
    """(system, code) -> order key of the laboratory orders a recent result leaves out
    (`skip_if_recent`, CS-6.1), built once."""
    return profiles.derived(_build_lab_order_index)


def _build_lab_order_index(profiles: Profiles) -> dict[tuple[str, str], str]:
    return {
        (o.system, o.code): key
        for key, o in profiles.order_codes.items()
        if o.category == "laboratory" and o.skip_if_recent
    }


def _obs_index(profiles: Profiles) -> dict[tuple[str, str], ObsKind]:
    """(system, code) -> (kind, site, score, side) for every Observation code, built once."""
    return profiles.derived(_build_obs_index)


def _build_obs_index(profiles: Profiles) -> dict[tuple[str, str], ObsKind]:
    index: dict[tuple[str, str], ObsKind] = {}
    for e in profiles.height.entries:
        index[(e.system, e.code)] = ("height", None, "HEIGHT", None)
    for e in profiles.alp.entries:
        index[(e.system, e.code)] = ("alp", None, "ALP", None)
    for e in profiles.egfr.entries:
        index[(e.system, e.code)] = ("egfr", None, "EGFR", None)
    for e in profiles.tbs.entries:
        index[(e.system, e.code)] = ("tbs", None, "TBS", None)
    for key, fn in profiles.femoral_neck.items():
        index[key] = ("dxa", "femoral-neck", fn.score, fn.side)
    for key, d in profiles.dxa.items():
        index[key] = ("dxa", d.site, d.score, d.side)
    return index


Hits = dict[str, tuple[CodeEntry, m.Coding]]


def _unit_factors(p: Profiles) -> dict[str, dict[str, Decimal]]:
    """score -> accepted unit -> factor to the normalised unit, built once per Profiles.

    The score units (T, Z, TBS) are sets in Profiles and map to 1 here, so
    ``table[score].get(unit)`` is the factor (None: the unit is not accepted) for every
    score of _WHAT, and ``table[score]`` lists the accepted units.
    """
    return p.derived(_build_unit_factors)


def _build_unit_factors(p: Profiles) -> dict[str, dict[str, Decimal]]:
    return {
        "BMD": dict(p.bmd_units),
        "T": dict.fromkeys(p.t_units, _ONE),
        "Z": dict.fromkeys(p.z_units, _ONE),
        "TBS": dict.fromkeys(p.tbs_units, _ONE),
        "ALP": dict(p.alp_units),
        "HEIGHT": dict(p.height_units),
        "EGFR": dict(p.egfr_units),
    }


@dataclass(frozen=True)
class _CodeIndex:
    """Every Condition/Procedure code list at once: category -> first (longest) match."""

    exact: dict[tuple[str, str], list[tuple[str, CodeEntry]]]
    prefix: dict[tuple[str, str], list[tuple[str, str, CodeEntry]]]
    #: the structural findings of the Profiles, in order, with their category in hits
    structural: tuple[tuple[StructuralFindingProfile, str], ...]

    def hits(self, cc: m.CodeableConcept) -> Hits:
        out: Hits = {}
        for coding in cc.coding:
            if not coding.code:
                continue
            key = _norm(coding.system, coding.code)
            for cat, entry in self.exact.get(key, ()):
                out.setdefault(cat, (entry, coding))
            for pre, cat, entry in self.prefix.get((key[0], key[1][:3]), ()):
                if cat not in out and key[1].startswith(pre):
                    out[cat] = (entry, coding)
        return out


def _code_index(p: Profiles) -> _CodeIndex:
    """The code lists of a Profiles object indexed for `_CodeIndex.hits`, built once."""
    return p.derived(_build_code_index)


def _build_code_index(p: Profiles) -> _CodeIndex:
    lists: list[tuple[str, CodeList]] = [
        ("fx-self", p.fracture_self_reported),
        ("fx-vertebral", p.fracture_vertebral),
        ("fx-hip", p.fracture_hip),
        ("fx-other", p.fracture_other),
        ("post", p.postmenopausal),
        ("pre", p.premenopausal),
        ("hpt", p.hyperparathyroidism),
        ("hpp", p.hypophosphatasia),
        ("hpp-if-named", p.hypophosphatasia_if_named),
        ("ckd", p.advanced_ckd),
        ("cv", p.mi_or_stroke),
        ("fx-augmentation", p.fracture_augmentation),
        ("contrast", p.contrast),
        *((f"sf:{sf.finding}", sf.codes) for sf in p.structural),
    ]
    exact: dict[tuple[str, str], list[tuple[str, CodeEntry]]] = {}
    prefix: dict[tuple[str, str], list[tuple[str, str, CodeEntry]]] = {}
    for cat, cl in lists:
        for e in cl.entries:
            key = _norm(e.system, e.code)
            if e.system in PREFIX_SYSTEMS:
                prefix.setdefault((key[0], key[1][:3]), []).append((key[1], cat, e))
            else:
                exact.setdefault(key, []).append((cat, e))
    for v in prefix.values():
        v.sort(key=lambda t: -len(t[0]))  # longest prefix first
    structural = tuple((sf, f"sf:{sf.finding}") for sf in p.structural)
    return _CodeIndex(exact, prefix, structural)


def _compiled(profiles: Profiles) -> dict[str, CompiledProfile]:
    """The StructureDefinitions of a Profiles object, compiled once."""
    return profiles.derived(_compile_all)


def _compile_all(profiles: Profiles) -> dict[str, CompiledProfile]:
    return {sid: compile_profile(sd) for sid, sd in profiles.structure_definitions.items()}


def _why(issues: list[DataIssue], ref: str) -> str:
    """The trace reason for a resource not used because of a data error: its last message."""
    for issue in reversed(issues):
        if issue.resource == ref:
            return f"data error: {issue.message}"
    return "data error"


def _status_code(cc: m.CodeableConcept | None) -> str | None:
    if cc is None:
        return None
    for c in cc.coding:
        if c.code:
            return c.code
    return cc.text.lower() if cc.text else None
