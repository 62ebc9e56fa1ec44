"""Structural checks of the clinical story fixtures (tests/fixtures/stories).

Every story parses as FHIR R4 (fhir.resources R4B models), ids are unique, every reference
resolves inside the story, the generator reproduces the committed files byte for byte, and
the oracle (tests/stories/oracle.json) names every story and covers clinical-spec sections
2-10.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds.contracts.cards import CARD_TOPICS

STORIES = Path(__file__).resolve().parents[1] / "fixtures" / "stories"
ORACLE = Path(__file__).resolve().parent / "oracle.json"
FILES = sorted(STORIES.glob("[0-9]*-*.json"))
HOOKS = {"patient-view", "order-select", "order-sign"}
NAME = re.compile(r"^\d{2,3}-[a-z0-9]+(-[a-z0-9]+)*\.json$")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_stories", STORIES / "make_stories.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def resources_of(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every resource of a Bundle or a CDS Hooks request file (prefetch and draft orders)."""
    if doc.get("resourceType") == "Bundle":
        for e in doc.get("entry", []):
            yield e["resource"]
        return
    for value in doc["prefetch"].values():
        if value is None:
            continue
        if value["resourceType"] == "Bundle":
            yield from (e["resource"] for e in value.get("entry", []))
        else:
            yield value
    yield from (e["resource"] for e in doc["context"]["draftOrders"].get("entry", []))


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def test_at_least_32_stories_named_nn_slug() -> None:
    assert len(FILES) >= 32
    for path in FILES:
        assert NAME.match(path.name), path.name
    numbers = sorted(int(p.name.split("-")[0]) for p in FILES)
    # 1..N, then each engineer's own range (55-74, 75-94, 95-119): unique numbers
    assert len(numbers) == len(set(numbers))
    assert numbers[:54] == list(range(1, 55))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_story_parses_as_fhir_r4_with_unique_ids_and_resolving_references(path: Path) -> None:
    doc = json.loads(path.read_text())
    if doc.get("resourceType") == "Bundle":
        assert doc["type"] == "collection"
        get_fhir_model_class("Bundle").model_validate(doc)
        for e in doc["entry"]:
            r = e["resource"]
            assert e["fullUrl"].endswith(f"/{r['resourceType']}/{r['id']}")
    else:
        assert doc["hook"] in HOOKS - {"patient-view"}
        assert set(doc["context"]) >= {"userId", "patientId", "draftOrders"}
        get_fhir_model_class("Bundle").model_validate(doc["context"]["draftOrders"])
        for value in doc["prefetch"].values():
            get_fhir_model_class(value["resourceType"]).model_validate(value)
    resources = list(resources_of(doc))
    for r in resources:
        get_fhir_model_class(r["resourceType"]).model_validate(r)
    keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
    assert len(keys) == len(set(keys)), keys
    number = path.name.split("-")[0]
    assert all(r["id"].startswith(f"s{number}-") for r in resources)
    patients = [k for k in keys if k.startswith("Patient/")]
    assert len(patients) == 1
    for ref in references(resources):
        assert ref in keys, f"{path.name}: unresolved reference {ref}"
    if "context" in doc:
        assert f"Patient/{doc['context']['patientId']}" == patients[0]
        drafts = {
            f"ServiceRequest/{e['resource']['id']}"
            for e in doc["context"]["draftOrders"]["entry"]
            if e["resource"]["status"] == "draft"
        }
        assert drafts
        assert set(doc["context"].get("selections", [])) <= drafts
        assert ("selections" in doc["context"]) == (doc["hook"] == "order-select")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_dates_are_not_after_the_as_of_date(path: Path) -> None:
    text = path.read_text()
    dates = re.findall(
        r'"(?:effectiveDateTime|start|end|onsetDateTime|performedDateTime|'
        r'authoredOn|birthDate)": "(\d{4}-\d{2}-\d{2})',
        text,
    )
    assert dates
    assert max(dates) <= "2026-11-23"


def test_generator_reproduces_the_committed_files() -> None:
    generator = load_generator()
    for target, text in generator.render().items():
        assert target.read_text() == text, f"{target} is stale: run make_stories.py"


def test_oracle_names_every_story_with_its_hook() -> None:
    oracle = json.loads(ORACLE.read_text())
    assert oracle["asOf"] == "2026-11-23"
    assert sorted(oracle["stories"]) == [p.name for p in FILES]
    for name, entry in oracle["stories"].items():
        assert entry["hook"] in HOOKS
        doc = json.loads((STORIES / name).read_text())
        assert doc.get("hook", "patient-view") == entry["hook"]
        assert not set(entry["expect"]) & set(entry["absent"]), name


def test_stories_cover_clinical_spec_sections_2_to_10() -> None:
    readme = (STORIES / "README.md").read_text()
    cited = {int(m) for m in re.findall(r"CS-(\d+)\.\d+", readme)}
    assert set(range(1, 11)) <= cited
    topics = set()
    for entry in json.loads(ORACLE.read_text())["stories"].values():
        topics |= set(entry["expect"])
    assert topics == set(CARD_TOPICS)  # the card contract (cds.contracts.cards) owns the list


PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"


def profile_codes(name: str, key: str = "codes") -> set[tuple[str, str]]:
    data = json.loads((PROFILES / name).read_text())
    return {(c["system"], c["code"]) for c in data[key]}


def codings(resource: dict[str, Any], element: str) -> set[tuple[str, str]]:
    concept = resource.get(element) or {}
    return {(c["system"], c["code"]) for c in concept.get("coding", [])}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_story_codes_are_the_ones_fhir_profiles_configure(path: Path) -> None:
    """The stories speak the code lists of fhir_profiles/ (CS-1.7, CS-1.8, CS-5.3, CS-8.1)."""
    dxa = (
        profile_codes("dxa-codes.json")
        | profile_codes("femoral-neck-codes.json")
        | profile_codes("tbs-codes.json")
    )
    meds = json.loads((PROFILES / "medication-classes.json").read_text())
    atc_system = meds["systems"]["atc"]
    atc = {(atc_system, i["atc"]["code"]) for i in meds["ingredients"]}
    harming = json.loads((PROFILES / "bone-harming-drugs.json").read_text())  # CS-6.8
    atc |= {
        (harming["atc_system"], d["atc"]) for c in harming["classes"].values() for d in c["drugs"]
    }
    orders = profile_codes("dxa-order-codes.json")
    sites = profile_codes("vertebral-body-sites.json")
    for r in resources_of(json.loads(path.read_text())):
        kind = r["resourceType"]
        if kind == "Observation" and r["category"][0]["coding"][0]["code"] == "imaging":
            assert codings(r, "code") & dxa, r["id"]
            if "bodySite" in r:
                assert codings(r, "bodySite") <= sites, r["id"]
        elif kind.startswith("Medication"):
            assert codings(r, "medicationCodeableConcept") & atc, r["id"]
        elif kind == "ServiceRequest":
            assert codings(r, "code") <= orders, r["id"]
