"""CS-1.8 medication recognition and CS-1.9 therapy timing and glucocorticoid dose."""

from __future__ import annotations

from typing import Any

import pytest

from tests.facts.helpers import ignored, one, run
from tests.fhir_factory import ATC, RXNORM, med_admin, med_request, med_statement

# ---------------------------------------------------------------- CS-1.8 recognition


@pytest.mark.parametrize(
    "kw",
    [
        {"name": None, "rxnorm": "46041"},  # alendronate, RxNorm named by the spec
        {"name": None, "atc": "M05BA04"},
        {"name": "Alendronate Sodium 70 MG Oral Tablet"},
        {"name": "FOSAMAX 70mg"},
    ],
)
def test_cs_1_8_alendronate_by_rxnorm_atc_or_name(kw: dict[str, Any]) -> None:
    a = one(med_statement(**kw))
    assert a.bone_therapy_ever
    assert a.antiresorptive_current
    assert a.oral_bisphosphonate_years is not None


def test_cs_1_8_name_in_a_coding_display() -> None:
    ms = med_statement(None)
    ms["medicationCodeableConcept"] = {
        "coding": [{"system": "urn:local", "code": "x", "display": "risedronate 35 mg"}]
    }
    assert one(ms).antiresorptive_current


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"name": None, "atc": "M05BA08"}, "iv_bisphosphonate_years"),
        ({"name": None, "rxnorm": "77655"}, "iv_bisphosphonate_years"),
        ({"name": None, "atc": "M05BX04"}, "denosumab_used"),
        ({"name": None, "atc": "M05BX06"}, "anabolic_started_months_ago"),
        ({"name": None, "atc": "H05AA02"}, "anabolic_started_months_ago"),
        ({"name": None, "atc": "H05AA04"}, "anabolic_started_months_ago"),
        ({"name": "Tymlos pen"}, "anabolic_started_months_ago"),
    ],
)
def test_cs_1_8_classes(kw: dict[str, Any], field: str) -> None:
    a = one(med_statement(**kw))
    assert getattr(a, field) not in (None, False)


def test_cs_1_8_unverified_rxnorm_codes_are_not_trusted() -> None:
    # 993449 is listed for denosumab but not verified: recognition needs name or ATC
    fs = run(med_statement(None, rxnorm="993449", id="m1"))
    assert not one(med_statement(None, rxnorm="993449")).denosumab_used
    assert "not a bone-active" in ignored(fs)["MedicationStatement/m1"]


def test_cs_1_8_unrelated_medication_is_ignored() -> None:
    fs = run(med_statement("metformin", id="m1"))
    assert ignored(fs)["MedicationStatement/m1"].startswith("not a bone-active")


def test_cs_1_8_methylprednisolone_is_not_prednisolone() -> None:
    a = one(med_statement("methylprednisolone 4 mg", dose_mg=4, start="2026-01-01"))
    assert a.glucocorticoid_mg_day == 5.0  # 4 mg x 1.25


def test_rxnorm_system_must_match() -> None:
    ms = med_statement(None)
    ms["medicationCodeableConcept"] = {"coding": [{"system": ATC, "code": "46041"}]}
    assert not one(ms).bone_therapy_ever
    ms["medicationCodeableConcept"] = {"coding": [{"system": RXNORM, "code": "46041"}]}
    assert one(ms).bone_therapy_ever


def test_medication_reference_to_a_medication_resource() -> None:
    med = {
        "resourceType": "Medication",
        "id": "med1",
        "code": {"coding": [{"system": ATC, "code": "M05BX04"}]},
    }
    ms = med_statement(None)
    del ms["medicationCodeableConcept"]
    ms["medicationReference"] = {"reference": "Medication/med1"}
    assert one(med, ms).denosumab_used


# ---------------------------------------------------------------- CS-1.9 timing


def test_cs_1_9_active_statement_without_end_is_ongoing() -> None:
    a = one(med_statement("alendronate", status="active", start="2024-11-23"))
    assert a.bone_therapy_current
    assert a.antiresorptive_months == 24
    assert a.therapy_started_months_ago == 24


@pytest.mark.parametrize("status", ["stopped", "completed"])
def test_cs_1_9_stopped_or_completed_ends_it(status: str) -> None:
    a = one(med_statement("alendronate", status=status, start="2019-11-23", end="2024-11-23"))
    assert a.bone_therapy_ever
    assert not a.bone_therapy_current
    assert a.antiresorptive_months is None
    assert a.oral_bisphosphonate_years == 5.0


def test_oral_bisphosphonate_years_floor_never_reaches_a_boundary_early() -> None:
    a = one(med_statement("alendronate", status="completed", start="2019-11-24", end="2024-11-23"))
    assert a.oral_bisphosphonate_years == 4.9


@pytest.mark.parametrize("status", ["entered-in-error", "not-taken", "intended"])
def test_statements_not_taken_are_ignored(status: str) -> None:
    fs = run(med_statement("alendronate", status=status, id="m1"))
    assert ignored(fs)["MedicationStatement/m1"].startswith(f"status {status}")


def test_cs_1_9_request_start_is_authored_on() -> None:
    a = one(med_request("teriparatide", authored="2026-05-23"))
    assert a.anabolic_started_months_ago == 6
    assert a.bone_therapy_current


def test_request_plan_intent_is_not_therapy() -> None:
    fs = run(med_request("teriparatide", intent="proposal", id="r1"))
    assert "intent proposal" in ignored(fs)["MedicationRequest/r1"]


def test_cs_1_9_denosumab_last_dose_from_administrations() -> None:
    a = one(med_admin("Prolia", date="2025-10-01"), med_admin("Prolia", date="2026-04-10"))
    assert a.denosumab_used
    assert a.denosumab_last_dose_date == "2026-04-10"
    assert a.denosumab_days_since_last_dose == 227
    assert a.bone_therapy_current is False  # 6-month interval passed on 2026-10-10
    assert a.bisphosphonate_after_denosumab is False


def test_denosumab_within_its_interval_is_current() -> None:
    a = one(med_admin("denosumab", date="2026-06-01"))
    assert a.bone_therapy_current
    assert a.antiresorptive_current


def test_bisphosphonate_after_denosumab() -> None:
    a = one(
        med_admin("denosumab", date="2025-01-01"),
        med_statement("zoledronic acid", start="2025-08-01"),
    )
    assert a.bisphosphonate_after_denosumab is True


def test_zoledronic_infusions_count_a_year_each() -> None:
    a = one(
        med_admin("zoledronic acid", date="2023-06-01"),
        med_admin("zoledronic acid", date="2024-06-01"),
        med_admin("zoledronic acid", date="2025-06-01"),
    )
    assert a.iv_bisphosphonate_years == 3.0


def test_therapy_started_or_changed_is_the_latest_class_start() -> None:
    a = one(
        med_statement("alendronate", start="2020-01-01", status="stopped", end="2025-01-01"),
        med_statement("denosumab", start="2025-11-23"),
    )
    assert a.therapy_started_months_ago == 12


# ---------------------------------------------------------------- CS-1.9 glucocorticoid dose


@pytest.mark.parametrize(
    ("name", "dose", "mg_day"),
    [
        ("prednisone", 5, 5.0),
        ("prednisolone", 7.5, 7.5),
        ("methylprednisolone", 4, 5.0),
        ("dexamethasone", 0.75, 5.0),  # 0.75 x 6.67 = 5.0025 -> 5.00
        ("hydrocortisone", 20, 5.0),
    ],
)
def test_cs_1_9_prednisone_equivalent(name: str, dose: float, mg_day: float) -> None:
    assert (
        one(med_statement(name, dose_mg=dose, start="2026-01-01")).glucocorticoid_mg_day == mg_day
    )


def test_cs_1_9_frequency_multiplies_the_dose() -> None:
    a = one(med_statement("prednisone", dose_mg=2.5, frequency=3, start="2026-01-01"))
    assert a.glucocorticoid_mg_day == 7.5


def test_cs_1_9_default_is_once_daily() -> None:
    assert (
        one(med_statement("prednisone", dose_mg=2.5, start="2026-01-01")).glucocorticoid_mg_day
        == 2.5
    )


def test_weekly_dose() -> None:
    a = one(
        med_statement("prednisone", dose_mg=35, frequency=1, period_unit="wk", start="2026-01-01")
    )
    assert a.glucocorticoid_mg_day == 5.0


def test_dose_in_grams() -> None:
    a = one(med_statement("prednisone", dose_mg=0.005, dose_unit="g", start="2026-01-01"))
    assert a.glucocorticoid_mg_day == 5.0


def test_dose_in_an_unknown_unit_is_a_warning_and_unknown_dose() -> None:
    fs = run(
        med_statement("prednisone", dose_mg=1, dose_unit="tablet", id="m1", start="2026-01-01")
    )
    [warn] = [i for i in fs.issues if i.resource == "MedicationStatement/m1"]
    assert warn.severity == "warning"
    assert warn.expression == "MedicationStatement.dosage[0].doseAndRate[0].doseQuantity.code"
    from tests.facts.helpers import assessment

    a = assessment(fs)
    assert a.glucocorticoid_mg_day is None
    assert a.glucocorticoid_months is not None


@pytest.mark.parametrize(("start", "months"), [("2026-08-23", 3.0), ("2026-08-24", 2.9)])
def test_glucocorticoid_months_both_sides_of_3(start: str, months: float) -> None:
    a = one(med_statement("prednisone", dose_mg=5, start=start))
    assert a.glucocorticoid_months == months


def test_past_glucocorticoid_course_reports_its_own_length() -> None:
    a = one(
        med_statement(
            "prednisone", dose_mg=10, status="completed", start="2025-01-01", end="2025-07-01"
        )
    )
    assert a.glucocorticoid_mg_day == 10.0
    assert a.glucocorticoid_months == 6.0


def test_ongoing_denosumab_without_administrations_has_no_known_last_dose() -> None:
    # an active statement started long ago must not look like a missed dose (CS-9.1)
    a = one(med_statement("denosumab", status="active", start="2023-01-01"))
    assert a.denosumab_used
    assert a.bone_therapy_current
    assert a.denosumab_last_dose_date is None
    assert a.denosumab_days_since_last_dose is None
    r = one(med_request("Prolia", status="active", authored="2024-01-01"))
    assert r.denosumab_last_dose_date is None


def test_stopped_denosumab_statement_last_dose_is_its_end() -> None:
    a = one(med_statement("denosumab", status="stopped", start="2023-01-01", end="2026-02-20"))
    assert a.denosumab_last_dose_date == "2026-02-20"
    assert a.denosumab_days_since_last_dose == 276


def test_glucocorticoid_current_or_past() -> None:
    assert one(med_statement("prednisone", dose_mg=5, start="2026-01-01")).glucocorticoid_current
    past = one(
        med_statement(
            "prednisone", dose_mg=5, status="completed", start="2020-01-01", end="2020-07-01"
        )
    )
    assert past.glucocorticoid_current is False
    assert past.glucocorticoid_months == 6.0
