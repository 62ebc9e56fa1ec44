"""FHIR OperationOutcome JSON for inputs that could not be replayed."""

from __future__ import annotations

from typing import Any


def operation_outcome(
    diagnostics: str,
    *,
    code: str = "processing",
    severity: str = "error",
    expression: str | None = None,
) -> dict[str, Any]:
    """One-issue OperationOutcome (FHIR R4 JSON) with an actionable diagnostics text."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression is not None:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def error_count(outcome: dict[str, Any] | None) -> int:
    """Number of `error` or `fatal` issues in an OperationOutcome (0 for None)."""
    if not outcome:
        return 0
    issues = outcome.get("issue")
    if not isinstance(issues, list):
        return 0
    return sum(
        1
        for issue in issues
        if isinstance(issue, dict) and issue.get("severity") in ("error", "fatal")
    )
