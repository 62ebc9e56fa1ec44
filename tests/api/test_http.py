"""The HTTP contract of the CDS Hooks service, through the ASGI app (Evaluator double)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import (
    PATIENT_ID,
    FakeEvaluator,
    TestClient,
    card,
    order_request,
    patient_view_request,
)

PV = "/cds-services/bmd-patient-view"
SERVICES = {
    "bmd-patient-view": "patient-view",
    "bmd-order-select": "order-select",
    "bmd-order-sign": "order-sign",
}
PREFETCH_KEYS = {
    "patient",
    "observations",
    "conditions",
    "procedures",
    "medicationStatements",
    "medicationRequests",
    "medicationAdministrations",
}


def assert_outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], body
    for item in body["issue"]:
        assert item["severity"] in ("fatal", "error", "warning", "information")
        assert item["code"]
        assert item["diagnostics"]
    return body


def no_empty(value: Any) -> None:
    assert value not in (None, "", {}), value
    if isinstance(value, dict):
        for item in value.values():
            no_empty(item)
    elif isinstance(value, list):
        for item in value:
            no_empty(item)


# --------------------------------------------------------------------------- discovery


def test_discovery_lists_the_three_services_with_the_contract_prefetch(client: TestClient) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.json()["services"]
    assert {s["id"]: s["hook"] for s in services} == SERVICES
    for service in services:
        assert service["title"]
        assert service["description"]
        assert service["usageRequirements"]
        prefetch = service["prefetch"]
        assert set(prefetch) == PREFETCH_KEYS
        assert prefetch["patient"] == "Patient/{{context.patientId}}"
        assert prefetch["conditions"] == "Condition?patient={{context.patientId}}"
        assert prefetch["medicationAdministrations"] == (
            "MedicationAdministration?patient={{context.patientId}}"
        )
        assert prefetch["observations"].startswith(
            "Observation?patient={{context.patientId}}&code="
        )
        codes = prefetch["observations"].split("&code=")[1].split(",")
        # CS-1.7: lumbar spine T, Z, BMD; hip; femur; forearm; panel
        for code in ("38267-1", "85394-5", "24966-4", "38264-8", "38261-4", "83311-1"):
            assert code in codes
    no_empty(response.json())


def test_discovery_says_loudly_when_authentication_is_off(client: TestClient) -> None:
    for service in client.get("/cds-services").json()["services"]:
        assert "AUTHENTICATION IS OFF" in service["description"]


def test_openapi_is_served_with_request_schemas(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert "/cds-services" in paths
    assert "/cds-services/{service_id}/feedback" in paths
    components = schema["components"]["schemas"]
    for name in ("CdsRequest", "FeedbackRequest", "CdsResponse", "Discovery", "Card"):
        assert name in components
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(schema)))
    assert refs <= set(components)  # every reference resolves


# --------------------------------------------------------------------------- calls


@pytest.mark.parametrize(
    ("service", "body"),
    [
        ("bmd-patient-view", patient_view_request()),
        ("bmd-order-select", order_request("order-select")),
        ("bmd-order-sign", order_request("order-sign")),
    ],
)
def test_each_service_answers_cards_and_passes_the_context_on(
    make_client: Callable[..., TestClient], service: str, body: dict[str, Any]
) -> None:
    evaluator = FakeEvaluator()
    client = make_client(evaluator, as_of="2026-11-23")
    response = client.post(f"/cds-services/{service}", json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert len(cards) == 1
    assert cards[0]["summary"]
    no_empty(response.json())
    (data,) = evaluator.inputs
    assert data.hook == SERVICES[service]
    assert data.patient_id == PATIENT_ID
    assert str(data.as_of) == "2026-11-23"
    types = sorted(r["resourceType"] for r in data.resources)
    assert types == ["Bundle", "Patient"]  # null keys are "no data"
    if service == "bmd-patient-view":
        assert list(data.draft_orders) == []
        assert list(data.selections) == []
    else:
        (bundle,) = data.draft_orders  # the draftOrders Bundle, whole (the FHIR stage reads it)
        assert [e["resource"]["id"] for e in bundle["entry"]] == ["dxa-1"]
    if service == "bmd-order-select":
        assert list(data.selections) == ["ServiceRequest/dxa-1"]


def test_no_decision_support_is_an_empty_card_list(make_client: Callable[..., TestClient]) -> None:
    client = make_client(FakeEvaluator(cards=[]))
    response = client.post(PV, json=patient_view_request())
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_prefetch_operation_outcome_is_no_data_and_noted(
    make_client: Callable[..., TestClient],
) -> None:
    evaluator = FakeEvaluator()
    client = make_client(evaluator)
    body = patient_view_request()
    body["prefetch"]["conditions"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    response = client.post(PV, json=body)
    assert response.status_code == 200
    assert all(r["resourceType"] != "OperationOutcome" for r in evaluator.inputs[0].resources)
    notes = response.json()["extension"]["org.osteohooks"]["prefetch"]
    assert any("conditions" in n and "no data" in n for n in notes)


def test_data_errors_of_the_pipeline_ride_along_in_the_extension(
    make_client: Callable[..., TestClient],
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "value", "diagnostics": "Observation/o1: unit"}],
    }

    class WithOutcome(FakeEvaluator):
        def evaluate(self, data: Any) -> Any:
            result = super().evaluate(data)
            result.outcome = outcome
            return result

    response = make_client(WithOutcome()).post(PV, json=patient_view_request())
    assert response.status_code == 200
    assert response.json()["extension"]["org.osteohooks"]["outcome"] == outcome


# --------------------------------------------------------------------------- errors


def test_unknown_service_is_404(client: TestClient) -> None:
    body = assert_outcome(client.post("/cds-services/nope", json=patient_view_request()), 404)
    assert "bmd-patient-view" in body["issue"][0]["diagnostics"]


def test_unknown_path_and_method_are_outcomes(client: TestClient) -> None:
    assert_outcome(client.get("/nothing-here"), 404)
    assert_outcome(client.get(PV), 405)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'"text"', b"null", b"\xff\xfe", b"{" * 5000 + b"}" * 5000],
)
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    assert_outcome(client.post(PV, content=raw, headers={"Content-Type": "application/json"}), 400)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda b: b.pop("hookInstance"), "hookInstance"),
        (lambda b: b.update(hookInstance="not-a-uuid"), "hookInstance"),
        (lambda b: b.update(hookInstance=42), "hookInstance"),
        (lambda b: b.pop("context"), "context"),
        (lambda b: b["context"].pop("patientId"), "context.patientId"),
        (lambda b: b["context"].pop("userId"), "context.userId"),
        (lambda b: b["context"].update(userId="abc"), "context.userId"),
        (lambda b: b["context"].update(userId="Device/1"), "context.userId"),
        (lambda b: b["context"].update(patientId="a/b"), "context.patientId"),
        (lambda b: b.update(fhirServer="not a url"), "fhirServer"),
        (lambda b: b.update(prefetch=[]), "prefetch"),
        (lambda b: b["prefetch"].update(conditions="Condition/1"), "prefetch.conditions"),
    ],
)
def test_request_shape_errors_are_400_naming_the_element(
    client: TestClient, mutate: Callable[[dict[str, Any]], Any], where: str
) -> None:
    body = patient_view_request()
    mutate(body)
    outcome = assert_outcome(client.post(PV, json=body), 400)
    text = json.dumps(outcome)
    assert where in text


def test_hook_must_match_the_service(client: TestClient) -> None:
    body = patient_view_request(hook="order-sign")
    outcome = assert_outcome(client.post(PV, json=body), 400)
    assert outcome["issue"][0]["expression"] == ["hook"]


@pytest.mark.parametrize(
    ("hook", "mutate", "where"),
    [
        ("order-select", lambda c: c.pop("selections"), "selections"),
        ("order-select", lambda c: c.update(selections=[]), "selections"),
        ("order-select", lambda c: c.update(selections=["ServiceRequest/other"]), "draftOrders"),
        ("order-select", lambda c: c.pop("draftOrders"), "draftOrders"),
        ("order-sign", lambda c: c.pop("draftOrders"), "draftOrders"),
        ("order-sign", lambda c: c.update(draftOrders={"resourceType": "Patient"}), "draftOrders"),
        (
            "order-sign",
            lambda c: c.update(draftOrders={"resourceType": "Bundle", "entry": [{}]}),
            "draftOrders",
        ),
        ("order-sign", lambda c: c.update(userId="Patient/1"), "userId"),
    ],
)
def test_order_hook_contexts_are_validated(
    client: TestClient, hook: str, mutate: Callable[[dict[str, Any]], Any], where: str
) -> None:
    body = order_request(hook)
    mutate(body["context"])
    service = "bmd-order-select" if hook == "order-select" else "bmd-order-sign"
    outcome = assert_outcome(client.post(f"/cds-services/{service}", json=body), 400)
    assert where in json.dumps(outcome)


def test_cds_r_1_fhir_authorization_needs_fhir_server(client: TestClient) -> None:
    body = patient_view_request(
        fhirAuthorization={
            "access_token": "secret-token-value",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/Observation.read",
            "subject": "osteohooks",
        }
    )
    outcome = assert_outcome(client.post(PV, json=body), 400)
    assert "cds-r-1" in json.dumps(outcome)
    assert "secret-token-value" not in json.dumps(outcome)


def test_cds_r_2_patient_scope_without_patient_is_only_a_warning(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = patient_view_request(
        fhirServer="https://fhir.example.org/r4",
        fhirAuthorization={
            "access_token": "secret-token-value",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Observation.read",
            "subject": "osteohooks",
        },
    )
    with caplog.at_level("DEBUG"):
        response = client.post(PV, json=body)
    assert response.status_code == 200
    assert any("cds-r-2" in r.getMessage() for r in caplog.records)
    assert all("secret-token-value" not in r.getMessage() for r in caplog.records)


def test_missing_prefetch_without_fhir_server_is_412(client: TestClient) -> None:
    body = patient_view_request()
    del body["prefetch"]
    outcome = assert_outcome(client.post(PV, json=body), 412)
    expressions = {e for i in outcome["issue"] for e in i.get("expression", [])}
    assert expressions == {f"prefetch.{k}" for k in PREFETCH_KEYS}


def test_prefetch_without_resource_type_is_422(client: TestClient) -> None:
    body = patient_view_request()
    body["prefetch"]["observations"] = {"entry": []}
    outcome = assert_outcome(client.post(PV, json=body), 422)
    assert "prefetch.observations" in json.dumps(outcome)


def test_prefetched_patient_must_be_the_context_patient(client: TestClient) -> None:
    body = patient_view_request()
    body["prefetch"]["patient"]["id"] = "someone-else"
    assert_outcome(client.post(PV, json=body), 422)


def test_body_over_5_mb_is_413_by_content_length(client: TestClient) -> None:
    body = patient_view_request()
    body["prefetch"]["observations"]["padding"] = "x" * (5 * 1024 * 1024)
    assert_outcome(client.post(PV, json=body), 413)


def test_body_over_5_mb_is_413_when_streamed_without_length(client: TestClient) -> None:
    chunk = b" " * (1024 * 1024)

    def stream() -> Any:
        yield b'{"hook": "patient-view",'
        for _ in range(6):
            yield chunk
        yield b"}"

    assert_outcome(client.post(PV, content=stream()), 413)


def test_body_just_under_the_limit_is_read(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=4096)
    body = json.dumps(patient_view_request()).encode()
    assert len(body) < 4096
    padded = body[:-1] + b" " * (4096 - len(body)) + b"}"
    assert len(padded) == 4096
    assert client.post(PV, content=padded).status_code == 200
    assert_outcome(client.post(PV, content=padded + b" "), 413)


def test_evaluator_failure_is_500_outcome_never_empty_cards(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(FakeEvaluator(error=RuntimeError("engine exploded")))
    body = patient_view_request()
    with caplog.at_level("ERROR"):
        response = client.post(PV, json=body)
    outcome = assert_outcome(response, 500)
    assert "cards" not in response.json()
    assert body["hookInstance"] in outcome["issue"][0]["diagnostics"]
    failures = [r for r in caplog.records if getattr(r, "event", None) == "evaluation-failed"]
    assert failures
    assert getattr(failures[0], "hookInstance", None) == body["hookInstance"]


def test_an_invalid_card_from_the_pipeline_is_500_not_sent(
    make_client: Callable[..., TestClient],
) -> None:
    bad = card()
    bad["summary"] = "x" * 140  # CDS Hooks: < 140 characters
    assert_outcome(
        make_client(FakeEvaluator(cards=[bad])).post(PV, json=patient_view_request()), 500
    )


def test_an_absent_card_field_is_omitted_never_sent_as_null(
    make_client: Callable[..., TestClient],
) -> None:
    nulled = card()
    nulled["detail"] = None
    response = make_client(FakeEvaluator(cards=[nulled])).post(PV, json=patient_view_request())
    assert response.status_code == 200
    assert "detail" not in response.json()["cards"][0]


@pytest.mark.parametrize(
    "extension",
    [
        {"a": None},
        {"a": [None]},
        {"a": [1, None]},
        {"a": ""},
        {"a": []},
        {"a": {}},
        {"a": [1, {"b": [2, {}]}]},
    ],
    ids=[
        "member-null",
        "first-null",
        "later-null",
        "empty-string",
        "empty-list",
        "empty-obj",
        "deep",
    ],
)
def test_a_card_with_a_null_or_empty_element_anywhere_is_500_not_sent(
    make_client: Callable[..., TestClient], extension: dict[str, Any]
) -> None:
    bad = card()
    bad["extension"] = {"org.osteohooks": extension}
    assert_outcome(
        make_client(FakeEvaluator(cards=[bad])).post(PV, json=patient_view_request()), 500
    )


def test_null_and_empty_marks_inside_card_text_are_sent(
    make_client: Callable[..., TestClient],
) -> None:
    text = card()
    text["detail"] = 'Text with null, [null, ,null, :null, "", [] and {} in it.'
    response = make_client(FakeEvaluator(cards=[text])).post(PV, json=patient_view_request())
    assert response.status_code == 200
    assert response.json()["cards"][0]["detail"] == text["detail"]


def test_a_cyclic_card_from_the_pipeline_is_500_not_sent(
    make_client: Callable[..., TestClient],
) -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    bad = card()
    bad["extension"] = {"org.osteohooks": {"loop": cyclic}}
    assert_outcome(
        make_client(FakeEvaluator(cards=[bad])).post(PV, json=patient_view_request()), 500
    )


def test_cors_preflight_and_headers_for_configured_origins(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(cors_origins="https://ehr.example.org")
    preflight = client.options(
        PV,
        headers={
            "Origin": "https://ehr.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://ehr.example.org"
    response = client.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    assert response.headers["access-control-allow-origin"] == "https://ehr.example.org"
    other = client.get("/cds-services", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_unless_configured(client: TestClient) -> None:
    response = client.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    assert "access-control-allow-origin" not in response.headers


def test_audit_row_per_call_without_phi(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    body = patient_view_request()
    assert client.post(PV, json=body).status_code == 200
    store = client.app.state.service.store  # type: ignore[attr-defined]
    (row,) = store.audit_rows(body["hookInstance"])
    assert row.service == "bmd-patient-view"
    assert row.hook == "patient-view"
    assert row.ruleset_version == "v-test"
    assert row.status == 200
    assert row.rules_fired == ["classification.t.osteoporosis"]
    assert row.card_topics == ["bmd-classification"]
    assert row.latency_ms > 0
    assert PATIENT_ID not in json.dumps([str(getattr(row, c.name)) for c in row.__table__.columns])


def test_hook_instance_uuid_any_version_accepted(client: TestClient) -> None:
    body = patient_view_request(hookInstance=str(uuid.uuid1()))
    assert client.post(PV, json=body).status_code == 200


def test_refused_calls_are_audited_with_their_status(client: TestClient) -> None:
    body = patient_view_request()
    del body["prefetch"]
    assert client.post(PV, json=body).status_code == 412
    bad = patient_view_request(hook="order-sign")
    assert client.post(PV, json=bad).status_code == 400
    store = client.app.state.service.store  # type: ignore[attr-defined]
    (row,) = store.audit_rows(body["hookInstance"])
    assert row.status == 412
    assert row.rules_fired == []
    (row,) = store.audit_rows(bad["hookInstance"])
    assert row.status == 400


def test_card_text_that_looks_like_empty_json_is_still_sent(
    make_client: Callable[..., TestClient],
) -> None:
    tricky = card()
    tricky["detail"] = (
        'Reported as "" by the scanner; list [] and map {} and :null in prose, "quoted"'
    )
    response = make_client(FakeEvaluator(cards=[tricky])).post(PV, json=patient_view_request())
    assert response.status_code == 200
    assert response.json()["cards"][0]["detail"] == tricky["detail"]
    empty_list = card()
    empty_list["links"] = []
    assert_outcome(
        make_client(FakeEvaluator(cards=[empty_list])).post(PV, json=patient_view_request()), 500
    )
