"""Property (issue 4): shuffling the order of the input resources never changes the cards.

Every clinical story (tests/fixtures/stories) is read the way `cds replay` reads it, its
resources are flattened and permuted, and the pipeline's cards (uuids stripped) must be
identical to those of the unshuffled input, card order and list order included; the data
errors must be the same set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.contracts.cards import dump_cards
from tests.properties.helpers import ROOT, canonical, evaluate, strip_uuids

STORIES = sorted((ROOT / "tests" / "fixtures" / "stories").glob("[0-9]*-*.json"))


def flatten(value: dict[str, Any]) -> list[dict[str, Any]]:
    if value.get("resourceType") != "Bundle":
        return [value]
    out: list[dict[str, Any]] = []
    for entry in value.get("entry", []):
        out.extend(flatten(entry["resource"]))
    return out


def read_story(path: Path) -> dict[str, Any]:
    """The EvaluationInput arguments of a story (Bundle or CDS Hooks request file)."""
    doc = json.loads(path.read_text())
    if doc.get("resourceType") == "Bundle":
        return {"hook": "patient-view", "resources": flatten(doc)}
    resources: list[dict[str, Any]] = []
    for value in doc["prefetch"].values():
        if value is not None:
            resources.extend(flatten(value))
    context = doc["context"]
    return {
        "hook": doc["hook"],
        "resources": resources,
        "patient_id": context["patientId"],
        "draft_orders": flatten(context["draftOrders"]),
        "selections": context.get("selections", []),
    }


def answer(story: dict[str, Any]) -> tuple[str, list[str]]:
    result = evaluate(**story)
    issues = (result.outcome or {}).get("issue", [])
    return canonical(strip_uuids(dump_cards(result.cards))), sorted(canonical(i) for i in issues)


@pytest.mark.parametrize("path", STORIES, ids=lambda p: p.name)
def test_a_story_evaluates_the_same_twice(path: Path) -> None:
    story = read_story(path)
    assert answer(story) == answer(story)


@given(data=st.data())
def test_shuffling_resources_never_changes_the_cards(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(STORIES), label="story")
    story = read_story(path)
    shuffled = {
        **story,
        "resources": data.draw(st.permutations(story["resources"]), label="order"),
    }
    if story.get("draft_orders"):
        shuffled["draft_orders"] = data.draw(st.permutations(story["draft_orders"]))
    assert answer(shuffled) == answer(story), path.name
