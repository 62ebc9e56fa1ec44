"""The data errors of the FHIR read, by name: each constructor says what was wrong, in
which resource (``Type/id``) and where (a FHIRPath-style ``expression`` such as
``Observation.valueQuantity.unit``), its severity and FHIR issue code. The model itself
(`DataIssue`, its OperationOutcome form) is the contract's: `cds.contracts.outcome`.
The evaluation goes on without the resource; issues never raise.
"""

from __future__ import annotations

from cds.contracts.outcome import DataIssue, IssueCode

# ------------------------------------------------------------------ the data errors of the read
# Every data error the FHIR read reports, by name: its severity, its FHIR issue code, where
# it is and the message (what was wrong, and what happens or how to fix it). cds.fhir builds
# its issues only through these (the profile checks of structure.py have their own).


def _error(code: IssueCode, ref: str | None, expression: str | None, message: str) -> DataIssue:
    return DataIssue(
        severity="error", code=code, resource=ref, expression=expression, message=message
    )


def _warning(code: IssueCode, ref: str | None, expression: str | None, message: str) -> DataIssue:
    return DataIssue(
        severity="warning", code=code, resource=ref, expression=expression, message=message
    )


def _fatal(code: IssueCode, ref: str | None, message: str) -> DataIssue:
    return DataIssue(
        severity="fatal", code=code, resource=ref, expression="Patient", message=message
    )


# -- input structure (Bundles and loose resources)


def not_a_resource(where: str, got: object) -> DataIssue:
    """An input item or Bundle entry resource that is not a JSON object."""
    return _error(
        "structure",
        where,
        None,
        f"{where} is not a FHIR resource (a JSON object), it is {type(got).__name__}",
    )


def no_resource_type(where: str) -> DataIssue:
    """A JSON object without a resourceType."""
    return _error(
        "structure", where, "resourceType", f"{where} has no resourceType: not a FHIR resource"
    )


def bundle_too_deep(bundle: str, max_depth: int) -> DataIssue:
    """A Bundle nested in Bundles deeper than the read goes."""
    return _error(
        "structure",
        bundle,
        "Bundle.entry",
        f"Bundles nested deeper than {max_depth} are not read",
    )


def bundle_entry_not_list(bundle: str) -> DataIssue:
    """Bundle.entry that is not a JSON list."""
    return _error("structure", bundle, "Bundle.entry", "Bundle.entry must be a list")


def bundle_entry_not_object(bundle: str, index: int) -> DataIssue:
    """One Bundle entry that is not a JSON object."""
    return _error(
        "structure", bundle, f"Bundle.entry[{index}]", "a Bundle entry must be a JSON object"
    )


def invalid_element(ref: str, path: str, problem: str, shown: str, structure: bool) -> DataIssue:
    """An element that does not fit the FHIR model read (a wrong JSON type or value);
    `structure`: a wrong object or list shape rather than a wrong value."""
    return _error(
        "structure" if structure else "value",
        ref,
        path,
        f"{path}: {problem} (got {shown}); the resource is not used",
    )


def not_valid_r4(ref: str, problem: object) -> DataIssue:
    """validation="full": the resource is not valid FHIR R4 (fhir.resources)."""
    return _error("structure", ref, None, f"not valid FHIR R4: {problem}")


def cannot_be_used(ref: str, problem: object) -> DataIssue:
    """A resource whose values cannot be computed with (the read's last defence)."""
    return _error("value", ref, None, f"cannot be used: {problem}")


# -- dates


def date_missing(ref: str, expression: str) -> DataIssue:
    """A date the resource cannot be used without is absent."""
    return _error(
        "required",
        ref,
        expression,
        f"{expression} is missing: the date is needed; the resource is not used",
    )


def date_invalid(ref: str, expression: str, problem: object, required: bool) -> DataIssue:
    """A date that cannot be read: an error when the resource needs it, else a warning."""
    if required:
        return _error(
            "value", ref, expression, f"{expression}: {problem}; the resource is not used"
        )
    return _warning("value", ref, expression, f"{expression}: {problem}; the date is left out")


# -- the patient


def patient_not_found(ref: str, present: list[str]) -> DataIssue:
    """The patient asked for (patient_id) is not in the input."""
    return _fatal(
        "not-found",
        ref,
        f"{ref} is not in the input (patients present: {', '.join(present) or 'none'})",
    )


def no_patient() -> DataIssue:
    """No usable Patient resource at all."""
    return _fatal(
        "required",
        None,
        "no usable Patient resource in the input: age and sex are needed "
        "(send the patient prefetch)",
    )


def several_patients(present: list[str]) -> DataIssue:
    """Several Patients and no patient_id to choose one."""
    return _fatal(
        "multiple-matches",
        None,
        f"several patients in the input ({', '.join(present)}): say which one (patient_id)",
    )


def gender_invalid(ref: str, gender: object) -> DataIssue:
    """Patient.gender outside the FHIR administrative genders."""
    return _warning(
        "code-invalid",
        ref,
        "Patient.gender",
        f"Patient.gender {gender!r} is not male, female, other or unknown; sex is taken as unknown",
    )


# -- observations


def status_missing(ref: str) -> DataIssue:
    """An Observation without status."""
    return _error(
        "required",
        ref,
        "Observation.status",
        "Observation.status is missing; the Observation is not used",
    )


def status_invalid(ref: str, status: str) -> DataIssue:
    """An Observation status that FHIR does not define."""
    return _error(
        "code-invalid",
        ref,
        "Observation.status",
        f"Observation.status {status!r} is not a FHIR observation status; "
        "the Observation is not used",
    )


def value_missing(ref: str, expression: str, what: str) -> DataIssue:
    """A result (`what`, e.g. "T-score") without a value."""
    return _error("required", ref, expression, f"{what} has no value; the result is not used")


def value_inexact(ref: str, expression: str, what: str, comparator: str) -> DataIssue:
    """A result with a comparator (<, >=, ...): not an exact value."""
    return _error(
        "value",
        ref,
        expression,
        f"{what} has comparator {comparator!r}: not an exact value; the result is not used",
    )


def value_not_numeric(ref: str, expression: str, what: str, kind: str, shown: str) -> DataIssue:
    """A result given as a string, code or boolean (`kind`: the value[x] element name)."""
    return _error(
        "value",
        ref,
        expression,
        f"{what} is not numeric ({kind} {shown!r}); send valueQuantity",
    )


def unit_not_accepted(ref: str, expression: str, what: str, unit: str, allowed: str) -> DataIssue:
    """A result unit not in fhir_profiles (`allowed`: the accepted units, listed)."""
    return _error(
        "value",
        ref,
        expression,
        f"{what} unit {unit!r} is not accepted (use {allowed}); the result is not used",
    )


def value_implausible(
    ref: str, expression: str, what: str, value: object, lo: object, hi: object
) -> DataIssue:
    """A result outside fhir_profiles/plausible-ranges.json."""
    return _error(
        "value",
        ref,
        expression,
        f"{what} {value} is outside the plausible range {lo}..{hi} "
        "(fhir_profiles/plausible-ranges.json); the result is not used",
    )


# -- medications


def dose_unit_unknown(ref: str, expression: str, unit: str) -> DataIssue:
    """A glucocorticoid dose in a unit other than mg, g or ug."""
    return _warning(
        "value",
        ref,
        expression,
        f"glucocorticoid dose unit {unit!r} is not mg, g or ug: the dose is unknown",
    )


def dose_timing_unreadable(ref: str, expression: str) -> DataIssue:
    """A glucocorticoid dose timing that is not a daily frequency."""
    return _warning(
        "value",
        ref,
        expression,
        "glucocorticoid dose timing cannot be read as a daily frequency: the dose is unknown",
    )


# -- profile checks (fhir_profiles/ StructureDefinitions, cds.fhir.structure)


def profile_choice_missing(ref: str, expression: str, profile: str, choices: str) -> DataIssue:
    """A required choice element (value[x]) absent (`choices`: its allowed names)."""
    return _error(
        "required",
        ref,
        expression,
        f"{expression} is required by profile {profile} (one of: {choices})",
    )


def profile_choice_type(ref: str, expression: str, profile: str, key: str, send: str) -> DataIssue:
    """A choice element of a type the profile does not allow (`send`: the allowed ones)."""
    return _error(
        "structure", ref, expression, f"{key} is not allowed by profile {profile}; send {send}"
    )


def profile_missing(ref: str, expression: str, profile: str) -> DataIssue:
    """An element the profile requires is absent or empty."""
    return _error(
        "required", ref, expression, f"{expression} is required by profile {profile} but is missing"
    )


def profile_forbidden(ref: str, expression: str, profile: str) -> DataIssue:
    """An element the profile forbids (max 0) is present."""
    return _error("structure", ref, expression, f"{expression} is not allowed by profile {profile}")


def profile_target(ref: str, expression: str, profile: str, targets: str, target: str) -> DataIssue:
    """A Reference to a resource type the profile does not allow."""
    return _error(
        "structure",
        ref,
        f"{expression}.reference",
        f"{expression} must reference {targets}, not {target!r} (profile {profile})",
    )


def profile_code(ref: str, expression: str, profile: str, shown: str, allowed: str) -> DataIssue:
    """A code outside the profile's required value set."""
    return _error(
        "code-invalid",
        ref,
        expression,
        f"{expression} {shown!r} is not allowed by profile {profile} (allowed: {allowed})",
    )
