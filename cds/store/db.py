"""Feedback and audit store.

Tables (no PHI: ids of rules, topics, card uuids, hookInstance, timings):
- `audit`: one row per hook invocation (time, service, hook, hookInstance, ruleset version,
  HTTP status, rules fired, card topics, latency).
- `issued_card`: one row per card issued (uuid -> rule id, topic, hookInstance), so that
  feedback, which names only the card uuid, can be stored with the card's rule and topic.
- `feedback`: one row per distinct feedback item; sending the same item again is a no-op
  (idempotent on card uuid, outcome, accepted suggestions and outcome time).
- `jwt_jti`: one row per JWT accepted (a digest of iss and jti, and when it expires), the
  replay guard shared by every worker and every instance on the database; `claim_jti` is
  one atomic statement (insert, or take over an expired row, else nothing), expired rows
  are purged as new ones come.

Audit rows are written by a background thread in batches, off the request path;
`flush()` waits until everything queued is committed or spooled (feedback calls it first).
A batch that cannot be written (file locked past `busy_timeout`, disk full, database file
deleted or replaced, PostgreSQL down) goes to the audit spool on disk (`cds.store.spool`:
one SQLite file shared by the processes of a machine, at most `SPOOL_MAX` records), which
the writer retries with back-off (`SPOOL_RETRY_*`); records spooled by a process that was
killed are written by the next writer that starts on the same spool (or notices it, every
`SPOOL_CHECK_EVERY` seconds). When the spool file cannot be written either (its disk is
full too), records wait in a bounded spool in memory. When a spool is full the oldest
records are dropped, counted (`osteohooks_store_dropped_total`) and logged with their count
and hookInstance ids only.

SQLite: the database file's identity (device, inode) is remembered at start; a write when
the path is gone or is another file fails (`StoreUnavailable`) instead of going into an
unlinked file nobody will read. The journal is a rollback journal (`TRUNCATE`), not WAL:
WAL memory-maps the `-shm` file, and a `-shm` truncated or made unwritable under a running
service turned every later access into SIGBUS, killing the whole process (measured: a
commit costs ~0.5 ms of fsync instead of ~0.02 ms; audit rows are batched off the request
path and jti claims run in a thread, so no request waits on another's commit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from cds import metrics
from cds.store.spool import DiskSpool

log = logging.getLogger("osteohooks.store")


class StoreUnavailable(RuntimeError):
    """The store cannot take a write now (the caller answers 503 or spools)."""


class Base(DeclarativeBase):
    pass


class AuditRow(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    service: Mapped[str] = mapped_column(String(64))
    hook: Mapped[str] = mapped_column(String(64))
    hook_instance: Mapped[str] = mapped_column(String(64), index=True)
    ruleset_version: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    rules_fired: Mapped[list[str]] = mapped_column(JSON)
    card_topics: Mapped[list[str]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)


class IssuedCardRow(Base):
    __tablename__ = "issued_card"

    card_uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    hook_instance: Mapped[str] = mapped_column(String(64), index=True)
    service: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(200))
    topic: Mapped[str | None] = mapped_column(String(64))
    ruleset_version: Mapped[str | None] = mapped_column(String(128))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JtiRow(Base):
    __tablename__ = "jwt_jti"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires: Mapped[float] = mapped_column(Float, index=True)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    card_uuid: Mapped[str] = mapped_column(String(200), index=True)
    service: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(200))
    topic: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    accepted_suggestions: Mapped[list[str]] = mapped_column(JSON)
    override_system: Mapped[str | None] = mapped_column(String(500))
    override_code: Mapped[str | None] = mapped_column(String(200))
    override_display: Mapped[str | None] = mapped_column(String(500))
    user_comment: Mapped[str | None] = mapped_column(Text)
    outcome_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class IssuedCard:
    uuid: str
    rule: str | None
    topic: str | None


@dataclass(frozen=True)
class AuditRecord:
    service: str
    hook: str
    hook_instance: str
    ruleset_version: str | None
    status: int
    rules_fired: Sequence[str]
    cards: Sequence[IssuedCard]
    latency_ms: float
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class FeedbackItem:
    card: str
    outcome: str
    outcome_timestamp: datetime
    accepted_suggestions: Sequence[str] = ()
    override_system: str | None = None
    override_code: str | None = None
    override_display: str | None = None
    user_comment: str | None = None

    def dedupe_key(self, service: str) -> str:
        ts = self.outcome_timestamp.astimezone(UTC).isoformat()
        raw = json.dumps(
            [service, self.card, self.outcome, sorted(self.accepted_suggestions), ts],
            separators=(",", ":"),
        )
        return hashlib.sha256(raw.encode()).hexdigest()


_STOP = object()
JTI_PURGE_EVERY = 500  # claims between deletions of expired jti rows
#: seconds the writer gathers audit records per commit: each SQLite commit costs ~1.2 ms of
#: CPU (journal and fsync) in this process, a record ~0.1 ms; flush() and close() cut it short
BATCH_WINDOW = 0.1
SPOOL_MAX = 10_000  # audit records kept (on disk; as many again in memory) while the store fails
SPOOL_CHECK_EVERY = 5.0  # seconds between looks at the disk spool for rows of other processes
SPOOL_RETRY_FIRST = 0.5  # seconds before the first retry of the spool, doubling ...
SPOOL_RETRY_MAX = 10.0  # ... up to this
BUSY_TIMEOUT_MS = 5000


class Store:
    """The database behind feedback and audit, with a batching audit writer thread."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_ms: int | None = None,
        spool_path: Path | None = None,
    ) -> None:
        self.url = url
        self.engine = _make_engine(url, busy_timeout_ms or BUSY_TIMEOUT_MS)
        Base.metadata.create_all(self.engine)
        self._path = _sqlite_path(url)
        self._identity = _identity(self._path) if self._path else None
        disk = spool_path or default_spool_path(url)
        self._disk = DiskSpool(disk, SPOOL_MAX) if disk is not None else None
        self._disk_failing = False
        self._spool: deque[AuditRecord] = deque()  # in memory, when the disk spool fails
        self._spool_lock = threading.Lock()
        self._retry_delay = SPOOL_RETRY_FIRST
        # rows left by a process that was killed: written as soon as the writer starts
        self._pending = self._disk is not None and self._disk.depth() > 0
        self._checked = time.monotonic()
        self.dropped = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=10_000)
        self._hurry = threading.Event()  # flush() or close(): commit the batch now
        self._writer = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self._writer.start()
        self._closed = False
        self._claims = 0

    # ------------------------------------------------------------------ audit

    def record(self, record: AuditRecord) -> None:
        """Queue an audit row (never blocks the request; counted as dropped when full)."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._drop([record], "audit queue full")

    def flush(self) -> None:
        """Wait until every queued audit record is committed (or spooled)."""
        self._hurry.set()
        self._queue.join()

    @property
    def spool_path(self) -> Path | None:
        return self._disk.path if self._disk is not None else None

    def spool_depth(self) -> int:
        """Audit records waiting: in the disk spool (every process's) and in memory."""
        disk = self._disk.depth() if self._disk is not None else 0
        return disk + len(self._spool)

    def _write_loop(self) -> None:
        while True:
            timeout = self._retry_delay if self._pending else SPOOL_CHECK_EVERY
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._look_at_disk()
                if self._pending:
                    self._retry_spool()
                continue
            if first is _STOP:
                self._queue.task_done()
                self._retry_spool()
                self._closing_log()
                return
            batch = [first]
            # gather for BATCH_WINDOW on an event only flush() and close() set, not by
            # waiting on the queue: a writer waiting there is woken (and takes the GIL from
            # the request thread) by every record put meanwhile
            self._hurry.wait(BATCH_WINDOW)
            self._hurry.clear()
            while len(batch) < 500:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(item)  # stop after this batch
                    self._queue.task_done()
                    break
                batch.append(item)
            try:
                self._look_at_disk()
                if self._pending:  # keep the order: the spool first, then this batch
                    self._retry_spool()
                if self._pending:
                    self._to_spool(batch, "the spool is not written yet")
                else:
                    self._try_write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _look_at_disk(self) -> None:
        """Every SPOOL_CHECK_EVERY seconds: rows in the disk spool (another process's)?"""
        if self._disk is None or self._pending:
            return
        now = time.monotonic()
        if now - self._checked >= SPOOL_CHECK_EVERY:
            self._checked = now
            self._pending = self._disk.depth() > 0

    def _closing_log(self) -> None:
        if self._disk is not None and (left := self._disk.depth()):
            log.warning(
                "store closed with %d audit records in the spool file %s; the next service "
                "started on it writes them",
                left,
                self._disk.path,
                extra={"event": "store-spool-kept"},
            )
        if self._spool:
            log.error(
                "store closed with %d audit records unwritten (the spool file could not take them)",
                len(self._spool),
                extra={"event": "store-spool-lost"},
            )

    def _try_write(self, batch: list[AuditRecord]) -> bool:
        try:
            self._write(batch)
        except Exception as exc:  # never kill the writer: the batch waits in the spool
            metrics.STORE_FAILURES.labels(operation="audit").inc()
            self._to_spool(batch, f"{type(exc).__name__}: {_short(exc)}")
            return False
        return True

    def _retry_spool(self) -> None:
        """Write what waits (the disk spool, then the memory spool) while the store takes
        it; back off at the first failure."""
        try:
            if self._disk is not None:
                self._disk.drain(self._write)
                self._disk_failing = False
        except Exception:  # the store (or the spool file) still fails: wait and retry
            self._retry_delay = min(SPOOL_RETRY_MAX, self._retry_delay * 2)
            self._set_depth()
            return
        with self._spool_lock:
            batch = list(self._spool)
        for start in range(0, len(batch), 500):
            chunk = batch[start : start + 500]
            try:
                self._write(chunk)
            except Exception:
                self._retry_delay = min(SPOOL_RETRY_MAX, self._retry_delay * 2)
                self._set_depth()
                return
            with self._spool_lock:
                for _ in chunk:
                    self._spool.popleft()
        self._pending = False
        self._set_depth()
        self._retry_delay = SPOOL_RETRY_FIRST
        log.info("audit spool written to the store", extra={"event": "store-recovered"})

    def _set_depth(self) -> None:
        metrics.SPOOL_DEPTH.set(self.spool_depth())

    def _to_spool(self, batch: list[AuditRecord], why: str) -> None:
        first = not self._pending
        self._pending = True
        lost: list[AuditRecord] = []
        kept = False
        if self._disk is not None:
            try:
                lost = self._disk.append(batch)
                kept = True
                self._disk_failing = False
            except (OSError, sqlite3.Error) as exc:
                if not self._disk_failing:
                    log.error(
                        "the audit spool file %s cannot be written (%s): records wait in memory",
                        self._disk.path,
                        _short(exc),
                        extra={"event": "store-spool-file-failed"},
                    )
                self._disk_failing = True
        if not kept:
            with self._spool_lock:
                self._spool.extend(batch)
                over = len(self._spool) - SPOOL_MAX
                lost = [self._spool.popleft() for _ in range(max(0, over))]
        self._set_depth()
        if first:
            log.warning(
                "audit write failed, %d records spooled for retry: %s",
                len(batch),
                why,
                extra={"event": "store-spooled"},
            )
        if lost:
            self._drop(lost, "audit spool full")

    def _drop(self, records: list[AuditRecord], why: str) -> None:
        self.dropped += len(records)
        metrics.STORE_DROPPED.labels(kind="audit").inc(len(records))
        cards = sum(len(r.cards) for r in records)
        if cards:
            metrics.STORE_DROPPED.labels(kind="issued_card").inc(cards)
        log.error(
            "%s: %d audit records (%d issued cards) dropped",
            why,
            len(records),
            cards,
            extra={
                "event": "store-dropped",
                "hookInstances": [r.hook_instance for r in records[:20]],
            },
        )

    def check_file(self) -> None:
        """SQLite: raise StoreUnavailable when the database file is gone or replaced."""
        if self._path is not None and _identity(self._path) != self._identity:
            raise StoreUnavailable(
                f"the SQLite database file {self._path} was deleted or replaced; restore it "
                "or restart the service"
            )

    def probe(self) -> str | None:
        """None when the store takes a write now; else why not (for /ready)."""
        try:
            self.check_file()
            with self.engine.begin() as conn:
                conn.execute(delete(JtiRow).where(JtiRow.key == "ready-probe"))
        except Exception as exc:
            return f"{type(exc).__name__}: {_short(exc)}"
        return None

    def _write(self, batch: Iterable[AuditRecord]) -> None:
        """One transaction, two executemany inserts (Core: the ORM unit of work cost ~2 ms
        of GIL per request), the same statements on SQLite and PostgreSQL; a card uuid
        seen before (deterministic uuids) keeps its first row (ON CONFLICT DO NOTHING)."""
        audits: list[dict[str, Any]] = []
        cards: list[dict[str, Any]] = []
        for rec in batch:
            audits.append(
                {
                    "at": rec.at,
                    "service": rec.service,
                    "hook": rec.hook,
                    "hook_instance": rec.hook_instance,
                    "ruleset_version": rec.ruleset_version,
                    "status": rec.status,
                    "rules_fired": list(rec.rules_fired),
                    "card_topics": [c.topic for c in rec.cards if c.topic],
                    "latency_ms": rec.latency_ms,
                }
            )
            cards.extend(
                {
                    "card_uuid": card.uuid,
                    "hook_instance": rec.hook_instance,
                    "service": rec.service,
                    "rule": card.rule,
                    "topic": card.topic,
                    "ruleset_version": rec.ruleset_version,
                    "issued_at": rec.at,
                }
                for card in rec.cards
            )
        self.check_file()
        with self.engine.begin() as conn:
            conn.execute(insert(AuditRow), audits)
            if cards:
                new_cards = self._upsert(IssuedCardRow).on_conflict_do_nothing(
                    index_elements=[IssuedCardRow.card_uuid]
                )
                conn.execute(new_cards, cards)

    def audit_rows(self, hook_instance: str | None = None) -> list[AuditRow]:
        self.flush()
        with Session(self.engine) as session:
            query = select(AuditRow).order_by(AuditRow.id)
            if hook_instance is not None:
                query = query.where(AuditRow.hook_instance == hook_instance)
            return list(session.scalars(query))

    # ------------------------------------------------------------------ JWT replay

    def claim_jti(self, key: str, expires: float, now: float) -> bool:
        """Take a jti key for good until `expires` (epoch seconds): True when it was free
        (never seen, or its earlier token expired), False for a replay. One statement, so
        two workers or two instances racing on one key cannot both win."""
        values = self._upsert(JtiRow).values(key=key, expires=expires)
        # a row comes back when inserted or taken over (rowcount is not reliable for
        # ON CONFLICT on every driver)
        statement = values.on_conflict_do_update(
            index_elements=[JtiRow.key],
            set_={"expires": values.excluded.expires},
            where=JtiRow.expires < now,
        ).returning(JtiRow.key)
        try:
            with self.engine.begin() as conn:
                taken = conn.execute(statement).first() is not None
                self._claims += 1
                if self._claims % JTI_PURGE_EVERY == 0:
                    conn.execute(delete(JtiRow).where(JtiRow.expires < now))
        except Exception as exc:
            metrics.STORE_FAILURES.labels(operation="jti").inc()
            raise StoreUnavailable(f"jti store: {type(exc).__name__}: {_short(exc)}") from None
        return taken

    def _upsert(self, row: type[Base]) -> Any:
        """The dialect's INSERT with ON CONFLICT (SQLite and PostgreSQL spell it alike)."""
        if self.engine.dialect.name == "postgresql":
            return postgresql_insert(row)
        return sqlite_insert(row)

    # ------------------------------------------------------------------ feedback

    def store_feedback(self, service: str, items: Sequence[FeedbackItem]) -> tuple[int, int]:
        """Store each new item with its card's rule and topic; return (stored, duplicates)."""
        self.flush()
        self.check_file()
        stored = duplicates = 0
        now = datetime.now(UTC)
        with Session(self.engine) as session:
            origins = {
                row.card_uuid: row
                for row in session.scalars(
                    select(IssuedCardRow).where(
                        IssuedCardRow.card_uuid.in_({item.card for item in items})
                    )
                )
            }
            for item in items:
                origin = origins.get(item.card)
                if origin is None:
                    log.info(
                        "feedback for a card this store did not issue", extra={"service": service}
                    )
                row = FeedbackRow(
                    dedupe_key=item.dedupe_key(service),
                    card_uuid=item.card,
                    service=service,
                    rule=origin.rule if origin else None,
                    topic=origin.topic if origin else None,
                    outcome=item.outcome,
                    accepted_suggestions=list(item.accepted_suggestions),
                    override_system=item.override_system,
                    override_code=item.override_code,
                    override_display=item.override_display,
                    user_comment=item.user_comment,
                    outcome_timestamp=item.outcome_timestamp,
                    received_at=now,
                )
                try:
                    with session.begin_nested():
                        session.add(row)
                    stored += 1
                except IntegrityError:
                    duplicates += 1
            session.commit()
        return stored, duplicates

    def feedback_rows(self) -> list[FeedbackRow]:
        with Session(self.engine) as session:
            return list(session.scalars(select(FeedbackRow).order_by(FeedbackRow.id)))

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._hurry.set()
        self._writer.join(timeout=10)
        if self._disk is not None:
            self._disk.close()
        self.engine.dispose()


def _short(exc: BaseException) -> str:
    """An exception's first line without SQL parameters (no PHI into the log)."""
    return str(exc).split("\n", 1)[0][:200]


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def default_spool_path(url: str) -> Path | None:
    """Where the audit spool lives unless configured: beside an SQLite database file
    (`<file>.spool`), else `osteohooks-audit-spool.sqlite` in the working folder; none for
    an in-memory SQLite database."""
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        return path.with_name(path.name + ".spool") if path is not None else None
    return Path("osteohooks-audit-spool.sqlite").resolve()


def _make_engine(url: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # not WAL: its memory-mapped -shm file turns a truncation into SIGBUS
            cursor.execute("PRAGMA journal_mode=TRUNCATE")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)
