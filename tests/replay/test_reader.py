"""Reading one source: request files, Bundles (split per patient, draft orders), errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.replay.inputs import Source, discover
from cds.replay.reader import Job, Unreadable, flatten, read_source

FIXTURES = Path(__file__).parent.parent / "fixtures" / "replay"


def _one(path: Path, hook: str | None = None) -> list[Job | Unreadable]:
    (source,) = discover([str(path)])
    return read_source(source, hook)


def _text(text: str, name: str = "x.ndjson#L1") -> list[Job | Unreadable]:
    return read_source(Source(name=name, key=name, text=text), None)


def test_request_file_uses_its_hook_patient_prefetch_drafts_and_selections() -> None:
    path = FIXTURES / "cases" / "requests" / "order-select.json"
    (job,) = _one(path, hook="patient-view")
    assert isinstance(job, Job)
    document = json.loads(path.read_text())
    assert job.hook == "order-select"
    assert job.patient_id == "r-order"
    assert job.resources == [document["prefetch"]["patient"], document["prefetch"]["observations"]]
    # the draftOrders Bundle whole: the FHIR stage reads it (and reports bad entries)
    assert job.draft_orders == [document["context"]["draftOrders"]]
    assert job.selections == ["ServiceRequest/r-order-sr"]


def test_single_patient_bundle_is_handed_over_whole_as_patient_view() -> None:
    path = FIXTURES / "cases" / "spine" / "osteoporosis.json"
    (job,) = _one(path)
    assert isinstance(job, Job)
    assert job.hook == "patient-view"
    assert job.resources == [json.loads(path.read_text())]
    assert job.patient_id == "r-osteo"
    assert job.name == str(path)
    assert (job.draft_orders, job.selections) == ([], [])


@pytest.mark.parametrize(
    ("hook", "selections"),
    [("order-select", ["ServiceRequest/r-order-sr"]), ("order-sign", [])],
)
def test_bundle_with_order_hook_takes_its_draft_orders(hook: str, selections: list[str]) -> None:
    (job,) = _one(FIXTURES / "cases" / "order-bundle.json", hook=hook)
    assert isinstance(job, Job)
    assert job.hook == hook
    assert [r["id"] for r in job.draft_orders] == ["r-order-sr"]
    assert job.selections == selections
    assert all(r.get("status") != "draft" for r in job.resources)
    assert [r["resourceType"] for r in job.resources] == [
        "Patient",
        "Device",
        "Observation",
        "Observation",
    ]


def test_only_draft_service_and_medication_requests_are_draft_orders() -> None:
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "p"},
        {"resourceType": "ServiceRequest", "id": "active", "status": "active"},
        {"resourceType": "MedicationRequest", "id": "med", "status": "draft"},
        {"resourceType": "Observation", "id": "obs", "status": "draft"},
    ]
    bundle = {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}
    (job,) = read_source(Source("b.json#L1", "b", text=json.dumps(bundle)), "order-select")
    assert isinstance(job, Job)
    assert [r["id"] for r in job.draft_orders] == ["med"]
    assert job.selections == ["MedicationRequest/med"]
    assert [r["id"] for r in job.resources] == ["p", "active", "obs"]


def test_multi_patient_bundle_is_split_per_patient_with_names() -> None:
    path = FIXTURES / "cases" / "family.json"
    jobs = _one(path)
    assert [j.name for j in jobs] == [f"{path}#Patient/r-mother", f"{path}#Patient/r-son"]
    assert [j.key for j in jobs] == ["family.json#Patient/r-mother", "family.json#Patient/r-son"]
    mother, son = jobs
    assert isinstance(mother, Job)
    assert isinstance(son, Job)
    assert mother.patient_id == "r-mother"
    assert {r["id"] for r in mother.resources} >= {"r-mother", "r-mother-t", "r-mother-bmd"}
    assert not any(
        r["id"].startswith("r-son") and r["resourceType"] in ("Patient", "Observation")
        for r in mother.resources
    )
    assert son.patient_id == "r-son"


def test_single_resource_is_evaluated_like_a_bundle_of_one() -> None:
    (job,) = _text('{"resourceType": "Patient", "id": "p1", "gender": "female"}')
    assert isinstance(job, Job)
    assert job.resources == [{"resourceType": "Patient", "id": "p1", "gender": "female"}]
    assert job.patient_id == "p1"


def test_flatten_reads_nested_bundles_and_skips_entries_without_resource() -> None:
    inner = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "A", "id": "2"}}]}
    outer = {
        "resourceType": "Bundle",
        "entry": [{"resource": {"resourceType": "A", "id": "1"}}, {"resource": inner}, {}, 3],
    }
    assert [r["id"] for r in flatten(outer)] == ["1", "2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{",
            "x.ndjson#L1: not valid JSON: Expecting property name enclosed in double quotes "
            "at line 1 column 2",
        ),
        (
            "[1]",
            "x.ndjson#L1: expected a JSON object (a FHIR Bundle or a CDS Hooks request), "
            "found a JSON list",
        ),
        (
            '{"a": 1}',
            "x.ndjson#L1: neither a FHIR resource (no resourceType) nor a CDS Hooks "
            "request (no hook and context)",
        ),
        (
            '{"hook": "encounter-start", "context": {}}',
            "x.ndjson#L1: hook 'encounter-start' is "
            "not one this service answers (use one of patient-view, order-select, order-sign)",
        ),
        ('{"hook": "patient-view", "context": []}', "x.ndjson#L1: context must be a JSON object"),
        (
            '{"hook": "patient-view", "context": {}, "prefetch": {"p": [1]}}',
            "x.ndjson#L1: prefetch.p must be a FHIR resource or Bundle (or null), "
            "found a JSON list",
        ),
        (
            '{"hook": "order-sign", "context": {"draftOrders": 5}}',
            "x.ndjson#L1: context.draftOrders must be a FHIR Bundle",
        ),
    ],
)
def test_unreadable_documents_say_why(text: str, message: str) -> None:
    (item,) = _text(text)
    assert isinstance(item, Unreadable)
    assert item.outcome["resourceType"] == "OperationOutcome"
    (issue,) = item.outcome["issue"]
    assert issue["severity"] == "error"
    assert issue["diagnostics"] == message


def test_missing_file_is_unreadable_not_found(tmp_path: Path) -> None:
    (item,) = _one(tmp_path / "nope.json")
    assert isinstance(item, Unreadable)
    assert item.outcome["issue"][0]["code"] == "not-found"
    assert item.outcome["issue"][0]["diagnostics"].endswith("nope.json: no such file or folder")


def test_non_utf8_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"resourceType": "Patient", "name": "\xe9"}')
    (item,) = _one(path)
    assert isinstance(item, Unreadable)
    assert "not UTF-8 text" in item.outcome["issue"][0]["diagnostics"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceType",
                    "id",
                    "entry",
                    "resource",
                    "hook",
                    "context",
                    "prefetch",
                    "patientId",
                    "draftOrders",
                    "selections",
                    "status",
                    "subject",
                    "reference",
                ]
            )
            | st.text(max_size=4),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)
_resource_types = st.sampled_from(
    ["Bundle", "Patient", "Observation", "ServiceRequest", "MedicationRequest", 3, None]
)


@given(document=_json, hook=st.sampled_from([None, "patient-view", "order-select", "order-sign"]))
def test_reading_any_json_never_raises(document: Any, hook: str | None) -> None:
    items = read_source(Source("x.ndjson#L1", "x.ndjson#L1", text=json.dumps(document)), hook)
    assert items
    assert all(isinstance(item, Job | Unreadable) for item in items)


@given(
    entries=st.lists(
        st.fixed_dictionaries(
            {
                "resource": st.fixed_dictionaries(
                    {"resourceType": _resource_types, "id": st.sampled_from(["a", "b", "c", 1])},
                    optional={
                        "subject": st.fixed_dictionaries(
                            {"reference": st.sampled_from(["Patient/a", "Patient/b", "x", 5])}
                        ),
                        "status": st.sampled_from(["draft", "active", None]),
                    },
                )
            }
        ),
        max_size=6,
    ),
    hook=st.sampled_from([None, "order-select"]),
)
def test_bundles_of_odd_entries_never_raise_and_names_are_unique(
    entries: list[dict[str, Any]], hook: str | None
) -> None:
    bundle = {"resourceType": "Bundle", "entry": entries}
    items = read_source(Source("b.json", "b.json", text=json.dumps(bundle)), hook)
    names = [item.name for item in items]
    assert len(names) == len(set(names))
    assert all(name.startswith("b.json") for name in names)
