"""Grouping a FHIR Bulk Data export by patient (a benchmark, never a test).

Writes a deterministic synthetic export (`tools/synthetic_export.py`, seeded: DXA
histories on shared scanners, therapies, conditions, labs; ~15 resources per patient) in
the Bulk Data layout (one NDJSON file per type, Observations split in parts, a
manifest), then times `cds.replay.export.export_sources` over it: resources/s through the
SQLite grouping and patients/s out, and this process's peak RSS. Target: >= 50,000
resources/s, memory flat in the number of patients.

    .venv/bin/python benchmarks/export_bench.py --patients 10000
    .venv/bin/python benchmarks/export_bench.py --patients 100000 --keep /tmp/export100k
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import synthetic_export

from cds.replay.export import export_sources


def write_export(folder: Path, patients: int, seed: int) -> int:
    """The synthetic export (`tools/synthetic_export.py`); returns the resources written."""
    written: int = synthetic_export.write_export(folder, patients, seed)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", type=Path, help="write the export here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "export"
        started = time.perf_counter()
        total = write_export(folder, args.patients, args.seed)
        print(
            f"wrote {args.patients:,} patients, {total:,} resources in "
            f"{time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        patients = errors = 0
        for source in export_sources(str(folder)):
            if source.error is not None:
                errors += 1
            else:
                patients += 1
        seconds = time.perf_counter() - started
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"grouped in {seconds:.1f} s: {total / seconds:,.0f} resources/s, "
            f"{patients / seconds:,.0f} patients/s; {patients:,} patients, {errors} errors; "
            f"peak RSS {rss:.0f} MiB"
        )


if __name__ == "__main__":
    main()
