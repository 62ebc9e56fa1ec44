"""The studio in headless Chromium, as an informaticist uses it: load a story, see its
cards, change a threshold in the editor and see the card change, make a typo and see the
lint error at its line. The screenshots in docs/rule-authoring.md come from this test.

Needs Playwright (PyPI, in the test extras) and Debian's chromium (`.ci/run` installs it;
without root `make test` cannot, and these tests are skipped with the reason; with
CI=true, as `.ci/run` sets, they fail instead: CI must run them).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cds.studio.app import Studio, create_app
from tests.studio.conftest import REPO, STORY

CHROMIUM = os.environ.get("OSTEOHOOKS_CHROMIUM") or shutil.which("chromium") or ""
#: Where the screenshots go: docs/images when regenerating the guide's pictures
#: (OSTEOHOOKS_STUDIO_SCREENSHOTS=docs/images), else the test's temporary folder.
SHOTS_ENV = "OSTEOHOOKS_STUDIO_SCREENSHOTS"

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="SKIPPED LOUDLY: pip install playwright to run the studio tests"
)
if not CHROMIUM:
    _why = "no chromium on PATH (apt-get install chromium, as .ci/run does)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # .ci/run must run them
        pytest.fail(f"CI=true: {_why}", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {_why}", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server(studio: Studio) -> Iterator[str]:
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(create_app(studio), host="127.0.0.1", port=port, log_level="error")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started:
        assert time.monotonic() < deadline, "the studio did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page(server: str) -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        _settled(page)
        yield page
        browser.close()


def _settled(page: Any) -> None:
    """Wait until the studio has rendered every answer it asked for: an earlier request
    (the first patient's, a debounced edit's) re-renders the cards and the chart when it
    lands, detaching what a test holds (the flake "Element is not attached to the DOM")."""
    page.wait_for_function("document.body.dataset.busy === '0'")


def _tbs_card(page: Any, column: str) -> Any:
    return page.locator(f"#cards-{column} .card[data-topic='tbs']")


def test_story_threshold_edit_and_typo(page: Any, studio: Studio, tmp_path: Path) -> None:
    shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    if not shots.is_absolute():
        shots = REPO / shots
    shots.mkdir(parents=True, exist_ok=True)
    page.select_option("#patient", STORY)
    _settled(page)
    card = _tbs_card(page, "current")
    card.wait_for()
    assert "Degraded TBS" in card.locator(".summary").inner_text()
    chart = page.locator("#dxa-chart")
    chart.wait_for()
    assert chart.locator("circle.point").count() >= 2  # T-scores and BMD, per site
    assert chart.locator("rect.lsc").count() >= 1
    assert chart.locator("rect.rescan").count() == 2  # shaded on both panels
    page.locator("#chart").screenshot(path=str(shots / "studio-chart.png"))
    page.screenshot(path=str(shots / "studio-story.png"))

    # the guide's threshold edit, typed into the editor: move the women's degraded
    # cut-off below this patient's TBS (1.180), so her TBS is partially degraded
    page.select_option("#rulefile", "tbs.yaml")
    _settled(page)
    page.wait_for_function(
        "document.getElementById('editor').value.includes('tbs_degraded_max_women:')"
    )
    text = page.input_value("#editor")
    old = Decimal(str(studio.evaluator.ruleset.parameters["tbs_degraded_max_women"]))
    block = f"  tbs_degraded_max_women:\n    value: {old.quantize(Decimal('0.001'))}\n"
    assert block in text
    page.fill("#editor", text.replace(block, "  tbs_degraded_max_women:\n    value: 1.170\n"))
    _settled(page)
    edited = _tbs_card(page, "edited")
    edited.wait_for()
    page.wait_for_function(
        "document.querySelector(\"#cards-edited .card[data-topic='tbs'] .summary\")"
        ".textContent.includes('partially degraded')"
    )
    assert "Degraded TBS" in _tbs_card(page, "current").locator(".summary").inner_text()
    assert "changed" in (edited.get_attribute("class") or "")
    unchanged = page.locator("#cards-edited .card[data-topic='bmd-classification']")
    assert "changed" not in (unchanged.get_attribute("class") or "")
    edited.scroll_into_view_if_needed()  # the changed card, not the editor, in the picture
    page.screenshot(path=str(shots / "studio-edit.png"))

    # a typo: the lint error appears with its line, as one types
    typo = page.input_value("#editor").replace("{field: tbs, ", "{field: tbs_score, ", 1)
    line = next(i for i, t in enumerate(typo.splitlines(), 1) if "tbs_score" in t)
    page.fill("#editor", typo)
    _settled(page)
    error = page.locator("#errors li").first
    error.wait_for()
    assert error.inner_text().startswith(f"tbs.yaml:{line}:")
    assert "did you mean 'tbs'?" in error.inner_text()
    assert page.is_disabled("#save")
    page.screenshot(path=str(shots / "studio-lint.png"))


def _shots(tmp_path: Path) -> Path:
    shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    if not shots.is_absolute():
        shots = REPO / shots
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def test_settled_means_every_answer_is_rendered(page: Any) -> None:
    """With every evaluation answered 0.6 s late, and two of them in flight (a patient
    change, then an edit), the page reports itself settled only once the last answer is
    on the screen: the signal the other tests wait on, so it must not come early."""
    import time as _time

    def slow(route: Any) -> None:
        _time.sleep(0.6)
        route.continue_()

    page.route("**/api/evaluate", slow)
    page.select_option("#patient", STORY)
    page.select_option("#rulefile", "tbs.yaml")
    page.wait_for_function("document.getElementById('editor').value.includes('tbs:')")
    assert page.evaluate("document.body.dataset.busy") != "0"  # answers still on their way
    _settled(page)
    # no waiting from here: everything must already be rendered
    assert "Degraded TBS" in page.eval_on_selector(
        "#cards-current .card[data-topic='tbs'] .summary", "e => e.textContent"
    )
    assert page.evaluate("document.getElementById('status').textContent") == ""


def test_parameter_form_moves_the_card_and_saves(page: Any, studio: Studio, tmp_path: Path) -> None:
    page.select_option("#patient", STORY)
    _settled(page)
    _tbs_card(page, "current").wait_for()
    page.select_option("#param", "tbs_degraded_max_women")
    _settled(page)
    spec = studio.evaluator.ruleset.parameter_specs["tbs_degraded_max_women"]
    assert Decimal(page.input_value("#param-value")) == Decimal(str(spec.value))
    assert spec.unit
    assert spec.unit in page.inner_text("#param-unit")
    assert all(e in page.inner_text("#param-info") for e in spec.evidence)
    # a value that is not a number: the error says what to type, no edited cards
    page.fill("#param-value", "1,17")
    _settled(page)
    page.locator("#param-errors li").first.wait_for()
    assert "takes a number" in page.inner_text("#param-errors")
    assert page.is_disabled("#param-save")
    # just below this patient's TBS: her TBS becomes partially degraded
    from tests.studio.test_studio_parameters import _below_patient

    value = _below_patient(studio)
    page.fill("#param-value", value)
    _settled(page)
    page.wait_for_function(
        "document.querySelector(\"#cards-edited .card[data-topic='tbs'] .summary\")"
        "?.textContent.includes('partially degraded')"
    )
    assert page.locator("#param-errors li").count() == 0
    assert "Degraded TBS" in _tbs_card(page, "current").locator(".summary").inner_text()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(_shots(tmp_path) / "studio-parameter.png"))
    page.click("#param-save")
    _settled(page)
    page.wait_for_function("document.getElementById('status').textContent.includes('saved')")
    assert f"    value: {value}\n" in (studio.rules_dir / "tbs.yaml").read_text()
    assert len(list(studio.rules_dir.glob("tbs.yaml.*.bak"))) == 1


def test_feedback_page_shows_the_store(page: Any, studio: Studio, tmp_path: Path) -> None:
    from tests.studio.test_studio_parameters import _seed

    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    _seed(url)
    studio.database_url = url
    page.click("#feedback-load")
    _settled(page)
    row = page.locator("#feedback-table tr[data-rule='tbs.women.degraded']")
    row.wait_for()
    cells = [c.inner_text() for c in row.locator("td").all()]
    assert cells[:6] == ["tbs.women.degraded", "tbs", "2", "1", "1", "50.0%"]
    assert "not-relevant: Not relevant (1)" in cells[6]
    assert "2026-W46" in cells[7]
    page.locator("#feedback").screenshot(path=str(_shots(tmp_path) / "studio-feedback.png"))


def test_impact_panel_shows_the_patients_a_parameter_edit_moves(
    page: Any, studio: Studio, tmp_path: Path
) -> None:
    from tests.studio.test_studio_parameters import _below_patient

    page.select_option("#patient", STORY)
    _settled(page)
    _tbs_card(page, "current").wait_for()
    page.select_option("#param", "tbs_degraded_max_women")
    _settled(page)
    page.fill("#param-value", _below_patient(studio))
    _settled(page)
    page.wait_for_function(
        "document.querySelector(\"#cards-edited .card[data-topic='tbs'] .summary\")"
        "?.textContent.includes('partially degraded')"
    )
    page.click("#impact-run")
    _settled(page)
    page.locator("#impact-table").wait_for()
    summary = page.inner_text("#impact-summary")
    stories = len(list((REPO / "tests" / "fixtures" / "stories").glob("*.json")))
    assert f"of {stories} patients get a different answer" in summary
    row = page.locator("#impact-table tr.impact-group", has_text="tbsCategory")
    assert row.count() == 1
    assert STORY in row.inner_text()
    assert "partially-degraded" in row.inner_text()
    page.locator("#impact").screenshot(path=str(_shots(tmp_path) / "studio-impact.png"))
    # an example patient opens in the page
    page.select_option("#patient", "01-normal-postmenopausal.json")
    _settled(page)
    page.locator(f"#impact a.impact-patient[data-patient='{STORY}']").first.click()
    page.wait_for_function(f"document.getElementById('patient').value === '{STORY}'")
    _tbs_card(page, "current").wait_for()
