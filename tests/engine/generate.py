"""Random valid rule sets and facts over the real fact schema, for differential testing.

One generator serves two drivers through the `Chooser` protocol: hypothesis
(`HypothesisChooser`, shrinks failures) in tests/engine/test_differential.py, and
`random.Random` (`RandomChooser`, fixed seed) in benchmarks/engine_soak.py.

The rule sets are valid by construction for the structural model (fact types, fields,
operators and literal types fit); semantic lint (e.g. unsatisfiable `all`) is not
applied, so contradictory conditions are generated on purpose: both evaluators must
agree on them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cds.rules.facttypes import FactType, FieldSpec, input_fact_types
from cds.rules.model import Rule

T = TypeVar("T")


class Chooser(Protocol):
    def pick(self, options: Sequence[T]) -> T: ...

    def integer(self, low: int, high: int) -> int: ...

    def chance(self, percent: int) -> bool: ...


class RandomChooser:
    def __init__(self, rng: Any) -> None:
        self.rng = rng

    def pick(self, options: Sequence[T]) -> T:
        choice: T = options[self.rng.randrange(len(options))]
        return choice

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.randint(low, high))

    def chance(self, percent: int) -> bool:
        return bool(self.rng.randrange(100) < percent)


class HypothesisChooser:
    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st

        self.data = data
        self.st = st

    def pick(self, options: Sequence[T]) -> T:
        return self.data.draw(self.st.sampled_from(list(options)))  # type: ignore[no-any-return]

    def integer(self, low: int, high: int) -> int:
        return int(self.data.draw(self.st.integers(low, high)))

    def chance(self, percent: int) -> bool:
        return int(self.data.draw(self.st.integers(0, 99))) < percent


POOLS: dict[str, list[Any]] = {
    # numbers: boundaries as written in rules, ints mixed in (int vs float comparisons)
    "number": [-3.0, -2.5, -2.4, -1.0, -1, 0, 0.0, 1.25, 3.5],
    "integer": [0, 1, 12, 24, 49, 50, 65],
    "date": ["2023-12-31", "2024-01-01", "2024-06-15"],
    "string": ["", "a", "B", "1.0", "x y", "é", 'q"uote', "back\\slash", "null", "$s"],
    "boolean": [True, False],
}
FACT_VALUE_POOLS: dict[str, list[Any]] = {
    "number": [-3.0, -2.5, -2.4, -1.0, 0.0, 1.25, 3.5],
    "integer": POOLS["integer"],
    "date": POOLS["date"],
    "string": POOLS["string"],
    "boolean": POOLS["boolean"],
}
PARAMETERS: dict[str, Any] = {
    "p_number": -2.5,
    "p_number_int": -1,
    "p_integer": 50,
    "p_date": "2024-01-01",
    "p_string": "a",
    "p_boolean": True,
}
INPUT_TYPES = ("assessment", "draft_order", "vertebra_analysis")


def _derived_types(inputs: dict[str, FactType]) -> dict[str, FactType]:
    base = {
        name: FieldSpec(spec.name, spec.kind, True, spec.description, spec.enum)
        for name, spec in inputs["assessment"].fields.items()
    }
    a_fields = dict(base)
    a_fields["flag"] = FieldSpec("flag", "boolean", True, "a flag")
    a_fields["level"] = FieldSpec("level", "integer", True, "a level")
    a_fields["label"] = FieldSpec("label", "string", True, "a label", ("x", "y", "z"))
    b_fields = dict(a_fields)
    b_fields["note"] = FieldSpec("note", "string", True, "a note")
    return {
        "derived_a": FactType("derived_a", a_fields, True, "assessment", "", ("assessment",)),
        "derived_b": FactType(
            "derived_b", b_fields, True, "derived_a", "", ("derived_a", "assessment")
        ),
    }


FACT_TYPES: dict[str, FactType] = {**input_fact_types()}
FACT_TYPES.update(_derived_types(FACT_TYPES))
RULE_TYPES = (
    "assessment",
    "assessment",
    "draft_order",
    "vertebra_analysis",
    "derived_a",
    "derived_b",
)


def _pool(spec: FieldSpec, pools: dict[str, list[Any]]) -> list[Any]:
    if spec.enum is not None:
        return list(spec.enum)
    return pools[spec.kind]


def _operand(c: Chooser, spec: FieldSpec) -> Any:
    if c.chance(20):
        fitting = [name for name, value in PARAMETERS.items() if spec.accepts(value)]
        if fitting:
            return {"param": c.pick(fitting)}
    return c.pick(_pool(spec, POOLS))


def _test(c: Chooser, ftype: FactType) -> dict[str, Any]:
    spec = ftype.fields[c.pick(sorted(ftype.fields))]
    ops = ["eq", "ne", "in"]
    if spec.ordered:
        ops += ["lt", "le", "gt", "ge"]
    if spec.optional:
        ops += ["exists", "missing"]
    op = c.pick(ops)
    if op in ("exists", "missing"):
        return {"field": spec.name, op: True}
    if op == "in":
        return {"field": spec.name, "in": [_operand(c, spec) for _ in range(c.integer(1, 3))]}
    return {"field": spec.name, op: _operand(c, spec)}


def condition(c: Chooser, ftype: FactType, depth: int) -> dict[str, Any]:
    if depth <= 0 or c.chance(40):
        return _test(c, ftype)
    kind = c.pick(["all", "any", "not"])
    if kind == "not":
        return {"not": condition(c, ftype, depth - 1)}
    return {kind: [condition(c, ftype, depth - 1) for _ in range(c.integer(1, 3))]}


def rule_data(c: Chooser, index: int) -> dict[str, Any]:
    fact = c.pick(RULE_TYPES)
    ftype = FACT_TYPES[fact]
    when: dict[str, Any] = {"fact": fact}
    if c.chance(90):
        when.update(condition(c, ftype, 3))
    then: dict[str, Any] = {}
    if fact == "assessment" and c.chance(40):
        then["emit"] = {
            "fact": "derived_a",
            "copy": True,
            "set": {"flag": c.pick([True, False]), "level": c.pick(POOLS["integer"])},
        }
        if c.chance(50):
            then["emit"]["set"]["label"] = c.pick(["x", "y", "z"])
    elif fact == "derived_a" and c.chance(40):
        then["emit"] = {"fact": "derived_b", "copy": c.chance(80), "set": {"note": "n"}}
    if not then or c.chance(50):
        then["card"] = {"topic": "screening", "indicator": "info", "summary": "s"}
    return {
        "id": f"rule.r{index}",
        "title": f"rule {index}",
        "version": 1,
        "status": "active" if c.chance(90) else "draft",
        "evidence": ["CS-2.2"],
        "when": when,
        "then": then,
    }


@dataclass
class Case:
    rules: list[Rule]
    fact_sets: list[list[dict[str, Any]]]


def _fact(c: Chooser, fact_type: str, fid: str) -> dict[str, Any]:
    ftype = FACT_TYPES[fact_type]
    fact: dict[str, Any] = {"id": fid, "t": fact_type}
    for name, spec in ftype.fields.items():
        if spec.optional and not c.chance(60):
            continue
        fact[name] = c.pick(_pool(spec, FACT_VALUE_POOLS))
    return fact


def facts(c: Chooser) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for fact_type, most in (
        ("assessment", 2),
        ("draft_order", 2),
        ("vertebra_analysis", 1),
        ("derived_a", 1),
        ("derived_b", 1),
    ):
        for i in range(c.integer(0, most)):
            out.append(_fact(c, fact_type, f"{fact_type}:{i}"))
    return out


def ruleset(c: Chooser, most_rules: int = 6) -> list[Rule]:
    return [Rule.model_validate(rule_data(c, i)) for i in range(c.integer(1, most_rules))]


def case(c: Chooser, fact_sets: int = 4) -> Case:
    return Case(ruleset(c), [facts(c) for _ in range(fact_sets)])
