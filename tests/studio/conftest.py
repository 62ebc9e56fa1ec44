"""A studio on a copy of the bundled rules (saves must not touch the repository)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from cds.studio.app import Studio

REPO = Path(__file__).resolve().parents[2]
STORIES = REPO / "tests" / "fixtures" / "stories"
STORY = "27-tbs-degraded-osteopenia.json"
AS_OF = date(2026, 11, 23)


@pytest.fixture
def studio(tmp_path: Path) -> Studio:
    shutil.copytree(REPO / "rules", tmp_path / "rules")
    shutil.copytree(REPO / "fhir_profiles", tmp_path / "fhir_profiles")
    return Studio(tmp_path / "rules", STORIES, AS_OF)
