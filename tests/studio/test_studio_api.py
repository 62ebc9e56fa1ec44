"""The studio's HTTP API: patients, cards as the EHR gets them, explain, edits evaluated
on a copy with lint errors at their line, saving with a backup, loopback only."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette deprecates its httpx-based TestClient
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from cds.rules import load_ruleset
from cds.studio.app import Studio, create_app
from tests.studio.conftest import STORIES, STORY

LOCAL = ("127.0.0.1", 50000)


@pytest.fixture
def client(studio: Studio) -> TestClient:
    return TestClient(create_app(studio), client=LOCAL)


def _tbs(cards: list[dict[str, Any]]) -> dict[str, Any]:
    [card] = [c for c in cards if c["source"]["topic"]["code"] == "tbs"]
    return card


def _moved(text: str, studio: Studio, delta: str) -> str:
    """rules/tbs.yaml with the women's degraded cut-off moved by `delta`."""
    old = Decimal(str(studio.evaluator.ruleset.parameters["tbs_degraded_max_women"]))
    block = f"  tbs_degraded_max_women:\n    value: {old.quantize(Decimal('0.001'))}\n"
    assert block in text
    new = (old + Decimal(delta)).quantize(Decimal("0.001"))
    return text.replace(block, f"  tbs_degraded_max_women:\n    value: {new}\n")


def _first_value(text: str) -> str:
    return text.split("tbs_degraded_max_women:\n    value: ")[1].split("\n")[0]


def test_state_lists_patients_and_rule_files(client: TestClient) -> None:
    state = client.get("/api/state").json()
    assert STORY in state["patients"]
    assert len(state["patients"]) == len(list(STORIES.glob("*.json")))
    assert "tbs.yaml" in state["ruleFiles"]


def test_cards_and_explain_of_a_story(client: TestClient) -> None:
    data = client.post("/api/evaluate", json={"name": STORY}).json()
    card = _tbs(data["current"]["cards"])
    assert card["extension"]["org.osteohooks"]["tbsCategory"] == "degraded"
    assert "<strong>degraded</strong>" in card["detailHtml"]  # markdown rendered
    explain = data["current"]["explain"]
    assert any(f["type"] == "assessment" and f["sources"] for f in explain["facts"])
    assert any(r["rule"].startswith("tbs.") for r in explain["fired"])
    assert data["edited"] is None


def test_a_pasted_bundle_is_evaluated(client: TestClient) -> None:
    bundle = json.loads((STORIES / STORY).read_text())
    data = client.post("/api/evaluate", json={"pasted": bundle}).json()
    assert _tbs(data["current"]["cards"])["summary"]


def test_an_edit_changes_the_card_beside_the_current_one(
    client: TestClient, studio: Studio
) -> None:
    text = client.get("/api/rules/tbs.yaml").json()["text"]
    bundle = json.loads((STORIES / STORY).read_text())
    tbs_value = next(
        e["resource"]["valueQuantity"]["value"]
        for e in bundle["entry"]
        if e["resource"].get("id", "").endswith("tbs")
    )
    # move the cut-off just below this patient's TBS: degraded becomes partially degraded
    below = Decimal(str(tbs_value)) - Decimal("0.001")
    old = Decimal(str(studio.evaluator.ruleset.parameters["tbs_degraded_max_women"]))
    edited = _moved(text, studio, str(below - old))
    data = client.post("/api/evaluate", json={"name": STORY, "edits": {"tbs.yaml": edited}})
    body = data.json()
    assert body["errors"] == [], body["errors"]
    current = _tbs(body["current"]["cards"])["extension"]["org.osteohooks"]["tbsCategory"]
    new = _tbs(body["edited"]["cards"])["extension"]["org.osteohooks"]["tbsCategory"]
    assert (current, new) == ("degraded", "partially-degraded")


def test_lint_errors_come_with_their_line(client: TestClient) -> None:
    text = client.get("/api/rules/tbs.yaml").json()["text"]
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "{field: tbs, " in t)
    broken = text.replace("{field: tbs, ", "{field: tbs_score, ", 1)
    [error] = client.post("/api/lint", json={"tbs.yaml": broken}).json()["errors"]
    assert (error["file"], error["line"]) == ("tbs.yaml", line)
    assert "did you mean 'tbs'?" in error["message"]
    data = client.post("/api/evaluate", json={"name": STORY, "edits": {"tbs.yaml": broken}})
    assert data.json()["edited"] is None
    assert data.json()["errors"] == [error]


def test_save_writes_the_file_with_a_backup(client: TestClient, studio: Studio) -> None:
    path = studio.rules_dir / "tbs.yaml"
    before = path.read_text()
    edited = _moved(before, studio, "0.010")
    saved = client.post("/api/save", json={"file": "tbs.yaml", "text": edited}).json()
    assert path.read_text() == edited
    assert (studio.rules_dir / saved["backup"]).read_text() == before
    moved = Decimal(str(load_ruleset(studio.rules_dir).parameters["tbs_degraded_max_women"]))
    assert Decimal(str(studio.evaluator.ruleset.parameters["tbs_degraded_max_women"])) == moved
    assert moved == Decimal(str(_first_value(before))) + Decimal("0.010")


def test_save_refuses_broken_rules_and_paths_outside_the_rules_folder(
    client: TestClient, studio: Studio
) -> None:
    path = studio.rules_dir / "tbs.yaml"
    before = path.read_text()
    response = client.post("/api/save", json={"file": "tbs.yaml", "text": before + "\tx"})
    assert response.status_code == 422
    assert path.read_text() == before
    for name in ("../pyproject.toml", "evidence.json", "new.yaml"):
        assert client.post("/api/save", json={"file": name, "text": "x"}).status_code == 404
    assert not list(studio.rules_dir.glob("*.bak"))


def test_only_loopback_is_answered(studio: Studio) -> None:
    remote = TestClient(create_app(studio), client=("192.0.2.7", 40000))
    assert remote.get("/api/state").status_code == 403


def test_dxa_history_per_site_with_lsc_and_rescan_window(
    client: TestClient, studio: Studio
) -> None:
    name = "25-change-exactly-lsc.json"
    data = client.post("/api/evaluate", json={"name": name}).json()["current"]
    history = data["history"]
    spine_bmd = [
        p for p in history["points"] if p["site"] == "lumbar-spine" and p["score"] == "BMD"
    ]
    assert len(spine_bmd) >= 2  # two scans to compare
    assert [p["date"] for p in spine_bmd] == sorted(p["date"] for p in spine_bmd)
    bundle = json.loads((STORIES / name).read_text())
    reported = {
        str(Decimal(str(e["resource"]["valueQuantity"]["value"])))
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation" and "valueQuantity" in e["resource"]
    }
    assert {p["value"] for p in spine_bmd} <= reported  # exact values, as reported
    params = studio.evaluator.ruleset.parameters
    assert history["lsc"]["lumbar-spine"] == params["lsc_lumbar_spine_percent"]
    [rescan] = [
        c["extension"]["org.osteohooks"]
        for c in data["cards"]
        if c["source"]["topic"]["code"] == "rescan-interval"
    ]
    assert history["rescan"] == {"from": rescan["dueFrom"], "to": rescan["dueTo"]}
