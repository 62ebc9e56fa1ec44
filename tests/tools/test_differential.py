"""tools/differential.py: the corpus is reproducible, dumps are deterministic, and a
difference is reported with the input and the first place where the results part."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("differential", ROOT / "tools/differential.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutation_is_seeded_and_leaves_the_original_alone() -> None:
    tool = _tool()
    original = {"resourceType": "Observation", "code": {"coding": [{"code": "1"}]}, "v": 2}
    kept = json.dumps(original)
    first = [tool.mutate(original, random.Random(5)) for _ in range(3)]
    assert json.dumps(original) == kept
    assert first[0] == first[1] == first[2]
    assert any(tool.mutate(original, random.Random(s)) != original for s in range(10))


def test_corpus_is_the_same_every_time() -> None:
    tool = _tool()
    assert list(tool.corpus(3)) == list(tool.corpus(3))
    names = [name for name, _ in tool.corpus(3)]
    assert names[:6] == ["bench0", "bench1", "bench2", "mutated0", "mutated1", "mutated2"]
    assert any(name.startswith("tests/fixtures/") for name in names)


def test_first_difference_names_the_path() -> None:
    tool = _tool()
    a = {"cards": [{"summary": "x", "uuid": "u"}], "n": 1}
    b = {"cards": [{"summary": "y", "uuid": "u"}], "n": 1}
    assert tool._first_difference(a, b) == ".cards[0].summary: 'x' here, 'y' at the base"
    assert tool._first_difference({"a": 1}, {}) == ".a: only here"
    assert tool._first_difference([1], [1, 2]) == ": 1 items here, 2 at the base"


def test_dump_is_deterministic_and_compare_reports_the_first_difference(tmp_path: Path) -> None:
    tool = _tool()
    inputs = tmp_path / "inputs.ndjson"
    with inputs.open("w", encoding="utf-8") as handle:
        for name, text in list(tool.corpus(2))[:4]:
            handle.write(json.dumps([name, text]) + "\n")
    outs = []
    for run in ("one", "two"):
        out = tmp_path / f"{run}.jsonl"
        subprocess.run(
            [sys.executable, str(ROOT / "tools/differential.py"), "--dump", str(inputs), str(out)],
            cwd=ROOT,
            check=True,
        )
        outs.append(out)
    assert tool.compare_dumps(outs[0], outs[1]) == (8, None)  # 4 inputs x 2 hooks
    lines = outs[1].read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[2])
    assert record["cards"], "a bench Bundle gives cards"
    record["cards"][0]["summary"] += "!"
    lines[2] = json.dumps(record, sort_keys=True)
    outs[1].write_text("\n".join(lines) + "\n", encoding="utf-8")
    count, difference = tool.compare_dumps(outs[0], outs[1])
    assert count == 3
    assert difference is not None
    assert difference.startswith("DIFFERS at evaluation 3: bench1 (patient-view)")
    assert ".cards[0].summary" in difference
    whole = outs[0].read_text(encoding="utf-8").splitlines()
    outs[1].write_text("\n".join(whole[:7]) + "\n", encoding="utf-8")  # one evaluation less
    assert tool.compare_dumps(outs[0], outs[1]) == (
        7,
        "DIFFERS after evaluation 7: this tree made more evaluations",
    )
    assert tool.compare_dumps(outs[1], outs[0])[1] == (
        "DIFFERS after evaluation 7: the base made more evaluations"
    )
