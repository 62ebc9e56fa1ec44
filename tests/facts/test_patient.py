"""CS-1.5 age and sex, CS-1.6 menopausal status, patient selection (split_by_patient:
tests/fhir/test_bundle.py)."""

from __future__ import annotations

from datetime import date

import pytest

from cds.facts import build_facts
from tests.facts.helpers import assessment, errors, ignored, one
from tests.fhir_factory import (
    AS_OF,
    PARAMS,
    bundle,
    condition,
    lumbar_t,
    menopause_obs,
    patient,
)

# ---------------------------------------------------------------- CS-1.5


@pytest.mark.parametrize(
    ("birth", "age"),
    [("1956-11-23", 70), ("1956-11-24", 69), ("1956-11-22", 70), ("1960-02-29", 66)],
)
def test_cs_1_5_age_in_whole_years_at_the_as_of_date(birth: str, age: int) -> None:
    fs = build_facts([patient(birth_date=birth)], PARAMS, AS_OF)
    assert assessment(fs).age == age


def test_cs_1_5_age_follows_the_as_of_date() -> None:
    fs = build_facts([patient(birth_date="1956-11-23")], PARAMS, date(2026, 11, 22))
    assert assessment(fs).age == 69


@pytest.mark.parametrize("gender", ["female", "male", "other", "unknown"])
def test_cs_1_5_sex_from_gender(gender: str) -> None:
    fs = build_facts([patient(gender=gender)], PARAMS, AS_OF)
    assert assessment(fs).sex == gender


def test_missing_gender_is_unknown() -> None:
    fs = build_facts([patient(gender=None)], PARAMS, AS_OF)
    assert assessment(fs).sex == "unknown"


def test_partial_birth_date_uses_the_first_day() -> None:
    fs = build_facts([patient(birth_date="1956")], PARAMS, AS_OF)
    assert assessment(fs).age == 70
    assert any("partial" in a for a in fs.trace.assumptions)


def test_missing_birth_date_is_fatal_and_makes_no_facts() -> None:
    fs = build_facts([patient(id="p9", birth_date=None)], PARAMS, AS_OF)
    assert fs.facts == []
    assert {(i.resource, i.expression) for i in errors(fs)} == {("Patient/p9", "Patient.birthDate")}
    assert fs.outcome() is not None


def test_birth_after_as_of_is_fatal() -> None:
    fs = build_facts([patient(birth_date="2027-01-01")], PARAMS, AS_OF)
    assert fs.facts == []
    assert errors(fs)[0].expression == "Patient.birthDate"


# ---------------------------------------------------------------- CS-1.6


@pytest.mark.parametrize(
    ("birth", "status"), [("1976-11-23", "postmenopausal"), ("1976-11-24", "premenopausal")]
)
def test_cs_1_6_age_assumption_at_50_both_sides(birth: str, status: str) -> None:
    fs = build_facts([patient(birth_date=birth)], PARAMS, AS_OF)
    a = assessment(fs)
    assert a.menopausal_status == status
    assert a.menopausal_assumed is True
    assert any("assumed from age" in x for x in fs.trace.assumptions)


def test_cs_1_6_age_is_a_parameter() -> None:
    params = {**PARAMS, "menopause_assumption_age": 45}
    fs = build_facts([patient(birth_date="1979-01-01")], params, AS_OF)
    assert assessment(fs).menopausal_status == "postmenopausal"


def test_cs_1_6_recorded_premenopausal_condition_wins_over_age() -> None:
    a = one(condition("289903006", "http://snomed.info/sct"))  # 71-year-old
    assert (a.menopausal_status, a.menopausal_assumed) == ("premenopausal", False)


def test_cs_1_6_recorded_postmenopausal_observation_wins_over_age() -> None:
    fs = build_facts(
        [patient(birth_date="1980-01-01"), menopause_obs("postmenopausal")], PARAMS, AS_OF
    )
    a = assessment(fs)
    assert (a.menopausal_status, a.menopausal_assumed) == ("postmenopausal", False)


def test_cs_1_6_icd_menopausal_state() -> None:
    fs = build_facts([patient(birth_date="1980-01-01"), condition("Z78.0")], PARAMS, AS_OF)
    assert assessment(fs).menopausal_status == "postmenopausal"


def test_cs_1_6_latest_recorded_status_wins() -> None:
    fs = build_facts(
        [
            patient(birth_date="1978-01-01"),
            menopause_obs("premenopausal", date="2020-01-01"),
            menopause_obs("postmenopausal", date="2025-01-01"),
        ],
        PARAMS,
        AS_OF,
    )
    assert assessment(fs).menopausal_status == "postmenopausal"


def test_cs_1_6_men_are_not_applicable() -> None:
    fs = build_facts([patient(gender="male")], PARAMS, AS_OF)
    a = assessment(fs)
    assert (a.menopausal_status, a.menopausal_assumed) == ("not-applicable", False)


def test_unknown_sex_has_unknown_status() -> None:
    fs = build_facts([patient(gender="unknown")], PARAMS, AS_OF)
    assert assessment(fs).menopausal_status == "unknown"


# ---------------------------------------------------------------- choosing the patient


def test_no_patient_is_fatal_no_facts() -> None:
    fs = build_facts([lumbar_t(-2.0)], PARAMS, AS_OF)
    assert fs.facts == []
    [err] = errors(fs)
    assert (err.severity, err.code) == ("fatal", "required")


def test_several_patients_need_patient_id() -> None:
    items = [patient("p1"), patient("p2"), lumbar_t(-2.0, subject="p2", id="o2")]
    fs = build_facts(items, PARAMS, AS_OF)
    assert fs.facts == []
    assert errors(fs)[0].code == "multiple-matches"
    fs2 = build_facts([*items, lumbar_t(-1.0, id="o1")], PARAMS, AS_OF, patient_id="p2")
    a = assessment(fs2)
    assert a.id == "assessment:p2"
    assert a.lumbar_t == -2.0
    assert ignored(fs2)["Observation/o1"] == "not this patient (subject Patient/p1)"


def test_patient_id_not_present_is_fatal() -> None:
    fs = build_facts([patient("p1")], PARAMS, AS_OF, patient_id="zz")
    assert fs.facts == []
    assert errors(fs)[0].resource == "Patient/zz"


def test_bundle_urn_references_resolve_to_the_patient() -> None:
    pat = patient("p1")
    obs = lumbar_t(-2.3)
    obs["subject"] = {"reference": "urn:uuid:Patient-p1"}
    assert assessment(build_facts([bundle(pat, obs)], PARAMS, AS_OF)).lumbar_t == -2.3


def test_absolute_reference_resolves() -> None:
    obs = lumbar_t(-2.3)
    obs["subject"] = {"reference": "https://ehr.example.org/fhir/Patient/p1"}
    assert one(obs).lumbar_t == -2.3
