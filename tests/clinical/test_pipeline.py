"""cds.pipeline: the Evaluator front ends call (thread safety, failures, determinism)."""

from __future__ import annotations

import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cds.contracts.cards import dump_cards
from cds.contracts.outcome import DataIssue
from cds.pipeline import EvaluationError, EvaluationInput, Evaluator
from cds.rules import RuleSetError
from tests.clinical.helpers import AS_OF, RULES
from tests.clinical.test_fhir_boundaries import (
    _denosumab,
    _draft,
    device,
    evaluator,
    lumbar_bmd,
    lumbar_t,
    patient,
)


def story() -> list[dict[str, Any]]:
    return [
        patient(),
        device(),
        lumbar_t(-0.5, "2024-11-11"),
        lumbar_bmd(1.0, "2024-11-11"),
        lumbar_t(-2.6, "2026-11-09"),
        lumbar_bmd(0.93, "2026-11-09"),
        _denosumab("2026-02-20"),
    ]


def _inp(resources: list[dict[str, Any]], **kw: Any) -> EvaluationInput:
    return EvaluationInput(resources=resources, as_of=AS_OF, **kw)


def test_result_has_cards_outcome_trace_and_fired() -> None:
    result = evaluator().evaluate(_inp(story()))
    topics = [c.topic for c in result.cards]
    assert topics[0] == "therapy-safety"  # critical first
    assert "bmd-classification" in topics
    assert result.outcome is None
    assert "classification.t.osteoporosis" in result.fired
    assert result.fired == sorted(set(result.fired))
    assert result.trace.used
    assert result.ruleset_version == evaluator().ruleset_version
    assert all(c.payload["rulesetVersion"] == result.ruleset_version for c in result.cards)


def test_deterministic_mode_is_byte_identical_and_order_insensitive() -> None:
    first = evaluator().evaluate(_inp(story(), deterministic=True))
    shuffled = story()
    random.Random(7).shuffle(shuffled)
    again = evaluator().evaluate(_inp(shuffled, deterministic=True))
    assert json.dumps(dump_cards(first.cards)) == json.dumps(dump_cards(again.cards))
    other_day = evaluator().evaluate(
        EvaluationInput(resources=story(), as_of=AS_OF.replace(day=24), deterministic=True)
    )
    assert {c.uuid for c in first.cards}.isdisjoint({c.uuid for c in other_day.cards})
    random_uuids = evaluator().evaluate(_inp(story()))
    assert {c.uuid for c in first.cards}.isdisjoint({c.uuid for c in random_uuids.cards})


def test_evaluate_is_thread_safe() -> None:
    expected = json.dumps(dump_cards(evaluator().evaluate(_inp(story(), deterministic=True)).cards))

    def one(_: int) -> str:
        return json.dumps(dump_cards(evaluator().evaluate(_inp(story(), deterministic=True)).cards))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(64)))
    assert set(results) == {expected}


def test_unknown_hook_is_an_error_not_an_empty_answer() -> None:
    with pytest.raises(EvaluationError) as info:
        evaluator().evaluate(_inp(story(), hook="encounter-start"))
    assert info.value.stage == "input"


def test_order_select_only_evaluates_the_selected_drafts() -> None:
    resources = [patient(), device(), lumbar_t(-1.5, "2026-01-15")]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": _draft()}]}
    chosen = evaluator().evaluate(
        _inp(resources, hook="order-select", draft_orders=bundle, selections=["ServiceRequest/o1"])
    )
    assert [c.topic for c in chosen.cards] == ["dxa-order-timing"]
    other = evaluator().evaluate(
        _inp(resources, hook="order-select", draft_orders=bundle, selections=["ServiceRequest/x"])
    )
    assert other.cards == []


def test_data_errors_become_outcome_and_cards_still_come() -> None:
    bad = lumbar_bmd(0.9, "2026-11-09")
    bad["valueQuantity"]["unit"] = bad["valueQuantity"]["code"] = "g/cm3"
    result = evaluator().evaluate(_inp([patient(), device(), lumbar_t(-1.7, "2026-11-09"), bad]))
    assert result.outcome is not None
    assert result.outcome["resourceType"] == "OperationOutcome"
    assert any(c.topic == "bmd-classification" for c in result.cards)


def test_a_broken_card_template_raises_naming_the_rule(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    path = rules / "classification.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            "Osteoporosis: lowest T-score {{ fact.lowest_t }} at the",
            "Osteoporosis: lowest T-score {{ fact.lowest_t / 0 }} at the",
        ),
        encoding="utf-8",
    )
    broken = Evaluator.from_rules_dir(rules)
    with pytest.raises(EvaluationError) as info:
        broken.evaluate(_inp([patient(), device(), lumbar_t(-2.7)]))
    assert info.value.stage == "cards"
    assert info.value.rule_id == "classification.t.osteoporosis"


def test_bad_rules_are_rejected_at_load(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "workup.yaml").write_text("rules: [{id: x}]\n", encoding="utf-8")
    with pytest.raises(RuleSetError):
        Evaluator.from_rules_dir(rules)


def test_deterministic_uuids_hash_the_draft_orders_as_the_fhir_stage_walks_them() -> None:
    """The digest takes the draft orders from the one drafts reader (`cds.fhir.drafts`):
    a Bundle of drafts, the same drafts as a list, nested or in another order are the
    same input; another draft is another."""
    resources = [patient(), device(), lumbar_t(-1.5, "2026-01-15")]
    other = {**_draft(), "id": "o2"}

    def uuids(draft_orders: Any) -> set[str | None]:
        inp = _inp(resources, hook="order-sign", draft_orders=draft_orders, deterministic=True)
        cards = evaluator().evaluate(inp).cards
        assert cards
        assert all(c.uuid for c in cards)
        return {c.uuid for c in cards}

    def bundle(*items: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "entry": [{"resource": r} for r in items]}

    first = uuids(bundle(_draft(), other))
    assert uuids([other, _draft()]) == first
    assert uuids([bundle(bundle(other), _draft())]) == first
    assert uuids(bundle(_draft())).isdisjoint(first)


def test_data_errors_found_before_the_fhir_stage_are_in_the_outcome() -> None:
    """`EvaluationInput.issues` (replay's walk of a Bundle it split) are reported with the
    FHIR stage's own data errors, sorted in; none leaves the outcome as it was."""
    bad = lumbar_bmd(0.9, "2026-11-09")
    bad["valueQuantity"]["unit"] = bad["valueQuantity"]["code"] = "g/cm3"
    resources = [patient(), device(), lumbar_t(-1.7, "2026-11-09"), bad]
    alone = evaluator().evaluate(_inp(resources))
    assert alone.outcome is not None
    walked = DataIssue(
        severity="error", code="structure", resource="Bundle/b entry[9]", message="no resource"
    )
    result = evaluator().evaluate(_inp(resources, issues=[walked]))
    assert result.outcome is not None
    issues = result.outcome["issue"]
    assert walked.to_fhir() in issues
    assert [i for i in issues if i != walked.to_fhir()] == alone.outcome["issue"]
    assert [c.topic for c in result.cards] == [c.topic for c in alone.cards]
    assert evaluator().evaluate(_inp([patient()], issues=[walked])).outcome == {
        "resourceType": "OperationOutcome",
        "issue": [walked.to_fhir()],
    }
