"""End to end through HTTP with the real pipeline and the bundled rules: the clinical
stories (tests/fixtures/stories) as CDS Hooks calls."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.api import create_app
from cds.contracts.cards import dump_cards
from cds.pipeline import EvaluationInput, Evaluator
from cds.settings import Settings
from tests.api.conftest import TestClient
from tests.api.invariants import card_violations

ROOT = Path(__file__).resolve().parents[2]
STORIES = ROOT / "tests" / "fixtures" / "stories"
ORACLE = json.loads((ROOT / "tests" / "stories" / "oracle.json").read_text())
AS_OF = ORACLE["asOf"]
SERVICE = {
    "patient-view": "bmd-patient-view",
    "order-select": "bmd-order-select",
    "order-sign": "bmd-order-sign",
}
KEY_OF_TYPE = {
    "Patient": "patient",
    "Condition": "conditions",
    "Procedure": "procedures",
    "MedicationStatement": "medicationStatements",
    "MedicationRequest": "medicationRequests",
    "MedicationAdministration": "medicationAdministrations",
}


def as_request(story: dict[str, Any]) -> dict[str, Any]:
    """A story Bundle becomes a patient-view call with every prefetch key filled."""
    if story.get("resourceType") != "Bundle":
        return story
    searches: dict[str, list[dict[str, Any]]] = {
        k: [] for k in KEY_OF_TYPE.values() if k != "patient"
    }
    searches["observations"] = []
    patient: dict[str, Any] | None = None
    for entry in story.get("entry", []):
        resource = entry["resource"]
        key = KEY_OF_TYPE.get(resource["resourceType"], "observations")  # Devices ride along
        if key == "patient":
            patient = resource
        else:
            searches[key].append({"resource": resource})
    assert patient is not None
    prefetch: dict[str, Any] = {"patient": patient}
    for key, entries in searches.items():
        prefetch[key] = (
            {"resourceType": "Bundle", "type": "searchset", "entry": entries} if entries else None
        )
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/qa", "patientId": patient["id"]},
        "prefetch": prefetch,
    }


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator.from_rules_dir(ROOT / "rules")


@pytest.fixture(scope="module")
def real_client(
    evaluator: Evaluator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("e2e") / "e2e.db"
    settings = Settings(
        auth="none", database_url=f"sqlite:///{db}", as_of=date.fromisoformat(AS_OF)
    )
    with TestClient(create_app(settings, evaluator), raise_server_exceptions=False) as client:
        yield client


def without_uuids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [without_uuids(v) for v in value]
    return value


def resources_of(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in request.get("prefetch", {}).values() if v is not None]


@pytest.mark.parametrize("name", sorted(ORACLE["stories"]))
def test_story_over_http_matches_the_pipeline_and_keeps_the_invariants(
    real_client: TestClient, evaluator: Evaluator, name: str
) -> None:
    story = json.loads((STORIES / name).read_text())
    request = as_request(story)
    hook = request["hook"]
    assert hook == ORACLE["stories"][name]["hook"]
    response = real_client.post(f"/cds-services/{SERVICE[hook]}", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    cards = body["cards"]
    for card in cards:
        assert card_violations(card) == [], (name, card)
        assert card["extension"]["org.osteohooks"]["rulesetVersion"] == evaluator.ruleset_version
    # the HTTP layer hands the pipeline exactly what the request holds
    context = request["context"]
    direct = evaluator.evaluate(
        EvaluationInput(
            hook=hook,
            resources=resources_of(request),
            as_of=date.fromisoformat(AS_OF),
            patient_id=context["patientId"],
            draft_orders=[e["resource"] for e in context.get("draftOrders", {}).get("entry", [])],
            selections=context.get("selections", []),
        )
    )
    assert without_uuids(cards) == without_uuids(dump_cards(direct.cards))
    topics = {c["source"]["topic"]["code"] for c in cards}
    assert set(ORACLE["stories"][name]["expect"]) <= topics
    outcome = body.get("extension", {}).get("org.osteohooks", {}).get("outcome")
    assert (outcome is not None) == (direct.outcome is not None)


def test_no_usable_patient_is_422_with_the_pipelines_outcome(real_client: TestClient) -> None:
    request = as_request(json.loads((STORIES / "01-normal-postmenopausal.json").read_text()))
    del request["prefetch"]["patient"]["birthDate"]
    response = real_client.post("/cds-services/bmd-patient-view", json=request)
    assert response.status_code == 422
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert any("birth" in i.get("diagnostics", "").lower() for i in body["issue"])


def test_feedback_on_a_real_card_records_its_rule_and_topic(real_client: TestClient) -> None:
    request = as_request(json.loads((STORIES / "03-t-boundary-minus-2-5.json").read_text()))
    cards = real_client.post("/cds-services/bmd-patient-view", json=request).json()["cards"]
    target = next(c for c in cards if c["source"]["topic"]["code"] == "bmd-classification")
    item = {
        "card": target["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-23T12:00:00Z",
    }
    assert (
        real_client.post(
            "/cds-services/bmd-patient-view/feedback", json={"feedback": [item]}
        ).status_code
        == 200
    )
    store = real_client.app.state.service.store  # type: ignore[attr-defined]
    row = next(r for r in store.feedback_rows() if r.card_uuid == target["uuid"])
    assert row.topic == "bmd-classification"
    assert row.rule == target["extension"]["org.osteohooks"]["rule"]
    audit = store.audit_rows(request["hookInstance"])[0]
    assert row.rule in audit.rules_fired


ODD_VALUES = [None, "", "x", -1, 0, 1e308, True, [], {}, [1], {"a": 1}, "2026-13-45", "-2.5"]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(_paths(item, (*prefix, index)))
    return out


@st.composite
def damaged_stories(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(ORACLE["stories"])))
    request = as_request(json.loads((STORIES / name).read_text()))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(request["prefetch"])))
        parent: Any = request["prefetch"]
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
    return request


@given(damaged_stories())
def test_damaged_fhir_data_never_5xx_with_the_real_pipeline(
    real_client: TestClient, request: dict[str, Any]
) -> None:
    service = SERVICE[request["hook"]]
    response = real_client.post(f"/cds-services/{service}", json=request)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert response.json()["resourceType"] == "OperationOutcome"
    else:
        for card in response.json()["cards"]:
            assert card_violations(card) == []
