"""Golden facts for the fixture Bundles in tests/fixtures/fhir/ (facts, data errors, trace).

After an intended change, regenerate with
    OSTEOHOOKS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/facts/test_golden.py
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cds.facts import build_facts
from tests.fhir_factory import AS_OF, PARAMS, draft_dxa

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"
BUNDLES = sorted(FIXTURES.glob("*.bundle.json"))


def snapshot(bundle: dict[str, Any]) -> dict[str, Any]:
    fs = build_facts([bundle], PARAMS, AS_OF, draft_orders=[draft_dxa(authored="2026-11-01")])
    return {
        "facts": [f.model_dump(mode="json", exclude_none=True) for f in fs.facts],
        "outcome": fs.outcome(),
        "trace": fs.trace.model_dump(mode="json"),
    }


def test_there_are_fixtures() -> None:
    assert {p.name for p in BUNDLES} >= {"rich-patient.bundle.json", "data-errors.bundle.json"}


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.name)
def test_golden_facts(path: Path) -> None:
    got = snapshot(json.loads(path.read_text()))
    golden = path.with_name(path.name.replace(".bundle.json", ".facts.json"))
    if os.environ.get("OSTEOHOOKS_UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert golden.exists(), f"missing {golden}: run with OSTEOHOOKS_UPDATE_GOLDEN=1"
    assert got == json.loads(golden.read_text())


def test_data_error_fixture_names_every_resource_and_element() -> None:
    got = snapshot(json.loads((FIXTURES / "data-errors.bundle.json").read_text()))
    diagnostics = {
        i["diagnostics"].split(":", 1)[0]: i["expression"][0] for i in got["outcome"]["issue"]
    }
    assert diagnostics == {
        "Observation/bad-unit": "Observation.valueQuantity.code",
        "Observation/out-of-range": "Observation.valueQuantity.value",
        "Observation/no-value": "Observation.value[x]",
        "Observation/text-value": "Observation.valueString",
        "Observation/bad-date": "Observation.effectiveDateTime",
        "Observation/wrong-type": "Observation.code.coding[0].code",
        "Observation/no-status": "Observation.status",
    }
    ignored = {i["resource"]: i["reason"] for i in got["trace"]["ignored"]}
    assert ignored["Observation/entered-in-error"] == "status entered-in-error"
    assert ignored["Condition/resolved"].startswith("clinicalStatus resolved")
    assert ignored["Observation/other-patient"] == "not this patient (subject Patient/p2)"
    assert got["facts"][0]["lumbar_t"] == -1.8
