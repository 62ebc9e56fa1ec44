"""Every rules/*.yaml compiles to exactly tests/golden/rules/<file>.json.

After an intended rule change, regenerate with `make golden`
(`cds rules compile rules --out tests/golden/rules`) and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
    assert dumps(compile_file(bundled, path.name)) == golden.read_text(encoding="utf-8"), (
        f"{path.name} compiles differently from {golden.name}: if the change is intended, "
        "run `make golden` and review the diff"
    )


def test_generated_rule_docs_are_current(bundled: RuleSet) -> None:
    """docs/rules.md is what `cds rules docs` writes for the bundled rules, so it never lags."""
    from cds.authoring.docs import render_docs

    docs = REPO / "docs" / "rules.md"
    assert docs.read_text(encoding="utf-8") == render_docs(bundled), (
        "docs/rules.md is out of date with rules/: run `make golden` (it regenerates the "
        "compiled goldens and docs/rules.md) and review the diff"
    )
