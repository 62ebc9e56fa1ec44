"""Grouping a Bulk Data export by patient on a Dask cluster: the grouping of
`cds.replay.export`, partitioned by patient, run as tasks on the workers.

1. Scan: one task per export file, or per span of about `split` bytes of a large plain
   file (`export.spans`: cut at line starts, each span knowing the number of its first
   line; a gzipped file is one task, a DEFLATE stream can only be read from its start),
   runs `export.scan` over it (parse and classify each line, the one pass over the text)
   and spills its rows to a folder of its own in the scratch folder: the rows tied to a
   patient into one of `partitions` files by a hash of the patient id, the shared
   resources (Devices, Medications, ...) and the line errors into one file each.
2. Group: one task per partition adds its patients' rows from every scan, then, in file
   order, the shared resources they reference (`ExportGrouper.add(referenced_only=True)`)
   to an `export.ExportGrouper` of its own (SQLite in the scratch folder, out of core),
   which joins the referenced resources and writes the partition's patients, in patient
   id order, to a file.
3. Here, streamed: the line errors file by file, then the partitions' patients merged by
   patient id (`heapq.merge`, a chunk of each partition at a time). These are exactly the
   inputs of `export.export_sources`, in its order; they are then evaluated as any
   input (`cds.replay.dask_pool`).

Neither a task nor this process holds the export: a scan task holds a chunk of rows per
partition, a group task one patient's rows at a time. Tasks write under a temporary name
and rename when done, so a task tried again after its worker died starts afresh. Each
task notes its progress (`cds.replay.dask_watch.note`: every few thousand lines or
patients, and from inside SQLite's work); a task without progress for the deadline has
its worker stopped and is tried again, as is one whose worker dies, up to `tries` times
in all. While the tasks run, the evaluation of earlier inputs goes on being watched
(`tick`: `DaskPool.tick`). The export folder and the scratch folder (a temporary folder
in `--scratch`, default TMPDIR, of `cds replay`) must be reachable by the workers at the
same paths: on one machine they are; on a cluster of several machines, both on a shared
file system.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import pickle
import shutil
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, TypeVar

from distributed import Client, Future, wait
from distributed.scheduler import KilledWorker

from cds.replay import dask_watch
from cds.replay.dask_watch import Tracked, Watch, Watched
from cds.replay.export import (
    WHOLE,
    ExportFile,
    ExportGrouper,
    Span,
    export_files,
    export_key,
    scan,
    scratch_folder,
    spans,
)
from cds.replay.inputs import Source
from cds.replay.pool import DEFAULT_DEADLINE, EngineError

#: Lines pickled together in a scan's spill file (one pickle frame; a line is a resource).
SPILL_CHUNK = 2000
#: Patients pickled together in a partition's file: this process holds one such chunk
#: of every partition while it merges them (a patient's Bundle is some kilobytes).
PATIENT_CHUNK = 64
#: A plain export file larger than this is scanned in spans of about this size, a task
#: each (so one huge file is not one long task on one worker).
SPLIT_BYTES = 64 << 20
#: A grouping task notes its progress every this many rows, and every this many SQLite
#: virtual machine instructions (its sort of a partition's rows notes progress too).
NOTE_EVERY = 2000
SQLITE_NOTE_EVERY = 1_000_000

T = TypeVar("T")


class _Spill:
    """A file of pickle frames of rows, written a chunk at a time."""

    def __init__(self, path: str, chunk: int = SPILL_CHUNK) -> None:
        self.handle = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.rows: list[Any] = []
        self.chunk = chunk

    def add(self, row: Any) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            pickle.dump(self.rows, self.handle, protocol=pickle.HIGHEST_PROTOCOL)
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.handle.close()


def read_spill(path: str) -> Iterator[Any]:
    """The rows of a spill file, in the order written."""
    with open(path, "rb") as handle:
        while True:
            try:
                chunk = pickle.load(handle)
            except EOFError:
                return
            yield from chunk


def partition_of(pid: str, partitions: int) -> int:
    """The partition of a patient id (the same in every process: no salted hash)."""
    return zlib.crc32(pid.encode("utf-8", "surrogatepass")) % partitions


def _done(tmp: str, out: str) -> None:
    """Publish a task's output under its final name (a retry replaces an earlier one)."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.replace(tmp, out)


def _fresh(path: str) -> str:
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp


def _noted(rows: Iterable[T], key: str) -> Iterator[T]:
    """The rows, noting the task's progress every NOTE_EVERY of them."""
    for n, row in enumerate(rows):
        if n % NOTE_EVERY == 0:
            dask_watch.note(key)
        yield row


@dataclass(frozen=True, slots=True)
class Where:
    """What every grouping task of one export is given: the export folder (as the
    inputs name it, and as the workers read it), the golden-key prefix, the scratch
    folder, and the number of partitions."""

    folder: str
    here: str
    base: str
    scratch: str
    partitions: int


def scan_task(file: ExportFile, number: int, span: Span, where: Where, key: str = "") -> None:
    """A task: scan the `number`-th span of the export's files into
    `scratch/scan-<number>/` (module step 1)."""
    with dask_watch.running(key):
        _scan(file, number, span, where, key)


def _scan(file: ExportFile, number: int, span: Span, where: Where, key: str) -> None:
    out = os.path.join(where.scratch, f"scan-{number}")
    tmp = _fresh(out)
    partitions = where.partitions
    parts = [_Spill(os.path.join(tmp, f"part-{k}")) for k in range(partitions)]
    shared = _Spill(os.path.join(tmp, "shared"))
    errors = _Spill(os.path.join(tmp, "errors"))
    try:
        for row in _noted(scan(file, number, where.here, where.base, span), key):
            kind = row[0]
            if kind == "own":
                parts[partition_of(row[1], partitions)].add(row)
            elif kind == "shared":
                shared.add(row)
            else:
                errors.add(row)
    finally:
        for spill in (*parts, shared, errors):
            spill.close()
    _done(tmp, out)


def group_task(partition: int, scans: int, where: Where, key: str = "") -> None:
    """A task: group one partition's patients into `scratch/group-<partition>/patients`
    as (patient id, name, key, Bundle text) rows in patient id order (module step 2):
    its patients' rows, then the shared resources they reference."""
    with dask_watch.running(key):
        _group(partition, scans, where, key)


def _group(partition: int, scans: int, where: Where, key: str) -> None:
    scratch = where.scratch
    out = os.path.join(scratch, f"group-{partition}")
    tmp = _fresh(out)
    grouper = ExportGrouper(where.folder, tmp, where.base)

    def noting() -> int:
        dask_watch.note(key)
        return 0  # go on

    grouper.db.set_progress_handler(noting, SQLITE_NOTE_EVERY)
    try:
        for n in range(scans):
            part = os.path.join(scratch, f"scan-{n}", f"part-{partition}")
            grouper.add(_noted(read_spill(part), key))
        shared = chain.from_iterable(
            read_spill(os.path.join(scratch, f"scan-{n}", "shared")) for n in range(scans)
        )
        grouper.add(_noted(shared, key), referenced_only=True)  # in file order
        spill = _Spill(os.path.join(tmp, "patients"), PATIENT_CHUNK)
        try:
            for pid, source in _noted(grouper.patients_by_id(), key):
                spill.add((pid, source.name, source.key, source.text))
        finally:
            spill.close()
    finally:
        grouper.close()
    os.remove(os.path.join(tmp, "export.sqlite"))
    _done(tmp, out)


@dataclass(kw_only=True)
class _Grouping(Tracked):
    """A grouping task: the call it runs (an index into the calls) and its future."""

    call: int
    future: Future[None]


#: What a grouping calls between two waits on the cluster (`DaskPool.tick`): it watches
#: the grouping tasks given along with the evaluation tasks.
Tick = Callable[[Watched], None]


@dataclass(frozen=True)
class Grouping:
    """How an export is grouped on the cluster: into `partitions`, each task tried up to
    `tries` times, `watch` holding their deadline (default `DEFAULT_DEADLINE`), `tick`
    called between two waits (`DaskPool.tick`; default: the watch alone, every `poll`
    seconds at most), temporary files in a folder in `scratch` (default TMPDIR), plain
    files scanned in spans of `split` bytes."""

    partitions: int
    tries: int
    watch: Watch = field(default_factory=lambda: Watch(DEFAULT_DEADLINE))
    tick: Tick | None = None
    poll: float = 1.0
    scratch: str | None = None
    split: int = SPLIT_BYTES


def _abandon(client: Client, tasks: Iterable[_Grouping], watch: Watch | None) -> None:
    """Cancel the tasks; with `watch` (the grouping failed), also stop the workers that
    reported one running: Dask cannot cancel a running task, and one that hangs would
    keep its worker (and what waits there) for ever. Its nanny starts a new one."""
    for task in tasks:
        task.future.cancel()
        task.future.release()
        if watch is not None and task.unit is not None and task.worker is not None:
            watch.kill(client, task.worker)


def _run_tasks(
    client: Client,
    name: str,
    calls: list[tuple[Callable[..., None], tuple[Any, ...]]],
    grouping: Grouping,
    folder: str,
) -> None:
    """Run the calls as tasks named `name-...` (each called with its task key last).
    A task whose worker dies, or that makes no progress for the watch's deadline (its
    worker is then stopped), is tried again, up to `tries` times in all; one whose
    worker was stopped for another task is tried again uncharged. A task that raises
    stops the run: its export cannot be grouped. Between two waits: `tick` (or the
    watch alone)."""
    watch, tries = grouping.watch, grouping.tries
    tasks: dict[str, _Grouping] = {}
    charged: dict[int, int] = {}
    problem: list[str] = []

    def submit(n: int) -> None:
        fn, args = calls[n]
        key = f"{name}-{uuid.uuid4().hex}"
        tasks[key] = _Grouping(call=n, future=client.submit(fn, *args, key, key=key, pure=False))

    def again(n: int, deaths: int, why: str) -> None:
        charged[n] = charged.get(n, 0) + deaths
        if charged[n] >= tries:
            problem.append(f"{why}, {charged[n]} times")
        else:
            submit(n)

    def overran(key: str, task: _Grouping) -> None:  # noqa: ARG001 (Watch's handler)
        task.future.cancel()
        task.future.release()
        again(task.call, 1, f"a grouping task made no progress for {watch.deadline:g} s")

    def watch_alone(watched: Watched) -> None:
        watch.check(client, time.monotonic(), [watched])

    step = grouping.tick or watch_alone
    for n in range(len(calls)):
        submit(n)
    try:
        while tasks and not problem:
            with contextlib.suppress(TimeoutError):
                futures = [task.future for task in tasks.values()]
                wait(futures, grouping.poll, "FIRST_COMPLETED")
            for key, task in list(tasks.items()):
                future = task.future
                if future.status == "pending":
                    continue
                del tasks[key]
                if future.status in ("finished", "lost"):  # its output is on disk
                    future.release()
                    continue
                exc = future.exception() if future.status == "error" else None
                future.release()
                if isinstance(exc, KilledWorker):
                    again(task.call, watch.charged(exc), "its worker died")
                    continue
                problem.append(f"{type(exc).__name__}: {exc}" if exc else str(future.status))
            if tasks and not problem:
                step((tasks, overran))
    finally:
        _abandon(client, tasks.values(), watch if problem else None)
    if problem:
        raise EngineError(
            f"grouping the export {folder} on the Dask workers failed ({problem[0]}). The "
            "workers must reach the export folder and the temporary folder of cds "
            "replay (--scratch, default TMPDIR) at the same paths (a shared file system "
            "on a cluster of several machines); or use --engine local"
        )


def _scratch(scratch: str | None) -> tempfile.TemporaryDirectory[str]:
    """The scratch folder of one export's grouping (removed at the end)."""
    return scratch_folder(scratch)


def _spans(file: ExportFile, split: int) -> list[Span]:
    try:
        return spans(file.path, split)
    except OSError:  # the scan task reports it, as the local grouping does
        return [WHOLE]


def dask_export_sources(
    client: Client, folder: str, key: str | None = None, *, grouping: Grouping
) -> Iterator[Source]:
    """Every input of an export, as `cds.replay.export.export_sources` gives them, grouped
    by tasks on the cluster (see the module and `Grouping`)."""
    files, problems = export_files(folder)
    yield from problems
    # The workers read by absolute path; names and keys stay those of the local path.
    parts = [
        (ExportFile(os.path.abspath(f.path), f.shown), span)
        for f in files
        for span in _spans(f, grouping.split)
    ]
    with _scratch(grouping.scratch) as workdir:
        where = Where(
            folder=folder,
            here=os.path.abspath(folder),
            base=export_key(folder, key),
            scratch=os.path.abspath(workdir),
            partitions=grouping.partitions,
        )
        _run_tasks(
            client,
            "scan_task",
            [(scan_task, (file, n, span, where)) for n, (file, span) in enumerate(parts)],
            grouping,
            folder,
        )
        _run_tasks(
            client,
            "group_task",
            [(group_task, (k, len(parts), where)) for k in range(where.partitions)],
            grouping,
            folder,
        )
        for n in range(len(parts)):
            for _, _, name, shown_key, message in read_spill(
                os.path.join(where.scratch, f"scan-{n}", "errors")
            ):
                yield Source(name=name, key=shown_key, error=message)
        streams: list[Iterable[tuple[str, str, str, str]]] = [
            read_spill(os.path.join(where.scratch, f"group-{k}", "patients"))
            for k in range(where.partitions)
        ]
        for _, name, shown_key, text in heapq.merge(*streams, key=itemgetter(0)):
            yield Source(name=name, key=shown_key, text=text)
