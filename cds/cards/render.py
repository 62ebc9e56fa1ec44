"""A rule set's cards, rendered: what each rule's card is, prepared once, and its
templates rendered for a fact.

`CardRenderer` belongs to whoever evaluates with a rule set (the pipeline's Evaluator,
the rule examples runner, a test): it holds one `CardPlan` per rule with a card, made on
first use, and nothing of it lives inside the `RuleSet` (the rule language's object).
The templates themselves are the rule set's (`cds.rules.templates`: compiled once at
load, where lint checks them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds.rules.ruleset import RuleSet
from cds.rules.templates import Renderer

#: Keys of a fact that are never template fields (engine bookkeeping).
INTERNAL_FACT_KEYS = ("t", "sid")


@dataclass(frozen=True, slots=True)
class CardPlan:
    """What a rule's card is, decided once per rule set: the renderer of its card data
    (every template), and what the rule brings to every card it contributes to: its
    priority, its evidence, its card's links as written (shared, never to be changed;
    `CardRenderer.card_links` copies) and the (label, url) of its first evidence with a
    source (None: none has)."""

    rule_id: str
    fact_type: str
    render: Renderer
    priority: int
    evidence: tuple[str, ...]
    links: tuple[Mapping[str, Any], ...]
    source: tuple[str, str] | None


class CardRenderer:
    """The cards of one rule set: plans made on first use, templates rendered per fact."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self._plans: dict[str, CardPlan] = {}
        self._fields: dict[str, tuple[str, ...]] = {}

    def template_fact(self, fact: Mapping[str, Any], fact_type: str) -> dict[str, Any]:
        """The `fact` template variable: every field of the type, absent ones None."""
        names = self._fields.get(fact_type)
        if names is None:
            names = tuple(self.ruleset.fact_types[fact_type].fields)
            self._fields[fact_type] = names
        out: dict[str, Any] = dict.fromkeys(names)
        out.update(fact)
        for internal in INTERNAL_FACT_KEYS:  # never template fields: as if never copied
            if internal in fact:
                if internal in names:
                    out[internal] = None
                else:
                    del out[internal]
        return out

    def plan(self, rule_id: str) -> CardPlan:
        """The rule's card, prepared once (raises ValueError for a rule without a card)."""
        plan = self._plans.get(rule_id)
        if plan is None:
            ruleset = self.ruleset
            rule = ruleset.rule(rule_id)
            card = rule.then.card
            if card is None:
                raise ValueError(f"rule '{rule_id}' has no card")
            sources = ruleset.evidence.sources
            first = next((sources[n] for n in rule.evidence if sources.get(n) is not None), None)
            plan = CardPlan(
                rule_id=rule.id,
                fact_type=rule.when.fact,
                render=ruleset.templates.plan(card.model_dump(by_alias=True, exclude_none=True)),
                priority=rule.priority,
                evidence=tuple(rule.evidence),
                links=tuple(link.model_dump() for link in card.links),
                source=(first.label, first.url) if first is not None else None,
            )
            self._plans[rule_id] = plan
        return plan

    def render_card(self, rule_id: str, fact: Mapping[str, Any], fact_type: str) -> dict[str, Any]:
        """The rule's card with every template rendered for `fact` (suggestions included)."""
        plan = self.plan(rule_id)
        result: dict[str, Any] = plan.render(
            self.template_fact(fact, fact_type), self.ruleset.parameters
        )
        return result

    def card_links(self, rule_id: str) -> list[dict[str, Any]]:
        """The rule's card links as plain dicts (a fresh list of fresh dicts per call)."""
        return [dict(link) for link in self.plan(rule_id).links]
