"""From rule firings to CDS Hooks 2.0.1 cards: one card per topic per evaluation.

Merge (docs/architecture.md, "Cards"): the contributions of a topic are ordered by
priority (highest first; ties by rule id, then fact id). Scalar payload fields and the
summary come from the first (the winning rule); the list fields ``findings`` / ``items`` /
``sites`` are the ordered union; the indicator is the most severe; details are joined in that
order; ``evidence`` is the union; ``rule`` is the winner and ``rules`` all of them.
Suggestions are the union (by label) and become draft ServiceRequests coded from
``fhir_profiles/order-codes.json``. Absent values are omitted, never null or empty.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError

from cds.cards.render import CardPlan, CardRenderer
from cds.contracts.cards import (
    CONTRACT_NULLABLE_FIELDS,
    EXTENSION_KEY,
    HOOK_TOPICS,
    LIST_FIELDS,
    MAX_SUMMARY,
    SEVERITY,
    TOPIC_ORDER,
    Card,
    card_errors,
)
from cds.fhir.profiles import OrderCode, ProfileError, Profiles, load_profiles
from cds.rules.result import Firing
from cds.rules.ruleset import RuleSet

#: Topics whose meaning rests on the score type, hence on menopausal status (CS-1.6).
MENOPAUSE_TOPICS = frozenset(
    {"bmd-classification", "tbs", "workup", "rescan-interval", "screening"}
)
#: Sources that are not published guidance: never offered as a link.
UNPUBLISHED_SOURCES = frozenset({"SEED"})

OVERRIDE_SYSTEM = "https://osteohooks.org/fhir/CodeSystem/override-reason"
OVERRIDE_REASONS: tuple[tuple[str, str], ...] = (
    ("already-ordered", "Already ordered or done"),
    ("patient-declined", "Patient declined"),
    ("not-clinically-appropriate", "Not clinically appropriate for this patient"),
    ("data-incorrect", "Data on record is incorrect or out of date"),
)
#: Namespace of deterministic card and suggestion uuids (uuid5).
UUID_NAMESPACE = uuid.UUID("5b0c3f5e-7a53-4d0c-9d37-0e8f3c6a9b11")


class CardBuildError(RuntimeError):
    """A card could not be built (template error, too-long summary, unknown order code).

    ``rule_id`` names the rule whose card failed. Never read as "no cards".
    """

    def __init__(self, message: str, rule_id: str | None = None) -> None:
        super().__init__(message)
        self.rule_id = rule_id


@dataclass(frozen=True)
class CardContext:
    """Evaluation context a card needs.

    ``uuid_seed``: when set, card and suggestion uuids are uuid5 of the ruleset version,
    this seed and the topic (byte-identical reruns, e.g. ``cds replay``); otherwise uuid4.
    """

    ruleset_version: str
    hook: str = "patient-view"
    patient_id: str | None = None
    as_of: date | None = None
    uuid_seed: str | None = None


@dataclass(slots=True)
class _Contribution:
    """One rendered card of a firing; ``fact`` is the firing's (read, never changed)."""

    rule: CardPlan
    fact_id: str
    card: dict[str, Any]
    fact: Mapping[str, Any]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tidy_markdown(text: str) -> str:
    """`_tidy_text`, answering at once for a text it changes only by stripping (most).

    Its first step strips the text. A stripped ASCII text whose only characters that
    are not printable are newlines has no line boundary but the newline and no
    whitespace but spaces and newlines; without two spaces in a row, a space before a
    newline or three newlines in a row, no line has trailing whitespace and neither
    substitution applies, so the stripped text is the result.
    """
    stripped = text.strip()
    if (
        stripped.isascii()
        and stripped.replace("\n", "").isprintable()
        and "  " not in stripped
        and " \n" not in stripped
        and "\n\n\n" not in stripped
    ):
        return stripped
    return _tidy_text(text)


@functools.lru_cache(maxsize=2048)
def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out = "\n".join(lines)
    out = re.sub(r"[ \t]{2,}", " ", out)
    return re.sub(r"\n{3,}", "\n\n", out).strip()


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def _render(renderer: CardRenderer, firing: Firing) -> _Contribution | None:
    rule = renderer.ruleset.rule(firing.rule_id)
    if rule.then.card is None:
        return None
    try:
        card = renderer.render_card(firing.rule_id, firing.fact, firing.fact_type)
    except Exception as exc:  # jinja errors, absent values in filters: name the rule
        raise CardBuildError(
            f"rule {firing.rule_id}: card template failed for fact {firing.fact_id}: {exc}",
            firing.rule_id,
        ) from exc
    # The fact is not copied: the merge only reads it, within this build_cards call.
    return _Contribution(renderer.plan(rule.id), firing.fact_id, card, firing.fact)


def _union(lists: Iterable[Iterable[Any]]) -> list[Any]:
    out: list[Any] = []
    for values in lists:
        for value in values:
            if value not in out:
                out.append(value)
    return out


def _contribution_lists(contribution: _Contribution, name: str) -> list[Any]:
    values: list[Any] = []
    card_list = contribution.card.get(name)
    if isinstance(card_list, list):
        values.extend(card_list)
    payload = contribution.card.get("payload") or {}
    payload_list = payload.get(name) if isinstance(payload, dict) else None
    if isinstance(payload_list, list):
        values.extend(payload_list)
    return values


def _notes(topic: str, contributions: Sequence[_Contribution], ruleset: RuleSet) -> list[str]:
    """What the card rests on that the reader must know: assumptions, preliminary data."""
    notes: list[str] = []
    for contribution in contributions:
        if contribution.fact.get("preliminary") is True:
            notes.append(
                "**Preliminary result**: a DXA result used here has status *preliminary* "
                "(CS-1.1); confirm against the final report."
            )
            break
    if topic in MENOPAUSE_TOPICS:
        for fact in (c.fact for c in contributions):
            if fact.get("menopausal_assumed") is True and fact.get("sex") == "female":
                age_limit = ruleset.parameters.get("menopause_assumption_age", 50)
                status = str(fact.get("menopausal_status", "unknown"))
                notes.append(
                    f"**Assumed**: menopausal status *{status}* from age {fact.get('age')} "
                    f"(no recorded status; women aged {age_limit} or older are treated as "
                    "postmenopausal, CS-1.6)."
                )
                break
    return notes


def _source(rule: CardPlan, profiles: Profiles, topic: str) -> dict[str, Any]:
    if rule.source is not None:
        label, url = rule.source
        return {"label": label, "url": url, "topic": profiles.topic_coding(topic)}
    raise CardBuildError(
        f"rule {rule.rule_id}: its evidence names no source of rules/evidence.yaml "
        "(a card must name its evidence, CS-11.3)",
        rule.rule_id,
    )


def _links(rules: Sequence[CardPlan], ruleset: RuleSet) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = []
    seen: set[str] = set()
    for rule in rules:
        for link in rule.links:
            url = str(link.get("url", ""))
            if url and url not in seen:
                seen.add(url)
                links.append(
                    {"label": str(link["label"]), "url": url, "type": link.get("type", "absolute")}
                )
    for rule in rules:
        for name in rule.evidence:
            src = ruleset.evidence.sources.get(name)
            if src is None or name in UNPUBLISHED_SOURCES or src.url in seen:
                continue
            seen.add(src.url)
            links.append({"label": src.label, "url": src.url, "type": "absolute"})
    return links


def _period(occurrence: Mapping[str, Any]) -> dict[str, str]:
    """A suggestion's occurrence as a ServiceRequest.occurrencePeriod (maybe empty)."""
    return {k: str(occurrence[k]) for k in ("start", "end") if _present(occurrence.get(k))}


class _Evaluation:
    """What the cards of one evaluation share, worked out once: the ServiceRequest
    subject and authoredOn, and how uuids are made: ``uuid.uuid4()`` without a seed,
    else ``uuid.uuid5(UUID_NAMESPACE, "version|seed|" + "|".join(parts))``.
    """

    __slots__ = ("authored", "context", "subject")

    def __init__(self, context: CardContext) -> None:
        self.context = context
        self.subject = f"Patient/{context.patient_id}" if context.patient_id else None
        self.authored = context.as_of.isoformat() if context.as_of is not None else None

    def uuid(self, *parts: str) -> str:
        context = self.context
        if context.uuid_seed is None:
            return str(uuid.uuid4())
        name = "|".join((context.ruleset_version, context.uuid_seed, *parts))
        return str(uuid.uuid5(UUID_NAMESPACE, name))

    def resource(
        self, order: OrderCode, period: dict[str, str] | None, note: str | None
    ) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "proposal",
        }
        category = order.category_coding()
        if category is not None:
            resource["category"] = [{"coding": [category]}]
        resource["code"] = {"coding": [order.coding()], "text": order.display}
        if self.subject is not None:
            resource["subject"] = {"reference": self.subject}
        if period:
            resource["occurrencePeriod"] = dict(period)
        if self.authored is not None:
            resource["authoredOn"] = self.authored
        if note:
            resource["note"] = [{"text": note}]
        return resource


def _suggestions(
    topic: str,
    contributions: Sequence[_Contribution],
    profiles: Profiles,
    evaluation: _Evaluation,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    labels: set[str] = set()
    for contribution in contributions:
        for raw in contribution.card.get("suggestions") or []:
            label = _one_line(str(raw.get("label", "")))
            if not label or label in labels:
                continue
            labels.add(label)
            note_raw = raw.get("note")
            note = _one_line(str(note_raw)) if _present(note_raw) else None
            actions: list[dict[str, Any]] = []
            orders = raw.get("orders") or []
            omit_raw = raw.get("omit_orders")
            if orders and _present(omit_raw):
                omit = {k.strip() for k in str(omit_raw).split(",")}
                orders = [k for k in orders if str(k) not in omit]
                if not orders:
                    continue  # every test it would order has a recent result (CS-6.1)
            if orders:
                occurrence = raw.get("occurrence")
                period = _period(occurrence) if occurrence else None
                due = f" (due {' to '.join(period.values())})" if period else ""
                for key in orders:
                    try:
                        order = profiles.order(str(key))
                    except ProfileError as exc:
                        raise CardBuildError(
                            f"rule {contribution.rule.rule_id}: {exc}",
                            contribution.rule.rule_id,
                        ) from exc
                    actions.append(
                        {
                            "type": "create",
                            "description": f"Draft order: {order.display}{due}",
                            "resource": evaluation.resource(order, period, note),
                        }
                    )
            suggestion: dict[str, Any] = {
                "label": label,
                "uuid": evaluation.uuid(topic, "suggestion", label),
                "isRecommended": bool(raw.get("recommended", False)),
            }
            if actions:
                suggestion["actions"] = actions
            out.append(suggestion)
    return out


def _contribution_order(contribution: _Contribution) -> tuple[int, str, str]:
    return (-contribution.rule.priority, contribution.rule.rule_id, contribution.fact_id)


def _merge(
    topic: str,
    contributions: list[_Contribution],
    ruleset: RuleSet,
    profiles: Profiles,
    context: CardContext,
    evaluation: _Evaluation,
) -> dict[str, Any]:
    """The card of one topic (see the module docstring)."""
    contributions = sorted(contributions, key=_contribution_order)
    winner = contributions[0]
    rule = winner.rule
    winner_card = winner.card
    summary = _one_line(str(winner_card.get("summary", "")))
    if not summary:
        raise CardBuildError(f"rule {rule.rule_id}: empty card summary", rule.rule_id)
    if len(summary) >= MAX_SUMMARY:
        raise CardBuildError(
            f"rule {rule.rule_id}: summary has {len(summary)} characters (must be under "
            f"{MAX_SUMMARY}): {summary!r}",
            rule.rule_id,
        )
    indicator = max(
        (str(c.card.get("indicator", "info")) for c in contributions),
        key=lambda i: SEVERITY.get(i, 0),
    )
    details: list[str] = []
    for contribution in contributions:
        text = contribution.card.get("detail")
        if _present(text):
            tidy = _tidy_markdown(str(text))
            if tidy and tidy not in details:
                details.append(tidy)
    details.extend(_notes(topic, contributions, ruleset))

    payload: dict[str, Any] = {
        "rule": rule.rule_id,
        "rules": _union([[c.rule.rule_id] for c in contributions]),
        "evidence": _union(c.rule.evidence for c in contributions),
        "rulesetVersion": context.ruleset_version,
    }
    winner_payload = winner_card.get("payload") or {}
    for key, value in winner_payload.items():
        if key in LIST_FIELDS or not _present(value):
            continue
        payload[key] = value
    for name in LIST_FIELDS:
        merged = _union(_contribution_lists(c, name) for c in contributions)
        if merged:
            payload[name] = merged
    for name in CONTRACT_NULLABLE_FIELDS.get(topic, ()):
        payload.setdefault(name, None)  # the contract: "code or null", never absent

    card: dict[str, Any] = {
        "uuid": evaluation.uuid(topic),
        "summary": summary,
        "indicator": indicator,
    }
    if details:
        card["detail"] = "\n\n".join(details)
    card["source"] = _source(rule, profiles, topic)
    suggestions = _suggestions(topic, contributions, profiles, evaluation)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "any"
    if suggestions or indicator != "info":
        card["overrideReasons"] = [
            {"code": code, "system": OVERRIDE_SYSTEM, "display": display}
            for code, display in OVERRIDE_REASONS
        ]
    links = _links([c.rule for c in contributions], ruleset)
    if links:
        card["links"] = links
    card["extension"] = {EXTENSION_KEY: payload}
    return card


#: Position of each topic in :data:`TOPIC_ORDER`.
_TOPIC_POSITION: dict[str, int] = {name: index for index, name in enumerate(TOPIC_ORDER)}


def build_cards(
    firings: Sequence[Firing],
    renderer: CardRenderer,
    context: CardContext,
    *,
    profiles: Profiles | None = None,
) -> list[Card]:
    """One CDS Hooks card per topic from the firings (those of card-less rules are skipped),
    rendered by `renderer` (`CardRenderer(ruleset)`, kept for as long as the rule set).

    Cards are listed most severe first, then in :data:`TOPIC_ORDER`, each validated once,
    here, as the contract's `Card` (the one representation every reader gets). Raises
    :class:`CardBuildError` (naming the rule) when a card cannot be built.
    """
    cat = profiles or load_profiles()
    ruleset = renderer.ruleset
    topics: dict[str, list[_Contribution]] = {}
    for firing in firings:
        contribution = _render(renderer, firing)
        if contribution is None:
            continue
        name = str(contribution.card.get("topic"))
        contributions = topics.get(name)
        if contributions is None:
            topics[name] = [contribution]
        else:
            contributions.append(contribution)
    evaluation = _Evaluation(context)
    cards = [
        (name, _merge(name, contributions, ruleset, cat, context, evaluation))
        for name, contributions in topics.items()
    ]
    allowed = HOOK_TOPICS.get(context.hook)
    if allowed is not None:
        cards = [(n, c) for n, c in cards if n in allowed or c["indicator"] == "critical"]
    order = _TOPIC_POSITION
    cards.sort(key=lambda nc: (-SEVERITY.get(nc[1]["indicator"], 0), order.get(nc[0], 99), nc[0]))
    return [_card(card) for _name, card in cards]


def _card(card: dict[str, Any]) -> Card:
    """The merged card as the contract's `Card` (CardBuildError naming the winning rule
    when it is not one: a rule set whose card would break CDS Hooks is never answered)."""
    try:
        return Card.model_validate(card)
    except ValidationError:
        rule_id = str(card["extension"][EXTENSION_KEY]["rule"])
        raise CardBuildError(
            f"rule {rule_id}: its card is not a CDS Hooks 2.0.1 card: "
            + "; ".join(card_errors(card)),
            rule_id,
        ) from None
