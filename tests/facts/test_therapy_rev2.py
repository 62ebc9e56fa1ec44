"""Clinical revision 2, therapy part: CS-3.6, CS-9.1, CS-9.2 and CS-9.4 facts.

Windows come from the rule parameters (tests.fhir_factory.PARAMS mirrors rules/*.yaml, and
tests/clinical checks the rule set against it); dates are derived from them here.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds.fhir.dates import add_months
from cds.rules import default_rules_dir, load_ruleset
from tests.facts.helpers import ignored, one, run
from tests.fhir_factory import (
    AS_OF,
    ICD10CM,
    PARAMS,
    alp,
    condition,
    med_admin,
    med_statement,
    observation,
)

RULES = load_ruleset(default_rules_dir())
REV2 = (
    "denosumab_overdue_months",
    "egfr_window_months",
    "possible_hpp_bisphosphonate_months",
    "possible_hpp_denosumab_months",
    "holiday_after_months",
    "holiday_reassess_from_months",
    "holiday_reassess_to_months",
    "ppi_long_term_months",
    "lab_recent_months",
)


@pytest.mark.parametrize("name", REV2)
def test_factory_params_are_the_rule_parameters(name: str) -> None:
    assert RULES.parameters[name] == PARAMS[name]


# ------------------------------------------------------------------ CS-9.1 calendar months


def test_cs_9_1_overdue_counts_calendar_months_both_sides() -> None:
    months = int(PARAMS["denosumab_overdue_months"])
    last = add_months(AS_OF, -months)  # exactly N months ago: not yet "more than"
    a = one(med_admin("denosumab", date=last.isoformat()))
    assert a.denosumab_overdue is False
    assert a.denosumab_overdue_from == date.fromordinal(AS_OF.toordinal() + 1).isoformat()
    a = one(med_admin("denosumab", date=date.fromordinal(last.toordinal() - 1).isoformat()))
    assert a.denosumab_overdue is True
    assert a.denosumab_overdue_from == AS_OF.isoformat()


def test_cs_9_1_spec_example_2026_01_15_fires_from_2026_08_16() -> None:
    dose = med_admin("denosumab", date="2026-01-15")
    assert one(dose, as_of=date(2026, 8, 15)).denosumab_overdue is False
    assert one(dose, as_of=date(2026, 8, 16)).denosumab_overdue is True


def egfr(value: float, when: str) -> dict[str, object]:
    return observation("62238-1", value, "mL/min/{1.73_m2}", date=when)


def test_cs_9_1_latest_egfr_within_the_window() -> None:
    window = int(PARAMS["egfr_window_months"])
    inside = add_months(AS_OF, -window).isoformat()
    outside = date.fromordinal(add_months(AS_OF, -window).toordinal() - 1).isoformat()
    a = one(egfr(30, outside), egfr(50, inside))
    assert a.egfr == 50.0
    assert a.egfr_date == inside
    fs = run(
        egfr(
            30,
            outside,
        )
    )
    a = one(egfr(30, outside))
    assert a.egfr is None
    assert any("older than" in r for r in ignored(fs, "Observation/").values())


@pytest.mark.parametrize("code", ["N18.4", "N18.5", "N18.6", "Z99.2", "N18.41"])
def test_cs_9_1_ckd_4_5_and_dialysis(code: str) -> None:
    assert one(condition(code, ICD10CM, display="CKD")).advanced_ckd is True


def test_cs_9_1_ckd_3_is_not_advanced() -> None:
    assert one(condition("N18.30", ICD10CM, display="CKD stage 3")).advanced_ckd is False


# ------------------------------------------------------------------ CS-3.6 hypophosphatasia


def test_cs_3_6_e83_39_hypophosphatemia_is_not_hypophosphatasia_and_the_trace_says_why() -> None:
    cond = condition("E83.39", ICD10CM, display="Hypophosphatemia", id="c1")
    fs = run(cond)
    assert one(cond).hypophosphatasia_condition is False
    reason = ignored(fs, "Condition/")["Condition/c1"]
    assert "not counted as hypophosphatasia" in reason
    assert "Hypophosphatemia" in reason


def test_cs_3_6_e83_39_naming_hypophosphatasia_counts() -> None:
    cond = condition("E83.39", ICD10CM, display="Other disorders", text="Adult hypophosphatasia")
    assert one(cond).hypophosphatasia_condition is True


def test_cs_3_6_alp_on_a_bisphosphonate_is_listed_not_used() -> None:
    months = int(PARAMS["possible_hpp_bisphosphonate_months"])
    day = date(2026, 10, 1)
    dose = add_months(day, -months).isoformat()  # the edge of the window: still on therapy
    fs = run(alp(22, id="alp1", date=day.isoformat()), med_admin("zoledronic acid", date=dose))
    a = one(alp(22, id="alp1", date=day.isoformat()), med_admin("zoledronic acid", date=dose))
    assert a.untreated_alkaline_phosphatase is None
    assert "not used for possible hypophosphatasia" in ignored(fs)["Observation/alp1"]
    earlier = date.fromordinal(add_months(day, -months).toordinal() - 1).isoformat()
    a = one(alp(22, date=day.isoformat()), med_admin("zoledronic acid", date=earlier))
    assert a.untreated_alkaline_phosphatase == 22.0


def test_cs_3_6_alp_after_denosumab_window() -> None:
    months = int(PARAMS["possible_hpp_denosumab_months"])
    day = date(2026, 10, 1)
    inside = add_months(day, -months).isoformat()
    assert (
        one(
            alp(22, date=day.isoformat()), med_admin("denosumab", date=inside)
        ).untreated_alkaline_phosphatase
        is None
    )
    before = date.fromordinal(add_months(day, -months).toordinal() - 1).isoformat()
    a = one(alp(22, date=day.isoformat()), med_admin("denosumab", date=before))
    assert a.untreated_alkaline_phosphatase == 22.0


# ---------------------------------------------------------- CS-9.2 / CS-9.4 covered period


def yearly_zoledronic(first: date, n: int) -> list[dict[str, object]]:
    return [
        med_admin("zoledronic acid", date=add_months(first, 12 * i).isoformat()) for i in range(n)
    ]


def test_cs_9_2_yearly_zoledronic_review_open_when_the_fourth_dose_is_due() -> None:
    first = add_months(AS_OF, -36)
    a = one(*yearly_zoledronic(first, 3))
    assert a.iv_bisphosphonate_years == 3.0
    assert a.antiresorptive_current is True  # the third infusion covers up to today
    assert a.bisphosphonate_review_open is True
    later = add_months(AS_OF, 3)  # the fourth dose is late: the review is still due
    a = one(*yearly_zoledronic(first, 3), as_of=later)
    assert a.antiresorptive_current is False
    assert a.bisphosphonate_review_open is True
    assert a.iv_bisphosphonate_years == 3.0


def test_cs_9_2_review_closes_and_cs_9_4_holiday_starts_at_the_same_day() -> None:
    after = int(PARAMS["holiday_after_months"])
    first = date(2020, 1, 10)
    covered_to = add_months(first, 36)
    edge = add_months(covered_to, after)
    a = one(*yearly_zoledronic(first, 3), as_of=date.fromordinal(edge.toordinal() - 1))
    assert (a.bisphosphonate_review_open, a.bisphosphonate_holiday) == (True, False)
    a = one(*yearly_zoledronic(first, 3), as_of=edge)
    assert (a.bisphosphonate_review_open, a.bisphosphonate_holiday) == (False, True)
    assert (
        a.holiday_reassess_from
        == add_months(covered_to, int(PARAMS["holiday_reassess_from_months"])).isoformat()
    )
    assert (
        a.holiday_reassess_to
        == add_months(covered_to, int(PARAMS["holiday_reassess_to_months"])).isoformat()
    )


def test_cs_9_4_a_switch_to_denosumab_is_not_a_holiday() -> None:
    first = date(2020, 1, 10)
    a = one(*yearly_zoledronic(first, 3), med_admin("denosumab", date="2024-06-01"))
    assert a.bisphosphonate_holiday is False


# ------------------------------------------------------------ CS-1.8 systemic glucocorticoids


def with_route(ms: dict[str, Any], code: str, display: str) -> dict[str, Any]:
    ms["dosage"][0]["route"] = {
        "coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]
    }
    return ms


@pytest.mark.parametrize("route", ["26643006", "47625008", "78421000"])
def test_cs_1_8_listed_routes_are_systemic(route: str) -> None:
    # the route wins over the text
    ms = with_route(med_statement("prednisone (inhaled?)", dose_mg=5), route, "route")
    assert one(ms).glucocorticoid_current is True


@pytest.mark.parametrize(
    "text",
    [
        "hydrocortisone 1% topical cream",
        "dexamethasone 0.1% eye drops",
        "prednisolone ophthalmic suspension",
        "hydrocortisone enema",
        "prednisolone suppository",
        "methylprednisolone intra-articular injection",
        "dexamethasone otic",
    ],
)
def test_cs_1_8_non_systemic_words_exclude_and_the_trace_says_why(text: str) -> None:
    ms = med_statement(text, id="m1", dose_mg=5)
    fs = run(ms)
    a = one(ms)
    assert a.glucocorticoid_current is False
    assert a.glucocorticoid_mg_day is None
    assert "not systemic" in ignored(fs)["MedicationStatement/m1"]


def test_cs_1_8_a_topical_route_code_is_read_by_its_words() -> None:
    ms = with_route(med_statement("hydrocortisone", dose_mg=5), "6064005", "Topical route")
    assert one(ms).glucocorticoid_current is False


def test_cs_1_8_year_is_not_ear() -> None:
    ms = med_statement("prednisone 5 mg tablet, reviewed every year", dose_mg=5)
    assert one(ms).glucocorticoid_current is True


def test_cs_1_8_xgeva_is_not_osteoporosis_therapy_but_cs_9_1_still_applies() -> None:
    doses = [med_admin("Xgeva 120 mg/1.7 mL", date=d) for d in ("2025-11-10", "2026-01-05")]
    a = one(*doses)
    assert a.denosumab_oncology is True
    assert a.denosumab_used is True
    assert a.denosumab_overdue is True
    assert a.bone_therapy_ever is False
    assert a.antiresorptive_current is False


def test_cs_1_8_denosumab_120_mg_by_dose() -> None:
    ms = med_statement("denosumab", atc="M05BX04", dose_mg=120, start="2026-01-01")
    assert one(ms).denosumab_oncology is True
    ms = med_statement("denosumab", atc="M05BX04", dose_mg=60, start="2026-01-01")
    assert one(ms).denosumab_oncology is False


def test_cs_1_8_zoledronic_4_mg_does_not_count_towards_cs_9_2() -> None:
    doses = [
        med_admin("zoledronic acid 4 mg/5 mL", date=add_months(AS_OF, -12 * i).isoformat())
        for i in range(4)
    ]
    a = one(*doses)
    assert a.iv_bisphosphonate_years is None
    assert a.bisphosphonate_review_open is False


# ------------------------------------------------------------------ CS-6.8 bone-harming drugs


def test_cs_6_8_drugs_are_named_by_atc_or_name() -> None:
    a = one(
        med_statement(None, atc="L02BG03", start="2025-01-01"),  # anastrozole
        med_statement("Tegretol 200 mg", start="2020-01-01"),  # carbamazepine
        med_statement("Depo-Provera 150 mg/mL", start="2022-01-01"),
    )
    assert a.bone_harming_drug_count == 3
    assert a.bone_harming_drugs is not None
    for words in ("anastrozole", "carbamazepine", "depot medroxyprogesterone"):
        assert words in a.bone_harming_drugs


def test_cs_6_8_ppi_only_when_long_term() -> None:
    months = int(PARAMS["ppi_long_term_months"])
    edge = add_months(AS_OF, -months).isoformat()
    assert one(med_statement("omeprazole 20 mg", start=edge)).bone_harming_drug_count == 1
    later = date.fromordinal(add_months(AS_OF, -months).toordinal() + 1).isoformat()
    fs = run(med_statement("omeprazole 20 mg", start=later, id="m1"))
    assert one(med_statement("omeprazole 20 mg", start=later)).bone_harming_drug_count == 0
    assert "long-term" in ignored(fs)["MedicationStatement/m1"]


def test_cs_6_8_stopped_drugs_are_not_named() -> None:
    ms = med_statement("letrozole", status="completed", start="2019-01-01", end="2024-01-01")
    assert one(ms).bone_harming_drug_count == 0


def test_cs_6_8_systemic_glucocorticoid_is_named() -> None:
    a = one(med_statement("prednisone", dose_mg=5))
    assert a.bone_harming_drugs == "systemic glucocorticoid (prednisone)"


def test_cs_9_1_an_oncology_dose_bisphosphonate_after_xgeva_is_a_transition() -> None:
    a = one(
        med_admin("Xgeva 120 mg", date="2026-01-05"),
        med_admin("Zometa 4 mg", date="2026-02-02"),
    )
    assert a.bisphosphonate_after_denosumab is True


# -------------------------------------------------------------- CS-6.1 recent lab results


def test_cs_6_1_lab_results_within_the_window_are_recent() -> None:
    months = int(PARAMS["lab_recent_months"])
    edge = add_months(AS_OF, -months)
    before = date.fromordinal(edge.toordinal() - 1)
    a = one(
        observation("3016-3", 2.1, "m[IU]/L", date=edge.isoformat()),
        observation("2731-8", 40, "pg/mL", date=before.isoformat()),
    )
    assert a.recent_lab_orders == "lab-tsh"
    assert a.recent_lab_tests is not None
    assert edge.isoformat() in a.recent_lab_tests
