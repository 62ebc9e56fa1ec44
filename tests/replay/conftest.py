"""Replay tests share one Evaluator for the bundled rules (loading them takes seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def bundled_evaluator() -> Any:
    from cds.pipeline import Evaluator

    return Evaluator.from_rules_dir(None)


@pytest.fixture
def shared_evaluator(bundled_evaluator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`cds replay`/`cds explain` in this process reuse the session's Evaluator when they
    ask for the bundled rules (any other --rules folder is still loaded for real)."""
    from cds.cli import replay_cmd
    from cds.rules import default_rules_dir

    real = replay_cmd._load_evaluator
    bundled = default_rules_dir().resolve()

    def load(rules_dir: Path) -> Any:
        if rules_dir.resolve() == bundled:
            return bundled_evaluator
        return real(rules_dir)

    monkeypatch.setattr(replay_cmd, "_load_evaluator", load)
    return bundled_evaluator


@pytest.fixture(scope="session")
def replay_results(
    bundled_evaluator: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """One replay run of the stories plus the replay fixture cases (a split Bundle, NDJSON
    lines, requests of every hook, a data error) and an unreadable file, written as NDJSON
    (`results.ndjson`) and as Parquet (`results/`): (ndjson file, parquet folder)."""
    import shutil

    from typer.testing import CliRunner

    from cds.cli import app, replay_cmd

    fixtures = Path(__file__).parent.parent / "fixtures"
    root = tmp_path_factory.mktemp("replay-results")
    cases = root / "cases"
    shutil.copytree(fixtures / "stories", cases / "stories")
    shutil.copytree(fixtures / "replay" / "cases", cases / "replay")
    (cases / "broken.json").write_text("{not json", encoding="utf-8")
    common = ["--as-of", "2026-11-23", "--workers", "0"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(replay_cmd, "_load_evaluator", lambda rules_dir: bundled_evaluator)
        for args in (
            ["--format", "ndjson", "--out", "results.ndjson"],
            ["--format", "parquet", "--out", "results"],
        ):
            result = CliRunner().invoke(app, ["replay", "cases", *args, *common])
            assert result.exit_code == 1, result.output  # the broken input, only
    return root / "results.ndjson", root / "results"
