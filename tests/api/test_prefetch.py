"""Prefetch fallback: missing keys fetched from an allowlisted fhirServer on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from cds.api.prefetch import prefetch_templates
from tests.api.conftest import FakeEvaluator, TestClient, patient_view_request
from tests.api.fhir_server import TOKEN, FhirServer, RunningServer

PV = "/cds-services/bmd-patient-view"


@pytest.fixture
def fhir() -> Iterator[FhirServer]:
    server = FhirServer()
    with RunningServer(server):
        yield server


def fetching_request(fhir_server: str, *keep: str) -> dict[str, Any]:
    body = patient_view_request(
        fhirServer=fhir_server,
        fhirAuthorization={
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/Patient.read user/Observation.read",
            "subject": "osteohooks",
        },
    )
    body["prefetch"] = {k: v for k, v in body["prefetch"].items() if k in keep}
    return body


def types_of(resources: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for r in resources:
        if r["resourceType"] == "Bundle":
            out.extend(e["resource"]["resourceType"] for e in r.get("entry", []))
        else:
            out.append(r["resourceType"])
    return sorted(out)


def test_missing_keys_are_fetched_with_the_token_following_pages(
    make_client: Callable[..., TestClient], fhir: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    evaluator = FakeEvaluator()
    client = make_client(evaluator, fhir_server_allowlist=f"{fhir.base}/")
    body = fetching_request(fhir.base)
    with caplog.at_level("DEBUG"):
        response = client.post(PV, json=body)
    assert response.status_code == 200, response.text
    assert types_of(evaluator.inputs[0].resources) == [
        "Condition",
        "Observation",
        "Observation",
        "Patient",
    ]
    paths = sorted(path for path, _, _ in fhir.requests)
    assert paths == sorted(
        [
            "/fhir/Patient/pat-1",
            "/fhir/Observation",
            "/fhir/Observation",
            "/fhir/Condition",
            "/fhir/Procedure",
            "/fhir/MedicationStatement",
            "/fhir/MedicationRequest",
            "/fhir/MedicationAdministration",
        ]
    )
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in fhir.requests)
    first_obs = next(q for p, q, _ in fhir.requests if p == "/fhir/Observation")
    assert "patient=pat-1" in first_obs
    assert "38267-1" in first_obs
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_only_the_missing_keys_are_fetched(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    client = make_client(fhir_server_allowlist=fhir.base)
    body = fetching_request(fhir.base, "patient", "observations", "procedures", "conditions")
    body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset"}
    assert client.post(PV, json=body).status_code == 200
    assert sorted(p for p, _, _ in fhir.requests) == [
        "/fhir/MedicationAdministration",
        "/fhir/MedicationRequest",
        "/fhir/MedicationStatement",
        "/fhir/Procedure",  # sent as null: re-read since a server is usable
    ]


def test_fhir_server_not_on_the_allowlist_is_412_and_nothing_is_sent(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    client = make_client(fhir_server_allowlist="https://fhir.trusted.example/")
    response = client.post(PV, json=fetching_request(fhir.base, "patient"))
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "allowlist" in response.text
    assert fhir.requests == []


def test_empty_allowlist_fetches_nothing(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    response = make_client().post(PV, json=fetching_request(fhir.base))
    assert response.status_code == 412
    assert fhir.requests == []


def test_allowlist_is_a_prefix_match_not_a_substring(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    client = make_client(fhir_server_allowlist="https://fhir.trusted.example/")
    evil = f"{fhir.base}?https://fhir.trusted.example/"
    assert client.post(PV, json=fetching_request(evil)).status_code == 412
    assert fhir.requests == []


def test_null_keys_without_a_usable_server_are_no_data(
    make_client: Callable[..., TestClient],
) -> None:
    body = patient_view_request()
    body["prefetch"] = dict.fromkeys(body["prefetch"])
    body["prefetch"]["patient"] = patient_view_request()["prefetch"]["patient"]
    assert make_client().post(PV, json=body).status_code == 200


@pytest.mark.parametrize("status", [401, 403, 500])
def test_fhir_server_error_is_412(
    make_client: Callable[..., TestClient], fhir: FhirServer, status: int
) -> None:
    fhir.fail["Condition"] = status
    response = make_client(fhir_server_allowlist=fhir.base).post(
        PV, json=fetching_request(fhir.base)
    )
    assert response.status_code == 412
    assert f"HTTP {status}" in response.json()["issue"][0]["diagnostics"]
    assert "prefetch.conditions" in json.dumps(response.json())


def test_fhir_server_timeout_is_412(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    fhir.slow.add("Procedure")
    client = make_client(fhir_server_allowlist=fhir.base, fhir_timeout=0.2)
    response = client.post(PV, json=fetching_request(fhir.base))
    assert response.status_code == 412
    assert "Timeout" in response.text


def test_pagination_is_bounded(make_client: Callable[..., TestClient], fhir: FhirServer) -> None:
    fhir.endless = True
    evaluator = FakeEvaluator()
    client = make_client(evaluator, fhir_server_allowlist=fhir.base, fhir_max_pages=3)
    assert client.post(PV, json=fetching_request(fhir.base)).status_code == 200
    assert sum(1 for p, _, _ in fhir.requests if p == "/fhir/Observation") == 3


def test_next_links_to_another_server_are_not_followed(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    fhir.foreign_next = True
    client = make_client(fhir_server_allowlist=fhir.base)
    assert client.post(PV, json=fetching_request(fhir.base)).status_code == 200
    assert sum(1 for p, _, _ in fhir.requests if p == "/fhir/Observation") == 1


def test_unreachable_server_is_412(make_client: Callable[..., TestClient]) -> None:
    from tests.api.fhir_server import free_port

    base = f"http://127.0.0.1:{free_port()}/fhir"
    response = make_client(fhir_server_allowlist=base).post(PV, json=fetching_request(base))
    assert response.status_code == 412


def test_mock_transport_non_fhir_json_is_422(make_client: Callable[..., TestClient]) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"hello": "world"}))
    base = "https://fhir.mock.example/r4"
    client = make_client(fhir_server_allowlist=base, app_kwargs={"fhir_transport": transport})
    response = client.post(PV, json=fetching_request(base, "patient"))
    assert response.status_code == 422


def test_templates_use_the_patient_token_only() -> None:
    for template in prefetch_templates(["38267-1"]).values():
        assert template.count("{{") == 1
        assert "{{context.patientId}}" in template


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://fhir.example.org/r4", True),
        ("https://fhir.example.org/r4/", True),
        ("https://fhir.example.org/r4/sub", True),
        ("https://fhir.example.org/r4b", False),
        ("https://fhir.example.org.evil.example/r4", False),
        ("http://fhir.example.org/r4", False),
        (None, False),
        ("", False),
    ],
)
def test_allowlist_matches_whole_path_segments(url: str | None, allowed: bool) -> None:
    from cds.api.prefetch import allowed_server

    assert allowed_server(url, ["https://fhir.example.org/r4"]) is allowed
    assert allowed_server(url, []) is False
