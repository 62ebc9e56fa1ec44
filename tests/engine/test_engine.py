"""The durable_rules engine wrapper: sessions, threads, errors, chaining, dedup."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import cds.engine as engine_module
from cds.contracts.facts import Assessment, DraftOrder
from cds.engine import Engine, EngineError
from cds.rules import RuleSet, load_ruleset
from cds.rules.reference import evaluate_ruleset
from tests.rules.conftest import FIXTURES, ORDER_KEYS


@pytest.fixture(scope="module")
def basic() -> RuleSet:
    return load_ruleset(FIXTURES / "basic", order_keys=ORDER_KEYS)


def assessment(fid: str = "assessment:1", **fields: Any) -> Assessment:
    base: dict[str, Any] = {
        "age": 67,
        "sex": "female",
        "menopausal_status": "postmenopausal",
        "menopausal_assumed": False,
        "has_dxa": True,
        "last_dxa_date": "2025-03-01",
    }
    base.update(fields)
    return Assessment(id=fid, **base)


def test_no_timer_threads(basic: RuleSet) -> None:
    before = threading.active_count()
    engine = Engine(basic)
    engine.evaluate([assessment(lowest_t=-2.7, lowest_t_site="total-hip")])
    assert threading.active_count() == before
    engine.close()


def test_forward_chaining_through_an_emitted_fact(basic: RuleSet) -> None:
    result = Engine(basic).evaluate([assessment(lowest_t=-2.7, lowest_t_site="total-hip")])
    assert [(f.rule_id, f.fact_id, f.fact_type) for f in result.firings] == [
        (
            "classification.t.osteoporosis",
            "scored_assessment:assessment:1:score.t.postmenopausal",
            "scored_assessment",
        ),
        ("score.t.postmenopausal", "assessment:1", "assessment"),
    ]
    (emitted,) = result.emitted
    assert emitted["id"] == "scored_assessment:assessment:1:score.t.postmenopausal"
    assert emitted["t"] == "scored_assessment"
    assert emitted["score_type"] == "T"
    assert emitted["lowest_t"] == -2.7
    assert result.firings[0].fact["lowest_t_site"] == "total-hip"
    assert "t" not in result.firings[0].fact
    assert "sid" not in result.firings[0].fact


def test_no_rule_matched_is_an_empty_result(basic: RuleSet) -> None:
    order = DraftOrder(
        id="draft_order:1", resource="ServiceRequest/1", display="DXA", order_date="2026-01-01"
    )
    result = Engine(basic).evaluate([order])
    assert result.firings == []
    assert result.emitted == []


def test_empty_input(basic: RuleSet) -> None:
    assert Engine(basic).evaluate([]).firings == []


def test_session_deleted_so_the_same_facts_fire_again(
    basic: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(basic)
    facts = [assessment(lowest_t=-2.7), assessment("assessment:2", sex="male", age=40)]
    first = engine.evaluate(facts)
    sid = uuid.UUID("00000000-0000-4000-8000-000000000001")
    monkeypatch.setattr("cds.engine.uuid.uuid4", lambda: sid)
    assert engine.evaluate(facts) == first
    assert engine.evaluate(facts) == first  # same session id again: it was deleted
    host = engine._host
    assert host is not None
    assert engine._chunks  # the basic rules are split by fact type
    for chunk in engine._chunks:  # every chunk's session of that evaluation is gone
        with pytest.raises(Exception, match="309"):
            host.get_state(chunk.name, str(sid))


def test_session_deleted_when_nothing_matched(basic: RuleSet) -> None:
    # durable-rules 2.0.28 segfaults deleting a session where no fact matched a rule;
    # the engine's session sentinel prevents that: many no-match evaluations in a row.
    engine = Engine(basic)
    order = DraftOrder(
        id="draft_order:1", resource="ServiceRequest/1", display="DXA", order_date="2026-01-01"
    )
    for _ in range(200):
        assert engine.evaluate([order]).firings == []


def test_batch_with_unmatched_facts_still_runs_the_matched_ones(basic: RuleSet) -> None:
    order = DraftOrder(
        id="draft_order:1", resource="ServiceRequest/1", display="DXA", order_date="2026-01-01"
    )
    result = Engine(basic).evaluate([order, assessment(has_dxa=False, last_dxa_date=None)])
    assert result.fired == ["score.t.postmenopausal", "screening.no-dxa"]


def test_action_exception_is_surfaced_with_the_rule_id(
    basic: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(engine_module, "build_emitted", broken)
    engine = Engine(basic)
    with pytest.raises(
        EngineError, match=r"rule 'score.t.postmenopausal' failed: ZeroDivision"
    ) as info:
        engine.evaluate([assessment()])
    assert info.value.rule_id == "score.t.postmenopausal"
    monkeypatch.undo()
    assert engine.evaluate([assessment()]).fired == ["score.t.postmenopausal"]


def test_duplicate_fact_ids_are_refused(basic: RuleSet) -> None:
    with pytest.raises(EngineError, match="two facts have the id 'assessment:1'"):
        Engine(basic).evaluate([assessment(), assessment()])


def test_mapping_facts_need_type_id_and_required_fields(basic: RuleSet) -> None:
    engine = Engine(basic)
    with pytest.raises(EngineError, match="needs 't'"):
        engine.evaluate([{"id": "x"}])
    with pytest.raises(EngineError, match="lacks required fields: age, has_dxa"):
        engine.evaluate(
            [
                {
                    "id": "a",
                    "t": "assessment",
                    "sex": "male",
                    "menopausal_status": "unknown",
                    "menopausal_assumed": False,
                }
            ]
        )
    with pytest.raises(EngineError, match="engine's own"):
        engine.evaluate([{"id": "$session", "t": "scored_assessment"}])


def test_too_many_properties_refused(basic: RuleSet) -> None:
    fact = {"id": "s", "t": "scored_assessment", **{f"x{i}": i for i in range(260)}}
    with pytest.raises(EngineError, match="durable_rules takes at most 255"):
        Engine(basic).evaluate([fact])


def test_or_branches_fire_once_per_fact(basic: RuleSet) -> None:
    # screening.no-dxa is any[has_dxa == false, last_dxa_date missing]: both hold here
    result = Engine(basic).evaluate([assessment(has_dxa=False, last_dxa_date=None)])
    assert [f.rule_id for f in result.firings].count("screening.no-dxa") == 1


def test_engine_equals_reference_on_the_fixture(basic: RuleSet) -> None:
    engine = Engine(basic)
    for facts in (
        [assessment(lowest_t=-2.5, lowest_t_site="femoral-neck")],
        [assessment(sex="male", age=50, menopausal_status="not-applicable", lowest_t=-0.5)],
        [assessment(has_dxa=False, last_dxa_date=None), assessment("assessment:2", lowest_t=-1.0)],
    ):
        assert engine.evaluate(facts) == evaluate_ruleset(basic, facts)


def test_concurrent_evaluations_are_serialised(basic: RuleSet) -> None:
    engine = Engine(basic)
    expected = {
        i: evaluate_ruleset(basic, [assessment(f"assessment:{i}", lowest_t=-3.0 + i / 10)])
        for i in range(20)
    }
    failures: list[str] = []

    def worker(i: int) -> None:
        for _ in range(20):
            got = engine.evaluate([assessment(f"assessment:{i}", lowest_t=-3.0 + i / 10)])
            if got != expected[i]:
                failures.append(f"{i}: {got.fired} != {expected[i].fired}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_closed_engine_refuses(basic: RuleSet) -> None:
    engine = Engine(basic)
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.evaluate([assessment()])


def test_engine_takes_the_compiled_dict(basic: RuleSet) -> None:
    result = Engine(basic.compiled).evaluate([assessment(lowest_t=-2.7)])
    assert "classification.t.osteoporosis" in result.fired
    with pytest.raises(EngineError, match="not a compiled rule set"):
        Engine({"rules": {}})


def test_rule_set_without_active_rules(tmp_path: Path) -> None:
    from tests.rules.conftest import write_rules

    text = (
        "rules:\n  - id: a\n    title: A\n    version: 1\n    status: draft\n"
        "    evidence: [CS-2.2]\n    when: {fact: assessment}\n"
        "    then: {card: {topic: screening, indicator: info, summary: hi}}\n"
    )
    ruleset = load_ruleset(write_rules(tmp_path / "rules", {"x.yaml": text}))
    assert Engine(ruleset).evaluate([assessment()]).firings == []


@pytest.mark.parametrize("fid", ['assessment:"q"', "assessment:back\\slash", "assessment:é", "a b"])
def test_fact_ids_with_escapes_and_unicode(basic: RuleSet, fid: str) -> None:
    facts = [assessment(fid, lowest_t=-2.7)]
    result = Engine(basic).evaluate(facts)
    assert result == evaluate_ruleset(basic, facts)
    assert ("score.t.postmenopausal", fid) in [(f.rule_id, f.fact_id) for f in result.firings]


def test_normalized_facts_equal_model_dump() -> None:
    from cds.contracts.facts import ContrastStudy, VertebraAnalysis, fact_type_name
    from cds.rules.result import normalize_facts

    facts = [
        assessment(lowest_t=-2.7, lowest_t_site="total-hip", tbs=1.2),
        VertebraAnalysis(
            id="v",
            scan_date="2025-01-01",
            vertebrae_present=4,
            evaluable_vertebrae=3,
            max_adjacent_diff=1.1,
            values="L1 -1.0",
        ),
        ContrastStudy(id="c", days_before_scan=3, date="2025-01-01", resource="P/1", display="x"),
        DraftOrder(id="d", resource="S/1", display="DXA", order_date="2026-01-01"),
    ]
    assert normalize_facts(facts) == [
        (fact_type_name(f), f.model_dump(exclude_none=True)) for f in facts
    ]
