"""A rule's translated card (cds.rules.templates: one generated Python function per card)
renders exactly what Jinja renders: the same dict, or the same exception and text.

For every card rule of the bundled rules: its example facts, facts with nothing or only an
id, and seeded random mutations (fields removed or set to junk of every JSON type, the
internal ``t``/``sid`` keys included), compared by ``repr`` so types count (1 vs 1.0 vs
"1"). This is the oracle test of the translation: the Jinja path is the definition.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cds.rules import load_ruleset
from cds.rules.examples import example_fact
from cds.rules.ruleset import RuleSet

ROOT = Path(__file__).resolve().parents[2]
JUNK: list[Any] = [
    None,
    "",
    "x-y",
    0,
    -1.5,
    3,
    True,
    False,
    [1, 2],
    {"a": 1},
    "2024-02-29",
    "2023-13-01",
    "abc def ghi " * 10,
    1e300,
    -0.0,
]
MUTATIONS = 60


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return load_ruleset(ROOT / "rules", compile=False)


def _outcome(render: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    try:
        return ("value", repr(render(*args)))
    except Exception as exc:  # the error type and text are part of what must match
        return ("error", type(exc).__name__, str(exc))


def _facts(ruleset: RuleSet, rule_id: str, seed: int) -> list[dict[str, Any]]:
    rule = ruleset.rule(rule_id)
    fields = list(ruleset.fact_types[rule.when.fact].fields)
    base: list[dict[str, Any]] = [example_fact(ruleset, rule, ex) for ex in rule.examples]
    base += [{}, {"id": "x"}, {"id": "x", "t": 1, "sid": 2}]
    rng = random.Random(seed)
    facts = list(base)
    for _ in range(MUTATIONS):
        fact = dict(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            key = rng.choice([*fields, "id", "t", "sid"])
            if rng.random() < 0.2:
                fact.pop(key, None)
            else:
                fact[key] = rng.choice(JUNK)
        facts.append(fact)
    return facts


def _jinja(
    ruleset: RuleSet, render: Callable[..., Any], fact: dict[str, Any], fact_type: str
) -> Any:
    """The card through Jinja: every template with the full template fact."""
    return render(ruleset.template_fact(fact, fact_type), ruleset.parameters)


def test_every_bundled_card_is_translated(ruleset: RuleSet) -> None:
    untranslated = [
        rule.id
        for rule in ruleset.rules
        if rule.then.card is not None and ruleset.card_plan(rule.id).fast is None
    ]
    assert untranslated == []


def test_translated_cards_render_what_jinja_renders(ruleset: RuleSet) -> None:
    compared = errors = 0
    for index, rule in enumerate(ruleset.rules):
        if rule.then.card is None:
            continue
        plan = ruleset.card_plan(rule.id)
        fact_type = rule.when.fact
        for fact in _facts(ruleset, rule.id, seed=index):
            jinja = _outcome(_jinja, ruleset, plan.render, fact, fact_type)
            fast = _outcome(ruleset.render_card, rule.id, fact, fact_type)
            assert fast == jinja, (rule.id, fact)
            compared += 1
            errors += jinja[0] == "error"
    # the comparison covered both outcomes, values and template errors
    assert compared > 1000
    assert 0 < errors < compared
