"""The audit spool on disk: audit records the store could not take, kept until it can.

One SQLite file (stdlib `sqlite3`, rollback journal: no `-shm` memory map that a
truncation could turn into SIGBUS) shared by every process that names it: the workers of
one service, a restarted service, a second instance on the same machine. Whoever's
writer finds rows in it writes them to the store, so records spooled by a process that
was killed are written by the next one. A batch is taken, written to the store and
deleted under one `BEGIN IMMEDIATE` of the spool, so two processes never write the same
rows; a process killed between the store's commit and the spool's (microseconds) leaves
its batch to be written again: audit rows are at-least-once, issued cards exactly once
(their uuid is the key).

The file is created on the first record that needs it (a healthy store never makes it);
it holds at most `max_records` rows, the oldest dropped first (and returned, to be
counted and logged by the caller). Records hold no PHI: rule ids, topics, card uuids,
hookInstance ids, timings.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cds.store.db import AuditRecord

_SCHEMA = "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT)"
_BUSY_MS = 2000


def encode(record: AuditRecord) -> str:
    return json.dumps(
        {
            "service": record.service,
            "hook": record.hook,
            "hookInstance": record.hook_instance,
            "rulesetVersion": record.ruleset_version,
            "status": record.status,
            "rulesFired": list(record.rules_fired),
            "cards": [[c.uuid, c.rule, c.topic] for c in record.cards],
            "latencyMs": record.latency_ms,
            "at": record.at.isoformat(),
        },
        separators=(",", ":"),
    )


def decode(text: str) -> AuditRecord:
    from cds.store.db import AuditRecord, IssuedCard

    raw = json.loads(text)
    return AuditRecord(
        service=raw["service"],
        hook=raw["hook"],
        hook_instance=raw["hookInstance"],
        ruleset_version=raw["rulesetVersion"],
        status=raw["status"],
        rules_fired=tuple(raw["rulesFired"]),
        cards=tuple(IssuedCard(u, r, t) for u, r, t in raw["cards"]),
        latency_ms=raw["latencyMs"],
        at=datetime.fromisoformat(raw["at"]),
    )


class DiskSpool:
    """Audit records on disk until the store takes them (see the module docstring)."""

    def __init__(self, path: Path, max_records: int) -> None:
        self.path = path
        self.max_records = max_records
        self._lock = threading.Lock()  # one connection per process, used by one thread
        self._conn: sqlite3.Connection | None = None
        self._last_depth = 0

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None:
            return self._conn
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        conn.execute("PRAGMA journal_mode=TRUNCATE")
        conn.execute(_SCHEMA)
        self._conn = conn
        return conn

    def append(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        """Keep `records` (raises OSError/sqlite3.Error when the disk cannot take them);
        returns the oldest records dropped to stay within `max_records`."""
        with self._lock:
            conn = self._connect(create=True)
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO spool (body) VALUES (?)", [(encode(r),) for r in records]
                )
                (count,) = conn.execute("SELECT count(*) FROM spool").fetchone()
                over = count - self.max_records
                dropped: list[str] = []
                if over > 0:
                    rows = conn.execute(
                        "SELECT id, body FROM spool ORDER BY id LIMIT ?", (over,)
                    ).fetchall()
                    conn.execute("DELETE FROM spool WHERE id <= ?", (rows[-1][0],))
                    dropped = [body for _id, body in rows]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return [decode(body) for body in dropped]

    def depth(self) -> int:
        """Records waiting (0 when the file does not exist). Read on a connection of its
        own, so a health check never waits behind a drain that waits on the store."""
        if not self.path.exists():
            return 0
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=0.2)
            try:
                (count,) = conn.execute("SELECT count(*) FROM spool").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return self._last_depth
        self._last_depth = int(count)
        return self._last_depth

    def drain(self, write: Callable[[list[AuditRecord]], None], batch: int = 500) -> int:
        """Write the waiting records to the store with `write`, oldest first, deleting each
        batch from the spool in the same spool transaction; stops at the first batch
        `write` raises for (the exception propagates). Returns the records written."""
        written = 0
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return 0
            while True:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = conn.execute(
                        "SELECT id, body FROM spool ORDER BY id LIMIT ?", (batch,)
                    ).fetchall()
                    if not rows:
                        conn.execute("COMMIT")
                        return written
                    write([decode(body) for _id, body in rows])
                    conn.execute("DELETE FROM spool WHERE id <= ?", (rows[-1][0],))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                written += len(rows)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
