"""`cds replay` throughput and memory (a benchmark, never a test).

1. Throughput: writes N generated 20-resource Bundles (default 10,000) to a temporary
   folder and replays them with `cds replay DIR --workers 2 --format ndjson`, in a child
   process, timing the run and sampling the resident memory of the whole process tree
   (parent + workers) every 50 ms. Target: >= 1,000 bundles/s with 2 workers.
2. Memory flatness: writes an NDJSON file of M Bundles, one per line (default 100,000),
   replays it the same way and prints the tree's RSS at intervals: a flat series means
   streaming works (nothing accumulates per input).

    .venv/bin/python benchmarks/replay_bench.py                     # both, full size
    .venv/bin/python benchmarks/replay_bench.py --bundles 2000 --lines 20000   # quicker
    .venv/bin/python benchmarks/replay_bench.py --stub-pipeline   # replay machinery only

`--stub-pipeline` replaces `cds.pipeline` in the replay processes by a stand-in that
returns one card per Bundle without evaluating anything, to measure what `cds replay`
itself costs (discovery, reading, JSON, workers, ordering, output) apart from the
evaluation.

Numbers depend on the machine; the note of issue 6 has the ones measured on the 2-core
development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CDS = [str(Path(sys.executable).parent / "cds")]
LOINC = "http://loinc.org"
LOCAL = "https://osteohooks.org/fhir/CodeSystem/local-dxa"
ATC = "http://www.whocc.no/atc"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _obs(
    oid: str, pid: str, system: str, code: str, display: str, value: float, unit: str, day: str
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": day,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
        "device": {"reference": f"Device/{pid}-dxa"},
    }


def make_bundle(index: int, rng: random.Random) -> dict[str, Any]:
    """A realistic 20-resource patient Bundle: two DXA visits, conditions, medications."""
    pid = f"bench-{index}"
    female = rng.random() < 0.8
    birth = f"{rng.randint(1935, 1975)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    t = round(rng.uniform(-3.5, 0.5), 1)
    old_bmd = round(rng.uniform(0.65, 1.05), 3)
    new_bmd = round(old_bmd * rng.uniform(0.94, 1.06), 3)
    new, old = "2026-10-05", "2024-09-16"
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": pid,
            "gender": "female" if female else "male",
            "birthDate": birth,
        },
        {
            "resourceType": "Device",
            "id": f"{pid}-dxa",
            "manufacturer": "Hologic",
            "deviceName": [{"name": "Horizon A", "type": "model-name"}],
            "serialNumber": f"SN-{index % 50}",
        },
    ]
    for day, tag, bmd, score in ((new, "n", new_bmd, t), (old, "o", old_bmd, round(t + 0.1, 1))):
        resources += [
            _obs(
                f"{pid}-{tag}-lt",
                pid,
                LOINC,
                "38267-1",
                "DXA Lumbar spine [T-score] Bone density",
                score,
                "{T-score}",
                day,
            ),
            _obs(
                f"{pid}-{tag}-lz",
                pid,
                LOINC,
                "85394-5",
                "DXA Lumbar spine [Z-score] Bone density",
                round(score + 1.0, 1),
                "{Z-score}",
                day,
            ),
            _obs(
                f"{pid}-{tag}-lb",
                pid,
                LOINC,
                "24966-4",
                "DXA Lumbar spine [Mass/Area] Bone density",
                bmd,
                "g/cm2",
                day,
            ),
            _obs(
                f"{pid}-{tag}-ht",
                pid,
                LOINC,
                "38264-8",
                "DXA Hip [T-score] Bone density",
                round(score + 0.4, 1),
                "{T-score}",
                day,
            ),
            _obs(
                f"{pid}-{tag}-hb",
                pid,
                LOINC,
                "38261-4",
                "DXA Hip [Mass/Area] Bone density",
                round(bmd * 1.05, 3),
                "g/cm2",
                day,
            ),
            _obs(
                f"{pid}-{tag}-nt",
                pid,
                LOCAL,
                "femoral-neck-t",
                "DXA Femoral neck [T-score] Bone density",
                round(score + 0.2, 1),
                "{T-score}",
                day,
            ),
        ]
    resources.append(
        _obs(
            f"{pid}-tbs",
            pid,
            LOCAL,
            "tbs-lumbar",
            "Trabecular bone score, lumbar spine",
            round(rng.uniform(1.1, 1.45), 3),
            "1",
            new,
        )
    )
    for n, (code, display) in enumerate(
        (("I10", "Essential hypertension"), ("E78.5", "Hyperlipidemia"))
    ):
        resources.append(
            {
                "resourceType": "Condition",
                "id": f"{pid}-c{n}",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"coding": [{"system": ICD, "code": code, "display": display}]},
                "subject": {"reference": f"Patient/{pid}"},
            }
        )
    meds = (("M05BA04", "alendronic acid", "2023-03-01"), ("H02AB07", "prednisone", "2026-05-01"))
    for n, (code, display, start) in enumerate(meds):
        resources.append(
            {
                "resourceType": "MedicationStatement",
                "id": f"{pid}-m{n}",
                "status": "active" if rng.random() < 0.5 else "completed",
                "medicationCodeableConcept": {
                    "coding": [{"system": ATC, "code": code, "display": display}]
                },
                "subject": {"reference": f"Patient/{pid}"},
                "effectivePeriod": {"start": start},
            }
        )
    resources.append(
        {
            "resourceType": "Procedure",
            "id": f"{pid}-p0",
            "status": "completed",
            "code": {"text": "Colonoscopy"},
            "subject": {"reference": f"Patient/{pid}"},
            "performedDateTime": "2025-01-10",
        }
    )
    assert len(resources) == 20, len(resources)
    return {
        "resourceType": "Bundle",
        "id": pid,
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def _tree_rss(pid: int) -> int:
    """Resident memory (bytes) of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm", encoding="ascii") as handle:
                rss[int(entry)] = int(handle.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack.extend(children.get(current, []))
    return total


STUB = '''
"""Benchmark stand-in for cds.pipeline: one card per input, no evaluation."""
from dataclasses import dataclass, field
from typing import Any

class EvaluationError(Exception):
    pass

@dataclass
class EvaluationInput:
    hook: str
    resources: Any
    as_of: Any
    patient_id: Any = None
    draft_orders: Any = ()
    selections: Any = ()
    deterministic: bool = False
    uuid_seed: Any = None

@dataclass
class EvaluationResult:
    cards: list
    outcome: Any
    trace: Any = None
    fired: list = field(default_factory=list)

class Evaluator:
    ruleset_version = "stub"

    @classmethod
    def from_rules_dir(cls, path=None):
        return cls()

    def evaluate(self, inp):
        card = {"uuid": "x", "summary": "stub", "indicator": "info",
                "source": {"label": "stub", "topic": {"code": "tbs"}}}
        return EvaluationResult([card], None)
'''

SITECUSTOMIZE = """
import importlib.abc, importlib.util, os, sys

class _Stub(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "cds.pipeline":
            here = os.path.dirname(os.path.abspath(__file__))
            stub = os.path.join(here, "stub_pipeline.py")
            return importlib.util.spec_from_file_location(name, stub)
        return None

sys.meta_path.insert(0, _Stub())
"""

ENV: dict[str, str] = dict(os.environ)


def use_stub(work: Path) -> None:
    """Make the replay processes import the stand-in pipeline (see the module docstring)."""
    folder = work / "stub"
    folder.mkdir()
    (folder / "stub_pipeline.py").write_text(STUB)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    ENV["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), ENV.get("PYTHONPATH")) if p)


def run(args: list[str], sample_every: float = 0.05) -> tuple[float, int, list[tuple[float, int]]]:
    """Run `cds replay ARGS`; return wall seconds, peak tree RSS and the RSS samples."""
    started = time.perf_counter()
    process = subprocess.Popen([*CDS, "replay", *args], stdout=subprocess.DEVNULL, env=ENV)
    samples: list[tuple[float, int]] = []
    peak = 0
    while process.poll() is None:
        rss = _tree_rss(process.pid)
        peak = max(peak, rss)
        samples.append((time.perf_counter() - started, rss))
        time.sleep(sample_every)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"cds replay exited {process.returncode}")
    return seconds, peak, samples


def throughput(count: int, workers: int, work: Path) -> None:
    folder = work / "bundles"
    folder.mkdir()
    rng = random.Random(6)
    for index in range(count):
        (folder / f"b{index:06d}.json").write_text(json.dumps(make_bundle(index, rng)))
    common = ["--as-of", "2026-11-23", "--format", "ndjson", "--out", str(work / "out.ndjson")]
    seconds, peak, _ = run([str(folder), "--workers", str(workers), *common])
    lines = sum(1 for _ in (work / "out.ndjson").open())
    print(f"throughput: {count} bundles x 20 resources, --workers {workers}")
    print(f"  wall {seconds:.2f} s (process start and rule loading included)")
    print(f"  {count / seconds:,.0f} bundles/s; {lines} results")
    print(f"  peak RSS (parent + workers) {peak / 2**20:.0f} MiB")


def flatness(lines: int, workers: int, work: Path) -> None:
    path = work / "bulk.ndjson"
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as handle:
        template = [make_bundle(i, rng) for i in range(100)]
        for index in range(lines):
            handle.write(json.dumps(template[index % 100]) + "\n")
    args = [
        str(path),
        "--workers",
        str(workers),
        "--as-of",
        "2026-11-23",
        "--format",
        "ndjson",
        "--out",
        os.devnull,
    ]
    seconds, peak, samples = run(args, sample_every=0.25)
    print(f"memory flatness: {lines:,} NDJSON lines, --workers {workers}")
    print(
        f"  wall {seconds:.1f} s, {lines / seconds:,.0f} lines/s, peak RSS {peak / 2**20:.0f} MiB"
    )
    steady = [s for s in samples if s[0] > 3.0] or samples
    step = max(1, len(steady) // 10)
    series = ", ".join(f"{t:.0f}s {rss / 2**20:.0f}" for t, rss in steady[::step])
    print(f"  RSS MiB over time (after start-up): {series}")
    if len(steady) >= 4:
        quarter = len(steady) // 4
        first = max(r for _, r in steady[:quarter])
        last = max(r for _, r in steady[-quarter:])
        print(
            f"  max RSS first quarter {first / 2**20:.0f} MiB, last quarter "
            f"{last / 2**20:.0f} MiB (growth {100 * (last - first) / first:+.1f}%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-flatness", action="store_true")
    parser.add_argument("--stub-pipeline", action="store_true", help="replay machinery only")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        work = Path(tmp)
        if options.stub_pipeline:
            use_stub(work)
            print("STUB PIPELINE: measuring cds replay itself, no evaluation")
        if not options.skip_throughput:
            throughput(options.bundles, options.workers, work)
        if not options.skip_flatness:
            flatness(options.lines, options.workers, work)


if __name__ == "__main__":
    main()
