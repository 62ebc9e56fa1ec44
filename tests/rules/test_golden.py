"""Every rules/*.yaml compiles to exactly tests/golden/rules/<file>.json.

After an intended rule change, regenerate with `make golden`
(`cds rules compile rules --out tests/golden/rules`) and review the diff.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from cds.replay.golden import describe, json_differences
from cds.rules import RuleSet, load_ruleset
from cds.rules.compiler import compile_file, dumps

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
GOLDEN = REPO / "tests" / "golden" / "rules"
RULE_FILES = (
    sorted(p for p in RULES.glob("*.yaml") if p.name != "evidence.yaml") if RULES.is_dir() else []
)


@pytest.fixture(scope="module")
def bundled() -> RuleSet:
    return load_ruleset(RULES)


@pytest.mark.parametrize("path", RULE_FILES, ids=[p.name for p in RULE_FILES])
def test_compiled_rules_match_golden(bundled: RuleSet, path: Path) -> None:
    golden = GOLDEN / f"{path.stem}.json"
    assert golden.exists(), f"no golden file for {path.name}: run `make golden` and review it"
    compiled = dumps(compile_file(bundled, path.name))
    stored = golden.read_text(encoding="utf-8")
    if compiled != stored:
        differences = json_differences(json.loads(stored), json.loads(compiled), golden.name)
        pytest.fail(
            "\n".join(
                [
                    f"{path.name} compiles differently from {golden} (golden: expected; "
                    "this run: got). If the change is intended, run `make golden` and "
                    "review the diff:",
                    *("  " + describe(d) for d in differences),
                ]
                if differences
                else [f"{golden} differs only in layout: run `make golden`"]
            ),
            pytrace=False,
        )


def test_generated_rule_docs_are_current(bundled: RuleSet) -> None:
    """docs/rules.md is what `cds rules docs` writes for the bundled rules, so it never lags."""
    from cds.authoring.docs import render_docs

    docs = REPO / "docs" / "rules.md"
    stored, rendered = docs.read_text(encoding="utf-8"), render_docs(bundled)
    if stored != rendered:
        diff = difflib.unified_diff(
            stored.splitlines(), rendered.splitlines(), "docs/rules.md", "rules/", lineterm=""
        )
        pytest.fail(
            "docs/rules.md is out of date with rules/: run `make golden` (it regenerates "
            "every golden) and review the diff:\n" + "\n".join(diff),
            pytrace=False,
        )
