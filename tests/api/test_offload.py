"""Bodies above `process_body_bytes` are computed in a worker process (`cds.api.offload`):
discovery is answered meanwhile, and the cards are those of the in-process path.

A property of concurrency, not a timing: the worker process is stopped (SIGSTOP) before the
big call is sent, so the big call cannot end before the test has had its discovery answer;
and the service process's own `compute` is replaced by one that fails, so a big call
computed in the service process could not answer 200."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds.api import create_app, hooks
from cds.api.hooks import Answered
from cds.api.state import CallEnv
from cds.contracts.cards import EXTENSION_KEY
from cds.settings import DataFolders, Settings
from tests.api.conftest import TestClient
from tests.api.test_end_to_end import AS_OF, STORIES, as_request

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signals")

PV = "/cds-services/bmd-patient-view"


def _story_request() -> dict[str, Any]:
    return as_request(json.loads((STORIES / "24-loss-on-alendronate.json").read_text()))


def _settings(tmp_path: Path, name: str, process_body_bytes: int, **more: Any) -> Settings:
    return Settings(
        auth="none",
        database_url=f"sqlite:///{tmp_path / name}.db",
        as_of=AS_OF,
        process_body_bytes=process_body_bytes,
        eval_processes=1,
        **more,
    )


def _without_uuids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [_without_uuids(v) for v in value]
    return value


async def _not_here(_env: CallEnv, _service_id: str, _body: bytes) -> Answered:
    raise AssertionError("a body above process_body_bytes was computed in the service process")


def test_a_big_body_is_computed_in_a_worker_process_while_discovery_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps(_story_request()).encode()
    bound = len(body) // 2  # this body is "big" for this service
    answers: list[httpx.Response] = []
    with monkeypatch.context() as patched:
        patched.setattr(hooks, "compute", _not_here)
        app = create_app(_settings(tmp_path, "offloaded", bound))
        with TestClient(app) as client:
            offload = app.state.service.offload
            assert offload is not None
            assert client.portal is not None
            (pid,) = client.portal.call(offload.warm)  # started, rule set loaded
            os.kill(pid, signal.SIGSTOP)
            try:
                call = threading.Thread(
                    target=lambda: answers.append(client.post(PV, content=body))
                )
                call.start()
                discovery = client.get("/cds-services")
                big_still_running = call.is_alive()
            finally:
                os.kill(pid, signal.SIGCONT)
            call.join(60)
    assert discovery.status_code == 200
    assert big_still_running  # discovery's answer came before the big call's
    assert [a.status_code for a in answers] == [200], answers[0].text if answers else "no answer"

    in_process = create_app(_settings(tmp_path, "in-process", len(body) + 1))
    with TestClient(in_process) as client:
        assert in_process.state.service.offload is not None
        reference = client.post(PV, content=body)
    assert reference.status_code == 200
    offloaded_cards = answers[0].json()["cards"]
    assert offloaded_cards  # the story has cards: the comparison below compares something
    assert _without_uuids(offloaded_cards) == _without_uuids(reference.json()["cards"])


def test_a_malformed_big_body_is_the_same_400_as_in_process(tmp_path: Path) -> None:
    body = b'{"hook": "patient-view", "hookInstance": ' + b" " * 4096 + b"}"
    answers = []
    for name, bound in (("offloaded", 1024), ("in-process", len(body) + 1)):
        with TestClient(create_app(_settings(tmp_path, name, bound))) as client:
            answers.append(client.post(PV, content=body))
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].json() == answers[1].json()


def test_after_a_reload_the_worker_process_answers_with_the_new_rule_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks, "compute", _not_here)  # only the worker process computes
    rules = tmp_path / "rules"
    shutil.copytree(DataFolders().rules, rules)
    body = json.dumps(_story_request()).encode()
    app = create_app(_settings(tmp_path, "reload", len(body) // 2, rules=rules))
    holder = app.state.service.holder
    with TestClient(app) as client:
        assert app.state.service.offload is not None
        before = client.post(PV, content=body)
        first = sorted(rules.glob("*.yaml"))[0]
        first.write_text(first.read_text() + "\n# edited: a new rule-set version\n")
        assert holder.reload()  # what SIGHUP does in the service process
        after = client.post(PV, content=body)
    assert (before.status_code, after.status_code) == (200, 200)
    old = {c["extension"][EXTENSION_KEY]["rulesetVersion"] for c in before.json()["cards"]}
    new = {c["extension"][EXTENSION_KEY]["rulesetVersion"] for c in after.json()["cards"]}
    assert len(old) == 1
    assert new == {holder.evaluator.ruleset_version}
    assert new != old


def test_a_worker_process_that_dies_fails_its_call_and_the_next_big_body_gets_a_fresh_one(
    tmp_path: Path,
) -> None:
    body = json.dumps(_story_request()).encode()
    app = create_app(_settings(tmp_path, "killed", len(body) // 2))
    answers: list[httpx.Response] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        offload = app.state.service.offload
        assert offload is not None
        assert client.portal is not None
        (pid,) = client.portal.call(offload.warm)
        os.kill(pid, signal.SIGSTOP)  # it takes the call but cannot answer it
        call = threading.Thread(target=lambda: answers.append(client.post(PV, content=body)))
        call.start()
        os.kill(pid, signal.SIGKILL)  # out of memory, say
        call.join(60)
        again = client.post(PV, content=body)
    assert [a.status_code for a in answers] == [500]
    assert answers[0].json()["resourceType"] == "OperationOutcome"
    assert again.status_code == 200
    assert again.json()["cards"]
