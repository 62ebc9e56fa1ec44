"""Report formats: NDJSON (one object per input), text (for people), JUnit XML (for CI);
Parquet (for analysts) is `cds.replay.parquet`.

Every writer streams: one input at a time, nothing kept but counters (JUnit needs the
totals in its first element, so test cases go to a temporary file first).
"""

from __future__ import annotations

import json
import re
import tempfile
from typing import Any, Protocol
from xml.sax.saxutils import escape, quoteattr

from cds.replay.golden import GoldenCheck
from cds.replay.summary import Summary
from cds.replay.worker import InputResult
from cds.replay.worker import card_topic as _topic

FORMATS = ("text", "ndjson", "junit", "parquet")  # parquet: cds.replay.parquet


class Sink(Protocol):
    """Where a report goes: a text file, stdout, or anything with write and flush."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class Writer(Protocol):
    def write(self, result: InputResult, golden: GoldenCheck | None) -> None: ...

    def close(self, summary: Summary) -> None: ...


def ndjson_line(result: InputResult) -> str:
    """The contract's line: {"input", "cards", "outcome"} in that order."""
    name = json.dumps(result.name, ensure_ascii=False)
    return f'{{"input":{name},"cards":{result.cards_json},"outcome":{result.outcome_json}}}\n'


class NdjsonWriter:
    def __init__(self, stream: Sink) -> None:
        self.stream = stream

    def write(self, result: InputResult, _golden: GoldenCheck | None) -> None:
        self.stream.write(ndjson_line(result))

    def close(self, _summary: Summary) -> None:
        self.stream.flush()


def _issues(outcome: dict[str, Any] | None) -> list[dict[str, Any]]:
    issues = (outcome or {}).get("issue")
    return [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []


def issue_text(issue: dict[str, Any]) -> str:
    """One OperationOutcome issue in words: diagnostics and where."""
    text = str(
        issue.get("diagnostics") or issue.get("details", {}).get("text") or issue.get("code")
    )
    where = issue.get("expression") or issue.get("location")
    if isinstance(where, list) and where:
        text += f" [{', '.join(str(w) for w in where)}]"
    return text


def card_line(card: dict[str, Any]) -> str:
    return f"{card.get('indicator', '?'):<8} {_topic(card):<18} {card.get('summary', '')}"


class TextWriter:
    """Readable per input: each card's indicator, topic and summary; issues; diffs."""

    def __init__(self, stream: Sink, *, closing_summary: bool = True) -> None:
        self.stream = stream
        self.closing_summary = closing_summary

    def write(self, result: InputResult, golden: GoldenCheck | None) -> None:
        lines = [result.name]
        if result.status != "ok":
            label = "UNREADABLE" if result.status == "unreadable" else "FAILED"
            lines.extend(f"  {label}: {issue_text(i)}" for i in _issues(result.outcome))
        else:
            if not result.cards:
                lines.append("  no cards (nothing to say)")
            lines.extend(f"  {card_line(card)}" for card in result.cards)
            for issue in _issues(result.outcome):
                severity = issue.get("severity", "error")
                label = "data error" if severity in ("error", "fatal") else str(severity)
                lines.append(f"  {label}: {issue_text(issue)}")
        if golden is not None and golden.message is not None:
            lines.extend("  " + line for line in golden.message.splitlines())
        self.stream.write("\n".join(lines) + "\n")

    def close(self, summary: Summary) -> None:
        if self.closing_summary:
            self.stream.write(f"\n{summary.line()}\n")
        self.stream.flush()


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    return escape(_XML_INVALID.sub("?", text))


def _attr(text: str) -> str:
    return quoteattr(_XML_INVALID.sub("?", text))


class JunitWriter:
    """JUnit XML: one testcase per input. A golden difference is a <failure>, an input
    that could not be read or evaluated an <error>; cards and data errors go to
    <system-out>. `classname` is `replay` plus the input's folder (relative to the
    argument it came from, dotted) so CI tools group inputs by folder; `name` is the
    full input name."""

    def __init__(self, stream: Sink, properties: dict[str, str]) -> None:
        self.stream = stream
        self.properties = properties
        self.cases = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self.failures = 0
        self.errors = 0

    def write(self, result: InputResult, golden: GoldenCheck | None) -> None:
        folder = result.key.split("#", 1)[0].rpartition("/")[0]
        classname = "replay" + ("." + folder.replace("/", ".") if folder else "")
        head = (
            f"    <testcase classname={_attr(classname)} name={_attr(result.name)} "
            f'time="{result.seconds:.6f}">\n'
        )
        body: list[str] = []
        if result.status != "ok":
            self.errors += 1
            kind = "unreadable" if result.status == "unreadable" else "failed"
            text = "\n".join(issue_text(i) for i in _issues(result.outcome))
            first = text.splitlines()[0] if text else kind
            body.append(
                f"      <error type={_attr(kind)} message={_attr(first)}>{_xml(text)}</error>\n"
            )
        elif golden is not None and golden.message is not None:
            self.failures += 1
            body.append(
                '      <failure type="golden-diff" message="result differs from the golden file">'
                f"{_xml(golden.message)}</failure>\n"
            )
        out = [card_line(card) for card in result.cards]
        if result.status == "ok":
            out.extend(f"data error: {issue_text(i)}" for i in _issues(result.outcome))
        if out:
            body.append(f"      <system-out>{_xml(chr(10).join(out))}</system-out>\n")
        self.cases.write(head + "".join(body) + "    </testcase>\n")

    def close(self, summary: Summary) -> None:
        counts = (
            f'tests="{summary.inputs}" failures="{self.failures}" errors="{self.errors}" '
            f'skipped="0" time="{summary.seconds:.3f}"'
        )
        self.stream.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        self.stream.write(f'<testsuites name="cds replay" {counts}>\n')
        self.stream.write(f'  <testsuite name="cds replay" {counts}>\n')
        if self.properties:
            self.stream.write("    <properties>\n")
            for name, value in self.properties.items():
                self.stream.write(f"      <property name={_attr(name)} value={_attr(value)}/>\n")
            self.stream.write("    </properties>\n")
        self.cases.seek(0)
        while chunk := self.cases.read(1 << 16):
            self.stream.write(chunk)
        self.cases.close()
        self.stream.write("  </testsuite>\n</testsuites>\n")
        self.stream.flush()
