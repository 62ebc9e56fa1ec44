"""cds.fhir: reading FHIR input, code lists from fhir_profiles/, data errors and the trace
(see docs/architecture.md and docs/fhir-inputs.md)."""

from cds.contracts.outcome import DataIssue
from cds.contracts.outcome import data_outcome as operation_outcome
from cds.fhir.bundle import split_by_patient
from cds.fhir.profiles import ProfileError, Profiles, load_profiles
from cds.fhir.trace import Trace

__all__ = [
    "DataIssue",
    "ProfileError",
    "Profiles",
    "Trace",
    "load_profiles",
    "operation_outcome",
    "split_by_patient",
]
