"""Fallback fetches under attack: URL normalisation and the allowlist, redirects, the total
deadline, the size bound, Device reads, and logs without patient ids or tokens."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cds.api import urls
from cds.api.logs import JsonFormatter
from cds.api.prefetch import prefetch_templates
from tests.api.conftest import FakeEvaluator, TestClient, patient_view_request
from tests.api.fhir_server import TOKEN, FhirServer, RunningServer
from tests.api.test_prefetch import fetching_request

PV = "/cds-services/bmd-patient-view"
ALLOW = ["https://ehr.example/r4"]


@pytest.fixture
def fhir() -> Iterator[FhirServer]:
    server = FhirServer()
    with RunningServer(server):
        yield server


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr.example/r4",
        "https://ehr.example/r4/",
        "https://ehr.example/r4/Patient/1",
        "HTTPS://EHR.EXAMPLE/r4/Patient/1",
        "https://ehr.example:443/r4/Observation?patient=1",
        "https://ehr.example/r4/./Patient/1",
        "https://ehr.example/r4/x/../Patient/1",
        "https://ehr.example/r4/x/%2e%2e/Patient/1",
    ],
)
def test_urls_within_the_allowlist(url: str) -> None:
    assert urls.allowed(url, ALLOW)
    assert urls.checked(url, ALLOW).host == "ehr.example"


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr.example/r4x",
        "https://ehr.example/r4x/Patient/1",
        "https://ehr.example/r4/../private",
        "https://ehr.example/r4/./../private",
        "https://ehr.example/r4/%2e%2e/private",
        "https://ehr.example/r4/%2E./private",
        "https://ehr.example/r4/.%2E/private",
        "https://ehr.example/r4%2f..%2fprivate",
        "https://ehr.example/r4\\..\\private",
        "http://ehr.example/r4",
        "https://ehr.example:8443/r4",
        "https://ehr.example.evil.example/r4",
        "https://user:pw@ehr.example/r4",
        "ftp://ehr.example/r4",
        "//ehr.example/r4",
        "r4/Patient/1",
        "https://ehr.example/r4 /Patient",
    ],
)
def test_urls_outside_the_allowlist_are_refused(url: str) -> None:
    assert not urls.allowed(url, ALLOW)
    with pytest.raises(urls.UrlRefused):
        urls.checked(url, ALLOW)


def test_default_ports_are_the_same_origin() -> None:
    assert urls.allowed("https://ehr.example/r4/Patient/1", ["https://ehr.example:443/r4"])
    assert urls.allowed("http://ehr.example:80/r4/Patient/1", ["http://ehr.example/r4"])


def test_a_fhir_server_climbing_out_of_the_allowlisted_path_gets_no_request(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    client = make_client(fhir_server_allowlist=f"{fhir.base}/r4")
    for climbing in (f"{fhir.base}/r4/../Patient", f"{fhir.base}/r4/%2e%2e/private"):
        response = client.post(PV, json=fetching_request(climbing, "patient"))
        assert response.status_code == 412, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    assert fhir.requests == []


def test_next_links_climbing_out_of_the_allowlisted_path_are_not_followed(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    fhir.next_url = f"{fhir.base}/../other/Observation?page=2"
    client = make_client(fhir_server_allowlist=fhir.base)
    assert client.post(PV, json=fetching_request(fhir.base)).status_code == 200
    observation_pages = [q for p, q, _ in fhir.requests if p.endswith("/Observation")]
    assert len(observation_pages) == 1
    assert all(p.startswith("/fhir/") for p, _, _ in fhir.requests)


def test_redirects_are_not_followed_with_the_token(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    other = FhirServer()
    with RunningServer(other):
        fhir.redirect = f"{other.base}/Patient/pat-1"
        client = make_client(fhir_server_allowlist=f"{fhir.base},{other.base}")
        response = client.post(PV, json=fetching_request(fhir.base, "observations"))
        assert response.status_code == 412
        assert "HTTP 302" in response.text
        assert other.requests == []


def test_a_trickling_server_ends_at_the_deadline(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    fhir.trickle = 10.0  # one byte every 50 ms: no single read ever times out
    client = make_client(fhir_server_allowlist=fhir.base, fhir_deadline_ms=500)
    started = time.monotonic()
    response = client.post(PV, json=fetching_request(fhir.base))
    elapsed = time.monotonic() - started
    assert response.status_code == 412
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "OSTEOHOOKS_FHIR_DEADLINE_MS" in body["issue"][0]["diagnostics"]
    assert "cards" not in body
    assert elapsed < fhir.trickle / 2  # the trickle would take 10 s; the call ended at 0.5 s


def test_an_answer_beyond_the_size_bound_is_refused_while_streaming(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    fhir.huge_bytes = 96 * 1024 * 1024
    bound = 1024 * 1024
    client = make_client(fhir_server_allowlist=fhir.base, fhir_max_bytes=bound)
    response = client.post(PV, json=fetching_request(fhir.base))
    assert response.status_code == 412
    assert "OSTEOHOOKS_FHIR_MAX_BYTES" in response.text
    # the service stopped reading near the bound: the server never produced the 96 MB
    assert fhir.sent_bytes < fhir.huge_bytes / 4


def test_the_observations_template_includes_the_devices() -> None:
    assert prefetch_templates(["38267-1"])["observations"].endswith("&_include=Observation:device")


def _device(device_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": device_id,
        "manufacturer": "GE Healthcare",
        "deviceName": [{"name": "Lunar iDXA", "type": "model-name"}],
    }


def test_a_referenced_device_missing_from_the_data_is_read(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    fhir.observation_device = "dxa-1"
    fhir.devices["dxa-1"] = _device("dxa-1")
    evaluator = FakeEvaluator()
    client = make_client(evaluator, fhir_server_allowlist=fhir.base)
    assert client.post(PV, json=fetching_request(fhir.base)).status_code == 200
    assert ("/fhir/Device/dxa-1", "", f"Bearer {TOKEN}") in fhir.requests
    assert _device("dxa-1") in evaluator.inputs[0].resources
    assert sum(1 for p, _, _ in fhir.requests if p.startswith("/fhir/Device/")) == 1


def test_a_device_the_server_lacks_is_noted_and_the_call_goes_on(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    fhir.observation_device = "dxa-gone"
    client = make_client(fhir_server_allowlist=fhir.base)
    response = client.post(PV, json=fetching_request(fhir.base))
    assert response.status_code == 200
    notes = response.json()["extension"]["org.osteohooks"]["prefetch"]
    assert any(n.startswith("Device/dxa-gone was not available") for n in notes)


def _observation_of_device(device_id: str) -> dict[str, Any]:
    """An Observation that references a Device the data lacks."""
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "device": {"reference": f"Device/{device_id}", "display": "Hologic Horizon A"},
    }


def test_without_a_usable_server_a_missing_device_is_noted_and_nothing_is_fetched(
    make_client: Callable[..., TestClient],
) -> None:
    body = patient_view_request()
    observation = _observation_of_device("dxa-9")
    body["prefetch"]["observations"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": observation}],
    }
    response = make_client().post(PV, json=body)
    assert response.status_code == 200
    notes = response.json()["extension"]["org.osteohooks"]["prefetch"]
    assert any(n.startswith("Device/dxa-9 was not available") for n in notes)


def test_a_device_referenced_from_a_nested_bundle_is_noted_too(
    make_client: Callable[..., TestClient],
) -> None:
    # the prefetch is walked by the FHIR stage's one walk, nested Bundles included
    body = patient_view_request()
    observation = _observation_of_device("dxa-7")
    inner = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": observation}]}
    body["prefetch"]["observations"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": inner}],
    }
    response = make_client().post(PV, json=body)
    assert response.status_code == 200
    notes = response.json()["extension"]["org.osteohooks"]["prefetch"]
    assert any(n.startswith("Device/dxa-7 was not available") for n in notes)


def test_a_device_in_the_prefetch_is_not_read_again(
    make_client: Callable[..., TestClient], fhir: FhirServer
) -> None:
    fhir.observation_device = "dxa-1"
    fhir.devices["dxa-1"] = _device("dxa-1")
    body = fetching_request(fhir.base)
    body["prefetch"]["conditions"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": _device("dxa-1")}],
    }
    client = make_client(fhir_server_allowlist=fhir.base)
    assert client.post(PV, json=body).status_code == 200
    assert not any(p.startswith("/fhir/Device/") for p, _, _ in fhir.requests)


def test_logs_of_fallback_fetches_hold_no_patient_id_token_or_url(
    make_client: Callable[..., TestClient], fhir: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    patient = "pat-1"
    fhir.observation_device = "dxa-gone"
    client = make_client(fhir_server_allowlist=fhir.base)
    with caplog.at_level(logging.DEBUG):
        assert client.post(PV, json=fetching_request(fhir.base)).status_code == 200
        fhir.fail["Condition"] = 500
        assert client.post(PV, json=fetching_request(fhir.base)).status_code == 412
        fhir.fail.clear()
        fhir.trickle = 5.0
        slow = make_client(fhir_server_allowlist=fhir.base, fhir_deadline_ms=300)
        assert slow.post(PV, json=fetching_request(fhir.base)).status_code == 412
    formatter = JsonFormatter()
    text = "\n".join(formatter.format(r) for r in caplog.records)
    assert caplog.records  # the calls were logged
    assert patient not in text
    assert TOKEN not in text
    assert "/fhir/" not in text
    assert not any(r.name.startswith(("httpx", "httpcore")) for r in caplog.records)
    assert json.dumps(patient) not in text


@pytest.mark.parametrize("entry", [7, "x", {"a": 1}, [1, None, {"resource": 3}]])
def test_malformed_bundle_entries_do_not_break_the_device_scan(
    make_client: Callable[..., TestClient], entry: Any
) -> None:
    body = patient_view_request()
    body["prefetch"]["observations"] = {"resourceType": "Bundle", "type": "searchset"}
    body["prefetch"]["observations"]["entry"] = entry
    assert make_client().post(PV, json=body).status_code < 500
