"""Growth with the rule count and with the resources per patient (never run as a test).

    .venv/bin/python benchmarks/scale_bench.py [--rules 81,500,2000,5000]
        [--resources 20,100,1000,10000] [--n 200] [--instructions] [--fire]

Each row runs in a fresh child process (so peak RSS is that configuration's own):
- rule rows: the bundled rules plus synthetic copies (tools/synthetic_rules.py) up to N
  rules (copies that never fire, as variants for other sites; `--fire`: every copy fires
  where its original does, so cards merge thousands of contributions); load (parse,
  validate, compile) and engine creation times, the number of durable
  rulesets the engine split makes, and whole evaluations of a 20-resource patient-view
  Bundle (benchmarks/replay_bench.py's generator): p50 / p99 ms, the p50 of the
  evaluation thread's CPU time (`cpu p50`: less moved by other work on a shared
  machine than wall time), peak RSS; and a
  table of the load's CPU time by stage (benchmarks/load_stages.py: parse, structure,
  validate, templates, derived-fact graph, compile, the rest; engine creation per
  chunk of the split), ending in a growth check that names any stage growing faster
  than linear between two rule counts (or says that none does).
- resource rows: the bundled rules, one patient with N resources (DXA visits going back
  a month at a time, each a full set of site results, plus the 20-resource base).
Each child applies the runtime settings of a started process (`cds.runtime.settle_heap`,
as `cds serve` and replay's workers do) after creating the engine.
`--instructions` adds instructions per evaluation from valgrind's callgrind (exact and
repeatable; this machine has no hardware counters): the child is run twice under
callgrind, with k and with 0 evaluations, and the difference divided by k. It is slow
(~50x), so it is taken for rule counts up to 500 and resources up to 1,000 only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import gc, json, random, resource, statistics, sys, time
    from datetime import date
    from pathlib import Path
    sys.path[:0] = [{repo!r}, {repo!r} + "/benchmarks", {repo!r} + "/tools"]
    from replay_bench import make_bundle, _obs, LOINC
    from synthetic_rules import write_synthetic
    from load_stages import StageClock
    from cds.pipeline import EvaluationInput, Evaluator
    from cds.rules import load_ruleset

    clock = StageClock()
    clock.install()

    rules, resources, n, tmp = {rules}, {resources}, {n}, {tmp!r}
    folder = Path({repo!r}) / "rules"
    if rules > 81:
        folder = write_synthetic(rules, Path(tmp), fire={fire})
    gc.collect()  # every row's load starts from the same collector state
    walked = clock.gc_walked
    t0, c0, g0 = time.perf_counter(), time.process_time(), clock.gc_s
    ruleset = load_ruleset(folder)
    t1, c1, g1 = time.perf_counter(), time.process_time(), clock.gc_s
    walked = clock.gc_walked - walked
    heap = len(gc.get_objects())
    evaluator = Evaluator(ruleset)
    t2, c2, g2 = time.perf_counter(), time.process_time(), clock.gc_s
    try:  # what `cds serve` and replay's workers do once started (see fhir_read_bench.py)
        from cds.runtime import settle_heap
    except ImportError:  # a tree before cds.runtime: its `cds serve` froze the heap
        gc.collect()
        gc.freeze()
    else:
        settle_heap()
    bundle = make_bundle(1, random.Random(1))
    entries = [e["resource"] for e in bundle["entry"]]
    pid = entries[0]["id"]
    month = 0
    while len(entries) < resources:
        month += 1
        y, m = 2024 - month // 12, 12 - month % 12
        day = f"{{y:04d}}-{{m:02d}}-10"
        for code, display, value, unit in (
            ("38267-1", "DXA Lumbar spine [T-score] Bone density", -1.5, "{{T-score}}"),
            ("24966-4", "DXA Lumbar spine [Mass/Area] Bone density", 0.9, "g/cm2"),
            ("38264-8", "DXA Hip [T-score] Bone density", -1.2, "{{T-score}}"),
            ("38261-4", "DXA Hip [Mass/Area] Bone density", 0.85, "g/cm2"),
            ("85394-5", "DXA Lumbar spine [Z-score] Bone density", -0.5, "{{Z-score}}"),
        ):
            if len(entries) >= resources:
                break
            entries.append(_obs(f"{{pid}}-h{{month}}-{{code}}", pid, LOINC, code, display,
                                value, unit, day))
    inp = EvaluationInput(resources=entries, as_of=date(2026, 11, 23))
    result = evaluator.evaluate(inp)
    times, cpu = [], []
    for _ in range(n):
        s, c = time.perf_counter(), time.thread_time()
        evaluator.evaluate(inp)
        times.append(time.perf_counter() - s)
        cpu.append(time.thread_time() - c)
    times.sort()
    cpu.sort()
    print(json.dumps({{
        "load_s": t1 - t0, "engine_s": t2 - t1, "chunks": evaluator._engine.chunk_count,
        "load_cpu_s": c1 - c0, "engine_cpu_s": c2 - c1, "stages": clock.seconds,
        "load_gc_s": g1 - g0, "engine_gc_s": g2 - g1, "load_gc_walked": walked,
        "heap": heap,
        "chunk_create_s": clock.chunk_create_s,
        "resources": len(entries), "cards": len(result.cards),
        "p50_ms": times[len(times) // 2] * 1e3 if times else None,
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3 if times else None,
        "cpu_p50_ms": cpu[len(cpu) // 2] * 1e3 if cpu else None,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }}))
    """
)


FIRE = False


def child(rules: int, resources: int, n: int, tmp: str, valgrind: Path | None = None) -> dict:
    source = CHILD.format(repo=str(REPO), rules=rules, resources=resources, n=n, tmp=tmp, fire=FIRE)
    command = [sys.executable, "-c", source]
    if valgrind is not None:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={valgrind}",
            *command,
        ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({rules} rules, {resources} resources):\n{done.stderr}")
    if valgrind is not None:
        total = 0
        for line in valgrind.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
        return {"instructions": total}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def instructions(rules: int, resources: int, tmp: str) -> float:
    k = 20
    base = Path(tmp) / "cg.base"
    more = Path(tmp) / "cg.more"
    low = child(rules, resources, 0, tmp, base)["instructions"]
    high = child(rules, resources, k, tmp, more)["instructions"]
    return (high - low) / k


def table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    head = (
        f"{'rules':>6} {'resources':>9} {'chunks':>6} {'load s':>7} {'engine s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'cpu p50':>7} {'Minstr/eval':>11} {'peak RSS MB':>11}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        instr = f"{r['instr'] / 1e6:11.1f}" if r.get("instr") else f"{'-':>11}"
        print(
            f"{r['rules']:>6} {r['resources']:>9} {r['chunks']:>6} {r['load_s']:7.2f} "
            f"{r['engine_s']:8.3f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['cpu_p50_ms']:7.2f} "
            f"{instr} "
            f"{r['rss_mb']:11.1f}"
        )


def stage_table(rows: list[dict]) -> None:
    from load_stages import GC_GEOMETRIC_HEAP, LOAD_STAGES, SUPERLINEAR, growth_check

    print(
        "\nLoad by stage (CPU s of the child; gc: the collector during the load, walked: the"
        " objects its full collections walked, millions;\nengine: the Evaluator's creation,"
        " create: durable's create_ruleset, per chunk in ms)"
    )
    head = (
        f"{'rules':>6} "
        + " ".join(f"{s:>9}" for s in LOAD_STAGES)
        + f" {'other':>6} {'gc':>6} {'walked':>6} {'load':>6} {'engine':>7} {'create':>7}"
        f" {'ms/chunk':>8}"
        f" {'max ms':>7}"
    )
    print(head)
    print("-" * len(head))
    judged = []
    for r in rows:
        stages = r["stages"]
        other = r["load_cpu_s"] - sum(stages.values()) - r["load_gc_s"]
        create = sum(r["chunk_create_s"])
        per_chunk = create / max(1, len(r["chunk_create_s"])) * 1e3
        top = max(r["chunk_create_s"], default=0.0) * 1e3
        print(
            f"{r['rules']:>6} "
            + " ".join(f"{stages[s]:9.2f}" for s in LOAD_STAGES)
            + f" {other:6.2f} {r['load_gc_s']:6.2f} {r['load_gc_walked'] / 1e6:6.2f}"
            f" {r['load_cpu_s']:6.2f}"
            f" {r['engine_cpu_s']:7.2f} {create:7.2f}"
            f" {per_chunk:8.2f} {top:7.2f}"
        )
        judged.append(
            {
                "rules": r["rules"],
                **stages,
                "other": other,
                "load": r["load_cpu_s"],
                "engine create": create,
                "engine rest": r["engine_cpu_s"] - create - r["engine_gc_s"],
            }
        )
    names = [*LOAD_STAGES, "other", "load", "engine create", "engine rest"]
    flagged = growth_check(judged, names)
    # the collector's walked objects only where its full collections are spaced
    # geometrically (load_stages.py: below that heap they grow faster whatever the load)
    big = [
        {"rules": r["rules"], "gc walked": r["load_gc_walked"]}
        for r in rows
        if r["heap"] >= GC_GEOMETRIC_HEAP
    ]
    flagged += growth_check(big, ["gc walked"])
    for line in flagged:
        print(line)
    if not flagged:
        print(
            f"growth check: linear (no stage grows faster than n^{SUPERLINEAR} between "
            "two rule counts)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="81,500,2000,5000")
    parser.add_argument("--resources", default="20,100,1000,10000")
    parser.add_argument("--n", type=int, default=200, help="evaluations per row")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument(
        "--fire", action="store_true", help="synthetic copies fire like their originals"
    )
    args = parser.parse_args()
    global FIRE
    FIRE = args.fire
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for count in (int(x) for x in args.rules.split(",")):
            row = {"rules": count, **child(count, 20, args.n, tmp)}
            if args.instructions and count <= 500:
                row["instr"] = instructions(count, 20, tmp)
            rows.append(row)
        table("Rule count (20-resource patient-view Bundle)", rows)
        stage_table(rows)
        rows = []
        for count in (int(x) for x in args.resources.split(",")):
            n = max(5, args.n // max(1, count // 100))
            row = {"rules": 81, **child(81, count, n, tmp)}
            if args.instructions and count <= 1000:
                row["instr"] = instructions(81, count, tmp)
            rows.append(row)
        table("Resources per patient (bundled rules)", rows)
    print(f"\n(python {sys.version.split()[0]}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
