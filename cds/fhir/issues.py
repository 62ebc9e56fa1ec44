"""Data errors: typed issues about unusable input, and their OperationOutcome form.

An issue always says what was wrong, in which resource (``Type/id``) and where
(a FHIRPath-style ``expression`` such as ``Observation.valueQuantity.unit``). The
evaluation goes on without the resource; issues never raise.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["fatal", "error", "warning", "information"]
#: FHIR IssueType codes used here (http://hl7.org/fhir/issue-type).
IssueCode = Literal[
    "structure",
    "required",
    "value",
    "invariant",
    "code-invalid",
    "not-found",
    "multiple-matches",
    "incomplete",
    "informational",
]

#: Severities that are data errors (reported in the OperationOutcome).
OUTCOME_SEVERITIES: frozenset[str] = frozenset({"fatal", "error", "warning"})


class DataIssue(BaseModel):
    """One problem with the input data."""

    model_config = ConfigDict(frozen=True)

    severity: Severity
    code: IssueCode
    resource: str | None = Field(None, description="Type/id of the resource, when known")
    expression: str | None = Field(
        None, description="FHIRPath of the element, e.g. Observation.status"
    )
    message: str = Field(description="what was wrong and how to fix it")

    def text(self) -> str:
        """One line for logs and the command line."""
        where = self.resource or "input"
        if self.expression:
            where = f"{where} {self.expression}"
        return f"{self.severity}: {where}: {self.message}"

    def to_fhir(self) -> dict[str, Any]:
        """This issue as an OperationOutcome.issue element."""
        diagnostics = f"{self.resource}: {self.message}" if self.resource else self.message
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "details": {"text": self.message},
            "diagnostics": diagnostics,
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def issue_sort_key(issue: DataIssue) -> tuple[str, str, str, str]:
    """Deterministic order of issues (resource, element, message)."""
    return (issue.resource or "", issue.expression or "", issue.code, issue.message)


def operation_outcome(issues: list[DataIssue]) -> dict[str, Any] | None:
    """The OperationOutcome JSON of the data errors, None when there are none."""
    reported = [i.to_fhir() for i in issues if i.severity in OUTCOME_SEVERITIES]
    if not reported:
        return None
    return {"resourceType": "OperationOutcome", "issue": reported}
