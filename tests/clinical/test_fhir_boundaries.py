"""Boundaries again, from FHIR JSON through the whole pipeline (cds.fhir -> cds.facts ->
engine -> cards): the numbers the facts stage derives (change %, months, days, vertebral
differences) must land on the same side of each boundary as the rules say.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from functools import cache
from typing import Any

import pytest

from cds.contracts.cards import dump_cards
from cds.pipeline import EvaluationInput, Evaluator
from tests.clinical.helpers import AS_OF, EXT, param, ruleset

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
VERTEBRA = {"L1": "61032001", "L2": "53983007", "L3": "55492004", "L4": "71996003"}


@cache
def evaluator() -> Evaluator:
    return Evaluator(ruleset())  # the rule set the other clinical tests use (loaded once)


def patient(gender: str = "female", birth: str = "1960-03-01") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", "gender": gender, "birthDate": birth}


def device(manufacturer: str = "Hologic", dev_id: str = "dxa1") -> dict[str, Any]:
    return {"resourceType": "Device", "id": dev_id, "manufacturer": manufacturer}


def obs(
    oid: str,
    code: str,
    value: float,
    unit: str,
    when: str = "2026-01-15",
    *,
    dev: str | None = "dxa1",
    system: str = LOINC,
    text: str | None = None,
    body_site: str | None = None,
    status: str = "final",
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }
    if text:
        resource["code"]["text"] = text
    if dev:
        resource["device"] = {"reference": f"Device/{dev}"}
    if body_site:
        resource["bodySite"] = {"coding": [{"system": SCT, "code": body_site}]}
    return resource


def lumbar_t(value: float, when: str = "2026-01-15", **kw: Any) -> dict[str, Any]:
    return obs(f"lt-{when}", "38267-1", value, "{T-score}", when, **kw)


def lumbar_z(value: float) -> dict[str, Any]:
    return obs("lz", "85394-5", value, "{Z-score}")


def lumbar_bmd(value: float, when: str) -> dict[str, Any]:
    return obs(f"lbmd-{when}", "24966-4", value, "g/cm2", when)


def run(*resources: dict[str, Any], hook: str = "patient-view", **kw: Any) -> dict[str, Any]:
    result = evaluator().evaluate(
        EvaluationInput(hook=hook, resources=list(resources), as_of=AS_OF, **kw)
    )
    return {c["source"]["topic"]["code"]: c for c in dump_cards(result.cards)}


def ext(card: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = card["extension"][EXT]
    return data


@pytest.mark.parametrize(
    ("t", "category"),
    [
        (param("normal_t"), "normal"),
        (param("normal_t", "-0.1"), "low-bone-mass"),
        (param("osteoporosis_t", "0.1"), "low-bone-mass"),
        (param("osteoporosis_t"), "osteoporosis"),
    ],
)
def test_who_category_from_a_lumbar_observation(t: float, category: str) -> None:
    """CS-2.2 boundaries from FHIR; CS-2.5 the lumbar value and date are shown."""
    got = run(patient(), device(), lumbar_t(t))
    card = got["bmd-classification"]
    assert ext(card)["category"] == category
    assert ext(card)["value"] == t
    assert "2026-01-15" in card["detail"]


def test_menopausal_status_assumed_from_age_is_stated() -> None:
    """CS-1.6 / CS-2.1: a woman of 66 is treated as postmenopausal and the card says so."""
    card = run(patient(), device(), lumbar_t(-1.5))["bmd-classification"]
    assert "Assumed" in card["detail"]
    assert "postmenopausal" in card["detail"]


@pytest.mark.parametrize(
    ("z", "category"),
    [(param("z_below_expected"), "below"), (param("z_below_expected", "0.1"), "within")],
)
def test_z_wording_for_a_premenopausal_woman(z: float, category: str) -> None:
    """CS-2.3 boundary; CS-2.1 a woman of 40 is classified on the Z-score."""
    got = run(patient(birth="1986-05-01"), device(), lumbar_z(z))
    assert ext(got["bmd-classification"])["category"] == f"{category}-expected-range-for-age"
    assert ("workup" in got) is (category == "below")  # CS-6: Z <= -2.0 triggers the workup


@pytest.mark.parametrize(
    ("new_bmd", "significant", "pct"), [(0.947, True, -5.3), (0.948, False, -5.2)]
)
def test_change_exactly_at_the_lsc(new_bmd: float, significant: bool, pct: float) -> None:
    """CS-4.1/4.2: BMD 1.000 -> 0.947 is -5.3% (= LSC, significant); 0.948 is -5.2%."""
    got = run(
        patient(),
        device(),
        lumbar_t(-0.5, "2024-11-11"),
        lumbar_bmd(1.0, "2024-11-11"),
        lumbar_t(-1.0, "2026-11-09"),
        lumbar_bmd(new_bmd, "2026-11-09"),
    )
    data = ext(got["bmd-change"])
    assert data["comparable"] is True
    assert data["percentChange"] == pct
    assert data["significant"] is significant
    assert data["direction"] == ("loss" if significant else "stable")


def test_scans_without_a_device_are_not_comparable() -> None:
    """CS-4.3 / CS-1.4: an unknown scanner is never 'the same scanner'."""
    got = run(
        patient(),
        lumbar_t(-0.5, "2024-11-11", dev=None),
        lumbar_bmd(1.0, "2024-11-11") | {"device": None},
        lumbar_t(-1.0, "2026-11-09", dev=None),
        lumbar_bmd(0.9, "2026-11-09") | {"device": None},
    )
    data = ext(got["bmd-change"])
    assert data["comparable"] is False
    assert "significant" not in data


@pytest.mark.parametrize(("l3", "flagged"), [(-0.9, True), (-1.0, False)])
def test_vertebral_level_difference(l3: float, flagged: bool) -> None:
    """CS-3.1: L2 -2.0 vs L3 -0.9 differs by 1.1 (flagged), vs -1.0 by exactly 1.0 (not)."""
    values = {"L1": -2.0, "L2": -2.0, "L3": l3, "L4": -2.0}
    resources = [patient(), device(), lumbar_t(-1.8)]
    for name, value in values.items():
        resources.append(obs(f"v-{name}", "38267-1", value, "{T-score}", body_site=VERTEBRA[name]))
    got = run(*resources)
    findings = ext(got["artifact-warning"])["findings"] if "artifact-warning" in got else []
    assert ("vertebral-level-discordance" in findings) is flagged


@pytest.mark.parametrize(
    ("value", "category"),
    [
        (param("tbs_degraded_max_women"), "degraded"),
        (param("tbs_degraded_max_women", "0.001"), "partially-degraded"),
    ],
)
def test_tbs_recognised_by_text_at_its_boundary(value: float, category: str) -> None:
    """CS-5.3: a local code whose text says 'trabecular bone score'; CS-5.1 boundary."""
    tbs = obs(
        "tbs", "local-tbs", value, "1", system="urn:local", text="Trabecular Bone Score L1-L4"
    )
    got = run(patient(), device(), lumbar_t(-0.5), tbs)
    assert ext(got["tbs"])["tbsCategory"] == category


def _denosumab(last: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": f"dmab-{last}",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.whocc.no/atc", "code": "M05BX04"}],
            "text": "denosumab 60 mg",
        },
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": last,
    }


def _months_before(day: date, months: int) -> date:
    """The same day of the month `months` calendar months earlier (clamped to the month's
    last day), as CS-9.1 counts calendar months."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


_OVERDUE_FROM = _months_before(AS_OF, param("denosumab_overdue_months"))


@pytest.mark.parametrize(
    ("last", "critical"),
    [
        ((_OVERDUE_FROM - timedelta(days=1)).isoformat(), True),
        (_OVERDUE_FROM.isoformat(), False),
    ],
)
def test_denosumab_gap(last: str, critical: bool) -> None:
    """CS-9.1 rev 2: more than `denosumab_overdue_months` calendar months since the last
    dose: a dose that many months before the as-of date is due today, not yet overdue; one
    day earlier is overdue."""
    got = run(patient(), device(), lumbar_t(-2.0), _denosumab(last))
    assert ("therapy-safety" in got) is critical
    if critical:
        assert got["therapy-safety"]["indicator"] == "critical"


def _draft(authored: str = "2026-11-23") -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "o1",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77080"}]},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": authored,
    }


@pytest.mark.parametrize(("last_scan", "too_soon"), [("2024-12-01", True), ("2024-11-30", False)])
def test_order_22_vs_23_months(last_scan: str, too_soon: bool) -> None:
    """CS-8.2 rev 2: Medicare counts the months after the last scan's month; an order on
    2026-11-23 is covered after a scan in 2024-11 (23 months, Dec..Oct, have passed) and too
    soon after one on 2024-12-01 (covered from 2027-01-01).
    CS-8.1: the draft is recognised by CPT 77080. CS-8.3: the previous scanner is named."""
    got = run(
        patient(),
        device(),
        lumbar_t(-1.5, last_scan),
        hook="order-sign",
        draft_orders=[_draft()],
    )
    card = got["dxa-order-timing"]
    assert ext(card)["tooSoon"] is too_soon
    assert card["indicator"] == ("warning" if too_soon else "info")
    assert set(got) == {"dxa-order-timing"}  # order hooks answer about the order


def test_preliminary_result_is_stated() -> None:
    """CS-1.1: a preliminary Observation counts and the card says so."""
    card = run(patient(), device(), lumbar_t(-2.7, status="preliminary"))["bmd-classification"]
    assert ext(card)["category"] == "osteoporosis"
    assert "preliminary" in card["detail"].lower()


def test_nothing_to_say_is_no_cards() -> None:
    """CS-11.1: a woman of 60 without a DXA or a risk factor gets no card."""
    result = evaluator().evaluate(
        EvaluationInput(resources=[patient(birth="1966-01-01")], as_of=date(2026, 11, 23))
    )
    assert result.cards == []
    assert result.outcome is None
