"""`--engine dask` never loses an input and gives the local engine's results: a real
LocalCluster on loopback whose worker processes are SIGKILLed from outside at random
points (at least 50 kills), an input that kills every worker it runs on, a hung worker,
and the NDJSON of both engines compared byte for byte (stories and an export)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

import psutil
from distributed import Client, LocalCluster

from cds.replay.dask_pool import DaskPool, restore_workers, start_local_cluster
from cds.replay.worker import InputResult
from tests.replay.test_export import patients, write_export
from tests.replay.test_pool import check, settings, sources

ROOT = Path(__file__).resolve().parents[2]
STORIES = ROOT / "tests" / "fixtures" / "stories"
AS_OF = "2026-11-23"
CDS = str(Path(sys.executable).parent / "cds")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """One LocalCluster of two workers for the whole module (starting one takes seconds)."""
    cluster = start_local_cluster(2)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    client = Client(cluster, direct_to_workers=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def reference(bundled_evaluator: Any) -> dict[str, InputResult]:
    from cds.replay.pool import ReplayPool

    pool = ReplayPool(settings(), 0, evaluator=bundled_evaluator)
    return {r.name: r for r in pool.run(sources(120))}


def whole(cluster: LocalCluster, client: Client) -> None:
    """Both workers up (a nanny whose worker was killed while it started is replaced)."""
    try:
        client.wait_for_workers(2, timeout=20)
    except Exception:
        restore_workers(cluster)
        client.wait_for_workers(2, timeout=60)


def live(pids: list[int]) -> list[int]:
    """The pids that are running worker processes (a killed one is a zombie until its
    nanny reaps it, and killing a zombie would count a kill that killed nothing)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_the_dask_engine_gives_the_local_engines_results_in_input_order(
    cluster: LocalCluster, client: Client, bundled_evaluator: Any, reference: dict[str, InputResult]
) -> None:
    pool = DaskPool(settings(), 2, batch_size=4, cluster=cluster, evaluator=bundled_evaluator)
    results = list(pool.run(sources(120)))
    assert check(results, reference) == 0
    assert pool.restarts == 0


def test_workers_killed_at_random_points_lose_and_duplicate_nothing(
    cluster: LocalCluster, client: Client, bundled_evaluator: Any, reference: dict[str, InputResult]
) -> None:
    rng = random.Random(13)
    kills = 0
    failed = 0
    rounds = 0
    while kills < 50 and rounds < 40:  # bounded: a kill loop that kills nothing fails
        rounds += 1
        pool = DaskPool(settings(), 2, batch_size=4, cluster=cluster, evaluator=bundled_evaluator)
        results: list[InputResult] = []
        next_kill = rng.randint(1, 12)
        for result in pool.run(sources(120)):
            results.append(result)
            if len(results) == next_kill:
                pids = live(pool.pids())
                if pids:
                    try:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass
                next_kill += rng.randint(1, 12)
        failed += check(results, reference)
    assert kills >= 50, (kills, rounds)
    # A few innocents may be hit max_tries times in a row; nearly all must come through.
    assert failed <= rounds * 3, (failed, kills)
    whole(cluster, client)


def test_an_input_that_kills_every_worker_fails_after_max_tries_and_the_rest_is_whole(
    cluster: LocalCluster, client: Client, bundled_evaluator: Any, reference: dict[str, InputResult]
) -> None:
    whole(cluster, client)
    pool = DaskPool(
        settings(crash_input="in7"),
        2,
        batch_size=4,
        cluster=cluster,
        evaluator=bundled_evaluator,
        max_tries=2,
    )
    results = list(pool.run(sources(120)))
    assert [r.name for r in results] == list(reference)
    crashed = next(r for r in results if r.name == "in7")
    assert crashed.status == "failed"
    assert "died 2 times" in crashed.outcome_json  # exactly max_tries deaths charged to it
    # every worker it killed was replaced (more when the cluster also lost a worker to
    # start-up under load: seen once in a full suite on the 2-core machine)
    assert pool.restarts >= 2
    assert check(results, {**reference, "in7": crashed}) == 0


def test_a_hung_worker_is_replaced_after_the_deadline_and_its_input_fails(
    cluster: LocalCluster, client: Client, bundled_evaluator: Any, reference: dict[str, InputResult]
) -> None:
    whole(cluster, client)
    pool = DaskPool(
        settings(hang_input="in3"),
        2,
        batch_size=4,
        cluster=cluster,
        evaluator=bundled_evaluator,
        deadline=1.0,
        max_tries=2,
    )
    results = list(pool.run(sources(120)))
    assert [r.name for r in results] == list(reference)
    hung = next(r for r in results if r.name == "in3")
    assert hung.status == "failed"
    assert "took longer than 1 s, 2 times" in hung.outcome_json
    assert json.loads(hung.outcome_json)["issue"][0]["code"] == "timeout"
    assert check(results, {**reference, "in3": hung}) == 0


def test_a_crash_in_a_bundle_of_several_patients_fails_that_patient_only(
    cluster: LocalCluster, client: Client, bundled_evaluator: Any
) -> None:
    """A source of several inputs is split per input when it kills its worker, so the
    other patients of the Bundle keep their own results (as on the local engine)."""
    from tests import fhir_factory as f

    family = f.bundle(
        f.patient("mother", birth_date="1950-01-01"),
        f.lumbar_t(-2.8, subject="mother", date="2025-01-10"),
        f.patient("son", birth_date="1980-01-01"),
        f.lumbar_t(-1.2, subject="son", date="2025-01-10"),
    )
    from cds.replay.inputs import Source

    items = [*sources(6), Source("family", "family", text=json.dumps(family)), *sources(3)]
    from cds.replay.pool import ReplayPool

    want = list(ReplayPool(settings(), 0, evaluator=bundled_evaluator).run(items))
    whole(cluster, client)
    pool = DaskPool(
        settings(crash_input="family#Patient/mother"),
        2,
        batch_size=4,
        cluster=cluster,
        evaluator=bundled_evaluator,
        max_tries=2,
    )
    got = list(pool.run(items))
    assert [r.name for r in got] == [r.name for r in want]
    for old, new in zip(want, got, strict=True):
        if new.name == "family#Patient/mother":
            assert new.status == "failed"
            assert "worker process evaluating this input died" in new.outcome_json
        else:
            assert (new.status, new.cards_json, new.outcome_json) == (
                old.status,
                old.cards_json,
                old.outcome_json,
            )


def _replay(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CDS, "replay", *args, "--as-of", AS_OF, "--format", "ndjson", "--no-progress"],
        capture_output=True,
        cwd=cwd,
        timeout=240,
        check=False,
    )


@pytest.mark.subprocess
def test_cds_replay_engine_dask_writes_the_local_engines_ndjson_byte_for_byte(
    tmp_path: Path,
) -> None:
    export = tmp_path / "export"
    write_export(export, patients())
    with open(export / "Condition.ndjson", "a", encoding="utf-8") as handle:
        handle.write("{not json\n")  # a broken line: reported and counted, on both engines
    args = [str(STORIES), "export", "--workers", "2"]
    local = _replay(*args, "--engine", "local", cwd=tmp_path)
    dask = _replay(*args, "--engine", "dask", cwd=tmp_path)
    assert local.returncode == dask.returncode == 1, (local.stderr, dask.stderr)  # the line
    assert dask.stdout == local.stdout
    lines = [json.loads(line) for line in dask.stdout.splitlines()]
    names = [line["input"] for line in lines]
    assert len(names) == len(set(names)) > len(patients())
    assert "export#Patient/p1" in names
    assert any(name.startswith("export/Condition.ndjson#L") for name in names)


def test_engine_dask_without_dask_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, shared_evaluator: Any
) -> None:
    from typer.testing import CliRunner

    from cds.cli import app

    # Importing dask.distributed fails as on a machine without the extra.
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "cds.replay.dask_pool", raising=False)
    result = CliRunner().invoke(
        app, ["replay", str(STORIES), "--as-of", AS_OF, "--engine", "dask"], catch_exceptions=False
    )
    assert result.exit_code == 2
    assert "pip install 'osteohooks[dask]'" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --engine dask"),
        (["--engine", "dask", "--workers", "0"], "--workers 0 is for --engine local"),
    ],
)
def test_engine_usage_errors_exit_2(args: list[str], message: str, shared_evaluator: Any) -> None:
    from typer.testing import CliRunner

    from cds.cli import app

    result = CliRunner().invoke(app, ["replay", str(STORIES), "--as-of", AS_OF, *args])
    assert result.exit_code == 2
    assert message in result.stderr.replace("\n", " ")


def test_an_unreachable_scheduler_is_an_error_saying_what_to_start(
    shared_evaluator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cds.replay import dask_pool

    monkeypatch.setattr(dask_pool, "CONNECT_TIMEOUT", 2.0)
    # A loopback port nothing listens on (bound and closed at once).
    import socket

    from typer.testing import CliRunner

    from cds.cli import app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(
        app,
        [
            "replay",
            str(STORIES),
            "--as-of",
            AS_OF,
            "--engine",
            "dask",
            "--scheduler",
            f"tcp://127.0.0.1:{port}",
        ],
    )
    assert result.exit_code == 2
    assert "cannot reach the Dask scheduler" in result.stderr
    assert "dask worker" in result.stderr


def test_the_scheduler_and_client_keep_only_a_few_task_messages(bundled_evaluator: Any) -> None:
    """A message handing a task to a worker holds its sources: Dask's debugging log of
    1000 such messages per connection grew the replay process past 1 GB by 100,000
    patients. A run (its own LocalCluster here) keeps a few on every connection
    (benchmarks/population_bench.py shows the RSS flat)."""
    from cds.replay.dask_pool import RUN_CONFIG

    keep = RUN_CONFIG["distributed.admin.low-level-log-length"]
    pool = DaskPool(settings(), 2, batch_size=4, evaluator=bundled_evaluator)
    seen: list[int | None] = []
    for n, _ in enumerate(pool.run(sources(60))):
        if n == 30:  # while it runs
            assert pool._client is not None
            assert pool._client.scheduler_comm is not None
            assert pool._cluster is not None
            assert pool._cluster.scheduler is not None
            seen.append(pool._client.scheduler_comm.recent_message_log.maxlen)
            streams = pool._cluster.scheduler.stream_comms.values()
            seen += [stream.recent_message_log.maxlen for stream in streams]
    assert len(seen) == 3
    assert set(seen) == {keep}
    assert keep < 100


def _slow_scan(*args: Any) -> None:
    """On a worker: the scan task, taking seconds for the export `later` (noting its
    progress all the while, so it never overruns)."""
    import time

    from cds.replay import dask_export, dask_watch

    file = args[0]
    if "/later/" in file.path:
        until = time.monotonic() + 6
        while time.monotonic() < until:
            dask_watch.note(args[-1])
            time.sleep(0.1)
    dask_export.scan_task(*args)


def test_the_deadline_is_watched_while_a_later_export_is_grouped(
    cluster: LocalCluster,
    client: Client,
    bundled_evaluator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An input of the first export hangs while the second export is being grouped (its
    scan tasks take seconds): the hung input's worker is stopped during that grouping,
    not after it; every input of both exports comes once."""
    import functools
    import sys
    import time

    import cloudpickle  # type: ignore[import-untyped]

    from cds.replay import dask_export
    from cds.replay.dask_watch import Watch
    from cds.replay.inputs import discover
    from cds.replay.pool import ReplayPool

    first, later = tmp_path / "first", tmp_path / "later"
    write_export(first, patients())
    write_export(later, patients())
    paths = [str(first), str(later)]
    local = ReplayPool(settings(), 0, evaluator=bundled_evaluator)
    want = [r.name for r in local.run(discover(paths, local.group_export))]
    hung = f"{first}#Patient/p2"
    assert hung in want
    whole(cluster, client)
    monkeypatch.setattr(dask_export, "scan_task", functools.partial(_slow_scan))
    kills: list[float] = []
    real_kill = Watch.kill

    def kill(self: Watch, client: Client, addr: str) -> None:
        kills.append(time.monotonic())
        real_kill(self, client, addr)

    monkeypatch.setattr(Watch, "kill", kill)
    pool = DaskPool(
        settings(hang_input=hung),
        2,
        batch_size=1,
        cluster=cluster,
        evaluator=bundled_evaluator,
        deadline=1.0,
        max_tries=1,
    )
    grouped: dict[str, float] = {}

    def group(folder: str, key: str | None = None) -> Iterator[Any]:
        for n, source in enumerate(pool.group_export(folder, key)):
            if n == 0:
                grouped[folder] = time.monotonic()
            yield source

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        results = list(pool.run(discover(paths, group)))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [r.name for r in results] == want
    stuck = next(r for r in results if r.name == hung)
    assert "took longer than 1 s, 1 times" in stuck.outcome_json
    assert kills
    assert kills[0] < grouped[str(later)]  # stopped while the later export was grouped
    assert sum(r.status == "failed" for r in results) == 1


def test_a_nanny_restarting_its_worker_is_left_to_it(
    cluster: LocalCluster, client: Client, bundled_evaluator: Any
) -> None:
    """The innocent input charged with 2 deaths: a LocalCluster closed the nanny of a
    worker that had not rejoined within 15 s (a slow restart on a busy machine), killing
    the new worker with its task, and replay's own healing did the same after 15 s short.
    Now only a nanny that gave up is replaced, and a run keeps the cluster from closing
    one that restarts."""
    from dask.utils import parse_timedelta

    whole(cluster, client)
    nannies = dict(cluster.workers)
    victim = next(iter(nannies.values()))
    os.kill(victim.process.pid, signal.SIGKILL)
    restore_workers(cluster)  # while the nanny restarts its worker
    assert cluster.workers == nannies  # the same nannies: none closed, none replaced
    client.wait_for_workers(2, timeout=60)
    assert dict(cluster.workers) == nannies

    pool = DaskPool(settings(), 2, batch_size=4, cluster=cluster, evaluator=bundled_evaluator)
    for n, _ in enumerate(pool.run(sources(20))):
        if n == 5:  # while it runs
            import dask

            timeout = dask.config.get("distributed.deploy.lost-worker-timeout")
            assert parse_timedelta(timeout) >= 600


def test_a_result_whose_connection_closes_is_computed_again_not_failed(
    cluster: LocalCluster,
    client: Client,
    bundled_evaluator: Any,
    reference: dict[str, InputResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CommClosedError of the kill loop: fetching a finished task's result from a
    worker that was just killed closes the connection; the inputs are computed again
    (no try charged), never reported as an internal error."""
    from distributed import Future
    from distributed.comm.core import CommClosedError

    whole(cluster, client)
    real_sync, real_result = Client.sync, Future.result
    broken = {"gather": 2, "result": 2}

    def sync(self: Client, func: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(func, "__name__", "") == "_gather" and broken["gather"]:
            broken["gather"] -= 1
            raise CommClosedError("in <TCP (closed)>: Stream is closed")
        return real_sync(self, func, *args, **kwargs)

    def result(self: Future[Any], timeout: Any = None) -> Any:
        if broken["result"]:
            broken["result"] -= 1
            raise CommClosedError("in <TCP (closed)>: Stream is closed")
        return real_result(self, timeout)

    monkeypatch.setattr(Client, "sync", sync)
    monkeypatch.setattr(Future, "result", result)
    pool = DaskPool(settings(), 2, batch_size=4, cluster=cluster, evaluator=bundled_evaluator)
    results = list(pool.run(sources(120)))
    assert broken == {"gather": 0, "result": 0}  # the connections did close
    assert check(results, reference) == 0  # and nothing failed for it
