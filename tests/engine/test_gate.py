"""The gate (cds.engine.gate): a chunk none of whose rules can match the facts at hand gets
no session, and the answers stay the reference evaluator's, also where an emitted fact
must wake a chunk that the input facts left out."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from cds.engine import Engine, SplitBounds
from cds.engine.gate import Gate
from cds.rules.compiler import compile_rules
from cds.rules.model import Rule
from cds.rules.reference import evaluate
from tests.engine import generate

#: one rule per chunk: every rule's chunk is run or left out on its own
ONE_RULE = SplitBounds(results=1)


def _rule(index: int, fact: str, when: dict[str, Any], emit: dict[str, Any] | None = None) -> Rule:
    then: dict[str, Any] = {"card": {"topic": "screening", "indicator": "info", "summary": "s"}}
    if emit is not None:
        then = {"emit": emit}
    return Rule.model_validate(
        {
            "id": f"rule.r{index}",
            "title": f"rule {index}",
            "version": 1,
            "status": "active",
            "evidence": ["CS-2.2"],
            "when": {"fact": fact, **when},
            "then": then,
        }
    )


class Runs:
    """The batches the engine sends to durable: (chunk's first rule, fact ids)."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[tuple[str, list[str]]] = []
        run = Engine._run_batch

        def recording(inner: Engine, ev: Any, index: int, texts: list[str]) -> None:
            ids = [json.loads(t)["id"] for t in texts if json.loads(t)["t"] != "$session"]
            self.batches.append((inner._chunks[index].rule_ids[0], ids))
            run(inner, ev, index, texts)

        monkeypatch.setattr(Engine, "_run_batch", recording)
        self.engine = engine

    def chunks(self) -> set[str]:
        return {rule for rule, _ in self.batches}


def _check(rules: list[Rule], facts: list[dict[str, Any]], engine: Engine) -> None:
    assert engine.evaluate(facts) == evaluate(rules, generate.PARAMETERS, facts)


def test_chunks_no_fact_can_match_get_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = [
        _rule(0, "assessment", {"field": "sex", "eq": "male"}),
        _rule(1, "assessment", {"field": "sex", "eq": "female"}),
        _rule(2, "assessment", {"field": "age", "ge": 65}),
        _rule(3, "assessment", {"field": "age", "lt": 65}),
        _rule(4, "assessment", {"field": "lowest_t", "exists": True}),
        _rule(5, "assessment", {"field": "lowest_t", "missing": True}),
        _rule(6, "assessment", {"all": [{"field": "age", "gt": 64}, {"field": "age", "le": 65}]}),
        _rule(7, "draft_order", {"field": "display", "eq": "DXA"}),
        _rule(
            8, "assessment", {"any": [{"field": "sex", "eq": "male"}, {"field": "age", "lt": 0}]}
        ),
    ]
    compiled = compile_rules(rules, generate.PARAMETERS, generate.FACT_TYPES)
    engine = Engine(compiled, bounds=ONE_RULE)
    runs = Runs(engine, monkeypatch)
    assert engine.chunk_count == len(rules)
    fact = {"t": "assessment", "id": "a", "sex": "female", "age": 65, "menopausal_assumed": False}
    fact.update(menopausal_status="postmenopausal", has_dxa=False)
    _check(rules, [fact], engine)
    # male: eq fails; age 65 fails lt 65; lowest_t absent fails exists; no draft order;
    # the `any` rule requires none of its branches, so it is asked (and does not fire)
    assert runs.chunks() == {"rule.r1", "rule.r2", "rule.r5", "rule.r6", "rule.r8"}
    runs.batches.clear()
    # boundary values on both sides of 65 and of the gt 64 / le 65 pair
    for age, ran in ((64, {"rule.r3"}), (66, {"rule.r2"})):
        runs.batches.clear()
        _check(rules, [{**fact, "age": age}], engine)
        assert runs.chunks() - {"rule.r1", "rule.r5", "rule.r8"} == ran, age
    runs.batches.clear()
    assert engine.evaluate([]) == evaluate(rules, generate.PARAMETERS, [])
    nothing = {**fact, "sex": "other", "age": 200, "lowest_t": -1.0}
    _check(rules, [nothing], engine)
    assert runs.chunks() == {"rule.r2", "rule.r4", "rule.r8"}
    engine.close()


def test_an_emitted_fact_wakes_a_chunk_the_input_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = [
        _rule(
            0,
            "assessment",
            {"field": "age", "ge": 50},
            emit={"fact": "derived_a", "copy": True, "set": {"flag": True, "level": 12}},
        ),
        _rule(1, "derived_a", {"field": "flag", "eq": True}),
        _rule(2, "derived_a", {"field": "level", "ge": 49}),
        _rule(3, "derived_a", {"field": "level", "eq": 12}),
    ]
    compiled = compile_rules(rules, generate.PARAMETERS, generate.FACT_TYPES)
    engine = Engine(compiled, bounds=ONE_RULE)
    runs = Runs(engine, monkeypatch)
    base = {"age": 70, "sex": "female", "menopausal_status": "postmenopausal"}
    base.update(menopausal_assumed=False, has_dxa=False)
    facts = [
        {"t": "derived_a", "id": "d", **base, "flag": False, "level": 0, "label": "x"},
        {"t": "assessment", "id": "a", **base},
    ]
    _check(rules, facts, engine)
    emitted = "derived_a:a:rule.r0"
    # the input derived fact (flag false, level 0) opens no derived chunk; the emitted
    # one (flag true, level 12) wakes two of them, and level 12 < 49 leaves r2 out
    assert sorted(runs.batches) == [
        ("rule.r0", ["a"]),
        ("rule.r1", [emitted]),
        ("rule.r3", [emitted]),
    ]
    result = engine.evaluate(facts)
    assert {(f.rule_id, f.fact_id) for f in result.firings} == {
        ("rule.r0", "a"),
        ("rule.r1", emitted),
        ("rule.r3", emitted),
    }
    runs.batches.clear()
    _check(rules, [{**facts[1], "age": 49}], engine)  # no rule can match: no session
    assert runs.batches == []
    engine.close()


def _holding_chunk(engine: Engine) -> dict[str, int]:
    return {r: i for i, chunk in enumerate(engine._chunks) for r in chunk.rule_ids}


@pytest.mark.parametrize("bounds", [SplitBounds(), SplitBounds(results=2, exists=2, hashed=3)])
def test_the_gate_admits_every_firing_of_the_reference(bounds: SplitBounds) -> None:
    """On generated rule sets and facts (emitted ones included), the chunk of every rule
    the reference evaluator fires is among the gate's chunks for that fact."""
    chooser = generate.RandomChooser(random.Random(23))
    firings = left_out = 0
    for _ in range(150):
        case = generate.case(chooser)
        compiled = compile_rules(case.rules, generate.PARAMETERS, generate.FACT_TYPES)
        engine = Engine(compiled, bounds=bounds)
        try:
            holding = _holding_chunk(engine)
            for facts in case.fact_sets:
                want = evaluate(case.rules, generate.PARAMETERS, facts)
                for f in want.firings:
                    assert holding[f.rule_id] in engine._gates[f.fact_type].chunks(f.fact)
                    firings += 1
                for fact in facts:
                    gate = engine._gates.get(str(fact["t"]))
                    if gate is not None:
                        left_out += len(gate._spans) - len(gate.chunks(fact))
                assert engine.evaluate(facts) == want
        finally:
            engine.close()
    assert firings > 200
    assert left_out > 100  # the gate does leave chunks out on these cases


#: values of every kind, put into fields of any kind: durable compares across kinds
#: (`"1.0"` with 1, `true` with 1), ints past 2**53 and floats written with exponents
ANY_VALUE = [
    *generate.POOLS["string"],
    *generate.POOLS["number"],
    *generate.POOLS["integer"],
    True,
    False,
    "true",
    "65",
    "1",
    "0",
    -0.0,
    1.0,
    2**60,
    2**53 + 1,
    1e16,
    1e-7,
]


def test_the_gate_never_changes_what_durable_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Facts with values of other kinds than their fields' (which durable compares
    across kinds): the gated engine finds exactly what durable finds in every chunk."""
    rng = random.Random(5)
    chooser = generate.RandomChooser(rng)
    cases = []
    for _ in range(120):
        case = generate.case(chooser)
        for facts in case.fact_sets:
            for fact in facts:
                for name in sorted(fact):
                    if name not in ("id", "t") and rng.random() < 0.3:
                        fact[name] = rng.choice(ANY_VALUE)
        cases.append(case)
    bounds = SplitBounds(results=2, exists=2, hashed=3)

    def answers() -> list[Any]:
        out: list[Any] = []
        for case in cases:
            compiled = compile_rules(case.rules, generate.PARAMETERS, generate.FACT_TYPES)
            engine = Engine(compiled, bounds=bounds)
            try:
                for facts in case.fact_sets:
                    try:
                        out.append(engine.evaluate(facts))
                    except Exception as exc:  # the same refusal either way
                        out.append(type(exc).__name__)
            finally:
                engine.close()
        return out

    gated = answers()
    monkeypatch.setattr(Gate, "chunks", lambda self, data: [i for i, _ in self._spans])
    assert answers() == gated
    assert sum(1 for a in gated if not isinstance(a, str) and a.firings) > 50


def test_ints_past_double_precision_are_left_to_durable() -> None:
    """durable compares two ints as int64: 2**53 + 1 > 2**53, though not as doubles."""
    from cds.rules.compiler import FORMAT

    edge = 2**53
    rules = {
        "r.gt": {"all": [{"m": {"$and": [{"t": "assessment"}, {"$gt": {"age": edge}}]}}]},
        "r.lt": {"all": [{"m": {"$and": [{"t": "assessment"}, {"$lt": {"age": -edge}}]}}]},
    }
    engine = Engine({"format": FORMAT, "rules": rules, "emits": {}}, bounds=ONE_RULE)
    try:
        for age, fired in ((edge + 1, ["r.gt"]), (-edge - 1, ["r.lt"]), (edge, [])):
            fact = {"t": "assessment", "id": "a", "age": age, "sex": "female"}
            fact.update(menopausal_status="postmenopausal", menopausal_assumed=False)
            result = engine.evaluate([{**fact, "has_dxa": False}])
            assert [f.rule_id for f in result.firings] == fired, age
    finally:
        engine.close()
