"""Checks of a card against CDS Hooks 2.0.1 (HL7 invariants cds-resp-1..7) and the card
contract (../shared/card-contract.md). Returns problems as text; an empty list is a pass.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from cds.contracts.cards import (
    CARD_TOPICS,
    CONTRACT_NULLABLE_FIELDS,
    EXTENSION_KEY,
    Card,
    card_errors,
    payload_problems,
)

ABSOLUTE_URL = re.compile(r"^https?://[^\s/]+\S*$")


def _empties(value: Any, path: str, nullable: frozenset[str] = frozenset()) -> list[str]:
    """Nulls, empty strings and empty lists/objects anywhere (absent must be omitted).

    `nullable` holds the paths the card contract specifies as "value or null".
    """
    out: list[str] = []
    if value is None:
        if path not in nullable:
            out.append(f"{path} is null (omit absent fields)")
    elif isinstance(value, str) and value == "":
        out.append(f"{path} is an empty string")
    elif isinstance(value, list):
        if not value:
            out.append(f"{path} is an empty list")
        for index, item in enumerate(value):
            out.extend(_empties(item, f"{path}[{index}]", nullable))
    elif isinstance(value, dict):
        if not value:
            out.append(f"{path} is an empty object")
        for key, item in value.items():
            out.extend(_empties(item, f"{path}.{key}", nullable))
    return out


def hl7_problems(card: Card | dict[str, Any]) -> list[str]:
    """The HL7 CDS Hooks invariants cds-resp-1..7 and the required Card fields: the errors
    of the one typed `Card` model (`cds.contracts.cards.card_errors`), which every card
    the builder makes is validated with (a `Card` has none)."""
    return card_errors(card)


def empty_elements(card: dict[str, Any]) -> list[str]:
    """CDS Hooks "Use of JSON": every null, "", [] or {} in the card, as paths.

    The payload fields the card contract specifies as "value or null" may be null.
    """
    topic_code = ((card.get("source") or {}).get("topic") or {}).get("code")
    nullable = frozenset(
        f"card.extension.{EXTENSION_KEY}.{name}"
        for name in CONTRACT_NULLABLE_FIELDS.get(str(topic_code), ())
    )
    return _empties(card, "card", nullable)


def contract_problems(card: Card | dict[str, Any]) -> list[str]:
    """The osteohooks card contract on top of CDS Hooks (of a card as it is written)."""
    if isinstance(card, Card):
        card = card.dump()
    problems = hl7_problems(card)
    problems.extend(empty_elements(card))
    try:
        uuid.UUID(str(card.get("uuid")))
    except ValueError:
        problems.append(f"uuid {card.get('uuid')!r} is not a UUID")
    source = card.get("source") or {}
    if not ABSOLUTE_URL.match(str(source.get("url", ""))):
        problems.append(f"source.url {source.get('url')!r} is not an absolute URL")
    topic = (source.get("topic") or {}).get("code")
    if topic not in CARD_TOPICS:
        problems.append(f"source.topic.code {topic!r} is not a card topic")
    for key in ("system", "display"):
        if not (source.get("topic") or {}).get(key):
            problems.append(f"source.topic.{key} is required")
    for index, link in enumerate(card.get("links") or []):
        if link.get("type") == "absolute" and not ABSOLUTE_URL.match(str(link.get("url", ""))):
            problems.append(f"links[{index}].url {link.get('url')!r} is not absolute")
    for index, reason in enumerate(card.get("overrideReasons") or []):
        if not reason.get("code") or not reason.get("system"):
            problems.append(f"overrideReasons[{index}] needs code and system")
    for index, suggestion in enumerate(card.get("suggestions") or []):
        try:
            uuid.UUID(str(suggestion.get("uuid")))
        except ValueError:
            problems.append(f"suggestions[{index}].uuid is not a UUID")
        for aindex, action in enumerate(suggestion.get("actions") or []):
            resource = action.get("resource") or {}
            where = f"suggestions[{index}].actions[{aindex}].resource"
            if action.get("type") == "create":
                if resource.get("resourceType") != "ServiceRequest":
                    problems.append(f"{where} is not a ServiceRequest")
                if resource.get("status") != "draft" or resource.get("intent") != "proposal":
                    problems.append(f"{where} must be status draft, intent proposal")
                if not (resource.get("code") or {}).get("coding"):
                    problems.append(f"{where}.code has no coding")
    ext = (card.get("extension") or {}).get(EXTENSION_KEY)
    if not isinstance(ext, dict):
        problems.append(f"extension[{EXTENSION_KEY!r}] is missing")
        return problems
    if topic in CARD_TOPICS:
        problems.extend(payload_problems(str(topic), ext))
    return problems
