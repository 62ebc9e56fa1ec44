"""The fast template paths (cds.rules.templates: a bare Jinja context, a key lookup for
`{{ fact.x }}`, the dict read in the sandbox) give exactly what Jinja's own entry point
gives, for every template of the bundled rules with each rule's example facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jinja2 import meta

from cds.authoring.examples import example_fact
from cds.cards import CardRenderer
from cds.rules import load_ruleset
from cds.rules.ruleset import RuleSet
from cds.rules.templates import ENV, Template, compile_template, free_names, has_template

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return load_ruleset(ROOT / "rules", compile=False)


def _templates(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if has_template(value) else []
    if isinstance(value, list):
        return [t for v in value for t in _templates(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _templates(v)]
    return []


def _slow(template: Template, fact: dict[str, Any], param: dict[str, Any]) -> Any:
    """Jinja's own entry point, as before the fast paths."""
    return Template(template.source, template.native, template.jinja).render(fact, param)


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return ("value", fn())
    except Exception as exc:
        return ("error", f"{type(exc).__name__}: {exc}")


def test_every_bundled_template_renders_the_same_both_ways(ruleset: RuleSet) -> None:
    checked = 0
    fast_used = 0
    cards = CardRenderer(ruleset)
    for rule in ruleset.rules:
        if rule.then.card is None:
            continue
        sources = _templates(rule.then.card.model_dump(by_alias=True, exclude_none=True))
        facts = [example_fact(ruleset, rule, example) for example in rule.examples]
        facts.append({})  # every field absent: None everywhere
        for raw in facts:
            fact = cards.template_fact(raw, rule.when.fact)
            for source in sources:
                template = compile_template(source)
                fast_used += template.bare is not None
                fast = _outcome(lambda t=template, f=fact: t.render(f, ruleset.parameters))
                slow = _outcome(lambda t=template, f=fact: _slow(t, f, ruleset.parameters))
                assert fast == slow, source
                assert type(fast[1]) is type(slow[1]), source
                checked += 1
    assert checked > 500
    assert fast_used == checked  # every bundled template takes a fast path


@pytest.mark.parametrize(
    ("source", "fact"),
    [
        ("{{ fact.x }}", {"x": 1.5}),
        ("{{ fact.x }}", {"x": None}),
        ("{{ fact.missing }}", {"x": 1}),  # StrictUndefined: the same error
        ("{{ fact.items }}", {"items": [1]}),  # a dict attribute: the sandbox's answer
        ("{{ fact['values'] }}", {"values": "v"}),
        ("a {{ fact.items }} b", {"items": [1]}),
        ("a {{ fact.x | fmt(2) }} b", {"x": None}),
        ("{{ fact.x | round }}", {"x": None}),  # a filter error: the same error
        ("{{ param.p }}", {}),
        ("  {{ fact.x }}  ", {"x": 2}),
        ("{{ range(2) | list }}", {}),  # a global: not on the fast path
    ],
)
def test_edge_cases_render_the_same_both_ways(source: str, fact: dict[str, Any]) -> None:
    template = compile_template(source)
    param = {"p": -2.5}
    fast = _outcome(lambda: template.render(fact, param))
    slow = _outcome(lambda: _slow(template, fact, param))
    assert fast == slow


FREE_NAME_SOURCES = [
    "plain text",
    "{{ fact.x }} and {{ param.y | fmt(1) }}",
    "{% if fact.a > 1 and not fact.b %}{{ fact.c }}{% elif other %}x{% else %}{{ z }}{% endif %}",
    "{{ [fact.a, (b, c)] }} {{ {'k': d} }} {{ e[1:2] }} {{ f ~ g + h * -i }}",
    "{{ fact.x | replace('a', repl) | truncate(length=n) }}",
    "{{ a if b is number else c }}",
    "{% set v = fact.x %}{{ v }} {{ w }}",  # declares v: meta's answer
    "{% for item in items %}{{ item }} {{ loop.index }}{% endfor %}{{ item }}",
    "{% with q = 1 %}{{ q }}{% endwith %}{{ q }}",
    "{% macro m(a) %}{{ a }} {{ b }}{% endmacro %}{{ m(1) }}",
    "{{ loop }} {{ caller }} {{ self }}",
    "{{ range(3) | list }} {{ namespace }} {{ dict }} {{ lipsum }} {{ cycler }} {{ joiner }}",
    "{{ fact.self }} {{ param['loop'] }}",
    "{% filter upper %}{{ t }}{% endfilter %}",
]


@pytest.mark.parametrize("source", FREE_NAME_SOURCES)
def test_free_names_are_what_jinja_meta_finds(source: str) -> None:
    assert free_names(source) == meta.find_undeclared_variables(ENV.parse(source))


def test_free_names_of_every_bundled_template(ruleset: RuleSet) -> None:
    sources = {
        source
        for rule in ruleset.rules
        if rule.then.card is not None
        for source in _templates(rule.then.card.model_dump(by_alias=True, exclude_none=True))
    }
    assert len(sources) > 100
    for source in sources:
        assert free_names(source) == meta.find_undeclared_variables(ENV.parse(source)), source
