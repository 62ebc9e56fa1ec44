"""PostgreSQL for real (CI: .ci/run provides it): one jti store for every worker and
instance, SIGHUP reaching every worker, and the store faults (unreachable at start,
connections killed mid-run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from cds.store import AuditRecord, FeedbackItem, IssuedCard, Store
from tests.api.conftest import BASE_URL, Keys, token
from tests.api.fhir_server import free_port

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
CDS = Path(sys.executable).parent / "cds"
DISCOVERY = f"{BASE_URL}/cds-services"


_PORTS: set[int] = set()


def _new_port() -> int:
    """A free port not handed to another instance of this run (free_port may repeat)."""
    while (port := free_port()) in _PORTS:
        pass
    _PORTS.add(port)
    return port


class Instance:
    """`cds serve` with JWT auth on the shared PostgreSQL store."""

    def __init__(self, tmp_path: Path, keys: Keys, db_url: str, rules: Path, *extra: str):
        self.port = _new_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"serve-{self.port}.log"
        env = dict(os.environ)
        env.pop("OSTEOHOOKS_SETTINGS_FILE", None)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(
            OSTEOHOOKS_AUTH="jwt",
            OSTEOHOOKS_TRUSTED_ISSUERS=str(keys.issuers_file),
            OSTEOHOOKS_BASE_URL=BASE_URL,
            OSTEOHOOKS_DATABASE_URL=db_url,
            OSTEOHOOKS_AUDIT_SPOOL=str(tmp_path / f"spool-{self.port}.sqlite"),
        )
        args = [str(CDS), "serve", "--port", str(self.port), "--rules", str(rules), *extra]
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=self._out)

    def wait(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cds serve exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"cds serve not ready: {self.log.read_text()}")

    def discovery(self, signed: str) -> int:
        # a new client per call: a new connection, so the kernel spreads calls over workers
        headers = {"Authorization": f"Bearer {signed}"}
        return httpx.get(f"{self.base}/cds-services", headers=headers, timeout=10).status_code

    def version(self) -> str:
        return str(httpx.get(f"{self.base}/ready", timeout=5).json()["rulesetVersion"])

    def workers(self) -> set[int]:
        """The pids of uvicorn's worker processes (spawned children of `cds serve`)."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        found = set()
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in cmdline:
                found.add(int(child))
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@pytest.fixture
def small_rules(tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "rules"
    shutil.copytree(ROOT / "tests" / "fixtures" / "rules" / "basic", target)
    return target


@pytest.mark.subprocess
def test_a_replayed_token_is_refused_by_every_worker_and_instance(
    tmp_path: Path, keys: Keys, postgres_url: str, small_rules: Path
) -> None:
    two_workers = Instance(tmp_path, keys, postgres_url, small_rules, "--workers", "2")
    other = Instance(tmp_path, keys, postgres_url, small_rules)
    try:
        two_workers.wait()
        other.wait()
        assert two_workers.proc.poll() is None
        assert other.proc.poll() is None
        for first, second in ((two_workers, other), (other, two_workers)):
            signed = token(keys, DISCOVERY)
            statuses = [first.discovery(signed) for _ in range(12)]
            assert sorted(statuses) == [200] + [401] * 11, statuses
            assert [second.discovery(signed) for _ in range(6)] == [401] * 6

        # SIGHUP: every worker serves the edited rules. uvicorn replaces the workers one
        # by one, so while it does, calls may reach an old and a new worker; the check
        # waits until no worker from before the signal is left (by pid), then asks.
        before = two_workers.version()
        old_workers = two_workers.workers()
        assert len(old_workers) == 2, old_workers
        rule = next(small_rules.glob("*.yaml"))
        rule.write_text(rule.read_text() + "\n# edited\n")
        two_workers.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 90
        current: set[int] = old_workers
        while time.monotonic() < deadline:
            current = two_workers.workers()
            if len(current) == 2 and not current & old_workers:
                break
            time.sleep(0.3)
        assert len(current) == 2, (old_workers, current)
        assert not current & old_workers, (old_workers, current)
        two_workers.wait()
        versions = {two_workers.version() for _ in range(16)}
        assert len(versions) == 1, versions
        assert before not in versions
        assert two_workers.proc.poll() is None
    finally:
        two_workers.stop()
        other.stop()


def test_postgresql_unreachable_at_start_is_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://nobody:x@127.0.0.1:{free_port()}/none?connect_timeout=2"
    env = dict(
        os.environ,
        OSTEOHOOKS_AUTH="none",
        OSTEOHOOKS_DATABASE_URL=url,
        OSTEOHOOKS_AUDIT_SPOOL=str(tmp_path / "spool.sqlite"),
    )
    env.pop("OSTEOHOOKS_SETTINGS_FILE", None)
    rules = ROOT / "tests" / "fixtures" / "rules" / "basic"
    done = subprocess.run(
        [str(CDS), "serve", "--port", str(free_port()), "--rules", str(rules)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "cannot start the service" in done.stderr
    assert "Connection refused" in done.stderr or "connection" in done.stderr.lower()
    assert ":x@" not in done.stderr  # the password stays out of the message


def _record(hook_instance: str, card: str) -> AuditRecord:
    return AuditRecord(
        service="bmd-patient-view",
        hook="patient-view",
        hook_instance=hook_instance,
        ruleset_version="v",
        status=200,
        rules_fired=["r"],
        cards=[IssuedCard(card, "r", "tbs")],
        latency_ms=1.0,
    )


def test_connections_killed_mid_run_lose_nothing(postgres_url: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    store = Store(postgres_url, spool_path=tmp_path / "spool.sqlite")
    admin = create_engine(postgres_url)
    try:
        first = str(uuid.uuid4())
        store.record(_record(first, str(uuid.uuid4())))
        store.flush()
        with admin.connect() as conn:  # every other session of this database: killed
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert killed >= 1
        second, card = str(uuid.uuid4()), str(uuid.uuid4())
        store.record(_record(second, card))
        store.flush()
        deadline = time.monotonic() + 15
        while store.spool_depth() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [r.hook_instance for r in store.audit_rows(second)] == [second]
        assert [r.hook_instance for r in store.audit_rows(first)] == [first]
        item = FeedbackItem(card=card, outcome="accepted", outcome_timestamp=datetime.now(UTC))
        assert store.store_feedback("bmd-patient-view", [item]) == (1, 0)
        now = time.time()
        key = uuid.uuid4().hex
        assert store.claim_jti(key, now + 60, now)
        assert not store.claim_jti(key, now + 60, now)
    finally:
        store.close()
        admin.dispose()
