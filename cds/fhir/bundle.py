"""The input as entries: Bundles (any type, nested) and loose resources flattened, duplicates
removed, references normalised to Type/id, and resources grouped by patient."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from operator import attrgetter
from typing import Any, NamedTuple

from cds.contracts.outcome import DataIssue
from cds.fhir import issues as di
from cds.fhir.trace import Trace

MAX_BUNDLE_DEPTH = 8


class Entry(NamedTuple):
    """One resource of the input (a NamedTuple: made for every resource, see Measurement)."""

    raw: dict[str, Any]
    rtype: str
    ref: str
    full_url: str | None


#: Entry(...) without the NamedTuple's Python-level __new__ (one Entry per resource)
_new_entry = tuple.__new__


def _content_ref(rtype: str, raw: dict[str, Any]) -> str:
    try:
        blob = json.dumps(raw, sort_keys=True, default=str)
    except (TypeError, ValueError):
        blob = repr(raw)
    return f"{rtype}/#{hashlib.sha1(blob.encode(), usedforsecurity=False).hexdigest()[:10]}"


def _ref_of(raw: dict[str, Any], rtype: str) -> str:
    rid = raw.get("id")
    if isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    return _content_ref(rtype, raw)


def flatten(
    items: Iterable[Any],
    issues: list[DataIssue],
    trace: Trace,
    label: str = "input",
    *,
    outcomes: bool = False,
) -> list[Entry]:
    """Flatten Bundles (any type, nested) and loose resources into entries: the one walk
    of FHIR input (the read, the draft orders, `split_by_patient`, `cds replay`).

    What is not a resource is a data error in `issues`, named `label[i]` or by its Bundle
    and entry; nulls and OperationOutcomes ("no data") go to the trace, or, with
    `outcomes`, OperationOutcomes are entries too (for a caller that hands the resources
    on to the read, which then traces them as it would have).
    """
    walk = _Walk([], issues, trace, outcomes)
    for i, item in enumerate(items):
        _visit(item, (label, i), None, 0, walk)
    return walk.out


class _Walk(NamedTuple):
    """Where one `flatten` puts what it finds, and whether OperationOutcomes are entries."""

    out: list[Entry]
    issues: list[DataIssue]
    trace: Trace
    outcomes: bool


def _plain(obj: Any, full_url: str | None) -> Entry | None:
    """The entry of a plain resource (a dict whose resourceType is a text other than
    Bundle and OperationOutcome), the common case, decided first; else None."""
    if type(obj) is dict:
        rtype = obj.get("resourceType")
        if type(rtype) is str and rtype and rtype != "Bundle" and rtype != "OperationOutcome":
            rid = obj.get("id")  # _ref_of(obj, rtype), without the call
            ref = f"{rtype}/{rid}" if isinstance(rid, str) and rid else _content_ref(rtype, obj)
            # Entry(...) without the NamedTuple's Python-level __new__
            return _new_entry(Entry, (obj, rtype, ref, full_url))
    return None


def _visit(
    obj: Any,
    at: tuple[str, int],
    full_url: str | None,
    depth: int,
    walk: _Walk,
) -> None:
    """One input item or Bundle entry resource; `at` (list label, index) names it in data
    errors and the trace as `label[index]`, a text made only for them."""
    plain = _plain(obj, full_url)
    if plain is not None:
        walk.out.append(plain)
        return
    issues, trace = walk.issues, walk.trace
    where = f"{at[0]}[{at[1]}]"
    if obj is None:
        trace.ignore(where, "no data (null)")
        return
    if not isinstance(obj, dict):
        issues.append(di.not_a_resource(where, obj))
        return
    rtype = obj.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        issues.append(di.no_resource_type(where))
        return
    if rtype == "Bundle":
        _visit_bundle(obj, depth, walk)
        return
    ref = _ref_of(obj, rtype)
    if rtype == "OperationOutcome" and not walk.outcomes:
        text = ""
        iss = obj.get("issue")
        if isinstance(iss, list) and iss and isinstance(iss[0], dict):
            diag = iss[0].get("diagnostics")
            if isinstance(diag, str):
                text = f": {diag[:200]}"
        trace.ignore(ref, f"no data (the source sent an OperationOutcome{text})")
        return
    walk.out.append(Entry(obj, rtype, ref, full_url))


def _visit_bundle(bundle: dict[str, Any], depth: int, walk: _Walk) -> None:
    out, issues = walk.out, walk.issues
    if depth >= MAX_BUNDLE_DEPTH:
        issues.append(di.bundle_too_deep(_ref_of(bundle, "Bundle"), MAX_BUNDLE_DEPTH))
        return
    entries = bundle.get("entry")
    if entries is None:
        return
    if not isinstance(entries, list):
        issues.append(di.bundle_entry_not_list(_ref_of(bundle, "Bundle")))
        return
    # The Bundle's own reference names bad entries only; without an id it is a hash of
    # the whole Bundle (~0.1 ms for a prefetch searchset), so it is made when first needed.
    bref: str | None = None
    for i, e in enumerate(entries):
        if type(e) is dict:
            fu = e.get("fullUrl")
            plain = _plain(e.get("resource"), fu if isinstance(fu, str) else None)
            if plain is not None:
                out.append(plain)
                continue
        if bref is None:
            bref = _ref_of(bundle, "Bundle")
        if not isinstance(e, dict):
            issues.append(di.bundle_entry_not_object(bref, i))
            continue
        fu = e.get("fullUrl")
        res = e.get("resource")
        if res is None:
            continue  # e.g. a deleted entry in a history Bundle
        url = fu if isinstance(fu, str) else None
        _visit(res, (f"{bref} entry", i), url, depth + 1, walk)


_entry_ref = attrgetter("ref")


def dedupe(entries: list[Entry], trace: Trace) -> list[Entry]:
    """One entry per Type/id; when copies differ, keep the latest (meta.lastUpdated, then
    content), so input order never matters."""
    if len({e.ref for e in entries}) == len(entries):
        # no duplicates (the common case): every group below has one entry
        return sorted(entries, key=_entry_ref)
    by_ref: dict[str, list[Entry]] = {}
    for e in entries:
        by_ref.setdefault(e.ref, []).append(e)
    out: list[Entry] = []
    for ref in sorted(by_ref):
        group = by_ref[ref]
        if len(group) == 1:
            out.append(group[0])
            continue

        def key(e: Entry) -> tuple[str, str]:
            meta = e.raw.get("meta")
            lu = meta.get("lastUpdated") if isinstance(meta, dict) else None
            try:
                blob = json.dumps(e.raw, sort_keys=True, default=str)
            except (TypeError, ValueError):
                blob = repr(e.raw)
            return (lu if isinstance(lu, str) else "", blob)

        group.sort(key=key)
        out.append(group[-1])
        for _ in group[:-1]:
            trace.ignore(ref, "duplicate of a later copy of the same resource")
    return out


def ref_target(reference: str, urls: dict[str, str]) -> str | None:
    """Normalise a reference to Type/id (relative, absolute URL, or a Bundle fullUrl)."""
    if reference in urls:
        return urls[reference]
    if reference.startswith(("urn:", "#")):
        return None
    parts = [p for p in reference.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return None


def subject_of(raw: dict[str, Any]) -> Any:
    for key in ("subject", "patient"):
        val = raw.get(key)
        if isinstance(val, dict):
            return val.get("reference")
    return None


def patient_of(raw: dict[str, Any]) -> str | None:
    """The id of the Patient a resource belongs to by its `subject`/`patient` reference
    (relative or absolute), or None (no such reference, or it names no Patient)."""
    target = subject_of(raw)
    norm = ref_target(target, {}) if isinstance(target, str) else None
    return norm.split("/", 1)[1] if norm and norm.startswith("Patient/") else None


def url_map(entries: list[Entry]) -> dict[str, str]:
    return {e.full_url: e.ref for e in entries if e.full_url}


class PatientGroups(NamedTuple):
    """`split_by_patient`'s answer: the resources of each patient, by patient id, and the
    data errors of the input's entries that are no resource (they belong to no patient:
    a caller reports them with every group, as `cds replay` does)."""

    groups: dict[str, list[dict[str, Any]]]
    issues: list[DataIssue]


def split_by_patient(resources: Iterable[Any]) -> PatientGroups:
    """Group resources by the patient they belong to (via subject/patient references).

    Each Patient goes to its own group; resources referring to a patient go to that
    patient's group (also when the Patient itself is absent, so that evaluating the group
    reports it); resources without a patient reference (Device, Medication, ...) go to
    every group. Bundles are flattened (`flatten`: what is no resource is a data error in
    `issues`); nulls and OperationOutcomes are dropped.

    The Bundle's ``fullUrl``s do not travel with the groups, so references that only a
    fullUrl resolves (``urn:uuid:...``) in ``subject``, ``patient``, ``device`` and
    ``medicationReference`` are rewritten to ``Type/id`` in shallow copies (the input is
    never modified): each group is self-contained.
    """
    issues: list[DataIssue] = []
    entries = flatten(resources, issues, Trace())
    return PatientGroups(group_by_patient(entries), issues)


def group_by_patient(entries: list[Entry]) -> dict[str, list[dict[str, Any]]]:
    """`split_by_patient`'s groups of entries already flattened (OperationOutcomes, entries
    only when flattened with `outcomes=True`, are no data: left out)."""
    entries = [e for e in entries if e.rtype != "OperationOutcome"]
    urls = url_map(entries)
    groups: dict[str, list[dict[str, Any]]] = {}
    shared: list[dict[str, Any]] = []
    for e in entries:
        raw = _resolve_urls(e.raw, urls) if urls else e.raw
        if e.rtype == "Patient":
            groups.setdefault(e.ref.split("/", 1)[1], []).append(raw)
            continue
        target = subject_of(raw)
        if isinstance(target, str):
            norm = ref_target(target, urls)
            if norm and norm.startswith("Patient/"):
                groups.setdefault(norm.split("/", 1)[1], []).append(raw)
                continue
        shared.append(raw)
    for pid in groups:
        groups[pid].extend(shared)
    return dict(sorted(groups.items()))


_REFERENCE_KEYS = ("subject", "patient", "device", "medicationReference")


def _resolve_urls(raw: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
    """A shallow copy of raw with fullUrl-only references rewritten to Type/id."""
    out = raw
    for key in _REFERENCE_KEYS:
        ref = raw.get(key)
        if isinstance(ref, dict):
            target = ref.get("reference")
            if isinstance(target, str) and target in urls:
                if out is raw:
                    out = dict(raw)
                out[key] = {**ref, "reference": urls[target]}
    return out
