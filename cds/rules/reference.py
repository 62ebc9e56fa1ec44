"""The reference evaluator: the definition of what a rule set means, in plain Python.

A test on an absent field is false; `exists` / `missing` test presence; `not` is
classical negation; `all` / `any` are conjunction / disjunction. Every active rule
fires once for every fact of its type whose condition holds. Emitted facts are
evaluated too, until nothing new is emitted (a fixpoint; validation forbids cycles).
The compiled durable_rules engine must agree with this on every input
(tests/engine/test_differential.py, benchmarks/engine_soak.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from cds.rules.compiler import compile_emit
from cds.rules.model import Condition, Rule
from cds.rules.result import (
    EngineResult,
    FactError,
    FactInput,
    Firing,
    build_emitted,
    make_result,
    normalize_facts,
)


def _value(raw: Any, parameters: Mapping[str, Any]) -> Any:
    if isinstance(raw, dict) and set(raw) == {"param"}:
        return parameters[raw["param"]]
    return raw


def holds(node: Condition, fact: Mapping[str, Any], parameters: Mapping[str, Any]) -> bool:
    """Does the condition hold for the fact (a mapping of present fields)?"""
    if node.all is not None:
        return all(holds(child, fact, parameters) for child in node.all)
    if node.any is not None:
        return any(holds(child, fact, parameters) for child in node.any)
    if node.not_ is not None:
        return not holds(node.not_, fact, parameters)
    if node.field is None:
        return True  # a `when` without a test matches every fact of its type
    (op,) = node.operators()
    present = fact.get(node.field) is not None
    if op == "exists":
        return present
    if op == "missing":
        return not present
    if not present:
        return False
    value = fact[node.field]
    if op == "in":
        return any(value == _value(v, parameters) for v in node.operand("in"))
    literal = _value(node.operand(op), parameters)
    if op == "eq":
        return bool(value == literal)
    if op == "ne":
        return bool(value != literal)
    if op == "lt":
        return bool(value < literal)
    if op == "le":
        return bool(value <= literal)
    if op == "gt":
        return bool(value > literal)
    return bool(value >= literal)


def evaluate(
    rules: Sequence[Rule], parameters: Mapping[str, Any], facts: Sequence[FactInput]
) -> EngineResult:
    """Evaluate the active rules over the facts (and the facts they emit)."""
    active = [r for r in rules if r.status == "active"]
    by_type: dict[str, list[Rule]] = {}
    for rule in active:
        by_type.setdefault(rule.when.fact, []).append(rule)
    queue = deque(normalize_facts(facts))
    seen = {data["id"] for _t, data in queue}
    firings: list[Firing] = []
    emitted: list[dict[str, Any]] = []
    while queue:
        ftype, data = queue.popleft()
        for rule in by_type.get(ftype, ()):
            if not holds(rule.when, data, parameters):
                continue
            firings.append(Firing(rule.id, data["id"], ftype, dict(data)))
            emit = compile_emit(rule)
            if emit is not None:
                target, new = build_emitted(emit, data, rule.id)
                if new["id"] in seen:
                    raise FactError(f"rule '{rule.id}' emitted a fact with a taken id {new['id']}")
                seen.add(new["id"])
                emitted.append({**new, "t": target})
                queue.append((target, new))
    return make_result(firings, emitted)


def evaluate_ruleset(ruleset: Any, facts: Sequence[FactInput]) -> EngineResult:
    """`evaluate` for a loaded `cds.rules.RuleSet`."""
    return evaluate(ruleset.rules, ruleset.parameters, facts)
