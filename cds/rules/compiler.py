"""Validated rule model -> durable_rules ruleset (a JSON-serialisable dict).

Each active rule becomes one durable rule named by its id, with a single pattern over
one fact: ``{"$and": [{"t": "<fact type>"}, <condition>...]}``. Parameters are
substituted. ``in`` becomes an ``$or`` of ``$eq``; ``not`` is pushed down with De Morgan,
adding the absent-field branch (``$nex``) wherever the field may be absent, so that
``not`` is classical negation over "a comparison on an absent field is false" (the
reference evaluator's definition).

The rule language has no way to name a second fact, so a join pattern (the shape that
crashes durable-rules 2.0.28, upstream jruizgit/rules #381) cannot be written;
`assert_single_fact` checks the compiled output anyway.

`priority` is not passed to durable (`pri`): firing order never matters, since results
are sorted and every matching rule fires once per fact; `cds.cards` uses priority when it
merges a topic's contributions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cds.rules.facttypes import MAX_FACT_PROPERTIES, RESERVED_FIELDS, FactType
from cds.rules.model import Condition, Rule

FORMAT = "osteohooks-durable/1"

_POSITIVE = {"eq": "$eq", "ne": "$neq", "lt": "$lt", "le": "$lte", "gt": "$gt", "ge": "$gte"}
_NEGATED = {"eq": "$neq", "ne": "$eq", "lt": "$gte", "le": "$gt", "gt": "$lte", "ge": "$lt"}
_COMPARISONS = frozenset({"$eq", "$neq", "$lt", "$lte", "$gt", "$gte"})


class CompileError(ValueError):
    """The validated model cannot be compiled (a guard, not a user-facing rule error)."""


def _resolve(value: Any, parameters: Mapping[str, Any]) -> Any:
    if isinstance(value, dict) and set(value) == {"param"}:
        return parameters[value["param"]]
    return value


def _join(op: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    flat: list[dict[str, Any]] = []
    for part in parts:
        if set(part) == {op}:
            flat.extend(part[op])
        else:
            flat.append(part)
    return flat[0] if len(flat) == 1 else {op: flat}


class _Compiler:
    def __init__(self, parameters: Mapping[str, Any], fact_type: FactType | None) -> None:
        self.parameters = parameters
        self.fact_type = fact_type

    def may_be_absent(self, name: str) -> bool:
        if self.fact_type is None:
            return True
        spec = self.fact_type.fields.get(name)
        return spec is None or spec.optional

    def node(self, node: Condition, negate: bool) -> dict[str, Any] | None:
        """Compile a node (None means 'always true', only for an empty root)."""
        if node.all is not None or node.any is not None:
            children = node.all if node.all is not None else node.any
            assert children is not None
            parts = [self.node(child, negate) for child in children]
            is_all = node.all is not None
            op = "$and" if is_all != negate else "$or"
            return _join(op, [p for p in parts if p is not None])
        if node.not_ is not None:
            return self.node(node.not_, not negate)
        if node.field is None:
            return None
        return self.test(node, negate)

    def test(self, node: Condition, negate: bool) -> dict[str, Any]:
        name = node.field
        assert name is not None
        ops = node.operators()
        if len(ops) != 1:
            raise CompileError(f"test on '{name}' needs exactly one operator, has {ops}")
        op = ops[0]
        operand = node.operand(op)
        absent = {"$nex": {name: 1}}
        if op == "exists":
            return absent if negate else {"$ex": {name: 1}}
        if op == "missing":
            return {"$ex": {name: 1}} if negate else absent
        if op == "in":
            values = [_resolve(v, self.parameters) for v in operand]
            unique: list[Any] = []
            for value in values:
                if not any(type(value) is type(u) and value == u for u in unique):
                    unique.append(value)
            if not negate:
                return _join("$or", [{"$eq": {name: v}} for v in unique])
            inner = _join("$and", [{"$neq": {name: v}} for v in unique])
        else:
            value = _resolve(operand, self.parameters)
            if not negate:
                return {_POSITIVE[op]: {name: value}}
            inner = {_NEGATED[op]: {name: value}}
        if not self.may_be_absent(name):
            return inner
        return _join("$or", [absent, inner])


def compile_rule(
    rule: Rule, parameters: Mapping[str, Any], fact_types: Mapping[str, FactType] | None = None
) -> dict[str, Any]:
    """One durable rule: {"all": [{"m": {"$and": [{"t": type}, ...]}}]}."""
    fact_type = fact_types.get(rule.when.fact) if fact_types is not None else None
    condition = _Compiler(parameters, fact_type).node(rule.when, negate=False)
    parts: list[dict[str, Any]] = [{"t": rule.when.fact}]
    if condition is not None:
        parts.extend(condition["$and"] if set(condition) == {"$and"} else [condition])
    durable_rule = {"all": [{"m": {"$and": parts}}]}
    assert_single_fact(rule.id, durable_rule)
    return durable_rule


def compile_emit(rule: Rule) -> dict[str, Any] | None:
    emit = rule.then.emit
    if emit is None:
        return None
    return {"fact": emit.fact, "copy": emit.copy_, "set": dict(sorted(emit.set.items()))}


def assert_single_fact(rule_id: str, durable_rule: Mapping[str, Any]) -> None:
    """Guard against #381: one pattern named `m`, every test a field against a literal."""
    patterns = durable_rule.get("all")
    if set(durable_rule) != {"all"} or not isinstance(patterns, list) or len(patterns) != 1:
        raise CompileError(f"rule '{rule_id}': exactly one pattern expected")
    if set(patterns[0]) != {"m"}:
        raise CompileError(f"rule '{rule_id}': the pattern must be named 'm'")

    def check(expr: Any) -> None:
        if not isinstance(expr, dict) or len(expr) != 1:
            raise CompileError(f"rule '{rule_id}': malformed expression {expr!r}")
        ((op, arg),) = expr.items()
        if op in ("$and", "$or"):
            if not isinstance(arg, list) or not arg:
                raise CompileError(f"rule '{rule_id}': {op} needs a list")
            for item in arg:
                check(item)
            return
        if op in ("$ex", "$nex"):
            if not (isinstance(arg, dict) and len(arg) == 1 and next(iter(arg.values())) == 1):
                raise CompileError(f"rule '{rule_id}': malformed {op}")
            return
        if op in _COMPARISONS:
            if not (isinstance(arg, dict) and len(arg) == 1):
                raise CompileError(f"rule '{rule_id}': malformed {op}")
            ((fname, value),) = arg.items()
        elif not op.startswith("$"):
            fname, value = op, arg  # the {"t": "<type>"} equality shorthand
        else:
            raise CompileError(f"rule '{rule_id}': operator {op} is not allowed")
        if fname.startswith("$") or "." in fname:
            raise CompileError(f"rule '{rule_id}': field {fname!r} names another fact")
        if isinstance(value, dict | list) or value is None:
            raise CompileError(
                f"rule '{rule_id}': {fname} is compared with {value!r}, not a literal "
                "(a reference to another fact would be a join, upstream #381)"
            )

    check(patterns[0]["m"])


def check_fact_type_size(fact_type: FactType) -> None:
    count = len(fact_type.fields) + len(RESERVED_FIELDS)
    if count > MAX_FACT_PROPERTIES:
        raise CompileError(
            f"fact type '{fact_type.name}' has {count} properties with id, t and sid; "
            f"durable_rules takes at most {MAX_FACT_PROPERTIES}"
        )


def compile_rules(
    rules: list[Rule],
    parameters: Mapping[str, Any],
    fact_types: Mapping[str, FactType] | None = None,
) -> dict[str, Any]:
    """The compiled form of the active rules (deterministic: keys sorted on output)."""
    durable: dict[str, Any] = {}
    emits: dict[str, Any] = {}
    used: set[str] = set()
    for rule in rules:
        if rule.status != "active":
            continue
        if rule.id in durable:
            raise CompileError(f"duplicate rule id '{rule.id}'")
        durable[rule.id] = compile_rule(rule, parameters, fact_types)
        used.add(rule.when.fact)
        emit = compile_emit(rule)
        if emit is not None:
            emits[rule.id] = emit
            used.add(emit["fact"])
    if fact_types is not None:
        for name in sorted(used):
            if name in fact_types:
                check_fact_type_size(fact_types[name])
    return {
        "format": FORMAT,
        "rules": dict(sorted(durable.items())),
        "emits": dict(sorted(emits.items())),
    }


def dumps(compiled: Mapping[str, Any]) -> str:
    """The canonical text of a compiled rule set (golden files compare it exactly)."""
    return json.dumps(compiled, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def compile_ruleset(ruleset: Any) -> dict[str, Any]:
    """Compile a `cds.rules.RuleSet` (its active rules, parameters substituted)."""
    return compile_rules(ruleset.rules, ruleset.parameters, ruleset.fact_types)


def compile_file(ruleset: Any, path: str) -> dict[str, Any]:
    """The part of the compiled rule set defined in one rule file (for golden files).

    `path` names the file (only its file name is compared: one folder holds the rules).
    """
    compiled = ruleset.compiled or compile_ruleset(ruleset)
    name = Path(path).name
    ids = {rule_id for rule_id, p in ruleset.rule_files.items() if Path(p).name == name}
    return {
        "format": compiled["format"],
        "rules": {k: v for k, v in compiled["rules"].items() if k in ids},
        "emits": {k: v for k, v in compiled["emits"].items() if k in ids},
    }
