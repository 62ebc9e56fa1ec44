"""Differential: the compiled durable_rules engine == the reference evaluator.

Random valid rule sets (all/any/not/in/exists/missing/params over the real fact schema,
forward chaining through derived facts) and random facts; hypothesis shrinks a
mismatch to a small case. benchmarks/engine_soak.py runs the same generator for
1,000,000 cases.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cds.engine import Engine
from cds.rules.compiler import compile_rules
from cds.rules.reference import evaluate
from tests.engine import generate


def run_case(case: generate.Case) -> list[str]:
    compiled = compile_rules(case.rules, generate.PARAMETERS, generate.FACT_TYPES)
    engine = Engine(compiled)
    mismatches: list[str] = []
    try:
        for facts in case.fact_sets:
            got = engine.evaluate(facts)
            want = evaluate(case.rules, generate.PARAMETERS, facts)
            if got != want:
                mismatches.append(f"engine {got} != reference {want} for facts {facts}")
    finally:
        engine.close()
    return mismatches


@given(st.data(), st.integers(0, 2**32 - 1))
def test_engine_matches_reference(data: Any, seed: int) -> None:
    # rules drawn by hypothesis (they shrink); the ~70-field facts from a drawn seed,
    # which keeps a CI-sized run to a few seconds
    rules = generate.ruleset(generate.HypothesisChooser(data))
    fact_chooser = generate.RandomChooser(random.Random(seed))
    case = generate.Case(rules, [generate.facts(fact_chooser) for _ in range(4)])
    assert run_case(case) == []


def test_generator_exercises_firings_and_chaining() -> None:
    """The generated cases are not vacuous: rules fire and emitted facts chain."""
    chooser = generate.RandomChooser(random.Random(7))
    fired = emitted = 0
    for _ in range(60):
        case = generate.case(chooser)
        for facts in case.fact_sets:
            result = evaluate(case.rules, generate.PARAMETERS, facts)
            fired += len(result.firings)
            emitted += len(result.emitted)
        assert run_case(case) == []
    assert fired > 100
    assert emitted > 10
