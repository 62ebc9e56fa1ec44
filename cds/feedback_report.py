"""Feedback analytics: per rule and topic, how clinicians answered the cards.

Reads the feedback and audit store (`cds.store`: the `issued_card` and `feedback`
tables) with read-only SQLAlchemy queries; it never creates tables or writes. For each
(rule, topic): cards issued, cards accepted, cards overridden, the acceptance rate among
answered cards, the override reasons with their counts, and the acceptance trend by
ISO week. Rules are listed with the most overridden first: that is where alert fatigue
starts.

An "answered" card is one with at least one feedback item; a card answered both ways
(two clinicians) counts once in each. Rates are kept as exact fractions and rounded only
for display.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import Any

from sqlalchemy import create_engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cds.store.db import FeedbackRow, IssuedCardRow

UNKNOWN = "(card not issued by this store)"


class FeedbackStoreError(Exception):
    """The store cannot be read (the message says what to do)."""


@dataclass
class RuleFeedback:
    rule: str
    topic: str
    issued: int = 0
    accepted: set[str] = field(default_factory=set)
    overridden: set[str] = field(default_factory=set)
    reasons: Counter[str] = field(default_factory=Counter)
    weeks: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)

    @property
    def acceptance(self) -> Fraction | None:
        answered = len(self.accepted) + len(self.overridden)
        return Fraction(len(self.accepted), answered) if answered else None

    def trend(self) -> list[dict[str, Any]]:
        out = []
        for week in sorted(self.weeks):
            accepted, overridden = self.weeks[week]
            answered = len(accepted) + len(overridden)
            out.append(
                {
                    "week": week,
                    "accepted": len(accepted),
                    "overridden": len(overridden),
                    "acceptanceRate": _rate(Fraction(len(accepted), answered)),
                }
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        acceptance = self.acceptance
        return {
            "rule": self.rule,
            "topic": self.topic,
            "issued": self.issued,
            "accepted": len(self.accepted),
            "overridden": len(self.overridden),
            "acceptanceRate": _rate(acceptance) if acceptance is not None else None,
            "overrideReasons": [
                {"reason": reason, "count": count} for reason, count in _reasons(self.reasons)
            ],
            "trend": self.trend(),
        }


@dataclass
class FeedbackReport:
    since: date | None
    rules: list[RuleFeedback]

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "rules": [r.as_dict() for r in self.rules],
        }


def _rate(value: Fraction) -> float:
    return round(float(value), 4)


def _reasons(counter: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _week(moment: datetime) -> str:
    year, week, _day = _utc(moment).isocalendar()
    return f"{year}-W{week:02d}"


def _reason(row: FeedbackRow) -> str:
    if row.override_code is None and row.override_display is None:
        return "(no reason given)"
    if row.override_display and row.override_code:
        return f"{row.override_code}: {row.override_display}"
    return str(row.override_code or row.override_display)


def build_report(database_url: str, since: date | None = None) -> FeedbackReport:
    """The report from the store at `database_url` (cards issued and answered on or after
    `since`, a UTC day, when given)."""
    try:
        engine = create_engine(database_url)
    except (SQLAlchemyError, ValueError) as exc:
        raise FeedbackStoreError(f"cannot open the store {database_url!r}: {exc}") from None
    start = datetime(since.year, since.month, since.day, tzinfo=UTC) if since else None
    try:
        tables = set(inspect(engine).get_table_names())
        missing = {IssuedCardRow.__tablename__, FeedbackRow.__tablename__} - tables
        if missing:
            raise FeedbackStoreError(
                f"the store {database_url!r} has no {', '.join(sorted(missing))} table: point "
                "--database-url (or OSTEOHOOKS_DATABASE_URL) at the service's database"
            )
        by_key: dict[tuple[str, str], RuleFeedback] = {}

        def entry(rule: str | None, topic: str | None) -> RuleFeedback:
            key = (rule or UNKNOWN, topic or "")
            if key not in by_key:
                by_key[key] = RuleFeedback(*key)
            return by_key[key]

        with Session(engine) as session:
            issued = select(IssuedCardRow.rule, IssuedCardRow.topic, IssuedCardRow.issued_at)
            for rule, topic, issued_at in session.execute(issued):
                if start is None or _utc(issued_at) >= start:
                    entry(rule, topic).issued += 1
            for row in session.scalars(select(FeedbackRow)):
                if start is not None and _utc(row.outcome_timestamp) < start:
                    continue
                item = entry(row.rule, row.topic)
                accepted, overridden = item.weeks.setdefault(
                    _week(row.outcome_timestamp), (set(), set())
                )
                if row.outcome == "accepted":
                    item.accepted.add(row.card_uuid)
                    accepted.add(row.card_uuid)
                elif row.outcome == "overridden":
                    item.overridden.add(row.card_uuid)
                    overridden.add(row.card_uuid)
                    item.reasons[_reason(row)] += 1
    except SQLAlchemyError as exc:
        raise FeedbackStoreError(f"cannot read the store {database_url!r}: {exc}") from None
    finally:
        engine.dispose()
    rules = sorted(
        by_key.values(),
        key=lambda r: (-len(r.overridden), r.acceptance or 0, r.rule, r.topic),
    )
    return FeedbackReport(since, rules)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render_text(report: FeedbackReport) -> str:
    """A table for people, then the override reasons and trend of each rule."""
    data = report.as_dict()
    head = "Feedback per rule" + (f" since {data['since']}" if data["since"] else "")
    if not data["rules"]:
        return head + ": no cards issued or answered.\n"
    lines = [head + " (most overridden first)", ""]
    header = ("rule", "topic", "issued", "accepted", "overridden", "acceptance")
    rows = [
        (
            r["rule"],
            r["topic"],
            str(r["issued"]),
            str(r["accepted"]),
            str(r["overridden"]),
            _percent(r["acceptanceRate"]),
        )
        for r in data["rules"]
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    for r in data["rules"]:
        if not r["overrideReasons"] and not r["trend"]:
            continue
        lines += ["", f"{r['rule']} ({r['topic']})"]
        for reason in r["overrideReasons"]:
            lines.append(f"  overridden {reason['count']}x: {reason['reason']}")
        if r["trend"]:
            lines.append(
                "  acceptance by week: "
                + ", ".join(
                    f"{t['week']} {_percent(t['acceptanceRate'])} "
                    f"({t['accepted']}/{t['accepted'] + t['overridden']})"
                    for t in r["trend"]
                )
            )
    return "\n".join(lines) + "\n"


def render_json(report: FeedbackReport) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"


def render_csv(report: FeedbackReport) -> str:
    """One row per rule and topic; reasons and trend as `a: n; b: m` text cells."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "rule",
            "topic",
            "issued",
            "accepted",
            "overridden",
            "acceptance_rate",
            "override_reasons",
            "trend",
        ]
    )
    for r in report.as_dict()["rules"]:
        writer.writerow(
            [
                r["rule"],
                r["topic"],
                r["issued"],
                r["accepted"],
                r["overridden"],
                "" if r["acceptanceRate"] is None else r["acceptanceRate"],
                "; ".join(f"{x['reason']}: {x['count']}" for x in r["overrideReasons"]),
                "; ".join(f"{t['week']}: {t['acceptanceRate']}" for t in r["trend"]),
            ]
        )
    return out.getvalue()


RENDERERS = {"text": render_text, "json": render_json, "csv": render_csv}
