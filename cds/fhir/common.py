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

#: a Device Reference by its fields (reference, display, identifier system and value):
#: equal keys are equal References
ScannerKey = tuple[str | None, str | None, tuple[str | None, str | None] | None]


@dataclass(slots=True)
class ReadContext:
    """One read of one patient: the profiles, the as-of date, what is read so far, and
    the resources other resources refer to."""

    p: Profiles
    as_of: date
    data: PatientData
    #: Bundle fullUrl -> Type/id
    urls: dict[str, str] = field(default_factory=dict)
    devices: Mapping[str, m.Device] = field(default_factory=dict)
    medications: Mapping[str, m.Medication] = field(default_factory=dict)
    #: one scanner is referenced by many results: read once
    scanners: dict[ScannerKey, Scanner] = field(default_factory=dict)
    #: Devices referenced but absent (each noted once in the trace)
    missing_devices: set[str] = field(default_factory=set)


def errors_to_issues(exc: ValidationError, rtype: str, ref: str) -> list[DataIssue]:
    """The first validation errors of a resource as data errors.

    An element object that is not a JSON object is named by its model, as the message
    of a BaseModel's error did ("... or instance of Coding"; the TypedDict's says only
    "Input should be a valid dictionary"); the full models' errors (validation="full")
    keep their own message."""
    out: list[DataIssue] = []
    for err in exc.errors()[:MAX_ISSUES_PER_RESOURCE]:
        loc = err["loc"]
        path = rtype
        for p in loc:
            path += f"[{p}]" if isinstance(p, int) else f".{p}"
        got = err.get("input")
        shown = repr(got)[:60] if not isinstance(got, dict | list) else type(got).__name__
        kind, msg = err["type"], err["msg"]
        if kind == "dict_type":
            model = m.model_at(rtype, loc)
            if model is not None:
                kind, msg = "model_type", f"{msg} or instance of {model}"
        structure = kind in ("model_type", "list_type")
        out.append(di.invalid_element(ref, path, msg, shown, structure))
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
    text = cc.get("text")
    if text:
        return text
    for c in cc.get("coding", ()):
        shown = c.get("display")
        if shown:
            return shown
    if hit is not None:
        return f"{hit[0].display} ({hit[1].get('code')})"
    return m.label(cc)


def status_code(cc: m.CodeableConcept | None) -> str | None:
    """The first code of a status CodeableConcept, else its text in lower case."""
    if cc is None:
        return None
    for c in cc.get("coding", ()):
        code = c.get("code")
        if code:
            return code
    text = cc.get("text")
    return text.lower() if text else None
