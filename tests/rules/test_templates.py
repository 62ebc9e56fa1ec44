"""Card templates: native values, text, filters, sandbox, strict names."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from cds.rules.templates import (
    TemplateCache,
    TemplateProblem,
    add_months,
    compile_template,
    fmt,
    references,
)

FACT = {"lowest_t": -2.5, "age": 67, "site": "total-hip", "date": "2024-01-31", "none": None}
PARAM = {"osteoporosis_t": -2.5}


def render(source: str) -> object:
    return compile_template(source).render(FACT, PARAM)


def test_single_expression_keeps_the_native_type() -> None:
    assert render("{{ fact.lowest_t }}") == -2.5
    assert render("  {{ fact.age + 1 }} ") == 68
    assert render("{{ fact.none }}") is None


def test_other_strings_render_to_text() -> None:
    assert render("T {{ fact.lowest_t }} at {{ fact.site }}") == "T -2.5 at total-hip"
    assert render("{{ fact.age }}{{ fact.age }}") == "6767"
    assert render("absent: [{{ fact.none }}]") == "absent: []"


@pytest.mark.parametrize(
    ("date", "months", "expected"),
    [
        ("2024-01-31", 1, "2024-02-29"),  # clamped to the end of a leap February
        ("2023-01-31", 1, "2023-02-28"),
        ("2024-01-15", 24, "2026-01-15"),
        ("2024-11-30", 3, "2025-02-28"),
        ("2024-03-31", -1, "2024-02-29"),
    ],
)
def test_add_months(date: str, months: int, expected: str) -> None:
    assert add_months(date, months) == expected


def test_filters_in_templates() -> None:
    assert render("{{ fact.date | add_months(1) }}") == "2024-02-29"
    assert render("{{ fact.none | add_months(1) }}") is None
    assert render("{{ fact.lowest_t | fmt(2) }}") == "-2.50"
    assert render("{{ fact.lowest_t | abs }}") == 2.5
    assert render("{{ (fact.lowest_t * 3) | round(1) }}") == -7.5
    assert fmt(None) is None


def test_param_context() -> None:
    assert render("{{ param.osteoporosis_t }}") == -2.5


def test_strict_undefined() -> None:
    with pytest.raises(UndefinedError):
        render("{{ patient }}")


def test_sandbox_blocks_unsafe_attributes() -> None:
    with pytest.raises(SecurityError):
        render("{{ fact.__class__.__mro__ }}")


def test_no_autoescape() -> None:
    assert compile_template("{{ fact.site }} <b>").render({"site": "a&b"}, {}) == "a&b <b>"


def test_references() -> None:
    refs, free = references("{{ fact.a }} {{ param.b }} {{ fact['c'] }} {{ other.x }}")
    assert {(r.scope, r.name) for r in refs} == {("fact", "a"), ("param", "b"), ("fact", "c")}
    assert free == {"other"}
    with pytest.raises(TemplateProblem, match="template syntax error"):
        references("{{ fact. }}")


def test_cache_renders_nested_values() -> None:
    cache = TemplateCache()
    value = {"a": ["{{ fact.age }}", "x"], "b": 1, "c": "plain"}
    assert cache.render_value(value, FACT, PARAM) == {"a": [67, "x"], "b": 1, "c": "plain"}
