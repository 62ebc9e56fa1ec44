"""Compiler: durable patterns for each language construct, #381 guard, determinism."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cds.rules.compiler import CompileError, assert_single_fact, check_fact_type_size, dumps
from cds.rules.facttypes import FactType, FieldSpec
from tests.rules.conftest import Loader

HEAD = """
parameters:
  osteoporosis_t: {value: -2.5}
derived_facts:
  scored:
    extends: assessment
    fields:
      score_type: {type: string, enum: [T, Z]}
rules:
  - id: reader
    title: reads scored
    version: 1
    status: active
    evidence: [CS-2.2]
    when: {fact: scored}
    then: {card: {topic: screening, indicator: info, summary: hi}}
  - id: r
    title: R
    version: 1
    status: active
    evidence: [CS-2.2]
    then: {card: {topic: screening, indicator: info, summary: hi}}
"""


def pattern(load: Loader, when: str, fact: str = "assessment") -> list[Any]:
    """The `$and` list of rule r compiled with `when` (YAML flow mapping, without fact)."""
    text = HEAD + f"    when: {{fact: {fact}, {when}}}\n"
    compiled = load(text).compiled["rules"]["r"]
    assert list(compiled) == ["all"]
    assert len(compiled["all"]) == 1
    assert list(compiled["all"][0]) == ["m"]
    conj: list[Any] = compiled["all"][0]["m"]["$and"]
    assert conj[0] == {"t": fact}
    return conj[1:]


def test_each_operator(load: Loader) -> None:
    cases = {
        "field: lowest_t, eq: -2.5": {"$eq": {"lowest_t": -2.5}},
        "field: lowest_t, ne: -2.5": {"$neq": {"lowest_t": -2.5}},
        "field: lowest_t, lt: -2.5": {"$lt": {"lowest_t": -2.5}},
        "field: lowest_t, le: {param: osteoporosis_t}": {"$lte": {"lowest_t": -2.5}},
        "field: lowest_t, gt: -2.5": {"$gt": {"lowest_t": -2.5}},
        "field: lowest_t, ge: -2.5": {"$gte": {"lowest_t": -2.5}},
        "field: lowest_t, exists: true": {"$ex": {"lowest_t": 1}},
        "field: lowest_t, missing: true": {"$nex": {"lowest_t": 1}},
        "field: sex, in: [male, other]": {
            "$or": [{"$eq": {"sex": "male"}}, {"$eq": {"sex": "other"}}]
        },
        "field: sex, in: [male]": {"$eq": {"sex": "male"}},
    }
    for when, expected in cases.items():
        assert pattern(load, when) == [expected], when


def test_not_adds_the_absent_branch_for_optional_fields(load: Loader) -> None:
    assert pattern(load, "not: {field: lowest_t, lt: -2.5}") == [
        {"$or": [{"$nex": {"lowest_t": 1}}, {"$gte": {"lowest_t": -2.5}}]}
    ]
    assert pattern(load, "not: {field: lowest_t, in: [-1.0, -2.0]}") == [
        {
            "$or": [
                {"$nex": {"lowest_t": 1}},
                {"$and": [{"$neq": {"lowest_t": -1.0}}, {"$neq": {"lowest_t": -2.0}}]},
            ]
        }
    ]
    assert pattern(load, "not: {field: lowest_t, exists: true}") == [{"$nex": {"lowest_t": 1}}]
    assert pattern(load, "not: {field: lowest_t, missing: true}") == [{"$ex": {"lowest_t": 1}}]


def test_not_on_a_required_field_needs_no_absent_branch(load: Loader) -> None:
    assert pattern(load, "not: {field: age, ge: 50}") == [{"$lt": {"age": 50}}]
    # ... but every field of a derived fact may be absent
    assert pattern(load, "not: {field: age, ge: 50}", fact="scored") == [
        {"$or": [{"$nex": {"age": 1}}, {"$lt": {"age": 50}}]}
    ]


def test_de_morgan(load: Loader) -> None:
    when = (
        "not: {all: [{field: age, ge: 50}, {any: [{field: sex, eq: male}, {field: tbs, le: 1.2}]}]}"
    )
    assert pattern(load, when) == [
        {
            "$or": [
                {"$lt": {"age": 50}},
                {
                    "$and": [
                        {"$neq": {"sex": "male"}},
                        {"$or": [{"$nex": {"tbs": 1}}, {"$gt": {"tbs": 1.2}}]},
                    ]
                },
            ]
        }
    ]
    assert pattern(load, "not: {not: {field: age, ge: 50}}") == [{"$gte": {"age": 50}}]


def test_all_flattens_into_the_pattern(load: Loader) -> None:
    when = "all: [{field: age, ge: 50}, {all: [{field: sex, eq: male}]}]"
    assert pattern(load, when) == [{"$gte": {"age": 50}}, {"$eq": {"sex": "male"}}]


def test_when_without_test_matches_every_fact_of_its_type(load: Loader) -> None:
    text = HEAD + "    when: {fact: contrast_study}\n"
    assert load(text).compiled["rules"]["r"] == {
        "all": [{"m": {"$and": [{"t": "contrast_study"}]}}]
    }


def test_only_active_rules_are_compiled(load: Loader) -> None:
    text = HEAD.replace(
        "    status: active\n    evidence: [CS-2.2]\n    then:",
        "    status: draft\n    evidence: [CS-2.2]\n    then:",
    )
    text += "    when: {fact: assessment}\n"
    ruleset = load(text)
    assert sorted(ruleset.compiled["rules"]) == ["reader"]
    assert [r.id for r in ruleset.rules] == ["reader", "r"]


def test_compiled_output_is_deterministic(load: Loader) -> None:
    text = HEAD + "    when: {fact: assessment, field: sex, in: [other, male, female]}\n"
    first = dumps(load(text).compiled)
    assert dumps(load(text).compiled) == first
    assert json.loads(first)["rules"]["r"]["all"][0]["m"]["$and"][1] == {
        "$or": [{"$eq": {"sex": "other"}}, {"$eq": {"sex": "male"}}, {"$eq": {"sex": "female"}}]
    }


@pytest.mark.parametrize(
    "durable_rule",
    [
        # the #381 shape: a second pattern joined on the first
        {"all": [{"first": {"kind": "spine"}}, {"second": {"$lt": {"value": {"first": "value"}}}}]},
        {"all": [{"m": {"$lt": {"value": {"$l": {"first": "value"}, "$r": 1}}}}]},
        {"all": [{"m": {"$and": [{"t": "a"}]}}, {"n": {"$and": [{"t": "b"}]}}]},
        {"any": [{"m": {"$and": [{"t": "a"}]}}]},
        {"all": [{"m": {"$and": [{"t": "a"}, {"$lt": {"$m.value": 1}}]}}]},
        {"all": [{"m": {"$and": [{"t": "a"}, {"$iall": {"v": 1}}]}}]},
    ],
)
def test_single_fact_guard_rejects_joins(durable_rule: dict[str, Any]) -> None:
    with pytest.raises(CompileError):
        assert_single_fact("x", durable_rule)


def test_fact_type_size_guard() -> None:
    fields = {
        f"f{i}": FieldSpec(name=f"f{i}", kind="integer", optional=True, description="")
        for i in range(253)
    }
    check_fact_type_size(FactType("ok", dict(list(fields.items())[:252])))
    with pytest.raises(CompileError, match="has 256 properties"):
        check_fact_type_size(FactType("wide", fields))
