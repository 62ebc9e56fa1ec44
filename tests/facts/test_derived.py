"""Derived values: latest per site, lowest T (CS-2.5, CS-2.6), vertebrae (CS-3.1, CS-3.2),
change between scans (CS-4), spine-hip gap (CS-3.3), NHANES (CS-3.8), months since the last
DXA and draft orders (CS-8). Boundaries exactly at the values the spec names."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cds.contracts.facts import DraftOrder, VertebraAnalysis
from tests.facts.helpers import assessment, of_type, one, run
from tests.fhir_factory import (
    PARAMS,
    device,
    draft_dxa,
    hip_t,
    lumbar_bmd,
    lumbar_t,
    lumbar_z,
    med_statement,
    neck_t,
    neck_z,
    observation,
    vertebra_t,
)

# ---------------------------------------------------------------- latest and lowest


def test_latest_value_per_site() -> None:
    a = one(
        lumbar_t(-1.0, date="2022-01-01"),
        lumbar_t(-2.2, date="2026-01-01"),
        lumbar_t(-3.0, date="2019-01-01"),
    )
    assert (a.lumbar_t, a.lumbar_t_date) == (-2.2, "2026-01-01")


def test_cs_2_5_lowest_of_lumbar_hip_neck() -> None:
    a = one(lumbar_t(-1.8), hip_t(-2.6), neck_t(-2.4))
    assert (a.lowest_t, a.lowest_t_site) == (-2.6, "total-hip")
    assert (a.lowest_hip_t, a.lowest_hip_site) == (-2.6, "total-hip")


def test_lowest_tie_prefers_lumbar_then_hip() -> None:
    a = one(lumbar_t(-2.5), hip_t(-2.5), neck_t(-2.5))
    assert a.lowest_t_site == "lumbar-spine"
    assert a.lowest_hip_site == "total-hip"


def test_values_as_reported_are_not_rounded() -> None:
    a = one(lumbar_t(-2.45), hip_t(-1.05))
    assert (a.lumbar_t, a.total_hip_t) == (-2.45, -1.05)


def test_lowest_z() -> None:
    a = one(lumbar_z(-1.2), neck_z(-2.1))
    assert (a.lowest_z, a.lowest_z_site) == (-2.1, "femoral-neck")


def test_cs_2_6_one_vertebra_is_not_used_for_category() -> None:
    one_vert = observation("38267-1", -3.0, "{T-score}", body_site={"text": "L2-L2"})
    a = one(one_vert, hip_t(-1.2))
    assert a.lumbar_t == -3.0  # still shown
    assert a.lumbar_vertebrae == 1
    assert (a.lowest_t, a.lowest_t_site) == (-1.2, "total-hip")
    assert a.spine_hip_gap is None


def test_cs_2_6_two_vertebrae_may_be_used() -> None:
    two = observation("38267-1", -3.0, "{T-score}", body_site={"text": "L1-L2"})
    a = one(two, hip_t(-1.2))
    assert a.lumbar_vertebrae == 2
    assert a.lowest_t_site == "lumbar-spine"


# ---------------------------------------------------------------- CS-3.1, CS-3.2 vertebrae


def _verts(*values: float, date: str = "2026-01-10") -> list[dict[str, object]]:
    return [vertebra_t(f"L{i + 1}", v, date=date) for i, v in enumerate(values)]


def test_cs_3_1_exactly_1_0_does_not_qualify() -> None:
    fs = run(*_verts(-2.1, -1.1, -1.5, -1.6))
    [va] = of_type(fs, VertebraAnalysis)
    assert va.max_adjacent_diff == 1.0
    assert va.discordant_vertebra is None
    assert va.evaluable_vertebrae == 4


def test_cs_3_1_more_than_1_0_qualifies_and_names_the_vertebra() -> None:
    fs = run(*_verts(-1.0, -2.5, -1.1, -1.2))
    [va] = of_type(fs, VertebraAnalysis)
    assert va.max_adjacent_diff == 1.5
    assert va.discordant_vertebra == "L2"
    assert va.evaluable_vertebrae == 3
    assert va.values == "L1 -1.0, L2 -2.5, L3 -1.1, L4 -1.2"
    assert va.vertebrae_present == 4


def test_cs_3_1_end_vertebra_outlier() -> None:
    [va] = of_type(run(*_verts(0.3, -1.2, -1.3, -1.1)), VertebraAnalysis)
    assert va.discordant_vertebra == "L1"
    assert va.max_adjacent_diff == 1.5


def test_cs_3_1_threshold_is_a_parameter() -> None:
    from cds.facts import build_facts
    from tests.fhir_factory import AS_OF, patient

    fs = build_facts(
        [patient(), *_verts(-1.0, -1.8)], {**PARAMS, "vertebral_discordance_t": 0.5}, AS_OF
    )
    assert of_type(fs, VertebraAnalysis)[0].discordant_vertebra is not None


def test_cs_3_2_two_discordant_vertebrae_leave_one() -> None:
    [va] = of_type(run(*_verts(-0.5, -2.0)), VertebraAnalysis)
    assert va.evaluable_vertebrae == 1
    assert va.discordant_vertebra == "L1"  # the higher T-score (artifacts raise BMD)


def test_non_adjacent_vertebrae_are_not_compared() -> None:
    fs = run(vertebra_t("L1", -0.5), vertebra_t("L3", -2.5))
    [va] = of_type(fs, VertebraAnalysis)
    assert va.max_adjacent_diff == 0.0


def test_vertebrae_of_the_latest_scan_only() -> None:
    fs = run(*_verts(-0.5, -2.5, date="2020-01-01"), *_verts(-1.0, -1.1, -1.2, -1.3))
    [va] = of_type(fs, VertebraAnalysis)
    assert (va.scan_date, va.discordant_vertebra) == ("2026-01-10", None)


def test_lumbar_result_rests_on_the_evaluable_vertebrae() -> None:
    a = one(lumbar_t(-2.0), *_verts(-0.5, -2.0))
    assert a.lumbar_vertebrae == 1
    assert a.lowest_t is None


def test_no_vertebra_fact_without_per_vertebra_results() -> None:
    assert of_type(run(lumbar_t(-2.0)), VertebraAnalysis) == []


# ---------------------------------------------------------------- CS-4 change


def _scans(
    old: float, new: float, dev_old: str | None = "d1", dev_new: str | None = "d1", **kw: object
) -> list[dict[str, object]]:
    return [
        device("d1"),
        device("d2", "GE Healthcare", "Lunar iDXA"),
        lumbar_bmd(old, date="2024-01-10", device=dev_old),
        lumbar_bmd(new, date="2026-01-10", device=dev_new),
    ]


def test_cs_4_2_change_exactly_at_the_lsc_is_significant() -> None:
    a = one(*_scans(1.000, 0.947))
    assert a.change_percent == -5.3
    assert a.change_significant is True
    assert a.change_direction == "loss"
    assert a.change_lsc == 5.3


def test_cs_4_2_just_below_the_lsc_is_not() -> None:
    a = one(*_scans(1.000, 0.948))
    assert a.change_percent == -5.2
    assert a.change_significant is False
    assert a.change_direction == "stable"


def test_cs_4_2_gain() -> None:
    a = one(*_scans(0.800, 0.850))
    assert a.change_percent == 6.25  # exact (CS-1.11): shown rounded only in card text
    assert a.change_direction == "gain"
    assert (a.change_old_bmd, a.change_new_bmd) == (0.8, 0.85)
    assert (a.change_old_date, a.change_new_date) == ("2024-01-10", "2026-01-10")


def test_cs_4_2_lsc_is_a_parameter() -> None:
    from cds.facts import build_facts
    from tests.fhir_factory import AS_OF, patient

    fs = build_facts(
        [patient(), *_scans(1.0, 0.97)], {**PARAMS, "lsc_lumbar_spine_percent": 3}, AS_OF
    )
    a = assessment(fs)
    assert (a.change_percent, a.change_significant, a.change_lsc) == (-3.0, True, 3.0)


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("d1", "d2", "different scanners"),
        (None, "d1", "not identified"),
        ("d1", None, "not identified"),
    ],
)
def test_cs_4_3_not_comparable(old: str | None, new: str | None, why: str) -> None:
    a = one(*_scans(1.0, 0.8, old, new))
    assert a.change_available is True
    assert a.change_comparable is False
    assert why in (a.change_reason or "")
    assert a.change_percent is None
    assert a.change_significant is None
    assert a.change_direction is None


def test_display_only_scanner_is_not_an_identification() -> None:
    a = one(
        lumbar_bmd(1.0, date="2024-01-10", device_display="Hologic A"),
        lumbar_bmd(0.9, date="2026-01-10", device_display="Hologic A"),
    )
    assert a.change_comparable is False


def test_one_scan_is_no_change() -> None:
    a = one(lumbar_bmd(1.0))
    assert a.change_available is False
    assert a.change_comparable is None


def test_cs_4_4_significant_loss_on_therapy() -> None:
    a = one(*_scans(1.0, 0.9), med_statement("alendronate", start="2023-01-01"))
    assert a.therapy_between_scans is True
    assert a.significant_loss_on_therapy is True
    b = one(*_scans(1.0, 0.9))
    assert b.therapy_between_scans is False
    assert b.significant_loss_on_therapy is False


def test_therapy_after_the_new_scan_is_not_between() -> None:
    a = one(*_scans(1.0, 0.9), med_statement("alendronate", start="2026-02-01"))
    assert a.therapy_between_scans is False


def test_mg_and_g_scans_compare() -> None:
    a = one(
        device("d1"),
        lumbar_bmd(1000, unit="mg/cm2", date="2024-01-10", device="d1"),
        lumbar_bmd(0.947, date="2026-01-10", device="d1"),
    )
    assert a.change_percent == -5.3


# ---------------------------------------------------------------- CS-3.3 gap


def test_spine_hip_gap_exact() -> None:
    a = one(lumbar_t(-1.1), hip_t(-2.1))
    assert a.spine_hip_gap == 1.0  # -1.1 - (-2.1) is exactly 1.0, not 0.9999999


def test_spine_hip_gap_negative() -> None:
    assert one(lumbar_t(-2.6), neck_t(-1.5)).spine_hip_gap == -1.1


# ---------------------------------------------------------------- CS-3.8 NHANES


@pytest.mark.parametrize(("bmd", "t"), [(0.760, -2.5), (0.943, -1.0), (0.821, -2.0)])
def test_cs_3_8_examples(bmd: float, t: float) -> None:
    a = one(device("d1"), lumbar_bmd(bmd, device="d1"))
    assert a.nhanes_lumbar_t == t
    assert a.manufacturer_assumed is False


def test_cs_3_8_not_rounded() -> None:
    # (0.9 - 1.065) / 0.122 = -1.352459..., kept unrounded (CS-1.11)
    mean, sd = (Decimal(str(PARAMS[k])) for k in ("nhanes_lumbar_mean_bmd", "nhanes_lumbar_sd"))
    t = one(device("d1"), lumbar_bmd(0.9, device="d1")).nhanes_lumbar_t
    assert t == float((Decimal("0.9") - mean) / sd)


def test_cs_3_8_not_for_ge_lunar() -> None:
    a = one(device("d2", "GE Healthcare", "Lunar Prodigy"), lumbar_bmd(0.76, device="d2"))
    assert a.nhanes_lumbar_t is None
    assert a.manufacturer == "ge-lunar"


def test_cs_3_8_unknown_manufacturer_is_assumed_hologic() -> None:
    fs = run(lumbar_bmd(0.76))
    a = assessment(fs)
    assert a.nhanes_lumbar_t == -2.5
    assert a.manufacturer_assumed is True
    assert a.manufacturer == "unknown"
    assert any("treated as Hologic" in x for x in fs.trace.assumptions)


def test_cs_3_8_other_manufacturer_is_not_recomputed() -> None:
    a = one(device("d3", "Norland", "XR-800"), lumbar_bmd(0.76, device="d3"))
    assert a.manufacturer == "other"
    assert a.nhanes_lumbar_t is None


# ---------------------------------------------------------------- months and draft orders


@pytest.mark.parametrize(
    ("last", "months"), [("2024-12-23", 23), ("2024-12-24", 22), ("2026-11-23", 0)]
)
def test_months_since_last_dxa(last: str, months: int) -> None:
    a = one(hip_t(-1.0, date=last))
    assert a.months_since_last_dxa == months
    assert a.last_dxa_date == last


def test_cs_8_draft_order() -> None:
    fs = run(
        device("d1"),
        lumbar_t(-2.0, date="2025-01-31", device="d1"),
        draft_orders=[draft_dxa("o1", authored="2026-11-20")],
    )
    [d] = of_type(fs, DraftOrder)
    assert d.id == "draft_order:ServiceRequest/o1"
    assert d.order_date == "2026-11-20"
    assert d.last_dxa_date == "2025-01-31"
    assert d.months_since_last_dxa == 21
    # CS-8.2 rev 2: Medicare counts the months after the scan's month
    assert d.earliest_date == "2027-01-01"
    assert d.coverage_months == 21
    assert d.scanner == "Hologic Horizon A"  # CS-1.4 rev 2: manufacturer and model


def test_draft_order_date_defaults_to_as_of_and_counts_calendar_months() -> None:
    fs = run(lumbar_t(-2.0, date="2024-03-31"), draft_orders=[draft_dxa()])
    [d] = of_type(fs, DraftOrder)
    assert d.order_date == "2026-11-23"
    assert d.earliest_date == "2026-03-01"
    assert d.months_since_last_dxa == 31


@pytest.mark.parametrize(
    ("code", "system"),
    [
        ("38269-7", "http://loinc.org"),
        ("77080", "http://www.ama-assn.org/go/cpt"),
        ("77081", "http://www.ama-assn.org/go/cpt"),
        ("77085", "http://www.ama-assn.org/go/cpt"),
        ("312681000", "http://snomed.info/sct"),
    ],
)
def test_cs_8_1_dxa_order_codes(code: str, system: str) -> None:
    fs = run(
        draft_orders={
            "resourceType": "Bundle",
            "entry": [{"resource": draft_dxa(code=code, system=system)}],
        }
    )
    assert len(of_type(fs, DraftOrder)) == 1


def test_non_dxa_draft_is_ignored() -> None:
    fs = run(draft_orders=[draft_dxa("o2", code="80061")])
    assert of_type(fs, DraftOrder) == []
    assert (
        "not a DXA order" in {i.resource: i.reason for i in fs.trace.ignored}["ServiceRequest/o2"]
    )


def test_draft_copies_exception_facts() -> None:
    from tests.fhir_factory import condition

    fs = run(
        condition("E21.0"),
        med_statement("prednisone", dose_mg=10, start="2026-01-01"),
        draft_orders=[draft_dxa()],
    )
    [d] = of_type(fs, DraftOrder)
    assert d.primary_hyperparathyroidism is True
    assert d.glucocorticoid_mg_day == 10.0
    assert d.last_dxa_date is None
    assert d.months_since_last_dxa is None


def test_cs_2_6_minimum_vertebrae_is_read_from_the_rules_when_set() -> None:
    from cds.facts import build_facts
    from tests.fhir_factory import AS_OF, patient

    two = observation("38267-1", -3.0, "{T-score}", body_site={"text": "L1-L2"})
    fs = build_facts([patient(), two, hip_t(-1.2)], {**PARAMS, "min_evaluable_vertebrae": 3}, AS_OF)
    assert assessment(fs).lowest_t_site == "total-hip"


@pytest.mark.parametrize(
    ("order", "coverage", "earliest"),
    [("2026-06-30", 22, "2026-07-01"), ("2026-07-01", 23, "2026-07-01")],
)
def test_cs_8_2_rev2_medicare_month_counting(order: str, coverage: int, earliest: str) -> None:
    """The spec's example: last scan 2024-07-15, covered from 2026-07-01 (CS-8.2 rev 2)."""
    fs = run(lumbar_t(-2.0, date="2024-07-15"), draft_orders=[draft_dxa(authored=order)])
    [d] = of_type(fs, DraftOrder)
    assert d.earliest_date == earliest
    assert d.coverage_months == coverage


def test_cs_8_2_rev2_forearm_only_exam_is_not_an_axial_dxa() -> None:
    forearm = observation("38265-5", -2.0, unit="{T-score}", date="2026-01-10")
    fs = run(
        lumbar_t(-2.0, date="2024-07-15"), forearm, draft_orders=[draft_dxa(authored="2026-06-01")]
    )
    [d] = of_type(fs, DraftOrder)
    assert d.last_dxa_date == "2024-07-15"
    assert assessment(fs).dxa_on_record
