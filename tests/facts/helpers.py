"""Helpers for the facts tests."""

from __future__ import annotations

from typing import Any, TypeVar

from cds.contracts.facts import Assessment, Fact
from cds.contracts.outcome import DataIssue
from cds.facts import FactSet, build_facts
from tests.fhir_factory import AS_OF, PARAMS, patient


def run(*resources: Any, with_patient: bool = True, **kw: Any) -> FactSet:
    items = list(resources)
    if with_patient:
        items.insert(0, patient())
    kw.setdefault("as_of", AS_OF)
    return build_facts(items, PARAMS, **kw)


def assessment(fs: FactSet) -> Assessment:
    found = [f for f in fs.facts if isinstance(f, Assessment)]
    assert len(found) == 1, fs.issues
    return found[0]


def one(*resources: Any, **kw: Any) -> Assessment:
    return assessment(run(*resources, **kw))


T = TypeVar("T", bound=Fact)


def of_type(fs: FactSet, cls: type[T]) -> list[T]:
    return [f for f in fs.facts if isinstance(f, cls)]


def errors(fs: FactSet) -> list[DataIssue]:
    return [i for i in fs.issues if i.severity in ("error", "fatal")]


def ignored(fs: FactSet, ref_prefix: str = "") -> dict[str, str]:
    return {i.resource: i.reason for i in fs.trace.ignored if i.resource.startswith(ref_prefix)}
