"""The OperationOutcome model: the FHIR JSON every problem report is made of."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from cds.contracts.outcome import (
    DataIssue,
    OperationOutcome,
    OutcomeIssue,
    data_outcome,
    error_count,
    error_outcome,
    is_fatal,
)


def test_a_data_issue_is_an_issue_with_details_in_fhir_key_order() -> None:
    issue = DataIssue(
        severity="error",
        code="value",
        resource="Observation/o1",
        expression="Observation.valueQuantity.unit",
        message="unit 'mg' is not g/cm2",
    )
    assert json.dumps(issue.to_fhir()) == json.dumps(
        {
            "severity": "error",
            "code": "value",
            "details": {"text": "unit 'mg' is not g/cm2"},
            "diagnostics": "Observation/o1: unit 'mg' is not g/cm2",
            "expression": ["Observation.valueQuantity.unit"],
        }
    )


def test_absent_elements_are_omitted_never_null() -> None:
    issue = DataIssue(severity="warning", code="required", message="no date")
    assert issue.to_fhir() == {
        "severity": "warning",
        "code": "required",
        "details": {"text": "no date"},
        "diagnostics": "no date",
    }
    assert OutcomeIssue.of("x", code="exception").to_json() == {
        "severity": "error",
        "code": "exception",
        "diagnostics": "x",
    }


def test_information_issues_are_not_data_errors() -> None:
    info = DataIssue(severity="information", code="informational", message="note")
    assert data_outcome([info]) is None
    fatal = DataIssue(severity="fatal", code="required", message="no Patient")
    outcome = data_outcome([info, fatal])
    assert outcome is not None
    assert [i["severity"] for i in outcome["issue"]] == ["fatal"]
    assert is_fatal(outcome)
    assert error_count(outcome) == 1


def test_error_outcome_names_the_element_when_given() -> None:
    assert error_outcome("bad", code="structure", expression="prefetch") == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "structure",
                "diagnostics": "bad",
                "expression": ["prefetch"],
            }
        ],
    }
    assert not is_fatal(error_outcome("bad"))
    assert error_count(error_outcome("bad", severity="warning")) == 0


def test_an_operation_outcome_has_an_issue() -> None:
    with pytest.raises(ValidationError):
        OperationOutcome(issue=[])


def test_outcome_json_round_trips_through_the_model() -> None:
    given = data_outcome([DataIssue(severity="error", code="value", message="m", resource="X/1")])
    assert given is not None
    assert OperationOutcome.model_validate(given).to_json() == given


@pytest.mark.parametrize("junk", [None, {}, {"issue": "x"}, {"issue": [1, "fatal"]}, []])
def test_fatal_and_counts_of_junk_are_false_and_zero(junk: object) -> None:
    assert not is_fatal(junk)  # type: ignore[arg-type]
    assert error_count(junk) == 0  # type: ignore[arg-type]
