"""The replay pool never loses an input: workers killed at random points, a hung worker,
an input that kills every worker it runs on, and a result that holds a lone surrogate."""

from __future__ import annotations

import json
import os
import random
import signal
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cds.replay.inputs import Source
from cds.replay.pool import ReplayPool
from cds.replay.worker import InputResult, WorkerSettings
from tests import fhir_factory as f

AS_OF = date(2026, 11, 23)


def settings(**extra: Any) -> WorkerSettings:
    from cds.rules import default_rules_dir

    return WorkerSettings(rules_dir=default_rules_dir(), as_of=AS_OF, hook=None, **extra)


def sources(count: int) -> list[Source]:
    """Small single-patient Bundles, varied so they give different cards."""
    out: list[Source] = []
    for n in range(count):
        pid = f"p{n}"
        resources = [
            f.patient(pid, birth_date=f"19{40 + n % 20}-03-01"),
            f.lumbar_t(-3.0 + (n % 7) * 0.5, subject=pid, date="2025-01-10"),
        ]
        if n % 3 == 0:
            resources.append(f.hip_t(-2.6, subject=pid, date="2023-05-01"))
        out.append(Source(name=f"in{n}", key=f"in{n}", text=json.dumps(f.bundle(*resources))))
    out.insert(5, Source(name="broken", key="broken", text="{not json"))
    return out


@pytest.fixture(scope="module")
def reference(bundled_evaluator: Any) -> dict[str, InputResult]:
    pool = ReplayPool(settings(), 0, evaluator=bundled_evaluator)
    return {r.name: r for r in pool.run(sources(120))}


def check(results: list[InputResult], reference: dict[str, InputResult]) -> int:
    """Exactly one result per input, in order; every evaluated one as without kills."""
    assert [r.name for r in results] == list(reference)
    failed = 0
    for result in results:
        want = reference[result.name]
        if result.status == "failed" and want.status != "failed":
            assert "worker process evaluating this input died" in result.outcome_json
            failed += 1
            continue
        assert (result.status, result.cards_json, result.outcome_json) == (
            want.status,
            want.cards_json,
            want.outcome_json,
        )
    return failed


def test_workers_killed_at_random_points_lose_and_duplicate_nothing(
    bundled_evaluator: Any, reference: dict[str, InputResult]
) -> None:
    rng = random.Random(13)
    kills = 0
    failed = 0
    rounds = 0
    while kills < 60:
        rounds += 1
        pool = ReplayPool(settings(), 2, batch_size=4, evaluator=bundled_evaluator)
        results: list[InputResult] = []
        next_kill = rng.randint(1, 12)
        for result in pool.run(sources(120)):
            results.append(result)
            if len(results) == next_kill:
                pids = pool.pids()
                if pids:
                    try:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass
                next_kill += rng.randint(1, 12)
        failed += check(results, reference)
        assert pool.restarts >= 1
    # A few innocents may be hit max_tries times in a row; nearly all must come through.
    assert failed <= rounds * 3, (failed, kills)


def test_an_input_that_kills_every_worker_fails_after_max_tries_and_the_rest_is_whole(
    bundled_evaluator: Any, reference: dict[str, InputResult]
) -> None:
    pool = ReplayPool(
        settings(crash_input="in7"), 2, batch_size=4, evaluator=bundled_evaluator, max_tries=2
    )
    results = list(pool.run(sources(120)))
    assert [r.name for r in results] == list(reference)
    crashed = next(r for r in results if r.name == "in7")
    assert crashed.status == "failed"
    assert "died 2 times" in crashed.outcome_json
    assert pool.restarts == 2
    assert check(results, {**reference, "in7": crashed}) == 0


def test_a_hung_worker_is_replaced_after_the_deadline_and_its_input_fails(
    bundled_evaluator: Any, reference: dict[str, InputResult]
) -> None:
    pool = ReplayPool(
        settings(hang_input="in3"),
        2,
        batch_size=4,
        evaluator=bundled_evaluator,
        deadline=0.5,
        max_tries=2,
    )
    results = list(pool.run(sources(120)))
    assert [r.name for r in results] == list(reference)
    hung = next(r for r in results if r.name == "in3")
    assert hung.status == "failed"
    assert "took longer than 0.5 s, 2 times" in hung.outcome_json
    assert json.loads(hung.outcome_json)["issue"][0]["code"] == "timeout"
    assert check(results, {**reference, "in3": hung}) == 0


def test_a_lone_surrogate_in_a_result_is_written_escaped_and_the_run_goes_on(
    tmp_path: Path, bundled_evaluator: Any
) -> None:
    from cds.replay.formats import NdjsonWriter

    resources = [
        f.patient("s1"),
        f.device("dx", model="Horizon \ud800"),  # the card names the scanner of the DXA
        f.lumbar_t(-2.8, subject="s1", device="dx"),
        f.hip_t(-2.6, subject="s1", device="dx"),
        f.lumbar_t(-2.0, subject="s1", device="dx", date="2023-01-01"),
    ]
    text = json.dumps(f.bundle(*resources))  # json.dumps escapes it: "\ud800"
    items = [Source("s1", "s1", text=text), *sources(3)]
    pool = ReplayPool(settings(), 2, evaluator=bundled_evaluator)
    out = tmp_path / "out.ndjson"
    with open(out, "w", encoding="utf-8") as stream:
        writer = NdjsonWriter(stream)
        for result in pool.run(items):
            writer.write(result, None)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(items)
    assert "Horizon \\ud800" in lines[0]  # written as the input had it: an escape
    first = json.loads(lines[0])
    assert first["input"] == "s1"
    assert first["cards"]
