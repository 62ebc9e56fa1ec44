"""Every rule example that fires, built into a real card: the card meets the contract
(summary under 140 characters, no nulls, HL7 invariants) for each rule's own examples,
so a template that grows too long or renders an absent value fails here, at lint time."""

from __future__ import annotations

import pytest

from cds.authoring.examples import example_fact
from cds.cards import CardContext, build_cards, contract_problems
from cds.rules.reference import evaluate_ruleset
from tests.clinical.helpers import AS_OF, renderer, ruleset

EXAMPLES = [
    (rule.id, index)
    for rule in ruleset().active_rules
    if rule.then.card is not None
    for index, example in enumerate(rule.examples)
    if example.expect.fires
]


@pytest.mark.parametrize(("rule_id", "index"), EXAMPLES, ids=[f"{r}#{i}" for r, i in EXAMPLES])
def test_every_firing_example_builds_a_contract_card(rule_id: str, index: int) -> None:
    rs = ruleset()
    rule = rs.rule(rule_id)
    fact = example_fact(rs, rule, rule.examples[index])
    firings = [f for f in evaluate_ruleset(rs, [fact]).firings if f.rule_id == rule_id]
    assert firings, "the example should fire"
    context = CardContext(ruleset_version=rs.version, patient_id="p1", as_of=AS_OF, uuid_seed="e")
    (card,) = build_cards(firings, renderer(), context)
    problems = contract_problems(card)
    assert problems == [], problems
    data = card.payload
    assert data["rule"] == rule_id


def test_every_rule_has_examples_on_both_sides() -> None:
    one_sided = [
        r.id
        for r in ruleset().active_rules
        if not (
            any(e.expect.fires for e in r.examples) and any(not e.expect.fires for e in r.examples)
        )
    ]
    assert not one_sided, one_sided
