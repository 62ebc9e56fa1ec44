"""Partial dates, time zones, and whole months (cds.fhir.dates; rule in docs/fhir-inputs.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.fhir.dates import add_months, parse_when, whole_months
from tests.facts.helpers import one
from tests.fhir_factory import hip_t, lumbar_t


def test_partial_year_is_its_first_day() -> None:
    w = parse_when("2024")
    assert (w.date, w.precision, w.partial) == (date(2024, 1, 1), "year", True)


def test_partial_month_is_its_first_day() -> None:
    w = parse_when("2024-05")
    assert (w.date, w.precision) == (date(2024, 5, 1), "month")


def test_date_keeps_the_local_calendar_day() -> None:
    w = parse_when("2024-05-01T23:30:00-05:00")
    assert w.date == date(2024, 5, 1)
    assert w.instant == datetime(2024, 5, 2, 4, 30, tzinfo=UTC)


def test_time_without_offset_is_utc() -> None:
    assert parse_when("2024-05-01T10:00:00").instant == datetime(2024, 5, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad",
    [
        "2024-13",
        "2024-02-30",
        "24-01-01",
        "2024/01/01",
        "",
        "2024-01-01T25:00:00Z",
        "2024-01-01T10:00:00+15:00",
        "0000",
    ],
)
def test_invalid_dates_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="'"):
        parse_when(bad)


def test_latest_is_by_instant_across_time_zones() -> None:
    # same calendar day written in two zones: the later instant is the later result
    a = one(
        lumbar_t(-1.0, date="2026-01-10T08:00:00+09:00"),  # 2026-01-09T23:00Z
        lumbar_t(-2.0, date="2026-01-09T20:00:00-05:00"),  # 2026-01-10T01:00Z
    )
    assert a.last_dxa_date == "2026-01-09"  # the later instant, its own calendar date


def test_partial_scan_dates_order_before_full_dates_in_the_same_period() -> None:
    a = one(hip_t(-1.0, date="2025"), hip_t(-2.0, date="2025-03-01"))
    assert a.total_hip_t == -2.0
    b = one(hip_t(-1.0, date="2025-06"))
    assert b.last_dxa_date == "2025-06-01"


def test_month_arithmetic_clamps_to_month_end() -> None:
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2024, 3, 31), 11) == date(2025, 2, 28)
    assert whole_months(date(2024, 3, 31), date(2025, 2, 28)) == 11
    assert whole_months(date(2024, 3, 15), date(2024, 4, 14)) == 0
    assert whole_months(date(2024, 3, 15), date(2024, 4, 15)) == 1
    assert whole_months(date(2024, 4, 15), date(2024, 3, 15)) == -1


@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 1, 1)),
    st.integers(min_value=0, max_value=600),
)
def test_whole_months_inverts_add_months(start: date, n: int) -> None:
    assert whole_months(start, add_months(start, n)) == n
