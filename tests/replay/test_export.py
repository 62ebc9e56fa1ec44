"""`cds replay EXPORT`: a Bulk Data export gives exactly the cards of the same patients as
Bundles, one input per patient; broken lines are reported and counted, never evaluated."""

from __future__ import annotations

import copy
import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cds.cli import app
from cds.replay.export import export_folder
from cds.replay.golden import normalise
from tests import fhir_factory as f

AS_OF = "2026-11-23"
RICH = Path(__file__).parent.parent / "fixtures" / "fhir" / "rich-patient.bundle.json"
MEDICATION = {
    "resourceType": "Medication",
    "id": "med-zol",
    "code": {"coding": [{"system": f.RXNORM, "code": "77655"}], "text": "zoledronic acid"},
}


@pytest.fixture(autouse=True)
def _fast(shared_evaluator: Any) -> None:
    """In-process runs reuse one Evaluator for the bundled rules."""


def _rich() -> list[dict[str, Any]]:
    document = json.loads(RICH.read_text(encoding="utf-8"))
    return [entry["resource"] for entry in document["entry"]]


def patients() -> dict[str, list[dict[str, Any]]]:
    """A few patients, each the resources of its Bundle: a rich history with a Device,
    one sharing that Device, one whose therapy names a Medication by reference, one with
    a draft DXA order, and one with no DXA at all."""
    rich = _rich()
    device = next(r for r in rich if r["resourceType"] == "Device")
    statement = f.med_statement(subject="p3", id="ms-ref")
    del statement["medicationCodeableConcept"]
    statement["medicationReference"] = {"reference": "Medication/med-zol"}
    return {
        "p1": rich,
        "p2": [
            f.patient("p2", birth_date="1948-07-02"),
            device,
            f.lumbar_t(-2.7, subject="p2", device=device["id"], date="2025-02-01"),
            f.hip_t(-2.1, subject="p2", device=device["id"], date="2025-02-01"),
        ],
        "p3": [
            f.patient("p3", birth_date="1950-01-15"),
            f.lumbar_t(-1.6, subject="p3", date="2024-03-03"),
            statement,
            MEDICATION,
        ],
        "p4": [
            f.patient("p4", birth_date="1952-05-05"),
            f.neck_t(-2.6, subject="p4", date="2023-06-01"),
            f.draft_dxa(id="order-p4", subject="p4"),
        ],
        "p5": [f.patient("p5", birth_date="1956-09-09")],
    }


def write_export(folder: Path, groups: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The patients as a Bulk Data export: one type per file, Observations split in two
    (the second gzipped), shared resources once, with a manifest. Returns the file names."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for resources in groups.values():
        for resource in resources:
            ref = f"{resource['resourceType']}/{resource.get('id')}"
            if ref in seen:
                continue
            seen.add(ref)
            by_type.setdefault(resource["resourceType"], []).append(resource)
    folder.mkdir(parents=True)
    names: list[str] = []
    for rtype, resources in sorted(by_type.items()):
        lines = [json.dumps(r) + "\n" for r in resources]
        if rtype == "Observation":
            half = len(lines) // 2
            (folder / "Observation.000.ndjson").write_text("".join(lines[:half]))
            with gzip.open(folder / "Observation.001.ndjson.gz", "wt") as handle:
                handle.write("".join(lines[half:]))
            names += ["Observation.000.ndjson", "Observation.001.ndjson.gz"]
        else:
            (folder / f"{rtype}.ndjson").write_text("".join(lines))
            names.append(f"{rtype}.ndjson")
    manifest = {
        "transactionTime": "2026-11-20T00:00:00Z",
        "request": "https://ehr.example/fhir/$export",
        "requiresAccessToken": True,
        "output": [
            {"type": n.split(".")[0], "url": f"https://ehr.example/files/{n}"} for n in names
        ],
        "error": [],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return names


def replay(*args: str, cwd: Path) -> tuple[int, list[dict[str, Any]]]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(
            app,
            ["replay", *args, "--as-of", AS_OF, "--format", "ndjson", "--workers", "0"],
            catch_exceptions=False,
        )
    finally:
        os.chdir(old)
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()]


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """Cards without uuids (they are seeded by the input name), and the outcome."""
    return normalise("", record["cards"], record["outcome"])


@pytest.mark.parametrize("hook", ["patient-view", "order-sign"])
def test_an_export_gives_exactly_the_cards_of_the_same_patients_as_bundles(
    tmp_path: Path, hook: str
) -> None:
    groups = patients()
    write_export(tmp_path / "export", groups)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    for pid, resources in groups.items():
        (bundles / f"{pid}.json").write_text(json.dumps(f.bundle(*copy.deepcopy(resources))))

    _, exported = replay("export", "--hook", hook, cwd=tmp_path)
    _, expected = replay("bundles", "--hook", hook, cwd=tmp_path)

    assert [r["input"] for r in exported] == [f"export#Patient/{pid}" for pid in sorted(groups)]
    assert [r["input"] for r in expected] == [f"bundles/{pid}.json" for pid in sorted(groups)]
    for got, want in zip(exported, expected, strict=True):
        assert comparable(got) == comparable(want), got["input"]
    assert any(r["cards"] for r in exported)


def test_the_manifest_itself_and_a_folder_without_one_are_read_as_the_export(
    tmp_path: Path,
) -> None:
    groups = patients()
    write_export(tmp_path / "export", groups)
    _, by_folder = replay("export", cwd=tmp_path)
    _, by_manifest = replay("export/manifest.json", cwd=tmp_path)
    (tmp_path / "export" / "manifest.json").unlink()
    _, bare = replay("export", cwd=tmp_path)
    assert by_manifest == by_folder
    assert [comparable(r) for r in bare] == [comparable(r) for r in by_folder]
    assert export_folder(str(tmp_path / "export")) == str(tmp_path / "export")


def test_a_broken_line_is_reported_with_file_and_line_and_counted_never_evaluated(
    tmp_path: Path,
) -> None:
    groups = patients()
    folder = tmp_path / "export"
    write_export(folder, groups)
    _, clean = replay("export", cwd=tmp_path)
    with open(folder / "Observation.000.ndjson", "a", encoding="utf-8") as handle:
        handle.write('{"resourceType": "Observation", "status": \n')  # line cut short
        orphan = f.lumbar_t(-3.0, subject=None, id="orphan")
        orphan["subject"] = {"reference": "Group/g1"}
        handle.write(json.dumps(orphan) + "\n")
    lines = (folder / "Observation.000.ndjson").read_text().splitlines()

    code, records = replay("export", cwd=tmp_path)
    errors = [r for r in records if "#L" in r["input"]]
    assert [r["input"] for r in errors] == [
        f"export/Observation.000.ndjson#L{len(lines) - 1}",
        f"export/Observation.000.ndjson#L{len(lines)}",
    ]
    for record in errors:
        assert record["cards"] == []
        diagnostics = record["outcome"]["issue"][0]["diagnostics"]
        assert diagnostics.startswith(record["input"] + ": line ")
    assert "not valid JSON" in errors[0]["outcome"]["issue"][0]["diagnostics"]
    assert "names no Patient" in errors[1]["outcome"]["issue"][0]["diagnostics"]
    # The patients are exactly those of the clean export, with the same answers.
    assert [r for r in records if "#L" not in r["input"]] == clean
    assert code == 1  # unreadable inputs make the run fail


def test_an_id_holding_a_lone_surrogate_is_an_error_line_not_the_end_of_the_run(
    tmp_path: Path,
) -> None:
    """SQLite stores UTF-8: a `"\\ud800"` escape in a patient id (or in any id grouping
    stores) stopped the grouping of the whole export. Now it is that line's error."""
    groups = patients()
    folder = tmp_path / "export"
    write_export(folder, groups)
    _, clean = replay("export", cwd=tmp_path)
    with open(folder / "Condition.ndjson", "a", encoding="utf-8") as handle:
        handle.write('{"resourceType": "Patient", "id": "p\\ud800"}\n')
        handle.write('{"resourceType": "Device", "id": "d\\udc00"}\n')
        handle.write(
            '{"resourceType": "Condition", "subject": {"reference": "Patient/x\\ud800"}}\n'
        )
        handle.write('{"resourceType": "Cond\\ud800", "subject": {"reference": "Group/g"}}\n')
    code, records = replay("export", cwd=tmp_path)
    errors = [r for r in records if "#L" in r["input"]]
    assert len(errors) == 4
    said = [r["outcome"]["issue"][0]["diagnostics"] for r in errors]
    assert all("lone surrogate" in text for text in said[:3])
    assert "names no Patient" in said[3]
    assert [r for r in records if "#L" not in r["input"]] == clean
    assert code == 1


def test_the_summary_counts_the_broken_lines_as_unreadable(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    write_export(folder, patients())
    with open(folder / "Condition.ndjson", "a", encoding="utf-8") as handle:
        handle.write("not json\n")
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(
            app, ["replay", "export", "--as-of", AS_OF, "--workers", "0"], catch_exceptions=False
        )
    finally:
        os.chdir(old)
    assert "export/Condition.ndjson#L" in result.stdout
    assert "6 inputs" in result.stdout, result.stdout
    assert "1 unreadable" in result.stdout, result.stdout


def test_a_manifest_naming_a_missing_file_is_an_error_for_that_entry(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    names = write_export(folder, patients())
    (folder / names[0]).unlink()
    _, records = replay("export", cwd=tmp_path)
    assert records[0]["input"] == "export/manifest.json#output[0]"
    assert names[0] in records[0]["outcome"]["issue"][0]["diagnostics"]


def test_an_export_inside_a_folder_is_read_as_an_export_beside_other_inputs(
    tmp_path: Path,
) -> None:
    groups = patients()
    data = tmp_path / "data"
    write_export(data / "site-a" / "export", groups)
    (data / "one.json").write_text(json.dumps(f.bundle(*copy.deepcopy(groups["p2"]))))
    _, alone = replay("data/site-a/export", cwd=tmp_path)
    code, mixed = replay("data", "data/site-a/export/manifest.json", cwd=tmp_path)
    assert code == 0
    names = [r["input"] for r in mixed]
    nested = [f"data/site-a/export#Patient/{pid}" for pid in sorted(groups)]
    # no line read as its own patient; the export named twice is read once
    assert names == ["data/one.json", *nested]
    by_name = {r["input"]: comparable(r) for r in mixed}
    for record in alone:
        assert by_name[record["input"]] == comparable(record)
    golden = tmp_path / "golden"
    assert replay("data", "--expect", str(golden), "--update-expect", cwd=tmp_path)[0] == 0
    assert (golden / "site-a" / "export#Patient-p1.json").is_file()


def test_references_at_any_depth_are_joined(tmp_path: Path) -> None:
    """A Practitioner named only inside `performer[].actor` reaches its patient's input."""
    practitioner = {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Roe"}]}
    procedure = f.procedure("22513", subject="p9", id="proc-deep")
    procedure["performer"] = [{"actor": {"reference": "Practitioner/dr1"}}]
    groups = {"p9": [f.patient("p9", birth_date="1950-01-15"), procedure, practitioner]}
    write_export(tmp_path / "export", groups)
    from cds.replay.export import export_sources

    [source] = list(export_sources(str(tmp_path / "export")))
    assert source.text is not None
    bundle = json.loads(source.text)
    types = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert sorted(types) == ["Patient", "Practitioner", "Procedure"]
