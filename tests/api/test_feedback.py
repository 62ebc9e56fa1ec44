"""Feedback endpoint (CDS Hooks 2.0.1 Feedback; invariants cds-fb-1..3) and its store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import FakeEvaluator, TestClient, card, patient_view_request

PV = "/cds-services/bmd-patient-view"
FB = f"{PV}/feedback"


def accepted(card_uuid: str, **extra: Any) -> dict[str, Any]:
    item = {
        "card": card_uuid,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": str(uuid.uuid4())}],
        "outcomeTimestamp": "2026-11-23T10:05:31Z",
    }
    item.update(extra)
    return item


def overridden(card_uuid: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "card": card_uuid,
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-23T10:05:31.52Z",
    }
    item.update(extra)
    return item


def issued_card(client: TestClient) -> str:
    response = client.post(PV, json=patient_view_request())
    assert response.status_code == 200
    return str(response.json()["cards"][0]["uuid"])


def test_feedback_is_stored_with_the_cards_rule_and_topic(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(FakeEvaluator(cards=[card(topic="workup", rule="workup.labs")]))
    card_uuid = issued_card(client)
    reason = {
        "reason": {
            "code": "patient-refused",
            "system": "https://ehr.example/override",
            "display": "Patient refused",
        },
        "userComment": "Discussed, prefers to wait",
    }
    response = client.post(FB, json={"feedback": [overridden(card_uuid, overrideReason=reason)]})
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 1, "duplicates": 0}
    (row,) = client.app.state.service.store.feedback_rows()  # type: ignore[attr-defined]
    assert (row.card_uuid, row.rule, row.topic, row.outcome) == (
        card_uuid,
        "workup.labs",
        "workup",
        "overridden",
    )
    assert (row.override_code, row.override_display) == ("patient-refused", "Patient refused")
    assert row.user_comment == "Discussed, prefers to wait"
    assert row.service == "bmd-patient-view"


def test_feedback_is_idempotent_per_card(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    card_uuid = issued_card(client)
    item = accepted(card_uuid)
    assert client.post(FB, json={"feedback": [item]}).json() == {"stored": 1, "duplicates": 0}
    assert client.post(FB, json={"feedback": [item, item]}).json() == {"stored": 0, "duplicates": 2}
    later = accepted(card_uuid, outcomeTimestamp="2026-11-23T11:00:00Z")
    assert client.post(FB, json={"feedback": [later]}).json() == {"stored": 1, "duplicates": 0}
    assert len(client.app.state.service.store.feedback_rows()) == 2  # type: ignore[attr-defined]


def test_feedback_for_an_unknown_card_is_kept_without_rule(client: TestClient) -> None:
    response = client.post(FB, json={"feedback": [overridden("not-issued-here")]})
    assert response.status_code == 200
    (row,) = client.app.state.service.store.feedback_rows()  # type: ignore[attr-defined]
    assert row.rule is None
    assert row.topic is None


def test_several_cards_in_one_post(make_client: Callable[..., TestClient]) -> None:
    client = make_client(FakeEvaluator(cards=[card(), card(topic="tbs", rule="tbs.degraded")]))
    cards = client.post(PV, json=patient_view_request()).json()["cards"]
    items = [overridden(c["uuid"]) for c in cards]
    assert client.post(FB, json={"feedback": items}).json() == {"stored": 2, "duplicates": 0}
    topics = sorted(r.topic for r in client.app.state.service.store.feedback_rows())  # type: ignore[attr-defined]
    assert topics == ["bmd-classification", "tbs"]


@pytest.mark.parametrize(
    ("item", "invariant"),
    [
        (overridden("c", outcome="ignored"), "outcome"),  # cds-fb-1
        (overridden("c", outcome="Accepted"), "outcome"),  # cds-fb-1
        (accepted("c", acceptedSuggestions=None), "cds-fb-2"),
        (accepted("c", acceptedSuggestions=[]), "acceptedSuggestions"),  # cds-fb-2: exists
        ({k: v for k, v in accepted("c").items() if k != "acceptedSuggestions"}, "cds-fb-2"),
        (overridden("c", overrideReason={}), "cds-fb-3"),
        (overridden("c", overrideReason={"reason": {"code": "x"}}), "system"),
        (overridden("c", outcomeTimestamp="yesterday"), "outcomeTimestamp"),
        (overridden("c", outcomeTimestamp="2026-11-23T10:00:00"), "time zone"),
        ({k: v for k, v in overridden("c").items() if k != "outcomeTimestamp"}, "outcomeTimestamp"),
        ({k: v for k, v in overridden("c").items() if k != "card"}, "card"),
        (overridden(""), "card"),
    ],
)
def test_invalid_feedback_is_400_naming_the_rule(
    client: TestClient, item: dict[str, Any], invariant: str
) -> None:
    item = {k: v for k, v in item.items() if v is not None}
    response = client.post(FB, json={"feedback": [item]})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert invariant in json.dumps(body)
    assert client.app.state.service.store.feedback_rows() == []  # type: ignore[attr-defined]


def test_cds_fb_3_user_comment_alone_is_enough(client: TestClient) -> None:
    item = overridden("c", overrideReason={"userComment": "not relevant today"})
    assert client.post(FB, json={"feedback": [item]}).status_code == 200


@pytest.mark.parametrize("body", [{}, {"feedback": []}, {"feedback": "x"}, []])
def test_feedback_body_shape(client: TestClient, body: Any) -> None:
    assert client.post(FB, json=body).status_code == 400


def test_feedback_for_unknown_service_is_404(client: TestClient) -> None:
    assert (
        client.post("/cds-services/nope/feedback", json={"feedback": [overridden("c")]}).status_code
        == 404
    )


@pytest.mark.postgres
def test_store_on_postgresql(postgres_url: str) -> None:
    url = postgres_url
    from datetime import UTC, datetime

    from sqlalchemy import text

    from cds.store import AuditRecord, FeedbackItem, IssuedCard, Store

    store = Store(url)
    try:
        hook_instance = str(uuid.uuid4())
        card_uuid = str(uuid.uuid4())
        store.record(
            AuditRecord(
                service="bmd-patient-view",
                hook="patient-view",
                hook_instance=hook_instance,
                ruleset_version="v",
                status=200,
                rules_fired=["r"],
                cards=[IssuedCard(card_uuid, "r", "tbs")],
                latency_ms=1.0,
            )
        )
        item = FeedbackItem(
            card=card_uuid, outcome="overridden", outcome_timestamp=datetime.now(UTC)
        )
        assert store.store_feedback("bmd-patient-view", [item]) == (1, 0)
        assert store.store_feedback("bmd-patient-view", [item]) == (0, 1)
        assert store.audit_rows(hook_instance)[0].card_topics == ["tbs"]
    finally:  # remove only the rows this test wrote
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM feedback WHERE card_uuid = :c"), {"c": card_uuid})
            conn.execute(text("DELETE FROM issued_card WHERE card_uuid = :c"), {"c": card_uuid})
            conn.execute(text("DELETE FROM audit WHERE hook_instance = :h"), {"h": hook_instance})
        store.close()


def test_sqlite_file_is_created_on_first_use(tmp_path: Any) -> None:
    from cds.store import Store

    path = tmp_path / "sub" / "osteohooks.db"
    store = Store(f"sqlite:///{path}")
    store.close()
    assert path.is_file()


def test_audit_keeps_going_when_a_card_uuid_repeats(store: Any) -> None:
    from cds.store import AuditRecord, IssuedCard

    def record(hook_instance: str, rule: str) -> AuditRecord:
        return AuditRecord(
            service="bmd-patient-view",
            hook="patient-view",
            hook_instance=hook_instance,
            ruleset_version="v",
            status=200,
            rules_fired=[rule],
            cards=[
                IssuedCard("same-uuid", rule, "tbs"),
                IssuedCard(str(uuid.uuid4()), rule, "workup"),
            ],
            latency_ms=1.0,
        )

    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    store.record(record(first, "r1"))
    store.flush()
    store.record(record(second, "r2"))
    assert [r.hook_instance for r in store.audit_rows()] == [first, second]
    assert store.audit_rows(second)[0].card_topics == ["tbs", "workup"]
    from sqlalchemy import func, select

    from cds.store.db import IssuedCardRow

    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(IssuedCardRow)).scalar() == 3
