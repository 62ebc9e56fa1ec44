"""OperationOutcome: the one model of every problem report osteohooks gives.

- `DataIssue`: one problem with the input data (what, in which resource, where), as the
  FHIR stage finds it; `data_outcome(issues)` is the OperationOutcome of the data errors
  (the pipeline's `EvaluationResult.outcome`, replay's and the service's `outcome`).
- `OutcomeIssue` / `OperationOutcome`: FHIR R4 OperationOutcome and its issue elements
  (severity, code, details.text, diagnostics, expression), what the service's error
  answers (`cds.api.errors`) and replay's unreadable or failed inputs (`error_outcome`)
  are made of. `to_json()` is the FHIR JSON: absent elements omitted (never null or
  empty), keys in this order: severity, code, details, diagnostics, expression.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "OUTCOME_SEVERITIES",
    "DataIssue",
    "IssueCode",
    "IssueDetails",
    "OperationOutcome",
    "OutcomeIssue",
    "Severity",
    "data_outcome",
    "error_count",
    "error_outcome",
    "is_fatal",
    "issue_sort_key",
]

Severity = Literal["fatal", "error", "warning", "information"]
#: FHIR IssueType codes of data errors (http://hl7.org/fhir/issue-type).
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


class IssueDetails(BaseModel):
    """OperationOutcome.issue.details (a CodeableConcept; only its text is used)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    text: str


class OutcomeIssue(BaseModel):
    """One OperationOutcome.issue element."""

    model_config = ConfigDict(frozen=True, extra="allow")

    severity: Severity
    #: a FHIR IssueType code (http://hl7.org/fhir/issue-type)
    code: str
    details: IssueDetails | None = None
    diagnostics: str | None = None
    #: FHIRPath or request element paths of where the problem is
    expression: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def of(
        cls,
        diagnostics: str,
        *,
        code: str,
        severity: Severity = "error",
        expression: Sequence[str] = (),
    ) -> OutcomeIssue:
        """An issue with a diagnostics text (and the elements, when given)."""
        return cls(
            severity=severity,
            code=code,
            diagnostics=diagnostics,
            expression=list(expression) if expression else None,
        )


class OperationOutcome(BaseModel):
    """A FHIR R4 OperationOutcome."""

    model_config = ConfigDict(frozen=True, extra="allow")

    resourceType: Literal["OperationOutcome"] = "OperationOutcome"
    issue: list[OutcomeIssue] = Field(min_length=1)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def of(cls, issues: Iterable[OutcomeIssue | Mapping[str, Any]]) -> OperationOutcome:
        return cls(issue=[OutcomeIssue.model_validate(i) for i in issues])


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

    def outcome_issue(self) -> OutcomeIssue:
        """This issue as an OperationOutcome.issue."""
        diagnostics = f"{self.resource}: {self.message}" if self.resource else self.message
        return OutcomeIssue(
            severity=self.severity,
            code=self.code,
            details=IssueDetails(text=self.message),
            diagnostics=diagnostics,
            expression=[self.expression] if self.expression else None,
        )

    def to_fhir(self) -> dict[str, Any]:
        """This issue as an OperationOutcome.issue element (JSON)."""
        return self.outcome_issue().to_json()


def issue_sort_key(issue: DataIssue) -> tuple[str, str, str, str]:
    """Deterministic order of issues (resource, element, message)."""
    return (issue.resource or "", issue.expression or "", issue.code, issue.message)


def data_outcome(issues: Iterable[DataIssue]) -> dict[str, Any] | None:
    """The OperationOutcome JSON of the data errors, None when there are none."""
    reported = [i.outcome_issue() for i in issues if i.severity in OUTCOME_SEVERITIES]
    if not reported:
        return None
    return OperationOutcome(issue=reported).to_json()


def error_outcome(
    diagnostics: str,
    *,
    code: str = "processing",
    severity: Severity = "error",
    expression: str | None = None,
) -> dict[str, Any]:
    """One-issue OperationOutcome JSON with an actionable diagnostics text."""
    issue = OutcomeIssue.of(
        diagnostics,
        code=code,
        severity=severity,
        expression=[expression] if expression is not None else (),
    )
    return OperationOutcome(issue=[issue]).to_json()


def _issues(outcome: Mapping[str, Any] | None) -> list[Any]:
    issues = (outcome or {}).get("issue")
    return issues if isinstance(issues, list) else []


def is_fatal(outcome: Mapping[str, Any] | None) -> bool:
    """An OperationOutcome (JSON) with a fatal issue: nothing could be evaluated."""
    if not isinstance(outcome, Mapping):
        return False
    return any(isinstance(i, dict) and i.get("severity") == "fatal" for i in _issues(outcome))


def error_count(outcome: Mapping[str, Any] | None) -> int:
    """Number of `error` or `fatal` issues in an OperationOutcome JSON (0 for None)."""
    return sum(
        1
        for issue in _issues(outcome)
        if isinstance(issue, dict) and issue.get("severity") in ("error", "fatal")
    )
