"""Input discovery: files, folders (recursive, sorted), globs, NDJSON lines, failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cds.replay.inputs import Source, discover


def _tree(root: Path) -> None:
    (root / "b").mkdir()
    (root / "a" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel in ["z.json", "b/y.json", "a/x.json", "a/deep/w.json", ".hidden/h.json", "a/.h.json"]:
        (root / rel).write_text("{}", encoding="utf-8")
    (root / "notes.txt").write_text("not an input", encoding="utf-8")
    (root / "a" / "lines.ndjson").write_text('{"a": 1}\n\n{"b": 2}\n', encoding="utf-8")


def _names(sources: list[Source]) -> list[str]:
    return [s.name for s in sources]


def test_folder_is_walked_recursively_in_sorted_order_skipping_hidden_and_other_files(
    tmp_path: Path,
) -> None:
    _tree(tmp_path)
    folder = str(tmp_path)
    sources = list(discover([folder]))
    assert _names(sources) == [
        os.path.join(folder, "a", "deep", "w.json"),
        os.path.join(folder, "a", "lines.ndjson") + "#L1",
        os.path.join(folder, "a", "lines.ndjson") + "#L3",
        os.path.join(folder, "a", "x.json"),
        os.path.join(folder, "b", "y.json"),
        os.path.join(folder, "z.json"),
    ]
    assert [s.key for s in sources] == [
        "a/deep/w.json",
        "a/lines.ndjson#L1",
        "a/lines.ndjson#L3",
        "a/x.json",
        "b/y.json",
        "z.json",
    ]


def test_ndjson_lines_are_numbered_physically_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bulk.ndjson"
    path.write_text('{"n": 1}\n   \n{"n": 3}\n', encoding="utf-8")
    sources = list(discover([str(path)]))
    assert _names(sources) == [f"{path}#L1", f"{path}#L3"]
    assert [s.text for s in sources] == ['{"n": 1}\n', '{"n": 3}\n']
    assert [s.key for s in sources] == ["bulk.ndjson#L1", "bulk.ndjson#L3"]


def test_file_argument_keeps_its_spelling_and_its_key_is_the_file_name(tmp_path: Path) -> None:
    _tree(tmp_path)
    given = str(tmp_path / "a" / "x.json")
    (source,) = discover([given])
    assert source == Source(name=given, key="x.json", path=given)


def test_glob_matches_sorted_with_keys_relative_to_the_fixed_part(tmp_path: Path) -> None:
    _tree(tmp_path)
    pattern = str(tmp_path / "**" / "*.json")
    sources = list(discover([pattern]))
    assert [s.key for s in sources] == ["a/deep/w.json", "a/x.json", "b/y.json", "z.json"]


def test_a_file_named_twice_is_replayed_once(tmp_path: Path) -> None:
    _tree(tmp_path)
    sources = list(discover([str(tmp_path / "z.json"), str(tmp_path), str(tmp_path / "*.json")]))
    assert _names(sources).count(str(tmp_path / "z.json")) == 1
    assert len(sources) == 6


@pytest.mark.parametrize(
    ("argument", "error"),
    [
        ("missing.json", "no such file or folder"),
        ("nothing-*.json", "no file matches this pattern"),
    ],
)
def test_missing_paths_and_empty_globs_become_failed_sources(
    tmp_path: Path, argument: str, error: str
) -> None:
    (source,) = discover([str(tmp_path / argument)])
    assert source.error == error
    assert source.name == str(tmp_path / argument)
    assert source.path is None


def test_discovery_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    path.write_text("{}\n" * 1000, encoding="utf-8")
    iterator = discover([str(path)])
    first = next(iterator)
    assert first.name.endswith("#L1")
