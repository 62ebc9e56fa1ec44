"""The audit spool on disk (issue 12: nothing is lost silently) and the SQLite journal
mode that keeps a truncated `-shm` file from killing the service with SIGBUS.

The process tests run the store in a child process and kill it (or truncate the files
beside the database) from outside, as production would."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.store import db
from cds.store.db import AuditRecord, IssuedCard, Store, default_spool_path
from cds.store.spool import DiskSpool, decode, encode

REPO = Path(__file__).resolve().parents[2]


def _record(instance: str, cards: int = 1) -> AuditRecord:
    return AuditRecord(
        service="bmd-patient-view",
        hook="patient-view",
        hook_instance=instance,
        ruleset_version="v1",
        status=200,
        rules_fired=("classification.t.normal",),
        cards=tuple(
            IssuedCard(f"{instance}-c{i}", "r", "bmd-classification") for i in range(cards)
        ),
        latency_ms=1.5,
        at=datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
    )


def _wait(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


# ------------------------------------------------------------------ DiskSpool


text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


@given(
    instance=text,
    version=st.none() | text,
    status=st.integers(100, 599),
    rules=st.lists(text, max_size=3),
    cards=st.lists(st.tuples(text, st.none() | text, st.none() | text), max_size=3),
    latency=st.floats(0, 1e6, allow_nan=False),
)
def test_a_record_reads_back_as_it_was_spooled(
    instance: str,
    version: str | None,
    status: int,
    rules: list[str],
    cards: list[tuple[str, str | None, str | None]],
    latency: float,
) -> None:
    record = AuditRecord(
        "svc",
        "patient-view",
        instance,
        version,
        status,
        tuple(rules),
        tuple(IssuedCard(*c) for c in cards),
        latency,
        datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
    )
    assert decode(encode(record)) == record


def test_the_spool_file_is_made_only_when_needed_and_keeps_order(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "sub" / "audit.spool", max_records=100)
    assert spool.depth() == 0
    assert not spool.path.exists()
    assert spool.append([_record("a"), _record("b")]) == []
    assert spool.append([_record("c")]) == []
    assert spool.depth() == 3
    written: list[str] = []
    assert spool.drain(lambda batch: written.extend(r.hook_instance for r in batch), batch=2) == 3
    assert written == ["a", "b", "c"]
    assert spool.depth() == 0


def test_a_full_spool_drops_the_oldest_and_says_which(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "audit.spool", max_records=3)
    assert spool.append([_record("a"), _record("b")]) == []
    dropped = spool.append([_record("c"), _record("d"), _record("e")])
    assert [r.hook_instance for r in dropped] == ["a", "b"]
    assert spool.depth() == 3


def test_a_failing_write_keeps_the_batch(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "audit.spool", max_records=10)
    spool.append([_record("a"), _record("b")])

    def down(_batch: list[AuditRecord]) -> None:
        raise OSError("store down")

    with pytest.raises(OSError, match="store down"):
        spool.drain(down)
    assert spool.depth() == 2
    # another process (another connection) sees the same rows
    assert DiskSpool(spool.path, max_records=10).depth() == 2


def test_the_default_spool_lies_beside_an_sqlite_file(tmp_path: Path) -> None:
    assert default_spool_path(f"sqlite:///{tmp_path / 'x.db'}") == tmp_path / "x.db.spool"
    assert default_spool_path("sqlite:///:memory:") is None
    assert default_spool_path("postgresql+psycopg://u@h/d") == (
        Path.cwd() / "osteohooks-audit-spool.sqlite"
    )


# ------------------------------------------------------------------ the store


@pytest.fixture
def fast_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(db, "SPOOL_RETRY_FIRST", 0.1)
    monkeypatch.setattr(db, "SPOOL_RETRY_MAX", 0.2)


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # writers wait; readers (the schema) still read
    return holder


CHILD_SPOOLS_AND_IS_KILLED = """
    import os, signal, sys
    from cds.store import db
    from cds.store.db import AuditRecord, IssuedCard, Store
    db.BUSY_TIMEOUT_MS = 200
    store = Store(sys.argv[1])
    for i in range(int(sys.argv[2])):
        store.record(AuditRecord("svc", "patient-view", f"killed-{i}", "v1", 200, (),
                                 (IssuedCard(f"card-{i}", "r", "t"),), 1.0))
    store.flush()
    print(store.spool_depth(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_records_spooled_by_a_killed_process_are_written_by_the_next(
    tmp_path: Path, fast_store: None
) -> None:
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    Store(url).close()  # the schema
    holder = _hold_write_lock(path)
    try:
        done = _child(CHILD_SPOOLS_AND_IS_KILLED, url, "25")
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "25", done.stderr  # all 25 waited on disk when it died
    store = Store(url)  # the service restarted on the same database
    try:
        assert _wait(lambda: store.spool_depth() == 0)
        rows = store.audit_rows()
        assert sorted(r.hook_instance for r in rows) == sorted(f"killed-{i}" for i in range(25))
        assert store.dropped == 0
    finally:
        store.close()


def test_a_running_process_writes_what_another_left(
    tmp_path: Path, fast_store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "SPOOL_CHECK_EVERY", 0.2)
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    store = Store(url)
    try:
        DiskSpool(default_spool_path(url) or Path(), db.SPOOL_MAX).append([_record("orphan")])
        assert _wait(lambda: [r.hook_instance for r in store.audit_rows()] == ["orphan"])
    finally:
        store.close()


def test_an_unwritable_spool_file_falls_back_to_memory(
    tmp_path: Path, fast_store: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    store = Store(url, spool_path=blocker / "audit.spool")
    holder = _hold_write_lock(path)
    try:
        for i in range(3):
            store.record(_record(f"m{i}"))
        store.flush()
        assert store.spool_depth() == 3
        assert "cannot be written" in caplog.text
    finally:
        holder.rollback()
        holder.close()
    try:
        assert _wait(lambda: store.spool_depth() == 0)
        assert sorted(r.hook_instance for r in store.audit_rows()) == ["m0", "m1", "m2"]
    finally:
        store.close()


CHILD_TRUNCATED_SHM = """
    import os, sys
    from pathlib import Path
    from cds.store.db import AuditRecord, Store
    path = Path(sys.argv[1])
    store = Store(f"sqlite:///{path}")
    def write(tag):
        for i in range(5):
            store.record(AuditRecord("svc", "patient-view", f"{tag}-{i}", "v1", 200, (), (), 1.0))
        store.flush()
    write("before")
    beside = [p for p in path.parent.iterdir() if p.name.startswith(path.name + "-")]
    for other in beside:  # an outside process truncates the files beside the database
        os.truncate(other, 0)
    write("after")
    print(len(store.audit_rows()), ",".join(sorted(p.name for p in beside)), flush=True)
    store.close()
"""


def test_truncating_the_files_beside_the_database_does_not_kill_the_store(
    tmp_path: Path,
) -> None:
    """With WAL, the truncated `-shm` memory map made the next access die of SIGBUS."""
    done = _child(CHILD_TRUNCATED_SHM, str(tmp_path / "audit.db"))
    assert done.returncode == 0, f"{done.returncode}: {done.stderr}"
    count, _, _beside = done.stdout.strip().partition(" ")
    assert count == "10"
    assert not (tmp_path / "audit.db-shm").exists()
