"""Bodies above `process_body_bytes` are computed in a worker process (`cds.api.offload`):
discovery is answered meanwhile, and the cards are those of the in-process path.

A property of concurrency, not a timing: the worker process is stopped (SIGSTOP) before the
big call is sent, so the big call cannot end before the test has had its discovery answer;
and the service process's own `compute` is replaced by one that fails, so a big call
computed in the service process could not answer 200. The pool starts with the service
(`/ready` waits for it); a worker process killed during a call gives its client a 500
OperationOutcome and the audit a row with that status; a fallback fetch whose answer is
over `process_body_bytes` is parsed in the worker process, never in the service process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds import jsontext
from cds.api import create_app, hooks
from cds.api import prefetch as prefetch_mod
from cds.api.hooks import Answered
from cds.api.offload import STARTING, UNREAD_HOOK_INSTANCE
from cds.api.state import CallEnv
from cds.contracts.cards import EXTENSION_KEY
from cds.settings import DataFolders, Settings
from tests.api.conftest import TestClient
from tests.api.fhir_server import FhirServer, RunningServer
from tests.api.test_end_to_end import AS_OF, STORIES, as_request
from tests.api.test_prefetch import fetching_request

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


def test_a_worker_process_that_dies_fails_its_call_audited_and_a_fresh_pool_starts(
    tmp_path: Path,
) -> None:
    request = _story_request()
    body = json.dumps(request).encode()
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
        starting = client.get("/ready")  # the fresh pool is still loading its rule set
        again = client.post(PV, content=body)
        rows = app.state.service.store.audit_rows()
    assert [a.status_code for a in answers] == [500]
    assert answers[0].json()["resourceType"] == "OperationOutcome"
    assert starting.status_code == 503
    assert STARTING in starting.json()["problems"]
    assert again.status_code == 200
    assert again.json()["cards"]
    # the dead call is audited with the status its client got; the process died before
    # it had read the body, so its row cannot name the hookInstance
    assert [(r.hook_instance, r.status) for r in rows] == [
        (UNREAD_HOOK_INSTANCE, 500),
        (request["hookInstance"], 200),
    ]


def test_a_worker_process_that_dies_after_reading_the_body_is_audited_with_its_hook_instance(
    tmp_path: Path,
) -> None:
    """The worker process parses the body, then waits on a FHIR server that trickles its
    answer: it is killed while it waits, after it has noted the hookInstance."""
    fhir = FhirServer(trickle=60.0)
    request = fetching_request(fhir.base)
    body = json.dumps(request).encode()
    settings = _settings(
        tmp_path,
        "killed-late",
        len(body) // 2,
        fhir_server_allowlist=fhir.base,
        fhir_deadline_ms=120_000,
        fhir_timeout=120.0,
    )
    app = create_app(settings)
    answers: list[httpx.Response] = []
    with RunningServer(fhir), TestClient(app, raise_server_exceptions=False) as client:
        offload = app.state.service.offload
        assert offload is not None
        assert client.portal is not None
        (pid,) = client.portal.call(offload.warm)
        call = threading.Thread(target=lambda: answers.append(client.post(PV, content=body)))
        call.start()
        deadline = time.monotonic() + 60
        while not any("Observation" in path for path, _q, _a in fhir.requests):
            assert time.monotonic() < deadline, "the worker process never fetched"
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        call.join(60)
        rows = app.state.service.store.audit_rows()
    assert [a.status_code for a in answers] == [500]
    assert request["hookInstance"] in answers[0].json()["issue"][0]["diagnostics"]
    assert [(r.hook_instance, r.status) for r in rows] == [(request["hookInstance"], 500)]


def test_the_pool_is_started_at_start_up_and_ready_waits_for_it(tmp_path: Path) -> None:
    body = json.dumps(_story_request()).encode()
    app = create_app(_settings(tmp_path, "warm", len(body) // 2))
    offload = app.state.service.offload
    assert offload is not None
    with TestClient(app) as client:
        first = client.get("/ready")  # right after start-up: a spawned process loads rules
        deadline = time.monotonic() + 120
        while offload.problem() is not None:  # no call has been made: start-up started it
            assert time.monotonic() < deadline, offload.problem()
            time.sleep(0.05)
        ready = client.get("/ready")
    assert first.status_code == 503
    assert STARTING in first.json()["problems"]
    assert ready.status_code == 200, ready.text


def test_a_big_fhir_server_answer_is_parsed_in_a_worker_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small call whose fallback fetch answers more than process_body_bytes: the service
    process never parses that answer (its parser refuses here), the worker process does;
    the answer is the one the service computes in-process when the answer is not big."""
    bound = 256 * 1024
    fhir = FhirServer(huge_bytes=2 * bound)
    request = fetching_request(fhir.base)
    answers: list[httpx.Response] = []
    real_loads = jsontext.loads

    def small_only(raw: bytes) -> Any:
        assert len(raw) <= bound, "a big FHIR answer was parsed in the service process"
        return real_loads(raw)

    with RunningServer(fhir):
        for name, process_body_bytes in (("offloaded", bound), ("in-process", 64 * bound)):
            settings = _settings(
                tmp_path, name, process_body_bytes, fhir_server_allowlist=fhir.base
            )
            with monkeypatch.context() as patched:
                if name == "offloaded":
                    patched.setattr(prefetch_mod, "loads", small_only)
                with TestClient(create_app(settings), raise_server_exceptions=False) as client:
                    answers.append(client.post(PV, json=request))
    offloaded, reference = answers
    assert reference.status_code == 200, reference.text
    assert offloaded.status_code == 200, offloaded.text
    assert _without_uuids(offloaded.json()) == _without_uuids(reference.json())
