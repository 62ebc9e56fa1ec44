"""Reading one source: request files, Bundles (split per patient, draft orders), errors."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.contracts.hooks import request_call
from cds.pipeline import Evaluator
from cds.replay.inputs import Source, discover
from cds.replay.reader import Job, Unreadable, read_source
from tests import fhir_factory as fhir
from tests.stories.helpers import AS_OF, RULES

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


def _record_with_drafts(*bad_entries: Any) -> dict[str, Any]:
    """A plain Bundle holding a patient's record, a draft DXA order (nested, as a
    transaction Bundle can hold it) and `bad_entries` after them."""
    patient, draft = fhir.patient("p"), fhir.draft_dxa("sr", subject="p")
    inner = {"resourceType": "Bundle", "id": "inner", "entry": [{"resource": draft}]}
    entries: list[Any] = [{"resource": patient}, {"resource": inner}, *bad_entries]
    return {"resourceType": "Bundle", "id": "orders", "type": "collection", "entry": entries}


#: Entries that are no resource, as a junk-laden Bundle holds them: reported by position.
BAD_ENTRIES: list[Any] = [
    "not an entry",
    {"resource": "ServiceRequest/elsewhere"},
    {"resource": {"status": "draft", "intent": "order"}},
    {"resource": []},
]


def _entry_issues(outcome: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The outcome's issues that name the Bundle `orders` (or one of its entries)."""
    issues = (outcome or {}).get("issue", [])
    return [i for i in issues if str(i.get("diagnostics")).startswith("Bundle/orders")]


@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
def test_an_order_hook_replay_reports_a_bad_entry_as_the_service_does_in_draft_orders(
    hook: str,
) -> None:
    """A plain Bundle replayed under an order hook is split into record and draft orders by
    the FHIR stage's walk: an entry that is no resource is the data error the service's
    mapping (`request_call`) and FHIR stage give for the same entry of the same Bundle in
    context.draftOrders (it used to be dropped without a word), and the good entries are
    read as before. (The HTTP service's body validation refuses such a draftOrders entry
    before: tests/api.)"""
    document = _record_with_drafts(*BAD_ENTRIES)
    (job,) = read_source(Source("b.json", "b.json", text=json.dumps(document)), hook)
    assert isinstance(job, Job)
    assert [r["id"] for r in job.draft_orders] == ["sr"]
    assert [r.get("id") for r in job.resources] == ["p"]
    evaluator = Evaluator.from_rules_dir(RULES)
    as_of = date.fromisoformat(AS_OF)
    replayed = evaluator.evaluate(job.to_input(as_of))
    request = {
        "hook": hook,
        "context": {"patientId": "p", "draftOrders": document},
        "prefetch": {"patient": document["entry"][0]["resource"]},
    }
    served = evaluator.evaluate(request_call(request).to_input(as_of))
    reported = _entry_issues(replayed.outcome)
    assert reported == _entry_issues(served.outcome)
    first_bad = len(document["entry"]) - len(BAD_ENTRIES)
    assert len(reported) == len(BAD_ENTRIES)
    assert reported[0]["expression"] == [f"Bundle.entry[{first_bad}]"]  # not an object
    assert [str(i["diagnostics"]).split(":")[0] for i in reported[1:]] == [
        f"Bundle/orders entry[{first_bad + k}]" for k in range(1, len(BAD_ENTRIES))
    ]
    # the draft order is read (used in the trace) on both sides
    assert "ServiceRequest/sr" in {u.resource for u in replayed.trace.used}
    assert "ServiceRequest/sr" in {u.resource for u in served.trace.used}


def test_a_good_bundle_under_an_order_hook_carries_no_data_errors_and_traces_outcomes() -> None:
    """The other side: nothing to report, and an OperationOutcome entry (no data) is
    handed on with the record, so the FHIR stage traces it as it does under patient-view."""
    outcome = {"resourceType": "OperationOutcome", "id": "oo", "issue": [{"severity": "error"}]}
    document = _record_with_drafts({"resource": outcome})
    (job,) = read_source(Source("b.json", "b.json", text=json.dumps(document)), "order-sign")
    assert isinstance(job, Job)
    assert job.call.issues == []
    assert [r["id"] for r in job.resources] == ["p", "oo"]
    result = Evaluator.from_rules_dir(RULES).evaluate(job.to_input(date.fromisoformat(AS_OF)))
    assert _entry_issues(result.outcome) == []
    assert any(i.resource == "OperationOutcome/oo" for i in result.trace.ignored)


@pytest.mark.parametrize("hook", ["patient-view", "order-sign"])
def test_a_split_bundle_reports_its_bad_entries_with_every_patient(hook: str) -> None:
    """An entry that is no resource belongs to no patient of a split Bundle: every
    patient's input reports it (its data errors used to be lost in the split)."""
    document = json.loads((FIXTURES / "cases" / "family.json").read_text())
    document["entry"].append({"resource": "Observation/lost"})
    bad_at = len(document["entry"]) - 1
    jobs = read_source(Source("f.json", "f.json", text=json.dumps(document)), hook)
    assert [j.name for j in jobs] == ["f.json#Patient/r-mother", "f.json#Patient/r-son"]
    evaluator = Evaluator.from_rules_dir(RULES)
    for job in jobs:
        assert isinstance(job, Job)
        result = evaluator.evaluate(job.to_input(date.fromisoformat(AS_OF)))
        issues = (result.outcome or {}).get("issue", [])
        named = [i for i in issues if f"entry[{bad_at}] is not a FHIR resource" in str(i)]
        assert len(named) == 1, issues


def test_a_split_bundle_without_bad_entries_carries_no_data_errors() -> None:
    jobs = _one(FIXTURES / "cases" / "family.json")
    assert len(jobs) == 2
    assert all(isinstance(j, Job) and j.call.issues == [] for j in jobs)


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
