"""The fact schema: the typed, flat facts the FHIR stage produces and the rules read.

This module is the contract between `cds.facts` (which builds these facts from FHIR)
and `cds.rules` (which validates every rule condition against these field names and
types). Facts are flat: every field is a scalar (str, int, float, bool) or absent.
A field whose value is unknown is *absent* (``None`` here, omitted from the engine
message); every comparison on an absent field is false, and only ``exists`` /
``missing`` test for it.

Cross-fact relations (spine-hip gap, change between scans, months since the last DXA,
therapy durations) are computed in Python by ``cds.facts`` so that every rule matches a
single fact (see docs/architecture.md: durable_rules join rules crash, upstream #381).

Numbers are as reported: scores to one decimal, BMD (g/cm2) and TBS to three, derived
differences computed with Decimal and rounded to the precision of their inputs, so a
boundary written in a rule (``-1.0``, ``1.0``, the LSC) compares exactly.

Each field's ``description`` is used by ``cds rules docs`` to say a condition in words,
and by ``cds rules lint`` in its messages; keep them short and precise.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Sex = Literal["female", "male", "other", "unknown"]
MenopausalStatus = Literal["premenopausal", "postmenopausal", "unknown", "not-applicable"]
Site = Literal["lumbar-spine", "total-hip", "femoral-neck", "forearm"]
Manufacturer = Literal["hologic", "ge-lunar", "other", "unknown"]
Direction = Literal["gain", "loss", "stable"]
Vertebra = Literal["L1", "L2", "L3", "L4"]
StructuralFinding = Literal[
    "degenerative-disease",
    "dish",
    "scoliosis",
    "vertebral-fracture",
    "spinal-hardware",
    "aortic-calcification",
]
ClinicalBasis = Literal["hip-fracture", "vertebral-fracture", "major-fracture-with-low-bone-mass"]
IsoDate = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class Fact(BaseModel):
    """Base of every fact: an explicit id, unique within one evaluation.

    durable_rules reports false duplicates for id-less facts after tens of thousands of
    assertions, so every fact carries an id (``<type>:<key>``, e.g. ``assessment:1``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="unique fact id within the evaluation")


class Assessment(Fact):
    """One per evaluation: the patient and every patient-level value the rules read."""

    # Demographics (CS-1.5, CS-1.6)
    age: int = Field(description="age in whole years at the as-of date")
    sex: Sex = Field(description="administrative sex from Patient.gender")
    menopausal_status: MenopausalStatus = Field(
        description="recorded or assumed menopausal status; not-applicable for men"
    )
    menopausal_assumed: bool = Field(
        description="true when menopausal status was assumed from age (CS-1.6)"
    )

    # DXA on record
    has_dxa: bool = Field(description="a usable DXA measurement is on record")
    last_dxa_date: IsoDate | None = Field(None, description="date of the most recent usable DXA")
    months_since_last_dxa: int | None = Field(
        None, description="whole months from the most recent DXA to the as-of date"
    )
    preliminary: bool = Field(
        False, description="a preliminary Observation was used (the card must say so, CS-1.1)"
    )
    scanner: str | None = Field(None, description="scanner of the most recent DXA (device)")
    manufacturer: Manufacturer = Field(
        "unknown", description="manufacturer of the most recent lumbar scan's scanner"
    )

    # Latest scores per site (CS-1.7, CS-2.5)
    lumbar_t: float | None = Field(None, description="latest usable lumbar spine T-score")
    lumbar_t_date: IsoDate | None = Field(None, description="date of the latest lumbar T-score")
    lumbar_z: float | None = Field(None, description="latest usable lumbar spine Z-score")
    lumbar_bmd: float | None = Field(None, description="latest lumbar BMD in g/cm2")
    lumbar_vertebrae: int | None = Field(
        None, description="number of vertebrae the lumbar result rests on (4 for L1-L4)"
    )
    total_hip_t: float | None = Field(None, description="latest total hip T-score (lower side)")
    femoral_neck_t: float | None = Field(None, description="latest femoral neck T-score")
    lowest_hip_t: float | None = Field(
        None, description="lowest of total hip and femoral neck T-scores"
    )
    lowest_hip_site: Site | None = Field(None, description="site of lowest_hip_t")
    lowest_t: float | None = Field(
        None, description="lowest usable T-score of lumbar spine, total hip, femoral neck"
    )
    lowest_t_site: Site | None = Field(None, description="site that gave lowest_t")
    lowest_z: float | None = Field(None, description="lowest usable Z-score")
    lowest_z_site: Site | None = Field(None, description="site that gave lowest_z")
    spine_hip_gap: float | None = Field(
        None,
        description="lumbar T-score minus lowest hip T-score (positive: spine higher), exact",
    )
    nhanes_lumbar_t: float | None = Field(
        None,
        description="lumbar T-score recomputed against NHANES 2005-2014 (CS-3.8), exact (CS-1.11); "
        "absent for GE Lunar scans or without lumbar BMD",
    )
    manufacturer_assumed: bool = Field(
        False, description="manufacturer unknown, treated as Hologic for CS-3.8"
    )

    # Trabecular bone score (CS-5)
    tbs: float | None = Field(None, description="latest trabecular bone score")
    tbs_date: IsoDate | None = Field(None, description="date of the latest TBS")

    # Change between the two latest lumbar scans (CS-4)
    change_available: bool = Field(
        False, description="two or more lumbar BMD results are on record"
    )
    change_comparable: bool | None = Field(
        None, description="the two latest lumbar scans were made on the same identified scanner"
    )
    change_reason: str | None = Field(
        None, description="why the scans are not comparable (words for the card)"
    )
    change_percent: float | None = Field(
        None, description="(new - old) / old x 100 of lumbar BMD, exact (CS-1.11)"
    )
    change_lsc: float | None = Field(None, description="the LSC (percent) that applies")
    change_significant: bool | None = Field(
        None, description="|change_percent| >= change_lsc (only when comparable)"
    )
    change_direction: Direction | None = Field(
        None, description="gain or loss when significant, otherwise stable"
    )
    change_old_date: IsoDate | None = Field(None, description="date of the older scan")
    change_new_date: IsoDate | None = Field(None, description="date of the newer scan")
    change_old_bmd: float | None = Field(None, description="older lumbar BMD, g/cm2")
    change_new_bmd: float | None = Field(None, description="newer lumbar BMD, g/cm2")
    therapy_between_scans: bool | None = Field(
        None, description="bone-active therapy was taken between the two scans"
    )
    significant_loss_on_therapy: bool = Field(
        False,
        description="significant BMD loss at either site (lumbar spine or total hip) while "
        "on bone-active therapy (CS-4.4, CS-4.5)",
    )

    # Conditions and findings (CS-1.10, CS-3)
    degenerative_spine: bool = Field(
        False, description="a degenerative spine condition (spondylosis, lumbar OA, DISH)"
    )
    hypophosphatasia_condition: bool = Field(
        False,
        description="hypophosphatasia is a recorded active diagnosis (a hypophosphatasia code, "
        "or E83.39 whose text names it; CS-3.6)",
    )
    alkaline_phosphatase: float | None = Field(
        None, description="lowest alkaline phosphatase on record, U/L"
    )
    alkaline_phosphatase_date: IsoDate | None = Field(
        None, description="date of the lowest alkaline phosphatase"
    )
    primary_hyperparathyroidism: bool = Field(
        False, description="primary hyperparathyroidism (E21.0) is an active condition"
    )

    # Fractures (CS-6.3, CS-6.4, CS-7.6, CS-10.1)
    fragility_fracture: bool = Field(False, description="a fragility fracture is on record")
    hip_or_vertebral_fracture: bool = Field(
        False, description="a hip or vertebral fragility fracture is on record"
    )
    fracture_within_12_months: bool = Field(
        False, description="a fragility fracture in the 12 months before the as-of date"
    )
    multiple_fractures: bool = Field(False, description="two or more fragility fractures on record")
    fracture_on_therapy: bool = Field(
        False, description="a fragility fracture while on bone-active therapy"
    )
    height_loss_cm: float | None = Field(
        None, description="height loss in cm (historical or measured), 1 decimal"
    )
    self_reported_vertebral_fracture: bool = Field(
        False, description="a self-reported but undocumented vertebral fracture"
    )

    # Therapy (CS-1.9, CS-7, CS-9)
    bone_therapy_ever: bool = Field(False, description="any bone-active therapy on record")
    bone_therapy_current: bool = Field(False, description="bone-active therapy is ongoing")
    antiresorptive_current: bool = Field(
        False, description="a bisphosphonate or denosumab is ongoing"
    )
    anabolic_started_months_ago: int | None = Field(
        None, description="whole months since the most recent anabolic therapy start"
    )
    anabolic_current: bool = Field(
        False, description="an anabolic agent (teriparatide, abaloparatide, romosozumab) is ongoing"
    )
    therapy_started_months_ago: int | None = Field(
        None, description="whole months since any bone-active therapy was started or changed"
    )
    antiresorptive_months: int | None = Field(
        None, description="whole months of continuous bisphosphonate or denosumab therapy"
    )
    oral_bisphosphonate_years: float | None = Field(
        None, description="years of oral bisphosphonate therapy, 1 decimal"
    )
    iv_bisphosphonate_years: float | None = Field(
        None, description="years of IV bisphosphonate (zoledronic acid) therapy, 1 decimal"
    )
    denosumab_used: bool = Field(False, description="denosumab is on record")
    denosumab_last_dose_date: IsoDate | None = Field(
        None, description="date of the last denosumab dose"
    )
    denosumab_days_since_last_dose: int | None = Field(
        None, description="days from the last denosumab dose to the as-of date"
    )
    bisphosphonate_after_denosumab: bool = Field(
        False, description="a bisphosphonate was started after the last denosumab dose"
    )
    glucocorticoid_mg_day: float | None = Field(
        None, description="prednisone-equivalent glucocorticoid dose, mg/day (current or latest)"
    )
    glucocorticoid_months: float | None = Field(
        None, description="months of glucocorticoid exposure at that dose, 1 decimal"
    )
    glucocorticoid_current: bool = Field(
        False, description="a systemic glucocorticoid is being taken now (not only in the past)"
    )

    # -- clin-therapy, clinical revision 2: CS-1.8, CS-3.6, CS-6.7, CS-6.8, CS-9.1-CS-9.4
    untreated_alkaline_phosphatase: float | None = Field(
        None,
        description="lowest alkaline phosphatase measured with no bisphosphonate or denosumab in "
        "the months before it (CS-3.6), U/L",
    )
    untreated_alkaline_phosphatase_date: IsoDate | None = Field(
        None, description="date of untreated_alkaline_phosphatase"
    )
    denosumab_overdue: bool = Field(
        False,
        description="more than the configured calendar months since the last denosumab dose "
        "(CS-9.1)",
    )
    denosumab_overdue_from: IsoDate | None = Field(
        None, description="first day on which the last denosumab dose counts as overdue"
    )
    egfr: float | None = Field(
        None, description="latest eGFR within the configured months, mL/min/1.73 m2 (CS-9.1)"
    )
    egfr_date: IsoDate | None = Field(None, description="date of that eGFR")
    advanced_ckd: bool = Field(
        False, description="CKD stage 4-5 or dialysis is an active condition (CS-9.1)"
    )
    bisphosphonate_covered_to: IsoDate | None = Field(
        None, description="end of the latest bisphosphonate covered period (CS-9.2)"
    )
    bisphosphonate_review_open: bool = Field(
        False,
        description="a bisphosphonate dose is current, or its covered period ended less than "
        "the configured months ago (CS-9.2)",
    )
    bisphosphonate_holiday: bool = Field(
        False,
        description="no bisphosphonate and no other bone-active therapy for at least the "
        "configured months since the bisphosphonate covered period ended (CS-9.4)",
    )
    holiday_reassess_from: IsoDate | None = Field(
        None, description="start of the drug-holiday reassessment window (CS-9.4)"
    )
    holiday_reassess_to: IsoDate | None = Field(
        None, description="end of the drug-holiday reassessment window (CS-9.4)"
    )
    holiday_reassess_overdue: bool = Field(
        False, description="the as-of date is after holiday_reassess_to (CS-9.4)"
    )
    denosumab_oncology: bool = Field(
        False,
        description="denosumab was an oncology regimen (120 mg, Xgeva): not osteoporosis "
        "therapy (CS-1.8)",
    )
    bone_harming_drugs: str | None = Field(
        None, description="current drugs that harm bone, in words (CS-6.8)"
    )
    bone_harming_drug_count: int = Field(
        0, description="number of current drugs that harm bone (CS-6.8)"
    )
    recent_lab_orders: str | None = Field(
        None,
        description="order keys (comma-separated) of laboratory tests with a result in the "
        "configured months, left out of suggested orders (CS-6.1)",
    )
    recent_lab_tests: str | None = Field(
        None, description="those tests and their latest result dates, in words (CS-6.1)"
    )
    # -- clin-followup, revision 2 (CS-1.10, CS-2.7, CS-7.9, CS-10.1) ---------------------
    as_of: IsoDate | None = Field(
        None, description="the as-of date of the evaluation (overdue rescan windows, CS-7.9)"
    )
    dxa_on_record: bool = Field(
        False,
        description="any DXA result is on record, forearm included (CS-2.5, CS-10.1); "
        "has_dxa counts the sites that set the category",
    )
    hip_fracture: bool = Field(False, description="a hip fragility fracture is on record (CS-1.10)")
    vertebral_fracture: bool = Field(
        False,
        description="a vertebral fragility fracture or vertebral augmentation on record (CS-1.10)",
    )
    major_fracture: bool = Field(
        False,
        description="a fragility fracture of another major site (distal forearm, proximal "
        "humerus, pelvis, M80.0x) is on record (CS-1.10)",
    )
    fracture_assumed_low_trauma: bool = Field(
        False,
        description="a counted fragility fracture rests on an injury code (S-code) and is "
        "assumed low-trauma (CS-1.10): cards relying on it say so",
    )
    fractures: str | None = Field(
        None,
        description="the counted fragility fractures in words, e.g. 'hip (S72.001A, 2025-03-02)'",
    )
    clinical_osteoporosis: bool = Field(
        False,
        description="osteoporosis by a fragility fracture in a postmenopausal woman or a man "
        "of 50 or more, whatever the BMD (CS-2.7)",
    )
    clinical_basis: ClinicalBasis | None = Field(
        None, description="the fracture that establishes clinical osteoporosis (CS-2.7)"
    )
    recent_mi_or_stroke: bool = Field(
        False,
        description="a myocardial infarction or stroke within the configured months (CS-6.4)",
    )
    # --- clin-scans, clinical spec rev 2: CS-1.4, CS-4.1, CS-4.5 (same-device pairs, hip)
    change_skipped: str | None = Field(
        None,
        description="lumbar scans between the compared pair that were made on another "
        "scanner and not compared (words for the card, CS-4.1)",
    )
    hip_change_available: bool = Field(
        False, description="two or more total hip BMD results are on record (CS-4.5)"
    )
    hip_change_comparable: bool | None = Field(
        None, description="the latest total hip scan has an earlier one on the same scanner"
    )
    hip_change_reason: str | None = Field(
        None, description="why the total hip change is not comparable (words for the card)"
    )
    hip_change_skipped: str | None = Field(
        None, description="total hip scans between the pair made on another scanner"
    )
    hip_change_percent: float | None = Field(
        None, description="(new - old) / old x 100 of total hip BMD, exact (CS-1.11)"
    )
    hip_change_lsc: float | None = Field(None, description="the total hip LSC (percent)")
    hip_change_significant: bool | None = Field(
        None, description="|hip_change_percent| >= hip_change_lsc (only when comparable)"
    )
    hip_change_direction: Direction | None = Field(
        None, description="gain or loss when significant, otherwise stable"
    )
    hip_change_old_date: IsoDate | None = Field(None, description="date of the older hip scan")
    hip_change_new_date: IsoDate | None = Field(None, description="date of the newer hip scan")
    hip_change_old_bmd: float | None = Field(None, description="older total hip BMD, g/cm2")
    hip_change_new_bmd: float | None = Field(None, description="newer total hip BMD, g/cm2")
    hip_therapy_between_scans: bool | None = Field(
        None, description="bone-active therapy was taken between the two hip scans"
    )
    # --- clin-scans, clinical spec rev 2: CS-2.5 (forearm, current exam, axial DXA)
    forearm_t: float | None = Field(
        None, description="latest forearm (1/3 radius, LOINC 38265-5) T-score (CS-2.5)"
    )
    forearm_t_date: IsoDate | None = Field(None, description="date of forearm_t")
    sites_used: str | None = Field(
        None,
        description="the sites of the current exam (within current_exam_window_days of the "
        "most recent DXA) with value and date, in words (CS-2.5)",
    )
    sites_history: str | None = Field(
        None,
        description="latest site results older than the current exam: history, never the "
        "category (CS-2.5)",
    )
    last_axial_dxa_date: IsoDate | None = Field(
        None,
        description="date of the last axial DXA (lumbar spine, hip, femur); a forearm-only "
        "exam is a DXA on record (has_dxa) but not an axial DXA (CS-2.5, CS-8.2)",
    )
    months_since_last_axial_dxa: int | None = Field(
        None, description="whole months from last_axial_dxa_date to the as-of date"
    )
    significant_loss_any_site: bool = Field(
        False,
        description="significant BMD loss at the lumbar spine or the total hip, same-scanner "
        "pairs (CS-4.5; the 'significant loss' of CS-4.4, CS-7.2 and CS-8.2)",
    )


class VertebraAnalysis(Fact):
    """One per evaluation when per-vertebra lumbar T-scores are present (CS-3.1, CS-3.2)."""

    scan_date: IsoDate = Field(description="date of the per-vertebra results")
    vertebrae_present: int = Field(description="number of vertebrae with a usable T-score")
    evaluable_vertebrae: int = Field(
        description="vertebrae left after excluding those discordant with a neighbour"
    )
    max_adjacent_diff: float = Field(
        description="largest T-score difference between adjacent vertebrae, exact (CS-1.11)"
    )
    discordant_vertebra: Vertebra | None = Field(
        None, description="the vertebra that differs most from its neighbours"
    )
    values: str = Field(description="the per-vertebra T-scores in words, e.g. 'L1 -1.2, L2 -2.4'")


class StructuralFindingFact(Fact):
    """One per recognised structural condition or procedure (CS-3.4)."""

    finding: StructuralFinding = Field(description="the structural finding code")
    resource: str = Field(description="the Condition or Procedure it came from (Type/id)")
    display: str = Field(description="the code display or text of that resource")


class ContrastStudy(Fact):
    """One per barium or iodinated contrast study on record (CS-3.5)."""

    days_before_scan: int = Field(
        description="days from the study to the latest DXA (negative: after the scan)"
    )
    date: IsoDate = Field(description="date of the study")
    resource: str = Field(description="the Procedure it came from (Type/id)")
    display: str = Field(description="the code display or text of the study")


class DraftOrder(Fact):
    """One per draft DXA order in an order-select / order-sign request (CS-8)."""

    resource: str = Field(description="the draft ServiceRequest (Type/id)")
    display: str = Field(description="the order's code display or text")
    order_date: IsoDate = Field(description="the order date (authoredOn, else the as-of date)")
    months_since_last_dxa: int | None = Field(
        None, description="whole months from the last axial DXA to the order date"
    )
    last_dxa_date: IsoDate | None = Field(None, description="date of the last axial DXA")
    earliest_date: IsoDate | None = Field(
        None, description="earliest date a repeat DXA is covered (last DXA + the minimum interval)"
    )
    scanner: str | None = Field(None, description="scanner of the previous DXA, to use again")
    glucocorticoid_mg_day: float | None = Field(
        None, description="prednisone-equivalent glucocorticoid dose, mg/day"
    )
    glucocorticoid_months: float | None = Field(
        None, description="months of glucocorticoid exposure at that dose"
    )
    primary_hyperparathyroidism: bool = Field(
        False, description="primary hyperparathyroidism is an active condition"
    )
    anabolic_started_months_ago: int | None = Field(
        None, description="whole months since the most recent anabolic therapy start"
    )
    significant_loss_on_therapy: bool = Field(
        False, description="significant lumbar BMD loss while on bone-active therapy"
    )

    # -- clin-followup, revision 2 (CS-8.2) ----------------------------------------------
    coverage_months: int | None = Field(
        None,
        description="Medicare counting (CS-8.2): whole calendar months after the last axial "
        "DXA's month that have passed before the order's month",
    )


#: Every input fact type by the name rules use in ``when.fact``.
FACT_TYPES: dict[str, type[Fact]] = {
    "assessment": Assessment,
    "vertebra_analysis": VertebraAnalysis,
    "structural_finding": StructuralFindingFact,
    "contrast_study": ContrastStudy,
    "draft_order": DraftOrder,
}


def fact_type_name(fact: Fact) -> str:
    """The rule-language name of a fact's type (inverse of FACT_TYPES)."""
    for name, model in FACT_TYPES.items():
        if type(fact) is model:
            return name
    raise KeyError(type(fact).__name__)
