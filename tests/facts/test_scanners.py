"""CS-1.4 (rev 2) scanner identity and names, CS-4.1 (rev 2) same-device pairs and CS-4.5
(rev 2) total hip change, from FHIR. LSCs come from the rule parameters (PARAMS)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.facts.helpers import one
from tests.fhir_factory import PARAMS, device, lumbar_bmd, med_statement, observation

LSC_LUMBAR = Decimal(str(PARAMS["lsc_lumbar_spine_percent"]))
LSC_HIP = Decimal(str(PARAMS["lsc_total_hip_percent"]))


def hip_bmd(value: Any, **kw: Any) -> dict[str, Any]:
    return observation("38261-4", value, "g/cm2", **kw)


# ------------------------------------------------------------------ CS-1.4 identity


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("Hologic Horizon A SN 55012", "hologic  horizon a sn 55012", True),
        ("GE Lunar iDXA 200417", "GE LUNAR IDXA   200417", True),
        ("Hologic Horizon A sn", "HOLOGIC HORIZON A SN", True),  # "SN" as a word
        ("Hologic Horizon A", "Hologic Horizon A", False),  # no identifier in the text
        ("Room 123", "Room 123", False),  # three digits are not a serial
        ("GE Lunar iDXA 200417", "GE Lunar iDXA 200418", False),
    ],
)
def test_cs_1_4_display_identifies_a_device_only_with_a_serial(
    first: str, second: str, same: bool
) -> None:
    a = one(
        lumbar_bmd(1.0, date="2024-01-10", device_display=first),
        lumbar_bmd(0.99, date="2026-01-10", device_display=second),
    )
    assert a.change_comparable is same


def test_cs_1_4_name_is_manufacturer_and_model_never_the_reference() -> None:
    a = one(
        device("d1", "Hologic", None, modelNumber="Horizon W"),
        lumbar_bmd(1.0, date="2026-01-10", device="d1"),
    )
    assert a.scanner == "Hologic Horizon W"


def test_cs_1_4_reference_without_device_shows_the_display_or_nothing() -> None:
    a = one(lumbar_bmd(1.0, device="abc", device_display="DXA room 2"))
    assert a.scanner == "DXA room 2"
    b = one(lumbar_bmd(1.0, device="abc"))
    assert b.scanner is None  # never "Device/abc"
    assert b.manufacturer == "unknown"


def test_cs_1_4_unidentified_scanner_is_named_in_words() -> None:
    a = one(
        device("d1"),
        lumbar_bmd(1.0, date="2024-01-10", device="abc"),
        lumbar_bmd(0.9, date="2026-01-10", device="d1"),
    )
    assert a.change_comparable is False
    assert "Device/" not in (a.change_reason or "")
    assert "scanner not identified" in (a.change_reason or "")


# ------------------------------------------------------------------ CS-4.1 same device


def _pct(old: str, new: str) -> float:
    return float((Decimal(new) - Decimal(old)) / Decimal(old) * 100)


def test_cs_4_1_skips_a_scan_on_another_device_in_between() -> None:
    a = one(
        device("d1"),
        device("d2", "GE Healthcare", "Lunar iDXA"),
        lumbar_bmd(1.0, date="2022-01-10", device="d1"),
        lumbar_bmd(0.8, date="2024-01-10", device="d2"),
        lumbar_bmd(0.97, date="2026-01-10", device="d1"),
    )
    assert a.change_comparable is True
    assert (a.change_old_date, a.change_new_date) == ("2022-01-10", "2026-01-10")
    assert a.change_percent == _pct("1.0", "0.97")
    assert a.change_skipped is not None
    assert "2024-01-10 (GE Healthcare Lunar iDXA)" in a.change_skipped


def test_cs_4_1_no_earlier_scan_on_the_latest_device_is_not_comparable() -> None:
    a = one(
        device("d1"),
        device("d2", "GE Healthcare", "Lunar iDXA"),
        lumbar_bmd(1.0, date="2022-01-10", device="d1"),
        lumbar_bmd(0.9, date="2026-01-10", device="d2"),
    )
    assert a.change_comparable is False
    assert a.change_percent is None
    assert "no earlier scan on the latest scan's scanner" in (a.change_reason or "")


# ------------------------------------------------------------------ CS-4.5 total hip


def _hip_pair(old: Decimal, new: Decimal, **kw: Any) -> Any:
    return one(
        device("d1"),
        hip_bmd(float(old), date="2024-01-10", device="d1"),
        hip_bmd(float(new), date="2026-01-10", device="d1"),
        **kw,
    )


def test_cs_4_5_hip_loss_exactly_at_the_lsc_is_significant() -> None:
    old = Decimal("1.000")
    a = _hip_pair(old, old * (1 - LSC_HIP / 100))
    assert a.hip_change_comparable is True
    assert a.hip_change_percent == float(-LSC_HIP)
    assert a.hip_change_significant is True
    assert a.hip_change_direction == "loss"
    assert a.hip_change_lsc == float(LSC_HIP)
    assert a.significant_loss_any_site is True
    assert a.significant_loss_on_therapy is False


def test_cs_4_5_hip_loss_just_below_the_lsc_is_not() -> None:
    old = Decimal("1.000")
    a = _hip_pair(old, old * (1 - (LSC_HIP - Decimal("0.1")) / 100))
    assert a.hip_change_significant is False
    assert a.hip_change_direction == "stable"
    assert a.significant_loss_any_site is False


def test_cs_4_5_hip_loss_on_therapy_counts_for_cs_4_4() -> None:
    old = Decimal("1.000")
    a = one(
        device("d1"),
        lumbar_bmd(1.0, date="2024-01-10", device="d1"),
        lumbar_bmd(1.0, date="2026-01-10", device="d1"),
        hip_bmd(float(old), date="2024-01-10", device="d1"),
        hip_bmd(float(old * (1 - LSC_HIP / 100)), date="2026-01-10", device="d1"),
        med_statement("alendronate", start="2023-01-01"),
    )
    assert a.change_direction == "stable"  # the spine alone would say no loss
    assert a.hip_change_direction == "loss"
    assert a.significant_loss_on_therapy is True
    assert a.significant_loss_any_site is True


def test_cs_4_5_hip_sides_are_not_mixed() -> None:
    a = one(
        device("d1"),
        observation("46278-8", 1.0, "g/cm2", date="2024-01-10", device="d1"),
        observation("46279-6", 0.8, "g/cm2", date="2026-01-10", device="d1"),
    )
    assert a.hip_change_comparable is False


def test_cs_1_4_a_reference_copied_into_the_display_names_nothing() -> None:
    a = one(lumbar_bmd(1.0, device="abc", device_display="Device/abc"))
    assert a.scanner is None


# ------------------------------------------------------------------ CS-2.5 rev 2


WINDOW = int(PARAMS["current_exam_window_days"])


def forearm_t(value: Any, **kw: Any) -> dict[str, Any]:
    return observation("38265-5", value, "{T-score}", **kw)


def test_cs_2_5_forearm_is_a_diagnostic_site() -> None:
    from tests.fhir_factory import hip_t, lumbar_t

    a = one(lumbar_t(-1.9), hip_t(-2.0), forearm_t(-2.7))
    assert (a.lowest_t, a.lowest_t_site) == (-2.7, "forearm")
    assert a.forearm_t == -2.7
    assert "forearm (1/3 radius) T -2.7 (2026-01-10)" in (a.sites_used or "")


@pytest.mark.parametrize(("days", "current"), [(WINDOW, True), (WINDOW + 1, False)])
def test_cs_2_5_only_the_current_exam_sets_the_category(days: int, current: bool) -> None:
    from datetime import date, timedelta

    from tests.fhir_factory import hip_t, lumbar_t

    older = (date(2026, 1, 10) - timedelta(days=days)).isoformat()
    a = one(lumbar_t(-1.5, date="2026-01-10"), hip_t(-2.9, date=older))
    assert (a.lowest_t == -2.9) is current
    assert (f"total hip T -2.9 ({older})" in (a.sites_history or "")) is not current
    assert a.total_hip_t == -2.9  # still reported, with its date in the history


def test_cs_2_5_forearm_only_exam_is_a_dxa_but_not_an_axial_dxa() -> None:
    a = one(forearm_t(-2.1))
    assert a.has_dxa is True  # CS-10.1 does not fire
    assert a.last_axial_dxa_date is None  # CS-8.2 counts axial DXAs only
    assert a.last_dxa_date is None
    assert a.lowest_t_site == "forearm"
