"""`cds replay --engine dask --scheduler tcp://...` on a cluster it did not start: real
`dask scheduler` and `dask worker` processes on loopback, started as docs/qa-replay.md
says, in a folder of their own (they share nothing of this process's import state), give
the NDJSON of `--engine local` byte for byte; a hung input there fails after the
per-input deadline, as on the local pool, and nothing else is lost or duplicated."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from distributed import Client

from tests.replay.test_export import patients, write_export

ROOT = Path(__file__).resolve().parents[2]
STORIES = ROOT / "tests" / "fixtures" / "stories"
AS_OF = "2026-11-23"
BIN = Path(sys.executable).parent
WORKERS = 2

pytestmark = pytest.mark.subprocess


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    """The environment of a process on a cluster machine: none of this test's import
    paths, and the scheduler settings docs/qa-replay.md gives for exact retry counts."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
    env["DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION"] = "1.0"
    env["DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH"] = "16"
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started here and every process it started (its own session)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # nannies' workers left behind, if any
    process.wait(timeout=15)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a `dask scheduler` with `dask worker --nworkers 2 --nthreads 1`
    (the commands of docs/qa-replay.md, on free loopback ports), torn down at the end."""
    where = tmp_path_factory.mktemp("cluster")
    address = f"tcp://127.0.0.1:{_free_port()}"
    port = address.rsplit(":", 1)[1]
    logs = [open(where / name, "wb") for name in ("scheduler.log", "worker.log")]  # noqa: SIM115
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(
            subprocess.Popen(
                [
                    BIN / "dask",
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    port,
                    "--no-dashboard",
                ],
                cwd=where,
                env=_env(),
                stdout=logs[0],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        started.append(
            subprocess.Popen(
                [
                    *(BIN / "dask", "worker", address, "--nworkers", str(WORKERS)),
                    *("--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"),
                ],
                cwd=where,
                env=_env(),
                stdout=logs[1],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(WORKERS, timeout=120)
        yield address
    finally:
        for process in reversed(started):
            _stop(process)
        for log in logs:
            log.close()


def _replay(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    done = subprocess.run(
        [BIN / "cds", "replay", *args, "--as-of", AS_OF, "--format", "ndjson", "--no-progress"],
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr.decode("utf-8", "replace")


def _export(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    write_export(export, patients())
    with open(export / "Condition.ndjson", "a", encoding="utf-8") as handle:
        handle.write("{not json\n")  # a broken line: reported and counted on both engines
    return export


def _evaluator_id() -> int | None:
    """On a worker: the identity of its Evaluator (None before replay set it up)."""
    from cds.replay import worker

    return id(worker._evaluator) if worker._evaluator is not None else None


def _evaluators(address: str) -> dict[str, int | None]:
    """Each worker's `_evaluator_id` (sent by value: the workers cannot import tests)."""
    import cloudpickle  # type: ignore[import-untyped]

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with Client(address, timeout=30) as client:
            found: dict[str, int | None] = client.run(_evaluator_id)
            return found
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_an_external_cluster_writes_the_local_engines_ndjson_byte_for_byte(
    scheduler: str, tmp_path: Path
) -> None:
    _export(tmp_path)
    args = [str(STORIES), "export", "--workers", str(WORKERS)]
    local = _replay(*args, "--engine", "local", cwd=tmp_path)
    dask = _replay(*args, "--engine", "dask", "--scheduler", scheduler, cwd=tmp_path)
    assert local[0] == dask[0] == 1, (local[2], dask[2])  # 1: the broken line
    assert dask[1] == local[1]
    names = [json.loads(line)["input"] for line in dask[1].splitlines()]
    assert len(names) == len(set(names)) > len(patients())
    assert "export#Patient/p1" in names
    # Every worker loaded the rule set, once: a second run finds the same Evaluators.
    loaded = _evaluators(scheduler)
    assert len(loaded) == WORKERS
    assert None not in loaded.values()
    again = _replay(*args, "--engine", "dask", "--scheduler", scheduler, cwd=tmp_path)
    assert again[1] == local[1]
    assert _evaluators(scheduler) == loaded


def test_a_hung_input_on_an_external_cluster_fails_alone_after_the_per_input_deadline(
    scheduler: str, tmp_path: Path
) -> None:
    """The deadline is per input on Dask too. One input hangs, batched with every other
    (one task holds them all): it alone is reported failed, with the local pool's
    outcome, and every other input comes once with its own results. With one try each,
    a deadline per task would have failed the whole batch as hung."""
    _export(tmp_path)
    hung = "export#Patient/p3"
    env = {**_env(), "OSTEOHOOKS_REPLAY_TEST_HANG": hung}
    args = [str(STORIES), "export", "--deadline", "5", "--max-tries", "1", "--workers", "2"]
    local = _replay(*args, "--engine", "local", cwd=tmp_path, env=env)
    dask = _replay(*args, "--engine", "dask", "--scheduler", scheduler, cwd=tmp_path, env=env)
    assert local[0] == dask[0] == 1, (local[2], dask[2])
    assert dask[1] == local[1]
    lines = {json.loads(line)["input"]: json.loads(line) for line in dask[1].splitlines()}
    failed = [name for name, line in lines.items() if "took longer than" in json.dumps(line)]
    assert failed == [hung]
    issue = lines[hung]["outcome"]["issue"][0]
    assert issue["code"] == "timeout"
    assert "took longer than 5 s, 1 times" in issue["diagnostics"]
