"""Report formats: the NDJSON line of the contract, text for people, JUnit parsed back."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from cds.contracts.cards import Card
from cds.contracts.outcome import error_outcome
from cds.replay.formats import JunitWriter, NdjsonWriter, TextWriter, ndjson_line
from cds.replay.golden import check, write_golden
from cds.replay.summary import Summary
from cds.replay.worker import InputResult

CARD: dict[str, Any] = {
    "uuid": "u",
    "summary": "Osteoporosis: T-score -2.7 at the lumbar spine",
    "indicator": "warning",
    "source": {
        "label": "ISCD",
        "topic": {
            "system": "https://osteohooks.org/fhir/CodeSystem/card-topic",
            "code": "bmd-classification",
        },
    },
}
DATA_ERROR = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "value",
            "diagnostics": "Observation/o2: unit 'g/cm3' is not a BMD unit",
            "expression": ["Observation.valueQuantity.unit"],
        }
    ],
}
OK = InputResult.of("cases/a.json", "a.json", [Card.model_validate(CARD)], None, "ok", 0.002)
NESTED = InputResult.of("cases/x/y/b.json#L2", "x/y/b.json#L2", [], None, "ok")
DATA = InputResult.of("cases/b.json", "b.json", [], DATA_ERROR, "ok", 0.001)
BAD = InputResult.of(
    "cases/c.json",
    "c.json",
    [],
    error_outcome("cases/c.json: not valid JSON <&>"),
    "unreadable",
)
CRASHED = InputResult.of(
    "cases/d.json", "d.json", [], error_outcome("cases/d.json: worker died"), "failed"
)


def _summary(*results: InputResult) -> Summary:
    summary = Summary()
    for r in results:
        summary.add(r)
    summary.finish()
    return summary


def test_ndjson_line_has_exactly_input_cards_outcome_in_order() -> None:
    line = ndjson_line(OK)
    assert line.endswith("\n")
    assert line.count("\n") == 1
    record = json.loads(line)
    assert list(record) == ["input", "cards", "outcome"]
    assert record == {"input": "cases/a.json", "cards": [CARD], "outcome": None}
    stream = io.StringIO()
    writer = NdjsonWriter(stream)
    for r in (OK, BAD):
        writer.write(r, None)
    writer.close(_summary(OK, BAD))
    lines = stream.getvalue().splitlines()
    assert [json.loads(x)["input"] for x in lines] == ["cases/a.json", "cases/c.json"]
    assert json.loads(lines[1])["cards"] == []
    assert json.loads(lines[1])["outcome"]["issue"][0]["severity"] == "error"


def test_text_report_per_input_and_closing_summary() -> None:
    stream = io.StringIO()
    writer = TextWriter(stream)
    for r in (OK, DATA, BAD, CRASHED):
        writer.write(r, None)
    summary = _summary(OK, DATA, BAD, CRASHED)
    writer.close(summary)
    text = stream.getvalue()
    body, closing = text.rsplit("\n\n", 1)
    assert body == "\n".join(
        [
            "cases/a.json",
            "  warning  bmd-classification Osteoporosis: T-score -2.7 at the lumbar spine",
            "cases/b.json",
            "  no cards (nothing to say)",
            "  data error: Observation/o2: unit 'g/cm3' is not a BMD unit "
            "[Observation.valueQuantity.unit]",
            "cases/c.json",
            "  UNREADABLE: cases/c.json: not valid JSON <&>",
            "cases/d.json",
            "  FAILED: cases/d.json: worker died",
        ]
    )
    assert closing.startswith(
        "4 inputs: 2 evaluated, 1 unreadable, 1 failed; 1 cards (bmd-classification 1); "
        "1 data errors in 1 inputs; "
    )
    assert closing.endswith(" inputs/s\n")


def test_junit_is_parsed_back_with_failures_errors_and_output(tmp_path: Path) -> None:
    write_golden(tmp_path, OK)
    write_golden(tmp_path, InputResult.of("x", "b.json", [Card.model_validate(CARD)], None, "ok"))
    stream = io.StringIO()
    writer = JunitWriter(stream, {"as-of": "2026-11-23"})
    checks = {}
    for r in (OK, DATA, BAD, CRASHED):
        checks[r.name] = check(tmp_path, r)
        writer.write(r, checks[r.name])
    writer.close(_summary(OK, DATA, BAD, CRASHED))

    root = ET.fromstring(stream.getvalue())
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("tests") == "4"
    assert suite.get("failures") == "1"
    assert suite.get("errors") == "2"
    prop = suite.find("properties/property")
    assert prop is not None
    assert prop.attrib == {"name": "as-of", "value": "2026-11-23"}
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.name for r in (OK, DATA, BAD, CRASHED)]
    assert cases[0].get("classname") == "replay"
    assert cases[0].find("failure") is None
    assert cases[0].find("error") is None
    assert "bmd-classification" in (cases[0].findtext("system-out") or "")
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("type") == "golden-diff"
    assert failure.text == checks["cases/b.json"].message
    assert "data error: Observation/o2" in (cases[1].findtext("system-out") or "")
    error = cases[2].find("error")
    assert error is not None
    assert error.get("type") == "unreadable"
    assert error.get("message") == "cases/c.json: not valid JSON <&>"
    crash = cases[3].find("error")
    assert crash is not None
    assert crash.get("type") == "failed"
    assert float(cases[0].get("time") or "nan") == 0.002


def test_junit_classname_is_the_input_folder_dotted() -> None:
    stream = io.StringIO()
    writer = JunitWriter(stream, {})
    writer.write(NESTED, None)
    writer.close(_summary(NESTED))
    (case,) = ET.fromstring(stream.getvalue()).iter("testcase")
    assert case.get("classname") == "replay.x.y"
    assert case.get("name") == "cases/x/y/b.json#L2"


def test_junit_strips_characters_xml_cannot_hold() -> None:
    odd = InputResult.of("cases/\x01odd.json", "odd.json", [], None, "ok")
    stream = io.StringIO()
    writer = JunitWriter(stream, {})
    writer.write(odd, None)
    writer.close(_summary(odd))
    (case,) = ET.fromstring(stream.getvalue()).iter("testcase")
    assert case.get("name") == "cases/?odd.json"
