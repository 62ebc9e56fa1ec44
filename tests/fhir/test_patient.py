"""cds.fhir.patient and cds.fhir.drafts (through Reader): which patient is read, its sex
and birth date, and the draft DXA orders."""

from __future__ import annotations

from tests.fhir.helpers import errors, ignored, read
from tests.fhir_factory import draft_dxa, lumbar_t, patient


def test_the_only_patient_is_read() -> None:
    data = read()
    assert (data.patient_ref, data.gender, str(data.birth_date)) == (
        "Patient/p1",
        "female",
        "1955-03-01",
    )


def test_patient_id_chooses_and_the_others_are_traced() -> None:
    data = read(patient("p1"), patient("p2"), with_patient=False, patient_id="p2")
    assert data.patient_ref == "Patient/p2"
    assert ignored(data, "Patient/p1") == ["not the patient evaluated"]


def test_no_several_or_absent_patients_are_fatal() -> None:
    assert [i.code for i in read(with_patient=False).issues] == ["required"]
    several = read(patient("p1"), patient("p2"), with_patient=False)
    assert [i.code for i in several.issues] == ["multiple-matches"]
    assert [i.code for i in read(patient_id="nope").issues] == ["not-found"]


def test_an_invalid_gender_is_unknown_with_a_warning() -> None:
    data = read(patient(gender="f"), with_patient=False)
    assert data.gender is None
    assert [(i.severity, i.expression) for i in data.issues] == [("warning", "Patient.gender")]


def test_a_partial_birth_date_is_an_assumption() -> None:
    data = read(patient(birth_date="1955"), with_patient=False)
    assert str(data.birth_date) == "1955-01-01"
    assert data.trace.assumptions == [
        "Patient/p1: birth date 1955 is partial; its first day is used"
    ]


def test_resources_of_another_patient_are_not_read() -> None:
    data = read(lumbar_t(-1.0, id="a", subject="p2"))
    assert data.measurements == []
    assert ignored(data, "Observation/a") == ["not this patient (subject Patient/p2)"]


def test_a_resource_type_not_read_and_an_invalid_resource() -> None:
    bad = lumbar_t(-1.0, id="b")
    bad["valueQuantity"] = "low"
    data = read({"resourceType": "Encounter", "id": "e"}, bad)
    assert ignored(data, "Encounter/e") == ["resource type Encounter is not read"]
    assert [i.resource for i in errors(data)] == ["Observation/b"]


def test_draft_dxa_orders() -> None:
    data = read(draft_dxa("o1", authored="2026-11-20"), draft_dxa("o2", status="revoked"))
    assert data.drafts == []  # draft orders come only from context.draftOrders
    data = read(draft_orders=[draft_dxa("o1"), draft_dxa("o2", status="revoked")])
    assert [d.ref for d in data.drafts] == ["ServiceRequest/o1"]
    assert ignored(data, "ServiceRequest/o2") == ["status revoked"]
    other = read(draft_orders=draft_dxa("o3", code="00000"))
    assert other.drafts == []
    assert ignored(other, "ServiceRequest/o3")[0].startswith("not a DXA order")
