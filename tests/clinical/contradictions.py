"""Cards that contradict each other (CS-11.5): the pairs of tests/clinical/contradictions.yaml.

``load_pairs()`` reads the pairs; ``contradictions(cards, pairs)`` lists the ids of the
pairs an answer holds (two different cards, one matching each side). The predicate
language is documented at the top of the YAML file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

PAIRS_FILE = Path(__file__).with_name("contradictions.yaml")
_MISSING = object()


@dataclass(frozen=True)
class Pair:
    id: str
    why: str
    card: dict[str, Any]
    beside: dict[str, Any]


@lru_cache(maxsize=1)
def load_pairs(path: Path = PAIRS_FILE) -> tuple[Pair, ...]:
    doc = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    pairs = tuple(Pair(p["id"], p["why"], p["card"], p["beside"]) for p in doc["pairs"])
    for pair in pairs:
        for side in (pair.card, pair.beside):
            unknown = set(side) - {"topic", "payload", "text"}
            if unknown:
                raise ValueError(f"{path}: pair {pair.id}: unknown keys {sorted(unknown)}")
    return pairs


def _text(card: dict[str, Any]) -> str:
    labels = " ".join(str(s.get("label", "")) for s in card.get("suggestions", []))
    return f"{card.get('summary', '')}\n{card.get('detail', '')}\n{labels}"


def _holds(test: dict[str, Any], value: Any) -> bool:
    (op, want), *more = test.items()
    if more:
        return _holds({op: want}, value) and _holds(dict(more), value)
    if op == "absent":
        return (value is _MISSING) is bool(want)
    if op in ("ne", "lacks") and value is _MISSING:
        return True
    if value is _MISSING:
        return False
    if op == "eq":
        return bool(value == want)
    if op == "ne":
        return bool(value != want)
    if op == "in":
        return bool(value in want)
    if op in ("gt", "ge", "lt", "le"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return bool(
            {
                "gt": value > want,
                "ge": value >= want,
                "lt": value < want,
                "le": value <= want,
            }[op]
        )
    if op in ("contains", "lacks"):
        if isinstance(value, list):
            found = want in value
        else:
            found = str(want).lower() in str(value).lower()
        return found if op == "contains" else not found
    if op == "matches":
        return re.search(str(want), str(value), re.IGNORECASE) is not None
    raise ValueError(f"unknown test {op!r}")


def matches(card: dict[str, Any], predicate: dict[str, Any]) -> bool:
    topic = predicate.get("topic")
    if topic is not None and card.get("source", {}).get("topic", {}).get("code") != topic:
        return False
    payload = card.get("extension", {}).get("org.osteohooks", {})
    for name, test in (predicate.get("payload") or {}).items():
        if not _holds(test, payload.get(name, _MISSING)):
            return False
    text = predicate.get("text")
    return text is None or _holds(text, _text(card))


def contradictions(cards: list[dict[str, Any]], pairs: tuple[Pair, ...]) -> list[str]:
    held: list[str] = []
    for pair in pairs:
        left = [i for i, c in enumerate(cards) if matches(c, pair.card)]
        if not left:
            continue
        right = [i for i, c in enumerate(cards) if matches(c, pair.beside)]
        if any(a != b for a in left for b in right):
            held.append(pair.id)
    return held
