"""Helpers: write a rule file next to the fixture evidence registry and load it."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from cds.rules import RuleSet, RuleSetError, load_ruleset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rules"
ORDER_CODES = FIXTURES / "order-codes.json"
#: The order keys of the fixture order codes (what the fixture rules may name).
ORDER_KEYS = frozenset(json.loads(ORDER_CODES.read_text(encoding="utf-8"))["orders"])

Loader = Callable[..., RuleSet]
ErrorLister = Callable[..., list[str]]


def write_rules(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "evidence.yaml", directory / "evidence.yaml")
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return directory


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Loader:
    """load(text) or load(files={...}): the loaded RuleSet."""

    monkeypatch.chdir(tmp_path)  # error paths read rules/x.yaml, as users see them

    def _load(text: str | None = None, files: dict[str, str] | None = None) -> RuleSet:
        contents = dict(files or {})
        if text is not None:
            contents["x.yaml"] = text
        return load_ruleset(write_rules(tmp_path / "rules", contents), order_keys=ORDER_KEYS)

    return _load


@pytest.fixture
def errors(load: Loader) -> ErrorLister:
    """errors(text): every error as 'LINE:COL: message' (the path is checked elsewhere)."""

    def _errors(text: str | None = None, files: dict[str, str] | None = None) -> list[str]:
        with pytest.raises(RuleSetError) as info:
            load(text, files)
        return [f"{e.line}:{e.col}: {e.message}" for e in info.value.errors]

    return _errors
