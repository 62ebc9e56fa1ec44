"""cds.fhir.medications (through Reader): medication records by code or name, their
course (start, end, ongoing), glucocorticoid doses, oncology regimens, bone-harming drugs."""

from __future__ import annotations

from decimal import Decimal

from tests.fhir.helpers import ignored, profiles, read, used
from tests.fhir_factory import AS_OF, med_admin, med_request, med_statement


def _ingredient(med_class: str) -> str:
    return next(i.ingredient for i in profiles().ingredients if i.med_class == med_class)


def test_a_statement_by_name_is_a_record_with_its_course() -> None:
    data = read(med_statement("alendronate", id="m", start="2024-01-01", end="2025-01-01"))
    (med,) = data.meds
    assert (med.ref, med.ingredient.ingredient, med.source) == (
        "MedicationStatement/m",
        "alendronate",
        "statement",
    )
    assert (str(med.start), str(med.end), med.ongoing) == ("2024-01-01", "2025-01-01", False)


def test_an_active_statement_without_end_is_ongoing() -> None:
    (med,) = read(med_statement("alendronate")).meds
    assert med.ongoing


def test_requests_are_orders_only() -> None:
    (med,) = read(med_request("alendronate")).meds
    assert (med.source, med.ongoing) == ("request", True)
    plan = read(med_request("alendronate", id="r", intent="plan"))
    assert plan.meds == []
    assert ignored(plan, "MedicationRequest/r") == ["intent plan: not an order (alendronate)"]


def test_an_administration_needs_its_date() -> None:
    (med,) = read(med_admin("denosumab", date="2026-01-01")).meds
    assert (med.source, str(med.dose_date)) == ("administration", "2026-01-01")
    undated = read(med_admin("denosumab", id="a", date=None))
    assert undated.meds == []
    assert ignored(undated, "MedicationAdministration/a")[0].startswith("data error:")


def test_a_record_starting_after_the_as_of_date_is_ignored() -> None:
    data = read(med_statement("alendronate", id="m", start="2027-01-01"))
    assert data.meds == []
    assert ignored(data, "MedicationStatement/m") == [
        f"starts 2027-01-01 after the as-of date {AS_OF}"
    ]


def test_a_glucocorticoid_dose_is_prednisone_equivalent_per_day() -> None:
    name = _ingredient("glucocorticoid")
    ing = next(i for i in profiles().ingredients if i.ingredient == name)
    (med,) = read(med_statement(name, dose_mg=2, frequency=2, start="2026-01-01")).meds
    factor = ing.prednisone_factor or Decimal(1)
    assert med.mg_day == (Decimal(4) * factor).quantize(Decimal("0.01"))


def test_a_dose_in_an_unknown_unit_is_a_warning_and_no_dose() -> None:
    name = _ingredient("glucocorticoid")
    data = read(med_statement(name, dose_mg=1, dose_unit="tablet", start="2026-01-01"))
    assert [m.mg_day for m in data.meds] == [None]
    assert [(i.severity, i.expression) for i in data.issues] == [
        ("warning", "MedicationStatement.dosage[0].doseAndRate[0].doseQuantity.code")
    ]


def test_an_unknown_medication_is_ignored_with_its_label() -> None:
    data = read(med_statement("paracetamol", id="m"))
    assert ignored(data, "MedicationStatement/m") == [
        "not a bone-active, glucocorticoid or bone-harming medication (paracetamol)"
    ]


def test_a_bone_harming_drug_by_name() -> None:
    name, drug = profiles().harming_names[-1]
    data = read(med_statement(name, id="m"))
    assert [h.drug.ingredient for h in data.harming] == [drug.ingredient]
    assert "harms bone: CS-6.8" in used(data, "MedicationStatement/m")[0]


def test_a_medication_reference_gives_the_code() -> None:
    med = {"resourceType": "Medication", "id": "x", "code": {"text": "alendronate 70 mg"}}
    ms = med_statement(None, id="m")
    del ms["medicationCodeableConcept"]
    ms["medicationReference"] = {"reference": "Medication/x"}
    data = read(med, ms)
    assert [m.ingredient.ingredient for m in data.meds] == ["alendronate"]
