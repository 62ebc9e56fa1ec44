"""The libyaml read of a rule file (cds.rules.source, fast=True) gives exactly the data and
positions of the round-trip read, or steps aside for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds.rules import load_ruleset
from cds.rules.errors import RuleError
from cds.rules.ruleset import _load
from cds.rules.source import CParser, Source, _fast_parse, _parse, read_yaml  # type: ignore[attr-defined]

ROOT = Path(__file__).resolve().parents[2]
YAML_FILES = sorted(
    [*(ROOT / "rules").glob("*.yaml"), *(ROOT / "tests" / "fixtures").rglob("*.yaml")]
)

needs_libyaml = pytest.mark.skipif(CParser is None, reason="ruamel.yaml.clib is not installed")


def same(fast: Source, slow: Source) -> None:
    assert repr(fast.data) == repr(slow.data)  # types too: 1 vs 1.0 vs True
    assert fast.positions == slow.positions
    assert fast.key_positions == slow.key_positions


@needs_libyaml
@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_bundled_files_read_the_same_both_ways(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    fast = _fast_parse("x.yaml", text)
    slow = _parse("x.yaml", text)
    assert fast is not None, "the bundled rules take the fast path"
    assert isinstance(slow, Source)
    same(fast, slow)


@needs_libyaml
def test_aliases_keep_the_anchor_positions() -> None:
    text = (
        "rules:\n"
        "  - when: &w {fact: a, all: [{field: x, eq: 1}]}\n"
        "  - when:\n"
        "      not: *w\n"
        "n: 1\nf: -2.5\nb: true\nnothing: null\ns: '3'\nhex: 0x1f\n"
    )
    fast = _fast_parse("x.yaml", text)
    slow = _parse("x.yaml", text)
    assert fast is not None
    assert isinstance(slow, Source)
    same(fast, slow)
    assert fast.at(("rules", 1, "when", "not", "all", 0, "eq")) == (2, 45)


@needs_libyaml
@pytest.mark.parametrize(
    "text",
    [
        # an anchored node holding an anchor and an alias, read again twice
        "a: &outer\n  b: &inner [1, {c: x}]\n  d: *inner\ne: *outer\nf: [*outer, *inner]\n",
        # a scalar alias, as a value and as a key
        "a: &k key\nb: {*k : 1}\nc: *k\n",
        "- &s {x: &n 1, y: *n}\n- *s\n- [*s, *n]\n",
    ],
)
def test_aliases_read_again_as_the_round_trip_reads_them(text: str) -> None:
    fast = _fast_parse("x.yaml", text)
    slow = _parse("x.yaml", text)
    assert fast is not None
    assert isinstance(slow, Source)
    same(fast, slow)


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\n---\nb: 2\n",  # two documents: round-trip words the error
        "a: *nowhere\n",  # an undefined alias
        "a: &r [*r]\n",  # a node that holds itself
        "a: &k 1\nb: &k 2\n",  # an anchor defined twice
        "a: 1\na: 2\n",  # duplicate key: round-trip words the error
        "%YAML 1.1\n---\na: yes\n",  # another YAML version
        "a: !custom 1\n",  # a tag
        "day: 2026-11-23\n",  # a date
        "1: one\n",  # a non-string key
        "a: [1, 2\n",  # a syntax error
    ],
)
def test_anything_unusual_takes_the_round_trip_path(text: str, tmp_path: Path) -> None:
    assert _fast_parse("x.yaml", text) is None
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    fast = read_yaml(path, fast=True)
    slow = read_yaml(path)
    if isinstance(slow, RuleError):
        assert fast == slow
    else:
        assert isinstance(fast, Source)
        same(fast, slow)


def test_merge_keys_take_the_round_trip_path() -> None:
    assert _fast_parse("x.yaml", "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n") is None


def test_empty_file_reads_as_an_empty_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    fast = read_yaml(path, fast=True)
    slow = read_yaml(path)
    assert isinstance(fast, Source)
    assert isinstance(slow, Source)
    assert fast.data == slow.data == {}
    assert fast.positions == slow.positions


def test_rule_origins_are_the_round_trip_ones() -> None:
    fast = _load(ROOT / "rules", order_keys=None, compile=False, fast=True)
    slow = _load(ROOT / "rules", order_keys=None, compile=False, fast=False)
    assert fast.origins == slow.origins
    assert fast.example_origins == slow.example_origins
    assert [r.model_dump() for r in fast.rules] == [r.model_dump() for r in slow.rules]
    assert load_ruleset(ROOT / "rules", compile=False).origins == slow.origins
