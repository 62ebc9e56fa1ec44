"""`cds replay` end to end: every input kind, formats, goldens, exit codes, workers, crashes.

In-process runs use typer's CliRunner with `--workers 0`; runs where real processes
matter (worker pools, determinism across worker counts, a crashing worker) start `cds`
as a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cds.cli import app

FIXTURES = Path(__file__).parent.parent / "fixtures" / "replay"
AS_OF = "2026-11-23"
CDS = str(Path(sys.executable).parent / "cds")


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    """A copy of the fixture cases, so relative names are short and stable."""
    target = tmp_path / "cases"
    shutil.copytree(FIXTURES / "cases", target)
    return target


@pytest.fixture(autouse=True)
def _fast(shared_evaluator: Any) -> None:
    """Every in-process run here reuses one Evaluator for the bundled rules."""


def invoke(*args: str, cwd: Path | None = None) -> Any:
    runner = CliRunner()
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(app, ["replay", *args, "--as-of", AS_OF], catch_exceptions=False)
    finally:
        os.chdir(old)


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def topics(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        card["source"]["topic"]["code"]: card["extension"]["org.osteohooks"]
        for card in record["cards"]
    }


EXPECTED_NAMES = [
    "cases/bad-unit.json",
    "cases/bulk.ndjson#L1",
    "cases/bulk.ndjson#L3",
    "cases/family.json#Patient/r-mother",
    "cases/family.json#Patient/r-son",
    "cases/order-bundle.json",
    "cases/requests/order-select.json",
    "cases/spine/normal.json",
    "cases/spine/osteoporosis.json",
]


def test_every_input_kind_in_a_folder_gives_one_ndjson_line_each_in_order(cases: Path) -> None:
    result = invoke("cases", "--format", "ndjson", "--workers", "0", cwd=cases.parent)
    assert result.exit_code == 0, result.output
    lines = records(result.stdout)
    assert [r["input"] for r in lines] == EXPECTED_NAMES
    assert all(list(r) == ["input", "cards", "outcome"] for r in lines)
    by_name = {r["input"]: r for r in lines}

    osteo = topics(by_name["cases/spine/osteoporosis.json"])
    assert osteo["bmd-classification"]["category"] == "osteoporosis"
    assert osteo["bmd-classification"]["value"] == -2.7
    assert by_name["cases/spine/osteoporosis.json"]["outcome"] is None
    assert topics(by_name["cases/spine/normal.json"])["bmd-classification"]["category"] == "normal"

    # NDJSON lines and per-patient splitting
    assert topics(by_name["cases/bulk.ndjson#L1"])["bmd-classification"]["category"] == (
        "osteoporosis"
    )
    assert (
        topics(by_name["cases/family.json#Patient/r-mother"])["bmd-classification"]["value"] == -2.9
    )
    assert (
        topics(by_name["cases/family.json#Patient/r-son"])["bmd-classification"]["scoreType"] == "Z"
    )

    # a data error is not a failure: the cards are computed from the rest
    bad = by_name["cases/bad-unit.json"]
    assert topics(bad)["bmd-classification"]["value"] == -1.7
    issues = bad["outcome"]["issue"]
    assert any(i["severity"] == "error" and "r-unit-bmd" in json.dumps(i) for i in issues), issues

    # the request file brings its own hook (order-select): the draft DXA is too soon
    timing = topics(by_name["cases/requests/order-select.json"])["dxa-order-timing"]
    assert timing["tooSoon"] is True
    # the same data as a Bundle under patient-view has no order to judge
    assert "dxa-order-timing" not in topics(by_name["cases/order-bundle.json"])


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_bundle_with_order_hook_judges_its_draft_orders(hook: str) -> None:
    path = FIXTURES / "cases" / "order-bundle.json"
    result = invoke(str(path), "--hook", hook, "--format", "ndjson", "--workers", "0")
    assert result.exit_code == 0, result.output
    (line,) = records(result.stdout)
    assert topics(line)["dxa-order-timing"]["tooSoon"] is True


def test_glob_and_file_arguments(cases: Path) -> None:
    result = invoke(
        "cases/spine/*.json",
        "cases/bulk.ndjson",
        "--format",
        "ndjson",
        "--workers",
        "0",
        cwd=cases.parent,
    )
    assert result.exit_code == 0, result.output
    assert [r["input"] for r in records(result.stdout)] == [
        "cases/spine/normal.json",
        "cases/spine/osteoporosis.json",
        "cases/bulk.ndjson#L1",
        "cases/bulk.ndjson#L3",
    ]
    recursive = invoke("cases/**/o*.json", "--format", "ndjson", "--workers", "0", cwd=cases.parent)
    assert [r["input"] for r in records(recursive.stdout)] == [
        "cases/order-bundle.json",
        "cases/requests/order-select.json",
        "cases/spine/osteoporosis.json",
    ]


def test_unreadable_inputs_fail_the_run_but_not_the_others(tmp_path: Path) -> None:
    broken = FIXTURES / "broken"
    good = FIXTURES / "cases" / "spine" / "normal.json"
    result = invoke(
        str(broken),
        str(good),
        str(tmp_path / "missing.json"),
        "--format",
        "ndjson",
        "--workers",
        "0",
    )
    assert result.exit_code == 1
    lines = records(result.stdout)
    assert [r["input"] for r in lines] == [
        str(broken / "array.json"),
        str(broken / "no-patient.json"),
        str(broken / "not-json.json"),
        str(good),
        str(tmp_path / "missing.json"),
    ]
    for line in (lines[0], lines[1], lines[2], lines[4]):
        assert line["cards"] == []
        assert line["outcome"]["resourceType"] == "OperationOutcome"
        assert line["outcome"]["issue"][-1]["severity"] in ("error", "fatal")
    assert "not valid JSON" in lines[2]["outcome"]["issue"][0]["diagnostics"]
    assert lines[1]["outcome"]["issue"][-1]["severity"] == "fatal"
    assert lines[3]["cards"]
    assert lines[3]["outcome"] is None
    assert result.stderr.startswith("5 inputs: 1 evaluated, 4 unreadable, 0 failed; ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as-of", "23/11/2026"], "is not an ISO date"),
        (["--update-expect"], "--update-expect needs --expect DIR"),
        (["--rules", "/nonexistent/rules"], "does not exist"),
        (["--format", "xml"], "xml"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["replay", str(FIXTURES / "cases"), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_text_report_and_out_file(cases: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.txt"
    result = invoke("cases/spine", "--out", str(out), "--workers", "0", cwd=cases.parent)
    assert result.exit_code == 0
    assert result.stdout == ""
    text = out.read_text()
    assert text.startswith("cases/spine/normal.json\n  info     bmd-classification ")
    assert "\ncases/spine/osteoporosis.json\n  warning  bmd-classification " in text
    assert "\n\n2 inputs: 2 evaluated, 0 unreadable, 0 failed; " in text


def test_update_expect_then_expect_round_trip_and_diff(cases: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden"
    written = invoke(
        "cases", "--expect", str(golden), "--update-expect", "--workers", "0", cwd=cases.parent
    )
    assert written.exit_code == 0, written.output
    files = sorted(str(p.relative_to(golden)) for p in golden.rglob("*.json"))
    assert files == sorted(
        [
            "bad-unit.json.json",
            "bulk.ndjson#L1.json",
            "bulk.ndjson#L3.json",
            "family.json#Patient-r-mother.json",
            "family.json#Patient-r-son.json",
            "order-bundle.json.json",
            "requests/order-select.json.json",
            "spine/normal.json.json",
            "spine/osteoporosis.json.json",
        ]
    )
    text = (golden / "spine" / "osteoporosis.json.json").read_text()
    assert text.endswith("}\n")
    document = json.loads(text)
    assert document["input"] == "spine/osteoporosis.json"
    assert text == json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert "uuid" not in text

    same = invoke("cases", "--expect", str(golden), "--workers", "0", cwd=cases.parent)
    assert same.exit_code == 0, same.output
    assert "golden: 9 matched, 0 differed" in same.stdout

    # an intended rule change, seen as a golden difference
    card = next(
        c for c in document["cards"] if c["source"]["topic"]["code"] == "bmd-classification"
    )
    card["extension"]["org.osteohooks"]["category"] = "low-bone-mass"
    (golden / "spine" / "osteoporosis.json.json").write_text(json.dumps(document))
    differs = invoke("cases", "--expect", str(golden), "--workers", "0", cwd=cases.parent)
    assert differs.exit_code == 1
    assert ("cases/spine/osteoporosis.json\n  warning  bmd-classification ") in differs.stdout
    golden_file = golden / "spine" / "osteoporosis.json.json"
    assert (
        f"  cases/spine/osteoporosis.json: differs from {golden_file}\n"
        '    bmd-classification: extension["org.osteohooks"].category: expected "low-bone-mass", '
        'got "osteoporosis"\n'
    ) in differs.stdout
    assert "golden: 8 matched, 1 differed" in differs.stdout


def test_junit_report_parses_and_marks_differences_and_errors(cases: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden"
    invoke(
        "cases/spine",
        "--expect",
        str(golden),
        "--update-expect",
        "--workers",
        "0",
        cwd=cases.parent,
    )
    (golden / "normal.json.json").write_text('{"cards": [], "outcome": null}\n')
    shutil.copy(FIXTURES / "broken" / "array.json", cases / "spine" / "zz-array.json")
    out = tmp_path / "junit.xml"
    result = invoke(
        "cases/spine",
        "--expect",
        str(golden),
        "--format",
        "junit",
        "--out",
        str(out),
        "--workers",
        "0",
        cwd=cases.parent,
    )
    assert result.exit_code == 1
    root = ET.parse(out).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases_xml = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases_xml) == {
        "cases/spine/normal.json",
        "cases/spine/osteoporosis.json",
        "cases/spine/zz-array.json",
    }
    failure = cases_xml["cases/spine/normal.json"].find("failure")
    assert failure is not None
    assert "bmd-classification: expected no card, got a card" in (failure.text or "")
    assert cases_xml["cases/spine/osteoporosis.json"].find("failure") is None
    error = cases_xml["cases/spine/zz-array.json"].find("error")
    assert error is not None
    assert error.get("type") == "unreadable"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["as-of"] == AS_OF


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CDS, "replay", *args, "--as-of", AS_OF, "--format", "ndjson"],
        capture_output=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=240,
        check=False,
    )


@pytest.mark.subprocess
def test_output_is_byte_identical_across_worker_counts_and_reruns(cases: Path) -> None:
    in_process = invoke("cases", "--format", "ndjson", "--workers", "0", cwd=cases.parent)
    runs = [_run("cases", "--workers", str(n), cwd=cases.parent) for n in (1, 4)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert runs[0].stdout == runs[1].stdout == in_process.stdout.encode()
    assert len(runs[0].stdout.splitlines()) == len(EXPECTED_NAMES)
    uuids = [c["uuid"] for r in records(runs[0].stdout.decode()) for c in r["cards"]]
    assert len(uuids) == len(set(uuids)) > 0


@pytest.mark.subprocess
def test_a_worker_crash_fails_that_input_only_and_the_run_goes_on(cases: Path) -> None:
    victim = "cases/family.json#Patient/r-mother"
    normal = invoke("cases", "--format", "ndjson", "--workers", "0", cwd=cases.parent)
    crashed = _run(
        "cases", "--workers", "2", cwd=cases.parent, env={"OSTEOHOOKS_REPLAY_TEST_CRASH": victim}
    )
    assert crashed.returncode == 1
    before = records(normal.stdout)
    after = records(crashed.stdout.decode())
    assert [r["input"] for r in after] == [r["input"] for r in before]
    for old, new in zip(before, after, strict=True):
        if new["input"] == victim:
            assert new["cards"] == []
            diagnostics = new["outcome"]["issue"][0]["diagnostics"]
            assert diagnostics.startswith(
                f"{victim}: the worker process evaluating this input died"
            )
        else:
            assert new == old
    # the other patient of the same Bundle still has its own result
    assert any(r["input"] == "cases/family.json#Patient/r-son" and r["cards"] for r in after)
    assert "1 failed" in crashed.stderr.decode()


def test_two_inputs_with_one_golden_key_are_a_difference_not_an_overwrite(tmp_path: Path) -> None:
    one, two = tmp_path / "a", tmp_path / "b"
    for folder in (one, two):
        folder.mkdir()
        shutil.copy(FIXTURES / "cases" / "spine" / "normal.json", folder / "same.json")
    golden = tmp_path / "golden"
    args = [str(one / "same.json"), str(two / "same.json"), "--expect", str(golden)]
    result = invoke(*args, "--update-expect", "--workers", "0")
    assert result.exit_code == 1
    assert (
        f"  {two / 'same.json'}: its golden file {golden / 'same.json.json'} is also the one of "
        f"{one / 'same.json'}; replay the folder that holds both"
    ) in result.stdout
    assert [p.name for p in golden.iterdir()] == ["same.json.json"]
