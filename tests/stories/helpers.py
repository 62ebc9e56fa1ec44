"""Shared helpers for the story tests: paths and running `cds replay` over the stories."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORIES = ROOT / "tests" / "fixtures" / "stories"
GOLDEN = ROOT / "tests" / "golden" / "stories"
RULES = ROOT / "rules"
ORACLE = Path(__file__).resolve().parent / "oracle.json"
AS_OF = "2026-11-23"


def replay(*extra: str) -> tuple[int, str]:
    """Run `cds replay` over every story in this process (the public CLI, as QA runs it)."""
    from typer.testing import CliRunner

    from cds.cli import app

    args = [
        "replay",
        str(STORIES),
        "--as-of",
        AS_OF,
        "--rules",
        str(RULES),
        "--workers",
        "0",
        "--no-progress",
        *extra,
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    return result.exit_code, result.stdout
