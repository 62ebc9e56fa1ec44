"""The FHIR read's cost per resource (never run as a test).

    .venv/bin/python benchmarks/fhir_read_bench.py [--resources 1000] [--n 20] [--callgrind]
        [--tree PATH]

One patient of N resources: the 20-resource Bundle of benchmarks/replay_bench.py, then
copies of its non-Patient resources (new ids, the same mix of DXA results, labs,
conditions, procedures and medications) up to N. Two stages, each reported per resource:

- `read`: `cds.fhir.read.Reader.read` of the resources (flatten, dedupe, validation of
  the used models, code lookups, unit conversion, trace entries, data errors);
- `json`: `cds.jsontext.loads` of the Bundle's JSON text (orjson plus the long-number guard).

The child first applies the runtime settings a process that reads applies once it has
started (`cds.runtime.settle_heap`: the start-up heap frozen, the gen0 threshold), as
`cds serve` and replay's workers do; for a `--tree` from before cds.runtime, the
`gc.freeze()` its `cds serve` did.

Default: wall-clock microseconds per resource (median of `--n` runs; noisy on a shared
machine). `--callgrind`: instructions per resource from valgrind's callgrind (exact and
repeatable): each stage runs in a child under callgrind twice, with k and with 0 repeats,
and the difference is divided by k * N. `--tree PATH`: measure the code of another
checkout, e.g. a `git archive` of the commit before a change (its `cds` is imported
instead of this one; the bench itself and its generator are this tree's).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import copy, json, random, statistics, sys, time
    from datetime import date
    sys.path[:0] = [{tree!r}, {repo!r} + "/benchmarks"]
    from replay_bench import make_bundle
    from cds import jsontext
    from cds.fhir.profiles import load_profiles
    from cds.fhir.read import Reader

    resources, n, stage = {resources}, {n}, {stage!r}
    base = [e["resource"] for e in make_bundle(1, random.Random(1))["entry"]]
    entries = list(base)
    copies = 0
    while len(entries) < resources:
        copies += 1
        for res in base[1:]:
            if len(entries) >= resources:
                break
            twin = copy.deepcopy(res)
            twin["id"] = f"{{res['id']}}-c{{copies}}"
            entries.append(twin)
    text = json.dumps({{"resourceType": "Bundle", "type": "collection",
                        "entry": [{{"resource": r}} for r in entries]}})
    profiles = load_profiles()
    try:  # what a process that reads does once it has started (cds serve, replay workers)
        from cds.runtime import settle_heap
    except ImportError:  # a tree before cds.runtime: what its `cds serve` did at start-up
        import gc
        gc.collect()
        gc.freeze()
    else:
        settle_heap()
    as_of = date(2026, 11, 23)
    pid = base[0]["id"]

    def once():
        if stage == "read":
            Reader(profiles, as_of).read(entries, pid, None)
        else:
            jsontext.loads(text)

    once()  # warm: caches built from the profiles, imports
    times = []
    for _ in range(n):
        s = time.perf_counter()
        once()
        times.append(time.perf_counter() - s)
    print(json.dumps({{"resources": len(entries),
                      "us": statistics.median(times) * 1e6 / len(entries) if times else None}}))
    """
)


def child(tree: Path, stage: str, resources: int, n: int, out: Path | None = None) -> dict:
    source = CHILD.format(tree=str(tree), repo=str(REPO), resources=resources, n=n, stage=stage)
    command = [sys.executable, "-c", source]
    if out is not None:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({stage}, {resources} resources):\n{done.stderr}")
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    if out is not None:
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                result["instructions"] = int(line.split()[1])
    return result


def instructions(tree: Path, stage: str, resources: int, k: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        low = child(tree, stage, resources, 0, Path(tmp) / "cg.0")
        high = child(tree, stage, resources, k, Path(tmp) / "cg.k")
    return (high["instructions"] - low["instructions"]) / (k * high["resources"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--n", type=int, default=20, help="runs (callgrind: repeats k)")
    parser.add_argument("--callgrind", action="store_true", help="instructions per resource")
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout whose cds is measured")
    args = parser.parse_args()
    tree = args.tree.resolve()
    unit = "instructions" if args.callgrind else "us (median)"
    print(f"FHIR read, one patient of {args.resources} resources, code of {tree}")
    print(f"{'stage':<6} {unit + ' per resource':>30}")
    for stage in ("read", "json"):
        if args.callgrind:
            value = instructions(tree, stage, args.resources, max(1, min(args.n, 5)))
            print(f"{stage:<6} {value:>30,.0f}")
        else:
            value = child(tree, stage, args.resources, args.n)["us"]
            print(f"{stage:<6} {value:>30.2f}")


if __name__ == "__main__":
    main()
