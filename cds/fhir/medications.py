"""MedicationStatement, MedicationRequest and MedicationAdministration: bone-active
medications and glucocorticoids (with their prednisone-equivalent dose, CS-1.8), and
drugs that harm bone (CS-6.8)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import cast

from cds.contracts.outcome import DataIssue
from cds.fhir import issues as di
from cds.fhir import models as m
from cds.fhir.bundle import ref_target
from cds.fhir.common import ReadContext, when, why
from cds.fhir.dates import When
from cds.fhir.profiles import ATC, RXNORM, HarmingDrug, Ingredient, Profiles
from cds.fhir.records import HarmingRecord, MedRecord

MS_USED = {"active", "completed", "stopped", "on-hold"}
MR_USED = {"active", "completed", "stopped", "on-hold"}
MR_ORDER_INTENTS = {"order", "original-order", "reflex-order", "filler-order", "instance-order"}
MA_USED = {"completed", "in-progress"}

MedResource = m.MedicationStatement | m.MedicationRequest | m.MedicationAdministration
#: (element path, dose, timing) of each dose a record gives
Dosage = tuple[str, m.Quantity | None, m.Timing | None]
_PERIOD_DAYS = {"d": Decimal(1), "h": Decimal(1) / 24, "wk": Decimal(7), "mo": Decimal("30.4375")}
_SOURCE = {"MedicationStatement": "statement", "MedicationRequest": "request"}


@dataclass(slots=True)
class _Course:
    """When a record says the medication was taken, and its doses, routes and texts."""

    start: When | None = None
    end: When | None = None
    dose_date: When | None = None
    ongoing: bool = False
    dosages: list[Dosage] = field(default_factory=list)
    routes: list[m.CodeableConcept] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def read_medication(ctx: ReadContext, res: MedResource, ref: str) -> None:
    """One medication record: a bone-active medication or glucocorticoid (MedRecord), a
    drug that harms bone (HarmingRecord), or ignored (traced)."""
    trace = ctx.data.trace
    cc, extra, form = _medication_code(ctx, res)
    ing = recognise(ctx.p, cc, extra)
    label = (m.label(cc) if cc is not None else "") or extra or "no medication code"
    harm = harming(ctx.p, cc, extra) if ing is None else None
    if ing is None and harm is None:
        trace.ignore(ref, f"not a bone-active, glucocorticoid or bone-harming medication ({label})")
        return
    status = res.get("status") or ""
    rtype = res["resourceType"]
    if rtype == "MedicationStatement":
        course = _statement(ctx, cast(m.MedicationStatement, res), ref, label, status)
    elif rtype == "MedicationRequest":
        course = _request(ctx, cast(m.MedicationRequest, res), ref, label, status)
    else:
        course = _administration(ctx, cast(m.MedicationAdministration, res), ref, label, status)
    if course is None:
        return
    start = course.start
    if start is not None and start.date > ctx.as_of:
        trace.ignore(ref, f"starts {start.date} after the as-of date {ctx.as_of}")
        return
    if ing is None:
        assert harm is not None
        ctx.data.harming.append(
            HarmingRecord(
                ref=ref,
                drug=harm,
                start=start.date if start else None,
                ongoing=course.ongoing,
                label=label,
            )
        )
        trace.use(ref, f"{harm.ingredient} ({harm.class_display}, harms bone: CS-6.8)")
        return
    words = " | ".join(
        [m.words(cc) if cc is not None else "", extra.lower()]
        + [t.lower() for t in course.texts]
        + [m.words(r) for r in course.routes]
        + [m.words(form) if form is not None else ""]
    )
    _bone_med(ctx, rtype, ref, ing, status, label, words, course)


def _medication_code(
    ctx: ReadContext, res: MedResource
) -> tuple[m.CodeableConcept | None, str, m.CodeableConcept | None]:
    """(code, display of the Medication reference, form): the record's own code, else
    the code and form of the Medication it refers to."""
    cc = res.get("medicationCodeableConcept")
    extra = ""
    form: m.CodeableConcept | None = None
    mr = res.get("medicationReference")
    if cc is None and mr is not None:
        extra = mr.get("display") or ""
        reference = mr.get("reference")
        if reference:
            target = ref_target(reference, ctx.urls)
            med = ctx.medications.get(target or "")
            code = med.get("code") if med is not None else None
            if med is not None and code is not None:
                cc = code
                form = med.get("form")
    return cc, extra, form


def _statement(
    ctx: ReadContext, res: m.MedicationStatement, ref: str, label: str, status: str
) -> _Course | None:
    if status not in MS_USED:
        ctx.data.trace.ignore(ref, f"status {status or 'missing'} ({label})")
        return None
    issues = ctx.data.issues
    course = _Course()
    period = res.get("effectivePeriod")
    if period is not None:
        expr = "MedicationStatement.effectivePeriod"
        course.start = when(period.get("start"), f"{expr}.start", ref, issues, False)
        course.end = when(period.get("end"), f"{expr}.end", ref, issues, False)
    effective = res.get("effectiveDateTime")
    if course.start is None and effective is not None:
        expr = "MedicationStatement.effectiveDateTime"
        course.start = when(effective, expr, ref, issues, False)
    end = course.end
    course.ongoing = status == "active" and (end is None or end.date >= ctx.as_of)
    if status in ("completed", "stopped") and end is None and effective:
        course.end = course.start
    _doses(course, "MedicationStatement.dosage", res.get("dosage", ()))
    return course


def _request(
    ctx: ReadContext, res: m.MedicationRequest, ref: str, label: str, status: str
) -> _Course | None:
    trace = ctx.data.trace
    if status not in MR_USED:
        trace.ignore(ref, f"status {status or 'missing'} ({label})")
        return None
    intent = res.get("intent")
    if intent is not None and intent not in MR_ORDER_INTENTS:
        trace.ignore(ref, f"intent {intent}: not an order ({label})")
        return None
    course = _Course(ongoing=status == "active")
    expr = "MedicationRequest.authoredOn"
    course.start = when(res.get("authoredOn"), expr, ref, ctx.data.issues, False)
    _doses(course, "MedicationRequest.dosageInstruction", res.get("dosageInstruction", ()))
    return course


def _route_and_text(course: _Course, dosage: m.Dosage | m.AdministrationDosage) -> None:
    """A dosage's route and text, kept for the systemic check (CS-1.8)."""
    route = dosage.get("route")
    if route is not None:
        course.routes.append(route)
    text = dosage.get("text")
    if text:
        course.texts.append(text)


def _doses(course: _Course, path: str, dosage: Iterable[m.Dosage]) -> None:
    for i, d in enumerate(dosage):
        _route_and_text(course, d)
        for j, dr in enumerate(d.get("doseAndRate", ())):
            expr = f"{path}[{i}].doseAndRate[{j}].doseQuantity"
            course.dosages.append((expr, dr.get("doseQuantity"), d.get("timing")))


def _administration(
    ctx: ReadContext, res: m.MedicationAdministration, ref: str, label: str, status: str
) -> _Course | None:
    trace, issues = ctx.data.trace, ctx.data.issues
    if status not in MA_USED:
        trace.ignore(ref, f"status {status or 'missing'} ({label})")
        return None
    period = res.get("effectivePeriod")
    text = res.get("effectiveDateTime") or (period.get("start") if period is not None else None)
    dose_date = when(text, "MedicationAdministration.effective[x]", ref, issues)
    if dose_date is None:
        trace.ignore(ref, why(issues, ref))
        return None
    course = _Course(start=dose_date, dose_date=dose_date)
    dosage = res.get("dosage")
    if dosage is not None:
        course.dosages.append(("MedicationAdministration.dosage.dose", dosage.get("dose"), None))
        _route_and_text(course, dosage)
    return course


def _bone_med(
    ctx: ReadContext,
    rtype: str,
    ref: str,
    ing: Ingredient,
    status: str,
    label: str,
    words: str,
    course: _Course,
) -> None:
    """A bone-active medication or systemic glucocorticoid record (CS-1.8)."""
    trace = ctx.data.trace
    if ing.med_class == "glucocorticoid":
        reason = not_systemic(ctx.p, course.routes, words)
        if reason is not None:
            trace.ignore(
                ref,
                f"{ing.ingredient}: not systemic ({reason}); only oral, intravenous or "
                "intramuscular glucocorticoids count (CS-1.8)",
            )
            return
    onco = oncology(ctx.p, ing, words, course.dosages)
    mg_day = None
    if ing.med_class == "glucocorticoid" and course.dosages:
        mg_day = mg_per_day(ctx.p, ing, course.dosages, ref, ctx.data.issues)
    start, end, dose_date = course.start, course.end, course.dose_date
    ctx.data.meds.append(
        MedRecord(
            ref=ref,
            ingredient=ing,
            med_class=ing.med_class,
            source=_SOURCE.get(rtype, "administration"),  # type: ignore[arg-type]
            status=status,
            start=start.date if start else None,
            end=end.date if end else None,
            ongoing=course.ongoing,
            dose_date=dose_date.date if dose_date else None,
            mg_day=mg_day,
            label=label,
            oncology=onco,
        )
    )
    what = f"{ing.ingredient} ({ing.med_class})"
    if onco:
        what += (
            ", oncology regimen: not osteoporosis therapy for CS-7 and CS-9.2-9.4; "
            "CS-9.1 still applies (CS-1.8)"
        )
    if mg_day is not None:
        what += f", {mg_day} mg/day prednisone-equivalent"
    trace.use(ref, what)


def recognise(p: Profiles, cc: m.CodeableConcept | None, extra: str) -> Ingredient | None:
    """The bone-active or glucocorticoid ingredient, by RxNorm or ATC code, else by name."""
    if cc is not None:
        for c in cc.get("coding", ()):
            code = c.get("code")
            if not code:
                continue
            system = c.get("system")
            if system == RXNORM and code in p.rxnorm:
                return p.rxnorm[code]
            if system == ATC and code.upper() in p.atc:
                return p.atc[code.upper()]
    words = ((m.words(cc) if cc is not None else "") + " | " + extra.lower()).strip()
    for name, ing in p.med_names:
        if name in words:
            return ing
    return None


def harming(p: Profiles, cc: m.CodeableConcept | None, extra: str) -> HarmingDrug | None:
    """A drug that harms bone (CS-6.8), by ATC code or by name."""
    if cc is not None:
        for c in cc.get("coding", ()):
            code = c.get("code")
            if code and c.get("system") == p.harming_atc_system:
                hit = p.harming_atc.get(code.upper())
                if hit is not None:
                    return hit
    words = (m.words(cc) if cc is not None else "") + " | " + extra.lower()
    for name, drug in p.harming_names:
        if name in words:
            return drug
    return None


def not_systemic(p: Profiles, routes: list[m.CodeableConcept], words: str) -> str | None:
    """Why a glucocorticoid record is not systemic (CS-1.8 rev 2), None when it is."""
    for route in routes:
        for c in route.get("coding", ()):
            if c.get("system") == p.systemic_route_system and (
                c.get("code") in p.systemic_route_codes
            ):
                return None
    hit = p.non_systemic_words.search(words)
    if hit is None:
        return None
    return f"it says {hit.group(0)!r}"


def oncology(p: Profiles, ing: Ingredient, words: str, dosages: list[Dosage]) -> bool:
    """Denosumab 120 mg (Xgeva) or zoledronic acid 4 mg (CS-1.8 rev 2)."""
    dose = p.oncology_doses_mg.get(ing.ingredient)
    if dose is None:
        return False
    if any(v == ing.ingredient and n in words for n, v in p.oncology_names.items()):
        return True
    for _, q, _ in dosages:
        if q is None:
            continue
        unit = (q.get("code") or q.get("unit") or "").strip()
        value = q.get("value")
        if value is not None and unit == "mg" and value == dose:
            return True
    return re.search(rf"\b{re.escape(str(dose))}\s*mg\b", words) is not None


def mg_per_day(
    p: Profiles, ing: Ingredient, dosages: list[Dosage], ref: str, issues: list[DataIssue]
) -> Decimal | None:
    """The prednisone-equivalent mg per day of a glucocorticoid record's doses; None when
    it has none or one cannot be read (a warning)."""
    total = Decimal(0)
    found = False
    factor = ing.prednisone_factor or Decimal(1)
    for expr, q, timing in dosages:
        value = q.get("value") if q is not None else None
        if q is None or value is None:
            continue
        code = q.get("code")
        unit = (code if code is not None else q.get("unit") or "").strip()
        uf = p.dose_units.get(unit)
        if uf is None:
            where = f"{expr}.unit" if code is None else f"{expr}.code"
            issues.append(di.dose_unit_unknown(ref, where, unit))
            return None
        per_day = _per_day(timing)
        if per_day is None:
            where = f"{expr.rsplit('.doseAndRate', 1)[0]}.timing.repeat"
            issues.append(di.dose_timing_unreadable(ref, where))
            return None
        total += value * uf * per_day * factor
        found = True
    if not found or total < 0:
        return None
    return total.quantize(Decimal("0.01"))


def _per_day(timing: m.Timing | None) -> Decimal | None:
    """Doses per day of a timing (1 without a repeat); None when not a daily frequency."""
    rep = timing.get("repeat") if timing is not None else None
    if rep is None:
        return Decimal(1)
    frequency, period = rep.get("frequency"), rep.get("period")
    freq = Decimal(frequency) if frequency is not None else Decimal(1)
    if period is None:
        period = Decimal(1)
    days = _PERIOD_DAYS.get(rep.get("periodUnit") or "d")
    if days is None or period <= 0 or freq < 0:
        return None
    return freq / (period * days)
