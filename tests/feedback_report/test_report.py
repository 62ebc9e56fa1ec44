"""`cds feedback report`: per rule and topic, from a store the service itself wrote
(cds.store's own audit and feedback API), in text, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cds.cli import app
from cds.feedback_report import UNKNOWN, FeedbackStoreError, build_report, render_text
from cds.store import AuditRecord, FeedbackItem, IssuedCard, Store

SERVICE = "bmd-patient-view"
WEEK_1 = datetime(2026, 11, 2, 9, tzinfo=UTC)  # ISO week 2026-W45
WEEK_2 = datetime(2026, 11, 10, 9, tzinfo=UTC)  # 2026-W46


def _issue(store: Store, at: datetime, *cards: IssuedCard) -> None:
    store.record(
        AuditRecord(
            service=SERVICE,
            hook="patient-view",
            hook_instance=f"hi-{cards[0].uuid}",
            ruleset_version="v1",
            status=200,
            rules_fired=[c.rule or "" for c in cards],
            cards=list(cards),
            latency_ms=1.0,
            at=at,
        )
    )


def _answer(store: Store, card: str, outcome: str, at: datetime, code: str | None = None) -> None:
    item = FeedbackItem(
        card=card,
        outcome=outcome,
        outcome_timestamp=at,
        accepted_suggestions=["s1"] if outcome == "accepted" else (),
        override_system="http://example.org/reasons" if code else None,
        override_code=code,
        override_display={"not-relevant": "Not relevant", "already-done": "Already done"}.get(
            code or ""
        ),
    )
    assert store.store_feedback(SERVICE, [item]) == (1, 0)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """Four workup cards (2 overridden, 1 accepted, 1 unanswered), two TBS cards (accepted
    in two weeks), one feedback item for a card this store never issued."""
    url = f"sqlite:///{tmp_path / 'osteohooks.db'}"
    store = Store(url)
    for n in range(4):
        _issue(store, WEEK_1, IssuedCard(f"w{n}", "workup.labs", "workup"))
    _issue(store, WEEK_1, IssuedCard("t0", "tbs.women.degraded", "tbs"))
    _issue(store, WEEK_2, IssuedCard("t1", "tbs.women.degraded", "tbs"))
    store.flush()
    _answer(store, "w0", "overridden", WEEK_1, "not-relevant")
    _answer(store, "w1", "overridden", WEEK_2, "not-relevant")
    _answer(store, "w2", "accepted", WEEK_2)
    _answer(store, "t0", "accepted", WEEK_1)
    _answer(store, "t1", "accepted", WEEK_2)
    _answer(store, "zz", "overridden", WEEK_2)
    store.close()
    return url


def test_counts_rates_reasons_and_trend(url: str) -> None:
    report = build_report(url).as_dict()
    assert [(r["rule"], r["topic"]) for r in report["rules"]] == [
        ("workup.labs", "workup"),  # most overridden first
        (UNKNOWN, ""),
        ("tbs.women.degraded", "tbs"),
    ]
    workup, unknown, tbs = report["rules"]
    assert (workup["issued"], workup["accepted"], workup["overridden"]) == (4, 1, 2)
    assert workup["acceptanceRate"] == round(1 / 3, 4)
    assert workup["overrideReasons"] == [{"reason": "not-relevant: Not relevant", "count": 2}]
    assert workup["trend"] == [
        {"week": "2026-W45", "accepted": 0, "overridden": 1, "acceptanceRate": 0.0},
        {"week": "2026-W46", "accepted": 1, "overridden": 1, "acceptanceRate": 0.5},
    ]
    assert (unknown["issued"], unknown["overridden"]) == (0, 1)
    assert unknown["overrideReasons"] == [{"reason": "(no reason given)", "count": 1}]
    assert (tbs["issued"], tbs["accepted"], tbs["acceptanceRate"]) == (2, 2, 1.0)


def test_since_keeps_only_later_cards_and_answers(url: str) -> None:
    report = build_report(url, since=date(2026, 11, 9)).as_dict()
    workup = next(r for r in report["rules"] if r["rule"] == "workup.labs")
    assert (workup["issued"], workup["accepted"], workup["overridden"]) == (0, 1, 1)
    tbs = next(r for r in report["rules"] if r["rule"] == "tbs.women.degraded")
    assert (tbs["issued"], tbs["accepted"]) == (1, 1)
    assert report["since"] == "2026-11-09"


def test_text_report(url: str) -> None:
    text = render_text(build_report(url))
    lines = text.splitlines()
    assert lines[0] == "Feedback per rule (most overridden first)"
    assert lines[2].split() == ["rule", "topic", "issued", "accepted", "overridden", "acceptance"]
    assert lines[3].split() == ["workup.labs", "workup", "4", "1", "2", "33.3%"]
    assert "  overridden 2x: not-relevant: Not relevant" in lines
    assert "  acceptance by week: 2026-W45 0.0% (0/1), 2026-W46 50.0% (1/2)" in lines


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["feedback", "report", *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_formats(url: str) -> None:
    code, out, _ = _cli("--database-url", url, "--format", "json")
    assert code == 0
    assert json.loads(out) == build_report(url).as_dict()
    code, out, _ = _cli("--database-url", url, "--format", "csv", "--since", "2026-11-01")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    workup = next(r for r in rows if r["rule"] == "workup.labs")
    assert workup["issued"] == "4"
    assert workup["override_reasons"] == "not-relevant: Not relevant: 2"
    assert workup["trend"] == "2026-W45: 0.0; 2026-W46: 0.5"
    code, out, _ = _cli("--database-url", url)
    assert code == 0
    assert out == render_text(build_report(url))


def test_an_empty_store_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store(url).close()
    assert render_text(build_report(url)) == "Feedback per rule: no cards issued or answered.\n"


def test_a_database_without_the_tables_is_an_actionable_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(FeedbackStoreError, match="has no feedback, issued_card table"):
        build_report(url)
    code, _, err = _cli("--database-url", url)
    assert code == 2
    assert "OSTEOHOOKS_DATABASE_URL" in err


def test_a_bad_since_is_a_usage_error(url: str) -> None:
    code, _, err = _cli("--database-url", url, "--since", "last week")
    assert code == 2
    assert "not an ISO date" in err
