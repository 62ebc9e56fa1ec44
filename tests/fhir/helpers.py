"""Helpers for the FHIR read tests: read resources straight with cds.fhir.read.Reader
(no facts), and look at what it made."""

from __future__ import annotations

from typing import Any

from cds.contracts.outcome import DataIssue
from cds.fhir.profiles import Profiles, load_profiles
from cds.fhir.read import Reader
from cds.fhir.records import PatientData
from tests.fhir_factory import AS_OF, patient


def profiles() -> Profiles:
    return load_profiles()


def read(
    *resources: Any,
    with_patient: bool = True,
    patient_id: str | None = None,
    draft_orders: Any = None,
    **kw: Any,
) -> PatientData:
    """Reader.read of the resources (after the default patient p1, unless with_patient is
    False), as of tests.fhir_factory.AS_OF."""
    items = list(resources)
    if with_patient:
        items.insert(0, patient())
    return Reader(profiles(), kw.pop("as_of", AS_OF), **kw).read(items, patient_id, draft_orders)


def errors(data: PatientData) -> list[DataIssue]:
    return [i for i in data.issues if i.severity in ("error", "fatal")]


def used(data: PatientData, ref: str) -> list[str]:
    return [u.purpose for u in data.trace.used if u.resource == ref]


def ignored(data: PatientData, ref: str) -> list[str]:
    return [i.reason for i in data.trace.ignored if i.resource == ref]
