"""One CDS Hooks request -> EvaluationInput mapping: the service and `cds replay` give the
pipeline the same input for the same request (`cds.contracts.hooks.request_call`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from cds.contracts.hooks import EvaluationInput, RequestError, request_call
from cds.pipeline import Evaluator
from cds.replay.inputs import Source
from cds.replay.reader import Job, read_source
from tests.api.conftest import FakeEvaluator, TestClient
from tests.stories.helpers import AS_OF, RULES, STORIES

REQUEST_FILES = sorted(
    p for p in STORIES.glob("*.json") if {"hook", "context"} <= set(json.loads(p.read_text()))
)
SERVICES = {
    "patient-view": "bmd-patient-view",
    "order-select": "bmd-order-select",
    "order-sign": "bmd-order-sign",
}


def test_the_stories_hold_request_files_of_both_order_hooks() -> None:
    hooks = {json.loads(p.read_text())["hook"] for p in REQUEST_FILES}
    assert {"order-select", "order-sign"} <= hooks


def _replayed(path: Path) -> EvaluationInput:
    items = read_source(Source(name=path.name, key=path.name, path=str(path)), None)
    (job,) = items
    assert isinstance(job, Job), job
    return job.to_input(date.fromisoformat(AS_OF))


@pytest.mark.parametrize("path", REQUEST_FILES, ids=lambda p: p.name)
def test_service_and_replay_map_a_request_to_the_same_input(
    path: Path, make_client: Callable[..., TestClient]
) -> None:
    fake = FakeEvaluator()
    client = make_client(fake, as_of=AS_OF)
    request = json.loads(path.read_text())
    response = client.post(f"/cds-services/{SERVICES[request['hook']]}", json=request)
    assert response.status_code == 200, response.text
    (served,) = fake.inputs
    replayed = _replayed(path)
    assert replayed.uuid_seed == path.name  # replay names its uuids; the service does not
    assert served == dataclasses.replace(replayed, uuid_seed=None)
    assert served.draft_orders
    assert served.resources


@pytest.mark.parametrize(
    ("request_", "expression", "code"),
    [
        ({"hook": "encounter-start", "context": {}}, "hook", "not-supported"),
        ({"hook": "patient-view", "context": []}, "context", "structure"),
        ({"hook": "patient-view", "context": {"patientId": 7}}, "context.patientId", "structure"),
        ({"hook": "patient-view", "context": {}, "prefetch": []}, "prefetch", "structure"),
        (
            {"hook": "patient-view", "context": {}, "prefetch": {"patient": "Patient/1"}},
            "prefetch.patient",
            "structure",
        ),
        (
            {"hook": "order-sign", "context": {"draftOrders": "x"}},
            "context.draftOrders",
            "structure",
        ),
        (
            {"hook": "order-select", "context": {"selections": [1]}},
            "context.selections",
            "structure",
        ),
    ],
)
def test_a_request_of_the_wrong_shape_names_the_element(
    request_: dict[str, object], expression: str, code: str
) -> None:
    with pytest.raises(RequestError) as caught:
        request_call(request_)
    assert caught.value.expression == expression
    assert caught.value.code == code


def test_the_resolved_prefetch_replaces_the_request_values() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    call = request_call(
        {"hook": "patient-view", "context": {"patientId": "p1"}, "prefetch": {"patient": None}},
        resources=[patient],
    )
    assert call.resources == [patient]
    assert call.to_input(date(2026, 11, 23)).patient_id == "p1"


@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
def test_a_bad_draft_orders_entry_of_a_request_file_is_a_data_error_not_dropped(
    hook: str,
) -> None:
    """The mapping hands context.draftOrders on whole: the FHIR stage, which reads it as it
    reads prefetch Bundles, reports an entry that is no resource (it used to be dropped
    without a word), naming the draftOrders Bundle and the entry."""
    path = next(p for p in REQUEST_FILES if json.loads(p.read_text())["hook"] == "order-sign")
    request = json.loads(path.read_text())
    request["hook"] = hook
    drafts = request["context"]["draftOrders"]
    good = [e["resource"] for e in drafts["entry"]]
    request["context"]["selections"] = [f"{r['resourceType']}/{r['id']}" for r in good]
    drafts["entry"] += [{"resource": "ServiceRequest/elsewhere"}, "not an entry"]
    text_at, entry_at = len(good), len(good) + 1
    result = Evaluator.from_rules_dir(RULES).evaluate(
        request_call(request).to_input(date.fromisoformat(AS_OF))
    )
    issues = (result.outcome or {}).get("issue", [])
    # named as the FHIR stage names a prefetch Bundle's entries: by the Bundle's reference
    # (this one has no id: a digest of its content, "Bundle/#...") and the entry
    assert any(
        f"entry[{text_at}] is not a FHIR resource" in str(i.get("diagnostics")) for i in issues
    ), issues
    assert any(i.get("expression") == [f"Bundle.entry[{entry_at}]"] for i in issues), issues
    assert all(str(i.get("diagnostics")).startswith("Bundle/") for i in issues), issues
