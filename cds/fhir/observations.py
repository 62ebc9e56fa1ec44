"""Observations: DXA results (T, Z, BMD by site, TBS), labs (ALP, eGFR, height), results of
orderable laboratory tests (CS-6.1), and menopausal status."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from cds.contracts.outcome import DataIssue
from cds.fhir import issues as di
from cds.fhir import models as m
from cds.fhir.common import ReadContext, when, why
from cds.fhir.dates import When
from cds.fhir.profiles import TBS_KIND, ObsCode, ObsKind, _norm
from cds.fhir.records import Measurement, Scanner
from cds.fhir.scanners import scanner
from cds.fhir.structure import check

OBS_USED = {"final": False, "amended": False, "corrected": False, "preliminary": True}
OBS_IGNORED = {"registered", "cancelled", "entered-in-error", "unknown"}

_RANGE_KEY = {"ALP": "alkaline_phosphatase", "HEIGHT": "height", "EGFR": "egfr"}
_WHAT = {
    "T": "T-score",
    "Z": "Z-score",
    "BMD": "BMD",
    "TBS": "TBS",
    "ALP": "alkaline phosphatase",
    "HEIGHT": "body height",
    "EGFR": "eGFR",
}
_ORDINAL = {"first": "L1", "second": "L2", "third": "L3", "fourth": "L4"}
_SINGLE = re.compile(
    r"^\s*L\s*([1-4])\s*$|\b(first|second|third|fourth) lumbar vertebra", re.IGNORECASE
)
_RANGE = re.compile(r"\bL\s*([1-5])\s*(?:-|–|to)\s*L?\s*([1-5])\b", re.IGNORECASE)
_NOT_NUMERIC = ("valueString", "valueCodeableConcept", "valueBoolean")
_new_measurement = tuple.__new__


def read_observation(ctx: ReadContext, raw: dict[str, Any], obs: m.Observation, ref: str) -> None:
    """One Observation: a result, a result's components, menopausal status, or a lab
    result of an orderable test; anything else is traced as ignored."""
    status = obs.get("status")
    preliminary = OBS_USED.get(status) if status is not None else None
    if preliminary is None:
        _status_unused(ctx, status, ref)
        return
    trace = ctx.data.trace
    code = obs.get("code")
    kind, lab_key = lookup(ctx, code)
    lab = _lab_result(ctx, obs, ref, lab_key) if lab_key is not None else None
    if kind is None:
        meno = menopause(ctx, code) or menopause(ctx, obs.get("valueCodeableConcept"))
        if meno is not None:
            at = when(obs_date(obs), "Observation.effective[x]", ref, [], False)
            ctx.data.menopause.append((meno, ref, at))
            trace.use(ref, f"menopausal status: {meno}")
        elif obs.get("component"):
            _components(ctx, obs, ref, preliminary)
        elif lab is not None:
            trace.use(ref, lab)
        else:
            label = m.label(code) if code is not None else "no code"
            trace.ignore(ref, f"unknown code ({label})")
        return
    _result(ctx, raw, obs, ref, kind, preliminary)


def _status_unused(ctx: ReadContext, status: str | None, ref: str) -> None:
    """An Observation not used for its status: traced, a data error unless the status
    says it is not a result (entered-in-error, cancelled, ...)."""
    trace = ctx.data.trace
    if status is None:
        ctx.data.issues.append(di.status_missing(ref))
        trace.ignore(ref, "no status")
    elif status in OBS_IGNORED:
        trace.ignore(ref, f"status {status}")
    else:
        ctx.data.issues.append(di.status_invalid(ref, status))
        trace.ignore(ref, f"unknown status {status}")


def _dated(ctx: ReadContext, obs: m.Observation, ref: str) -> When | None:
    """The result's date; None (traced) when it has none or it is after the as-of date."""
    at = obs_when(obs, ref, ctx.data.issues)
    if at is None:
        ctx.data.trace.ignore(ref, why(ctx.data.issues, ref))
        return None
    if at.date > ctx.as_of:
        ctx.data.trace.ignore(ref, f"dated {at.date} after the as-of date {ctx.as_of}")
        return None
    return at


def _components(ctx: ReadContext, obs: m.Observation, ref: str, preliminary: bool) -> None:
    """A panel: each component with a recognised code is a result."""
    data, trace = ctx.data, ctx.data.trace
    at = _dated(ctx, obs, ref)
    if at is None:
        return
    made = 0
    device = scanner(ctx, obs.get("device"))
    for i, comp in enumerate(obs.get("component", ())):
        ckind = lookup(ctx, comp["code"])[0]
        if ckind is None:
            continue
        where = f"Observation.component[{i}]"
        mm = measure(ctx, ckind, comp, where, ref, at, preliminary, None, device)
        if mm is not None:
            data.measurements.append(mm)
            trace.use(ref, f"component[{i}]: {describe(mm)}")
            made += 1
    if not made:
        code = obs.get("code")
        trace.ignore(ref, f"no recognised component ({m.label(code) if code is not None else ''})")


def _result(
    ctx: ReadContext,
    raw: dict[str, Any],
    obs: m.Observation,
    ref: str,
    kind: ObsKind,
    preliminary: bool,
) -> None:
    """One result: its profile check (lumbar BMD/score, TBS), date, value and scanner."""
    data, trace = ctx.data, ctx.data.trace
    profile = ctx.p.kind_profiles.get(kind)
    if profile is not None:
        found = check(profile, raw, ref)
        if found:
            data.issues.extend(found)
            trace.ignore(ref, f"does not conform to profile {profile.id}: {found[0].message}")
            return
    at = _dated(ctx, obs, ref)
    if at is None:
        return
    if at.partial:
        trace.assumptions.append(f"{ref}: partial date {at.text} read as {at.date}")
    device = scanner(ctx, obs.get("device")) if kind[0] in ("dxa", "tbs") else None
    site = obs.get("bodySite")
    mm = measure(ctx, kind, obs, "Observation", ref, at, preliminary, site, device)
    if mm is None:
        trace.ignore(ref, why(data.issues, ref))
        return
    data.measurements.append(mm)
    trace.use(ref, describe(mm) + (" (preliminary)" if preliminary else ""))


def describe(mm: Measurement) -> str:
    """A result in the trace: `lumbar-spine L2 T -2.1 on 2026-10-05`."""
    where = mm.site or mm.kind
    if mm.vertebra:
        where += f" {mm.vertebra}"
    if mm.side:
        where += f" ({mm.side})"
    # !s: str() is what format(x, "") gives for a finite Decimal, without its __format__
    # (which parses the empty format spec); the date's text is made once per date
    return f"{where} {mm.score} {mm.value!s} on {mm.when.day}"


def obs_date(obs: m.Observation) -> str | None:
    """The text of the Observation's effective[x] date."""
    text = obs.get("effectiveDateTime")
    if text is not None:
        return text
    period = obs.get("effectivePeriod")
    if period is not None:
        start = period.get("start")
        if start is not None:
            return start
    return obs.get("effectiveInstant")


def obs_when(obs: m.Observation, ref: str, issues: list[DataIssue]) -> When | None:
    """`when` of obs_date(obs), naming the element it comes from."""
    text = obs.get("effectiveDateTime")
    if text is not None:
        return when(text, "Observation.effectiveDateTime", ref, issues)
    period = obs.get("effectivePeriod")
    start = period.get("start") if period is not None else None
    if start is not None:
        return when(start, "Observation.effectivePeriod.start", ref, issues)
    text = obs.get("effectiveInstant")
    if text is not None:
        return when(text, "Observation.effectiveInstant", ref, issues)
    return when(None, "Observation.effective[x]", ref, issues)


def menopause(ctx: ReadContext, cc: m.CodeableConcept | None) -> str | None:
    """ "postmenopausal" or "premenopausal" by the profile code lists, else None."""
    if cc is None:
        return None
    if ctx.p.postmenopausal.match(cc) is not None:
        return "postmenopausal"
    if ctx.p.premenopausal.match(cc) is not None:
        return "premenopausal"
    return None


def _lab_result(ctx: ReadContext, obs: m.Observation, ref: str, key: str) -> str | None:
    """CS-6.1 rev 2: the date of a laboratory test a card may order (`key`, by its order
    code in fhir_profiles/order-codes.json); the trace words, None when it has no usable
    date up to the as-of date."""
    at = when(obs_date(obs), "Observation.effective[x]", ref, [], False)
    if at is None or at.date > ctx.as_of:
        return None
    ctx.data.lab_results.append((key, at.date, ref))
    return f"result of {key} on {at.date} (CS-6.1: not ordered again while recent)"


def lookup(ctx: ReadContext, cc: m.CodeableConcept | None) -> ObsCode:
    """(kind, laboratory order key) of an Observation code: each the first coding's that
    has one; the kind by the profile's text patterns when no coding has one."""
    if cc is None:
        return None, None
    kind: ObsKind | None = None
    lab: str | None = None
    index = ctx.p.obs_codes
    for c in cc.get("coding", ()):
        hit = index.get((c.get("system") or "", c.get("code") or ""))
        if hit is not None:
            kind = kind or hit[0]
            lab = lab or hit[1]
            if kind is not None and lab is not None:
                break
    if kind is None:
        kind = _by_text(ctx, cc)
    return kind, lab


def _by_text(ctx: ReadContext, cc: m.CodeableConcept) -> ObsKind | None:
    words = m.words(cc)
    if words:
        for pattern in ctx.p.tbs_text:
            if pattern in words:
                return TBS_KIND
        for needles, score in ctx.p.femoral_neck_text:
            if all(n in words for n in needles):
                return ("dxa", "femoral-neck", score, None)
    return None


def vertebra(ctx: ReadContext, site: m.CodeableConcept | None) -> tuple[str | None, int | None]:
    """The vertebra of a lumbar result (L1-L4) and the number of vertebrae it covers."""
    if site is None:
        return None, None
    codings = site.get("coding", ())
    for c in codings:
        v = ctx.p.vertebrae.get(_norm(c.get("system"), c.get("code")))
        if v is not None:
            return v, 1
    chunks = [site.get("text") or ""] + [c.get("display") or "" for c in codings]
    for chunk in chunks:
        mt = _RANGE.search(chunk)
        if mt:
            a, b = int(mt.group(1)), int(mt.group(2))
            return None, abs(b - a) + 1
    for chunk in chunks:
        ms = _SINGLE.search(chunk)
        if ms:
            return (f"L{ms.group(1)}" if ms.group(1) else _ORDINAL[ms.group(2).lower()]), 1
    return None, None


def measure(
    ctx: ReadContext,
    kind: ObsKind,
    holder: m.Observation | m.ObservationComponent,
    prefix: str,
    ref: str,
    at: When,
    preliminary: bool,
    body_site: m.CodeableConcept | None,
    device: Scanner | None,
) -> Measurement | None:
    """The result of `holder` (an Observation or a component, at `prefix`), its value
    normalised; None (with a data error) when it cannot be used."""
    kname, site, score, side = kind
    got = _value(holder, prefix, ref, _WHAT[score], ctx.data.issues)
    if got is None:
        return None
    value, unit = got
    factor = ctx.p.unit_factors[score].get(unit)
    if factor is None:
        _unit_rejected(ctx, holder, prefix, ref, score, unit)
        return None
    try:
        norm = value * factor
    except InvalidOperation:
        return None
    lo, hi = ctx.p.ranges[_RANGE_KEY.get(score, score)]
    if not (lo <= norm <= hi):
        q = holder.get("valueQuantity")
        vexpr = f"{prefix}.valueQuantity.value" if q is not None else f"{prefix}.valueInteger"
        ctx.data.issues.append(di.value_implausible(ref, vexpr, _WHAT[score], value, lo, hi))
        return None
    vert, count = (None, None)
    if kname == "dxa" and site == "lumbar-spine":
        vert, count = vertebra(ctx, body_site)
    # Measurement(ref=ref, kind=kname, ...) in field order, without the NamedTuple's
    # Python-level __new__ (one Measurement per result)
    return _new_measurement(
        Measurement,
        (ref, kname, site, score, side, vert, count, norm, at, preliminary, device),
    )


def _value(
    holder: m.Observation | m.ObservationComponent,
    prefix: str,
    ref: str,
    what: str,
    issues: list[DataIssue],
) -> tuple[Decimal, str] | None:
    """(value, unit) of valueQuantity or valueInteger; None with a data error otherwise.
    The element paths of the messages are only formatted for a message."""
    q = holder.get("valueQuantity")
    if q is not None:
        value = q.get("value")
        if value is None:
            issues.append(di.value_missing(ref, f"{prefix}.valueQuantity.value", what))
            return None
        comparator = q.get("comparator")
        if comparator is not None:
            expr = f"{prefix}.valueQuantity.comparator"
            issues.append(di.value_inexact(ref, expr, what, comparator))
            return None
        code = q.get("code")
        return value, (code if code is not None else q.get("unit") or "").strip()
    integer = holder.get("valueInteger")
    if integer is not None:
        return Decimal(integer), ""
    other = next((name for name in _NOT_NUMERIC if holder.get(name) is not None), None)
    if other is not None:
        got = holder.get(other)  # valueCodeableConcept is the one element object
        text = m.concept_text(cast(m.CodeableConcept, got)) if isinstance(got, dict) else str(got)
        shown = text[:40]
        issues.append(di.value_not_numeric(ref, f"{prefix}.{other}", what, other, shown))
    else:
        issues.append(di.value_missing(ref, f"{prefix}.value[x]", what))
    return None


def _unit_rejected(
    ctx: ReadContext,
    holder: m.Observation | m.ObservationComponent,
    prefix: str,
    ref: str,
    score: str,
    unit: str,
) -> None:
    """The data error of a unit not accepted for the score, naming the accepted ones."""
    q = holder.get("valueQuantity")
    if q is None:
        uexpr = f"{prefix}.valueInteger"
    elif q.get("code") is not None:
        uexpr = f"{prefix}.valueQuantity.code"
    else:
        uexpr = f"{prefix}.valueQuantity.unit"
    factors = ctx.p.unit_factors[score]
    allowed = ", ".join(sorted(u or "no unit" for u in factors))
    ctx.data.issues.append(di.unit_not_accepted(ref, uexpr, _WHAT[score], unit, allowed))
