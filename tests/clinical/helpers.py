"""Shared helpers for the clinical and card tests: facts -> engine -> cards.

Facts are built directly from the fact schema (`assess`, ...) with neutral values for
everything a test does not set, so a test states only what its boundary is about.
"""

from __future__ import annotations

import os
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from cds.cards import CardContext, CardRenderer, build_cards
from cds.contracts.cards import dump_cards
from cds.contracts.facts import (
    Assessment,
    ContrastStudy,
    DraftOrder,
    Fact,
    StructuralFindingFact,
    VertebraAnalysis,
)
from cds.engine import Engine
from cds.rules import RuleSet, load_ruleset

ROOT = Path(__file__).resolve().parents[2]
# OSTEOHOOKS_TEST_RULES: run these tests against a copy of the rules (the guide's
# walk-through test, tests/rules/test_walkthrough.py, does so after editing a threshold).
RULES = Path(os.environ.get("OSTEOHOOKS_TEST_RULES") or ROOT / "rules")
AS_OF = date(2026, 11, 23)
EXT = "org.osteohooks"


@cache
def ruleset() -> RuleSet:
    return load_ruleset(RULES)


def param(name: str, offset: str = "0") -> Any:
    """The rule parameter `name` (rules/*.yaml, the one place a threshold lives) plus
    `offset`, added exactly in Decimal: `param("osteoporosis_t", "0.1")` is -2.4 while the
    cut-off is -2.5, and follows the cut-off when an informaticist moves it. An integer
    parameter with an integer offset stays an int (ages, months, days)."""
    value = ruleset().parameters[name]
    exact = Decimal(str(value)) + Decimal(offset)
    if isinstance(value, int) and exact == exact.to_integral_value():
        return int(exact)
    return float(exact)


@cache
def renderer() -> CardRenderer:
    return CardRenderer(ruleset())


@cache
def engine() -> Engine:
    return Engine(ruleset())


def assess(**fields: Any) -> Assessment:
    """A postmenopausal woman of 60 with a DXA on record unless told otherwise."""
    base: dict[str, Any] = {
        "id": "assessment:1",
        "age": 60,
        "sex": "female",
        "menopausal_status": "postmenopausal",
        "menopausal_assumed": False,
        "has_dxa": True,
        "last_dxa_date": "2026-01-15",
        "months_since_last_dxa": 10,
    }
    base.update(fields)
    if base.get("sex") == "male" and "menopausal_status" not in fields:
        base["menopausal_status"] = "not-applicable"
    return Assessment(**base)


def lumbar(t: float, **fields: Any) -> Assessment:
    """An assessment whose lowest (and only) T-score is the lumbar spine's."""
    return assess(
        lumbar_t=t,
        lumbar_t_date="2026-01-15",
        lumbar_vertebrae=4,
        lowest_t=t,
        lowest_t_site="lumbar-spine",
        **fields,
    )


def vertebrae(diff: float, evaluable: int = 4, **fields: Any) -> VertebraAnalysis:
    base: dict[str, Any] = {
        "id": "vertebra_analysis:1",
        "scan_date": "2026-01-15",
        "vertebrae_present": 4,
        "evaluable_vertebrae": evaluable,
        "max_adjacent_diff": diff,
        "values": "L1 -2.0, L2 -1.9, L3 -0.5, L4 -1.8",
    }
    base.update(fields)
    return VertebraAnalysis(**base)


def structural(finding: str, n: int = 1) -> StructuralFindingFact:
    return StructuralFindingFact(
        id=f"structural_finding:{n}",
        finding=finding,
        resource=f"Condition/c{n}",
        display=finding.replace("-", " "),
    )


def contrast(days: int) -> ContrastStudy:
    return ContrastStudy(
        id="contrast_study:1",
        days_before_scan=days,
        date="2026-01-10",
        resource="Procedure/p1",
        display="Barium enema",
    )


def order(months: int | None, **fields: Any) -> DraftOrder:
    base: dict[str, Any] = {
        "id": "draft_order:1",
        "resource": "ServiceRequest/o1",
        "display": "DXA bone density axial",
        "order_date": "2026-11-23",
        "months_since_last_dxa": months,
        # Medicare counting (CS-8.2 rev 2): the cases give the counted months
        "coverage_months": months,
        "last_dxa_date": "2025-09-22" if months is not None else None,
        "earliest_date": "2027-08-22" if months is not None else None,
        "scanner": "Hologic Horizon A (Device/dxa1)",
    }
    base.update(fields)
    return DraftOrder(**base)


def cards(
    *facts: Fact, hook: str = "patient-view", seed: str | None = "test"
) -> dict[str, dict[str, Any]]:
    """Cards by topic code for the facts (deterministic uuids unless seed is None)."""
    rs = ruleset()
    result = engine().evaluate(list(facts))
    built = build_cards(
        result.firings,
        renderer(),
        CardContext(
            ruleset_version=rs.version, hook=hook, patient_id="p1", as_of=AS_OF, uuid_seed=seed
        ),
    )
    out: dict[str, dict[str, Any]] = {}
    for card in dump_cards(built):
        topic = card["source"]["topic"]["code"]
        assert topic not in out, f"two cards for topic {topic}"
        out[topic] = card
    return out


def payload(card: dict[str, Any]) -> dict[str, Any]:
    ext: dict[str, Any] = card["extension"][EXT]
    return ext


def fired(*facts: Fact) -> list[str]:
    return engine().evaluate(list(facts)).fired
