"""`cds serve` as a real process on 127.0.0.1, and rule reloads without a restart."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cds.api.ruleset import RuleSetHolder
from cds.pipeline import Evaluator
from tests.api.conftest import TestClient
from tests.api.fhir_server import free_port
from tests.api.test_end_to_end import AS_OF, STORIES, as_request

ROOT = Path(__file__).resolve().parents[2]
CDS = Path(sys.executable).parent / "cds"


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    """The bundled rules (slow to compile: only for the end-to-end process test)."""
    target = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", target)
    return target


@pytest.fixture
def small_rules(tmp_path: Path) -> Path:
    """A small valid rule set (fast to compile) for the reload mechanics."""
    target = tmp_path / "small-rules"
    shutil.copytree(ROOT / "tests" / "fixtures" / "rules" / "basic", target)
    return target


def _rule_file(folder: Path) -> Path:
    return folder / ("tbs.yaml" if (folder / "tbs.yaml").exists() else "classification.yaml")


def break_rules(folder: Path) -> None:
    path = _rule_file(folder)
    path.write_text(path.read_text() + "\nnot_a_top_level_key: true\n")


def touch_rules(folder: Path) -> None:
    path = _rule_file(folder)
    text = path.read_text().replace("\nnot_a_top_level_key: true\n", "\n")
    path.write_text(text + "\n# edited\n")


def version_of(response: httpx.Response) -> str:
    cards = response.json()["cards"]
    assert cards, response.text
    return str(cards[0]["extension"]["org.osteohooks"]["rulesetVersion"])


class Serve:
    def __init__(self, tmp_path: Path, rules: Path, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        env = dict(os.environ)
        env.update(
            OSTEOHOOKS_AUTH="none",
            OSTEOHOOKS_DATABASE_URL=f"sqlite:///{tmp_path / 'serve.db'}",
            OSTEOHOOKS_LOG_LEVEL="INFO",
        )
        env.pop("OSTEOHOOKS_SETTINGS_FILE", None)
        args = [str(CDS), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--rules", str(rules), "--as-of", AS_OF, *extra]
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=self._log_file
        )

    def wait(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"cds serve exited {self.proc.returncode}: {self.log.read_text()}"
                )
            try:
                if httpx.get(f"{self.base}/cds-services", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"cds serve did not start: {self.log.read_text()}")

    def call(self, name: str = "03-t-boundary-minus-2-5.json") -> httpx.Response:
        request = as_request(json.loads((STORIES / name).read_text()))
        return httpx.post(f"{self.base}/cds-services/bmd-patient-view", json=request, timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


@pytest.fixture
def serve(tmp_path: Path, rules_copy: Path) -> Iterator[Serve]:
    server = Serve(tmp_path, rules_copy)
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.subprocess
def test_cds_serve_answers_and_reloads_rules_on_sighup(serve: Serve, rules_copy: Path) -> None:
    discovery = httpx.get(f"{serve.base}/cds-services").json()
    assert {s["id"] for s in discovery["services"]} == {
        "bmd-patient-view",
        "bmd-order-select",
        "bmd-order-sign",
    }
    first = serve.call()
    assert first.status_code == 200
    v1 = version_of(first)

    break_rules(rules_copy)
    serve.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "rules-reload-failed" in serve.log.read_text())
    assert "tbs.yaml" in serve.log.read_text()  # the log says where the error is
    assert version_of(serve.call()) == v1  # the last good rule set stays in service

    touch_rules(rules_copy)
    serve.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "rules-reloaded" in serve.log.read_text())
    v2 = version_of(serve.call())
    assert v2 != v1

    assert serve.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a clean shutdown
    lines = [
        json.loads(line) for line in serve.log.read_text().splitlines() if line.startswith("{")
    ]
    hooks = [line for line in lines if line.get("event") == "hook"]
    assert len(hooks) == 3
    assert all(h["hookInstance"] and h["service"] == "bmd-patient-view" for h in hooks)
    assert all("latencyMs" in h and "fired" in h for h in hooks)
    assert "s03-patient" not in serve.log.read_text()  # no PHI (patient id) in the log
    assert any("AUTHENTICATION IS OFF" in line.get("message", "") for line in lines)


@pytest.mark.subprocess
def test_cds_serve_refuses_to_start_on_bad_rules(tmp_path: Path, small_rules: Path) -> None:
    break_rules(small_rules)
    env = dict(
        os.environ, OSTEOHOOKS_AUTH="none", OSTEOHOOKS_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}"
    )
    done = subprocess.run(
        [str(CDS), "serve", "--port", str(free_port()), "--rules", str(small_rules)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "classification.yaml" in done.stderr


def test_polling_reload_picks_up_edits(small_rules: Path) -> None:
    from cds.api import create_app
    from cds.settings import Settings

    settings = Settings(
        auth="none",
        rules=small_rules,
        reload_rules=True,
        reload_interval=0.05,
        database_url=f"sqlite:///{small_rules.parent / 'poll.db'}",
    )
    app = create_app(settings)
    holder = app.state.service.holder
    v1 = holder.evaluator.ruleset_version
    with TestClient(app):
        break_rules(small_rules)
        assert wait_for(lambda: bool(holder.last_error))
        assert holder.evaluator.ruleset_version == v1
        touch_rules(small_rules)
        assert wait_for(lambda: holder.evaluator.ruleset_version != v1)
        assert holder.last_error == []


def test_failed_reload_keeps_the_last_good_rule_set(
    small_rules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = RuleSetHolder(Evaluator.from_rules_dir(small_rules), small_rules)
    before = holder.evaluator
    assert not holder.changed()
    break_rules(small_rules)
    assert holder.changed()
    with caplog.at_level("ERROR"):
        assert holder.reload() is False
    assert holder.evaluator is before
    assert any("classification.yaml" in line for line in holder.last_error)
    assert "classification.yaml" in caplog.text
    touch_rules(small_rules)
    assert holder.reload() is True
    assert holder.evaluator.ruleset_version != before.ruleset_version


@pytest.mark.subprocess
def test_sighup_during_start_up_does_not_kill_the_service(tmp_path: Path, rules_copy: Path) -> None:
    server = Serve(tmp_path, rules_copy)
    try:
        # wait for the first handler (before it, Python itself is starting: SIGHUP ends any
        # program then; on a loaded machine the imports alone took over 1.5 s and the signal
        # killed the interpreter): it is set before the rules compile, which the assertion
        # below checks are still compiling
        deadline = time.monotonic() + 60
        while not _catches_sighup(server.proc.pid):
            assert time.monotonic() < deadline, "cds serve never set its SIGHUP handler"
            time.sleep(0.01)
        assert not _ready(server.base), "already started: the test would prove nothing"
        for _ in range(3):  # while the rules compile
            server.proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)
            server.proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)
        server.wait()
        assert server.proc.poll() is None
        assert server.call().status_code == 200
    finally:
        server.stop()


def _catches_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False
