"""Reading FHIR input: flatten Bundles, pick the patient, validate what is used, and turn
each usable resource into a typed record. Every problem is a DataIssue; every resource
not used is listed in the trace with the reason. Nothing here raises on bad data.

This module is the entry point and the dispatch by resource type; each family is read in
its own module: observations.py (DXA results, labs, menopausal status), scanners.py,
conditions.py (conditions and procedures), medications.py, drafts.py, patient.py, on
bundle.py (flattening, references), common.py and the records of records.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any, cast

from pydantic import ValidationError

from cds.contracts.outcome import DataIssue, issue_sort_key
from cds.fhir import issues as di
from cds.fhir import models as m
from cds.fhir.bundle import Entry, dedupe, flatten, ref_target, subject_of, url_map
from cds.fhir.common import ReadContext, errors_to_issues, why
from cds.fhir.conditions import read_condition, read_procedure
from cds.fhir.drafts import read_drafts
from cds.fhir.medications import MedResource, read_medication
from cds.fhir.observations import read_observation
from cds.fhir.patient import choose_patient, read_patient
from cds.fhir.profiles import Profiles
from cds.fhir.records import PatientData, Validation
from cds.fhir.trace import Trace

_VALIDATE = m.VALIDATE
#: read for the others, not dispatched themselves
_NOT_DISPATCHED = frozenset({"Patient", "Device", "Medication"})


class Reader:
    """Reads one patient's resources into a PatientData."""

    def __init__(self, profiles: Profiles, as_of: date, validation: Validation = "fast") -> None:
        self.p = profiles
        self.as_of = as_of
        self.validation = validation

    def read(
        self,
        resources: Iterable[Any],
        patient_id: str | None,
        draft_orders: Any,
    ) -> PatientData:
        """Everything usable of one patient (`patient_id`, else the only Patient), with
        the data errors and the trace of every resource."""
        data = PatientData()
        ctx = ReadContext(self.p, self.as_of, data)
        issues, trace = data.issues, data.trace
        entries = dedupe(flatten(resources, issues, trace), trace)
        ctx.urls = url_map(entries)
        parsed, patients = _parse(entries, ctx)
        chosen = choose_patient(patients, patient_id, issues)
        if chosen is not None:
            data.patient_ref = chosen
            read_patient(patients[chosen], chosen, data)
        for ref in sorted(patients):
            if ref != chosen:
                trace.ignore(ref, "not the patient evaluated")
        self._dispatch_all(ctx, parsed, chosen)
        scanned = {mm.scanner.identity for mm in data.measurements if mm.scanner is not None}
        for ref in sorted(ctx.devices):
            if ref not in scanned:
                trace.ignore(ref, "Device not referenced by a DXA result used")
        read_drafts(ctx, draft_orders, chosen)
        issues.sort(key=issue_sort_key)
        trace.sort()
        return data

    def _dispatch_all(
        self, ctx: ReadContext, parsed: dict[str, tuple[Entry, m.Resource]], chosen: str | None
    ) -> None:
        """Every parsed resource of the patient evaluated, in ref order (dedupe sorts the
        entries by their unique ref, and parsed keeps their order)."""
        issues, trace = ctx.data.issues, ctx.data.trace
        # ref_target of each distinct subject, once (every resource names the same patient)
        targets: dict[str, str | None] = {}
        full = self.validation == "full"
        for ref, (e, res) in parsed.items():
            if e.rtype in _NOT_DISPATCHED:
                continue
            subject = subject_of(e.raw)
            if isinstance(subject, str) and chosen is not None:
                if subject in targets:
                    target = targets[subject]
                else:
                    target = targets[subject] = ref_target(subject, ctx.urls)
                if target != chosen:
                    trace.ignore(ref, f"not this patient (subject {subject})")
                    continue
            if full and not _full_ok(e, ref, issues, trace):
                continue
            try:
                _dispatch(ctx, e, res, ref)
            except (ArithmeticError, ValueError, OverflowError) as exc:  # defensive: never raise
                issues.append(di.cannot_be_used(ref, exc))
                trace.ignore(ref, why(issues, ref))


def _parse(
    entries: list[Entry], ctx: ReadContext
) -> tuple[dict[str, tuple[Entry, m.Resource]], dict[str, m.Patient]]:
    """The entries of a type read, validated (data errors for the others), by ref, and
    the Patients among them; the Devices and Medications go to the context."""
    issues, trace = ctx.data.issues, ctx.data.trace
    parsed: dict[str, tuple[Entry, m.Resource]] = {}
    # by resourceType: a validated resource is of the model MODELS[rtype]
    patients: dict[str, m.Patient] = {}
    devices: dict[str, m.Device] = {}
    medications: dict[str, m.Medication] = {}
    for e in entries:
        rtype = e.rtype
        validate = _VALIDATE.get(rtype)
        if validate is None:
            trace.ignore(e.ref, f"resource type {rtype} is not read")
            continue
        try:
            res: m.Resource = validate(e.raw)
        except ValidationError as exc:
            issues.extend(errors_to_issues(exc, rtype, e.ref))
            trace.ignore(e.ref, why(issues, e.ref))
            continue
        parsed[e.ref] = (e, res)
        if rtype == "Patient":
            patients[e.ref] = cast(m.Patient, res)
        elif rtype == "Device":
            devices[e.ref] = cast(m.Device, res)
        elif rtype == "Medication":
            medications[e.ref] = cast(m.Medication, res)
    ctx.devices = devices
    ctx.medications = medications
    return parsed, patients


def _full_ok(e: Entry, ref: str, issues: list[DataIssue], trace: Trace) -> bool:
    """validation="full": the resource is valid FHIR R4 by the fhir.resources models."""
    from fhir.resources.R4B import get_fhir_model_class

    try:
        cls = get_fhir_model_class(e.rtype)
        cls.model_validate(e.raw)
    except ValidationError as exc:
        issues.extend(errors_to_issues(exc, e.rtype, ref))
        trace.ignore(ref, why(issues, ref))
        return False
    except (KeyError, ValueError, TypeError) as exc:
        issues.append(di.not_valid_r4(ref, exc))
        trace.ignore(ref, why(issues, ref))
        return False
    return True


_MEDICATIONS = frozenset({"MedicationStatement", "MedicationRequest", "MedicationAdministration"})


def _dispatch(ctx: ReadContext, e: Entry, res: m.Resource, ref: str) -> None:
    """`res` is of the model of its resourceType (m.MODELS[e.rtype])."""
    rtype = e.rtype
    if rtype == "Observation":
        read_observation(ctx, e.raw, cast(m.Observation, res), ref)
    elif rtype == "Condition":
        read_condition(ctx, cast(m.Condition, res), ref)
    elif rtype == "Procedure":
        read_procedure(ctx, cast(m.Procedure, res), ref)
    elif rtype in _MEDICATIONS:
        read_medication(ctx, cast(MedResource, res), ref)
    elif rtype == "ServiceRequest":
        ctx.data.trace.ignore(
            ref, "ServiceRequest in the record (draft orders come from context.draftOrders)"
        )
