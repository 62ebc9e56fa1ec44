"""The clinical stories replayed against their golden results (tests/golden/stories).

The golden files were generated with `cds replay ... --update-expect` and then reviewed
card by card against the clinical oracle (tests/fixtures/stories/README.md). The
comparison goes through the replay's own golden API (`cds.replay.golden`: uuids and card
order ignored) on the results of one `cds replay --format ndjson` run, and also ignores
`rulesetVersion` (a hash of the rule files, which any edit to rules/ changes, even one that
changes no card). Regenerate after a reviewed rule change with `make golden` (it runs
`cds replay tests/fixtures/stories ... --expect tests/golden/stories --update-expect` with
the other golden generators) and review the diff.
"""

from __future__ import annotations

import json
from typing import Any

from tests.stories.helpers import GOLDEN, STORIES


def without_ruleset_version(document: dict[str, Any]) -> dict[str, Any]:
    cards = []
    for card in document.get("cards") or []:
        payload = card.get("extension", {}).get("org.osteohooks")
        if isinstance(payload, dict) and "rulesetVersion" in payload:
            payload = {k: v for k, v in payload.items() if k != "rulesetVersion"}
            card = {**card, "extension": {**card["extension"], "org.osteohooks": payload}}
        cards.append(card)
    return {**document, "cards": cards}


def test_every_story_has_a_golden_result() -> None:
    stories = sorted(p.name for p in STORIES.glob("[0-9]*-*.json"))
    goldens = sorted(p.name.removesuffix(".json") for p in GOLDEN.glob("*.json"))
    assert goldens == stories


def test_stories_match_their_golden_results(story_results: dict[str, dict[str, Any]]) -> None:
    from cds.replay.golden import compare, format_differences, golden_path, normalise

    report = []
    for name, result in sorted(story_results.items()):
        path = golden_path(GOLDEN, name)
        expected = without_ruleset_version(json.loads(path.read_text()))
        got = without_ruleset_version(normalise(name, result["cards"], result["outcome"]))
        differences = compare(expected, got)
        if differences:
            report.append(format_differences(name, path, differences))
    assert not report, "\n".join(report)


def test_golden_comparison_can_fail(story_results: dict[str, dict[str, Any]]) -> None:
    """A changed payload value is reported (the comparison is not vacuous)."""
    from cds.replay.golden import compare, normalise

    name = "03-t-boundary-minus-2-5.json"
    result = story_results[name]
    got = without_ruleset_version(normalise(name, result["cards"], result["outcome"]))
    changed = json.loads(json.dumps(got))
    for card in changed["cards"]:
        if card["source"]["topic"]["code"] == "bmd-classification":
            card["extension"]["org.osteohooks"]["category"] = "low-bone-mass"
    assert compare(got, changed)
