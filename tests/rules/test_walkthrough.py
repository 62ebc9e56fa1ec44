"""The guide's walk-through, end to end (docs/rule-authoring.md section 3).

On a copy of the repository's rules and goldens: move the women's TBS "degraded" cut-off
as the guide does (the parameter's `value:` and the examples at the boundary), run the one
documented regeneration command (`make golden`), then the suite's rule-level checks on
the copy: `cds rules lint` and `cds rules test`, the compiled-rule and docs goldens, the
story goldens, and the clinical boundary tests (which read their thresholds from the
rules). All must be green, so an informaticist who follows the guide ends with a green
`make test`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cds.authoring.docs import render_docs
from cds.cli import app
from cds.rules import load_ruleset
from cds.rules.compiler import compile_file, dumps

REPO = Path(__file__).resolve().parents[2]
PARAMETER = "tbs_degraded_max_women"
STEP = Decimal("0.030")  # the guide's example: 1.200 -> 1.230
PRECISION = Decimal("0.001")  # TBS is reported to three decimals


def _copy(tmp: Path) -> Path:
    root = tmp / "repo"
    for folder in ("rules", "tests/golden", "tests/fixtures/stories", "fhir_profiles"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "docs").mkdir()
    shutil.copy2(REPO / "docs" / "rules.md", root / "docs" / "rules.md")
    shutil.copy2(REPO / "Makefile", root / "Makefile")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _edit_threshold(rules: Path) -> tuple[Decimal, Decimal]:
    """The guide's edit, as text (as a person edits the file): the value and the examples
    at the boundary (the value itself and one step of precision above it)."""
    path = rules / "tbs.yaml"
    text = path.read_text(encoding="utf-8")
    old = Decimal(str(load_ruleset(rules).parameters[PARAMETER])).quantize(PRECISION)
    new = old + STEP
    block = f"  {PARAMETER}:\n    value: {old}\n"
    assert block in text, f"the guide's parameter {PARAMETER} is not written as expected"
    text = text.replace(block, f"  {PARAMETER}:\n    value: {new}\n")
    above_old, above_new = old + PRECISION, new + PRECISION
    for before, after in ((str(old), str(new)), (str(above_old), str(above_new))):
        text = text.replace(f"tbs: {before}", f"tbs: {after}")
        text = text.replace(f"TBS {before}", f"TBS {after}")
    path.write_text(text, encoding="utf-8")
    return old, new


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make (the documented command)")
def test_the_guides_threshold_change_leaves_the_rule_checks_green(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _copy(tmp_path)
    monkeypatch.chdir(root)  # as the informaticist works: from the repository's top folder
    old, new = _edit_threshold(root / "rules")
    assert new != old
    assert load_ruleset(root / "rules").parameters[PARAMETER] == float(new)

    # The one regeneration command, with this interpreter's environment as its .venv and a
    # fresh stamp (the copy has no .venv of its own; the stamp only says "installed").
    venv = Path(sys.prefix)
    stamp = tmp_path / "installed"
    stamp.touch()
    made = subprocess.run(
        ["make", "-C", str(root), "golden", f"VENV={venv}", f"STAMP={stamp}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr

    runner = CliRunner()
    for command in ("lint", "test"):
        result = runner.invoke(app, ["rules", command, str(root / "rules")])
        assert result.exit_code == 0, result.output

    ruleset = load_ruleset(Path("rules"))
    for path in sorted((root / "rules").glob("*.yaml")):
        if path.name == "evidence.yaml":
            continue
        golden = root / "tests" / "golden" / "rules" / f"{path.stem}.json"
        assert dumps(compile_file(ruleset, path.name)) == golden.read_text(encoding="utf-8")
    assert (root / "docs" / "rules.md").read_text(encoding="utf-8") == render_docs(ruleset)
    compiled = (root / "tests" / "golden" / "rules" / "tbs.json").read_text(encoding="utf-8")
    assert str(new) in compiled or json.dumps(float(new)) in compiled

    stories = runner.invoke(
        app,
        [
            "replay",
            str(root / "tests" / "fixtures" / "stories"),
            "--as-of",
            "2026-11-23",
            "--rules",
            str(root / "rules"),
            "--expect",
            str(root / "tests" / "golden" / "stories"),
            "--workers",
            "0",
            "--no-progress",
        ],
    )
    assert stories.exit_code == 0, stories.output

    clinical = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(REPO / "tests" / "clinical" / "test_boundaries.py"),
            str(REPO / "tests" / "clinical" / "test_fhir_boundaries.py"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OSTEOHOOKS_TEST_RULES": str(root / "rules")},
        check=False,
    )
    assert clinical.returncode == 0, clinical.stdout[-4000:] + clinical.stderr[-2000:]


def test_the_walkthrough_edit_really_moves_the_threshold(tmp_path: Path) -> None:
    """Without regeneration the compiled golden no longer matches: the walk-through is not
    vacuous (the edit reaches the compiled rules)."""
    root = _copy(tmp_path)
    _edit_threshold(root / "rules")
    ruleset = load_ruleset(root / "rules")
    golden = root / "tests" / "golden" / "rules" / "tbs.json"
    assert dumps(compile_file(ruleset, "tbs.yaml")) != golden.read_text(encoding="utf-8")
