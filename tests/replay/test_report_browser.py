"""The population report in headless Chromium, as an analyst opens it: a file, offline.
Every section's chart (an inline SVG with its data bars) or table is there, and the page
makes no request. The screenshot in docs/qa-replay.md comes from this test:

    OSTEOHOOKS_REPORT_SCREENSHOTS=docs/images .venv/bin/python -m pytest -q \\
        -p no:cacheprovider tests/replay/test_report_browser.py

Needs Playwright (in the test extras) and Debian's chromium (`.ci/run` installs it).
Without them the test is skipped, loudly; with CI=true (set by .ci/run) it fails instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from cds.replay.population import write_report

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("OSTEOHOOKS_CHROMIUM") or shutil.which("chromium") or ""
#: Where the screenshot goes: docs/images when regenerating the guide's picture, else the
#: test's temporary folder.
SHOTS_ENV = "OSTEOHOOKS_REPORT_SCREENSHOTS"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(why: str) -> None:
    if _in_ci():
        pytest.fail(f"CI=true: {why}")
    pytest.skip(f"SKIPPED LOUDLY: {why}")


def _playwright() -> Any:
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("pip install playwright to run the report's browser test")
    if not CHROMIUM:
        _unavailable("no chromium on PATH (apt-get install chromium, as .ci/run does)")
    return sync_api


def test_report_in_chromium(
    replay_results: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_api = _playwright()
    _, folder = replay_results
    report = tmp_path / "report.html"
    monkeypatch.chdir(folder.parent)  # the page names its results as given: "results"
    counts = write_report(Path(folder.name), report)
    url = report.as_uri()
    shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    if not shots.is_absolute():
        shots = REPO / shots
    shots.mkdir(parents=True, exist_ok=True)

    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1200, "height": 1400})
        page = context.new_page()
        page.on("request", lambda request: requests.append(request.url))

        def refuse(route: Any) -> None:
            if route.request.url != url:
                route.abort()
            else:
                route.continue_()

        page.route("**/*", refuse)
        page.goto(url, wait_until="load")
        sections = page.locator("section")
        titles = [s.get_attribute("data-title") for s in sections.all()]
        assert titles == [
            "Patients by category and site",
            "Cards per topic and indicator",
            "Firing rate per rule",
            "Findings",
            "Rescan windows over time",
            "Data errors by kind",
            "Slowest inputs",
        ]
        for section in sections.all():
            title = section.get_attribute("data-title")
            charts = section.locator("figure.chart")
            if title == "Slowest inputs":
                assert section.locator("table tbody tr").count() == 20
                continue
            assert charts.count() >= 1, title
            for chart in charts.all():
                svg = chart.locator("svg")
                assert svg.count() == 1, title
                box = svg.bounding_box()
                assert box is not None
                assert box["width"] > 200, title
                assert box["height"] > 80, title  # laid out, not collapsed
                marks = svg.locator("[id*='-mark-']")
                assert marks.count() == int(chart.get_attribute("data-marks") or 0) > 0, title
                first = marks.first.bounding_box()
                assert first is not None, title
                assert first["width"] > 0, title  # a drawn bar
                assert first["height"] > 0, title
        # the labels are text the browser shows (SVG text, not outlines)
        rule, _ = counts.rules.most_common(1)[0]
        assert rule in page.locator("#s3").inner_text()
        page.screenshot(path=str(shots / "report.png"))
        browser.close()
    assert requests == [url], f"the page asked for more than itself: {requests}"
