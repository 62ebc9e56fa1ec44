"""cds.fhir.observations (through Reader): results become Measurements with normalised
values; statuses, units, ranges, components, vertebrae and dates as the profiles say."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.fhir.helpers import errors, ignored, profiles, read, used
from tests.fhir_factory import (
    SNOMED,
    alp,
    cc,
    hip_t,
    lumbar_bmd,
    lumbar_t,
    menopause_obs,
    observation,
    tbs,
)


def test_a_lumbar_t_score_is_one_measurement() -> None:
    data = read(lumbar_t(-2.1, id="a"))
    (mm,) = data.measurements
    assert (mm.kind, mm.site, mm.score, mm.value) == ("dxa", "lumbar-spine", "T", Decimal("-2.1"))
    assert (mm.ref, mm.preliminary, str(mm.when.date)) == ("Observation/a", False, "2026-01-10")
    assert used(data, "Observation/a") == ["lumbar-spine T -2.1 on 2026-01-10"]


def test_bmd_in_another_accepted_unit_is_normalised_by_the_profile_factor() -> None:
    factor = profiles().unit_factors["BMD"]["mg/cm2"]
    data = read(lumbar_bmd(850, unit="mg/cm2"))
    assert [mm.value for mm in data.measurements] == [Decimal(850) * factor]


def test_a_unit_not_accepted_is_a_data_error_listing_the_accepted_ones() -> None:
    data = read(alp(80, unit="mmol/L", id="a"))
    (issue,) = errors(data)
    assert issue.expression == "Observation.valueQuantity.code"
    for unit in profiles().unit_factors["ALP"]:
        assert unit in issue.message
    assert data.measurements == []
    assert ignored(data, "Observation/a")[0].startswith("data error:")


def test_a_value_outside_the_plausible_range_is_not_used() -> None:
    lo, hi = profiles().ranges["T"]
    assert read(lumbar_t(float(hi))).measurements
    data = read(lumbar_t(float(hi) + 1))
    assert data.measurements == []
    assert [i.code for i in errors(data)] == ["value"]
    assert f"{lo}..{hi}" in errors(data)[0].message


@pytest.mark.parametrize(
    ("status", "kept"),
    [("final", True), ("amended", True), ("preliminary", True), ("entered-in-error", False)],
)
def test_status(status: str, kept: bool) -> None:
    data = read(hip_t(-1.0, status=status))
    assert bool(data.measurements) is kept
    assert errors(data) == []


def test_an_unknown_status_and_a_missing_status_are_data_errors() -> None:
    bad = read(hip_t(-1.0, status="done"))
    assert [i.code for i in errors(bad)] == ["code-invalid"]
    missing = hip_t(-1.0)
    del missing["status"]
    assert [i.code for i in errors(read(missing))] == ["required"]


def test_a_result_after_the_as_of_date_is_ignored() -> None:
    data = read(lumbar_t(-1.0, id="a", date="2027-01-01"))
    assert data.measurements == []
    assert ignored(data, "Observation/a") == ["dated 2027-01-01 after the as-of date 2026-11-23"]


def test_a_partial_date_is_an_assumption() -> None:
    data = read(lumbar_t(-1.0, id="a", date="2026-03"))
    assert [str(mm.when.date) for mm in data.measurements] == ["2026-03-01"]
    assert data.trace.assumptions == ["Observation/a: partial date 2026-03 read as 2026-03-01"]


def test_comparators_and_strings_are_not_exact_values() -> None:
    q = lumbar_t(-1.0)
    q["valueQuantity"]["comparator"] = "<"
    text = observation("38267-1", "low", value_key="valueString")
    assert [i.expression for i in errors(read(q))] == ["Observation.valueQuantity.comparator"]
    assert [i.expression for i in errors(read(text))] == ["Observation.valueString"]


def test_components_of_a_panel_are_results() -> None:
    panel = observation("dxa-panel", system="https://example.org/local", id="panel")
    panel["component"] = [
        {"code": cc("38267-1"), "valueQuantity": {"value": -2.0, "code": "{T-score}"}},
        {"code": cc("unknown-code")},
        {"code": cc("38264-8"), "valueQuantity": {"value": -1.0, "code": "{T-score}"}},
    ]
    data = read(panel)
    assert [(mm.site, mm.value) for mm in data.measurements] == [
        ("lumbar-spine", Decimal("-2.0")),
        ("total-hip", Decimal("-1.0")),
    ]
    assert [u.split(":")[0] for u in used(data, "Observation/panel")] == [
        "component[0]",
        "component[2]",
    ]


@pytest.mark.parametrize(
    ("site", "vertebra", "count"),
    [
        (cc("53983007", SNOMED), "L2", 1),
        ({"text": "L1-L4"}, None, 4),
        ({"text": "third lumbar vertebra"}, "L3", 1),
    ],
)
def test_the_vertebra_of_a_lumbar_result(
    site: dict[str, object], vertebra: str, count: int
) -> None:
    (mm,) = read(lumbar_t(-1.0, body_site=site)).measurements
    assert (mm.vertebra, mm.vertebra_count) == (vertebra, count)


def test_tbs_by_code_and_by_text() -> None:
    pattern = profiles().tbs_text[0]
    by_code = read(tbs(1.3)).measurements
    by_text = read(tbs(1.3, text=f"Lumbar {pattern}")).measurements
    assert [mm.kind for mm in [*by_code, *by_text]] == ["tbs", "tbs"]


def test_menopausal_status_by_observation() -> None:
    data = read(menopause_obs("postmenopausal", id="m"))
    assert [(s, r) for s, r, _ in data.menopause] == [("postmenopausal", "Observation/m")]


def test_an_unknown_code_is_ignored_with_its_label() -> None:
    data = read(observation("0000-0", 1, "1", display="Something else", id="x"))
    assert ignored(data, "Observation/x") == ["unknown code (Something else)"]


def test_a_lab_result_of_an_orderable_test_is_recorded() -> None:
    key, order = next(
        (k, o)
        for k, o in profiles().order_codes.items()
        if o.category == "laboratory" and o.skip_if_recent
    )
    data = read(observation(order.code, 1, "1", system=order.system, id="lab"))
    assert [(k, r) for k, _, r in data.lab_results] == [(key, "Observation/lab")]


def test_an_element_object_that_is_not_an_object_is_named_by_its_model() -> None:
    """A structure error names the model the element is read as (as the BaseModels'
    messages did), on both sides of it: the Coding in a list, the Reference itself."""
    bad = lumbar_t(-1.0, id="a")
    bad["code"]["coding"] = ["38267-1"]
    bad["subject"] = "Patient/p1"
    found = [(i.code, i.message) for i in errors(read(bad))]
    assert found == [
        (
            "structure",
            "Observation.code.coding[0]: Input should be a valid dictionary or instance of "
            "Coding (got '38267-1'); the resource is not used",
        ),
        (
            "structure",
            "Observation.subject: Input should be a valid dictionary or instance of "
            "Reference (got 'Patient/p1'); the resource is not used",
        ),
    ]
    wrong = lumbar_t(-1.0, id="b")
    wrong["code"]["coding"][0]["code"] = 38267
    assert [(i.code, i.expression) for i in errors(read(wrong))] == [
        ("value", "Observation.code.coding[0].code")
    ]


def test_a_coded_value_where_a_number_is_needed_is_shown_as_its_elements() -> None:
    coded = observation("38264-8", "low", value_key="valueString")  # hip T: no profile
    del coded["valueString"]
    coded["valueCodeableConcept"] = {"coding": [{"system": SNOMED, "code": "x"}]}
    (issue,) = errors(read(coded))
    assert issue.expression == "Observation.valueCodeableConcept"
    # str() of the CodeableConcept as the BaseModel printed it, cut at 40 characters
    assert '(valueCodeableConcept "coding=[Coding(system=\'http://snomed.inf")' in issue.message
