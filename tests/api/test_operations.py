"""Operations (issue 12): /health, /ready, /metrics, `cds --version`, and nothing lost
silently when the store fails (locked file, deleted file, spool bound)."""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

import cds
from cds.store import db
from tests.api.conftest import BASE_URL, Keys, TestClient, patient_view_request, token

PV = "/cds-services/bmd-patient-view"
PV_AUD = f"{BASE_URL}{PV}"
SECRET_COMMENT = "Jane Roe born 1950-02-03 MRN 123-45-678"


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(snapshot: dict[Any, float], name: str, **labels: str) -> float:
    return snapshot.get((name, tuple(sorted(labels.items()))), 0.0)


def feedback_body(card: str | None = None, comment: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "card": card or str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-23T10:00:00Z",
    }
    if comment:
        item["overrideReason"] = {"userComment": comment}
    return {"feedback": [item]}


# --------------------------------------------------------------------------- endpoints


def test_health_ready_and_metrics_need_no_jwt(jwt_client: TestClient) -> None:
    assert jwt_client.get("/cds-services").status_code == 401  # the service itself does
    health = jwt_client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "version": cds.__version__}
    ready = jwt_client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["rulesetVersion"] == "v-test"
    assert jwt_client.get("/metrics").status_code == 200


def test_metrics_count_calls_cards_stages_and_auth_failures(
    jwt_client: TestClient, keys: Keys
) -> None:
    before = samples(jwt_client)
    auth = {"Authorization": f"Bearer {token(keys, PV_AUD)}"}
    assert jwt_client.post(PV, json=patient_view_request(), headers=auth).status_code == 200
    assert jwt_client.post(PV, json=patient_view_request(), headers=auth).status_code == 401
    assert jwt_client.post(PV, json=patient_view_request()).status_code == 401
    after = samples(jwt_client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("osteohooks_calls_total", service="bmd-patient-view", status="200") == 1
    assert delta("osteohooks_calls_total", service="bmd-patient-view", status="401") == 2
    assert delta("osteohooks_call_seconds_count", service="bmd-patient-view", status="200") == 1
    assert (
        delta(
            "osteohooks_cards_total",
            service="bmd-patient-view",
            topic="bmd-classification",
            indicator="warning",
        )
        == 1
    )
    assert delta("osteohooks_stage_seconds_count", stage="evaluate") == 1
    assert delta("osteohooks_stage_seconds_count", stage="fetch") == 1
    assert delta("osteohooks_auth_failures_total", reason="replay") == 1
    assert delta("osteohooks_auth_failures_total", reason="no-bearer") == 1
    assert value(after, "osteohooks_rules_loaded", version="v-test") == 1
    assert ("osteohooks_spool_depth", ()) in after


def test_cds_version() -> None:
    from cds.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"osteohooks {cds.__version__}"


def test_audit_records_500_when_the_client_got_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cds.api import hooks as app_mod

    def broken(_card: Any) -> Any:
        raise RuntimeError("issued-card bookkeeping failed")

    monkeypatch.setattr(app_mod, "_issued", broken)
    body = patient_view_request()
    assert client.post(PV, json=body).status_code == 500
    store = client.app.state.service.store  # type: ignore[attr-defined]
    assert [row.status for row in store.audit_rows(body["hookInstance"])] == [500]


# --------------------------------------------------------------------------- store faults


@pytest.fixture
def fast_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short busy timeout and quick spool retries, so the fault tests take seconds."""
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 300)
    monkeypatch.setattr(db, "SPOOL_RETRY_FIRST", 0.1)
    monkeypatch.setattr(db, "SPOOL_RETRY_MAX", 0.2)


def _lock(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def _wait(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_write_locked_file_feedback_is_a_fast_503_and_audit_rows_are_kept(
    make_client: Callable[..., TestClient],
    tmp_path: Path,
    fast_store: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "locked.db"
    client = make_client(database_url=f"sqlite:///{path}")
    store = client.app.state.service.store  # type: ignore[attr-defined]
    holder = _lock(path)
    try:
        instances = []
        for _ in range(10):
            body = patient_view_request()
            instances.append(body["hookInstance"])
            assert client.post(PV, json=body).status_code == 200
        started = time.monotonic()
        with caplog.at_level(logging.DEBUG):
            refused = client.post(f"{PV}/feedback", json=feedback_body(comment=SECRET_COMMENT))
        assert refused.status_code == 503
        assert time.monotonic() - started < 3.0
        assert refused.headers["retry-after"].isdigit()
        assert refused.json()["issue"][0]["code"] == "transient"
        assert _wait(lambda: store.spool_depth() == 10)
        assert client.get("/ready").status_code == 503
        assert SECRET_COMMENT not in caplog.text
    finally:
        holder.rollback()
        holder.close()
    assert _wait(lambda: store.spool_depth() == 0)
    rows = store.audit_rows()
    assert sorted(r.hook_instance for r in rows) == sorted(instances)
    assert client.get("/ready").status_code == 200
    again = client.post(f"{PV}/feedback", json=feedback_body(comment=SECRET_COMMENT))
    assert again.status_code == 200


def test_deleted_database_file_is_never_acknowledged(
    make_client: Callable[..., TestClient], tmp_path: Path, fast_store: None
) -> None:
    path = tmp_path / "gone.db"
    client = make_client(database_url=f"sqlite:///{path}")
    store = client.app.state.service.store  # type: ignore[attr-defined]
    assert client.post(f"{PV}/feedback", json=feedback_body()).json() == {
        "stored": 1,
        "duplicates": 0,
    }
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert client.post(f"{PV}/feedback", json=feedback_body()).status_code == 503
    assert client.post(PV, json=patient_view_request()).status_code == 200
    assert _wait(lambda: store.spool_depth() == 1)
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert "deleted or replaced" in ready.json()["problems"][0]


def test_a_full_spool_drops_the_oldest_counts_them_and_logs_no_phi(
    make_client: Callable[..., TestClient],
    tmp_path: Path,
    fast_store: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(db, "SPOOL_MAX", 4)
    path = tmp_path / "full.db"
    client = make_client(database_url=f"sqlite:///{path}")
    store = client.app.state.service.store  # type: ignore[attr-defined]
    before = value(samples(client), "osteohooks_store_dropped_total", kind="audit")
    holder = _lock(path)
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(7):
                assert client.post(PV, json=patient_view_request()).status_code == 200
                store.flush()
        assert store.spool_depth() == 4
        assert store.dropped == 3
        after = samples(client)
        assert value(after, "osteohooks_store_dropped_total", kind="audit") - before == 3
        assert value(after, "osteohooks_spool_depth") == 4
        assert "dropped" in caplog.text
        assert "pat-1" not in caplog.text  # no patient id
    finally:
        holder.rollback()
        holder.close()
    assert _wait(lambda: store.spool_depth() == 0)
    assert len(store.audit_rows()) == 4


def test_a_full_disk_loses_no_audit_row(
    make_client: Callable[..., TestClient], tmp_path: Path, fast_store: None
) -> None:
    """SQLITE_FULL, as on a full disk, from `PRAGMA max_page_count` at the current size."""
    from sqlalchemy import event, text

    client = make_client(database_url=f"sqlite:///{tmp_path / 'full-disk.db'}")
    store = client.app.state.service.store  # type: ignore[attr-defined]
    with store.engine.connect() as conn:
        pages = conn.execute(text("PRAGMA page_count")).scalar_one()

    def full(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    event.listen(store.engine, "connect", full)
    store.engine.dispose()  # every new connection sees a full "disk"
    instances = []
    for _ in range(40):
        body = patient_view_request()
        instances.append(body["hookInstance"])
        assert client.post(PV, json=body).status_code == 200
    store.flush()
    # the file's free pages took the first rows; once they are used, rows wait in the spool
    assert store.spool_depth() > 0
    assert len(store.audit_rows()) + store.spool_depth() == 40
    event.remove(store.engine, "connect", full)
    store.engine.dispose()  # space again
    assert _wait(lambda: store.spool_depth() == 0)
    assert sorted(r.hook_instance for r in store.audit_rows()) == sorted(instances)
    assert store.dropped == 0
