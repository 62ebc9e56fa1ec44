"""cds.fhir.bundle: flattening Bundles and loose resources, duplicates, references, and
split_by_patient."""

from __future__ import annotations

from cds.contracts.outcome import DataIssue
from cds.facts import build_facts
from cds.fhir import split_by_patient
from cds.fhir.bundle import MAX_BUNDLE_DEPTH, dedupe, flatten, patient_of, ref_target, url_map
from cds.fhir.trace import Trace
from tests.facts.helpers import assessment
from tests.fhir_factory import AS_OF, PARAMS, bundle, lumbar_t, patient


def _flatten(*items: object) -> tuple[list[str], list[DataIssue], Trace]:
    issues: list[DataIssue] = []
    trace = Trace()
    entries = flatten(list(items), issues, trace)
    return [e.ref for e in entries], issues, trace


def test_flatten_reads_nested_bundles_and_loose_resources() -> None:
    inner = bundle(lumbar_t(-1.0, id="a"))
    refs, issues, _ = _flatten(bundle(patient(), inner), lumbar_t(-2.0, id="b"))
    assert refs == ["Patient/p1", "Observation/a", "Observation/b"]
    assert issues == []


def test_flatten_names_what_is_not_a_resource() -> None:
    refs, issues, trace = _flatten(None, 3, {"id": "x"})
    assert refs == []
    assert [(i.resource, i.code, i.expression) for i in issues] == [
        ("input[1]", "structure", None),
        ("input[2]", "structure", "resourceType"),
    ]
    assert "it is int" in issues[0].message
    assert [(i.resource, i.reason) for i in trace.ignored] == [("input[0]", "no data (null)")]


def test_flatten_reports_bad_bundle_entries_by_index() -> None:
    b = {"resourceType": "Bundle", "id": "b1", "entry": [{"resource": patient()}, 7, {}]}
    refs, issues, _ = _flatten(b, {"resourceType": "Bundle", "id": "b2", "entry": {}})
    assert refs == ["Patient/p1"]
    assert [(i.resource, i.expression) for i in issues] == [
        ("Bundle/b1", "Bundle.entry[1]"),
        ("Bundle/b2", "Bundle.entry"),
    ]


def test_flatten_stops_at_the_nesting_bound() -> None:
    deep: dict[str, object] = bundle(patient())
    for _ in range(MAX_BUNDLE_DEPTH):
        deep = bundle(deep)
    refs, issues, _ = _flatten(deep)
    assert refs == []
    assert [i.message for i in issues] == [
        f"Bundles nested deeper than {MAX_BUNDLE_DEPTH} are not read"
    ]


def test_an_operation_outcome_is_traced_with_its_diagnostics() -> None:
    oo = {"resourceType": "OperationOutcome", "id": "o", "issue": [{"diagnostics": "timeout"}]}
    refs, _, trace = _flatten(bundle(oo))
    assert refs == []
    assert [i.reason for i in trace.ignored] == [
        "no data (the source sent an OperationOutcome: timeout)"
    ]


def test_a_resource_without_id_gets_a_content_reference() -> None:
    obs = lumbar_t(-1.0)
    del obs["id"]
    first, _, _ = _flatten(obs)
    again, _, _ = _flatten(dict(obs))
    assert first == again
    assert first[0].startswith("Observation/#")


def test_dedupe_keeps_the_latest_copy_whatever_the_order() -> None:
    old = lumbar_t(-1.0, id="a", meta={"lastUpdated": "2026-01-01T00:00:00Z"})
    new = lumbar_t(-2.0, id="a", meta={"lastUpdated": "2026-02-01T00:00:00Z"})
    for order in ([old, new], [new, old]):
        issues: list[DataIssue] = []
        trace = Trace()
        kept = dedupe(flatten(order, issues, trace), trace)
        assert [e.raw["valueQuantity"]["value"] for e in kept] == [-2.0]
        assert [i.reason for i in trace.ignored] == [
            "duplicate of a later copy of the same resource"
        ]


def test_references_normalise_to_type_and_id() -> None:
    urls = {"urn:uuid:x": "Patient/p9"}
    assert ref_target("Patient/p1", urls) == "Patient/p1"
    assert ref_target("https://ehr.example.org/fhir/Patient/p1/_history/3", urls) == "Patient/p1"
    assert ref_target("urn:uuid:x", urls) == "Patient/p9"
    assert ref_target("urn:uuid:y", urls) is None
    assert ref_target("#contained", urls) is None
    assert patient_of({"subject": {"reference": "Patient/p1"}}) == "p1"
    assert patient_of({"patient": {"reference": "Group/g"}}) is None
    issues: list[DataIssue] = []
    assert url_map(flatten([bundle(patient())], issues, Trace())) == {
        "urn:uuid:Patient-p1": "Patient/p1"
    }


def test_split_by_patient() -> None:
    b = bundle(
        patient("p1"),
        patient("p2"),
        lumbar_t(-1.0, id="a", subject="p1"),
        lumbar_t(-2.0, id="b", subject="p2"),
        lumbar_t(-3.0, id="c", subject="p3"),
        {"resourceType": "Device", "id": "d1"},
    )
    groups, issues = split_by_patient([b, None])
    assert issues == []
    assert list(groups) == ["p1", "p2", "p3"]
    ids = {k: sorted(r["id"] for r in v) for k, v in groups.items()}
    assert ids == {"p1": ["a", "d1", "p1"], "p2": ["b", "d1", "p2"], "p3": ["c", "d1"]}
    fs = build_facts(groups["p2"], PARAMS, AS_OF)
    assert assessment(fs).lumbar_t == -2.0


def test_split_groups_are_self_contained_when_references_are_urns() -> None:
    def urn(res: dict[str, object], target: str) -> dict[str, object]:
        res["subject"] = {"reference": f"urn:uuid:{target}"}
        return res

    dev = {"resourceType": "Device", "id": "d1", "manufacturer": "Hologic"}
    o1 = urn(lumbar_t(-1.0, id="a", subject=None), "pat-1")
    o1["device"] = {"reference": "urn:uuid:dev-1"}
    o2 = urn(lumbar_t(-2.0, id="b", subject=None), "pat-2")
    b = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:pat-1", "resource": patient("p1")},
            {"fullUrl": "urn:uuid:pat-2", "resource": patient("p2")},
            {"fullUrl": "urn:uuid:dev-1", "resource": dev},
            {"fullUrl": "urn:uuid:o1", "resource": o1},
            {"fullUrl": "urn:uuid:o2", "resource": o2},
        ],
    }
    groups = split_by_patient([b]).groups
    assert o1["subject"] == {"reference": "urn:uuid:pat-1"}  # the input is not modified
    a1 = assessment(build_facts(groups["p1"], PARAMS, AS_OF))
    a2 = assessment(build_facts(groups["p2"], PARAMS, AS_OF))
    assert (a1.lumbar_t, a2.lumbar_t) == (-1.0, -2.0)
    assert a1.manufacturer == "hologic"


def test_split_by_patient_returns_the_data_errors_of_entries_that_are_no_resource() -> None:
    """They belong to no group, and used to be lost in the split."""
    b = {**bundle(patient("p1"), patient("p2")), "id": "two"}
    b["entry"] += [{"resource": "Observation/x"}, 7]
    groups, issues = split_by_patient([b])
    assert list(groups) == ["p1", "p2"]
    assert [(i.resource, i.expression) for i in issues] == [
        ("Bundle/two entry[2]", None),
        ("Bundle/two", "Bundle.entry[3]"),
    ]
    expected: list[DataIssue] = []
    flatten([b], expected, Trace())
    assert issues == expected  # the read's own data errors for the same entries


def test_flatten_keeps_operation_outcomes_as_entries_when_asked() -> None:
    oo = {"resourceType": "OperationOutcome", "id": "oo", "issue": []}
    issues: list[DataIssue] = []
    kept = flatten([bundle(oo, patient())], issues, Trace(), outcomes=True)
    assert [e.ref for e in kept] == ["OperationOutcome/oo", "Patient/p1"]
    trace = Trace()
    assert [e.ref for e in flatten([bundle(oo, patient())], issues, trace)] == ["Patient/p1"]
    assert [i.resource for i in trace.ignored] == ["OperationOutcome/oo"]
    assert issues == []
