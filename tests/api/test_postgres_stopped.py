"""PostgreSQL stopped mid-run and started again (issue 12), on a throwaway cluster of this
test's own (initdb on a free port in a temporary folder: the machine's cluster is never
touched). While it is down: calls are still answered, feedback is a fast 503 with
Retry-After (never acknowledged), /ready says why, audit rows wait in the spool; when it
is back, every row is written and feedback is stored again.

Needs PostgreSQL's server binaries (Debian: /usr/lib/postgresql/<v>/bin). Skipped with the
reason without them, except in CI (CI=true, set by .ci/run), where it fails.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cds.store import db
from tests.api.conftest import TestClient, patient_view_request
from tests.api.fhir_server import free_port
from tests.api.test_operations import PV, feedback_body

pytestmark = [pytest.mark.postgres, pytest.mark.subprocess]


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Cluster:
    bin: Path
    data: Path
    port: int
    user: str | None  # run the server as this user (initdb refuses root)

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1",
            "-w",
            "start",
            "-l",
            str(self.data / "server.log"),
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://osteohooks@127.0.0.1:{self.port}/postgres?connect_timeout=2"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    binaries = _bin_dir()
    if binaries is None:
        why = "needs PostgreSQL's server binaries (initdb, pg_ctl) for a throwaway cluster"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        pwd.getpwnam(user)  # Debian's package makes it
    folder = Path(tempfile.mkdtemp(prefix="osteohooks-pg-"))
    data = folder / "data"
    data.mkdir()
    if user is not None:
        shutil.chown(folder, user)
        shutil.chown(data, user)
    made = Cluster(binaries, data, free_port(), user)
    made._run("initdb", "-D", str(data), "-U", "osteohooks", "-A", "trust", "--no-sync")
    made.start()
    try:
        yield made
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            made.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _wait(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_postgresql_stopped_mid_run_loses_nothing(
    cluster: Cluster,
    make_client: Callable[..., TestClient],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db, "SPOOL_RETRY_FIRST", 0.2)
    monkeypatch.setattr(db, "SPOOL_RETRY_MAX", 0.5)
    client = make_client(database_url=cluster.url, audit_spool=tmp_path / "spool.sqlite")
    store = client.app.state.service.store  # type: ignore[attr-defined]
    instances = []

    def call() -> None:
        body = patient_view_request()
        instances.append(body["hookInstance"])
        assert client.post(PV, json=body).status_code == 200

    call()
    assert client.post(f"{PV}/feedback", json=feedback_body()).status_code == 200
    store.flush()

    cluster.stop()
    for _ in range(5):
        call()  # answered: the audit waits in the spool
    store.flush()
    started = time.monotonic()
    refused = client.post(f"{PV}/feedback", json=feedback_body())
    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit()
    assert time.monotonic() - started < 5.0
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["problems"]
    assert _wait(lambda: store.spool_depth() == 5)

    cluster.start()
    assert _wait(lambda: store.spool_depth() == 0)
    assert sorted(r.hook_instance for r in store.audit_rows()) == sorted(instances)
    assert store.dropped == 0
    assert _wait(lambda: client.get("/ready").status_code == 200)
    again = client.post(f"{PV}/feedback", json=feedback_body())
    assert again.status_code == 200
    assert again.json()["stored"] == 1
