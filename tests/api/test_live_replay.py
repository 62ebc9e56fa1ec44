"""Live equals replay (card contract, rev-2 prefetch): for every story, the service fed its
OWN discovery prefetch templates, rendered and answered by a loopback FHIR server holding
the story's resources, returns exactly the cards `cds replay` gives for that story.

Two ways in, both compared with replay:
- `prefetch`: the test acts as the EHR: renders each discovery template with the patient
  id, runs it against the FHIR server and sends the answers as `prefetch`;
- `fallback`: the request sends no prefetch but `fhirServer`; the service fetches.

Cards are compared modulo `uuid` (replay's are deterministic uuid5s, the service's are
random uuid4s): every other field, in order, must be equal. Both run with as-of
2026-11-23 (the stories' date).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest

from cds.api import create_app
from cds.fhir.bundle import flatten
from cds.fhir.trace import Trace
from cds.pipeline import Evaluator
from cds.settings import Settings
from tests.api.conftest import TestClient
from tests.api.fhir_server import TOKEN, RunningServer, StoryFhirServer
from tests.api.test_end_to_end import SERVICE, without_uuids
from tests.stories.helpers import AS_OF, RULES, STORIES, replay

STORY_FILES = sorted(p.name for p in STORIES.glob("*.json"))
TOKEN_PLACEHOLDER = "{{context.patientId}}"


@pytest.fixture(scope="module")
def replayed() -> dict[str, dict[str, Any]]:
    code, out = replay("--format", "ndjson")
    results = {}
    for line in out.splitlines():
        if line.strip():
            doc = json.loads(line)
            results[doc["input"].rsplit("/", 1)[-1]] = doc
    assert set(STORY_FILES) <= set(results), f"replay exit {code}"
    return results


@pytest.fixture(scope="module")
def fhir() -> Iterator[StoryFhirServer]:
    server = StoryFhirServer(resources=[])
    with RunningServer(server):
        yield server


@pytest.fixture(scope="module")
def service(
    fhir: StoryFhirServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("live") / "live.db"
    settings = Settings(
        auth="none",
        database_url=f"sqlite:///{db}",
        as_of=date.fromisoformat(AS_OF),
        fhir_server_allowlist=[fhir.base],
        fhir_deadline_ms=20_000,  # a loaded CI machine must not turn this into a 412
    )
    app = create_app(settings, Evaluator.from_rules_dir(RULES))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a story Bundle, as the FHIR stage walks them."""
    return [e.raw for e in flatten([bundle], [], Trace())]


def story_call(document: dict[str, Any]) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """(hook, context, resources held by the FHIR server) of a story file."""
    if document.get("resourceType") == "Bundle":
        resources = _resources(document)
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        return "patient-view", {"userId": "Practitioner/qa", "patientId": patient["id"]}, resources
    resources = []
    for value in (document.get("prefetch") or {}).values():
        if isinstance(value, dict):
            resources.extend(_resources(value) if value["resourceType"] == "Bundle" else [value])
    return document["hook"], document["context"], resources


def ehr_prefetch(
    templates: dict[str, str], patient_id: str, fhir: StoryFhirServer
) -> dict[str, Any]:
    """What an EHR sends: each template rendered and run against its FHIR server."""
    prefetch: dict[str, Any] = {}
    with httpx.Client(base_url=fhir.base + "/") as client:
        for key, template in templates.items():
            response = client.get(template.replace(TOKEN_PLACEHOLDER, patient_id))
            prefetch[key] = response.json() if response.status_code == 200 else None
    return prefetch


@pytest.mark.parametrize("mode", ["prefetch", "fallback"])
@pytest.mark.parametrize("name", STORY_FILES)
def test_live_answer_equals_replay(
    service: TestClient,
    fhir: StoryFhirServer,
    replayed: dict[str, dict[str, Any]],
    name: str,
    mode: str,
) -> None:
    hook, context, resources = story_call(json.loads((STORIES / name).read_text()))
    fhir.resources = resources
    discovery = service.get("/cds-services").json()
    entry = next(s for s in discovery["services"] if s["id"] == SERVICE[hook])
    request: dict[str, Any] = {
        "hook": hook,
        "hookInstance": "a0d1f7a4-5a8a-4c5e-9d8e-000000000042",
        "context": context,
    }
    if mode == "prefetch":
        request["prefetch"] = ehr_prefetch(entry["prefetch"], context["patientId"], fhir)
    else:
        request["fhirServer"] = fhir.base
        request["fhirAuthorization"] = {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.read",
            "subject": "osteohooks",
        }
    response = service.post(f"/cds-services/{SERVICE[hook]}", json=request)
    expected = replayed[name]
    if not expected.get("cards") and response.status_code == 422:
        return  # replay could not evaluate it either (no usable patient)
    assert response.status_code == 200, response.text
    got = without_uuids(response.json()["cards"])
    assert got == without_uuids(expected["cards"]), name
    assert "Device/" not in json.dumps(response.json()["cards"])
