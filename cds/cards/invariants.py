"""Checks of a card against CDS Hooks 2.0.1 (HL7 invariants cds-resp-1..7) and the card
contract (../shared/card-contract.md). Returns problems as text; an empty list is a pass.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from cds.rules.model import CARD_TOPICS, CONTRACT_NULLABLE_FIELDS, TOPIC_PAYLOAD_FIELDS

INDICATORS = frozenset({"info", "warning", "critical"})
SELECTION_BEHAVIORS = frozenset({"at-most-one", "any"})
ACTION_SELECTION_BEHAVIORS = frozenset({"all", "any", "at-most-one"})
ACTION_TYPES = frozenset({"create", "update", "delete"})
LINK_TYPES = frozenset({"absolute", "smart"})
CATEGORIES = {
    "bmd-classification": {
        "normal",
        "low-bone-mass",
        "osteoporosis",
        "below-expected-range-for-age",
        "within-expected-range-for-age",
        "not-classifiable",
    }
}
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
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


def hl7_problems(card: dict[str, Any]) -> list[str]:
    """The HL7 CDS Hooks invariants cds-resp-1..7 (and the required Card fields)."""
    problems: list[str] = []
    for key in ("summary", "indicator", "source"):
        if key not in card:
            problems.append(f"card lacks required '{key}'")
    if card.get("indicator") not in INDICATORS:
        problems.append(f"indicator {card.get('indicator')!r} is not info|warning|critical")
    source = card.get("source") or {}
    if not source.get("label"):
        problems.append("source.label is required")
    suggestions = card.get("suggestions") or []
    behavior = card.get("selectionBehavior")
    if suggestions and behavior is None:
        problems.append("cds-resp-6: suggestions present but no selectionBehavior")
    if behavior is not None and behavior not in SELECTION_BEHAVIORS:
        problems.append(f"selectionBehavior {behavior!r} is not at-most-one|any")
    if behavior == "at-most-one" and sum(1 for s in suggestions if s.get("isRecommended")) > 1:
        problems.append("cds-resp-1: at-most-one allows one recommended suggestion")
    for index, suggestion in enumerate(suggestions):
        where = f"suggestions[{index}]"
        if not suggestion.get("label"):
            problems.append(f"{where}.label is required")
        asb = suggestion.get("actionSelectionBehavior")
        if asb is not None and asb not in ACTION_SELECTION_BEHAVIORS:
            problems.append(f"cds-resp-7: {where}.actionSelectionBehavior {asb!r}")
        for aindex, action in enumerate(suggestion.get("actions") or []):
            awhere = f"{where}.actions[{aindex}]"
            if action.get("type") not in ACTION_TYPES:
                problems.append(f"{awhere}.type {action.get('type')!r}")
            if not action.get("description"):
                problems.append(f"cds-resp-5: {awhere} has no description")
            if action.get("type") == "delete" and (
                "resourceId" not in action or "resource" in action
            ):
                problems.append(f"cds-resp-2: {awhere} delete needs resourceId, no resource")
    for index, reason in enumerate(card.get("overrideReasons") or []):
        if not reason.get("display"):
            problems.append(f"cds-resp-4: overrideReasons[{index}] has no display")
    for index, link in enumerate(card.get("links") or []):
        if link.get("type") not in LINK_TYPES:
            problems.append(f"links[{index}].type {link.get('type')!r}")
        if link.get("type") != "smart" and "appContext" in link:
            problems.append(f"cds-resp-3: links[{index}] has appContext but is not smart")
        if not link.get("label") or not link.get("url"):
            problems.append(f"links[{index}] needs label and url")
    return problems


def empty_elements(card: dict[str, Any]) -> list[str]:
    """CDS Hooks "Use of JSON": every null, "", [] or {} in the card, as paths.

    The payload fields the card contract specifies as "value or null" may be null.
    """
    topic_code = ((card.get("source") or {}).get("topic") or {}).get("code")
    nullable = frozenset(
        f"card.extension.org.osteohooks.{name}"
        for name in CONTRACT_NULLABLE_FIELDS.get(str(topic_code), ())
    )
    return _empties(card, "card", nullable)


def contract_problems(card: dict[str, Any]) -> list[str]:
    """The osteohooks card contract on top of CDS Hooks."""
    problems = hl7_problems(card)
    problems.extend(empty_elements(card))
    try:
        uuid.UUID(str(card.get("uuid")))
    except ValueError:
        problems.append(f"uuid {card.get('uuid')!r} is not a UUID")
    summary = card.get("summary")
    if not isinstance(summary, str) or len(summary) >= 140:
        problems.append(f"summary must be a string under 140 characters: {summary!r}")
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
    ext = (card.get("extension") or {}).get("org.osteohooks")
    if not isinstance(ext, dict):
        problems.append("extension['org.osteohooks'] is missing")
        return problems
    if not ext.get("rule"):
        problems.append("extension payload lacks 'rule'")
    if not isinstance(ext.get("evidence"), list) or not ext.get("evidence"):
        problems.append("extension payload lacks 'evidence'")
    if topic in TOPIC_PAYLOAD_FIELDS:
        allowed = set(TOPIC_PAYLOAD_FIELDS[topic]) | {"rule", "rules", "evidence", "rulesetVersion"}
        extra = sorted(set(ext) - allowed)
        if extra:
            problems.append(f"extension payload has fields outside topic {topic}: {extra}")
    if topic == "bmd-classification":
        if ext.get("category") not in CATEGORIES[topic]:
            problems.append(f"category {ext.get('category')!r} is not in the contract")
        if "scoreType" in ext and ext["scoreType"] not in ("T", "Z"):
            problems.append(f"scoreType {ext['scoreType']!r}")
    if topic == "rescan-interval":
        for key in ("basis", "minMonths", "maxMonths", "dueFrom", "dueTo"):
            if key not in ext:
                problems.append(f"rescan-interval payload lacks {key}")
        for key in ("dueFrom", "dueTo"):
            if key in ext and not ISO_DATE.match(str(ext[key])):
                problems.append(f"{key} {ext[key]!r} is not an ISO date")
    if topic == "dxa-order-timing" and not isinstance(ext.get("tooSoon"), bool):
        problems.append("dxa-order-timing payload lacks boolean tooSoon")
    for name in CONTRACT_NULLABLE_FIELDS.get(str(topic), ()):
        if name not in ext:
            problems.append(f"{topic} payload lacks {name} (the contract: a code or null)")
        elif ext[name] is not None and not isinstance(ext[name], str):
            problems.append(f"{topic} payload {name} must be a code or null")
    if topic == "bmd-change" and not isinstance(ext.get("comparable"), bool):
        problems.append("bmd-change payload lacks boolean comparable")
    if topic == "bmd-change":
        problems.extend(_site_problems(ext.get("sites")))
    if topic in ("artifact-warning", "therapy-safety") and not ext.get("findings"):
        problems.append(f"{topic} payload lacks findings")
    if topic == "workup" and not ext.get("items"):
        problems.append("workup payload lacks items")
    return problems


#: CS-4.5 (rev 2): the sites a bmd-change card may list, each at most once.
CHANGE_SITES = ("lumbar-spine", "total-hip")


def _site_problems(sites: Any) -> list[str]:
    """The bmd-change `sites` list of the card contract (rev 2)."""
    if sites is None:
        return []
    if not isinstance(sites, list):
        return ["bmd-change sites must be a list"]
    problems: list[str] = []
    seen: list[Any] = []
    for i, entry in enumerate(sites):
        if not isinstance(entry, dict):
            problems.append(f"bmd-change sites[{i}] is not an object")
            continue
        site = entry.get("site")
        if site not in CHANGE_SITES:
            problems.append(f"bmd-change sites[{i}].site {site!r} is not in the contract")
        if site in seen:
            problems.append(f"bmd-change sites lists {site!r} twice")
        seen.append(site)
        extra = sorted(set(entry) - set(CHANGE_SITE_FIELDS))
        if extra:
            problems.append(f"bmd-change sites[{i}] has fields outside the contract: {extra}")
        comparable = entry.get("comparable")
        if not isinstance(comparable, bool):
            problems.append(f"bmd-change sites[{i}] lacks boolean comparable")
        if comparable is True:
            for key in ("percentChange", "lsc"):
                if not isinstance(entry.get(key), int | float):
                    problems.append(f"bmd-change sites[{i}] lacks number {key}")
            if not isinstance(entry.get("significant"), bool):
                problems.append(f"bmd-change sites[{i}] lacks boolean significant")
            if entry.get("direction") not in ("gain", "loss", "stable"):
                problems.append(f"bmd-change sites[{i}].direction {entry.get('direction')!r}")
    return problems


CHANGE_SITE_FIELDS = ("site", "comparable", "percentChange", "lsc", "significant", "direction")
