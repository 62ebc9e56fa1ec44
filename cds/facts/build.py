"""FHIR input -> facts: ``build_facts`` (see docs/fhir-inputs.md).

All cross-fact arithmetic lives here (durable_rules joins are unsafe, so every relation the
rules need is precomputed into a single fact). Numbers: values are kept as reported
(Decimal from the JSON text); differences, gaps and percentages are computed with Decimal
and never rounded (CS-1.11), so boundaries written in rules (-1.0, 1.0, an LSC of 5.3)
compare with the exact value; cards round for display only (the ``against`` filter).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from cds.contracts.facts import (
    Assessment,
    ContrastStudy,
    DraftOrder,
    Fact,
    StructuralFindingFact,
    VertebraAnalysis,
    fact_type_name,
)
from cds.contracts.outcome import DataIssue, data_outcome
from cds.fhir.dates import add_months, fractional_months, whole_months
from cds.fhir.profiles import Profiles, load_profiles
from cds.fhir.read import Reader
from cds.fhir.records import (
    FractureRecord,
    Measurement,
    MedRecord,
    PatientData,
    Scanner,
    Validation,
)
from cds.fhir.trace import Trace

#: Rule parameters read here (defined in rules/*.yaml), with the clinical-spec statement.


def _months_from(day: date, months: int) -> date:
    """`add_months`, saturating at the ends of the calendar: a date recorded near year 9999
    (or 1) is a data oddity, never a crash; past the end it is 'never' (date.max)."""
    try:
        return add_months(day, months)
    except ValueError:
        return date.max if months > 0 else date.min


def _days_from(day: date, days: int) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


REQUIRED_PARAMS: dict[str, str] = {
    "lsc_lumbar_spine_percent": "CS-4.2",
    "lsc_total_hip_percent": "CS-4.2",
    "lsc_femoral_neck_percent": "CS-4.2",
    "vertebral_discordance_t": "CS-3.1",
    "menopause_assumption_age": "CS-1.6",
    "nhanes_lumbar_mean_bmd": "CS-3.8",
    "nhanes_lumbar_sd": "CS-3.8",
    "dxa_min_interval_months": "CS-8.2",
    "recent_fracture_months": "CS-6.4",
    # clin-therapy, revision 2
    "denosumab_overdue_months": "CS-9.1",
    "egfr_window_months": "CS-9.1",
    "possible_hpp_bisphosphonate_months": "CS-3.6",
    "possible_hpp_denosumab_months": "CS-3.6",
    "holiday_after_months": "CS-9.2",
    "holiday_reassess_from_months": "CS-9.4",
    "holiday_reassess_to_months": "CS-9.4",
    "ppi_long_term_months": "CS-6.8",
    "lab_recent_months": "CS-6.1",
    # clin-followup, revision 2
    "fragility_injury_min_age": "CS-1.10",
    "normal_t": "CS-2.7",
    "osteoporosis_t": "CS-2.7",
    "t_score_men_min_age": "CS-2.7",
    "romosozumab_cv_event_months": "CS-6.4",
    "current_exam_window_days": "CS-2.5",
}

ONE = Decimal("0.1")
TWO = Decimal("0.01")
THREE = Decimal("0.001")
AXIAL = ("lumbar-spine", "total-hip", "femoral-neck", "femur")
SITE_ORDER = {"lumbar-spine": 0, "total-hip": 1, "femoral-neck": 2, "forearm": 3}
#: Sites that set the category (CS-2.5 rev 2: the 1/3 radius too); femur is listed only.
DIAGNOSTIC = ("lumbar-spine", "total-hip", "femoral-neck", "forearm")
#: Gap (days) bridged when merging therapy records of one class into a continuous run.
RUN_GRACE_DAYS = 92


_validate_assessment = Assessment.__pydantic_validator__.validate_python
_validate_draft_order = DraftOrder.__pydantic_validator__.validate_python


class ParameterError(ValueError):
    """Rule parameters that build_facts needs are missing or not numbers."""


@dataclass
class FactSet:
    """The facts of one evaluation, the data errors, and the trace."""

    facts: list[Fact] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    trace: Trace = field(default_factory=Trace)

    def outcome(self) -> dict[str, Any] | None:
        """OperationOutcome JSON of the data errors, None when there are none."""
        return data_outcome(self.issues)


@dataclass(frozen=True)
class Params:
    lsc_lumbar: Decimal
    lsc_hip: Decimal
    lsc_neck: Decimal
    discordance: Decimal
    menopause_age: int
    nhanes_mean: Decimal
    nhanes_sd: Decimal
    dxa_interval: int
    recent_fracture: int
    denosumab_overdue: int
    egfr_window: int
    hpp_bisphosphonate: int
    hpp_denosumab: int
    holiday_after: int
    holiday_from: int
    holiday_to: int
    ppi_long_term: int
    lab_recent: int
    injury_min_age: int
    normal_t: Decimal
    osteoporosis_t: Decimal
    men_t_age: int
    cv_event_months: int
    exam_window_days: int
    min_vertebrae: int = 2


def read_params(params: Mapping[str, Any]) -> Params:
    """Read the parameters by name; ParameterError names every missing or bad one."""
    missing = [n for n in REQUIRED_PARAMS if n not in params]
    if missing:
        raise ParameterError(
            "rule parameters missing for cds.facts: "
            + ", ".join(f"{n} ({REQUIRED_PARAMS[n]})" for n in missing)
            + "; define them under `parameters:` in rules/*.yaml"
        )
    out: dict[str, Decimal] = {}
    for name in REQUIRED_PARAMS:
        v = params[name]
        try:
            if isinstance(v, bool):
                raise InvalidOperation
            out[name] = Decimal(str(v))
        except InvalidOperation:
            raise ParameterError(f"rule parameter {name} must be a number, got {v!r}") from None
        if not out[name].is_finite():
            raise ParameterError(f"rule parameter {name} must be finite, got {v!r}")
    min_vertebrae = 2  # CS-2.6; rules/artifacts.yaml may set min_evaluable_vertebrae
    if "min_evaluable_vertebrae" in params:
        try:
            raw = params["min_evaluable_vertebrae"]
            if isinstance(raw, bool):
                raise InvalidOperation
            min_vertebrae = int(Decimal(str(raw)))
        except (InvalidOperation, ValueError):
            raise ParameterError(
                f"rule parameter min_evaluable_vertebrae must be a number, got {raw!r}"
            ) from None
    if out["nhanes_lumbar_sd"] <= 0:
        raise ParameterError("rule parameter nhanes_lumbar_sd must be > 0")
    return Params(
        lsc_lumbar=out["lsc_lumbar_spine_percent"],
        lsc_hip=out["lsc_total_hip_percent"],
        lsc_neck=out["lsc_femoral_neck_percent"],
        discordance=out["vertebral_discordance_t"],
        menopause_age=int(out["menopause_assumption_age"]),
        nhanes_mean=out["nhanes_lumbar_mean_bmd"],
        nhanes_sd=out["nhanes_lumbar_sd"],
        dxa_interval=int(out["dxa_min_interval_months"]),
        recent_fracture=int(out["recent_fracture_months"]),
        denosumab_overdue=int(out["denosumab_overdue_months"]),
        egfr_window=int(out["egfr_window_months"]),
        hpp_bisphosphonate=int(out["possible_hpp_bisphosphonate_months"]),
        hpp_denosumab=int(out["possible_hpp_denosumab_months"]),
        holiday_after=int(out["holiday_after_months"]),
        holiday_from=int(out["holiday_reassess_from_months"]),
        holiday_to=int(out["holiday_reassess_to_months"]),
        ppi_long_term=int(out["ppi_long_term_months"]),
        lab_recent=int(out["lab_recent_months"]),
        injury_min_age=int(out["fragility_injury_min_age"]),
        normal_t=out["normal_t"],
        osteoporosis_t=out["osteoporosis_t"],
        men_t_age=int(out["t_score_men_min_age"]),
        cv_event_months=int(out["romosozumab_cv_event_months"]),
        exam_window_days=int(out["current_exam_window_days"]),
        min_vertebrae=min_vertebrae,
    )


def round_half_up(value: Decimal, step: Decimal) -> Decimal:
    return value.quantize(step, rounding=ROUND_HALF_UP)


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _scanner_words(scanner: Scanner | None) -> str:
    """A scanner in card words (CS-1.4): never a raw reference."""
    if scanner is None or not scanner.label:
        return "scanner not identified"
    return scanner.label


def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


def build_facts(
    resources: Iterable[Any],
    params: Params | Mapping[str, Any],
    as_of: date,
    patient_id: str | None = None,
    draft_orders: Any = (),
    *,
    profiles: Profiles | None = None,
    validation: Validation = "fast",
) -> FactSet:
    """Map raw FHIR JSON to facts. Never raises on bad data (only on bad parameters or
    profile files): unusable resources become issues and the rest is used.

    `params`: the rule set's parameters, or `read_params` of them (an Evaluator reads them
    once, at load)."""
    p = params if isinstance(params, Params) else read_params(params)
    prof = profiles or load_profiles()
    data = Reader(prof, as_of, validation).read(resources, patient_id, draft_orders)
    return _Builder(data, p, as_of, prof).build()


# ------------------------------------------------------------------------------------ build


@dataclass
class _Run:
    start: date
    end: date
    refs: list[str]


class _Builder:
    def __init__(self, data: PatientData, p: Params, as_of: date, prof: Profiles) -> None:
        self.d = data
        self.p = p
        self.as_of = as_of
        self.classes = prof.med_classes
        self.order_codes = prof.order_codes
        # whole-site results (no vertebra) by (kind, site, score)
        self._groups: dict[tuple[str, str | None, str], list[Measurement]] = {}
        for mm in data.measurements:
            if mm.vertebra is None:
                self._groups.setdefault((mm.kind, mm.site, mm.score), []).append(mm)
        self.fs = FactSet(issues=data.issues, trace=data.trace)
        self._bone_meds: list[MedRecord] | None = None

    def add(self, fact: Fact, sources: Iterable[str]) -> None:
        self.fs.facts.append(fact)
        self.fs.trace.fact(fact.id, fact_type_name(fact), sorted(set(sources)))

    def build(self) -> FactSet:
        d = self.d
        if d.patient_ref is None or d.birth_date is None:
            if d.patient_ref is not None:
                self.fs.issues.append(
                    DataIssue(
                        severity="fatal",
                        code="required",
                        resource=d.patient_ref,
                        expression="Patient.birthDate",
                        message="no usable birth date: age is needed for every rule; no facts made",
                    )
                )
            return self.fs
        age = (
            self.as_of.year
            - d.birth_date.year
            - ((self.as_of.month, self.as_of.day) < (d.birth_date.month, d.birth_date.day))
        )
        if age < 0:
            self.fs.issues.append(
                DataIssue(
                    severity="fatal",
                    code="value",
                    resource=d.patient_ref,
                    expression="Patient.birthDate",
                    message=f"birth date {d.birth_date} is after the as-of date {self.as_of}; "
                    "no facts made",
                )
            )
            return self.fs
        a: dict[str, Any] = {
            "id": f"assessment:{d.patient_ref.split('/', 1)[1]}",
            "age": age,
            "as_of": self.as_of.isoformat(),
        }
        sources: set[str] = {d.patient_ref}
        self._demographics(a, age, sources)
        va = self._vertebrae(sources)
        self._dxa(a, va, sources)
        self._therapy(a, sources)
        self._conditions(a, sources)
        self._therapy_rev2(a, sources)
        self._change(a, sources)
        # Assessment(**a) without the keyword round trip of 50-odd fields (the same
        # validator and result; ~4 us less)
        assessment: Assessment = _validate_assessment(a)
        self.add(assessment, sources)
        if va is not None:
            self.add(va[0], va[1])
        self._structural()
        self._contrast(assessment)
        self._drafts(assessment)
        return self.fs

    # -- demographics (CS-1.5, CS-1.6)

    def _demographics(self, a: dict[str, Any], age: int, sources: set[str]) -> None:
        d = self.d
        sex = d.gender if d.gender in ("female", "male", "other", "unknown") else "unknown"
        a["sex"] = sex
        recorded = sorted(
            d.menopause,
            key=lambda r: (r[2].instant.isoformat() if r[2] else "", r[1], r[0]),
        )
        if sex == "male":
            a["menopausal_status"] = "not-applicable"
            a["menopausal_assumed"] = False
            for _, ref, _ in recorded:
                self.fs.trace.ignore(ref, "menopausal status recorded for a male patient")
            return
        if recorded:
            status, ref, _ = recorded[-1]
            a["menopausal_status"] = status
            a["menopausal_assumed"] = False
            sources.add(ref)
            return
        if sex == "female":
            assumed = "postmenopausal" if age >= self.p.menopause_age else "premenopausal"
            a["menopausal_status"] = assumed
            a["menopausal_assumed"] = True
            self.fs.trace.assumptions.append(
                f"menopausal status {assumed}: assumed from age {age} (no recorded status; "
                f"CS-1.6 age {self.p.menopause_age})"
            )
            return
        a["menopausal_status"] = "unknown"
        a["menopausal_assumed"] = False

    # -- per-vertebra analysis (CS-3.1, CS-3.2)

    def _vertebrae(self, sources: set[str]) -> tuple[VertebraAnalysis, list[str]] | None:
        per = [
            mm
            for mm in self.d.measurements
            if mm.kind == "dxa" and mm.site == "lumbar-spine" and mm.score == "T" and mm.vertebra
        ]
        if not per:
            return None
        scan = max(mm.when.date for mm in per)
        chosen: dict[str, Measurement] = {}
        for mm in sorted(per, key=lambda x: (x.value, x.ref)):
            if mm.when.date == scan and mm.vertebra and mm.vertebra not in chosen:
                chosen[mm.vertebra] = mm
        values = {v: chosen[v].value for v in sorted(chosen)}
        levels = sorted(values)
        max_diff = Decimal(0)
        for x, y in itertools.pairwise(levels):
            if int(y[1]) - int(x[1]) == 1:
                max_diff = max(max_diff, abs(values[x] - values[y]))
        remaining = list(levels)
        excluded: list[str] = []
        while len(remaining) >= 2:
            pairs = [
                (x, y)
                for x, y in itertools.pairwise(remaining)
                if abs(values[x] - values[y]) > self.p.discordance
            ]
            if not pairs:
                break
            candidates = {v for pair in pairs for v in pair}

            def deviation(v: str, rest: list[str]) -> tuple[Decimal, Decimal, int]:
                others = sorted(values[o] for o in rest if o != v)
                n = len(others)
                med = others[n // 2] if n % 2 else (others[n // 2 - 1] + others[n // 2]) / 2
                # largest deviation first; ties: the higher T (artifacts raise BMD); then level
                return (abs(values[v] - med), values[v], -int(v[1]))

            worst = max(candidates, key=lambda v: deviation(v, remaining))
            excluded.append(worst)
            remaining.remove(worst)
        refs = [chosen[v].ref for v in levels]
        sources.update(refs)
        fact = VertebraAnalysis(
            id=f"vertebra_analysis:{scan.isoformat()}",
            scan_date=scan.isoformat(),
            vertebrae_present=len(levels),
            evaluable_vertebrae=len(remaining),
            max_adjacent_diff=float(max_diff),
            discordant_vertebra=excluded[0] if excluded else None,
            values=", ".join(f"{v} {values[v]}" for v in levels),
        )
        return fact, refs

    # -- DXA values (CS-1.7, CS-2.5, CS-2.6, CS-3.8, CS-5)

    def _latest(
        self, site: str, score: str, kind: str = "dxa"
    ) -> tuple[Measurement | None, list[Measurement]]:
        cands = self._groups.get((kind, site, score), [])
        if not cands:
            return None, []
        last = max(mm.when.date for mm in cands)
        best = min((mm for mm in cands if mm.when.date == last), key=lambda x: (x.value, x.ref))
        return best, cands

    def _vertebra_count(
        self, mm: Measurement, va: tuple[VertebraAnalysis, list[str]] | None
    ) -> int:
        if mm.vertebra_count is not None:
            return mm.vertebra_count
        if va is not None and va[0].scan_date == mm.when.date.isoformat():
            return va[0].evaluable_vertebrae
        return 4

    def _dxa(
        self,
        a: dict[str, Any],
        va: tuple[VertebraAnalysis, list[str]] | None,
        sources: set[str],
    ) -> None:
        every = [
            mm
            for mm in self.d.measurements
            if mm.kind == "dxa" and (mm.site in AXIAL or mm.site == "forearm")
        ]
        dxa = [mm for mm in every if mm.site in AXIAL]
        a["has_dxa"] = bool(every)  # CS-2.5 rev 2: a forearm-only exam is a DXA on record
        # any DXA result, forearm included (CS-2.5, CS-10.1 rev 2); has_dxa is the same
        a["dxa_on_record"] = bool(every)
        tbs = self._latest_tbs()
        if tbs is not None:
            a["tbs"] = float(tbs.value)
            a["tbs_date"] = tbs.when.date.isoformat()
            a["preliminary"] = tbs.preliminary
            sources.add(tbs.ref)
        if not every:
            return
        if dxa:  # the last axial DXA (CS-8.2): a forearm-only exam is not one
            last = max(dxa, key=lambda mm: (mm.when.instant, mm.ref))
            a["last_dxa_date"] = a["last_axial_dxa_date"] = last.when.date.isoformat()
            a["months_since_last_dxa"] = a["months_since_last_axial_dxa"] = whole_months(
                last.when.date, self.as_of
            )
        else:
            last = max(every, key=lambda mm: (mm.when.instant, mm.ref))
        a["scanner"] = last.scanner.label if last.scanner else None
        # CS-2.5 rev 2: only the current exam (results within the window of the most
        # recent DXA date) sets the category; older site results are history.
        exam = max(mm.when.date for mm in every)

        def current(mm: Measurement) -> bool:
            return (exam - mm.when.date).days <= self.p.exam_window_days

        used: list[Measurement] = []

        lt, _ = self._latest("lumbar-spine", "T")
        lumbar_usable = False
        if lt is not None:
            used.append(lt)
            count = self._vertebra_count(lt, va)
            a["lumbar_t"] = float(lt.value)
            a["lumbar_t_date"] = lt.when.date.isoformat()
            a["lumbar_vertebrae"] = count
            lumbar_usable = count >= self.p.min_vertebrae
            if not lumbar_usable:
                self.fs.trace.assumptions.append(
                    f"lumbar T-score {lt.value} rests on {count} vertebra: not used for the "
                    "category or monitoring (CS-2.6)"
                )
        lz, _ = self._latest("lumbar-spine", "Z")
        if lz is not None:
            used.append(lz)
            a["lumbar_z"] = float(lz.value)
        lb, _ = self._latest("lumbar-spine", "BMD")
        if lb is not None:
            used.append(lb)
            a["lumbar_bmd"] = float(lb.value)

        lumbar_latest = [mm for mm in (lt, lz, lb) if mm is not None]
        if lumbar_latest:
            newest = max(lumbar_latest, key=lambda mm: (mm.when.instant, mm.ref))
            a["manufacturer"] = newest.scanner.manufacturer if newest.scanner else "unknown"

        hip_t, _ = self._latest("total-hip", "T")
        neck_t, _ = self._latest("femoral-neck", "T")
        if hip_t is not None:
            used.append(hip_t)
            a["total_hip_t"] = float(hip_t.value)
        if neck_t is not None:
            used.append(neck_t)
            a["femoral_neck_t"] = float(neck_t.value)
        forearm_t, _ = self._latest("forearm", "T")
        if forearm_t is not None:
            used.append(forearm_t)
            a["forearm_t"] = float(forearm_t.value)
            a["forearm_t_date"] = forearm_t.when.date.isoformat()
        hips = [
            (m_.value, SITE_ORDER[str(m_.site)], m_)
            for m_ in (hip_t, neck_t)
            if m_ is not None and current(m_)
        ]
        lowest_hip: Measurement | None = None
        if hips:
            lowest_hip = min(hips, key=lambda h: (h[0], h[1]))[2]
            a["lowest_hip_t"] = float(lowest_hip.value)
            a["lowest_hip_site"] = lowest_hip.site
        ts = list(hips)
        if lt is not None and lumbar_usable and current(lt):
            ts.append((lt.value, 0, lt))
        if forearm_t is not None and current(forearm_t):
            ts.append((forearm_t.value, SITE_ORDER["forearm"], forearm_t))
        shown = [(lt, "lumbar spine"), (hip_t, "total hip"), (neck_t, "femoral neck")]
        shown.append((forearm_t, "forearm (1/3 radius)"))
        words = {
            True: [f"{n} T {m_.value} ({m_.when.date})" for m_, n in shown if m_ and current(m_)],
            False: [
                f"{n} T {m_.value} ({m_.when.date})" for m_, n in shown if m_ and not current(m_)
            ],
        }
        if words[True]:
            a["sites_used"] = "; ".join(words[True])
        if words[False]:
            a["sites_history"] = "; ".join(words[False])
        if ts:
            low = min(ts, key=lambda h: (h[0], h[1]))[2]
            a["lowest_t"] = float(low.value)
            a["lowest_t_site"] = low.site
        hip_z, _ = self._latest("total-hip", "Z")
        neck_z, _ = self._latest("femoral-neck", "Z")
        zs = [
            (m_.value, SITE_ORDER[str(m_.site)], m_)
            for m_ in (hip_z, neck_z)
            if m_ is not None and current(m_)
        ]
        used += [m_ for m_ in (hip_z, neck_z) if m_ is not None]
        if lz is not None and current(lz) and self._vertebra_count(lz, va) >= self.p.min_vertebrae:
            zs.append((lz.value, 0, lz))
        if zs:
            low = min(zs, key=lambda h: (h[0], h[1]))[2]
            a["lowest_z"] = float(low.value)
            a["lowest_z_site"] = low.site
        if lt is not None and lumbar_usable and current(lt) and lowest_hip is not None:
            a["spine_hip_gap"] = float(lt.value - lowest_hip.value)

        # NHANES 2005-2014 recomputation (CS-3.8)
        if lb is not None and self._vertebra_count(lb, va) >= self.p.min_vertebrae:
            mf = lb.scanner.manufacturer if lb.scanner else "unknown"
            if mf in ("hologic", "unknown"):
                t = (lb.value - self.p.nhanes_mean) / self.p.nhanes_sd
                a["nhanes_lumbar_t"] = float(t)
                if mf == "unknown":
                    a["manufacturer_assumed"] = True
                    self.fs.trace.assumptions.append(
                        f"scanner manufacturer of {lb.ref} unknown: treated as Hologic for the "
                        "NHANES recomputation (CS-3.8)"
                    )

        if tbs is not None:
            used.append(tbs)
        a["preliminary"] = any(mm.preliminary for mm in used)
        sources.update(mm.ref for mm in used)
        sources.update(mm.ref for mm in every)

    def _latest_tbs(self) -> Measurement | None:
        cands = [mm for mm in self.d.measurements if mm.kind == "tbs"]
        if not cands:
            return None
        last = max(mm.when.date for mm in cands)
        same = sorted((mm for mm in cands if mm.when.date == last), key=lambda x: (x.value, x.ref))
        return same[0]

    # -- change between scans (CS-4)

    def _change(self, a: dict[str, Any], sources: set[str]) -> None:
        lumbar = self._site_change("lumbar-spine", self.p.lsc_lumbar, sources)
        if lumbar is not None:
            a.update({f"change_{k}": v for k, v in lumbar.items() if k != "therapy_between"})
            a["therapy_between_scans"] = lumbar["therapy_between"]
        hip = self._site_change("total-hip", self.p.lsc_hip, sources)
        if hip is not None:
            a.update({f"hip_change_{k}": v for k, v in hip.items() if k != "therapy_between"})
            a["hip_therapy_between_scans"] = hip["therapy_between"]
        losses = [c for c in (lumbar, hip) if c is not None and c.get("direction") == "loss"]
        # CS-4.5: "significant loss" (CS-4.4, 7.2, 8.2) holds when either site's loss is
        a["significant_loss_any_site"] = bool(losses)
        a["significant_loss_on_therapy"] = any(c["therapy_between"] for c in losses)

    def _site_change(self, site: str, lsc: Decimal, sources: set[str]) -> dict[str, Any] | None:
        """BMD change at one site (CS-4.1, CS-4.5): the most recent scan against the most
        recent earlier scan on the same identified scanner (and, at the hip, the same
        side); scans on other scanners in between are skipped and named."""
        _, cands = self._latest(site, "BMD")
        by_date: dict[date, Measurement] = {}
        for mm in sorted(cands, key=lambda x: (x.value, x.ref)):
            if mm.vertebra_count is not None and mm.vertebra_count < self.p.min_vertebrae:
                continue
            by_date.setdefault(mm.when.date, mm)
        scans = [by_date[k] for k in sorted(by_date)]
        if len(scans) < 2:
            return None
        new = scans[-1]
        sn = new.scanner
        old: Measurement | None = None
        skipped: list[Measurement] = []
        if sn is not None and sn.identity is not None:
            for mm in reversed(scans[:-1]):
                same = mm.scanner is not None and mm.scanner.identity == sn.identity
                if same and mm.side == new.side:
                    old = mm
                    break
                skipped.append(mm)
        shown = old if old is not None else scans[-2]
        sources.update((shown.ref, new.ref))
        out: dict[str, Any] = {
            "available": True,
            "old_date": shown.when.date.isoformat(),
            "new_date": new.when.date.isoformat(),
            "old_bmd": float(shown.value),
            "new_bmd": float(new.value),
            "lsc": float(lsc),
            "therapy_between": self._therapy_between(shown.when.date, new.when.date),
        }
        if old is None:
            so = shown.scanner
            if sn is None or sn.identity is None:
                reason = f"the scanner of the {new.when.date} scan is not identified"
            elif so is None or so.identity is None:
                reason = (
                    f"no earlier scan on the same scanner ({_scanner_words(sn)}); the scanner "
                    f"of the {shown.when.date} scan is not identified"
                )
            else:
                reason = (
                    f"different scanners ({_scanner_words(so)} on {shown.when.date}, "
                    f"{_scanner_words(sn)} on {new.when.date}); no earlier scan on the "
                    "latest scan's scanner"
                )
            out["comparable"] = False
            out["reason"] = reason
            return out
        if skipped:
            sources.update(mm.ref for mm in skipped)
            dates = ", ".join(
                f"{mm.when.date} ({_scanner_words(mm.scanner)})" for mm in reversed(skipped)
            )
            out["skipped"] = (
                f"The scan{'s' if len(skipped) > 1 else ''} of {dates} in between "
                f"{'were' if len(skipped) > 1 else 'was'} made on another scanner and "
                "not compared (CS-4.1)."
            )
        out["comparable"] = True
        pct = (new.value - old.value) / old.value * 100  # exact (CS-1.11)
        significant = abs(pct) >= lsc
        out["percent"] = float(pct)
        out["significant"] = significant
        out["direction"] = ("gain" if pct > 0 else "loss") if significant else "stable"
        return out

    # -- therapy (CS-1.8, CS-1.9, CS-7, CS-9)

    def _interval(self, r: MedRecord) -> tuple[date, date] | None:
        if r.source == "administration" and r.dose_date is not None:
            cls = self.classes.get(r.med_class)
            months = cls.dosing_interval_months if cls is not None else None
            covered = add_months(r.dose_date, months) if months else r.dose_date
            return r.dose_date, covered
        start = r.start
        if start is None:
            return None
        end: date = r.end if r.end is not None else (self.as_of if r.ongoing else start)
        if end is None or end < start:
            end = start
        return start, end

    def _runs(self, records: list[MedRecord]) -> list[_Run]:
        spans = sorted(
            (iv[0], iv[1], r.ref) for r in records if (iv := self._interval(r)) is not None
        )
        runs: list[_Run] = []
        for s, e, ref in spans:
            # a difference, not end + grace: an end at 9999-12-31 must not overflow
            if runs and (s - runs[-1].end).days <= RUN_GRACE_DAYS:
                runs[-1].end = max(runs[-1].end, e)
                runs[-1].refs.append(ref)
            else:
                runs.append(_Run(s, e, [ref]))
        return runs

    def _current(self, r: MedRecord) -> bool:
        if r.ongoing:
            return True
        iv = self._interval(r)
        return r.source == "administration" and iv is not None and iv[1] >= self.as_of

    def _flag(self, r: MedRecord, flag: str) -> bool:
        cls = self.classes.get(r.med_class)
        return bool(cls is not None and getattr(cls, flag))

    def _bone(self) -> list[MedRecord]:
        """The bone-active records (computed once: d.meds does not change while building)."""
        if self._bone_meds is None:
            # oncology regimens (Xgeva, zoledronic acid 4 mg) are not osteoporosis therapy
            # for CS-7 and CS-9.2-9.4 (CS-1.8 rev 2); CS-9.1 reads them from d.meds
            self._bone_meds = [
                r for r in self.d.meds if self._flag(r, "bone_active") and not r.oncology
            ]
        return self._bone_meds

    def _therapy_between(self, old: date, new: date) -> bool:
        for r in self._bone():
            iv = self._interval(r)
            if iv is not None and iv[0] <= new and iv[1] >= old:
                return True
        return False

    def _therapy(self, a: dict[str, Any], sources: set[str]) -> None:
        bone = self._bone()
        sources.update(r.ref for r in self.d.meds)
        a["bone_therapy_ever"] = bool(bone)
        a["bone_therapy_current"] = any(self._current(r) for r in bone)
        anti = [r for r in bone if self._flag(r, "antiresorptive")]
        anti_current = any(self._current(r) for r in anti)
        a["antiresorptive_current"] = anti_current
        anabolic = [r for r in bone if self._flag(r, "anabolic")]
        a["anabolic_current"] = any(self._current(r) for r in anabolic)
        runs = self._runs(anabolic)
        if runs:
            a["anabolic_started_months_ago"] = whole_months(runs[-1].start, self.as_of)
        starts = []
        for cls in {r.med_class for r in bone}:
            cruns = self._runs([r for r in bone if r.med_class == cls])
            if cruns:
                starts.append(cruns[-1].start)
        if starts:
            a["therapy_started_months_ago"] = whole_months(max(starts), self.as_of)
        if anti_current:
            aruns = self._runs(anti)
            current_runs = [r for r in aruns if r.end >= self.as_of]
            if current_runs:
                a["antiresorptive_months"] = whole_months(current_runs[-1].start, self.as_of)
        oral = [r for r in bone if r.med_class == "bisphosphonate-oral"]
        if oral:
            yrs = self._years(oral, clip=True)
            if yrs is not None:
                a["oral_bisphosphonate_years"] = yrs
        iv = [r for r in bone if r.med_class == "bisphosphonate-iv"]
        if iv:
            yrs = self._years(iv, clip=True)  # exposure so far (CS-9.2 rev 2)
            if yrs is not None:
                a["iv_bisphosphonate_years"] = yrs
        dmab = [r for r in self.d.meds if r.med_class == "denosumab"]  # oncology too (CS-9.1)
        if dmab:
            a["denosumab_used"] = True
            a["denosumab_oncology"] = any(r.oncology for r in dmab)
            last: date | None = None
            for r in dmab:
                if r.dose_date is not None:
                    cand: date | None = r.dose_date
                elif r.ongoing:
                    continue  # still being taken: this record does not tell the last dose
                else:
                    cand = r.end or r.start
                if cand is not None and (last is None or cand > last):
                    last = cand
            if last is not None:
                a["denosumab_last_dose_date"] = last.isoformat()
                a["denosumab_days_since_last_dose"] = (self.as_of - last).days
                # any bisphosphonate, an oncology-dose one too, follows on (CS-9.1)
                bis = [
                    r
                    for r in self.d.meds
                    if self._flag(r, "antiresorptive") and r.med_class != "denosumab"
                ]
                a["bisphosphonate_after_denosumab"] = any(
                    (r.dose_date or r.start) is not None and (r.dose_date or r.start) >= last  # type: ignore[operator]
                    for r in bis
                )
        gc = [r for r in self.d.meds if r.med_class == "glucocorticoid"]
        if gc:
            current = [r for r in gc if self._current(r)]
            a["glucocorticoid_current"] = bool(current)
            chosen = current or sorted(gc, key=lambda r: (r.start or date.min, r.ref))[-1:]
            doses = [r.mg_day for r in chosen if r.mg_day is not None]
            if doses:
                a["glucocorticoid_mg_day"] = float(sum(doses, Decimal(0)))
            spans = [self._interval(r) for r in chosen]
            valid = [s for s in spans if s is not None]
            if valid:
                start = min(s[0] for s in valid)
                end = max(s[1] for s in valid)
                if current:
                    end = max(end, self.as_of)
                months = Decimal(str(fractional_months(start, min(end, self.as_of))))
                a["glucocorticoid_months"] = float(months.quantize(ONE, rounding=ROUND_FLOOR))

    def _years(self, records: list[MedRecord], clip: bool) -> float | None:
        runs = []
        for r in records:
            iv = self._interval(r)
            if iv is None:
                continue
            s, e = iv
            if clip:
                e = min(e, self.as_of)
            runs.append((s, e))
        if not runs:
            return None
        runs.sort()
        merged: list[list[date]] = []
        for s, e in runs:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        months = sum((Decimal(str(fractional_months(s, e))) for s, e in merged), Decimal(0))
        return float((months / 12).quantize(ONE, rounding=ROUND_FLOOR))

    # -- clin-therapy, clinical revision 2 (CS-3.6, CS-9.1, CS-9.2, CS-9.4)

    def _taken(self, records: Iterable[MedRecord], lo: date, hi: date) -> bool:
        """A dose was given, or a course ran, on some day in [lo, hi]."""
        for r in records:
            if r.source == "administration":
                if r.dose_date is not None and lo <= r.dose_date <= hi:
                    return True
                continue
            iv = self._interval(r)
            if iv is not None and iv[0] <= hi and iv[1] >= lo:
                return True
        return False

    def _recent_labs(self, a: dict[str, Any], sources: set[str]) -> None:
        """CS-6.1 rev 2: laboratory tests with a result in the past months, not ordered again."""
        since = add_months(self.as_of, -self.p.lab_recent)
        latest: dict[str, tuple[date, str]] = {}
        for key, day, ref in self.d.lab_results:
            if since <= day <= self.as_of and (key not in latest or day > latest[key][0]):
                latest[key] = (day, ref)
        if not latest:
            return
        keys = sorted(latest)
        a["recent_lab_orders"] = ",".join(keys)
        a["recent_lab_tests"] = "; ".join(
            f"{self.order_codes[k].display} ({latest[k][0].isoformat()})" for k in keys
        )
        sources.update(latest[k][1] for k in keys)

    def _harming(self, a: dict[str, Any], sources: set[str]) -> None:
        """CS-6.8: the current drugs that harm bone, named; PPIs only when long-term."""
        names: dict[str, None] = {}
        if a.get("glucocorticoid_current"):
            for r in self.d.meds:
                if r.med_class == "glucocorticoid" and self._current(r):
                    names[f"systemic glucocorticoid ({r.ingredient.ingredient})"] = None
                    sources.add(r.ref)
        for h in sorted(self.d.harming, key=lambda x: (x.drug.drug_class, x.ref)):
            if not h.ongoing:
                self.fs.trace.ignore(h.ref, f"{h.drug.ingredient}: not current (CS-6.8)")
                continue
            if h.drug.long_term and (
                h.start is None or _months_from(h.start, self.p.ppi_long_term) > self.as_of
            ):
                self.fs.trace.ignore(
                    h.ref,
                    f"{h.drug.ingredient}: not taken for {self.p.ppi_long_term} months or more "
                    "(long-term use harms bone, CS-6.8)",
                )
                continue
            names[f"{h.drug.class_display} ({h.drug.ingredient})"] = None
            sources.add(h.ref)
        a["bone_harming_drug_count"] = len(names)
        if names:
            a["bone_harming_drugs"] = ", ".join(names)

    def _therapy_rev2(self, a: dict[str, Any], sources: set[str]) -> None:
        p, as_of, d = self.p, self.as_of, self.d
        bone = self._bone()
        dmab = [r for r in self.d.meds if r.med_class == "denosumab"]
        bis = [r for r in bone if self._flag(r, "antiresorptive") and r.med_class != "denosumab"]
        # CS-9.1: calendar months since the last denosumab dose; kidney function
        last = a.get("denosumab_last_dose_date")
        if last is not None:
            overdue_from = _months_from(date.fromisoformat(last), p.denosumab_overdue)
            overdue_from = _days_from(overdue_from, 1)
            a["denosumab_overdue_from"] = overdue_from.isoformat()
            a["denosumab_overdue"] = as_of >= overdue_from
        since = _months_from(as_of, -p.egfr_window)
        egfrs = [
            mm for mm in d.measurements if mm.kind == "egfr" and since <= mm.when.date <= as_of
        ]
        if egfrs:
            # the latest; of results at the same instant, the lowest
            latest = max(egfrs, key=lambda mm: (mm.when.instant, -mm.value, mm.ref))
            a["egfr"] = float(latest.value)
            a["egfr_date"] = latest.when.date.isoformat()
            sources.add(latest.ref)
        for mm in d.measurements:
            if mm.kind == "egfr" and mm.when.date < since:
                self.fs.trace.ignore(
                    mm.ref,
                    f"eGFR of {mm.when.date} is older than {p.egfr_window} months (CS-9.1)",
                )
        a["advanced_ckd"] = bool(d.advanced_ckd)
        sources.update(d.advanced_ckd)
        # CS-3.6: an alkaline phosphatase counts only when measured off antiresorptives
        untreated: list[Measurement] = []
        for mm in d.measurements:
            if mm.kind != "alp":
                continue
            day = mm.when.date
            if self._taken(bis, _months_from(day, -p.hpp_bisphosphonate), day):
                why = f"a bisphosphonate in the {p.hpp_bisphosphonate} months before it"
            elif self._taken(dmab, _months_from(day, -p.hpp_denosumab), day):
                why = f"denosumab in the {p.hpp_denosumab} months before it"
            else:
                untreated.append(mm)
                continue
            self.fs.trace.ignore(
                mm.ref,
                f"alkaline phosphatase {mm.value} U/L of {day} measured on therapy ({why}): "
                "antiresorptives lower it, so it is not used for possible hypophosphatasia "
                "(CS-3.6)",
            )
        if untreated:
            low = min(untreated, key=lambda mm: (mm.value, mm.when.instant, mm.ref))
            a["untreated_alkaline_phosphatase"] = float(low.value)
            a["untreated_alkaline_phosphatase_date"] = low.when.date.isoformat()
            sources.add(low.ref)
        self._harming(a, sources)
        self._recent_labs(a, sources)
        # CS-9.2 / CS-9.4: the covered period of the bisphosphonates and what followed it
        spans = [iv for r in bis if (iv := self._interval(r)) is not None]
        if not spans:
            return
        covered_to = max(e for _, e in spans)
        a["bisphosphonate_covered_to"] = covered_to.isoformat()
        open_until = _months_from(covered_to, p.holiday_after)
        a["bisphosphonate_review_open"] = as_of < open_until
        others = [r for r in bone if r not in bis]
        if as_of >= open_until and not self._taken(others, covered_to, as_of):
            a["bisphosphonate_holiday"] = True
            start, end = (
                _months_from(covered_to, p.holiday_from),
                _months_from(covered_to, p.holiday_to),
            )
            a["holiday_reassess_from"] = start.isoformat()
            a["holiday_reassess_to"] = end.isoformat()
            a["holiday_reassess_overdue"] = as_of > end

    # -- conditions, fractures, labs (CS-1.10, CS-3.6, CS-6.3, CS-6.4)

    def _conditions(self, a: dict[str, Any], sources: set[str]) -> None:
        d = self.d
        a["degenerative_spine"] = any(
            f.finding in ("degenerative-disease", "dish") for f in d.findings
        )
        a["hypophosphatasia_condition"] = bool(d.hypophosphatasia)
        a["primary_hyperparathyroidism"] = bool(d.hyperparathyroidism)
        sources.update(d.hypophosphatasia, d.hyperparathyroidism)
        sources.update(f.ref for f in d.findings if f.finding in ("degenerative-disease", "dish"))
        documented = [
            f for f in d.fractures if f.kind != "self-reported-vertebral" and self._fragility(f)
        ]
        sources.update(f.ref for f in d.fractures)
        a["fragility_fracture"] = bool(documented)
        a["hip_or_vertebral_fracture"] = any(f.kind in ("hip", "vertebral") for f in documented)
        a["self_reported_vertebral_fracture"] = any(
            f.kind == "self-reported-vertebral" for f in d.fractures
        )
        since = add_months(self.as_of, -self.p.recent_fracture)
        a["fracture_within_12_months"] = any(
            f.when is not None and since <= f.when.date <= self.as_of for f in documented
        )
        self._fracture_facts(a, documented)
        distinct = {(f.kind, _fracture_key(f.code)) for f in documented if not f.augmentation}
        a["multiple_fractures"] = len(distinct) >= 2
        bone_ivs = [iv for r in self._bone() if (iv := self._interval(r)) is not None]
        a["fracture_on_therapy"] = any(
            f.when is not None and any(s <= f.when.date <= e for s, e in bone_ivs)
            for f in documented
        )
        heights = sorted(
            (mm for mm in d.measurements if mm.kind == "height"),
            key=lambda mm: (mm.when.instant, mm.ref),
        )
        if len(heights) >= 2:
            latest = heights[-1]
            tallest = max(mm.value for mm in heights)
            a["height_loss_cm"] = float(max(tallest - latest.value, Decimal(0)))
            sources.update(mm.ref for mm in heights)
        alps = sorted(
            (mm for mm in d.measurements if mm.kind == "alp"),
            key=lambda mm: (mm.value, mm.when.instant, mm.ref),
        )
        if alps:
            a["alkaline_phosphatase"] = float(alps[0].value)
            a["alkaline_phosphatase_date"] = alps[0].when.date.isoformat()
            sources.add(alps[0].ref)

    # -- clin-followup, revision 2 (CS-1.10, CS-2.7, CS-6.4)

    def _fragility(self, f: FractureRecord) -> bool:
        """An injury code (S-code) says nothing of the mechanism: it counts as a fragility
        fracture when the patient was at least fragility_injury_min_age at its onset, or
        no onset is recorded (CS-1.10 rev 2)."""
        if not f.injury or f.when is None or self.d.birth_date is None:
            return True
        born, on = self.d.birth_date, f.when.date
        age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
        if age >= self.p.injury_min_age:
            return True
        self.fs.trace.assumptions.append(
            f"{f.ref}: injury code {f.code} at age {age} (under {self.p.injury_min_age}): "
            "not counted as a fragility fracture (CS-1.10)"
        )
        return False

    def _fracture_facts(self, a: dict[str, Any], documented: list[FractureRecord]) -> None:
        a["hip_fracture"] = any(f.kind == "hip" for f in documented)
        a["vertebral_fracture"] = any(f.kind == "vertebral" for f in documented)
        a["major_fracture"] = any(f.kind == "other" for f in documented)
        a["fracture_assumed_low_trauma"] = any(f.injury for f in documented)
        if documented:
            words = []
            for f in sorted(documented, key=lambda x: (x.kind, x.ref)):
                site = "other major site" if f.kind == "other" else f.kind
                on = f", {f.when.date.isoformat()}" if f.when else ""
                text = f"{site} ({f.display}{on})"
                if text not in words:
                    words.append(text)
            a["fractures"] = "; ".join(words)
        # clinical osteoporosis (CS-2.7 rev 2): a postmenopausal woman or a man >= 50
        t_applies = (
            a.get("sex") == "female" and a.get("menopausal_status") == "postmenopausal"
        ) or (a.get("sex") == "male" and int(a["age"]) >= self.p.men_t_age)
        basis: str | None = None
        if t_applies:
            lowest = a.get("lowest_t")
            low_mass = (
                lowest is not None
                and Decimal(str(lowest)) < self.p.normal_t
                and Decimal(str(lowest)) > self.p.osteoporosis_t
            )
            if a["hip_fracture"]:
                basis = "hip-fracture"
            elif a["vertebral_fracture"]:
                basis = "vertebral-fracture"
            elif a["major_fracture"] and low_mass:
                basis = "major-fracture-with-low-bone-mass"
        a["clinical_osteoporosis"] = basis is not None
        a["clinical_basis"] = basis
        since = add_months(self.as_of, -self.p.cv_event_months)
        recent = False
        for ref, when in self.d.cv_events:
            if when is None:
                self.fs.trace.assumptions.append(
                    f"{ref}: myocardial infarction or stroke without a date: not known to be "
                    f"within {self.p.cv_event_months} months (CS-6.4)"
                )
            elif since <= when.date <= self.as_of:
                recent = True
        a["recent_mi_or_stroke"] = recent

    # -- other fact types

    def _structural(self) -> None:
        seen: set[tuple[str, str]] = set()
        for f in sorted(self.d.findings, key=lambda x: (x.finding, x.ref)):
            if (f.finding, f.ref) in seen:
                continue
            seen.add((f.finding, f.ref))
            self.add(
                StructuralFindingFact(
                    id=f"structural_finding:{f.finding}:{f.ref}",
                    finding=f.finding,
                    resource=f.ref,
                    display=f.display,
                ),
                [f.ref],
            )

    def _contrast(self, a: Assessment) -> None:
        if not self.d.contrast:
            return
        scan = a.lumbar_t_date or a.last_dxa_date
        lumbar = [
            mm for mm in self.d.measurements if mm.kind == "dxa" and mm.site == "lumbar-spine"
        ]
        if lumbar:
            scan = max(mm.when.date for mm in lumbar).isoformat()
        if scan is None:
            for c in self.d.contrast:
                self.fs.trace.ignore(c.ref, "contrast study: no DXA to compare with")
            return
        scan_date = date.fromisoformat(scan)
        for c in sorted(self.d.contrast, key=lambda x: x.ref):
            self.add(
                ContrastStudy(
                    id=f"contrast_study:{c.ref}",
                    days_before_scan=(scan_date - c.when.date).days,
                    date=c.when.date.isoformat(),
                    resource=c.ref,
                    display=c.display,
                ),
                [c.ref],
            )

    def _drafts(self, a: Assessment) -> None:
        for dr in sorted(self.d.drafts, key=lambda x: x.ref):
            order_date = dr.authored.date if dr.authored is not None else self.as_of
            fields: dict[str, Any] = {
                "id": f"draft_order:{dr.ref}",
                "resource": dr.ref,
                "display": dr.display,
                "order_date": order_date.isoformat(),
                "scanner": a.scanner,
                "glucocorticoid_mg_day": a.glucocorticoid_mg_day,
                "glucocorticoid_months": a.glucocorticoid_months,
                "primary_hyperparathyroidism": a.primary_hyperparathyroidism,
                "anabolic_started_months_ago": a.anabolic_started_months_ago,
                "significant_loss_on_therapy": a.significant_loss_on_therapy,
            }
            axial = [
                mm.when.date for mm in self.d.measurements if mm.kind == "dxa" and mm.site in AXIAL
            ]
            if axial:  # the last axial DXA: a forearm-only exam is not one (CS-8.2 rev 2)
                last = max(axial)
                fields["last_dxa_date"] = last.isoformat()
                fields["months_since_last_dxa"] = whole_months(last, order_date)
                # Medicare counts months after the scan's month (CS-8.2 rev 2): covered from
                # the first day of the month after dxa_interval such months have passed
                fields["coverage_months"] = (
                    (order_date.year - last.year) * 12 + order_date.month - last.month - 1
                )
                fields["earliest_date"] = add_months(
                    last.replace(day=1), self.p.dxa_interval + 1
                ).isoformat()
            order: DraftOrder = _validate_draft_order(fields)  # DraftOrder(**fields)
            self.add(order, [dr.ref])


def _fracture_key(code: str) -> str:
    """One fracture, whatever the encounter: ICD-10-CM without dots and without the 7th
    character (A initial, D subsequent, S sequela ...), so S72.001A and S72.001D count once."""
    c = code.upper().replace(".", "").strip()
    if len(c) == 7 and c[-1].isalpha():
        return c[:-1]
    return c
