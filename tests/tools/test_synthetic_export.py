"""tools/synthetic_export.py: deterministic Bulk Data exports that read back as the
patients written and reach every patient-view card topic (issue 13)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

from typer.testing import CliRunner

from cds.cli import app
from cds.contracts.cards import CARD_TOPICS, HOOK_TOPICS

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "synthetic_export", ROOT / "tools" / "synthetic_export.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["synthetic_export"] = module
    spec.loader.exec_module(module)
    return module


synthetic = _module()


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(
            gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        ).hexdigest()
        for p in sorted(folder.iterdir())
    }


def test_the_same_seed_writes_the_same_export_and_another_seed_another(tmp_path: Path) -> None:
    synthetic.write_export(tmp_path / "a", 60, 3)
    synthetic.write_export(tmp_path / "b", 60, 3)
    synthetic.write_export(tmp_path / "c", 60, 4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_split_and_gzipped_files_hold_the_same_resources(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    split = tmp_path / "split"
    written = synthetic.write_export(plain, 40, 5)
    assert synthetic.write_export(split, 40, 5, part=100, gzip=True) == written
    parts = sorted(p.name for p in split.glob("Observation.*.ndjson.gz"))
    assert len(parts) > 1
    lines = [
        line
        for p in sorted(split.glob("*.ndjson.gz"))
        for line in gzip.decompress(p.read_bytes()).decode().splitlines()
    ]
    assert sorted(lines) == sorted(
        line for p in sorted(plain.glob("*.ndjson")) for line in p.read_text().splitlines()
    )
    manifest = json.loads((split / "manifest.json").read_text())
    assert {o["url"].rsplit("/", 1)[1] for o in manifest["output"]} == {
        p.name for p in split.glob("*.ndjson.gz")
    }


def test_the_export_reads_back_as_its_patients_and_reaches_every_topic(tmp_path: Path) -> None:
    count = 400
    export = tmp_path / "export"
    synthetic.write_export(export, count, 11, part=2000, gzip=True)
    out = tmp_path / "results.ndjson"
    result = CliRunner().invoke(
        app,
        [
            "replay",
            str(export),
            "--as-of",
            "2026-11-23",
            "--workers",
            "0",
            "--format",
            "ndjson",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    results = [r for r in rows if "cards" in r]
    assert len(results) == count
    assert all(r["input"].startswith(f"{export}#Patient/syn-") for r in results)
    # exit 0: every input was read and evaluated; and none has a data error
    assert all(not (r["outcome"] or {}).get("issue") for r in results)
    topics = Counter(c["source"]["topic"]["code"] for r in results for c in r["cards"])
    # every topic but the order hooks' own (patient-view answers the others)
    order_only = set().union(*HOOK_TOPICS.values())
    assert set(CARD_TOPICS) - order_only <= set(topics), topics
