"""CS-1.1 statuses, CS-1.2 BMD units, CS-1.3 score units and ranges, CS-1.4 dates and
scanners, CS-1.7 codes, CS-5.3 TBS recognition: each statement on both sides."""

from __future__ import annotations

import pytest

from tests.facts.helpers import assessment, errors, ignored, one, run
from tests.fhir_factory import (
    device,
    hip_t,
    hip_z,
    lumbar_bmd,
    lumbar_t,
    lumbar_z,
    neck_t,
    observation,
    tbs,
)

# ---------------------------------------------------------------- CS-1.1 statuses


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_cs_1_1_final_amended_corrected_count(status: str) -> None:
    a = one(lumbar_t(-2.1, status=status))
    assert a.lumbar_t == -2.1
    assert a.preliminary is False


def test_cs_1_1_preliminary_counts_and_is_flagged() -> None:
    a = one(lumbar_t(-2.1, status="preliminary"))
    assert a.lumbar_t == -2.1
    assert a.preliminary is True


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled", "registered", "unknown"])
def test_cs_1_1_other_statuses_are_ignored_with_reason(status: str) -> None:
    obs = lumbar_t(-2.1, id="o1", status=status)
    fs = run(obs)
    a = assessment(fs)
    assert a.lumbar_t is None
    assert a.has_dxa is False
    assert ignored(fs)["Observation/o1"] == f"status {status}"
    assert not errors(fs)


def test_cs_1_1_missing_or_bogus_status_is_a_data_error() -> None:
    o1 = lumbar_t(-2.1, id="o1")
    del o1["status"]
    fs = run(o1, lumbar_t(-2.0, id="o2", status="done"))
    assert assessment(fs).lumbar_t is None
    by_res = {(i.resource, i.expression) for i in errors(fs)}
    assert ("Observation/o1", "Observation.status") in by_res
    assert ("Observation/o2", "Observation.status") in by_res


def test_preliminary_only_flags_when_the_preliminary_value_is_used() -> None:
    a = one(
        lumbar_t(-2.0, date="2026-02-01"),
        lumbar_t(-1.0, status="preliminary", date="2024-02-01"),
    )
    assert a.lumbar_t == -2.0
    assert a.preliminary is False


# ---------------------------------------------------------------- CS-1.2 BMD units


def test_cs_1_2_g_per_cm2_kept_as_reported() -> None:
    assert one(lumbar_bmd(0.812)).lumbar_bmd == 0.812


def test_cs_1_2_mg_per_cm2_divided_by_1000() -> None:
    assert one(lumbar_bmd(812, unit="mg/cm2")).lumbar_bmd == 0.812


def test_cs_1_2_unit_text_without_ucum_code_is_read() -> None:
    o = lumbar_bmd(0.812)
    o["valueQuantity"] = {"value": 0.812, "unit": "g/cm2"}
    assert one(o).lumbar_bmd == 0.812


@pytest.mark.parametrize("unit", ["kg/m2", "g/cm²", "%", "{T-score}"])
def test_cs_1_2_other_unit_is_a_data_error_naming_resource_and_element(unit: str) -> None:
    fs = run(lumbar_bmd(0.812, id="b1", unit=unit), lumbar_t(-1.5))
    a = assessment(fs)
    assert a.lumbar_bmd is None
    assert a.lumbar_t == -1.5  # the rest goes on
    [err] = errors(fs)
    assert err.resource == "Observation/b1"
    assert err.expression == "Observation.valueQuantity.code"
    assert repr(unit) in err.message


def test_cs_1_2_missing_value_is_a_data_error() -> None:
    o = lumbar_bmd(0.8, id="b1")
    del o["valueQuantity"]["value"]
    fs = run(o)
    [err] = errors(fs)
    assert (err.resource, err.expression) == ("Observation/b1", "Observation.valueQuantity.value")


def test_cs_1_2_no_value_at_all_is_a_data_error() -> None:
    o = lumbar_bmd(0.8, id="b1")
    del o["valueQuantity"]
    fs = run(o)
    [err] = errors(fs)
    assert (err.resource, err.expression) == ("Observation/b1", "Observation.value[x]")


def test_cs_1_2_non_numeric_value_is_a_data_error() -> None:
    o = lumbar_bmd(0.8, id="b1")
    o["valueQuantity"]["value"] = "0.8"  # a JSON string, not a number
    fs = run(o)
    [err] = errors(fs)
    assert (err.resource, err.expression) == ("Observation/b1", "Observation.valueQuantity.value")
    assert "number" in err.message


def test_cs_1_2_value_string_is_a_data_error() -> None:
    o = observation("38264-8", "about -2", value_key="valueString", id="h1")
    fs = run(o)
    [err] = errors(fs)
    assert (err.resource, err.expression) == ("Observation/h1", "Observation.valueString")
    assert "not numeric" in err.message


# ---------------------------------------------------------------- CS-1.3 score units, range


@pytest.mark.parametrize("unit", ["{T-score}", "{T-Score}", "1", None])
def test_cs_1_3_t_score_units_accepted(unit: str | None) -> None:
    o = lumbar_t(-2.1)
    if unit is None:
        o["valueQuantity"] = {"value": -2.1}
    else:
        o["valueQuantity"] = {"value": -2.1, "system": "http://unitsofmeasure.org", "code": unit}
    assert one(o).lumbar_t == -2.1


@pytest.mark.parametrize("unit", ["{Z-score}", "1"])
def test_cs_1_3_z_score_units_accepted(unit: str) -> None:
    assert one(lumbar_z(-2.0, unit=unit)).lumbar_z == -2.0


def test_cs_1_3_score_with_a_unit_is_a_data_error() -> None:
    fs = run(hip_t(-2.1, id="h1", unit="g/cm2"))
    [err] = errors(fs)
    assert (err.resource, err.expression) == ("Observation/h1", "Observation.valueQuantity.code")


@pytest.mark.parametrize("value", [-10, -10.0, 10, 9.9])
def test_cs_1_3_scores_at_the_plausible_limits_are_used(value: float) -> None:
    assert one(hip_t(value)).total_hip_t == float(value)


@pytest.mark.parametrize("value", [-10.1, 10.1, -99])
def test_cs_1_3_scores_outside_the_range_are_data_errors(value: float) -> None:
    fs = run(hip_t(value, id="h1"))
    assert assessment(fs).total_hip_t is None
    [err] = errors(fs)
    assert err.resource == "Observation/h1"
    assert err.expression == "Observation.valueQuantity.value"
    assert "plausible range" in err.message


@pytest.mark.parametrize(("value", "ok"), [(0.1, True), (3.0, True), (0.09, False), (3.01, False)])
def test_bmd_plausible_range(value: float, ok: bool) -> None:
    fs = run(lumbar_bmd(value))
    assert (assessment(fs).lumbar_bmd == value) is ok
    assert bool(errors(fs)) is not ok


def test_bmd_in_mg_sent_as_g_is_caught_by_the_range() -> None:
    fs = run(lumbar_bmd(812))
    assert assessment(fs).lumbar_bmd is None
    assert "plausible range" in errors(fs)[0].message


def test_comparator_value_is_a_data_error() -> None:
    o = hip_t(-2.0, id="h1")
    o["valueQuantity"]["comparator"] = "<"
    [err] = errors(run(o))
    assert err.expression == "Observation.valueQuantity.comparator"


# ---------------------------------------------------------------- CS-1.4 date and scanner


def test_cs_1_4_effective_period_start_is_the_scan_date() -> None:
    o = lumbar_t(-2.0, date=None)
    o["effectivePeriod"] = {"start": "2025-06-02", "end": "2025-06-03"}
    a = one(o)
    assert a.lumbar_t_date == "2025-06-02"


def test_cs_1_4_no_date_is_a_data_error() -> None:
    fs = run(hip_t(-2.0, id="h1", date=None))
    [err] = errors(fs)
    assert (err.resource, err.expression) == ("Observation/h1", "Observation.effective[x]")


def test_cs_1_4_bad_date_is_a_data_error() -> None:
    fs = run(hip_t(-2.0, id="h1", date="2025-02-30"))
    [err] = errors(fs)
    assert (err.resource, err.expression) == ("Observation/h1", "Observation.effectiveDateTime")


def test_cs_1_4_scanner_from_device_resource() -> None:
    a = one(device("d1", "Hologic", "Horizon A"), lumbar_t(-2.0, device="d1"))
    assert a.scanner == "Hologic Horizon A"  # CS-1.4 rev 2: manufacturer and model
    assert a.manufacturer == "hologic"


def test_cs_1_4_scanner_display_only() -> None:
    a = one(lumbar_t(-2.0, device_display="GE Lunar iDXA room 2"))
    assert a.scanner == "GE Lunar iDXA room 2"
    assert a.manufacturer == "ge-lunar"


def test_cs_1_4_results_after_the_as_of_date_are_ignored() -> None:
    fs = run(lumbar_t(-2.0, id="o1", date="2026-12-01"))
    assert assessment(fs).lumbar_t is None
    assert "after the as-of date" in ignored(fs)["Observation/o1"]


# ---------------------------------------------------------------- CS-1.7 codes


def test_cs_1_7_lumbar_codes() -> None:
    a = one(lumbar_t(-2.1), lumbar_z(-1.9), lumbar_bmd(0.8))
    assert (a.lumbar_t, a.lumbar_z, a.lumbar_bmd) == (-2.1, -1.9, 0.8)
    assert a.lumbar_vertebrae == 4  # an L1-L4 result has no vertebral bodySite


def test_cs_1_7_total_hip_takes_the_lower_side() -> None:
    a = one(hip_t(-1.2, side="left"), hip_t(-1.6, side="right"))
    assert a.total_hip_t == -1.6
    assert a.lowest_hip_site == "total-hip"


def test_cs_1_7_hip_z() -> None:
    a = one(hip_z(-2.2))
    assert a.lowest_z == -2.2
    assert a.lowest_z_site == "total-hip"


def test_cs_1_7_femoral_neck_by_configured_code_and_by_text() -> None:
    assert one(neck_t(-2.6)).femoral_neck_t == -2.6
    by_text = observation(
        "LOC-99", -2.7, "{T-score}", system="urn:local", text="Left femoral neck T-score"
    )
    assert one(by_text).femoral_neck_t == -2.7


def test_cs_1_7_femur_is_not_a_category_site_the_forearm_is() -> None:
    a = one(observation("38263-0", -3.1, "{T-score}"))
    assert a.lowest_t is None
    assert a.has_dxa is True  # a femur result is still an axial DXA on record
    b = one(observation("38263-0", -3.1, "{T-score}"), observation("38265-5", -3.5, "{T-score}"))
    assert (b.lowest_t, b.lowest_t_site) == (-3.5, "forearm")  # CS-2.5 rev 2


def test_unknown_code_is_ignored_with_reason() -> None:
    fs = run(observation("1234-5", 1.0, "1", id="x", display="Something else"))
    assert ignored(fs)["Observation/x"] == "unknown code (Something else)"


def test_dxa_panel_components_are_read() -> None:
    panel = observation("83311-1", None, id="panel")
    panel["component"] = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "38267-1"}]},
            "valueQuantity": {"value": -2.4, "code": "{T-score}"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "38264-8"}]},
            "valueQuantity": {"value": -1.1, "code": "{T-score}"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "24966-4"}]},
            "valueQuantity": {"value": 0.7, "code": "kg"},
        },
    ]
    fs = run(panel)
    a = assessment(fs)
    assert (a.lumbar_t, a.total_hip_t, a.lumbar_bmd) == (-2.4, -1.1, None)
    [err] = errors(fs)
    assert err.expression == "Observation.component[2].valueQuantity.code"


# ---------------------------------------------------------------- CS-5.3 TBS


def test_cs_5_3_tbs_by_configured_code() -> None:
    a = one(tbs(1.234))
    assert (a.tbs, a.tbs_date) == (1.234, "2026-01-10")


@pytest.mark.parametrize("text", ["Trabecular Bone Score L1-L4", "TRABECULAR BONE SCORE"])
def test_cs_5_3_tbs_by_text(text: str) -> None:
    assert one(tbs(1.3, text=text)).tbs == 1.3


def test_cs_5_3_tbs_by_coding_display() -> None:
    o = observation("X1", 1.31, "1", system="urn:site", display="Lumbar trabecular bone score")
    assert one(o).tbs == 1.31


def test_cs_5_3_other_text_is_not_tbs() -> None:
    assert one(tbs(1.3, text="Trabecular bone volume")).tbs is None


@pytest.mark.parametrize(
    ("value", "ok"), [(0.5, True), (2.5, True), (0.499, False), (2.501, False)]
)
def test_cs_5_3_tbs_range(value: float, ok: bool) -> None:
    fs = run(tbs(value, id="t1"))
    assert (assessment(fs).tbs == value) is ok
    if not ok:
        assert errors(fs)[0].resource == "Observation/t1"


def test_trace_says_why_an_out_of_range_result_was_not_used() -> None:
    fs = run(hip_t(-12, id="h1"))
    reason = ignored(fs)["Observation/h1"]
    assert reason.startswith("data error: T-score -12 is outside the plausible range")


def test_a_t_score_in_z_units_is_a_data_error() -> None:
    fs = run(hip_t(-2.0, id="h1", unit="{Z-score}"))
    [err] = errors(fs)
    assert err.resource == "Observation/h1"
    assert "{Z-score}" in err.message
