"""CS-1.4 (rev 2): a card never shows a raw reference such as `Device/abc` in its text or
its suggestions, over every story's answer and over generated patients whose scanners are
named in every way FHIR allows (Device present, Device missing, display only, identifier)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cds.contracts.cards import dump_cards
from cds.pipeline import EvaluationInput
from tests.clinical.helpers import AS_OF
from tests.clinical.test_fhir_boundaries import evaluator, obs, patient

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "stories"


def _texts(card: dict[str, Any]) -> list[str]:
    out = [card.get("summary", ""), card.get("detail", "")]

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    walk(card.get("suggestions", []))
    return out


def _no_reference(cards: list[dict[str, Any]]) -> None:
    for card in cards:
        for text in _texts(card):
            assert "Device/" not in text, text


def test_no_story_card_names_a_raw_device_reference() -> None:
    files = sorted(GOLDEN.glob("*.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        _no_reference(data["cards"])


DEVICE_IDS = ["dxa1", "dxa2", "abc"]
scanner = st.one_of(
    st.tuples(st.just("reference"), st.sampled_from(DEVICE_IDS), st.none()),
    st.tuples(
        st.just("reference"),
        st.sampled_from(DEVICE_IDS),
        st.sampled_from(["DXA room 2", "Hologic Horizon A SN 55012", "Device/abc"]),
    ),
    st.tuples(
        st.just("display"),
        st.none(),
        st.sampled_from(["GE Lunar iDXA 200417", "Hologic Horizon A", "hologic horizon a sn 9"]),
    ),
    st.tuples(st.just("identifier"), st.none(), st.sampled_from(["S-1", "S-2"])),
    st.none(),
)
scan = st.tuples(
    st.integers(min_value=2018, max_value=2026),
    st.decimals(min_value="0.600", max_value="1.200", places=3),
    st.decimals(min_value="-4.0", max_value="1.0", places=1),
    scanner,
)


def _device_ref(kind: tuple[str, str | None, str | None] | None) -> dict[str, Any] | None:
    if kind is None:
        return None
    how, ref, display = kind
    if how == "identifier":
        return {"identifier": {"system": "urn:example:dxa", "value": display}}
    out: dict[str, Any] = {}
    if ref is not None:
        out["reference"] = f"Device/{ref}"
    if display is not None:
        out["display"] = display
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(scan, min_size=1, max_size=4, unique_by=lambda s: s[0]), st.booleans())
def test_no_generated_patient_card_names_a_raw_device_reference(
    scans: list[tuple[int, Any, Any, Any]], treated: bool
) -> None:
    resources: list[dict[str, Any]] = [
        patient(),
        {"resourceType": "Device", "id": "dxa1", "manufacturer": "Hologic"},
        {"resourceType": "Device", "id": "dxa2"},  # present, but names nothing
    ]
    for year, bmd, t, kind in scans:
        when = f"{year}-06-15"
        for oid, code, value, unit in (
            (f"lb-{year}", "24966-4", bmd, "g/cm2"),
            (f"lt-{year}", "38267-1", t, "{T-score}"),
            (f"hb-{year}", "38261-4", bmd, "g/cm2"),
        ):
            o = obs(oid, code, float(value), unit, when, dev=None)
            ref = _device_ref(kind)
            if ref is not None:
                o["device"] = ref
            resources.append(o)
    if treated:
        resources.append(
            {
                "resourceType": "MedicationStatement",
                "id": "ms1",
                "status": "active",
                "medicationCodeableConcept": {"text": "alendronate 70 mg"},
                "subject": {"reference": "Patient/p1"},
                "effectivePeriod": {"start": "2019-01-01"},
            }
        )
    result = evaluator().evaluate(EvaluationInput(resources=resources, as_of=AS_OF))
    _no_reference(dump_cards(result.cards))
