"""Every non-2xx answer is a FHIR OperationOutcome; this module builds them.

Status codes (docs/ehr-integration.md lists them for integrators):
400 malformed JSON or request shape, 401 authentication, 404 unknown service or path,
405 wrong method, 412 required data neither prefetched nor fetchable, 413 body too large,
422 FHIR data so unusable that nothing can be evaluated, 500 internal failure, 503 the store
cannot take the write now (with Retry-After; feedback is idempotent, so send it again).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from cds.contracts.outcome import OperationOutcome, OutcomeIssue, Severity

# FHIR IssueType codes used here (http://hl7.org/fhir/issue-type).
STATUS_ISSUE_CODE: dict[int, str] = {
    400: "structure",
    401: "login",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-costly",
    422: "invalid",
    500: "exception",
    503: "transient",
}

FHIR_JSON = "application/fhir+json"


def issue(
    diagnostics: str,
    *,
    code: str,
    severity: Severity = "error",
    expression: Sequence[str] = (),
) -> OutcomeIssue:
    """One OperationOutcome.issue; absent fields omitted (never null or empty)."""
    return OutcomeIssue.of(diagnostics, code=code, severity=severity, expression=expression)


class ApiError(Exception):
    """An error answer: HTTP status plus the OperationOutcome issues explaining it."""

    def __init__(
        self,
        status: int,
        diagnostics: str,
        *,
        expression: Sequence[str] = (),
        issues: Sequence[OutcomeIssue] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        code = STATUS_ISSUE_CODE.get(status, "processing")
        self.issues: list[OutcomeIssue] = (
            list(issues) if issues else [issue(diagnostics, code=code, expression=expression)]
        )
        self.headers = dict(headers or {})

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable: a worker process for big bodies (`cds.api.offload`) raises it too."""
        return (_api_error, (self.status, str(self), self.issues, self.headers))

    def response(self) -> Response:
        return outcome_response(self.status, self.issues, headers=self.headers)

    def expressions(self) -> list[str]:
        """The elements the issues name (for the log: where, never what)."""
        return [e for i in self.issues for e in i.expression or []]


def _api_error(
    status: int, diagnostics: str, issues: list[OutcomeIssue], headers: dict[str, str]
) -> ApiError:
    return ApiError(status, diagnostics, issues=issues, headers=headers)


def outcome_response(
    status: int,
    issues: Iterable[OutcomeIssue | Mapping[str, Any]],
    *,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An OperationOutcome answer (issues as models, or as JSON, e.g. the pipeline's)."""
    outcome = OperationOutcome.of(issues).to_json()
    body = json.dumps(outcome, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type=FHIR_JSON, headers=dict(headers or {}))


def error_response(status: int, diagnostics: str, *, expression: Sequence[str] = ()) -> Response:
    return ApiError(status, diagnostics, expression=expression).response()


UNAUTHORIZED_DIAGNOSTICS = (
    "Authentication failed. Every call needs 'Authorization: Bearer <JWT>' signed (ES384, "
    "RS384, ES256, RS256 or PS256/384/512) by a trusted issuer, with aud equal to the URL "
    "called, a future exp, a past iat and a fresh jti (CDS Hooks 2.0.1, Trusting CDS Clients). "
    "The reason is not disclosed; the service operator can see it in the service log."
)


def unauthorized() -> ApiError:
    """The one 401 answer: identical for every failed check, so it leaks nothing."""
    return ApiError(401, UNAUTHORIZED_DIAGNOSTICS, headers={"WWW-Authenticate": "Bearer"})


def _location(loc: Sequence[int | str], prefix: str) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before", "function-wrap", "function-plain"):
            continue
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "(body)"


def validation_issues(exc: ValidationError, prefix: str = "") -> list[OutcomeIssue]:
    """Pydantic errors as OperationOutcome issues: element path and what to send instead."""
    issues: list[OutcomeIssue] = []
    for err in exc.errors(include_url=False, include_input=False):
        where = _location([p for p in err["loc"] if not _is_union_tag(p)], prefix)
        message = str(err["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        issues.append(issue(f"{where}: {message}", code="structure", expression=[where]))
    return issues


def _is_union_tag(part: int | str) -> bool:
    # pydantic puts the member type name of a union in loc (e.g. 'str', 'list[...]')
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "dict", "list"))
