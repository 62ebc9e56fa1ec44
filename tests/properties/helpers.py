"""Shared pieces of the pipeline property tests: one Evaluator, card normalisation."""

from __future__ import annotations

import json
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cds.pipeline import Evaluator

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 23)


@lru_cache(maxsize=1)
def evaluator() -> Evaluator:
    """The bundled rules, built once per test process."""
    from cds.pipeline import Evaluator

    return Evaluator.from_rules_dir(ROOT / "rules")


def evaluate(
    resources: list[dict[str, Any]],
    hook: str = "patient-view",
    patient_id: str | None = None,
    draft_orders: list[dict[str, Any]] | None = None,
    selections: list[str] | None = None,
) -> Any:
    from cds.pipeline import EvaluationInput

    return evaluator().evaluate(
        EvaluationInput(
            hook=hook,
            resources=resources,
            as_of=AS_OF,
            patient_id=patient_id,
            draft_orders=draft_orders or [],
            selections=selections or [],
        )
    )


def strip_uuids(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cards without their (random) card and suggestion uuids."""
    out = []
    for card in cards:
        card = {k: v for k, v in card.items() if k != "uuid"}
        if "suggestions" in card:
            card["suggestions"] = [
                {k: v for k, v in s.items() if k != "uuid"} for s in card["suggestions"]
            ]
        out.append(card)
    return out


def by_topic(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(c["source"]["topic"]["code"]): c for c in cards}


def payload(card: dict[str, Any] | None) -> dict[str, Any]:
    if card is None:
        return {}
    value = card.get("extension", {}).get("org.osteohooks", {})
    assert isinstance(value, dict)
    return value


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
