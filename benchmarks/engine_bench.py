"""Engine latency: one patient's ~8 facts against the bundled rule set.

    .venv/bin/python benchmarks/engine_bench.py [--rules DIR] [--n 5000]

Prints p50 / p90 / p99 / max per evaluation and evaluations per second for the compiled
durable_rules engine and for the reference evaluator, plus the process RSS before and
after (a leak of sessions would show as growth).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cds.contracts.facts import (  # noqa: E402
    Assessment,
    ContrastStudy,
    DraftOrder,
    Fact,
    StructuralFindingFact,
    VertebraAnalysis,
)
from cds.engine import Engine  # noqa: E402
from cds.rules import load_ruleset  # noqa: E402
from cds.rules.reference import evaluate_ruleset  # noqa: E402


def patient_facts() -> list[Fact]:
    """A postmenopausal woman with osteoporosis, artifacts, a repeat scan and a draft order."""
    return [
        Assessment(
            id="assessment:1",
            age=68,
            sex="female",
            menopausal_status="postmenopausal",
            menopausal_assumed=False,
            has_dxa=True,
            last_dxa_date="2025-06-02",
            months_since_last_dxa=17,
            manufacturer="hologic",
            scanner="Device/dxa-1",
            lumbar_t=-2.7,
            lumbar_t_date="2025-06-02",
            lumbar_z=-1.4,
            lumbar_bmd=0.812,
            lumbar_vertebrae=4,
            total_hip_t=-1.9,
            femoral_neck_t=-2.2,
            lowest_hip_t=-2.2,
            lowest_hip_site="femoral-neck",
            lowest_t=-2.7,
            lowest_t_site="lumbar-spine",
            lowest_z=-1.4,
            lowest_z_site="lumbar-spine",
            spine_hip_gap=-0.5,
            nhanes_lumbar_t=-2.55,
            tbs=1.21,
            tbs_date="2025-06-02",
            change_available=True,
            change_comparable=True,
            change_percent=-4.1,
            change_lsc=3.0,
            change_significant=True,
            change_direction="loss",
            change_old_date="2023-05-30",
            change_new_date="2025-06-02",
            change_old_bmd=0.847,
            change_new_bmd=0.812,
            therapy_between_scans=False,
            degenerative_spine=True,
            fragility_fracture=True,
            fracture_within_12_months=False,
            glucocorticoid_mg_day=7.5,
            glucocorticoid_months=4.0,
        ),
        VertebraAnalysis(
            id="vertebra_analysis:1",
            scan_date="2025-06-02",
            vertebrae_present=4,
            evaluable_vertebrae=3,
            max_adjacent_diff=1.2,
            discordant_vertebra="L3",
            values="L1 -2.9, L2 -2.8, L3 -1.6, L4 -2.7",
        ),
        StructuralFindingFact(
            id="structural_finding:1",
            finding="degenerative-disease",
            resource="Condition/oa",
            display="Lumbar spondylosis",
        ),
        StructuralFindingFact(
            id="structural_finding:2",
            finding="aortic-calcification",
            resource="Condition/ac",
            display="Aortic calcification",
        ),
        StructuralFindingFact(
            id="structural_finding:3",
            finding="scoliosis",
            resource="Condition/sc",
            display="Scoliosis",
        ),
        ContrastStudy(
            id="contrast_study:1",
            days_before_scan=3,
            date="2025-05-30",
            resource="Procedure/ba",
            display="Barium swallow",
        ),
        ContrastStudy(
            id="contrast_study:2",
            days_before_scan=400,
            date="2024-04-28",
            resource="Procedure/ct",
            display="CT with contrast",
        ),
        DraftOrder(
            id="draft_order:1",
            resource="ServiceRequest/dxa",
            display="DXA bone density axial",
            order_date="2026-11-23",
            months_since_last_dxa=17,
            last_dxa_date="2025-06-02",
            earliest_date="2027-06-02",
        ),
    ]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(label: str, fn: Any, n: int) -> dict[str, Any]:
    for _ in range(min(200, n)):
        fn()
    samples = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    total = time.perf_counter() - start
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))] / 1000

    return {
        "label": label,
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": samples[-1] / 1000,
        "mean": statistics.fmean(samples) / 1000,
        "rate": n / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=Path, default=REPO / "rules")
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    ruleset = load_ruleset(args.rules)
    load_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    engine = Engine(ruleset)
    engine_ms = (time.perf_counter() - t0) * 1000
    facts = patient_facts()
    fired = engine.evaluate(facts)
    assert fired == evaluate_ruleset(ruleset, facts), "engine and reference disagree"

    rss_before = rss_mb()
    rows = [
        measure("engine (durable_rules)", lambda: engine.evaluate(facts), args.n),
        measure("reference evaluator", lambda: evaluate_ruleset(ruleset, facts), args.n),
    ]
    rss_after = rss_mb()

    print(
        f"rule set: {len(ruleset.active_rules)} active rules in {len(ruleset.files)} files; "
        f"{len(facts)} facts; {len(fired.firings)} firings, {len(fired.emitted)} emitted"
    )
    print(f"load+validate+compile {load_ms:.0f} ms; engine build {engine_ms:.1f} ms")
    print()
    header = f"{'evaluator':<24}{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}{'max us':>9}{'evals/s':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['label']:<24}{row['p50']:>9.0f}{row['p90']:>9.0f}{row['p99']:>9.0f}"
            f"{row['max']:>9.0f}{row['rate']:>10.0f}"
        )
    print()
    print(f"max RSS {rss_before:.1f} MB before, {rss_after:.1f} MB after {2 * args.n} evaluations")


if __name__ == "__main__":
    main()
