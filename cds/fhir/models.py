"""Slim typed models of the FHIR R4 elements osteohooks reads.

Why not the full fhir.resources models on every request: validating one Observation
with ``fhir.resources.R4B`` costs 50-160 us (measured, benchmarks/facts_bench.py), so a
20-resource patient alone would take 2-3 ms. These models declare only the elements we
read, with FHIR JSON types (strings are strings, decimals are JSON numbers, no
coercion), and ignore the rest; a wrong type in an element we read fails validation and
becomes a data error naming that element. Full fhir.resources validation is available
with ``build_facts(..., validation="full")`` (see cds.fhir.read).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool, StrictInt, StrictStr

_INF = float("inf")


def _json_decimal(value: Any) -> Decimal:
    """A FHIR decimal: a JSON number (not a string, not a boolean), kept as written."""
    kind = type(value)
    if kind is int:  # the common cases (int, float) by their exact type first
        return Decimal(value)
    if kind is not float:
        if kind is bool or not isinstance(value, int | float | Decimal):  # bool: no subclass
            raise ValueError("must be a JSON number")
        if not isinstance(value, float):
            return Decimal(value)
    if value != value or value == _INF or value == -_INF:
        raise ValueError("must be a finite number")
    return Decimal(repr(value))


#: a plain validator: the Decimal it returns is the value (a before-validator's result was
#: validated again as a Decimal, a second look at a value made here)
FhirDecimal = Annotated[Decimal, PlainValidator(_json_decimal)]


class Element(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Coding(Element):
    system: StrictStr | None = None
    code: StrictStr | None = None
    display: StrictStr | None = None


class CodeableConcept(Element):
    coding: list[Coding] = Field(default_factory=list)
    text: StrictStr | None = None

    def words(self) -> str:
        """Lower-cased text and displays, for text recognition."""
        parts = [self.text or ""] + [c.display or "" for c in self.coding]
        return " | ".join(p for p in parts if p).lower()

    def label(self) -> str:
        """A human label: text, else the first display, else system|code."""
        if self.text:
            return self.text
        for c in self.coding:
            if c.display:
                return c.display
        for c in self.coding:
            if c.code:
                return f"{c.system or ''}|{c.code}"
        return ""


class Identifier(Element):
    system: StrictStr | None = None
    value: StrictStr | None = None


class Reference(Element):
    reference: StrictStr | None = None
    display: StrictStr | None = None
    identifier: Identifier | None = None


class Quantity(Element):
    value: FhirDecimal | None = None
    comparator: StrictStr | None = None
    unit: StrictStr | None = None
    system: StrictStr | None = None
    code: StrictStr | None = None


class Period(Element):
    start: StrictStr | None = None
    end: StrictStr | None = None


class Meta(Element):
    versionId: StrictStr | None = None
    lastUpdated: StrictStr | None = None


class Resource(Element):
    resourceType: StrictStr
    id: StrictStr | None = None
    meta: Meta | None = None


class Patient(Resource):
    gender: StrictStr | None = None
    birthDate: StrictStr | None = None


class ObservationComponent(Element):
    code: CodeableConcept
    valueQuantity: Quantity | None = None
    valueString: StrictStr | None = None
    valueCodeableConcept: CodeableConcept | None = None
    valueInteger: StrictInt | None = None
    valueBoolean: StrictBool | None = None


class Observation(Resource):
    status: StrictStr | None = None
    code: CodeableConcept | None = None
    subject: Reference | None = None
    effectiveDateTime: StrictStr | None = None
    effectivePeriod: Period | None = None
    effectiveInstant: StrictStr | None = None
    valueQuantity: Quantity | None = None
    valueString: StrictStr | None = None
    valueCodeableConcept: CodeableConcept | None = None
    valueInteger: StrictInt | None = None
    valueBoolean: StrictBool | None = None
    bodySite: CodeableConcept | None = None
    device: Reference | None = None
    component: list[ObservationComponent] = Field(default_factory=list)


class DeviceName(Element):
    name: StrictStr | None = None


class Device(Resource):
    manufacturer: StrictStr | None = None
    modelNumber: StrictStr | None = None
    serialNumber: StrictStr | None = None
    deviceName: list[DeviceName] = Field(default_factory=list)
    type: CodeableConcept | None = None
    identifier: list[Identifier] = Field(default_factory=list)


class Condition(Resource):
    clinicalStatus: CodeableConcept | None = None
    verificationStatus: CodeableConcept | None = None
    code: CodeableConcept | None = None
    subject: Reference | None = None
    onsetDateTime: StrictStr | None = None
    onsetPeriod: Period | None = None
    recordedDate: StrictStr | None = None


class Procedure(Resource):
    status: StrictStr | None = None
    code: CodeableConcept | None = None
    subject: Reference | None = None
    performedDateTime: StrictStr | None = None
    performedPeriod: Period | None = None


class RepeatTiming(Element):
    frequency: StrictInt | None = None
    period: FhirDecimal | None = None
    periodUnit: StrictStr | None = None


class Timing(Element):
    repeat: RepeatTiming | None = None


class DoseAndRate(Element):
    doseQuantity: Quantity | None = None


class Dosage(Element):
    text: StrictStr | None = None
    timing: Timing | None = None
    route: CodeableConcept | None = None
    doseAndRate: list[DoseAndRate] = Field(default_factory=list)


class AdministrationDosage(Element):
    text: StrictStr | None = None
    dose: Quantity | None = None
    route: CodeableConcept | None = None


class Medication(Resource):
    code: CodeableConcept | None = None
    form: CodeableConcept | None = None  # CS-1.8 rev 2: dose form (systemic or not)


class MedicationStatement(Resource):
    status: StrictStr | None = None
    medicationCodeableConcept: CodeableConcept | None = None
    medicationReference: Reference | None = None
    subject: Reference | None = None
    effectiveDateTime: StrictStr | None = None
    effectivePeriod: Period | None = None
    dosage: list[Dosage] = Field(default_factory=list)


class MedicationRequest(Resource):
    status: StrictStr | None = None
    intent: StrictStr | None = None
    medicationCodeableConcept: CodeableConcept | None = None
    medicationReference: Reference | None = None
    subject: Reference | None = None
    authoredOn: StrictStr | None = None
    dosageInstruction: list[Dosage] = Field(default_factory=list)


class MedicationAdministration(Resource):
    status: StrictStr | None = None
    medicationCodeableConcept: CodeableConcept | None = None
    medicationReference: Reference | None = None
    subject: Reference | None = None
    effectiveDateTime: StrictStr | None = None
    effectivePeriod: Period | None = None
    dosage: AdministrationDosage | None = None


class ServiceRequest(Resource):
    status: StrictStr | None = None
    intent: StrictStr | None = None
    code: CodeableConcept | None = None
    subject: Reference | None = None
    authoredOn: StrictStr | None = None


#: The resource types read, by resourceType.
MODELS: dict[str, type[Resource]] = {
    "Patient": Patient,
    "Observation": Observation,
    "Device": Device,
    "Condition": Condition,
    "Procedure": Procedure,
    "Medication": Medication,
    "MedicationStatement": MedicationStatement,
    "MedicationRequest": MedicationRequest,
    "MedicationAdministration": MedicationAdministration,
    "ServiceRequest": ServiceRequest,
}
