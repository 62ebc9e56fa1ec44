"""Benchmark: one `cds.pipeline.Evaluator.evaluate` per input, stage by stage.

    .venv/bin/python benchmarks/pipeline_bench.py [--rounds 20] [--rules rules]

Loads the rule set once (reports the load time), then evaluates every story Bundle
(`tests/fixtures/stories/*.json`, patient-view) and every CDS Hooks request file under
`tests/fixtures/replay/cases/requests/` (their own hook), `--rounds` times, as of
2026-11-23. Prints p50/p90/p99 per evaluation (wall clock), evaluations/s, the split of
time between the stages (facts / engine / cards, measured inside the same calls) and
the peak memory (tracemalloc peak of one round, and the process's max RSS).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cds.pipeline as pipeline  # noqa: E402
from cds.pipeline import EvaluationInput, Evaluator  # noqa: E402

AS_OF = date(2026, 11, 23)
STORIES = ROOT / "tests" / "fixtures" / "stories"
REQUESTS = ROOT / "tests" / "fixtures" / "replay" / "cases" / "requests"


def inputs() -> list[tuple[str, EvaluationInput]]:
    """Every story Bundle (patient-view) and every request file (its hook)."""
    out: list[tuple[str, EvaluationInput]] = []
    for path in sorted(STORIES.glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        out.append((path.name, EvaluationInput(resources=[bundle], as_of=AS_OF)))
    for path in sorted(REQUESTS.glob("*.json")):
        request = json.loads(path.read_text(encoding="utf-8"))
        context = request.get("context") or {}
        prefetch = request.get("prefetch") or {}
        out.append(
            (
                path.name,
                EvaluationInput(
                    hook=request["hook"],
                    resources=[v for v in prefetch.values() if v is not None],
                    as_of=AS_OF,
                    patient_id=context.get("patientId"),
                    draft_orders=context.get("draftOrders") or (),
                    selections=context.get("selections") or (),
                ),
            )
        )
    return out


class StageTimer:
    """Wraps the pipeline's stage calls and adds up the time spent in each."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.totals = {"facts": 0.0, "engine": 0.0, "cards": 0.0}
        pipeline.build_facts = self._wrap("facts", pipeline.build_facts)  # type: ignore[assignment]
        pipeline.build_cards = self._wrap("cards", pipeline.build_cards)  # type: ignore[assignment]
        engine = evaluator._engine
        engine.evaluate = self._wrap("engine", engine.evaluate)  # type: ignore[method-assign]

    def _wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        totals = self.totals
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[stage] += clock() - start

        return timed

    def reset(self) -> None:
        for key in self.totals:
            self.totals[key] = 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--rules", type=Path, default=ROOT / "rules")
    args = parser.parse_args()

    start = time.perf_counter()
    evaluator = Evaluator.from_rules_dir(args.rules)
    load = time.perf_counter() - start
    cases = inputs()
    print(f"rule set load: {load * 1000:.0f} ms ({len(evaluator.ruleset.rules)} rules)")
    print(f"inputs: {len(cases)} ({sum(1 for n, _ in cases if n[:2].isdigit())} stories)")

    timer = StageTimer(evaluator)
    for _ in range(3):  # warm up: caches, lazy imports
        for _name, inp in cases:
            evaluator.evaluate(inp)
    timer.reset()

    gc.collect()
    samples: list[float] = []
    cpu_samples: list[float] = []
    clock = time.perf_counter
    cpu = time.thread_time
    wall = clock()
    for _ in range(args.rounds):
        for _name, inp in cases:
            t0 = clock()
            c0 = cpu()
            evaluator.evaluate(inp)
            cpu_samples.append(cpu() - c0)
            samples.append(clock() - t0)
    wall = clock() - wall
    n = len(samples)
    ms = [s * 1000 for s in samples]
    print(
        f"evaluate: n={n} p50 {pct(ms, 0.5):.3f} ms  p90 {pct(ms, 0.9):.3f} ms  "
        f"p99 {pct(ms, 0.99):.3f} ms  mean {statistics.fmean(ms):.3f} ms  "
        f"{n / wall:.0f} evaluations/s"
    )
    cpu_ms = [s * 1000 for s in cpu_samples]
    print(
        f"  (thread CPU time: p50 {pct(cpu_ms, 0.5):.3f} ms  p90 {pct(cpu_ms, 0.9):.3f} ms  "
        f"p99 {pct(cpu_ms, 0.99):.3f} ms; robust to a busy machine)"
    )
    total = sum(samples)
    other = total - sum(timer.totals.values())
    split = "  ".join(
        f"{stage} {t / n * 1000:.3f} ms ({t / total:.0%})"
        for stage, t in (*timer.totals.items(), ("other", other))
    )
    print(f"per evaluation: {split}")

    tracemalloc.start()
    for _name, inp in cases:
        evaluator.evaluate(inp)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"memory: tracemalloc peak over one round {peak / 1024:.0f} KiB; max RSS {maxrss} KiB")


if __name__ == "__main__":
    main()
