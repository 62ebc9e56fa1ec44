"""Golden results: naming, normal form, comparison ignoring uuids and card order, diff text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.contracts.cards import Card
from cds.replay.golden import (
    check,
    compare,
    describe,
    format_differences,
    golden_path,
    json_differences,
    normalise,
    render,
    word_diff,
    write_golden,
)
from cds.replay.worker import InputResult


def card(topic: str, uuid: str, **payload: Any) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "summary": f"{topic} summary",
        "indicator": "info",
        "source": {"label": "ISCD", "topic": {"system": "x", "code": topic}},
        "suggestions": [{"label": "Order", "uuid": uuid + "-s"}],
        "selectionBehavior": "any",
        "extension": {"org.osteohooks": {"rule": f"{topic}.rule", **payload}},
    }


def result(cards: list[dict[str, Any]], outcome: Any = None, key: str = "a.json") -> InputResult:
    return InputResult.of(
        f"cases/{key}", key, [Card.model_validate(c) for c in cards], outcome, "ok"
    )


@pytest.mark.parametrize(
    ("key", "relative"),
    [
        ("spine/low.json", "spine/low.json.json"),
        ("bulk.ndjson#L3", "bulk.ndjson#L3.json"),
        ("family.json#Patient/p2", "family.json#Patient-p2.json"),
        ("sub/bulk.ndjson#L3#Patient/a/b", "sub/bulk.ndjson#L3#Patient-a-b.json"),
    ],
)
def test_golden_file_naming(key: str, relative: str) -> None:
    assert golden_path(Path("golden"), key) == Path("golden") / relative


def test_comparison_ignores_uuids_and_card_order() -> None:
    one = normalise("a", [card("tbs", "1", value=1.2), card("workup", "2")], None)
    two = normalise("a", [card("workup", "9"), card("tbs", "8", value=1.2)], None)
    assert compare(one, two) == []
    assert one == two


def test_golden_render_is_sorted_indented_and_ends_with_a_newline() -> None:
    text = render(normalise("a.json", [card("tbs", "u", value=1.2)], None))
    assert text.endswith("}\n")
    document = json.loads(text)
    assert list(document) == ["cards", "input", "outcome"]
    assert "uuid" not in document["cards"][0]
    assert "uuid" not in document["cards"][0]["suggestions"][0]
    assert text == json.dumps(document, indent=2, sort_keys=True) + "\n"


def test_update_then_check_round_trip(tmp_path: Path) -> None:
    first = result([card("tbs", "u1", value=1.2)], key="sub/a.json")
    path = write_golden(tmp_path, first)
    assert path == tmp_path / "sub" / "a.json.json"
    again = result([card("tbs", "other-uuid", value=1.2)], key="sub/a.json")
    verdict = check(tmp_path, again)
    assert verdict.found
    assert not verdict.differs
    assert verdict.message is None


def test_diff_text_names_input_topic_field_expected_and_got(tmp_path: Path) -> None:
    write_golden(
        tmp_path,
        result(
            [
                card("bmd-classification", "u", category="osteoporosis", value=-2.5),
                card("tbs", "v", value=1.2),
            ]
        ),
    )
    changed = result(
        [
            card("bmd-classification", "w", category="low-bone-mass", value=-2.4),
            card("screening", "x", reason="age"),
        ],
        outcome={"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]},
    )
    verdict = check(tmp_path, changed)
    assert verdict.differs
    assert verdict.message == "\n".join(
        [
            f"cases/a.json: differs from {tmp_path / 'a.json.json'}",
            '  bmd-classification: extension["org.osteohooks"].category: expected '
            '"osteoporosis", got "low-bone-mass"',
            '  bmd-classification: extension["org.osteohooks"].value: expected -2.5, got -2.4',
            '  screening: expected no card, got a card: "screening summary"',
            '  tbs: expected a card: "tbs summary", got no card',
            '  outcome: expected null, got {"issue": [{"severity": "error"}], '
            '"resourceType": "OperationOutcome"}',
        ]
    )


def test_absent_field_and_type_change_are_differences() -> None:
    expected = normalise("a", [card("tbs", "u", value=1)], None)
    got = normalise("a", [card("tbs", "u", value=1.0, extra=True)], None)
    fields = [(d.field, d.expected, d.got) for d in compare(expected, got)]
    assert fields[0][0] == 'extension["org.osteohooks"].extra'
    assert fields[0][2] is True
    assert fields[1] == ('extension["org.osteohooks"].value', 1, 1.0)


def test_missing_golden_file_is_a_difference(tmp_path: Path) -> None:
    verdict = check(tmp_path, result([]))
    assert verdict.differs
    assert not verdict.found
    assert verdict.message == (
        f"cases/a.json: no golden file {tmp_path / 'a.json.json'} (write it with --update-expect)"
    )


_json_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4)
_payloads = st.dictionaries(st.sampled_from(["category", "value", "site", "items"]), _json_scalars)
_topics = st.sampled_from(["bmd-classification", "tbs", "workup", "screening"])


@given(
    cards=st.lists(st.tuples(_topics, _payloads), max_size=4, unique_by=lambda c: c[0]),
    order=st.randoms(use_true_random=False),
)
def test_uuids_and_card_order_never_matter(
    cards: list[tuple[str, dict[str, Any]]], order: Any
) -> None:
    first = [card(topic, f"u{i}", **payload) for i, (topic, payload) in enumerate(cards)]
    second = [card(topic, f"v{i}", **payload) for i, (topic, payload) in enumerate(cards)]
    order.shuffle(second)
    assert compare(normalise("k", first, None), normalise("k", second, None)) == []


@given(
    payload=_payloads,
    field=st.sampled_from(["category", "value", "site", "items"]),
    new=_json_scalars,
)
def test_any_payload_change_is_reported_with_topic_and_field(
    payload: dict[str, Any], field: str, new: Any
) -> None:
    changed = {**payload, field: new}
    differences = compare(
        normalise("k", [card("tbs", "a", **payload)], None),
        normalise("k", [card("tbs", "b", **changed)], None),
    )
    same = field in payload and payload[field] == new and type(payload[field]) is type(new)
    if same:
        assert differences == []
    else:
        (difference,) = differences
        assert difference.topic == "tbs"
        assert difference.field == f'extension["org.osteohooks"].{field}'
        assert difference.got == new


def test_ruleset_version_is_left_out_of_goldens_and_ignored_in_comparison() -> None:
    """A rule edit changes the hash on every card; goldens must show only real changes."""
    from cds.replay.golden import normalise

    card: dict[str, Any] = {
        "uuid": "u1",
        "summary": "s",
        "indicator": "info",
        "source": {"label": "l", "topic": {"system": "x", "code": "tbs"}},
        "extension": {"org.osteohooks": {"rule": "r", "rulesetVersion": "abc", "value": 1.2}},
    }
    golden = normalise("k", [card], None)
    assert golden["cards"][0]["extension"] == {"org.osteohooks": {"rule": "r", "value": 1.2}}
    assert "uuid" not in golden["cards"][0]
    other = {**card, "extension": {"org.osteohooks": {**card["extension"]["org.osteohooks"]}}}
    other["extension"]["org.osteohooks"]["rulesetVersion"] = "def"
    assert normalise("k", [other], None) == golden
    changed = {**card, "extension": {"org.osteohooks": {"rule": "r", "value": 1.3}}}
    assert normalise("k", [changed], None) != golden


# ----------------------------------------------------------------- readable differences

LONG = (
    "Trabecular bone score 1.200 on 2026-01-15: degraded microarchitecture "
    "(postmenopausal women: 1.200 or below; CS-5.1). Consider TBS-adjusted FRAX."
)


def test_a_long_text_difference_is_a_word_diff_at_its_path(tmp_path: Path) -> None:
    write_golden(tmp_path, result([card("tbs", "u", note=LONG)]))
    changed = LONG.replace("FRAX.", "FRAX with the clinic.")
    verdict = check(tmp_path, result([card("tbs", "u", note=changed)]))
    assert verdict.message is not None
    line = verdict.message.splitlines()[1]
    assert line == (
        '  tbs: extension["org.osteohooks"].note: text differs: '
        "... below; CS-5.1). Consider TBS-adjusted [-FRAX.-] {+FRAX with the clinic.+}"
    )


def test_a_difference_at_the_end_of_a_long_value_is_never_cut_off() -> None:
    items = [f"item-{n}" for n in range(60)]
    expected = normalise("a", [card("workup", "u", items=items)], None)
    got = normalise("a", [card("workup", "u", items=[*items[:-1], "item-changed"])], None)
    [difference] = compare(expected, got)
    text = format_differences("a", Path("g.json"), [difference])
    assert '"item-59"]' in text
    assert '"item-changed"]' in text


def test_lists_of_objects_are_compared_item_by_item_even_of_other_lengths() -> None:
    one = card("workup", "u")
    two = card("workup", "u")
    two["suggestions"] = [*one["suggestions"], {"label": "Second order", "uuid": "s2"}]
    differences = compare(normalise("a", [one], None), normalise("a", [two], None))
    assert [(d.field, d.expected is not None) for d in differences] == [("suggestions[1]", True)]
    assert describe(differences[0]) == (
        'workup: suggestions[1]: expected (absent), got {"label": "Second order"}'
    )


@pytest.mark.parametrize(
    ("old", "new", "diff"),
    [
        ("a b c", "a b c d", "a b c {+d+}"),
        ("x y", "y", "[-x-] y"),
        ("one two three", "one 2 three", "one [-two-] {+2+} three"),
        ("a  b", "a b", 'spacing differs: expected "a  b", got "a b"'),
        (
            " ".join(f"w{n}" for n in range(20)),
            " ".join(f"w{n}" for n in range(19)) + " end",
            "... w15 w16 w17 w18 [-w19-] {+end+}",
        ),
    ],
)
def test_word_diff(old: str, new: str, diff: str) -> None:
    assert word_diff(old, new) == diff


def test_any_json_documents_differ_by_path() -> None:
    old = {"rules": {"r": {"all": [{"$lte": {"tbs": 1.2}}]}}}
    new = {"rules": {"r": {"all": [{"$lte": {"tbs": 1.23}}]}}}
    [difference] = json_differences(old, new, "tbs.json")
    assert describe(difference) == 'tbs.json: rules.r.all[0]["$lte"].tbs: expected 1.2, got 1.23'
