"""Fragility fractures and clinical osteoporosis, revision 2 (CS-1.10, CS-2.7, CS-6.4).

The default patient is a woman born 1955-03-01 (71 at the 2026-11-23 as-of date)."""

from __future__ import annotations

import pytest

from tests.facts.helpers import one, run
from tests.fhir_factory import (
    PARAMS,
    condition,
    hip_t,
    lumbar_t,
    patient,
    procedure,
)

MIN_AGE = int(PARAMS["fragility_injury_min_age"])


def test_resolved_fracture_condition_still_counts() -> None:
    a = one(lumbar_t(-1.8), condition("S72.001A", clinical="resolved", onset="2020-05-01"))
    assert a.hip_fracture
    assert a.fragility_fracture
    assert a.clinical_osteoporosis
    assert a.clinical_basis == "hip-fracture"
    assert a.fracture_assumed_low_trauma  # an S-code says nothing of the mechanism


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("S52.501A", "major"),
        ("S52.601A", "major"),
        ("S42.201A", "major"),
        ("S32.401A", "major"),
        ("S32.810A", "major"),
        ("M80.031A", "major"),
        ("S22.000A", "vertebral"),
        ("M48.50XA", "vertebral"),
        ("M80.051A", "hip"),
    ],
)
def test_cs_1_10_fracture_sites(code: str, kind: str) -> None:
    a = one(lumbar_t(-1.5), condition(code, onset="2024-01-01"))
    assert (a.hip_fracture, a.vertebral_fracture, a.major_fracture) == (
        kind == "hip",
        kind == "vertebral",
        kind == "major",
    )
    assert a.fracture_assumed_low_trauma is code.startswith("S")


def test_injury_code_counts_from_the_configured_age_at_onset() -> None:
    born = 1955
    at_limit = f"{born + MIN_AGE}-03-01"
    just_before = f"{born + MIN_AGE}-02-28"
    assert one(lumbar_t(-1.5), condition("S52.501A", onset=at_limit)).major_fracture
    young = one(lumbar_t(-1.5), condition("S52.501A", onset=just_before))
    assert not young.major_fracture
    assert not young.fragility_fracture


def test_injury_code_without_onset_counts() -> None:
    assert one(lumbar_t(-1.5), condition("S52.501A")).major_fracture


def test_vertebral_augmentation_is_a_vertebral_fracture_not_a_second_one() -> None:
    a = one(
        lumbar_t(-1.5),
        condition("M80.08XA", onset="2025-02-01"),
        procedure("22514", date="2025-02-10"),
    )
    assert a.vertebral_fracture
    assert a.clinical_basis == "vertebral-fracture"
    assert not a.multiple_fractures
    by_text = one(lumbar_t(-1.5), procedure(None, text="Balloon kyphoplasty L1"))
    assert by_text.vertebral_fracture


def test_cs_2_7_major_fracture_needs_low_bone_mass() -> None:
    normal_t, osteo_t = float(PARAMS["normal_t"]), float(PARAMS["osteoporosis_t"])
    wrist = condition("M80.031A", onset="2024-01-01")
    low = one(lumbar_t(normal_t - 0.1), wrist)
    assert low.clinical_basis == "major-fracture-with-low-bone-mass"
    assert not one(lumbar_t(normal_t), wrist).clinical_osteoporosis
    # densitometric osteoporosis is not "clinical": the T-score already says it
    assert not one(lumbar_t(osteo_t), wrist).clinical_osteoporosis


def test_cs_2_7_applies_to_postmenopausal_women_and_men_of_50() -> None:
    hip = condition("M80.051A", onset="2024-01-01")  # not an injury code: no age limit
    men_age = int(PARAMS["t_score_men_min_age"])
    man = patient(gender="male", birth_date=f"{2026 - men_age}-01-01")
    assert one(man, hip_t(-1.2), hip, with_patient=False).clinical_osteoporosis
    boy = patient(gender="male", birth_date=f"{2026 - men_age + 1}-12-31")
    assert not one(boy, hip_t(-1.2), hip, with_patient=False).clinical_osteoporosis
    pre = patient(birth_date="1990-01-01")
    assert not one(pre, hip_t(-1.2), hip, with_patient=False).clinical_osteoporosis


def test_cs_6_4_recent_myocardial_infarction_or_stroke() -> None:
    months = int(PARAMS["romosozumab_cv_event_months"])
    assert months == 12  # the dates below are written for the 12-month default
    assert one(lumbar_t(-3.2), condition("I21.4", onset="2025-11-23")).recent_mi_or_stroke
    assert not one(lumbar_t(-3.2), condition("I21.4", onset="2025-11-22")).recent_mi_or_stroke
    resolved = condition("I63.9", clinical="resolved", onset="2026-06-01")
    assert one(lumbar_t(-3.2), resolved).recent_mi_or_stroke
    undated = run(lumbar_t(-3.2), condition("I61.9"))
    assert any("without a date" in x for x in undated.trace.assumptions)
