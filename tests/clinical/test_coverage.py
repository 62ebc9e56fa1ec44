"""Mechanical coverage: every clinical-spec statement of sections 2-10 is implemented by a
rule (named in its evidence) and tested (named in a test under tests/).

The ids come from ../shared/clinical-spec.md when it is present, else from the
`clinical_spec_ids` of rules/evidence.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.clinical.helpers import ROOT, ruleset

SPEC = ROOT.parent / "shared" / "clinical-spec.md"
SECTIONS = range(2, 11)
_ITEM = re.compile(r"^- (\d+)\.(\d+)\s", re.MULTILINE)
_SECTION = re.compile(r"^## (\d+)\.", re.MULTILINE)


def spec_ids(text: str) -> list[str]:
    """CS ids of sections 2-10 numbered in the spec's markdown (`- 4.2 ...` items)."""
    ids: list[str] = []
    current = 0
    for line in text.splitlines():
        section = _SECTION.match(line)
        if section:
            current = int(section.group(1))
            continue
        item = _ITEM.match(line + " ")
        if item and int(item.group(1)) == current and current in SECTIONS:
            ids.append(f"CS-{item.group(1)}.{item.group(2)}")
    return ids


def required_ids() -> list[str]:
    if SPEC.exists():
        return spec_ids(SPEC.read_text(encoding="utf-8"))
    registry = ruleset().evidence.clinical_spec_ids
    return [i for i in registry if int(i.split("-")[1].split(".")[0]) in SECTIONS]


def _mentions(text: str, cs_id: str) -> bool:
    return re.search(re.escape(cs_id) + r"(?![0-9])", text) is not None


def test_spec_parser_reads_numbered_items() -> None:
    text = "## 2. X\n- 2.1 a\n- 2.2 b\n## 11. Style\n- 11.1 c\n## 3. Y\n- 3.1 d\n"
    assert spec_ids(text) == ["CS-2.1", "CS-2.2", "CS-3.1"]


def test_spec_lists_the_expected_statements() -> None:
    ids = required_ids()
    assert len(ids) >= 40, ids
    assert {"CS-2.2", "CS-4.2", "CS-7.6", "CS-8.2", "CS-9.1", "CS-10.1"} <= set(ids)


def test_every_statement_is_in_a_rules_evidence() -> None:
    cited = {e for rule in ruleset().active_rules for e in rule.evidence}
    missing = [i for i in required_ids() if i not in cited]
    assert not missing, f"no active rule cites: {missing}"


def test_every_statement_is_in_the_evidence_registry() -> None:
    known = set(ruleset().evidence.clinical_spec_ids)
    missing = [i for i in required_ids() if i not in known]
    assert not missing, f"rules/evidence.yaml lacks: {missing}"


def test_every_statement_is_tested() -> None:
    texts = [
        p.read_text(encoding="utf-8")
        for p in (ROOT / "tests").rglob("test_*.py")
        if p.name != Path(__file__).name
    ]
    corpus = "\n".join(texts)
    missing = [i for i in required_ids() if not _mentions(corpus, i)]
    assert not missing, f"no test names: {missing}"


@pytest.mark.parametrize("cs_id", ["CS-2.1", "CS-10.1"])
def test_mentions_does_not_confuse_prefixes(cs_id: str) -> None:
    assert _mentions(f"covers {cs_id}.", cs_id)
    assert not _mentions("covers CS-2.11 only", "CS-2.1")


def test_every_rule_has_examples_on_both_sides() -> None:
    one_sided = [
        r.id
        for r in ruleset().active_rules
        if r.then.card is not None
        and not (
            any(e.expect.fires for e in r.examples) and any(not e.expect.fires for e in r.examples)
        )
    ]
    assert not one_sided, f"rules without a firing and a non-firing example: {one_sided}"
