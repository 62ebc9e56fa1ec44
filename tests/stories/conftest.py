"""Session fixture: the program's answer for every story, from one `cds replay` run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.stories.helpers import replay


@pytest.fixture(scope="session")
def story_results() -> dict[str, dict[str, Any]]:
    """The program's answer per story file name: {"cards": [...], "outcome": ...}."""
    code, out = replay("--format", "ndjson")
    results: dict[str, dict[str, Any]] = {}
    for line in out.splitlines():
        if line.strip():
            doc = json.loads(line)
            results[Path(doc["input"]).name] = doc
    assert results, f"replay printed no results (exit {code})"
    return results
