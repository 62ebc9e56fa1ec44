"""The audit store: one write path (SQLAlchemy Core, ON CONFLICT DO NOTHING for a card uuid
seen before) writes the same rows on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cds.store import AuditRecord, IssuedCard, Store
from cds.store.db import AuditRow, IssuedCardRow

AT = datetime(2026, 11, 23, 10, 5, 31, 123456, tzinfo=UTC)


def _records() -> list[AuditRecord]:
    seen = str(uuid.uuid4())
    records = [
        AuditRecord(
            service="bmd-patient-view",
            hook="patient-view",
            hook_instance=str(uuid.uuid4()),
            ruleset_version=version,
            status=status,
            rules_fired=["change.loss", "ü"],
            cards=[
                IssuedCard(seen, f"rule.{status}", None),
                IssuedCard(str(uuid.uuid4()), None, "t"),
            ],
            latency_ms=3.25,
            at=AT,
        )
        for version, status in (("v1", 200), (None, 500), ("v2", 422))
    ]
    records.append(
        AuditRecord(
            service="bmd-order-sign",
            hook="order-sign",
            hook_instance=str(uuid.uuid4()),
            ruleset_version=None,
            status=400,
            rules_fired=[],
            cards=[],
            latency_ms=0.1,
        )
    )
    return records


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        url = request.getfixturevalue("postgres_url")  # skipped without one (not in CI)
    opened = Store(url)
    yield opened
    opened.close()


def _rows(store: Store, records: list[AuditRecord]) -> tuple[list[Any], list[Any]]:
    """This test's rows only (the PostgreSQL database may hold other runs' rows)."""
    instances = [r.hook_instance for r in records]
    with store.engine.connect() as conn:
        audit = conn.execute(
            select(
                AuditRow.hook_instance,
                AuditRow.status,
                AuditRow.ruleset_version,
                AuditRow.rules_fired,
                AuditRow.card_topics,
                AuditRow.latency_ms,
            )
            .where(AuditRow.hook_instance.in_(instances))
            .order_by(AuditRow.id)
        ).all()
        cards = conn.execute(
            select(IssuedCardRow.card_uuid, IssuedCardRow.hook_instance, IssuedCardRow.rule)
            .where(IssuedCardRow.hook_instance.in_(instances))
            .order_by(IssuedCardRow.issued_at, IssuedCardRow.card_uuid)
        ).all()
    return [tuple(r) for r in audit], [tuple(r) for r in cards]


@pytest.mark.parametrize("batches", [(2, 4), (4,)], ids=["two-batches", "one-batch"])
def test_one_write_path_keeps_the_first_row_of_a_card_seen_again(
    store: Store, batches: tuple[int, ...]
) -> None:
    records = _records()
    start = 0
    for end in batches:
        store._write(records[start:end])  # the first card uuid again: kept once, first row wins
        start = end
    audit, cards = _rows(store, records)
    assert audit == [
        (
            r.hook_instance,
            r.status,
            r.ruleset_version,
            list(r.rules_fired),
            [c.topic for c in r.cards if c.topic],
            r.latency_ms,
        )
        for r in records
    ]
    seen = records[0].cards[0].uuid
    assert sorted(c for c in cards if c[0] == seen) == [
        (seen, records[0].hook_instance, "rule.200")
    ]
    assert len(cards) == 4  # one repeated uuid, three other cards


def test_rows_read_back_as_written(store: Store) -> None:
    records = _records()
    store._write(records)
    rows = store.audit_rows(records[0].hook_instance)
    assert rows[0].at.replace(tzinfo=UTC) == AT
    assert rows[0].rules_fired == ["change.loss", "ü"]
