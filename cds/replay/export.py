"""FHIR Bulk Data exports as replay inputs: one input per patient, grouped out of core.

An export is a folder of NDJSON files of one resource type each (`Patient.ndjson`,
`Observation.000.ndjson`, `Observation.001.ndjson.gz`, ...), optionally with the
`manifest.json` of the `$export` that wrote it. `cds replay` reads it as an export when
the argument is such a folder or its manifest (see `export_folder`).

Grouping (card contract, "Replay inputs", rev 2):

- a resource with a `subject` or `patient` reference to a Patient belongs to that
  patient; a Patient to itself;
- a resource without one (Device, Medication, Organization, ...) is kept by `Type/id`
  and joined to every patient whose resources reference it (`device`,
  `medicationReference`, or any other top-level reference);
- a line that cannot be parsed, is not a FHIR resource, or has a `subject`/`patient`
  reference that names no Patient (or has neither and no id to be referenced by) is an
  error for that line, naming file and line: an unreadable input of its own
  (`<file>#L<n>`), counted in the summary, never a patient.

Each patient becomes one `Source` holding a collection Bundle of its resources, named
`<folder>#Patient/<id>` (key `<folder name>#Patient/<id>`), in patient id order, after
the line errors in file and line order. The reader then treats it as any Bundle (drafts
for order hooks per the contract).

Out of core: lines are streamed into an SQLite database in a temporary folder (one row
per resource), and patients are read back in id order through SQLite's external sort,
so memory stays bounded whatever the export size; only one patient's resources are held
at a time. The pieces (`scan` a file into rows, `ExportGrouper.add` rows, `patients`)
are also what `cds.replay.dask_export` runs as tasks, one grouper per partition of the
patients: one grouping, here in one process, there on a cluster.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import sqlite3
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, groupby, islice
from typing import IO, Any
from urllib.parse import urlparse

from cds.fhir.bundle import patient_of
from cds.jsontext import loads
from cds.replay.inputs import Source

MANIFEST = "manifest.json"
#: An export file without a manifest: `<ResourceType>[.<part>...].ndjson[.gz]`.
EXPORT_FILE = re.compile(r"^[A-Z][A-Za-z]+(\.[A-Za-z0-9_-]+)*\.ndjson(\.gz)?$")
#: Rows written per SQLite transaction while grouping.
CHUNK = 20_000
#: Referenced (shared) resources kept in memory between patients.
SHARED_CACHE = 4096
#: The name prefix of the temporary folders grouping works in.
SCRATCH_PREFIX = "osteohooks-export-"


@dataclass(frozen=True, slots=True)
class ExportFile:
    """One NDJSON file of an export: its path and the name reports show for it."""

    path: str
    shown: str


def _is_export_name(name: str) -> bool:
    return EXPORT_FILE.match(name) is not None


def export_folder(argument: str) -> str | None:
    """The export folder an argument names, or None when it is not an export.

    An export is a `manifest.json` file, a folder holding one, or a folder whose files
    are all NDJSON files named after a resource type, one of them `Patient...`.
    """
    if os.path.isfile(argument):
        return os.path.dirname(argument) or "." if os.path.basename(argument) == MANIFEST else None
    if not os.path.isdir(argument):
        return None
    if os.path.isfile(os.path.join(argument, MANIFEST)):
        return argument
    try:
        names = [
            entry.name
            for entry in os.scandir(argument)
            if entry.is_file() and not entry.name.startswith(".")
        ]
    except OSError:
        return None
    exported = names and all(_is_export_name(name) for name in names)
    if exported and any(name.startswith("Patient.") for name in names):
        return argument
    return None


def export_files(folder: str) -> tuple[list[ExportFile], list[Source]]:
    """The NDJSON files of an export (the manifest's outputs when there is one)."""
    manifest_path = os.path.join(folder, MANIFEST)
    base = os.path.basename(os.path.normpath(folder))
    if not os.path.isfile(manifest_path):
        names = sorted(
            entry.name
            for entry in os.scandir(folder)
            if entry.is_file() and _is_export_name(entry.name)
        )
        return [ExportFile(os.path.join(folder, n), os.path.join(folder, n)) for n in names], []
    shown_manifest = manifest_path
    try:
        with open(manifest_path, "rb") as handle:
            manifest = loads(handle.read())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return [], [
            Source(
                name=shown_manifest,
                key=f"{base}/{MANIFEST}",
                error=f"cannot read the export manifest: {exc}",
            )
        ]
    outputs = manifest.get("output") if isinstance(manifest, dict) else None
    if not isinstance(outputs, list):
        return [], [
            Source(
                name=shown_manifest,
                key=f"{base}/{MANIFEST}",
                error='not a Bulk Data manifest: no "output" list of {"type", "url"} entries',
            )
        ]
    files: list[ExportFile] = []
    errors: list[Source] = []
    for number, output in enumerate(outputs):
        url = output.get("url") if isinstance(output, dict) else None
        name = os.path.basename(urlparse(url).path) if isinstance(url, str) else ""
        path = os.path.join(folder, name)
        if not name or not os.path.isfile(path):
            errors.append(
                Source(
                    name=f"{shown_manifest}#output[{number}]",
                    key=f"{base}/{MANIFEST}#output[{number}]",
                    error=f"the manifest lists {url!r}, but the folder has no file "
                    f"{name or '(no file name in the url)'}: copy the export's files next "
                    "to its manifest.json",
                )
            )
            continue
        files.append(ExportFile(path, path))
    return files, errors


@dataclass(frozen=True, slots=True)
class Span:
    """The lines of an export file that start in its bytes [start, end) (end None: to the
    end of the file), the first of them line `first_line` of the file."""

    start: int = 0
    end: int | None = None
    first_line: int = 1


WHOLE = Span()
#: Bytes read at a time while `spans` looks for line starts.
_BLOCK = 1 << 20


def spans(path: str, size: int) -> list[Span]:
    """A plain (not gzipped) file cut into spans of about `size` bytes, each starting at
    a line start, with the number of its first line (one read of the file, counting line
    ends as `_lines` does: a line ends at "\n"). A gzipped file is one span: a DEFLATE
    stream can only be read from its start."""
    if path.endswith(".gz") or os.path.getsize(path) <= size:
        return [WHOLE]
    starts: list[tuple[int, int]] = [(0, 1)]  # (offset, line number) of each span's start
    lines = 1  # the number of the line at `offset`
    offset = 0
    target = size
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            end = offset + len(block)
            while target < end:
                cut = block.find(b"\n", max(0, target - 1 - offset))
                if cut < 0:
                    break  # the line goes on into the next block
                at = offset + cut + 1
                starts.append((at, lines + block.count(b"\n", 0, cut + 1)))
                target = at + size
            lines += block.count(b"\n")
            offset = end
    starts = [start for start in starts if start[0] < offset] or [(0, 1)]
    return [
        Span(start, starts[n + 1][0] if n + 1 < len(starts) else None, first)
        for n, (start, first) in enumerate(starts)
    ]


def _lines(file: ExportFile, span: Span = WHOLE) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, error) for each non-blank line of a plain or gzipped file, or
    of one span of it. A line ends at "\n" (NDJSON) and is decoded on its own: a line
    that is not UTF-8 is an error of that line only."""
    number = span.first_line - 1
    position = span.start
    try:
        handle: IO[bytes] | gzip.GzipFile
        if file.path.endswith(".gz"):
            handle = gzip.open(file.path, "rb")  # noqa: SIM115 (closed below)
        else:
            handle = open(file.path, "rb")  # noqa: SIM115 (closed below)
            handle.seek(span.start)
        with handle:
            for number, raw in enumerate(handle, start=span.first_line):
                if span.end is not None and position >= span.end:
                    return
                position += len(raw)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield number, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
                    continue
                if line.strip():
                    yield number, line, None
    except (OSError, EOFError, zlib.error) as exc:
        yield number + 1, None, f"cannot read line {number + 1}: {exc}"


def _references(resource: dict[str, Any]) -> list[str]:
    """`Type/id` of every reference in a resource, at any depth (`device`,
    `medicationReference`, `performer[].actor`, `hasMember[]`, ...), other than to a
    Patient, in order of first appearance."""
    found: dict[str, None] = {}
    stack: list[Any] = [v for k, v in resource.items() if k not in ("subject", "patient")]
    stack.reverse()
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str) and not ref.startswith(("#", "urn:", "Patient/")):
                parts = [p for p in ref.split("/") if p]
                if len(parts) >= 2 and _encodable(ref):  # else no resource can be it
                    found[f"{parts[-2]}/{parts[-1]}"] = None
            stack.extend(reversed(list(value.values())))
    return list(found)


def _encodable(text: str) -> bool:
    """True unless the text holds a lone surrogate (a JSON `"\\ud800"` escape): SQLite
    stores UTF-8, which cannot encode one."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _classify(text: str) -> tuple[str, str, str | None] | str:
    """("patient", patient id, references) or ("shared", Type/id, None), or an error.
    An id holding a lone surrogate is an error of its line (it cannot be stored, and
    would stop the grouping of the whole export)."""
    kind = _classify_resource(text)
    if isinstance(kind, str):
        return kind if _encodable(kind) else kind.encode("utf-8", "backslashreplace").decode()
    if not _encodable(kind[1]):
        what = "patient id" if kind[0] == "patient" else "resourceType or id"
        return (
            f"its {what} holds a lone surrogate (a \\ud800-\\udfff escape that is no "
            "character), so it cannot be grouped"
        )
    return kind


def _classify_resource(text: str) -> tuple[str, str, str | None] | str:
    """`_classify` but for the lone surrogates."""
    try:
        resource = loads(text)
    except (ValueError, RecursionError) as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(resource, dict):
        return f"expected a FHIR resource (a JSON object), found a JSON {type(resource).__name__}"
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return "not a FHIR resource (no resourceType)"
    rid = resource.get("id")
    if rtype == "Patient":
        if not isinstance(rid, str) or not rid:
            return "a Patient without an id cannot be grouped"
        return "patient", rid, None
    pid = patient_of(resource)
    if pid is not None:
        refs = _references(resource)
        return "patient", pid, json.dumps(refs) if refs else None
    if "subject" in resource or "patient" in resource:
        return (
            f"{rtype}: its subject/patient reference names no Patient "
            "(expected Patient/<id>), so it cannot be tied to a patient"
        )
    if not isinstance(rid, str) or not rid:
        return (
            f"{rtype} has no subject/patient reference and no id: it can be neither tied "
            "to a patient nor referenced"
        )
    return "shared", f"{rtype}/{rid}", None


#: One classified line of an export, in the one shape grouping stores it in:
#: ("own", patient id, seq, references JSON or None, body), ("shared", Type/id, body) or
#: ("error", seq, name, key, message). `seq` orders lines as the export does (file
#: number, then line): see `scan`.
Row = tuple[Any, ...]
#: Lines of one file at most (2**32): `seq` is file number << SEQ_BITS | line order.
SEQ_BITS = 32


def scan(
    file: ExportFile, number: int, folder: str, base: str, span: Span = WHOLE
) -> Iterator[Row]:
    """The classified lines of a file of an export (or of one span of it), in line order
    (the one pass over its text): what `ExportGrouper.add` stores. `number` orders it
    among the export's files (and spans). Files are scanned one by one here
    (`export_sources`) or in spans as tasks of their own (`cds.replay.dask_export`)."""
    rel = os.path.relpath(file.path, folder).replace(os.sep, "/")
    seq = number << SEQ_BITS
    for line, text, error in _lines(file, span):
        seq += 1
        if text is not None:
            kind = _classify(text)
            if isinstance(kind, tuple):
                if kind[0] == "patient":
                    yield ("own", kind[1], seq, kind[2], text.strip())
                else:
                    yield ("shared", kind[1], text.strip())
                continue
            error = kind
        yield (
            "error",
            seq,
            f"{file.shown}#L{line}",
            f"{base}/{rel}#L{line}",
            f"line {line}: {error}",
        )


def export_key(folder: str, key: str | None) -> str:
    """The golden-key prefix of an export's inputs (default: the folder's name)."""
    return key if key is not None else os.path.basename(os.path.normpath(folder))


class ExportGrouper:
    """Group classified lines (`scan`) by patient in an SQLite file under `workdir`:
    all of an export's lines, or one partition's (`cds.replay.dask_export`)."""

    def __init__(self, folder: str, workdir: str, key: str | None = None) -> None:
        self.folder = folder.rstrip("/") or folder
        self.base = export_key(folder, key)
        self.db = sqlite3.connect(os.path.join(workdir, "export.sqlite"))
        self.db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            PRAGMA temp_store = FILE;
            PRAGMA cache_size = -32768;
            CREATE TABLE own (pid TEXT NOT NULL, seq INTEGER NOT NULL, refs TEXT,
                              body TEXT NOT NULL);
            CREATE TABLE shared (ref TEXT PRIMARY KEY, body TEXT NOT NULL);
            CREATE TABLE errors (seq INTEGER NOT NULL, name TEXT, key TEXT, message TEXT);
            """
        )

    def load(self, files: Iterable[ExportFile]) -> None:
        """Read every line of the files into the database (the one pass over the export)."""
        for number, file in enumerate(files):
            self.add(scan(file, number, self.folder, self.base))

    def add(self, rows: Iterable[Row], *, referenced_only: bool = False) -> None:
        """Store classified lines. A shared resource stored twice keeps the first: add
        rows in the export's order (file by file). With `referenced_only`, once every
        patient's own rows are in: only the shared resources that one of them references
        (the `refs` that `patients_by_id` joins on), so a partition of the patients
        (`cds.replay.dask_export`) stores only the shared resources it can use. Listing
        the references costs about a second per 300,000 rows that have some: fewer than
        CHUNK rows are stored as they are."""
        own: list[tuple[str, int, str | None, str]] = []
        shared: list[tuple[str, str]] = []
        errors: list[tuple[int, str, str, str]] = []
        insert_shared = "INSERT OR IGNORE INTO shared VALUES (?, ?)"
        if referenced_only:
            rows = iter(rows)
            head = list(islice(rows, CHUNK))
            referenced_only = len(head) == CHUNK
            rows = chain(head, rows)
        if referenced_only:
            self._referenced()
            insert_shared = (
                "INSERT OR IGNORE INTO shared SELECT ?1, ?2 "
                "WHERE EXISTS (SELECT 1 FROM referenced WHERE ref = ?1)"
            )

        def flush() -> None:
            with self.db:
                self.db.executemany("INSERT INTO own VALUES (?, ?, ?, ?)", own)
                self.db.executemany(insert_shared, shared)
                self.db.executemany("INSERT INTO errors VALUES (?, ?, ?, ?)", errors)
            own.clear()
            shared.clear()
            errors.clear()

        for row in rows:
            kind = row[0]
            if kind == "own":
                own.append(row[1:])
            elif kind == "shared":
                shared.append(row[1:])
            else:
                errors.append(row[1:])
            if len(own) + len(shared) >= CHUNK:
                flush()
        flush()

    def _referenced(self) -> None:
        """The table of every `Type/id` the stored own rows reference (out of core)."""
        with self.db:
            self.db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS referenced (ref TEXT PRIMARY KEY) WITHOUT ROWID"
            )
            self.db.execute(
                "INSERT OR IGNORE INTO referenced SELECT refs.value "
                "FROM own, json_each(own.refs) AS refs WHERE own.refs IS NOT NULL"
            )

    def errors(self) -> Iterator[Source]:
        for name, key, message in self.db.execute(
            "SELECT name, key, message FROM errors ORDER BY seq"
        ):
            yield Source(name=name, key=key, error=message)

    def patients(self) -> Iterator[Source]:
        """One Source per patient (a collection Bundle of its resources), in id order."""
        for _, source in self.patients_by_id():
            yield source

    def patients_by_id(self) -> Iterator[tuple[str, Source]]:
        """(patient id, Source) per patient, in id order (see `patients`)."""

        @lru_cache(maxsize=SHARED_CACHE)
        def lookup(ref: str) -> str | None:
            row = self.db.execute("SELECT body FROM shared WHERE ref = ?", (ref,)).fetchone()
            return row[0] if row else None

        rows = self.db.execute("SELECT pid, refs, body FROM own ORDER BY pid, seq")
        for pid, group in groupby(rows, key=lambda row: row[0]):
            bodies: list[str] = []
            wanted: dict[str, None] = {}
            for _, refs, body in group:
                bodies.append(body)
                if refs:
                    wanted.update(dict.fromkeys(json.loads(refs)))
            for ref in wanted:
                body = lookup(ref)
                if body is not None:
                    bodies.append(body)
            entries = ",".join(f'{{"resource":{body}}}' for body in bodies)
            suffix = f"#Patient/{pid}"
            yield (
                pid,
                Source(
                    name=self.folder + suffix,
                    key=self.base + suffix,
                    text=f'{{"resourceType":"Bundle","type":"collection","entry":[{entries}]}}',
                ),
            )

    def close(self) -> None:
        self.db.close()


def scratch_folder(scratch: str | None) -> tempfile.TemporaryDirectory[str]:
    """The temporary folder of one export's grouping, in `scratch` (`--scratch`; default
    the system's temporary folder, `TMPDIR`), removed at the end. It needs about the
    export's uncompressed size of free disk."""
    return tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=scratch)


def export_sources(
    folder: str, key: str | None = None, scratch: str | None = None
) -> Iterator[Source]:
    """Every input of an export: its line errors, then one per patient (see the module).
    Golden keys start with `key` (default: the folder's name; an export found inside a
    folder argument: its path relative to that argument). Grouping works in a temporary
    folder in `scratch` (see `scratch_folder`)."""
    files, problems = export_files(folder)
    yield from problems
    with scratch_folder(scratch) as workdir:
        grouper = ExportGrouper(folder, workdir, key)
        try:
            grouper.load(files)
            yield from grouper.errors()
            yield from grouper.patients()
        finally:
            grouper.close()
