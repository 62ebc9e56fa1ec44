"""The HL7 CDS Hooks invariants (reference/cds-hooks-invariants.fsh.txt), written out
independently of the service's models so the tests do not grade the code with itself."""

from __future__ import annotations

from typing import Any


def card_violations(card: dict[str, Any]) -> list[str]:
    """cds-resp-1..7 plus the card attribute table, for one card."""
    out: list[str] = []
    suggestions = card.get("suggestions")
    behavior = card.get("selectionBehavior")
    # cds-resp-1
    if (
        behavior == "at-most-one"
        and sum(1 for s in suggestions or [] if s.get("isRecommended")) > 1
    ):
        out.append("cds-resp-1")
    for suggestion in suggestions or []:
        for action in suggestion.get("actions") or []:
            # cds-resp-2
            if action.get("type") == "delete" and (
                "resourceId" not in action or "resource" in action
            ):
                out.append("cds-resp-2")
            # cds-resp-5
            if not action.get("description"):
                out.append("cds-resp-5")
            if action.get("type") not in ("create", "update", "delete"):
                out.append("action.type")
        if not suggestion.get("label"):
            out.append("suggestion.label")
    # cds-resp-3
    for link in card.get("links") or []:
        if link.get("type") != "smart" and "appContext" in link:
            out.append("cds-resp-3")
        if (
            link.get("type") not in ("absolute", "smart")
            or not link.get("url")
            or not link.get("label")
        ):
            out.append("link")
    # cds-resp-4
    for reason in card.get("overrideReasons") or []:
        if not reason.get("display"):
            out.append("cds-resp-4")
    # cds-resp-6
    if suggestions and not behavior:
        out.append("cds-resp-6")
    # cds-resp-7 (selectionBehavior values of CDS Hooks 2.0.1 cards)
    if behavior is not None and behavior not in ("all", "any", "at-most-one"):
        out.append("cds-resp-7")
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary or len(summary) >= 140:
        out.append("summary")
    if card.get("indicator") not in ("info", "warning", "critical"):
        out.append("indicator")
    source = card.get("source")
    if not isinstance(source, dict) or not source.get("label"):
        out.append("source.label")
    topic = ((card.get("source") or {}).get("topic") or {}).get("code")
    out.extend(empty_elements(card, "card", topic))
    return out


#: card-contract.md, dxa-order-timing: `exception` (code or null). CDS Hooks: elements
#: "SHALL NOT be null, unless otherwise specified"; this is the one place ours specifies it.
CONTRACT_NULL = ("dxa-order-timing", "card.extension.org.osteohooks.exception")


def empty_elements(value: Any, where: str, topic: Any = None) -> list[str]:
    """CDS Hooks "Use of JSON": no null, "", [] or {} anywhere (but the contract's null)."""
    if value is None and (topic, where) == CONTRACT_NULL:
        return []
    if value is None or value in ("", [], {}):
        return [f"empty {where}"]
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(empty_elements(item, f"{where}.{key}", topic))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(empty_elements(item, f"{where}[{index}]", topic))
    return out


def request_violations(request: dict[str, Any]) -> list[str]:
    out = []
    if "fhirAuthorization" in request and "fhirServer" not in request:
        out.append("cds-r-1")
    auth = request.get("fhirAuthorization") or {}
    if "patient/" in str(auth.get("scope", "")) and "patient" not in auth:
        out.append("cds-r-2")
    return out


def feedback_violations(item: dict[str, Any]) -> list[str]:
    out = []
    if item.get("outcome") not in ("accepted", "overridden"):
        out.append("cds-fb-1")
    if item.get("outcome") == "accepted" and not item.get("acceptedSuggestions"):
        out.append("cds-fb-2")
    reason = item.get("overrideReason")
    if reason is not None and not (reason.get("reason") or reason.get("userComment")):
        out.append("cds-fb-3")
    return out
