"""The bundled rules/ folder: it lints clean and every example holds in both evaluators
(what `cds rules lint` and `cds rules test` check, run in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds.authoring.examples import run_examples
from cds.engine import Engine
from cds.rules import load_ruleset
from cds.rules.reference import evaluate
from cds.rules.templates import has_template

RULES = Path(__file__).resolve().parents[2] / "rules"
pytestmark = pytest.mark.skipif(not (RULES / "evidence.yaml").exists(), reason="no rules/")


def test_bundled_examples_pass_in_engine_and_reference() -> None:
    ruleset = load_ruleset(RULES)
    report = run_examples(ruleset)
    assert [str(f) for f in report.failures] == []
    assert report.run > 0


def test_bundled_rules_compile_for_the_engine() -> None:
    ruleset = load_ruleset(RULES)
    engine = Engine(ruleset)
    assert engine.rule_ids == sorted(r.id for r in ruleset.active_rules)
    assert engine.evaluate([]) == evaluate(ruleset.rules, ruleset.parameters, [])


def test_each_template_is_compiled_once_as_it_renders() -> None:
    """Lint compiles a card's detail as markdown, the way it renders: compiling it as
    plain text there made the load compile every detail twice (issue 15)."""
    ruleset = load_ruleset(RULES)
    details = {
        rule.then.card.detail
        for rule in ruleset.rules
        if rule.then.card is not None
        and rule.then.card.detail is not None
        and has_template(rule.then.card.detail)
    }
    compiled = set(ruleset.templates._cache)
    assert details
    assert {(d, True) for d in details} <= compiled
    assert not {(d, False) for d in details} & compiled
