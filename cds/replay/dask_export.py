"""Grouping a Bulk Data export by patient on a Dask cluster: the grouping of
`cds.replay.export`, partitioned by patient, run as tasks on the workers.

1. Scan: one task per export file runs `export.scan` over it (parse and classify each
   line, the one pass over the text) and spills its rows to a folder of its own in the
   scratch folder: the rows tied to a patient into one of `partitions` files by a hash of
   the patient id, the shared resources (Devices, Medications, ...) and the line errors
   into one file each.
2. Group: one task per partition adds its patients' rows from every scan, and every
   scan's shared resources, in file order, to an `export.ExportGrouper` of its own
   (SQLite in the scratch folder, out of core), which joins the referenced resources and
   writes the partition's patients, in patient id order, to a file.
3. Here, streamed: the line errors file by file, then the partitions' patients merged by
   patient id (`heapq.merge`, a chunk of each partition at a time). These are exactly the
   inputs of `export.export_sources`, in its order; they are then evaluated as any
   input (`cds.replay.dask_pool`).

Neither a task nor this process holds the export: a scan task holds a chunk of rows per
partition, a group task one patient's rows at a time. Tasks write under a temporary name
and rename when done, so a task tried again after its worker died starts afresh. The
export folder and the scratch folder (a temporary folder under TMPDIR of `cds replay`)
must be reachable by the workers at the same paths: on one machine they are; on a
cluster of several machines, both on a shared file system.
"""

from __future__ import annotations

import heapq
import os
import pickle
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import Any

from distributed import Client, wait
from distributed.scheduler import KilledWorker

from cds.replay.export import (
    SCRATCH_PREFIX,
    ExportFile,
    ExportGrouper,
    export_files,
    export_key,
    scan,
)
from cds.replay.inputs import Source
from cds.replay.pool import EngineError

#: Lines pickled together in a scan's spill file (one pickle frame; a line is a resource).
SPILL_CHUNK = 2000
#: Patients pickled together in a partition's file: this process holds one such chunk
#: of every partition while it merges them (a patient's Bundle is some kilobytes).
PATIENT_CHUNK = 64


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


def scan_task(
    file: ExportFile, number: int, folder: str, base: str, scratch: str, partitions: int
) -> None:
    """A task: scan the `number`-th file into `scratch/scan-<number>/` (module step 1)."""
    out = os.path.join(scratch, f"scan-{number}")
    tmp = _fresh(out)
    parts = [_Spill(os.path.join(tmp, f"part-{k}")) for k in range(partitions)]
    shared = _Spill(os.path.join(tmp, "shared"))
    errors = _Spill(os.path.join(tmp, "errors"))
    try:
        for row in scan(file, number, folder, base):
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


def group_task(partition: int, scans: int, folder: str, base: str, scratch: str) -> None:
    """A task: group one partition's patients into `scratch/group-<partition>/patients`
    as (patient id, name, key, Bundle text) rows in patient id order (module step 2)."""
    out = os.path.join(scratch, f"group-{partition}")
    tmp = _fresh(out)
    grouper = ExportGrouper(folder, tmp, base)
    try:
        for n in range(scans):
            grouper.add(read_spill(os.path.join(scratch, f"scan-{n}", f"part-{partition}")))
        for n in range(scans):
            grouper.add(read_spill(os.path.join(scratch, f"scan-{n}", "shared")))
        spill = _Spill(os.path.join(tmp, "patients"), PATIENT_CHUNK)
        try:
            for pid, source in grouper.patients_by_id():
                spill.add((pid, source.name, source.key, source.text))
        finally:
            spill.close()
    finally:
        grouper.close()
    os.remove(os.path.join(tmp, "export.sqlite"))
    _done(tmp, out)


def _run_tasks(
    client: Client,
    calls: list[tuple[Callable[..., None], tuple[Any, ...]]],
    tries: int,
    folder: str,
) -> None:
    """Run the calls as tasks, each tried again when its worker dies (up to `tries` in
    all). A task that raises stops the run: its export cannot be grouped."""
    futures = {n: client.submit(fn, *args, pure=False) for n, (fn, args) in enumerate(calls)}
    deaths: dict[int, int] = {}
    while futures:
        wait(list(futures.values()))
        for n, future in list(futures.items()):
            if future.status == "finished":
                del futures[n]
                future.release()
                continue
            exc = future.exception() if future.status == "error" else None
            future.release()
            deaths[n] = deaths.get(n, 0) + 1
            if isinstance(exc, KilledWorker) and deaths[n] < tries:
                fn, args = calls[n]
                futures[n] = client.submit(fn, *args, pure=False)
                continue
            for other in futures.values():
                other.cancel()
            why = f"{type(exc).__name__}: {exc}" if exc is not None else future.status
            raise EngineError(
                f"grouping the export {folder} on the Dask workers failed ({why}). The "
                "workers must reach the export folder and the temporary folder of cds "
                "replay (TMPDIR) at the same paths (a shared file system on a cluster of "
                "several machines); or use --engine local"
            )


def _scratch() -> tempfile.TemporaryDirectory[str]:
    """The scratch folder of one export's grouping (removed at the end)."""
    return tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX)


def dask_export_sources(
    client: Client,
    folder: str,
    key: str | None = None,
    *,
    partitions: int,
    tries: int,
) -> Iterator[Source]:
    """Every input of an export, as `cds.replay.export.export_sources` gives them, grouped
    by tasks on the cluster (see the module)."""
    files, problems = export_files(folder)
    yield from problems
    base = export_key(folder, key)
    # The workers read by absolute path; names and keys stay those of the local path.
    here = os.path.abspath(folder)
    tasks = [ExportFile(os.path.abspath(f.path), f.shown) for f in files]
    with _scratch() as scratch:
        _run_tasks(
            client,
            [
                (scan_task, (file, n, here, base, scratch, partitions))
                for n, file in enumerate(tasks)
            ],
            tries,
            folder,
        )
        _run_tasks(
            client,
            [(group_task, (k, len(tasks), folder, base, scratch)) for k in range(partitions)],
            tries,
            folder,
        )
        for n in range(len(tasks)):
            for _, _, name, shown_key, message in read_spill(
                os.path.join(scratch, f"scan-{n}", "errors")
            ):
                yield Source(name=name, key=shown_key, error=message)
        streams: list[Iterable[tuple[str, str, str, str]]] = [
            read_spill(os.path.join(scratch, f"group-{k}", "patients")) for k in range(partitions)
        ]
        for _, name, shown_key, text in heapq.merge(*streams, key=itemgetter(0)):
            yield Source(name=name, key=shown_key, text=text)
