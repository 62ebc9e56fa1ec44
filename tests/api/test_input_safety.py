"""Client input that used to answer 500, through HTTP with the bundled rules: lone UTF-16
surrogates, integers beyond Python's 4,300 digits, extreme numbers and dates, duplicate
draft orders, feedback timestamps at the ends of the calendar. Each is a 400/422
OperationOutcome or cards from the rest, and the audit records the status sent."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cds.api import create_app
from cds.engine import _encode
from cds.pipeline import Evaluator
from cds.settings import Settings
from tests.api.conftest import TestClient
from tests.api.test_end_to_end import AS_OF, SERVICE, STORIES, as_request

ROOT = Path(__file__).resolve().parents[2]
ORDER_SIGN = "40-order-sign-too-soon-prednisone.json"  # order-sign, Device, prednisone
DENOSUMAB = "05-denosumab-stopped-9-months.json"  # MedicationStatement with a period
Z_SCORE = "07-premenopausal-low-z.json"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("input") / "input.db"
    settings = Settings(
        auth="none", database_url=f"sqlite:///{db}", as_of=date.fromisoformat(AS_OF)
    )
    app = create_app(settings, Evaluator.from_rules_dir(ROOT / "rules"))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def story(name: str) -> dict[str, Any]:
    return as_request(json.loads((STORIES / name).read_text()))


def post(client: TestClient, request: dict[str, Any], raw: bytes | None = None) -> Any:
    body = raw if raw is not None else json.dumps(request).encode()
    return client.post(
        f"/cds-services/{SERVICE[request['hook']]}",
        content=body,
        headers={"content-type": "application/json"},
    )


def entries(request: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in request["prefetch"][key]["entry"]]


def outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


SURROGATE_FIELDS: list[tuple[str | int, ...]] = [
    ("context", "userId"),
    ("hookInstance",),
    ("prefetch", "patient", "gender"),
    ("prefetch", "patient", "birthDate"),
    ("prefetch", "observations", "entry", 0, "resource", "manufacturer"),
    ("prefetch", "observations", "entry", 0, "resource", "deviceName", 0, "name"),
    ("prefetch", "observations", "entry", 1, "resource", "id"),
    ("prefetch", "observations", "entry", 1, "resource", "effectiveDateTime"),
    ("prefetch", "observations", "entry", 1, "resource", "device", "reference"),
    ("prefetch", "observations", "entry", 1, "resource", "code", "coding", 0, "code"),
    ("prefetch", "observations", "entry", 1, "resource", "valueQuantity", "unit"),
    ("context", "draftOrders", "entry", 0, "resource", "authoredOn"),
    ("context", "draftOrders", "entry", 0, "resource", "code", "text"),
]


@pytest.mark.parametrize("path", SURROGATE_FIELDS, ids=lambda p: ".".join(map(str, p)))
@pytest.mark.parametrize("text", ["\ud800", "scan \udfff", "\udc00\ud800"])
def test_a_lone_surrogate_anywhere_is_a_400_naming_the_element(
    client: TestClient, path: tuple[Any, ...], text: str
) -> None:
    request = story(ORDER_SIGN)
    parent: Any = request
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = text
    body = outcome(post(client, request), 400)
    assert "surrogate" in body["issue"][0]["diagnostics"]
    expected = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)[1:]
    assert body["issue"][0]["expression"] == [expected]


def test_a_lone_surrogate_in_a_key_is_a_400(client: TestClient) -> None:
    request = story(ORDER_SIGN)
    request["context"]["\ud800"] = 1
    outcome(post(client, request), 400)


def test_a_surrogate_pair_is_text_and_answered(client: TestClient) -> None:
    request = story(ORDER_SIGN)
    request["context"]["draftOrders"]["entry"][0]["resource"]["code"]["text"] = "DXA \U0001f9b4"
    assert post(client, request).status_code == 200


@pytest.mark.parametrize("where", ["value", "total"])
def test_an_integer_of_4301_digits_is_a_400(client: TestClient, where: str) -> None:
    request = story(ORDER_SIGN)
    marker = "HUGE-INTEGER"
    if where == "value":
        entries(request, "observations")[1]["valueQuantity"]["value"] = marker
    else:
        request["prefetch"]["observations"]["total"] = marker
    raw = json.dumps(request).replace(json.dumps(marker), "1" + "0" * 4300).encode()
    body = outcome(post(client, request, raw), 400)
    assert "4300 digits" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("value", [1e-07, 5e-324, -5e-324, 1e18, -1e18, 1e300])
def test_extreme_scores_are_answered(client: TestClient, value: float) -> None:
    request = story(Z_SCORE)
    for resource in entries(request, "observations"):
        if "valueQuantity" in resource:
            resource["valueQuantity"]["value"] = value
    response = post(client, request)
    assert response.status_code in (200, 422), response.text
    assert ("cards" in response.json()) == (response.status_code == 200)


@pytest.mark.parametrize("dose", [1e16, 1e18, 1e-07, 5e-324])
def test_extreme_prednisone_doses_are_answered_with_cards(client: TestClient, dose: float) -> None:
    request = story(ORDER_SIGN)
    doses = 0
    for resource in entries(request, "medicationStatements"):
        for dosage in resource.get("dosage", []):
            for rate in dosage.get("doseAndRate", []):
                rate["doseQuantity"]["value"] = dose
                doses += 1
    assert doses
    response = post(client, request)
    assert response.status_code == 200, response.text
    assert response.json()["cards"]


def test_numbers_with_an_exponent_reach_the_engine_with_a_fraction() -> None:
    text = _encode([{"a": 1e16, "b": 1e-07, "c": 5e-324, "d": -1e18, "e": 1.5e20, "f": 2}])
    assert json.loads(text) == [
        {"a": 1e16, "b": 1e-07, "c": 5e-324, "d": -1e18, "e": 1.5e20, "f": 2}
    ]
    for written in ("1.0e+16", "1.0e-7", "5.0e-324", "-1.0e+18", "1.5e+20"):
        assert written in text
    # text inside strings is never rewritten
    assert json.loads(_encode({"s": '1e5 "2e3" \\ 3e4'})) == {"s": '1e5 "2e3" \\ 3e4'}


@pytest.mark.parametrize("end", ["9999-12-31", "9999-12-31T23:59:59Z", "9999-12"])
def test_a_medication_ending_in_year_9999_is_answered(client: TestClient, end: str) -> None:
    request = story(DENOSUMAB)
    changed = 0
    for key in ("medicationStatements", "medicationRequests", "medicationAdministrations"):
        if request["prefetch"].get(key):
            for resource in entries(request, key):
                if "effectivePeriod" in resource:
                    resource["effectivePeriod"]["end"] = end
                    changed += 1
    assert changed
    response = post(client, request)
    assert response.status_code == 200, response.text
    assert response.json()["cards"]


def test_the_same_draft_order_twice_is_a_400(client: TestClient) -> None:
    request = story(ORDER_SIGN)
    orders = request["context"]["draftOrders"]["entry"]
    orders.append(copy.deepcopy(orders[0]))
    body = outcome(post(client, request), 400)
    assert "again" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("timestamp", "status"),
    [
        ("0001-01-01T00:00:00Z", 200),
        ("9999-12-31T23:59:59Z", 200),
        ("0001-01-01T00:00:00+14:00", 400),
        ("9999-12-31T23:59:59-12:00", 400),
        ("9999-12-31T23:59:59.999999-14:00", 400),
    ],
)
def test_feedback_at_the_ends_of_the_calendar(
    client: TestClient, timestamp: str, status: int
) -> None:
    item = {
        "card": f"a0d1f7a4-5a8a-4c5e-9d8e-{abs(hash(timestamp)) % 10**12:012d}",
        "outcome": "overridden",
        "outcomeTimestamp": timestamp,
    }
    response = client.post("/cds-services/bmd-patient-view/feedback", json={"feedback": [item]})
    assert response.status_code == status, response.text
    if status != 200:
        outcome(response, status)


def test_the_audit_records_the_status_the_client_got(client: TestClient) -> None:
    store = client.app.state.service.store  # type: ignore[attr-defined]
    answered = story(ORDER_SIGN)
    answered["hookInstance"] = "a0d1f7a4-5a8a-4c5e-9d8e-00000000a001"
    assert post(client, answered).status_code == 200
    refused = story(ORDER_SIGN)
    refused["hookInstance"] = "a0d1f7a4-5a8a-4c5e-9d8e-00000000a002"
    del refused["prefetch"]["patient"]["birthDate"]
    assert post(client, refused).status_code == 422
    assert [r.status for r in store.audit_rows(answered["hookInstance"])] == [200]
    assert [r.status for r in store.audit_rows(refused["hookInstance"])] == [422]
