"""A golden difference reads the same in every place it is shown: the text report, the
JUnit <failure> and (through the same function) the pytest message of the story tests:
the topic, the JSON path, and both values, long texts as a word diff."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cds.cli import app

REPO = Path(__file__).resolve().parents[2]
STORY = "27-tbs-degraded-osteopenia.json"


@pytest.fixture
def changed_golden(tmp_path: Path) -> tuple[Path, Path, str]:
    """Story 27 and its golden file, with one word of the classification detail changed."""
    cases, golden = tmp_path / "cases", tmp_path / "golden"
    cases.mkdir()
    golden.mkdir()
    shutil.copy2(REPO / "tests" / "fixtures" / "stories" / STORY, cases / STORY)
    path = golden / f"{STORY}.json"
    document = json.loads((REPO / "tests" / "golden" / "stories" / path.name).read_text())
    [card] = [c for c in document["cards"] if c["source"]["topic"]["code"] == "tbs"]
    word = card["detail"].split()[3]
    card["detail"] = card["detail"].replace(word, "EDITED", 1)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return cases, golden, word


def _replay(cases: Path, golden: Path, *extra: str) -> str:
    args = ["replay", str(cases), "--as-of", "2026-11-23", "--rules", str(REPO / "rules")]
    args += ["--expect", str(golden), "--workers", "0", "--no-progress", *extra]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    return result.stdout


def test_text_report_shows_path_and_word_diff(changed_golden: tuple[Path, Path, str]) -> None:
    cases, golden, word = changed_golden
    out = _replay(cases, golden, "--format", "text")
    [line] = [line for line in out.splitlines() if "tbs: detail" in line]
    assert line.startswith("    tbs: detail: text differs: ")
    assert f"[-EDITED-] {{+{word}+}}" in line


def test_junit_failure_shows_path_and_word_diff(
    changed_golden: tuple[Path, Path, str], tmp_path: Path
) -> None:
    cases, golden, word = changed_golden
    report = tmp_path / "report.xml"
    _replay(cases, golden, "--format", "junit", "--out", str(report))
    [failure] = ET.parse(report).getroot().iter("failure")
    assert failure.text is not None
    assert "tbs: detail: text differs: " in failure.text
    assert f"[-EDITED-] {{+{word}+}}" in failure.text
