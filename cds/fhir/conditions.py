"""Conditions and Procedures: fractures (history), myocardial infarction or stroke,
menopausal status, hyperparathyroidism, hypophosphatasia, advanced CKD, structural
findings, vertebral augmentation and contrast studies."""

from __future__ import annotations

from typing import Literal

from cds.fhir import models as m
from cds.fhir.common import ReadContext, display, status_code, when
from cds.fhir.dates import When
from cds.fhir.profiles import ICD10CM, CodeEntry, Hits
from cds.fhir.records import ContrastRecord, FindingRecord, FractureRecord

COND_ACTIVE = {"active", "recurrence", "relapse"}
VERIFICATION_EXCLUDED = {"entered-in-error", "refuted"}
VERIFICATION_UNCONFIRMED = {"unconfirmed", "provisional", "differential"}
PROC_USED = {"completed", "in-progress"}

FractureKind = Literal["hip", "vertebral", "other", "self-reported-vertebral"]


def read_condition(ctx: ReadContext, cond: m.Condition, ref: str) -> None:
    """One Condition: history (fractures, infarction or stroke: resolved ones count too),
    then, when active and confirmed, the conditions the rules read."""
    trace = ctx.data.trace
    ver = status_code(cond.get("verificationStatus"))
    if ver in VERIFICATION_EXCLUDED:
        trace.ignore(ref, f"verificationStatus {ver}")
        return
    unconfirmed = ver in VERIFICATION_UNCONFIRMED
    clin = status_code(cond.get("clinicalStatus"))
    cc = cond.get("code")
    if cc is None:
        trace.ignore(ref, "no code")
        return
    hits = ctx.p.code_index.hits(cc)
    label = display(cc, next(iter(hits.values()), None))
    at = _onset(ctx, cond, ref)
    used = _history(ctx, ref, hits, label, at, unconfirmed)
    if clin not in COND_ACTIVE:
        reason = f"clinicalStatus {clin}" if clin else "no clinicalStatus (not known to be active)"
        if used:
            trace.use(ref, "; ".join(used) + f" (history; {reason})")
        else:
            trace.ignore(ref, f"{reason} ({label})")
        return
    if unconfirmed:
        if used:
            trace.use(ref, "; ".join(used))
        else:
            trace.ignore(ref, f"verificationStatus {ver} ({label})")
        return
    not_hpp = _active(ctx, cc, ref, hits, label, at, used)
    if used:
        trace.use(ref, "; ".join(used if not_hpp is None else [*used, not_hpp]))
    else:
        trace.ignore(ref, not_hpp or f"unknown code ({label})")


def _onset(ctx: ReadContext, cond: m.Condition, ref: str) -> When | None:
    """The onset date, else the recorded date (a warning when unreadable)."""
    onset_at = cond.get("onsetDateTime")
    period = cond.get("onsetPeriod")
    onset = onset_at or (period.get("start") if period is not None else None)
    if onset is not None:
        expr = "Condition.onsetDateTime" if onset_at is not None else "Condition.onsetPeriod.start"
        return when(onset, expr, ref, ctx.data.issues, False)
    recorded = cond.get("recordedDate")
    if recorded is not None:
        return when(recorded, "Condition.recordedDate", ref, ctx.data.issues, False)
    return None


def _history(
    ctx: ReadContext, ref: str, hits: Hits, label: str, at: When | None, unconfirmed: bool
) -> list[str]:
    """Fractures and infarctions or strokes (whatever the clinical status); the trace words."""
    data = ctx.data
    used: list[str] = []
    frac = fracture(hits, unconfirmed)
    if frac is not None:
        kind, _entry, coding = frac
        code = coding.get("code") or ""
        injury = (coding.get("system") or "") == ICD10CM and code.upper().startswith(
            ctx.p.fracture_injury_prefixes
        )
        data.fractures.append(
            FractureRecord(ref=ref, kind=kind, code=code, display=label, when=at, injury=injury)
        )
        used.append(
            f"{kind} fracture"
            if kind != "self-reported-vertebral"
            else "self-reported vertebral fracture"
        )
    if "cv" in hits and not unconfirmed:
        # an infarction or stroke is history too: resolved ones count (CS-6.4 rev 2)
        data.cv_events.append((ref, at))
        used.append("myocardial infarction or stroke")
    return used


def _active(
    ctx: ReadContext,
    cc: m.CodeableConcept,
    ref: str,
    hits: Hits,
    label: str,
    at: When | None,
    used: list[str],
) -> str | None:
    """The conditions read only when active and confirmed (their trace words go to
    `used`); the reason a code is not counted as hypophosphatasia, if so (CS-3.6)."""
    data = ctx.data
    meno = "postmenopausal" if "post" in hits else "premenopausal" if "pre" in hits else None
    if meno is not None:
        data.menopause.append((meno, ref, at))
        used.append(f"menopausal status: {meno}")
    if "hpt" in hits:
        data.hyperparathyroidism.append(ref)
        used.append("primary hyperparathyroidism")
    if "hpp" in hits or (
        "hpp-if-named" in hits and any(t in m.words(cc) for t in ctx.p.hypophosphatasia_text)
    ):
        data.hypophosphatasia.append(ref)
        used.append("hypophosphatasia")
    not_hpp = None
    if "hpp-if-named" in hits and "hypophosphatasia" not in used:
        hpp_code = hits["hpp-if-named"][1].get("code")
        not_hpp = (
            f"not counted as hypophosphatasia: {hpp_code} ({label}) does not name it, and "
            f"{hpp_code} also codes other disorders such as hypophosphatemia (CS-3.6)"
        )
    if "ckd" in hits:
        data.advanced_ckd.append(ref)
        used.append("CKD stage 4-5 or dialysis (CS-9.1)")
    for sf, key in ctx.p.code_index.structural:
        hit = hits.get(key)
        if hit is not None:
            data.findings.append(
                FindingRecord(ref=ref, finding=sf.finding, display=display(cc, hit))
            )
            used.append(f"structural finding {sf.finding}")
    return not_hpp


def fracture(hits: Hits, unconfirmed: bool) -> tuple[FractureKind, CodeEntry, m.Coding] | None:
    """The fracture a Condition's codes name (an unconfirmed vertebral one is
    self-reported; other unconfirmed ones do not count)."""
    hit = hits.get("fx-self")
    if hit is not None:
        return ("self-reported-vertebral", hit[0], hit[1])
    hit = hits.get("fx-vertebral")
    if hit is not None:
        return ("self-reported-vertebral" if unconfirmed else "vertebral", hit[0], hit[1])
    if unconfirmed:
        return None
    hit = hits.get("fx-hip")
    if hit is not None:
        return ("hip", hit[0], hit[1])
    hit = hits.get("fx-other")
    if hit is not None:
        return ("other", hit[0], hit[1])
    return None


def read_procedure(ctx: ReadContext, proc: m.Procedure, ref: str) -> None:
    """One Procedure: structural findings, vertebral augmentation, contrast studies."""
    trace = ctx.data.trace
    status = proc.get("status")
    if status not in PROC_USED:
        trace.ignore(ref, f"status {status}")
        return
    cc = proc.get("code")
    if cc is None:
        trace.ignore(ref, "no code")
        return
    words = m.words(cc)
    used: list[str] = []
    hits = ctx.p.code_index.hits(cc)
    label = display(cc, next(iter(hits.values()), None))
    for sf, key in ctx.p.code_index.structural:
        hit = hits.get(key)
        if hit is not None or any(t in words for t in sf.text_patterns):
            ctx.data.findings.append(
                FindingRecord(ref=ref, finding=sf.finding, display=display(cc, hit))
            )
            used.append(f"structural finding {sf.finding}")
    _augmentation(ctx, proc, cc, ref, hits, words, used)
    chit = hits.get("contrast")
    if chit is not None or any(t in words for t in ctx.p.contrast_text):
        label = display(cc, chit)
        if not _contrast(ctx, proc, ref, label, used):
            return
    if used:
        trace.use(ref, "; ".join(used))
    else:
        trace.ignore(ref, f"unknown code ({label})")


def _performed(proc: m.Procedure) -> str | None:
    period = proc.get("performedPeriod")
    return proc.get("performedDateTime") or (period.get("start") if period is not None else None)


def _augmentation(
    ctx: ReadContext,
    proc: m.Procedure,
    cc: m.CodeableConcept,
    ref: str,
    hits: Hits,
    words: str,
    used: list[str],
) -> None:
    """Vertebral augmentation treats a vertebral fracture (CS-1.10 rev 2)."""
    ahit = hits.get("fx-augmentation")
    if ahit is None and not any(t in words for t in ctx.p.fracture_augmentation_text):
        return
    performed_at = _performed(proc)
    at = (
        when(performed_at, "Procedure.performed[x]", ref, ctx.data.issues, False)
        if performed_at is not None
        else None
    )
    ctx.data.fractures.append(
        FractureRecord(
            ref=ref,
            kind="vertebral",
            code=(ahit[1].get("code") or "") if ahit is not None else "",
            display=display(cc, ahit),
            when=at,
            augmentation=True,
        )
    )
    used.append("vertebral fracture (vertebral augmentation)")


def _contrast(ctx: ReadContext, proc: m.Procedure, ref: str, label: str, used: list[str]) -> bool:
    """A contrast study (its date is needed); False: the Procedure is dated after the
    as-of date and ignored (traced)."""
    expr = (
        "Procedure.performedDateTime"
        if proc.get("performedDateTime") is not None
        else "Procedure.performed[x]"
    )
    at = when(_performed(proc), expr, ref, ctx.data.issues)
    if at is None:
        return True
    if at.date > ctx.as_of:
        ctx.data.trace.ignore(ref, f"dated {at.date} after the as-of date {ctx.as_of}")
        return False
    ctx.data.contrast.append(ContrastRecord(ref=ref, display=label, when=at))
    used.append(f"contrast study on {at.date}")
    return True
