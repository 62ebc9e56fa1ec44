"""cds.fhir.issues: the one place that says what each data error of the FHIR read is (its
severity, issue code, element and message), and that the read uses only those."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import cds.fhir
from cds.contracts.outcome import DataIssue
from cds.contracts.outcome import data_outcome as operation_outcome
from cds.fhir import issues as di

FHIR_DIR = Path(cds.fhir.__file__).parent


def _constructors() -> dict[str, Callable[..., DataIssue]]:
    return {
        name: fn
        for name, fn in inspect.getmembers(di, inspect.isfunction)
        if fn.__module__ == di.__name__
        and not name.startswith("_")
        and inspect.signature(fn).return_annotation in (DataIssue, "DataIssue")
    }


def _sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(FHIR_DIR.glob("*.py")) if p.name != "issues.py"}


def test_there_is_a_named_constructor_for_each_data_error() -> None:
    assert len(_constructors()) >= 24


def test_only_issues_py_builds_data_issues() -> None:
    direct = [name for name, text in _sources().items() if re.search(r"\bDataIssue\(", text)]
    assert direct == []


@pytest.mark.parametrize("name", sorted(_constructors()))
def test_every_constructor_is_used_by_the_read(name: str) -> None:
    assert any(f"di.{name}(" in text for text in _sources().values()), name


def test_a_missing_or_bad_date_says_what_happens_to_the_resource() -> None:
    missing = di.date_missing("Observation/a", "Observation.effective[x]")
    assert (missing.severity, missing.code) == ("error", "required")
    assert missing.message.endswith("the resource is not used")
    needed = di.date_invalid("Observation/a", "Observation.effectiveDateTime", "bad", True)
    optional = di.date_invalid("Condition/c", "Condition.onsetDateTime", "bad", False)
    assert (needed.severity, optional.severity) == ("error", "warning")
    assert needed.message.endswith("the resource is not used")
    assert optional.message.endswith("the date is left out")


def test_result_errors_name_the_element_and_the_fix() -> None:
    unit = di.unit_not_accepted(
        "Observation/a", "Observation.valueQuantity.code", "BMD", "kg", "g/cm2"
    )
    assert unit.expression == "Observation.valueQuantity.code"
    assert "use g/cm2" in unit.message
    wrong = di.value_not_numeric(
        "Observation/a", "Observation.valueString", "T-score", "valueString", "low"
    )
    assert wrong.message.endswith("send valueQuantity")
    far = di.value_implausible(
        "Observation/a", "Observation.valueQuantity.value", "T-score", 9, -8, 8
    )
    assert "fhir_profiles/plausible-ranges.json" in far.message


def test_patient_errors_are_fatal_and_say_how_to_fix_them() -> None:
    for issue in (
        di.patient_not_found("Patient/x", ["Patient/p1"]),
        di.no_patient(),
        di.several_patients(["Patient/p1", "Patient/p2"]),
    ):
        assert (issue.severity, issue.expression) == ("fatal", "Patient")
    assert "send the patient prefetch" in di.no_patient().message
    assert "say which one (patient_id)" in di.several_patients(["Patient/p1"]).message
    assert "patients present: none" in di.patient_not_found("Patient/x", []).message


def test_glucocorticoid_dose_problems_are_warnings() -> None:
    unit = di.dose_unit_unknown("MedicationStatement/m", "x.code", "tablet")
    timing = di.dose_timing_unreadable("MedicationStatement/m", "x.timing.repeat")
    assert (unit.severity, timing.severity) == ("warning", "warning")


def test_constructed_issues_go_into_the_operation_outcome() -> None:
    outcome = operation_outcome([di.status_missing("Observation/a"), di.no_patient()])
    assert outcome is not None
    assert [i["code"] for i in outcome["issue"]] == ["required", "required"]
    assert outcome["issue"][0]["expression"] == ["Observation.status"]
