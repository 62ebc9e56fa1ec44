"""Parquet results and the population report (a benchmark, never a test).

For each size, writes the seeded synthetic Bulk Data export of `export_bench.py`, then
runs, each as its own process: `cds replay EXPORT --format ndjson` and `--format
parquet` (wall time, peak RSS of the largest process of the run, output size), and
`cds report` over each result (wall time, peak RSS, page size). Memory should be flat
in the number of patients: the writer holds one row group, the report counters.

    .venv/bin/python benchmarks/report_bench.py                       # 2,000 and 20,000 patients
    .venv/bin/python benchmarks/report_bench.py --patients 5000 50000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_bench import write_export

CDS = str(Path(sys.executable).parent / "cds")


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the largest process of one command."""
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(
            f"{args[1]} failed: {process.stderr.read().decode() if process.stderr else ''}"
        )
    return seconds, usage.ru_maxrss / 1024


def size(path: Path) -> float:
    """MiB of a file or of a folder's files."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / (1 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()
    print("| patients | step | wall s | patients/s | peak RSS MiB | output MiB |")
    print("|---|---|---|---|---|---|")
    for patients in options.patients:
        with tempfile.TemporaryDirectory(prefix="osteohooks-report-bench-") as work:
            root = Path(work)
            export = root / "export"
            write_export(export, patients, options.seed)
            common = ["--as-of", "2026-11-23", "--workers", str(options.workers), "--no-progress"]
            outputs = {"ndjson": root / "results.ndjson", "parquet": root / "results"}
            for kind, out in outputs.items():
                seconds, rss = run(
                    [CDS, "replay", str(export), "--format", kind, "--out", str(out), *common]
                )
                rate = patients / seconds
                print(
                    f"| {patients:,} | replay --format {kind} | {seconds:.1f} | {rate:,.0f} "
                    f"| {rss:.0f} | {size(out):.1f} |"
                )
            for kind, out in outputs.items():
                page = root / f"report-{kind}.html"
                seconds, rss = run([CDS, "report", str(out), "--out", str(page)])
                rate = patients / seconds
                print(
                    f"| {patients:,} | report from {kind} | {seconds:.1f} | {rate:,.0f} "
                    f"| {rss:.0f} | {size(page):.2f} |"
                )


if __name__ == "__main__":
    main()
