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
