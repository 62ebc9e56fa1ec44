"""Grouping a FHIR Bulk Data export by patient (a benchmark, never a test).

Writes a deterministic synthetic export (seeded; the 20-resource patients of
`replay_bench.make_bundle`: two DXA visits with their Device, conditions, medications) in
the Bulk Data layout (one NDJSON file per type, Observations split in parts, a
manifest), then times `cds.replay.export.export_sources` over it: resources/s through the
SQLite grouping and patients/s out, and this process's peak RSS. Target: >= 50,000
resources/s, memory flat in the number of patients.

    .venv/bin/python benchmarks/export_bench.py --patients 10000
    .venv/bin/python benchmarks/export_bench.py --patients 100000 --keep /tmp/export100k
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay_bench import make_bundle

from cds.replay.export import export_sources

PART = 100_000  # Observation lines per file part


def write_export(folder: Path, patients: int, seed: int) -> int:
    """The synthetic export; returns the number of resources (lines) written."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    counts: dict[str, int] = {}
    names: list[str] = []
    seen_shared: set[str] = set()
    total = 0
    for index in range(patients):
        for entry in make_bundle(index, rng)["entry"]:
            res = entry["resource"]
            rtype = res["resourceType"]
            if rtype == "Device":
                ref = f"Device/{res['id']}"
                if ref in seen_shared:
                    continue
                seen_shared.add(ref)
            part = counts.get(rtype, 0) // PART if rtype == "Observation" else None
            name = f"{rtype}.{part:03d}.ndjson" if part is not None else f"{rtype}.ndjson"
            if name not in handles:
                handles[name] = open(folder / name, "w", encoding="utf-8")  # noqa: SIM115
                names.append(name)
            handles[name].write(json.dumps(res) + "\n")
            counts[rtype] = counts.get(rtype, 0) + 1
            total += 1
    for handle in handles.values():
        handle.close()
    manifest = {
        "transactionTime": "2026-11-20T00:00:00Z",
        "request": "https://ehr.example/fhir/$export",
        "requiresAccessToken": False,
        "output": [{"type": n.split(".")[0], "url": f"https://ehr.example/{n}"} for n in names],
        "error": [],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return total


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
