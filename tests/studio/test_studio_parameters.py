"""The studio's parameter form, feedback page and impact panel through the HTTP API:
a parameter changed in the form moves the card, bad values are refused with what to
type, saving changes only that value's token (comments and layout kept) with a backup;
the feedback page is `cds feedback report` of the configured store."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette deprecates its httpx-based TestClient
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from cds.feedback_report import build_report
from cds.rules import load_ruleset
from cds.store import AuditRecord, FeedbackItem, IssuedCard, Store
from cds.studio.app import Studio, create_app
from tests.studio.conftest import STORIES, STORY

LOCAL = ("127.0.0.1", 50000)
PARAM = "tbs_degraded_max_women"


@pytest.fixture
def client(studio: Studio) -> TestClient:
    return TestClient(create_app(studio), client=LOCAL)


def _tbs_category(cards: list[dict[str, object]]) -> object:
    [card] = [c for c in cards if c["source"]["topic"]["code"] == "tbs"]  # type: ignore[index]
    return card["extension"]["org.osteohooks"]["tbsCategory"]  # type: ignore[index]


def _below_patient(studio: Studio) -> str:
    """A cut-off just below the story patient's TBS: degraded becomes partially degraded."""
    bundle = json.loads((STORIES / STORY).read_text())
    tbs = next(
        e["resource"]["valueQuantity"]["value"]
        for e in bundle["entry"]
        if e["resource"].get("id", "").endswith("tbs")
    )
    return str(Decimal(str(tbs)) - Decimal("0.001"))


def test_parameters_are_listed_with_unit_evidence_and_where(
    client: TestClient, studio: Studio
) -> None:
    listed = {p["name"]: p for p in client.get("/api/parameters").json()}
    specs = studio.evaluator.ruleset.parameter_specs
    assert set(listed) == set(specs)
    tbs = listed[PARAM]
    assert tbs["unit"] == specs[PARAM].unit
    assert tbs["evidence"] == specs[PARAM].evidence
    assert tbs["description"] == specs[PARAM].description
    line = (studio.rules_dir / tbs["file"]).read_text().splitlines()[tbs["line"] - 1]
    assert line.strip() == f"value: {tbs['value']}"  # as written, e.g. 1.200 not 1.2
    assert Decimal(tbs["value"]) == Decimal(str(specs[PARAM].value))


def test_a_parameter_changed_in_the_form_changes_the_card(
    client: TestClient, studio: Studio
) -> None:
    body = client.post(
        "/api/parameters/evaluate",
        json={"name": STORY, "parameter": PARAM, "value": _below_patient(studio)},
    ).json()
    assert body["errors"] == []
    assert _tbs_category(body["current"]["cards"]) == "degraded"
    assert _tbs_category(body["edited"]["cards"]) == "partially-degraded"


@pytest.mark.parametrize(
    ("parameter", "value", "words"),
    [
        (PARAM, "1,17", "takes a number (TBS)"),
        (PARAM, "1.17 TBS", "no unit"),
        (PARAM, "", "is not one"),
        ("tbs_score_max", "1.0", "is not a parameter of these rules"),
    ],
)
def test_bad_values_are_refused_with_what_to_type(
    client: TestClient, studio: Studio, parameter: str, value: str, words: str
) -> None:
    body = client.post(
        "/api/parameters/evaluate", json={"name": STORY, "parameter": parameter, "value": value}
    ).json()
    assert body["edited"] is None
    [error] = body["errors"]
    assert words in error["message"], error
    before = (studio.rules_dir / "tbs.yaml").read_text()
    saved = client.post("/api/parameters/save", json={"parameter": parameter, "value": value})
    assert saved.status_code == 422
    assert (studio.rules_dir / "tbs.yaml").read_text() == before


def test_a_whole_number_parameter_refuses_decimals(client: TestClient, studio: Studio) -> None:
    specs = studio.evaluator.ruleset.parameter_specs
    name = next(n for n, s in sorted(specs.items()) if type(s.value) is int)
    body = client.post(
        "/api/parameters/evaluate", json={"name": STORY, "parameter": name, "value": "1.5"}
    ).json()
    assert "whole number" in body["errors"][0]["message"]


def test_save_changes_only_the_value_token_with_a_backup(
    client: TestClient, studio: Studio
) -> None:
    path = studio.rules_dir / "tbs.yaml"
    before = path.read_text()
    value = _below_patient(studio)
    saved = client.post("/api/parameters/save", json={"parameter": PARAM, "value": value}).json()
    after = path.read_text()
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    [(old_line, new_line)] = changed  # one line, the rest (comments, layout) as written
    assert new_line == old_line.split("value:")[0] + f"value: {value}"
    assert (studio.rules_dir / saved["backup"]).read_text() == before
    reloaded = load_ruleset(studio.rules_dir).parameters[PARAM]
    assert Decimal(str(reloaded)) == Decimal(value)
    assert Decimal(str(studio.evaluator.ruleset.parameters[PARAM])) == Decimal(value)


def _seed(url: str) -> None:
    store = Store(url)
    at = datetime(2026, 11, 10, 9, tzinfo=UTC)
    for n, rule in enumerate(["tbs.women.degraded", "tbs.women.degraded", "workup.labs"]):
        store.record(
            AuditRecord(
                service="bmd-patient-view",
                hook="patient-view",
                hook_instance=f"hi-{n}",
                ruleset_version="v1",
                status=200,
                rules_fired=[rule],
                cards=[IssuedCard(f"c{n}", rule, rule.split(".")[0])],
                latency_ms=1.0,
                at=at,
            )
        )
    store.flush()
    store.store_feedback(
        "bmd-patient-view",
        [
            FeedbackItem(card="c0", outcome="accepted", outcome_timestamp=at),
            FeedbackItem(
                card="c1",
                outcome="overridden",
                outcome_timestamp=at,
                override_system="http://example.org/reasons",
                override_code="not-relevant",
                override_display="Not relevant",
            ),
        ],
    )
    store.close()


def test_feedback_page_is_the_report_of_the_configured_store(
    studio: Studio, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    _seed(url)
    studio.database_url = url
    client = TestClient(create_app(studio), client=LOCAL)
    page = client.get("/api/feedback").json()
    assert page["rules"] == build_report(url).as_dict()["rules"]  # one implementation
    assert page["store"] == url
    later = client.get("/api/feedback", params={"since": "2026-12-01"}).json()
    assert all(r["issued"] == 0 for r in later["rules"])


def test_feedback_errors_say_what_to_do(studio: Studio, tmp_path: Path) -> None:
    client = TestClient(create_app(studio), client=LOCAL)
    studio.database_url = None
    assert "--database-url" in client.get("/api/feedback").json()["detail"]
    studio.database_url = f"sqlite:///{tmp_path / 'empty.db'}"
    response = client.get("/api/feedback")
    assert response.status_code == 422
    assert "OSTEOHOOKS_DATABASE_URL" in response.json()["detail"]
    bad = client.get("/api/feedback", params={"since": "last week"})
    assert (bad.status_code, "YYYY-MM-DD" in bad.json()["detail"]) == (422, True)


def test_impact_of_a_parameter_edit_names_the_patients_it_moves(
    client: TestClient, studio: Studio
) -> None:
    value = _below_patient(studio)
    response = client.post("/api/impact", json={"parameter": PARAM, "value": value})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"] == []
    impact = body["impact"]
    assert impact["inputs"] == len(list(STORIES.glob("*.json")))
    [group] = [
        g
        for g in impact["groups"]
        if g["kind"] == "payload-changed" and g["field"] == "tbsCategory"
    ]
    patients = {e["patient"]: e for e in group["examples"]}
    assert STORY in patients
    assert (patients[STORY]["before"], patients[STORY]["after"]) == (
        _tbs_category(
            client.post("/api/evaluate", json={"name": STORY}).json()["current"]["cards"]
        ),
        _tbs_category(
            client.post(
                "/api/parameters/evaluate", json={"name": STORY, "parameter": PARAM, "value": value}
            ).json()["edited"]["cards"]
        ),
    )
    assert impact["byTopic"]["tbs"] >= group["patients"] >= 1
    # nothing was written: the rules folder is as it was
    assert load_ruleset(studio.rules_dir).parameters[PARAM] != float(value)


def test_impact_without_an_edit_changes_nothing(client: TestClient) -> None:
    impact = client.post("/api/impact", json={}).json()["impact"]
    assert (impact["changed"], impact["groups"]) == (0, [])
    assert impact["unchanged"] == impact["inputs"] > 0


def test_impact_of_an_edit_that_does_not_lint_gives_the_errors(
    client: TestClient, studio: Studio
) -> None:
    text = (studio.rules_dir / "tbs.yaml").read_text(encoding="utf-8")
    broken = (
        text.replace("tbs_score", "tbs_scor", 1) if "tbs_score" in text else text + "\nbad: [\n"
    )
    body = client.post("/api/impact", json={"edits": {"tbs.yaml": broken}}).json()
    assert body["impact"] is None
    assert body["errors"]
    assert all(e["file"] == "tbs.yaml" for e in body["errors"])
    bad_value = client.post("/api/impact", json={"parameter": PARAM, "value": "high"}).json()
    assert bad_value["impact"] is None
    assert bad_value["errors"]


def test_impact_needs_a_data_folder(studio: Studio) -> None:
    studio.data_dir = None
    client = TestClient(create_app(studio), client=LOCAL)
    response = client.post("/api/impact", json={})
    assert response.status_code == 422
    assert "--data DIR" in response.json()["detail"]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("  p:\n    value: 1.200  # verify\n    unit: TBS\n", "  p:\n    value: 1.25  # verify\n"),
        ("  p: {value: 1.200, unit: TBS}\n", "  p: {value: 1.25, unit: TBS}\n"),
        ("  p: {unit: TBS, value: 1.200}\n", "  p: {unit: TBS, value: 1.25}\n"),
    ],
)
def test_the_value_token_is_replaced_in_block_and_flow_style(
    tmp_path: Path, written: str, expected: str
) -> None:
    from cds.rules.model import Parameter
    from cds.studio.parameters import locate, set_value

    text = "# comment kept\nparameters:\n" + written
    (tmp_path / "x.yaml").write_text(text)
    where = locate(tmp_path, "p")
    new = set_value(text, where, "p", Parameter(value=1.2, unit="TBS"), "1.25")
    assert new.startswith("# comment kept\nparameters:\n" + expected)
    assert len(new.splitlines()) == len(text.splitlines())
