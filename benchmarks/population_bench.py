"""A synthetic population through grouping and evaluation, `--engine local` against
`--engine dask` on the same cores (a benchmark, never a test).

For each size (`--patients N`, default 100,000, or `--sizes 10000,100000`) it writes the
deterministic synthetic Bulk Data export of `export_bench.write_export` (seeded; 20
resources per patient), then replays it once per engine in a child process
(`--workers` worker processes each; the Dask engine starts its LocalCluster of as many
one-thread workers), writing the NDJSON results to a file, while this process samples
the resident memory of every process of the child's tree every 0.2 s. Per run:

- start-up: until the first source is asked for (workers started, rules loaded);
- grouping: until the first patient comes out of the export (local: the one pass that
  streams every line into SQLite in the replay process; dask: the scan and partition
  tasks on the workers, `cds.replay.dask_export`; patients are then read back while
  the workers evaluate);
- evaluation: from the first patient to the last result written;
- patients/s of each stage and end to end, and the peak RSS of the parent and of each
  worker process;
- the sha256 of the NDJSON: both engines must write the same bytes.

Target (issue 13): Dask within 15 % of the local pool's throughput, peak RSS per process
flat in the size of the export.

    .venv/bin/python benchmarks/population_bench.py --sizes 10000
    .venv/bin/python benchmarks/population_bench.py --sizes 10000,100000
    .venv/bin/python benchmarks/population_bench.py --patients 100000 --engines dask
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

AS_OF = date(2026, 11, 23)
MIB = 1024 * 1024


def child(engine: str, export: str, workers: int, out: str, batch: int | None) -> None:
    """One replay of the export in this process; prints the stage times as JSON."""
    from cds.pipeline import Evaluator
    from cds.replay.formats import NdjsonWriter
    from cds.replay.inputs import Source, discover
    from cds.replay.pool import ReplayPool
    from cds.replay.worker import WorkerSettings
    from cds.rules import default_rules_dir

    started = time.perf_counter()
    evaluator = Evaluator.from_rules_dir(None)
    settings = WorkerSettings(rules_dir=default_rules_dir(), as_of=AS_OF, hook=None)
    pool: Any
    if engine == "dask":
        from cds.replay.dask_pool import DaskPool

        pool = DaskPool(
            settings, workers, evaluator=evaluator, **({"batch_size": batch} if batch else {})
        )
    else:
        pool = ReplayPool(settings, workers, evaluator=evaluator)
    marks: dict[str, float] = {}

    def timed(sources: Iterable[Source]) -> Iterator[Source]:
        marks["pulled"] = time.perf_counter()
        for source in sources:
            marks.setdefault("first", time.perf_counter())
            yield source

    results = 0
    with open(out, "w", encoding="utf-8", newline="\n") as stream:
        writer = NdjsonWriter(stream)
        for result in pool.run(timed(discover([export], pool.group_export))):
            writer.write(result, None)
            results += 1
    ended = time.perf_counter()
    print(
        json.dumps(
            {
                "results": results,
                "startup": marks["pulled"] - started,
                "grouping": marks["first"] - marks["pulled"],
                "evaluation": ended - marks["first"],
                "total": ended - started,
            }
        )
    )


def measure(
    engine: str, export: Path, workers: int, out: Path, batch: int | None = None
) -> dict[str, Any]:
    """Run `child` in a child process, sampling the RSS of its process tree."""
    import psutil

    command = [
        sys.executable,
        __file__,
        "--child",
        engine,
        str(export),
        "--workers",
        str(workers),
        "--out",
        str(out),
        *(["--dask-batch", str(batch)] if batch else []),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
        time.sleep(0.2)
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{engine} run failed with status {proc.returncode}")
    stats: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    stats["parent_rss"] = peaks.pop(proc.pid, 0) / MIB
    # Processes that lived long enough to matter: workers (and Dask's resource tracker).
    stats["worker_rss"] = sorted(
        (rss / MIB for rss in peaks.values() if rss > 30 * MIB), reverse=True
    )
    stats["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()[:16]
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--sizes", help="comma-separated patient counts (overrides --patients)")
    parser.add_argument("--engines", default="local,dask")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--dask-batch", type=int, help="sources per Dask task (default 128)")
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "EXPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.workers, args.out, args.dask_batch)
        return
    from export_bench import write_export

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.patients]
    engines = args.engines.split(",")
    rows: list[tuple[int, int, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="population-bench-") as tmp:
        for size in sizes:
            export = Path(tmp) / f"export-{size}"
            started = time.perf_counter()
            resources = write_export(export, size, args.seed)
            print(
                f"wrote {size:,} patients ({resources:,} resources) in "
                f"{time.perf_counter() - started:.1f} s",
                flush=True,
            )
            for engine in engines:
                stats = measure(
                    engine, export, args.workers, Path(tmp) / f"{engine}.ndjson", args.dask_batch
                )
                rows.append((size, resources, engine, stats))
                print(f"  {engine}: {stats['total']:.1f} s", flush=True)
            for engine in engines:
                (Path(tmp) / f"{engine}.ndjson").unlink()
            for path in export.iterdir():
                path.unlink()
            export.rmdir()
    print()
    print(
        f"{'patients':>9} {'engine':>6} {'start s':>7} {'group s':>7} {'res/s':>8} "
        f"{'eval s':>7} {'pat/s':>6} {'total pat/s':>11} {'parent MiB':>10} "
        f"{'workers MiB':<17} {'ndjson sha256':<16}"
    )
    for size, resources, engine, s in rows:
        workers = "/".join(f"{rss:.0f}" for rss in s["worker_rss"])
        print(
            f"{size:>9,} {engine:>6} {s['startup']:>7.1f} {s['grouping']:>7.1f} "
            f"{resources / s['grouping']:>8,.0f} {s['evaluation']:>7.1f} "
            f"{s['results'] / s['evaluation']:>6,.0f} {s['results'] / s['total']:>11,.0f} "
            f"{s['parent_rss']:>10.0f} {workers:<17} {s['sha256']:<16}"
        )
    by_size: dict[int, dict[str, dict[str, Any]]] = {}
    for size, _, engine, s in rows:
        by_size.setdefault(size, {})[engine] = s
    for size, runs in by_size.items():
        if "local" in runs and "dask" in runs:
            local = runs["local"]["results"] / runs["local"]["evaluation"]
            dask = runs["dask"]["results"] / runs["dask"]["evaluation"]
            same = runs["local"]["sha256"] == runs["dask"]["sha256"]
            print(
                f"{size:,} patients: dask evaluates at {dask / local:.0%} of local's "
                f"patients/s (target >= 85%); NDJSON {'identical' if same else 'DIFFERS'}"
            )


if __name__ == "__main__":
    main()
