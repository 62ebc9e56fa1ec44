"""CS-11.5 rev 2: cards never contradict each other.

The contradicting pairs are data (tests/clinical/contradictions.yaml). Checked over every
clinical story and over generated patients: 10,000 under HYPOTHESIS_PROFILE=ci (the CI
profile), fewer in the dev profile; one shared Evaluator (tests/properties/helpers.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.contracts.cards import dump_cards
from tests.clinical.contradictions import contradictions, load_pairs, matches
from tests.fhir_factory import (
    condition,
    device,
    hip_t,
    lumbar_t,
    med_statement,
    neck_t,
    patient,
    procedure,
)
from tests.properties.helpers import ROOT, evaluate
from tests.properties.test_shuffle_never_changes_cards import read_story

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"

STORIES = sorted((ROOT / "tests" / "fixtures" / "stories").glob("[0-9]*-*.json"))
PAIRS = load_pairs()
GENERATED = 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 300


def _card(topic: str, summary: str = "s", detail: str = "", **payload: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "detail": detail,
        "source": {"topic": {"code": topic}},
        "extension": {"org.osteohooks": payload},
    }


# ---------------------------------------------------------------- the checker itself


def test_the_issue_examples_are_caught() -> None:
    """The two answers of issue 10 that revision 2 forbids, as cards: the checker must
    find both, so the tests below can fail."""
    ten_years = [
        _card("rescan-interval", basis="untreated-hip-band", minMonths=120, maxMonths=180),
        _card("workup", items=["treatment-discussion"]),
    ]
    assert "long-rescan-beside-treatment-indicated" in contradictions(ten_years, PAIRS)
    frax = [
        _card(
            "bmd-classification",
            detail="Low bone mass ... Fracture risk (FRAX) decides treatment at this level",
            category="low-bone-mass",
        ),
        _card("workup", items=["treatment-discussion"]),
    ]
    assert "frax-decides-beside-treatment-indicated" in contradictions(frax, PAIRS)


def test_a_stable_antiresorptive_interval_is_not_a_contradiction() -> None:
    treated = [
        _card("rescan-interval", basis="stable-antiresorptive", maxMonths=36),
        _card("workup", items=["treatment-discussion"]),
    ]
    assert contradictions(treated, PAIRS) == []


def test_predicates_on_absent_fields() -> None:
    card = _card("workup")
    assert matches(card, {"payload": {"items": {"lacks": "x"}}})
    assert not matches(card, {"payload": {"items": {"contains": "x"}}})
    assert matches(card, {"payload": {"items": {"absent": True}}})


def test_every_pair_names_why() -> None:
    assert len({p.id for p in PAIRS}) == len(PAIRS)
    assert all(p.why for p in PAIRS)


# ---------------------------------------------------------------- stories


@pytest.mark.parametrize("path", STORIES, ids=lambda p: p.name)
def test_no_story_holds_a_contradicting_pair(path: Path) -> None:
    result = evaluate(**read_story(path))
    assert contradictions(dump_cards(result.cards), PAIRS) == []


# ---------------------------------------------------------------- generated patients

FRACTURES = (
    ("S72.001A", None),
    ("M80.08XA", None),
    ("S52.501A", None),
    ("S42.201A", None),
    ("S32.501A", None),
    ("M80.031A", None),
    ("S22.000A", None),
    ("kyphoplasty", "procedure"),
    ("I21.4", "mi"),
    ("E83.39", "hpp"),
)
tenths = st.integers(min_value=-40, max_value=15).map(lambda n: n / 10)
dates = st.sampled_from(["2010-05-02", "2019-03-15", "2023-06-30", "2024-11-30", "2026-10-05"])


@st.composite
def patients(draw: st.DrawFn) -> list[dict[str, Any]]:
    sex = draw(st.sampled_from(["female", "male"]))
    age = draw(st.integers(min_value=15, max_value=95))
    scan = draw(dates)
    out: list[dict[str, Any]] = [
        patient(gender=sex, birth_date=f"{2026 - age}-03-14"),
        device("d1", manufacturer="Hologic"),
    ]
    for build, site in ((lumbar_t, "lumbar"), (hip_t, "hip"), (neck_t, "neck")):
        value = draw(st.none() | tenths, label=site)
        if value is not None:
            out.append(build(value, date=scan, device="d1"))
    for code, kind in draw(st.sets(st.sampled_from(FRACTURES), max_size=3), label="conditions"):
        onset = draw(st.none() | dates, label="onset")
        clinical = draw(st.sampled_from(["active", "resolved"]))
        if kind == "procedure":
            out.append(procedure(None, text="Balloon kyphoplasty L2", date=onset or "2024-01-05"))
        elif kind == "hpp":
            out.append(condition(code, display="Hypophosphatasia", onset=onset))
        else:
            out.append(condition(code, onset=onset, clinical=clinical))
    for drug in draw(st.sets(st.sampled_from(["alendronate", "prednisone", "denosumab"]))):
        start = draw(dates, label=f"{drug} start")
        stopped = draw(st.booleans(), label=f"{drug} stopped")
        dose = {"alendronate": 70, "prednisone": 10, "denosumab": 60}[drug]
        out.append(
            med_statement(
                drug,
                status="completed" if stopped else "active",
                start=start,
                end="2026-01-15" if stopped and start < "2026-01-15" else None,
                dose_mg=dose,
            )
        )
    return out


@settings(
    max_examples=GENERATED,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(resources=patients())
def test_no_generated_patient_holds_a_contradicting_pair(resources: list[dict[str, Any]]) -> None:
    result = evaluate(resources)
    assert contradictions(dump_cards(result.cards), PAIRS) == []


def test_holiday_review_beside_recorded_hypophosphatasia_carries_the_warning() -> None:
    """Found by the 10,000-patient run in CI (CS-9.2 beside CS-3.6/9.3): a girl of 15 with
    hypophosphatasia on record and 15 years of alendronate, now stopped, was told to
    'consider a drug holiday' with no word of the contraindication."""
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "2011-03-14"},
        {
            "resourceType": "Condition",
            "id": "c1",
            "code": {
                "coding": [{"system": ICD10, "code": "E83.39", "display": "Hypophosphatasia"}]
            },
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
            "subject": {"reference": "Patient/p1"},
        },
        {
            "resourceType": "MedicationStatement",
            "id": "m1",
            "status": "completed",
            "medicationCodeableConcept": {"text": "alendronate"},
            "subject": {"reference": "Patient/p1"},
            "effectivePeriod": {"start": "2010-05-02", "end": "2026-01-15"},
        },
    ]
    result = evaluate(resources)
    safety = [
        c for c in dump_cards(result.cards) if c["source"]["topic"]["code"] == "therapy-safety"
    ]
    assert safety, "the holiday review (CS-9.2) is expected"
    assert "Hypophosphatasia is on record" in safety[0]["detail"]
    assert contradictions(dump_cards(result.cards), PAIRS) == []
