"""CS-1.10 conditions and procedures, fractures (CS-6.3, CS-6.4), structural findings
(CS-3.4), contrast (CS-3.5), hypophosphatasia and alkaline phosphatase (CS-3.6), height."""

from __future__ import annotations

import pytest

from cds.contracts.facts import ContrastStudy, StructuralFindingFact
from tests.facts.helpers import assessment, errors, ignored, of_type, one, run
from tests.fhir_factory import SNOMED, alp, condition, height, lumbar_t, procedure

# ---------------------------------------------------------------- CS-1.10


@pytest.mark.parametrize("code", ["E21.0", "E210", "e21.0"])
def test_cs_1_10_icd_code_formats(code: str) -> None:
    assert one(condition(code)).primary_hyperparathyroidism


def test_cs_1_10_prefix_matches_children() -> None:
    fs = run(condition("M47.816"))
    [f] = of_type(fs, StructuralFindingFact)
    assert f.finding == "degenerative-disease"
    assert assessment(fs).degenerative_spine


def test_cs_1_10_prefix_does_not_match_siblings() -> None:
    assert not one(condition("M47.1")).degenerative_spine
    assert not one(condition("E21.1")).primary_hyperparathyroidism


def test_cs_1_10_snomed_exact() -> None:
    assert one(condition("36348003", SNOMED)).primary_hyperparathyroidism


@pytest.mark.parametrize("status", ["active", "recurrence", "relapse"])
def test_cs_1_10_active_or_recurring_count(status: str) -> None:
    cond = condition("E83.39", clinical=status, text="Hypophosphatasia")
    assert one(cond).hypophosphatasia_condition


@pytest.mark.parametrize("status", ["resolved", "inactive", "remission"])
def test_cs_1_10_resolved_conditions_are_listed_in_the_trace(status: str) -> None:
    fs = run(condition("E83.39", clinical=status, id="c1"))
    assert not assessment(fs).hypophosphatasia_condition
    assert ignored(fs)["Condition/c1"].startswith(f"clinicalStatus {status}")


def test_condition_without_clinical_status_does_not_count() -> None:
    fs = run(condition("E21.0", clinical=None, id="c1"))
    assert not assessment(fs).primary_hyperparathyroidism
    assert "no clinicalStatus" in ignored(fs)["Condition/c1"]


@pytest.mark.parametrize("ver", ["entered-in-error", "refuted"])
def test_refuted_conditions_never_count(ver: str) -> None:
    fs = run(condition("S72.001A", verification=ver, id="c1"))
    assert not assessment(fs).fragility_fracture
    assert ignored(fs)["Condition/c1"] == f"verificationStatus {ver}"


def test_hypophosphatasia_e83_39_only_when_named() -> None:
    """CS-3.6 rev 2: E83.39 also codes hypophosphatemia; it counts only when it names
    hypophosphatasia (see tests/facts/test_therapy_rev2.py for the trace)."""
    assert not one(condition("E83.39")).hypophosphatasia_condition
    assert one(condition("E83.39", display="Hypophosphatasia")).hypophosphatasia_condition


# ---------------------------------------------------------------- fractures


def test_hip_fracture() -> None:
    a = one(condition("S72.001A", onset="2026-03-01"))
    assert a.fragility_fracture
    assert a.hip_or_vertebral_fracture
    assert a.fracture_within_12_months
    assert not a.multiple_fractures


def test_resolved_fracture_is_still_history() -> None:
    a = one(condition("M80.08XA", clinical="resolved", onset="2015-01-01"))
    assert a.fragility_fracture
    assert a.hip_or_vertebral_fracture
    assert not a.fracture_within_12_months


@pytest.mark.parametrize(("onset", "recent"), [("2025-11-23", True), ("2025-11-22", False)])
def test_fracture_within_12_months_both_sides(onset: str, recent: bool) -> None:
    assert one(condition("S32.010A", onset=onset)).fracture_within_12_months is recent


def test_same_fracture_twice_is_one_fracture_two_are_multiple() -> None:
    same = one(condition("S72.001A", onset="2025-01-01"), condition("S72.001D", onset="2025-03-01"))
    assert not same.multiple_fractures
    two = one(condition("S32.010A"), condition("S32.020A"))
    assert two.multiple_fractures


def test_other_osteoporotic_fracture_is_fragility_not_hip_or_vertebral() -> None:
    a = one(condition("M80.031A"))  # forearm
    assert a.fragility_fracture
    assert not a.hip_or_vertebral_fracture


def test_unconfirmed_vertebral_fracture_is_self_reported() -> None:
    a = one(condition("M48.56XA", verification="unconfirmed"))
    assert a.self_reported_vertebral_fracture
    assert not a.fragility_fracture


def test_self_reported_code() -> None:
    a = one(
        condition(
            "self-reported-vertebral-fracture",
            "https://osteohooks.org/fhir/CodeSystem/local-history",
        )
    )
    assert a.self_reported_vertebral_fracture


def test_fracture_on_therapy() -> None:
    from tests.fhir_factory import med_statement

    a = one(
        med_statement("alendronate", start="2023-01-01"), condition("S72.001A", onset="2025-06-01")
    )
    assert a.fracture_on_therapy
    b = one(
        med_statement("alendronate", start="2025-07-01"), condition("S72.001A", onset="2025-06-01")
    )
    assert not b.fracture_on_therapy


# ---------------------------------------------------------------- CS-3.4 structural findings


@pytest.mark.parametrize(
    ("code", "system", "finding"),
    [
        ("M48.16", None, "dish"),
        ("M41.26", None, "scoliosis"),
        ("M48.56XA", None, "vertebral-fracture"),
        ("M80.08XA", None, "vertebral-fracture"),
        ("I70.0", None, "aortic-calcification"),
        ("Z98.1", None, "spinal-hardware"),
    ],
)
def test_cs_3_4_condition_findings(code: str, system: str | None, finding: str) -> None:
    fs = run(condition(code, id="c1"))
    found = {f.finding for f in of_type(fs, StructuralFindingFact)}
    assert finding in found
    f = next(x for x in of_type(fs, StructuralFindingFact) if x.finding == finding)
    assert f.resource == "Condition/c1"
    assert f.id == f"structural_finding:{finding}:Condition/c1"


@pytest.mark.parametrize(
    "kw",
    [
        {"code": "22514"},
        {"code": None, "text": "L2 Kyphoplasty"},
        {"code": "X", "system": "urn:x", "display": "Lumbar spinal fusion L4-L5"},
    ],
)
def test_cs_3_4_procedure_hardware(kw: dict[str, str]) -> None:
    fs = run(procedure(**kw, id="p1"))
    [f] = of_type(fs, StructuralFindingFact)
    assert (f.finding, f.resource) == ("spinal-hardware", "Procedure/p1")


def test_cs_3_4_procedure_not_done_is_ignored() -> None:
    fs = run(procedure("22514", status="not-done", id="p1"))
    assert of_type(fs, StructuralFindingFact) == []
    assert ignored(fs)["Procedure/p1"] == "status not-done"


def test_display_falls_back_to_the_profile() -> None:
    fs = run(condition("M41.26"))
    [f] = of_type(fs, StructuralFindingFact)
    assert f.display == "Scoliosis (M41.26)"


# ---------------------------------------------------------------- CS-3.5 contrast


@pytest.mark.parametrize(
    "kw",
    [
        {"code": "74270"},
        {"code": None, "text": "Barium swallow"},
        {"code": "Q1", "system": "urn:x", "display": "CT abdomen with CONTRAST"},
    ],
)
def test_cs_3_5_contrast_by_code_or_text(kw: dict[str, str]) -> None:
    fs = run(lumbar_t(-2.0, date="2026-01-10"), procedure(**kw, date="2026-01-03", id="p1"))
    [c] = of_type(fs, ContrastStudy)
    assert (c.days_before_scan, c.date, c.resource) == (7, "2026-01-03", "Procedure/p1")


def test_contrast_after_the_scan_is_negative() -> None:
    fs = run(lumbar_t(-2.0, date="2026-01-10"), procedure("74270", date="2026-01-12"))
    assert of_type(fs, ContrastStudy)[0].days_before_scan == -2


def test_contrast_without_dxa_makes_no_fact() -> None:
    fs = run(procedure("74270", id="p1"))
    assert of_type(fs, ContrastStudy) == []
    assert "no DXA" in ignored(fs)["Procedure/p1"]


def test_contrast_without_date_is_a_data_error() -> None:
    fs = run(lumbar_t(-2.0), procedure("74270", date=None, id="p1"))
    [err] = errors(fs)
    assert (err.resource, err.expression) == ("Procedure/p1", "Procedure.performed[x]")


# ---------------------------------------------------------------- labs and height


def test_cs_3_6_lowest_alkaline_phosphatase() -> None:
    a = one(alp(45, date="2025-01-01"), alp(28, date="2024-01-01"), alp(60))
    assert (a.alkaline_phosphatase, a.alkaline_phosphatase_date) == (28.0, "2024-01-01")


def test_alkaline_phosphatase_ukat() -> None:
    assert one(alp(0.5, unit="ukat/L")).alkaline_phosphatase == 30.0


def test_alkaline_phosphatase_bad_unit() -> None:
    fs = run(alp(40, unit="mg/dL", id="a1"))
    assert errors(fs)[0].resource == "Observation/a1"


def test_height_loss_from_tallest_to_latest() -> None:
    a = one(
        height(165.0, date="2000-01-01"),
        height(162.3, date="2020-01-01"),
        height(160.9, date="2026-01-01"),
    )
    assert a.height_loss_cm == 4.1


def test_height_in_inches() -> None:
    a = one(height(65, unit="[in_i]", date="2000-01-01"), height(160.0, date="2026-01-01"))
    assert a.height_loss_cm == 5.1


def test_single_height_gives_no_loss() -> None:
    assert one(height(160.0)).height_loss_cm is None


def test_bad_optional_date_is_a_warning_and_the_condition_still_counts() -> None:
    fs = run(condition("S72.001A", onset="2025-13-01", id="c1"))
    a = assessment(fs)
    assert a.fragility_fracture
    assert not a.fracture_within_12_months
    [warn] = fs.issues
    assert (warn.severity, warn.resource, warn.expression) == (
        "warning",
        "Condition/c1",
        "Condition.onsetDateTime",
    )
    assert "left out" in warn.message
