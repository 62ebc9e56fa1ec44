"""Benchmark: FHIR input -> facts for one ~20-resource patient (cds.facts.build_facts).

    .venv/bin/python benchmarks/facts_bench.py [--n 5000]

Prints p50/p90/p99 per call, throughput, peak memory per call, for the default ("fast")
validation and for validation="full" (every used resource also validated with the
fhir.resources R4B models), plus the cost of fhir.resources validation per resource for
reference. The input is built once; each call reads it from scratch (no caching).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cds.facts import build_facts, read_params
from cds.fhir.profiles import load_profiles
from tests.fhir_factory import (
    AS_OF,
    PARAMS,
    bundle,
    condition,
    device,
    draft_dxa,
    height,
    hip_t,
    lumbar_bmd,
    lumbar_t,
    lumbar_z,
    med_admin,
    med_statement,
    neck_t,
    patient,
    procedure,
    tbs,
    vertebra_t,
)


def twenty() -> list[dict[str, Any]]:
    """A realistic 20-resource patient: two DXA scans, vertebrae, TBS, meds, conditions."""
    return [
        patient(),
        device("d1"),
        lumbar_t(-2.1, device="d1"),
        lumbar_z(-1.2, device="d1"),
        lumbar_bmd(0.812, device="d1"),
        lumbar_bmd(0.860, device="d1", date="2024-01-05"),
        hip_t(-1.4, side="left", device="d1"),
        hip_t(-1.6, side="right", device="d1"),
        neck_t(-1.9, device="d1"),
        vertebra_t("L1", -1.0),
        vertebra_t("L2", -2.6),
        vertebra_t("L3", -1.1),
        vertebra_t("L4", -1.2),
        tbs(1.25),
        height(160.5),
        condition("M47.816"),
        condition("S32.010A", onset="2026-02-01"),
        med_statement("prednisone", dose_mg=5, start="2026-06-01"),
        med_admin("denosumab", date="2025-01-01"),
        procedure("74240", date="2026-01-06"),
    ]


def measure(label: str, n: int, fn: Any) -> None:
    """Wall-clock and CPU-time percentiles of fn (CPU time is robust to a busy machine)."""
    for _ in range(200):
        fn()  # warm up
    gc.collect()
    gc.disable()
    wall: list[float] = []
    cpu: list[float] = []
    t_all = time.perf_counter()
    for _ in range(n):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    total = time.perf_counter() - t_all
    gc.enable()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    def pct(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1e3

    print(
        f"{label:<34} wall p50 {pct(wall, 0.5):.3f} p99 {pct(wall, 0.99):.3f} ms | "
        f"cpu min {min(cpu) * 1e3:.3f} p50 {pct(cpu, 0.5):.3f} p99 {pct(cpu, 0.99):.3f} ms | "
        f"mean {statistics.mean(wall) * 1e3:.3f} ms, {n / total:,.0f}/s, "
        f"peak {peak / 1024:.0f} KiB"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    load_profiles()
    resources = twenty()
    assert len(resources) == 20
    drafts = [draft_dxa()]
    as_bundle = [bundle(*resources)]
    params = read_params(PARAMS)  # read once, as the Evaluator does
    fs = build_facts(resources, params, AS_OF, draft_orders=drafts)
    assert not [i for i in fs.issues if i.severity != "information"], fs.issues
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"python {sys.version.split()[0]}; 20 resources + 1 draft order; {len(fs.facts)} facts; "
        f"load average {load:.2f} on {os.cpu_count()} CPUs"
    )
    measure(
        "build_facts fast (loose)",
        args.n,
        lambda: build_facts(resources, params, AS_OF, draft_orders=drafts),
    )
    measure(
        "build_facts fast (Bundle)",
        args.n,
        lambda: build_facts(as_bundle, params, AS_OF, draft_orders=drafts),
    )
    measure(
        "build_facts full fhir.resources",
        max(200, args.n // 10),
        lambda: build_facts(resources, params, AS_OF, draft_orders=drafts, validation="full"),
    )

    from fhir.resources.R4B import get_fhir_model_class

    def validate_all() -> None:
        for r in resources:
            get_fhir_model_class(r["resourceType"]).model_validate(r)

    measure("fhir.resources R4B validate x20", max(200, args.n // 10), validate_all)


if __name__ == "__main__":
    main()
