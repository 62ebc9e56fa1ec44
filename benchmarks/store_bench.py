"""The audit writer's cost: records written per second and CPU per record (a benchmark,
never a test).

Writes `--records` audit records (three issued cards each, one card uuid repeated per
batch so the duplicate handling runs) through `Store._write` in batches of 500, the
writer thread's unit, into a fresh SQLite file (and into PostgreSQL with `--postgres URL`,
which must be a scratch database: rows are added to its audit tables). The CPU time is
what the writer thread holds the GIL for, taken from the request threads.

    .venv/bin/python benchmarks/store_bench.py --records 20000
    .venv/bin/python benchmarks/store_bench.py --postgres postgresql+psycopg://u:p@127.0.0.1/db
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from cds.store import AuditRecord, IssuedCard, Store

BATCH = 500


def _records(count: int) -> list[AuditRecord]:
    repeated = str(uuid.uuid4())
    out = []
    for index in range(count):
        cards = [
            IssuedCard(str(uuid.uuid4()), "classification.t.osteoporosis", "bmd-classification")
        ]
        cards.append(IssuedCard(str(uuid.uuid4()), None, "rescan-interval"))
        cards.append(IssuedCard(repeated if index % BATCH == 0 else str(uuid.uuid4()), None, None))
        out.append(
            AuditRecord(
                service="bmd-patient-view",
                hook="patient-view",
                hook_instance=str(uuid.uuid4()),
                ruleset_version="v" * 64,
                status=200,
                rules_fired=["classification.t.osteoporosis", "rescan.interval.default"],
                cards=cards,
                latency_ms=1.25,
            )
        )
    return out


def run(url: str, count: int) -> tuple[float, float]:
    store = Store(url)
    records = _records(count)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, count, BATCH):
            store._write(records[start : start + BATCH])
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--postgres", help="also a scratch PostgreSQL database URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}")]
        if args.postgres:
            targets.append(("postgresql", args.postgres))
        print(f"{'database':<12}{'records':>9}{'records/s':>12}{'CPU us/record':>15}")
        for name, url in targets:
            wall, cpu = run(url, args.records)
            print(
                f"{name:<12}{args.records:>9}{args.records / wall:>12,.0f}"
                f"{cpu / args.records * 1e6:>15.1f}"
            )


if __name__ == "__main__":
    main()
