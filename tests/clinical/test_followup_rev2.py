"""Revision 2, follow-up part: rescan windows in the past (CS-7.9), the untreated-band
eligibility (CS-7.6), the 24-month cap (CS-7.7) and Medicare month counting (CS-8.2),
through the rules and card builder. Thresholds and intervals are read from the rules."""

from __future__ import annotations

from datetime import date

from cds.fhir.dates import add_months
from tests.clinical.helpers import cards, lumbar, order, ruleset
from tests.properties.helpers import payload

AS_OF = "2026-11-23"


def _param(name: str) -> int:
    return int(ruleset().parameters[name])


def test_cs_7_9_a_window_that_ended_before_the_as_of_date_is_overdue() -> None:
    months = _param("rescan_routine_low_months")
    last = add_months(date.fromisoformat(AS_OF), -months - 1)
    due = add_months(last, months).isoformat()
    got = cards(lumbar(-1.8, last_dxa_date=last.isoformat(), as_of=AS_OF))["rescan-interval"]
    assert got["summary"].startswith(f"DXA overdue since {due}")
    assert "Next DXA due" not in got["summary"]
    assert "Overdue" in got["detail"]
    assert payload(got)["dueTo"] == due  # the payload keeps the window


def test_cs_7_9_a_window_ending_on_the_as_of_date_is_not_overdue() -> None:
    months = _param("rescan_routine_low_months")
    last = add_months(date.fromisoformat(AS_OF), -months)
    got = cards(lumbar(-1.8, last_dxa_date=last.isoformat(), as_of=AS_OF))["rescan-interval"]
    assert got["summary"].startswith(f"Next DXA due {AS_OF}")
    assert "Overdue" not in got["detail"]


def test_cs_7_6_lumbar_osteoporosis_beside_a_normal_hip_is_never_ten_years() -> None:
    """Issue 10's first example: untreated woman of 70, lumbar T -2.9, hip -1.2."""
    got = cards(lumbar(-2.9, age=70, total_hip_t=-1.2, lowest_hip_t=-1.2, as_of=AS_OF))
    rescan = payload(got["rescan-interval"])
    assert rescan["basis"] == "routine"
    assert rescan["maxMonths"] == _param("rescan_routine_low_months")
    assert "treatment-discussion" in payload(got["workup"])["items"]
    assert "fracture-risk-assessment" not in payload(got["workup"])["items"]


def test_cs_7_7_untreated_clinical_osteoporosis_is_capped() -> None:
    got = cards(
        lumbar(-0.5, clinical_osteoporosis=True, clinical_basis="hip-fracture", as_of=AS_OF)
    )
    assert payload(got["rescan-interval"])["maxMonths"] == _param("rescan_routine_low_months")
    classification = got["bmd-classification"]
    assert classification["summary"].startswith("Osteoporosis (clinical diagnosis: hip fracture)")
    assert payload(classification)["category"] == "normal"
    assert payload(classification)["clinicalOsteoporosis"] is True
    assert "decides" not in classification["detail"]


def test_cs_8_2_too_soon_follows_the_counted_months() -> None:
    limit = _param("dxa_min_interval_months")
    soon = cards(order(limit - 1), hook="order-select")["dxa-order-timing"]
    assert payload(soon)["tooSoon"] is True
    ok = cards(order(limit), hook="order-select")["dxa-order-timing"]
    assert payload(ok)["tooSoon"] is False
