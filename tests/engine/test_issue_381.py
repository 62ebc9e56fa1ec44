"""upstream jruizgit/rules #381: a join rule next to a range rule crashes durable-rules.

The first test documents the crash (in a child process: it kills the interpreter).
The others show that the rule language cannot express that shape: a rule names one
fact type, and an operand is a literal or a parameter, never another fact's field.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.rules.conftest import ErrorLister, Loader

# The shape of issue 2, built with durable's own DSL: a range rule and a join rule.
# The crash depends on the C engine's memory state, so one session is not always
# enough; over a few rule sets and sessions it crashes every time (measured 20/20),
# while the same loop with the join replaced by a plain comparison never does.
REPRO = textwrap.dedent(
    """
    from durable.lang import assert_fact, c, m, ruleset, when_all

    for i in range(200):
        with ruleset(f"r381_{i}"):

            @when_all((m.value > -2.5) & (m.value < -1.0))
            def low(c):
                pass

            @when_all(
                c.first << (m.kind == "spine"),
                c.second << (m.kind == "hip") & (m.value < c.first.value - 1.0),
            )
            def gap(c):
                pass

        for sid in range(1, 4):
            assert_fact(f"r381_{i}", {"id": 1, "sid": sid, "kind": "spine", "value": -2.0})
            # the join condition is false here: -1.5 < -2.0 - 1.0 does not hold
            assert_fact(f"r381_{i}", {"id": 2, "sid": sid, "kind": "hip", "value": -1.5})
    print("survived", flush=True)
    """
)
JOIN = """        @when_all(
            c.first << (m.kind == "spine"),
            c.second << (m.kind == "hip") & (m.value < c.first.value - 1.0),
        )"""
CONTROL = REPRO.replace(JOIN, '        @when_all((m.kind == "hip") & (m.value < -3.0))')


def _run(source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.subprocess
def test_join_next_to_range_rule_segfaults_in_durable() -> None:
    child = _run(REPRO)
    assert child.returncode == -11, (child.returncode, child.stdout, child.stderr[-2000:])
    assert "survived" not in child.stdout


@pytest.mark.subprocess
def test_same_loop_without_the_join_survives() -> None:
    assert CONTROL != REPRO
    child = _run(CONTROL)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    assert "survived" in child.stdout


BASE = """
rules:
  - id: gap
    title: spine-hip gap
    version: 1
    status: active
    evidence: [CS-2.2]
    then: {card: {topic: screening, indicator: info, summary: hi}}
"""


def test_an_operand_cannot_be_another_facts_field(errors: ErrorLister) -> None:
    text = BASE + "    when: {fact: assessment, field: lowest_hip_t, lt: {field: lumbar_t}}\n"
    assert errors(text) == ["8:55: lt: expected a literal or {param: NAME}, got a mapping"]


def test_a_rule_matches_exactly_one_fact_type(errors: ErrorLister) -> None:
    text = BASE + "    when: {fact: [assessment, vertebra_analysis]}\n"
    assert errors(text) == ["8:18: fact: expected a string, got a list"]


def test_no_second_pattern_or_alias(errors: ErrorLister) -> None:
    text = BASE + "    when: {fact: assessment, first: {field: lumbar_t, lt: -1.0}}\n"
    assert errors(text) == ["8:30: unknown operator or key 'first'"]


def test_a_template_string_is_not_a_fact_reference(errors: ErrorLister) -> None:
    text = BASE + "    when: {fact: assessment, field: lowest_hip_t, lt: '{{ fact.lumbar_t }}'}\n"
    assert errors(text) == ["8:55: 'lowest_hip_t' is a number, got '{{ fact.lumbar_t }}'"]


def test_the_relation_is_a_derived_field_instead(load: Loader) -> None:
    # what the #381 rule wanted, as the language says it: cds.facts computes the gap
    text = BASE + "    when: {fact: assessment, field: spine_hip_gap, gt: 1.0}\n"
    compiled = load(text).compiled["rules"]["gap"]
    assert compiled == {
        "all": [{"m": {"$and": [{"t": "assessment"}, {"$gt": {"spine_hip_gap": 1.0}}]}}]
    }
