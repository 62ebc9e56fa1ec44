"""Every HL7 CDS Hooks invariant as a test: the checker catches each violation, and the
service never sends a card that breaks one (it answers 500 instead)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import FakeEvaluator, TestClient, card, patient_view_request
from tests.api.invariants import card_violations, feedback_violations, request_violations

PV = "/cds-services/bmd-patient-view"


def suggestion(recommended: bool = False, **action: Any) -> dict[str, Any]:
    act = {
        "type": "create",
        "description": "Order a DXA",
        "resource": {"resourceType": "ServiceRequest"},
    }
    act.update(action)
    out: dict[str, Any] = {"label": "Order DXA", "uuid": "s-1", "actions": [act]}
    if recommended:
        out["isRecommended"] = True
    return out


def with_(**fields: Any) -> dict[str, Any]:
    out = card()
    out.update(fields)
    return out


BROKEN: dict[str, dict[str, Any]] = {
    "cds-resp-1": with_(
        suggestions=[suggestion(True), suggestion(True)], selectionBehavior="at-most-one"
    ),
    "cds-resp-2": with_(
        suggestions=[suggestion(type="delete", resource={"resourceType": "ServiceRequest"})],
        selectionBehavior="any",
    ),
    "cds-resp-3": with_(
        links=[{"label": "x", "url": "https://x.example", "type": "absolute", "appContext": "a"}]
    ),
    "cds-resp-4": with_(overrideReasons=[{"code": "c", "system": "https://s.example"}]),
    "cds-resp-5": with_(suggestions=[suggestion(description="")], selectionBehavior="any"),
    "cds-resp-6": with_(suggestions=[suggestion()]),
    "cds-resp-7": with_(suggestions=[suggestion()], selectionBehavior="some"),
}


@pytest.mark.parametrize("invariant", sorted(BROKEN))
def test_checker_catches_each_card_invariant(invariant: str) -> None:
    assert invariant in card_violations(BROKEN[invariant])
    assert card_violations(card()) == []


@pytest.mark.parametrize("invariant", sorted(BROKEN))
def test_service_never_sends_a_card_breaking_an_invariant(
    make_client: Callable[..., TestClient], invariant: str
) -> None:
    client = make_client(FakeEvaluator(cards=[copy.deepcopy(BROKEN[invariant])]))
    response = client.post(PV, json=patient_view_request())
    assert response.status_code == 500
    assert response.json()["resourceType"] == "OperationOutcome"


def test_service_sends_a_card_that_keeps_every_invariant(
    make_client: Callable[..., TestClient],
) -> None:
    good = with_(
        suggestions=[suggestion(True), suggestion()],
        selectionBehavior="at-most-one",
        overrideReasons=[
            {"code": "c", "system": "https://s.example", "display": "Patient declined"}
        ],
        links=[
            {
                "label": "App",
                "url": "https://app.example/launch",
                "type": "smart",
                "appContext": "x",
            }
        ],
    )
    response = make_client(FakeEvaluator(cards=[good])).post(PV, json=patient_view_request())
    assert response.status_code == 200
    (sent,) = response.json()["cards"]
    assert card_violations(sent) == []


def test_cds_r_1_and_r_2_checker_and_service(client: TestClient) -> None:
    auth = {
        "access_token": "t",
        "token_type": "Bearer",
        "expires_in": 60,
        "scope": "patient/Observation.read",
        "subject": "s",
    }
    r1 = patient_view_request(fhirAuthorization=auth)
    assert "cds-r-1" in request_violations(r1)
    assert client.post(PV, json=r1).status_code == 400  # error severity: refused
    r2 = patient_view_request(fhirAuthorization=auth, fhirServer="https://fhir.example.org")
    assert request_violations(r2) == ["cds-r-2"]
    assert client.post(PV, json=r2).status_code == 200  # warning severity: accepted, logged
    fixed = copy.deepcopy(r2)
    fixed["fhirAuthorization"]["patient"] = "pat-1"
    assert request_violations(fixed) == []


@pytest.mark.parametrize(
    ("item", "invariant"),
    [
        (
            {"card": "c", "outcome": "dismissed", "outcomeTimestamp": "2026-01-01T00:00:00Z"},
            "cds-fb-1",
        ),
        (
            {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"},
            "cds-fb-2",
        ),
        (
            {
                "card": "c",
                "outcome": "overridden",
                "overrideReason": {},
                "outcomeTimestamp": "2026-01-01T00:00:00Z",
            },
            "cds-fb-3",
        ),
    ],
)
def test_feedback_invariants_checker_and_service(
    client: TestClient, item: dict[str, Any], invariant: str
) -> None:
    assert feedback_violations(item) == [invariant]
    response = client.post(f"{PV}/feedback", json={"feedback": [item]})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
