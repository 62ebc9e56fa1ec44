"""Reading an export file in spans (`cds.replay.export.spans`, what the Dask grouping
scans as tasks of their own), a line that is not UTF-8, the shared resources a partition
keeps, and the `--scratch` folder of the grouping."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cds.replay.export import (
    WHOLE,
    ExportFile,
    ExportGrouper,
    Row,
    Span,
    export_sources,
    scan,
    spans,
)
from tests.replay.test_export import patients, replay, write_export


@pytest.fixture(autouse=True)
def _fast(shared_evaluator: Any) -> None:
    """In-process runs reuse one Evaluator for the bundled rules."""


def _lines_file(path: Path, lines: list[bytes]) -> ExportFile:
    path.write_bytes(b"".join(lines))
    return ExportFile(str(path), str(path))


def _body(n: int, pad: int = 0) -> bytes:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"o{n}",
        "subject": {"reference": "Patient/p"},
    }
    if pad:
        resource["note"] = [{"text": "x" * pad}]
    return json.dumps(resource).encode()


def _without_seq(rows: list[Row]) -> list[tuple[Any, ...]]:
    """Rows as stored, but for `seq` (it orders; it numbers spans apart)."""
    out: list[tuple[Any, ...]] = []
    for row in rows:
        if row[0] == "own":
            out.append((row[0], row[1], row[3], row[4]))
        elif row[0] == "error":
            out.append((row[0], *row[2:]))
        else:
            out.append(row)
    return out


def _by_spans(file: ExportFile, folder: Path, size: int) -> tuple[list[Span], list[Row]]:
    cut = spans(file.path, size)
    rows = [
        row for n, span in enumerate(cut) for row in scan(file, n, str(folder), folder.name, span)
    ]
    return cut, rows


def test_spans_start_at_line_starts_and_give_the_lines_of_the_whole_file(tmp_path: Path) -> None:
    lines = [_body(n, pad=(n * 37) % 300) + (b"\r\n" if n % 5 == 0 else b"\n") for n in range(200)]
    lines[17] = b"{not json\n"
    lines[60] = b"\n"  # a blank line: skipped, but counted
    lines[130] = b'{"resourceType": "Condition", "subject": {"reference": "x"}}\n'
    file = _lines_file(tmp_path / "Observation.ndjson", lines)
    data = Path(file.path).read_bytes()
    whole = list(scan(file, 0, str(tmp_path), tmp_path.name))
    for size in (1, 100, 999, 4096, len(data) // 2):
        cut, rows = _by_spans(file, tmp_path, size)
        assert len(cut) > 1
        starts = [span.start for span in cut]
        assert starts[0] == 0
        assert all(data[start - 1 : start] == b"\n" for start in starts[1:])  # line starts
        assert [span.end for span in cut] == [*starts[1:], None]
        # each span knows the number of its first line
        assert [span.first_line for span in cut] == [data.count(b"\n", 0, s) + 1 for s in starts]
        assert _without_seq(rows) == _without_seq(whole)
        seqs = [row[2] if row[0] == "own" else row[1] for row in rows if row[0] != "shared"]
        assert seqs == sorted(seqs)  # the export's order, across spans
    errors = [row for row in whole if row[0] == "error"]
    assert [row[2].rsplit("#", 1)[1] for row in errors] == ["L18", "L131"]


def test_a_small_file_and_a_gzipped_file_are_one_span(tmp_path: Path) -> None:
    import gzip

    small = _lines_file(tmp_path / "Patient.ndjson", [_body(1) + b"\n"])
    assert spans(small.path, 1 << 20) == [WHOLE]
    packed = tmp_path / "Observation.ndjson.gz"
    with gzip.open(packed, "wb") as handle:
        handle.write(b"".join(_body(n, pad=200) + b"\n" for n in range(500)))
    assert os.path.getsize(packed) > 100
    assert spans(str(packed), 100) == [WHOLE]


def test_a_line_longer_than_the_span_size_is_never_cut(tmp_path: Path) -> None:
    lines = [_body(0) + b"\n", _body(1, pad=5000) + b"\n", _body(2) + b"\n"]
    file = _lines_file(tmp_path / "Observation.ndjson", lines)
    cut, rows = _by_spans(file, tmp_path, 200)
    # the first span runs to the end of the long line that crosses its 200th byte
    assert [(span.first_line, span.start) for span in cut] == [
        (1, 0),
        (3, len(b"".join(lines[:2]))),
    ]
    assert _without_seq(rows) == _without_seq(list(scan(file, 0, str(tmp_path), "x")))


def test_a_line_that_is_not_utf8_is_an_error_of_that_line_and_the_file_reads_on(
    tmp_path: Path,
) -> None:
    """Each line is decoded on its own (as each span is read on its own): an invalid byte
    loses only its line."""
    export = tmp_path / "export"
    write_export(export, patients())
    path = export / "Condition.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(1, b'{"resourceType": "Condition", "id": "\xff"}\n')
    path.write_bytes(b"".join(lines))
    status, records = replay("export", cwd=tmp_path)
    assert status == 1
    broken = [r for r in records if r["input"].startswith("export/Condition.ndjson#")]
    assert [r["input"] for r in broken] == ["export/Condition.ndjson#L2"]
    diagnostics = broken[0]["outcome"]["issue"][0]["diagnostics"]
    assert "line 2: not UTF-8 text" in diagnostics
    # every Condition line after it was still read: the same patients as without it
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    _, clean = replay("export", cwd=tmp_path)
    assert [r for r in records if r not in broken] == clean


@pytest.mark.parametrize("chunk", [2, 10])
def test_a_partition_keeps_only_the_shared_resources_its_patients_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """`referenced_only`: the shared resources no stored patient row references are not
    stored (fewer than CHUNK are: listing the references would cost more); the patients'
    Bundles are the same as with every shared resource."""
    from cds.replay import export as export_module

    monkeypatch.setattr(export_module, "CHUNK", chunk)
    own = [
        ("own", "p1", 1, json.dumps(["Device/d1", "Encounter/e1"]), '{"resourceType":"A"}'),
        ("own", "p2", 2, None, '{"resourceType":"B"}'),
        ("own", "p3", 3, json.dumps(["Medication/m2"]), '{"resourceType":"C"}'),
    ]
    shared = [
        ("shared", ref, json.dumps({"resourceType": ref.split("/")[0], "id": ref.split("/")[1]}))
        for ref in ("Device/d1", "Device/d9", "Medication/m2", "Medication/m3")
    ]

    def grouped(referenced_only: bool, where: Path) -> tuple[list[Any], list[str]]:
        where.mkdir()
        grouper = ExportGrouper(str(tmp_path / "export"), str(where))
        try:
            grouper.add(own)
            grouper.add(shared, referenced_only=referenced_only)
            stored = [ref for (ref,) in grouper.db.execute("SELECT ref FROM shared ORDER BY ref")]
            return list(grouper.patients()), stored
        finally:
            grouper.close()

    every, all_stored = grouped(False, tmp_path / "all")
    only, kept = grouped(True, tmp_path / "some")
    assert only == every
    assert all_stored == ["Device/d1", "Device/d9", "Medication/m2", "Medication/m3"]
    assert kept == (["Device/d1", "Medication/m2"] if chunk <= len(shared) else all_stored)


def test_the_grouping_works_in_the_scratch_folder_and_removes_its_files(tmp_path: Path) -> None:
    export = tmp_path / "export"
    write_export(export, patients())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    inputs = export_sources(str(export), scratch=str(scratch))
    next(inputs)  # grouped: its temporary folder is in the scratch folder meanwhile
    (work,) = scratch.iterdir()
    assert work.name.startswith("osteohooks-export-")
    assert (work / "export.sqlite").is_file()
    rest = list(inputs)
    assert len(rest) == len(patients()) - 1
    assert list(scratch.iterdir()) == []
    assert [s.name for s in export_sources(str(export))][1:] == [s.name for s in rest]


def test_cds_replay_scratch_must_be_an_existing_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cds.cli import app

    export = tmp_path / "export"
    write_export(export, patients())
    result = CliRunner().invoke(
        app, ["replay", str(export), "--as-of", "2026-11-23", "--scratch", str(tmp_path / "no")]
    )
    assert result.exit_code == 2
    said = " ".join(result.stderr.replace("│", " ").split())
    assert "Invalid value for '--scratch'" in said
    assert "does not exist" in said


@pytest.mark.parametrize("command", ["replay", "impact"])
def test_cds_replay_and_impact_group_in_the_scratch_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    from typer.testing import CliRunner

    from cds.cli import app
    from cds.replay import export as export_module

    export = tmp_path / "export"
    write_export(export, patients())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    used: list[str | None] = []
    real = export_module.scratch_folder

    def spy(where: str | None) -> Any:
        used.append(where)
        return real(where)

    monkeypatch.setattr(export_module, "scratch_folder", spy)
    args = [command, str(export), "--as-of", "2026-11-23", "--workers", "0"]
    if command == "impact":
        args += ["--base-rules", str(Path(__file__).parents[2] / "rules")]
    result = CliRunner().invoke(app, [*args, "--scratch", str(scratch)])
    assert result.exit_code == 0, result.output
    assert used
    assert set(used) == {str(scratch)}
    assert list(scratch.iterdir()) == []
