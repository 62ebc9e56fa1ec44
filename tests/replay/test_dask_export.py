"""Grouping an export on Dask (`cds.replay.dask_export`) gives the inputs of the local
grouping exactly, in its order: line errors naming file and line, each patient's
resources with the shared ones its resources reference, whatever the number of
partitions; and it runs as tasks on the workers, not in the calling process."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

from distributed import Client, LocalCluster, get_task_stream

from cds.replay.dask_export import Grouping, dask_export_sources, partition_of
from cds.replay.export import export_sources
from cds.replay.inputs import Source, discover
from cds.replay.pool import EngineError
from cds.replay.worker import InputResult
from tests.replay.test_export import patients, write_export
from tests.replay.test_pool import settings
from tests.tools.test_synthetic_export import synthetic


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    from cds.replay.dask_pool import start_local_cluster

    cluster: LocalCluster = start_local_cluster(2)
    client = Client(cluster, direct_to_workers=True)
    yield client
    client.close()
    cluster.close()


def _whole(client: Client) -> None:
    """Both workers up again: a nanny whose new worker was stopped while it started gave
    up, and is replaced (as a run's `DaskPool.tick` does)."""
    from cds.replay.dask_pool import restore_workers

    restore_workers(client.cluster)  # type: ignore[arg-type]
    client.wait_for_workers(2, timeout=60)


def _healing(client: Client, watch: Any) -> Grouping:
    """A grouping watched by `watch` that also replaces a nanny that gave up between two
    waits, as `DaskPool.tick` does (stopping a worker 1 s into its first task can stop
    it while its nanny still starts it: that nanny gives up)."""
    import time

    from cds.replay.dask_pool import restore_workers

    def tick(watched: Any) -> None:
        watch.check(client, time.monotonic(), [watched])
        restore_workers(client.cluster)  # type: ignore[arg-type]

    return Grouping(2, 2, watch=watch, tick=tick, poll=0.25)


def _broken(folder: Path) -> list[str]:
    """Lines that are errors: not JSON, tied to no Patient, neither tied nor referable;
    the `#L<n>` of each."""
    path = folder / "Condition.ndjson"
    before = len(path.read_text(encoding="utf-8").splitlines())
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
        handle.write(json.dumps({"resourceType": "Condition", "subject": {"reference": "x"}}))
        handle.write("\n\n")  # a blank line: skipped, but counted in the line numbers
        handle.write(json.dumps({"resourceType": "Device"}) + "\n")
    return [f"L{before + n}" for n in (1, 2, 4)]


@pytest.mark.parametrize("partitions", [1, 3, 8])
def test_grouping_on_dask_gives_the_local_groupings_inputs_in_its_order(
    client: Client, tmp_path: Path, partitions: int
) -> None:
    export = tmp_path / "export"
    write_export(export, patients())
    lines = _broken(export)
    want = list(export_sources(str(export)))
    with get_task_stream(client) as stream:
        got = list(dask_export_sources(client, str(export), grouping=Grouping(partitions, 2)))
    assert got == want
    errors = [s for s in got if s.error is not None]
    assert [s.name.rsplit("#", 1)[1] for s in errors] == lines
    assert all(s.name.startswith(f"{export}/Condition.ndjson#") for s in errors)
    assert len(got) == len(errors) + len(patients())
    ran = {task["key"].split("-", 1)[0] for task in stream.data}
    assert {"scan_task", "group_task"} <= ran  # on the workers


def test_a_synthetic_population_groups_alike_on_dask_with_shared_scanners(
    client: Client, tmp_path: Path
) -> None:
    """Hundreds of patients over every partition, sharing a few scanner Devices (each
    joined into every partition that references it), Observations split over files."""
    export = tmp_path / "synthetic"
    synthetic.write_export(export, 400, 13, part=1500)
    assert len(list(export.glob("Observation.*.ndjson"))) > 1
    want = list(export_sources(str(export), "pop"))
    got = list(dask_export_sources(client, str(export), "pop", grouping=Grouping(5, 2)))
    assert got == want
    ids = [s.name.rsplit("/", 1)[1] for s in got]
    assert len({partition_of(pid, 5) for pid in ids}) == 5
    assert sum('"resourceType":"Device"' in (s.text or "") for s in got) > 100


def test_replay_on_dask_groups_the_export_on_the_cluster(
    client: Client, tmp_path: Path, bundled_evaluator: Any
) -> None:
    """`DaskPool.group_export` is what discovery groups an export with in a Dask run."""
    from cds.replay.dask_pool import DaskPool
    from cds.replay.pool import ReplayPool

    export = tmp_path / "export"
    write_export(export, patients())
    _broken(export)
    local = ReplayPool(settings(), 0, evaluator=bundled_evaluator)
    want = list(local.run(discover([str(export)], local.group_export)))
    cluster = client.cluster
    pool = DaskPool(settings(), 2, cluster=cluster, evaluator=bundled_evaluator)
    with get_task_stream(client) as stream:
        got = list(pool.run(discover([str(export)], pool.group_export)))

    def same(r: InputResult) -> tuple[str, str, str, str, str]:
        return r.name, r.key, r.status, r.cards_json, r.outcome_json

    assert [same(r) for r in got] == [same(r) for r in want]
    assert any(task["key"].startswith("group_task") for task in stream.data)


def test_workers_that_cannot_reach_the_scratch_folder_stop_the_run_saying_why(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cds.replay import dask_export

    export = tmp_path / "export"
    write_export(export, patients())
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    unreachable = str(tmp_path / "a-file" / "scratch")  # no task can make a folder there
    monkeypatch.setattr(dask_export, "_scratch", lambda _: contextlib.nullcontext(unreachable))
    with pytest.raises(EngineError, match="reach the export folder and the temporary folder"):
        list(dask_export_sources(client, str(export), grouping=Grouping(2, 2)))


def test_an_export_file_the_workers_cannot_read_is_an_error_line_as_on_the_local_path(
    client: Client, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    write_export(export, patients())
    (export / "Condition.ndjson").write_bytes(b'{"resourceType": "Condition", "id": "\xff"}\n')
    want = list(export_sources(str(export)))
    got = list(dask_export_sources(client, str(export), grouping=Grouping(2, 2)))
    assert got == want
    assert [s.name for s in got if s.error] == [f"{export}/Condition.ndjson#L1"]


def test_the_sources_are_plain_inputs(client: Client, tmp_path: Path) -> None:
    export = tmp_path / "export"
    write_export(export, patients())
    got = list(dask_export_sources(client, str(export), grouping=Grouping(2, 2)))
    assert all(isinstance(s, Source) and s.text for s in got)


def _scan_dying_once(marker: str, *args: Any) -> None:
    """On a worker: the scan task, but the first one to run kills its worker process."""
    import os
    import signal

    from cds.replay import dask_export

    if not os.path.exists(marker):
        with open(marker, "w", encoding="utf-8"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    dask_export.scan_task(*args)


def test_a_grouping_task_whose_worker_dies_is_tried_again_and_nothing_is_lost(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools
    import sys

    import cloudpickle  # type: ignore[import-untyped]

    from cds.replay import dask_export

    export = tmp_path / "export"
    write_export(export, patients())
    want = list(export_sources(str(export)))
    marker = tmp_path / "killed"
    monkeypatch.setattr(dask_export, "scan_task", functools.partial(_scan_dying_once, str(marker)))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        got = list(dask_export_sources(client, str(export), grouping=Grouping(2, 2)))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert marker.exists()  # a worker died under a scan task
    assert got == want
    _whole(client)


def _hanging_once(marker: str, name: str, *args: Any) -> None:
    """On a worker: the grouping task `name`, but the first one to run hangs after it
    started (as a task stuck on a file system would)."""
    import os
    import time

    from cds.replay import dask_export, dask_watch

    if not os.path.exists(marker):
        with open(marker, "w", encoding="utf-8"):
            pass
        dask_watch.note(args[-1])  # its key: it started
        time.sleep(3600)
    getattr(dask_export, name)(*args)


@pytest.mark.parametrize("name", ["scan_task", "group_task"])
def test_a_hung_grouping_task_has_its_worker_replaced_and_every_input_comes_once(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    import functools
    import sys

    import cloudpickle

    from cds.replay import dask_export
    from cds.replay.dask_watch import Watch

    export = tmp_path / "export"
    write_export(export, patients())
    _broken(export)
    want = list(export_sources(str(export)))
    marker = tmp_path / "hung"
    monkeypatch.setattr(dask_export, name, functools.partial(_hanging_once, str(marker), name))
    watch = Watch(deadline=2.0)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        got = list(dask_export_sources(client, str(export), grouping=_healing(client, watch)))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert marker.exists()  # a task hung
    assert watch.restarts >= 1
    assert watch.stopped
    assert got == want  # every input exactly once, as the local grouping gives them
    _whole(client)


def _hanging(name: str, *args: Any) -> None:
    """On a worker: the grouping task `name`, hanging every time after it started."""
    import time

    from cds.replay import dask_watch

    dask_watch.note(args[-1])
    time.sleep(3600)


def test_a_grouping_task_that_hangs_every_time_stops_the_run_saying_so(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools
    import sys

    import cloudpickle

    from cds.replay import dask_export
    from cds.replay.dask_watch import Watch

    export = tmp_path / "export"
    write_export(export, patients())
    monkeypatch.setattr(dask_export, "scan_task", functools.partial(_hanging, "scan_task"))
    grouping = _healing(client, Watch(deadline=1.0))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with pytest.raises(EngineError, match=r"made no progress for 1 s, 2 times"):
            list(dask_export_sources(client, str(export), grouping=grouping))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    _whole(client)


@pytest.mark.parametrize("split", [256, 2048])
def test_large_files_are_scanned_in_spans_with_the_same_inputs_and_true_line_numbers(
    client: Client, tmp_path: Path, split: int
) -> None:
    """Each span of a plain file is a scan task of its own; gzipped files stay one task
    each. The inputs are those of the local grouping, error lines with their file:line."""
    from cds.replay.export import export_files, spans

    export = tmp_path / "synthetic"
    synthetic.write_export(export, 60, 5, part=400)
    observations = sorted(export.glob("Observation.*.ndjson"))
    target = observations[0]
    lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
    for at in (3, len(lines) // 2, len(lines) - 1):
        lines.insert(at, "{not json\n")
    target.write_text("".join(lines), encoding="utf-8")
    (export / "manifest.json").unlink()  # the folder's files are the export
    devices = b"".join(
        b'{"resourceType": "Device", "id": "%s"}\n' % os.urandom(12).hex().encode()
        for _ in range(400)
    )
    gzipped = export / "Device.extra.ndjson.gz"
    gzipped.write_bytes(gzip.compress(devices))  # over `split` bytes, but one task
    want = list(export_sources(str(export)))
    files, _ = export_files(str(export))
    expected_scans = sum(len(spans(f.path, split)) for f in files)
    assert expected_scans > len(files) + 2
    assert os.path.getsize(gzipped) > split
    assert len(spans(str(gzipped), split)) == 1
    with get_task_stream(client) as stream:
        got = list(dask_export_sources(client, str(export), grouping=Grouping(3, 2, split=split)))
    assert got == want
    scans = [task for task in stream.data if task["key"].startswith("scan_task")]
    assert len(scans) == expected_scans
    broken = [
        s.name.rsplit("#", 1)[1]
        for s in got
        if s.error is not None and s.name.startswith(str(target))
    ]
    numbers = [n + 1 for n, line in enumerate(lines) if line == "{not json\n"]
    assert broken == [f"L{n}" for n in numbers]
