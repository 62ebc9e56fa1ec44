"""The audit store: the SQLite fast path writes exactly the rows the generic path writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from cds.store import AuditRecord, IssuedCard, Store


def _records() -> list[AuditRecord]:
    seen = str(uuid.uuid4())
    at = datetime(2026, 11, 23, 10, 5, 31, 123456, tzinfo=UTC)
    records = [
        AuditRecord(
            service="bmd-patient-view",
            hook="patient-view",
            hook_instance=str(uuid.uuid4()),
            ruleset_version=version,
            status=status,
            rules_fired=["change.loss", "ü"],
            cards=[IssuedCard(seen, "rule.a", None), IssuedCard(str(uuid.uuid4()), None, "t")],
            latency_ms=3.25,
            at=at,
        )
        for version, status in (("v1", 200), (None, 500), ("v2", 422))
    ]
    records.append(
        AuditRecord(
            service="bmd-order-sign",
            hook="order-sign",
            hook_instance="x",
            ruleset_version=None,
            status=400,
            rules_fired=[],
            cards=[],
            latency_ms=0.1,
        )
    )
    return records


def _dump(store: Store) -> list[list[Any]]:
    with store.engine.connect() as conn:
        return [
            [tuple(row) for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))]
            for table in ("audit", "issued_card")
        ]


def test_sqlite_fast_path_writes_the_generic_paths_rows(tmp_path: Path) -> None:
    fast = Store(f"sqlite:///{tmp_path / 'fast.db'}")
    generic = Store(f"sqlite:///{tmp_path / 'generic.db'}")
    assert fast._sqlite is not None
    generic._sqlite = None  # the SQLAlchemy Core path every other database takes
    records = _records()
    try:
        for store in (fast, generic):
            store._write(records[:2])
            store._write(records[2:])  # the first card uuid again: kept once, first row wins
        assert _dump(fast) == _dump(generic)
        audit, cards = _dump(fast)
        assert len(audit) == 4
        assert len(cards) == 4
        rows = fast.audit_rows(records[0].hook_instance)
        assert rows[0].at.replace(tzinfo=UTC) == records[0].at
        assert rows[0].rules_fired == ["change.loss", "ü"]
    finally:
        fast.close()
        generic.close()
