"""Differential: the compiled durable_rules engine == the reference evaluator.

Random valid rule sets (all/any/not/in/exists/missing/params over the real fact schema,
forward chaining through derived facts) and random facts; hypothesis shrinks a
mismatch to a small case. benchmarks/engine_soak.py runs the same generator for
1,000,000 cases.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.engine import Engine, SplitBounds
from cds.rules.compiler import compile_rules
from cds.rules.reference import evaluate
from tests.engine import generate

#: Fan-out bounds the differential runs with: the production one, and one so small that
#: every generated rule set is split over many durable rulesets, with derived facts
#: chaining from one chunk into others (the split must be invisible).
BOUNDS = [SplitBounds(), SplitBounds(results=2, exists=2, hashed=3)]


def run_case(case: generate.Case, bounds: SplitBounds | None = None) -> list[str]:
    compiled = compile_rules(case.rules, generate.PARAMETERS, generate.FACT_TYPES)
    engine = Engine(compiled, bounds=bounds)
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


@pytest.mark.parametrize("bounds", BOUNDS, ids=["production", "tiny"])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_engine_matches_reference(bounds: SplitBounds, data: Any, seed: int) -> None:
    # rules drawn by hypothesis (they shrink); the ~70-field facts from a drawn seed,
    # which keeps a CI-sized run to a few seconds
    rules = generate.ruleset(generate.HypothesisChooser(data))
    fact_chooser = generate.RandomChooser(random.Random(seed))
    case = generate.Case(rules, [generate.facts(fact_chooser) for _ in range(4)])
    assert run_case(case, bounds) == []


def test_generator_exercises_firings_and_chaining() -> None:
    """The generated cases are not vacuous: rules fire and emitted facts chain, also
    across chunks of a split engine."""
    chooser = generate.RandomChooser(random.Random(7))
    fired = emitted = split = 0
    for _ in range(60):
        case = generate.case(chooser)
        for facts in case.fact_sets:
            result = evaluate(case.rules, generate.PARAMETERS, facts)
            fired += len(result.firings)
            emitted += len(result.emitted)
        for bounds in BOUNDS:
            assert run_case(case, bounds) == []
        compiled = compile_rules(case.rules, generate.PARAMETERS, generate.FACT_TYPES)
        engine = Engine(compiled, bounds=BOUNDS[1])
        split += engine.chunk_count > 1
        engine.close()
    assert fired > 100
    assert emitted > 10
    assert split > 20  # most generated rule sets are split over several rulesets
