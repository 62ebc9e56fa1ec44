"""The Patient: which one is evaluated, and its sex and birth date."""

from __future__ import annotations

from collections.abc import Mapping

from cds.contracts.outcome import DataIssue
from cds.fhir import issues as di
from cds.fhir import models as m
from cds.fhir.common import when
from cds.fhir.records import PatientData

GENDERS = frozenset({"male", "female", "other", "unknown"})


def choose_patient(
    patients: Mapping[str, m.Patient], patient_id: str | None, issues: list[DataIssue]
) -> str | None:
    """The Type/id of the patient evaluated: `patient_id`'s, else the only one; None (with
    a fatal data error) when that one is absent or there is none or several."""
    if patient_id is not None:
        ref = f"Patient/{patient_id}"
        if ref in patients:
            return ref
        issues.append(di.patient_not_found(ref, sorted(patients)))
        return None
    if len(patients) == 1:
        return next(iter(patients))
    if not patients:
        issues.append(di.no_patient())
    else:
        issues.append(di.several_patients(sorted(patients)))
    return None


def read_patient(pat: m.Patient, ref: str, data: PatientData) -> None:
    """Sex and birth date (a partial birth date's first day, stated as an assumption)."""
    gender = data.gender = pat.get("gender")
    if gender is not None and gender not in GENDERS:
        data.issues.append(di.gender_invalid(ref, gender))
        data.gender = None
    born = when(pat.get("birthDate"), "Patient.birthDate", ref, data.issues)
    if born is not None:
        if born.partial:
            data.trace.assumptions.append(
                f"{ref}: birth date {born.text} is partial; its first day is used"
            )
        data.birth_date = born.date
        data.trace.use(ref, "age and sex")
