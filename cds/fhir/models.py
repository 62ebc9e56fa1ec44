"""Slim typed models of the FHIR R4 elements osteohooks reads.

Why not the full fhir.resources models on every request: validating one Observation
with ``fhir.resources.R4B`` costs 50-160 us (measured, benchmarks/facts_bench.py), so a
20-resource patient alone would take 2-3 ms. These models declare only the elements we
read, with FHIR JSON types (strings are strings, decimals are JSON numbers, no
coercion), and ignore the rest; a wrong type in an element we read fails validation and
becomes a data error naming that element. Full fhir.resources validation is available
with ``build_facts(..., validation="full")`` (see cds.fhir.read).

The models are TypedDicts validated by pydantic (one TypeAdapter per resource type,
:data:`VALIDATE`): the validated value is a plain dict holding only the elements
declared here that the input has (an absent element is an absent key, read with
``.get``). A BaseModel made one instance per element object, with its field set and a
default for every absent field: an Observation validated as BaseModels cost ~47,500
instructions, as TypedDicts ~23,700, with the same checks (issue 15).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Required

from pydantic import PlainValidator, StrictBool, StrictInt, StrictStr, TypeAdapter

# pydantic reads a TypedDict's hints only from typing_extensions' TypedDict before 3.12
from typing_extensions import TypedDict, get_type_hints

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

# Every element may be absent (total=False) or null (`| None`): both read as None by
# `.get`, as the BaseModels' `= None` defaults did. Lists are not nullable (a null list
# is a data error, as before); an absent one reads as `.get(name, ())`.


class Coding(TypedDict, total=False):
    system: StrictStr | None
    code: StrictStr | None
    display: StrictStr | None


class CodeableConcept(TypedDict, total=False):
    coding: list[Coding]
    text: StrictStr | None


def words(cc: CodeableConcept) -> str:
    """Lower-cased text and displays, for text recognition."""
    parts = [cc.get("text") or ""] + [c.get("display") or "" for c in cc.get("coding", ())]
    return " | ".join(p for p in parts if p).lower()


def label(cc: CodeableConcept) -> str:
    """A human label: text, else the first display, else system|code."""
    text = cc.get("text")
    if text:
        return text
    codings = cc.get("coding", ())
    for c in codings:
        shown = c.get("display")
        if shown:
            return shown
    for c in codings:
        code = c.get("code")
        if code:
            return f"{c.get('system') or ''}|{code}"
    return ""


def concept_text(cc: CodeableConcept) -> str:
    """The text a CodeableConcept was shown by in data errors when it was a BaseModel
    (its str(): every field, absent ones as their defaults), kept as it was."""
    codings = ", ".join(
        f"Coding(system={c.get('system')!r}, code={c.get('code')!r}, display={c.get('display')!r})"
        for c in cc.get("coding", ())
    )
    return f"coding=[{codings}] text={cc.get('text')!r}"


class Identifier(TypedDict, total=False):
    system: StrictStr | None
    value: StrictStr | None


class Reference(TypedDict, total=False):
    reference: StrictStr | None
    display: StrictStr | None
    identifier: Identifier | None


class Quantity(TypedDict, total=False):
    value: FhirDecimal | None
    comparator: StrictStr | None
    unit: StrictStr | None
    system: StrictStr | None
    code: StrictStr | None


class Period(TypedDict, total=False):
    start: StrictStr | None
    end: StrictStr | None


class Meta(TypedDict, total=False):
    versionId: StrictStr | None
    lastUpdated: StrictStr | None


class Resource(TypedDict, total=False):
    resourceType: Required[StrictStr]
    id: StrictStr | None
    meta: Meta | None


class Patient(Resource, total=False):
    gender: StrictStr | None
    birthDate: StrictStr | None


class ObservationComponent(TypedDict, total=False):
    code: Required[CodeableConcept]
    valueQuantity: Quantity | None
    valueString: StrictStr | None
    valueCodeableConcept: CodeableConcept | None
    valueInteger: StrictInt | None
    valueBoolean: StrictBool | None


class Observation(Resource, total=False):
    status: StrictStr | None
    code: CodeableConcept | None
    subject: Reference | None
    effectiveDateTime: StrictStr | None
    effectivePeriod: Period | None
    effectiveInstant: StrictStr | None
    valueQuantity: Quantity | None
    valueString: StrictStr | None
    valueCodeableConcept: CodeableConcept | None
    valueInteger: StrictInt | None
    valueBoolean: StrictBool | None
    bodySite: CodeableConcept | None
    device: Reference | None
    component: list[ObservationComponent]


class DeviceName(TypedDict, total=False):
    name: StrictStr | None


class Device(Resource, total=False):
    manufacturer: StrictStr | None
    modelNumber: StrictStr | None
    serialNumber: StrictStr | None
    deviceName: list[DeviceName]
    type: CodeableConcept | None
    identifier: list[Identifier]


class Condition(Resource, total=False):
    clinicalStatus: CodeableConcept | None
    verificationStatus: CodeableConcept | None
    code: CodeableConcept | None
    subject: Reference | None
    onsetDateTime: StrictStr | None
    onsetPeriod: Period | None
    recordedDate: StrictStr | None


class Procedure(Resource, total=False):
    status: StrictStr | None
    code: CodeableConcept | None
    subject: Reference | None
    performedDateTime: StrictStr | None
    performedPeriod: Period | None


class RepeatTiming(TypedDict, total=False):
    frequency: StrictInt | None
    period: FhirDecimal | None
    periodUnit: StrictStr | None


class Timing(TypedDict, total=False):
    repeat: RepeatTiming | None


class DoseAndRate(TypedDict, total=False):
    doseQuantity: Quantity | None


class Dosage(TypedDict, total=False):
    text: StrictStr | None
    timing: Timing | None
    route: CodeableConcept | None
    doseAndRate: list[DoseAndRate]


class AdministrationDosage(TypedDict, total=False):
    text: StrictStr | None
    dose: Quantity | None
    route: CodeableConcept | None


class Medication(Resource, total=False):
    code: CodeableConcept | None
    form: CodeableConcept | None  # CS-1.8 rev 2: dose form (systemic or not)


class MedicationStatement(Resource, total=False):
    status: StrictStr | None
    medicationCodeableConcept: CodeableConcept | None
    medicationReference: Reference | None
    subject: Reference | None
    effectiveDateTime: StrictStr | None
    effectivePeriod: Period | None
    dosage: list[Dosage]


class MedicationRequest(Resource, total=False):
    status: StrictStr | None
    intent: StrictStr | None
    medicationCodeableConcept: CodeableConcept | None
    medicationReference: Reference | None
    subject: Reference | None
    authoredOn: StrictStr | None
    dosageInstruction: list[Dosage]


class MedicationAdministration(Resource, total=False):
    status: StrictStr | None
    medicationCodeableConcept: CodeableConcept | None
    medicationReference: Reference | None
    subject: Reference | None
    effectiveDateTime: StrictStr | None
    effectivePeriod: Period | None
    dosage: AdministrationDosage | None


class ServiceRequest(Resource, total=False):
    status: StrictStr | None
    intent: StrictStr | None
    code: CodeableConcept | None
    subject: Reference | None
    authoredOn: StrictStr | None


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

#: the validation of each model of MODELS (pydantic.ValidationError on a data error), by
#: resourceType: the pydantic-core validator itself, without TypeAdapter's Python wrapper
VALIDATE = {rtype: TypeAdapter(model).validator.validate_python for rtype, model in MODELS.items()}


def model_at(rtype: str, loc: tuple[int | str, ...]) -> str | None:
    """The name of the model declared at `loc` (a validation error's location) inside a
    resource of type `rtype`; None when `loc` names no model."""
    node: Any = MODELS.get(rtype)
    for step in loc:
        if node is None:
            return None
        if isinstance(step, int):
            node = _item(node)
        else:
            hints = get_type_hints(node) if isinstance(node, type) else {}
            node = _unwrap(hints.get(step))
    return node.__name__ if isinstance(node, type) and node in _NAMED else None


def _unwrap(hint: Any) -> Any:
    """The type of an element's hint, without `| None` (a list stays a list)."""
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    if getattr(hint, "__origin__", None) is list or not args or len(args) > 1:
        return hint
    return args[0]


def _item(hint: Any) -> Any:
    """The item type of a list hint, else None."""
    if getattr(hint, "__origin__", None) is list:
        return hint.__args__[0]
    return None


#: every model (resources and their element types), for model_at
_NAMED: frozenset[type] = frozenset(
    {
        *MODELS.values(),
        Coding,
        CodeableConcept,
        Identifier,
        Reference,
        Quantity,
        Period,
        Meta,
        ObservationComponent,
        DeviceName,
        RepeatTiming,
        Timing,
        DoseAndRate,
        Dosage,
        AdministrationDosage,
    }
)
