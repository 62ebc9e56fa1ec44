"""Rule sets past durable_rules' fixed tables: the engine split (cds.engine.SplitBounds).

durable-rules 2.0.28 keeps at most 512 hashed successors per alpha-network node; one more
and creating the ruleset never returns (about 520 rules whose first tests differ). The
engine splits the rules over several durable rulesets; these tests build rule sets far
past that in a child process with a timeout, so a regression fails instead of hanging.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cds.engine import Engine, SplitBounds
from cds.engine import partition as split
from cds.rules.compiler import FORMAT

REPO = Path(__file__).resolve().parents[2]


def _child(source: str, timeout: float = 240) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _distinct_first_tests(n: int) -> dict[str, object]:
    rules = {
        f"r{k:05d}": {"all": [{"m": {"$and": [{"t": "assessment"}, {"$gte": {"age": -k}}]}}]}
        for k in range(n)
    }
    return {"format": FORMAT, "rules": rules, "emits": {}}


def test_chunks_respect_the_bounds() -> None:
    compiled = _distinct_first_tests(1000)
    engine = Engine(compiled)
    try:
        # at most 64 rules of a fact type per chunk
        assert engine.chunk_count == 16
    finally:
        engine.close()


@pytest.mark.subprocess
def test_thousands_of_distinct_rules_build_and_all_fire() -> None:
    """5,000 rules whose first tests all differ (one durable ruleset hangs at ~520)."""
    got = _child(
        """
        import json
        from tests.engine.test_scale import _distinct_first_tests
        from cds.engine import Engine
        from cds.contracts.facts import Assessment
        engine = Engine(_distinct_first_tests(5000))
        fact = Assessment(id="a", age=70, sex="female", menopausal_status="postmenopausal",
                          menopausal_assumed=False, has_dxa=False)
        result = engine.evaluate([fact])
        print(json.dumps({"chunks": engine.chunk_count, "fired": len(result.fired)}))
        """
    )
    assert got == {"chunks": 79, "fired": 5000}


@pytest.mark.subprocess
def test_a_2000_rule_set_loads_and_agrees_with_the_reference(tmp_path: Path) -> None:
    """2,000 synthetic rules (tools/synthetic_rules.py): each copy fires exactly where its
    original does, and the split engine equals the reference evaluator, on every story."""
    got = _child(
        f"""
        import json, sys
        from datetime import date
        from pathlib import Path
        sys.path.insert(0, "tools")
        from synthetic_rules import write_synthetic
        from cds.pipeline import EvaluationInput, Evaluator
        from cds.rules import load_ruleset
        from cds.rules.reference import evaluate
        folder = write_synthetic(2000, Path({str(tmp_path)!r}), fire=True)
        ruleset = load_ruleset(folder)
        evaluator = Evaluator(ruleset)
        stories = sorted(Path("tests/fixtures/stories").glob("*.json"))
        checked = copies = 0
        for path in stories:
            doc = json.loads(path.read_text())
            if doc.get("resourceType") != "Bundle":
                continue
            resources = [e["resource"] for e in doc.get("entry", [])]
            result = evaluator.evaluate(
                EvaluationInput(resources=resources, as_of=date(2026, 11, 23))
            )
            want = evaluate(ruleset.active_rules, ruleset.parameters, result.facts)
            assert [(f.rule_id, f.fact_id) for f in want.firings] == [
                (f.rule_id, f.fact_id) for f in result.firings
            ], path
            fired = {{(f.rule_id, f.fact_id) for f in result.firings}}
            for rule_id, fact_id in fired:
                if ".syn" in rule_id:
                    copies += 1
                    assert (rule_id.split(".syn")[0], fact_id) in fired, (path, rule_id)
            checked += 1
        print(json.dumps({{"rules": len(ruleset.active_rules), "stories": checked,
                          "copies_fired": copies > 1000,
                          "split": evaluator._engine.chunk_count > 1}}))
        """
    )
    assert got["rules"] == 2000
    assert got["copies_fired"] is True
    assert got["split"] is True
    assert int(str(got["stories"])) > 40


UNSPLIT = """
    import json
    from tests.engine.test_scale import _distinct_first_tests
    from cds.engine import Engine, SplitBounds
    from cds.contracts.facts import Assessment
    engine = Engine(_distinct_first_tests({n}), bounds=SplitBounds(10**6, 10**6, 10**6))
    fact = Assessment(id="a", age=70, sex="female", menopausal_status="postmenopausal",
                      menopausal_assumed=False, has_dxa=False)
    print(json.dumps({{"fired": len(engine.evaluate([fact]).fired)}}))
"""


@pytest.mark.subprocess
def test_upstream_one_fact_may_match_at_most_64_rules_of_a_ruleset() -> None:
    """Why `SplitBounds.results` is 64: unsplit, 64 results work and 65 break the session."""
    assert _child(UNSPLIT.format(n=64)) == {"fired": 64}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(UNSPLIT.format(n=65))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # the 65th result overruns a fixed table: the process dies (SIGABRT or SIGSEGV,
    # depending on the heap's layout) or, with other layouts, durable reports error 303
    broken = done.returncode < 0 or "error code: 303" in done.stderr
    assert broken, "durable-rules takes 65 results now: revisit SplitBounds.results"


def test_partition_is_deterministic_and_keeps_types_apart() -> None:
    from cds.engine import _pattern

    patterns = {
        f"r{k}": _pattern(
            {"$and": [{"t": "assessment" if k % 2 else "draft_order"}, {"$lt": {"age": k}}]}
        )
        for k in range(10)
    }
    chunks = split(patterns, SplitBounds(exists=100, hashed=6))
    assert chunks == split(dict(reversed(patterns.items())), SplitBounds(exists=100, hashed=6))
    # per type at most 3 rules (each adds a test and a rule: 2+2+2 = 6)
    for chunk in chunks:
        assert sum(1 for r in chunk if int(r[1:]) % 2) <= 3
        assert sum(1 for r in chunk if not int(r[1:]) % 2) <= 3
    assert sorted(r for c in chunks for r in c) == sorted(patterns)


def test_result_bound_is_an_upper_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_paths` never undercounts: every (rule, fact) makes at most that many results,
    on generated rule sets and facts, and on the bundled rules with sparse facts."""
    import random
    from collections import Counter

    from cds.engine import _pattern
    from cds.rules import load_ruleset
    from cds.rules.compiler import compile_rules
    from tests.engine import generate

    counts: Counter[tuple[str, str]] = Counter()
    fire = Engine._fire

    def counting(self: Engine, ev: object, rule_id: str, fact_id: str) -> None:
        counts[(rule_id, fact_id)] += 1
        fire(self, ev, rule_id, fact_id)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "_fire", counting)
    chooser = generate.RandomChooser(random.Random(11))
    several = 0
    cases: list[tuple[dict[str, object], list[object]]] = []
    for _ in range(80):
        case = generate.case(chooser)
        compiled = compile_rules(case.rules, generate.PARAMETERS, generate.FACT_TYPES)
        cases.append((compiled, list(case.fact_sets)))
    bundled = load_ruleset(REPO / "rules").compiled
    sparse = {
        "t": "scored_assessment",
        "id": "s1",
        "has_dxa": True,
        "sex": "male",
        "last_dxa_date": "2025-01-01",
        "age": 50,
        "score_type": "T",
        "lowest_t": -2.0,
    }
    cases.append((bundled, [[sparse]]))
    for compiled, fact_sets in cases:
        engine = Engine(compiled)
        try:
            for facts in fact_sets:
                counts.clear()
                engine.evaluate(facts)  # type: ignore[arg-type]
                for (rule_id, _fact), n in counts.items():
                    rules = compiled["rules"]
                    assert isinstance(rules, dict)
                    bound = _pattern(rules[rule_id]["all"][0]["m"]).paths
                    assert n <= bound, (rule_id, n, bound)
                    several += n > 1
        finally:
            engine.close()
    assert several > 0  # the bound is exercised where branches do hold together


def test_each_fact_is_encoded_once_whatever_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fact's message text is made once per evaluation and sent to every chunk of its
    type (encoding it again per chunk was half of a 5,000-rule evaluation)."""
    import cds.engine as engine_module
    from cds.contracts.facts import Assessment

    encoded: list[object] = []
    encode = engine_module._encode

    def counting(value: object) -> str:
        encoded.append(value)
        return encode(value)

    monkeypatch.setattr(engine_module, "_encode", counting)
    engine = Engine(_distinct_first_tests(40), bounds=SplitBounds(results=4))
    try:
        assert engine.chunk_count == 10
        fact = Assessment(
            id="a",
            age=70,
            sex="female",
            menopausal_status="postmenopausal",
            menopausal_assumed=False,
            has_dxa=False,
        )
        assert len(engine.evaluate([fact]).fired) == 40
        # the fact and the session sentinel, each once for all 10 chunks
        assert len(encoded) == 2
    finally:
        engine.close()


FAULTS = """
    import json, resource
    import cds.engine
    from tests.engine.test_scale import _distinct_first_tests
    from cds.engine import Engine
    from cds.contracts.facts import Assessment
    cds.engine._heap_kept = {skip}  # True: as if already set, so it is not
    ballast = [bytearray(1 << 16) for _ in range(2000)]  # a service-sized heap below
    engine = Engine(_distinct_first_tests(3000))
    fact = Assessment(id="a", age=70, sex="female", menopausal_status="postmenopausal",
                      menopausal_assumed=False, has_dxa=False)
    engine.evaluate([fact])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        engine.evaluate([fact])
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
    print(json.dumps({{"faults": faults}}))
"""


@pytest.mark.subprocess
def test_sessions_reuse_the_heap_instead_of_faulting_it_in_again() -> None:
    """Sessions of thousands of rules free tens of MB at the end of every evaluation; the
    engine keeps that heap (`_keep_freed_heap`), so the next evaluation does not fault
    it in again from the kernel (page faults are counted, not timed)."""
    import cds.engine

    if not cds.engine._keep_freed_heap():
        pytest.skip("not glibc: malloc's trim threshold cannot be set")
    kept = _child(FAULTS.format(skip=False))
    default = _child(FAULTS.format(skip=True))
    kept_faults, default_faults = float(str(kept["faults"])), float(str(default["faults"]))
    assert kept_faults < 100
    # what the setting avoids: ~10,000 faults per evaluation on a quiet machine, seen as low
    # as 652 on a loaded one (glibc's own threshold adjustment), never near the kept count
    assert default_faults > 5 * max(kept_faults, 50)
