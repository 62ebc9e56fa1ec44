"""What every resource family of the FHIR read shares: the read context, dates with their
data errors, validation errors as data errors, display texts and trace reasons."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from pydantic import ValidationError

from cds.contracts.outcome import DataIssue
from cds.fhir import issues as di
from cds.fhir import models as m
from cds.fhir.dates import When, parse_when
from cds.fhir.profiles import CodeEntry, Profiles
from cds.fhir.records import PatientData, Scanner

MAX_ISSUES_PER_RESOURCE = 5

#: a Device Reference by its fields (reference, display, identifier): equal keys are equal
#: Reference models, and hashing a str tuple is cheaper than hashing the model
ScannerKey = tuple[str | None, str | None, m.Identifier | None]


@dataclass(slots=True)
class ReadContext:
    """One read of one patient: the profiles, the as-of date, what is read so far, and
    the resources other resources refer to."""

    p: Profiles
    as_of: date
    data: PatientData
    #: Bundle fullUrl -> Type/id
    urls: dict[str, str] = field(default_factory=dict)
    devices: Mapping[str, m.Resource] = field(default_factory=dict)
    medications: Mapping[str, m.Resource] = field(default_factory=dict)
    #: one scanner is referenced by many results: read once
    scanners: dict[ScannerKey, Scanner] = field(default_factory=dict)
    #: Devices referenced but absent (each noted once in the trace)
    missing_devices: set[str] = field(default_factory=set)


def errors_to_issues(exc: ValidationError, rtype: str, ref: str) -> list[DataIssue]:
    """The first validation errors of a resource as data errors."""
    out: list[DataIssue] = []
    for err in exc.errors()[:MAX_ISSUES_PER_RESOURCE]:
        path = rtype
        for p in err["loc"]:
            path += f"[{p}]" if isinstance(p, int) else f".{p}"
        got = err.get("input")
        shown = repr(got)[:60] if not isinstance(got, dict | list) else type(got).__name__
        structure = err["type"] in ("model_type", "list_type")
        out.append(di.invalid_element(ref, path, err["msg"], shown, structure))
    return out


def when(
    text: str | None, expr: str, ref: str, issues: list[DataIssue], required: bool = True
) -> When | None:
    """The date of `text` (at `expr`); a data error (required) or warning when absent or
    unreadable."""
    if text is None:
        if required:
            issues.append(di.date_missing(ref, expr))
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        issues.append(di.date_invalid(ref, expr, exc, required))
        return None


def why(issues: list[DataIssue], ref: str) -> str:
    """The trace reason for a resource not used because of a data error: its last message."""
    for issue in reversed(issues):
        if issue.resource == ref:
            return f"data error: {issue.message}"
    return "data error"


def display(cc: m.CodeableConcept, hit: tuple[CodeEntry, m.Coding] | None) -> str:
    """The resource's own text or display, else the profile's display of the matched code."""
    if cc.text:
        return cc.text
    for c in cc.coding:
        if c.display:
            return c.display
    if hit is not None:
        return f"{hit[0].display} ({hit[1].code})"
    return cc.label()


def status_code(cc: m.CodeableConcept | None) -> str | None:
    """The first code of a status CodeableConcept, else its text in lower case."""
    if cc is None:
        return None
    for c in cc.coding:
        if c.code:
            return c.code
    return cc.text.lower() if cc.text else None
