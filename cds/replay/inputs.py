"""Finding replay inputs: files, folders (recursive), globs, NDJSON lines and exports.

Discovery is lazy (a generator) so that a run over 100,000 inputs never holds them all.
Each `Source` is one unit of work for a worker: a JSON file to read, or one NDJSON line
already read by the parent (reading lines is cheap; parsing happens in the workers).
A path that does not exist, a glob with no match, or an NDJSON file that cannot be
opened becomes a `Source` with an `error`: it is reported as an unreadable input and the
run goes on.

Names. `name` is what the reports show (`input` in NDJSON): the file path as reached
from the command-line argument (`cases/sub/a.json`), with `#L<n>` for NDJSON line n
(1-based) and, added later by the reader, `#Patient/<id>` per patient of a split
Bundle. `key` is the same name relative to the argument it came from (a folder or the
fixed part of a glob; a file argument gives its file name); golden files are found by
key, so they do not depend on the directory the run starts from.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

#: File name endings read as one JSON document (a Bundle or a CDS Hooks request).
JSON_SUFFIXES = (".json",)
#: File name endings read as one JSON document per line.
NDJSON_SUFFIXES = (".ndjson", ".jsonl")


@dataclass(frozen=True, slots=True)
class Source:
    """One unit of work: a JSON file, one NDJSON line, or an input that failed early."""

    name: str
    key: str
    path: str | None = None
    text: str | None = None
    error: str | None = None


def is_ndjson(path: str) -> bool:
    """True when the file is read as NDJSON (one document per line)."""
    return path.lower().endswith(NDJSON_SUFFIXES)


def _is_replayable(filename: str) -> bool:
    lower = filename.lower()
    return lower.endswith(JSON_SUFFIXES + NDJSON_SUFFIXES) and not filename.startswith(".")


FileId = tuple[int, int]


def _walk(folder: str, rel: str = "") -> Iterator[tuple[str, str, FileId | None]]:
    """Replayable files under folder, recursively, in name order (folders and files
    sorted together, like a sorted list of paths); hidden names are skipped. Each with
    its path relative to the folder first walked (`rel` is the prefix so far: the same
    as os.path.relpath, without its per-path system calls) and its (device, inode), read
    from the directory listing (no extra system call). A Bulk Data export inside the
    folder comes as one item with no file id (its files are not read one by one)."""
    from cds.replay.export import export_folder

    try:
        device = os.stat(folder).st_dev
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        if entry.is_dir():
            if export_folder(entry.path) is not None:
                yield entry.path, rel + name, None
                continue
            yield from _walk(entry.path, f"{rel}{name}/")
        elif _is_replayable(name):
            yield entry.path, rel + name, (device, entry.inode())


def _file_id(path: str) -> FileId:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _glob_base(pattern: str) -> str:
    """The leading part of a glob pattern without wildcards (the folder it starts in)."""
    parts = pattern.split(os.sep)
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) if fixed else "."


def _relative_key(path: str, base: str) -> str:
    rel = os.path.relpath(path, base)
    return rel.replace(os.sep, "/")


def _file_sources(path: str, key: str) -> Iterator[Source]:
    if not is_ndjson(path):
        yield Source(name=path, key=key, path=path)
        return
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 (closed below, lines are lazy)
    except OSError as exc:
        yield Source(name=path, key=key, error=f"cannot open NDJSON file: {exc.strerror}")
        return
    with handle:
        number = 0
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield Source(name=f"{path}#L{number}", key=f"{key}#L{number}", text=line)
        except (OSError, UnicodeDecodeError) as exc:
            where = f"{path}#L{number + 1}"
            yield Source(
                name=where,
                key=f"{key}#L{number + 1}",
                error=f"cannot read NDJSON line {number + 1}: {exc}",
            )


#: Groups an export (folder, golden-key prefix or None) into its inputs: by default
#: `cds.replay.export.export_sources` here; an engine's pool may give its own
#: (`DaskPool.group_export` runs the same grouping as tasks on the cluster).
GroupExport = Callable[[str, "str | None"], Iterator[Source]]


def discover(arguments: Iterable[str], group: GroupExport | None = None) -> Iterator[Source]:
    """Every input named by the arguments, in argument order, each file once.

    A Bulk Data export (a folder or its manifest.json, see `cds.replay.export`) gives
    one input per patient, grouped by `group`."""
    from cds.replay.export import export_folder, export_sources

    grouping = group or export_sources

    seen: set[FileId] = set()
    exports: set[str] = set()

    def first_time(file_id: FileId) -> bool:
        if file_id in seen:
            return False
        seen.add(file_id)
        return True

    def export_once(folder: str, key: str | None = None) -> Iterator[Source]:
        real = os.path.realpath(folder)
        if real not in exports:  # an export named twice (folder and manifest) is read once
            exports.add(real)
            yield from grouping(folder, key)

    for argument in arguments:
        if glob.has_magic(argument):
            base = _glob_base(argument)
            matched = False
            for match in sorted(glob.glob(argument, recursive=True)):
                if os.path.isdir(match):
                    prefix = _relative_key(match, base)
                    prefix = "" if prefix == "." else prefix + "/"
                    for path, rel, file_id in _walk(match):
                        matched = True
                        if file_id is None:
                            yield from export_once(path, prefix + rel)
                        elif first_time(file_id):
                            yield from _file_sources(path, prefix + rel)
                elif os.path.isfile(match):
                    matched = True
                    if first_time(_file_id(match)):
                        yield from _file_sources(match, _relative_key(match, base))
            if not matched:
                yield Source(
                    name=argument,
                    key=os.path.basename(argument),
                    error="no file matches this pattern",
                )
        elif (folder := export_folder(argument)) is not None:
            yield from export_once(folder)
        elif os.path.isdir(argument):
            for path, rel, file_id in _walk(argument):
                if file_id is None:
                    yield from export_once(path, rel)
                elif first_time(file_id):
                    yield from _file_sources(path, rel)
        elif os.path.exists(argument):
            if first_time(_file_id(argument)):
                yield from _file_sources(argument, os.path.basename(argument))
        else:
            yield Source(
                name=argument,
                key=os.path.basename(argument),
                error="no such file or folder",
            )
