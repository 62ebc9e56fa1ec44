"""Golden results: where they live, how they are compared, how differences read.

File naming: the golden result of an input is `<DIR>/<key>.json`, where `key` is the
input's name relative to the command-line argument it came from (see
`cds.replay.inputs`), with `/` inside a `#` suffix written as `-`:

    cds replay cases/ --expect golden/
    cases/spine/low.json                 -> golden/spine/low.json.json
    cases/bulk.ndjson line 3             -> golden/bulk.ndjson#L3.json
    cases/family.json, Patient/p2        -> golden/family.json#Patient-p2.json

A golden file holds `{"input": key, "cards": [...], "outcome": ...}` with card and
suggestion uuids and the payload's `rulesetVersion` removed, cards sorted by topic, keys
sorted, two-space indentation and a trailing newline, so that it diffs well in code review.
Comparison ignores uuids, `rulesetVersion` (it changes with any edit of any rule file) and
the order of cards.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds.contracts.cards import EXTENSION_KEY
from cds.replay.worker import InputResult, card_topic

_MISSING = object()
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Difference:
    """One difference between a golden result and this run's."""

    topic: str
    field: str
    expected: Any
    got: Any


def golden_path(directory: Path, key: str) -> Path:
    """Where the golden result of the input with this key lives."""
    head, hash_, tail = key.partition("#")
    parts = (head + hash_ + tail.replace("/", "-")).split("/")
    parts[-1] += ".json"
    return directory.joinpath(*parts)


_topic = card_topic


#: The card payload key that carries the rule set's hash: it changes with every edit of any
#: rule file, so goldens leave it out and comparisons ignore it (a rule change shows up as
#: the card fields it really changed).
_PAYLOAD = EXTENSION_KEY
_VOLATILE_PAYLOAD_KEYS = ("rulesetVersion",)


def _strip_uuids(card: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in card.items() if k != "uuid"}
    extension = out.get("extension")
    if isinstance(extension, dict) and isinstance(extension.get(_PAYLOAD), dict):
        payload = {k: v for k, v in extension[_PAYLOAD].items() if k not in _VOLATILE_PAYLOAD_KEYS}
        out["extension"] = {**extension, _PAYLOAD: payload}
    suggestions = out.get("suggestions")
    if isinstance(suggestions, list):
        out["suggestions"] = [
            {k: v for k, v in s.items() if k != "uuid"} if isinstance(s, dict) else s
            for s in suggestions
        ]
    return out


def normalise(key: str, cards: list[dict[str, Any]], outcome: Any) -> dict[str, Any]:
    """The golden form of a result: uuids and rulesetVersion removed, cards in topic order."""
    stripped = [_strip_uuids(card) for card in cards]
    stripped.sort(key=lambda c: (_topic(c), json.dumps(c, sort_keys=True)))
    return {"input": key, "cards": stripped, "outcome": outcome}


def render(document: dict[str, Any]) -> str:
    """Golden file text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_golden(directory: Path, result: InputResult) -> Path:
    """Write (or overwrite) the golden result of one input; return its path."""
    path = golden_path(directory, result.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(normalise(result.key, result.cards, result.outcome))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _field(path: str, key: str) -> str:
    if _IDENTIFIER.match(key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


def _walk(topic: str, path: str, expected: Any, got: Any, out: list[Difference]) -> None:
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got)):
            _walk(
                topic,
                _field(path, key),
                expected.get(key, _MISSING),
                got.get(key, _MISSING),
                out,
            )
        return
    if (
        isinstance(expected, list)
        and isinstance(got, list)
        and any(isinstance(item, dict | list) for item in expected + got)
    ):
        # Lists of objects (suggestions, links, issues) item by item, so a difference is
        # named by its own path (`suggestions[1].label`), not as the whole list.
        for index in range(max(len(expected), len(got))):
            e = expected[index] if index < len(expected) else _MISSING
            g = got[index] if index < len(got) else _MISSING
            _walk(topic, f"{path}[{index}]", e, g, out)
        return
    if expected is _MISSING and got is _MISSING:
        return
    if expected != got or type(expected) is not type(got):
        out.append(Difference(topic, path, expected, got))


def compare(expected: dict[str, Any], got: dict[str, Any]) -> list[Difference]:
    """Differences between two normalised results (cards matched by topic)."""
    out: list[Difference] = []
    by_topic_expected = _by_topic(expected.get("cards") or [])
    by_topic_got = _by_topic(got.get("cards") or [])
    for topic in sorted(set(by_topic_expected) | set(by_topic_got)):
        e_cards = by_topic_expected.get(topic, [])
        g_cards = by_topic_got.get(topic, [])
        for index in range(max(len(e_cards), len(g_cards))):
            e = e_cards[index] if index < len(e_cards) else _MISSING
            g = g_cards[index] if index < len(g_cards) else _MISSING
            if e is _MISSING or g is _MISSING:
                out.append(Difference(topic, "card", e, g))
            else:
                _walk(topic, "", e, g, out)
    _walk("outcome", "", expected.get("outcome"), got.get("outcome"), out)
    return out


def _by_topic(cards: list[Any]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for card in cards:
        if isinstance(card, dict):
            stripped = _strip_uuids(card)
            grouped.setdefault(_topic(stripped), []).append(stripped)
    for group in grouped.values():
        group.sort(key=lambda c: json.dumps(c, sort_keys=True))
    return grouped


def _show(value: Any) -> str:
    """A value in full (never cut: the part that differs may be at its end)."""
    if value is _MISSING:
        return "(absent)"
    if isinstance(value, dict) and "summary" in value:
        return f"a card: {json.dumps(value['summary'], ensure_ascii=False)}"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


#: Texts at least this long (or with a line break) are shown as a word diff, not in full.
_WORD_DIFF_FROM = 60
_CONTEXT_WORDS = 4


def word_diff(expected: str, got: str) -> str:
    """The words that differ between two texts, git's --word-diff style: `[-old-]{+new+}`,
    with a few unchanged words around each change and `...` for the rest."""
    old, new = expected.split(), got.split()
    pieces: list[str] = []
    opcodes = difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes()
    for index, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            words = old[i1:i2]
            first, last = index == 0, index == len(opcodes) - 1
            edge = first or last
            if len(words) > 2 * _CONTEXT_WORDS or (edge and len(words) > _CONTEXT_WORDS):
                head = [] if first else words[:_CONTEXT_WORDS]
                tail = [] if last else words[-_CONTEXT_WORDS:]
                words = [*head, "...", *tail]
            pieces.extend(words)
            continue
        if i2 > i1:
            pieces.append("[-" + " ".join(old[i1:i2]) + "-]")
        if j2 > j1:
            pieces.append("{+" + " ".join(new[j1:j2]) + "+}")
    if old == new:  # only the spacing differs
        return f"spacing differs: expected {json.dumps(expected)}, got {json.dumps(got)}"
    return " ".join(pieces)


def _long(*texts: str) -> bool:
    return any(len(text) >= _WORD_DIFF_FROM or "\n" in text for text in texts)


def describe(d: Difference) -> str:
    """One difference in words: where (topic and JSON path) and both values."""
    if d.field == "card":
        if d.got is _MISSING:
            return f"{d.topic}: expected {_show(d.expected)}, got no card"
        return f"{d.topic}: expected no card, got {_show(d.got)}"
    where = f"{d.topic}: {d.field}" if d.field else d.topic
    if isinstance(d.expected, str) and isinstance(d.got, str) and _long(d.expected, d.got):
        return f"{where}: text differs: {word_diff(d.expected, d.got)}"
    return f"{where}: expected {_show(d.expected)}, got {_show(d.got)}"


def json_differences(expected: Any, got: Any, where: str = "") -> list[Difference]:
    """Differences between any two JSON documents, by path (e.g. compiled rule goldens)."""
    out: list[Difference] = []
    _walk(where, "", expected, got, out)
    return out


def format_differences(name: str, golden: Path, differences: list[Difference]) -> str:
    """A readable diff for one input: a header, then topic / field / expected / got."""
    lines = [f"{name}: differs from {golden}"]
    lines.extend("  " + describe(d) for d in differences)
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class GoldenCheck:
    """The outcome of comparing one input with its golden file."""

    path: Path
    found: bool
    differences: list[Difference]
    message: str | None  # the readable diff, None when equal

    @property
    def differs(self) -> bool:
        return self.message is not None


def check(directory: Path, result: InputResult) -> GoldenCheck:
    """Compare one result with its golden file (a missing or bad file is a difference)."""
    path = golden_path(directory, result.key)
    got = normalise(result.key, result.cards, result.outcome)
    try:
        expected = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return GoldenCheck(
            path,
            False,
            [],
            f"{result.name}: no golden file {path} (write it with --update-expect)",
        )
    except (OSError, ValueError) as exc:
        return GoldenCheck(path, False, [], f"{result.name}: cannot read golden {path}: {exc}")
    if not isinstance(expected, dict):
        return GoldenCheck(path, False, [], f"{result.name}: golden {path} is not an object")
    differences = compare(expected, got)
    if not differences:
        return GoldenCheck(path, True, [], None)
    return GoldenCheck(path, True, differences, format_differences(result.name, path, differences))


def collision(directory: Path, result: InputResult, first: str) -> GoldenCheck:
    """Two inputs with the same key would share one golden file: a difference, never
    a silent overwrite (e.g. two file arguments with the same file name)."""
    path = golden_path(directory, result.key)
    return GoldenCheck(
        path,
        False,
        [],
        f"{result.name}: its golden file {path} is also the one of {first}; replay the "
        "folder that holds both so their names stay distinct",
    )
