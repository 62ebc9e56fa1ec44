"""`cds report`: the page API (cds.replay.report) and the population counters
(cds.replay.population) over the NDJSON and the Parquet results of one replay run."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cds.cli import app
from cds.replay.population import (
    ReportError,
    Tally,
    population_page,
    read_results,
    tally,
)
from cds.replay.report import BarChart, Page, Table

#: An attribute that would make a browser fetch something from the network.
REMOTE = re.compile(
    r"""\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.I
)


def _charts(page_html: str) -> list[tuple[str, int, int]]:
    """(chart id, data-marks, bars with a mark id) of every chart figure."""
    out = []
    for match in re.finditer(r'<figure class="chart" id="(c\d+)" data-marks="(\d+)">', page_html):
        chart_id = match.group(1)
        marks = len(re.findall(rf'id="{chart_id}-mark-\d+"', page_html))
        out.append((chart_id, int(match.group(2)), marks))
    return out


def test_page_renders_sections_charts_and_tables_inline() -> None:
    page = Page("Impact <of> a change", subtitle="rules & more")
    page.add_fact("inputs", 3)
    page.add_section(
        "Cards",
        BarChart(["a", "b<script>"], {"info": [2, 1], "warning": [0, 4]}, stacked=True),
        note="one per topic",
    )
    page.add_section("Table", Table(["input", "n"], [["<b>x</b>", 3]], numeric=[1]))
    page.add_section("Empty", BarChart([], {}))
    text = page.render()
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>Impact &lt;of&gt; a change</title>" in text
    assert "<script" not in text  # labels and cells are escaped, the page has no script
    assert "&lt;b&gt;x&lt;/b&gt;" in text
    assert re.findall(r'data-title="([^"]+)"', text) == ["Cards", "Table", "Empty"]
    assert _charts(text) == [("c1", 3, 3)]  # the zero bar is no mark
    assert "(nothing to show)" in text
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids)), "ids shared between charts"
    assert not REMOTE.search(text)
    assert page.render() == text  # deterministic


def test_ids_of_two_charts_never_collide() -> None:
    page = Page("two")
    page.add_section("one", BarChart(["x"], {"n": [1]}), BarChart(["x"], {"n": [1]}))
    text = page.render()
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids))
    for ref in re.findall(r"url\(#([^)]+)\)", text):
        assert ref in ids, f"a reference to an id that is not there: {ref}"
    assert [c[0] for c in _charts(text)] == ["c1", "c2"]


def test_a_series_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="series 'n' has 1 values for 2 labels"):
        BarChart(["a", "b"], {"n": [1]})


def _records(ndjson: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ndjson.read_text(encoding="utf-8").splitlines()]


def _payloads(record: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    return [
        card["extension"]["org.osteohooks"]
        for card in record["cards"]
        if card["source"]["topic"]["code"] == topic
    ]


@pytest.fixture(scope="module")
def counts(replay_results: tuple[Path, Path]) -> tuple[Tally, Tally, list[dict[str, Any]]]:
    ndjson, folder = replay_results
    return tally(read_results(ndjson)), tally(read_results(folder)), _records(ndjson)


def test_counts_from_ndjson_are_the_cards_of_the_run(
    counts: tuple[Tally, Tally, list[dict[str, Any]]],
) -> None:
    from_ndjson, _, records = counts
    assert from_ndjson.inputs == len(records)
    assert from_ndjson.cards == sum(len(r["cards"]) for r in records)
    topics = Counter(
        (card["source"]["topic"]["code"], card["indicator"]) for r in records for card in r["cards"]
    )
    assert from_ndjson.topic_indicator == topics
    classified = [p for r in records for p in _payloads(r, "bmd-classification")]
    assert sum(from_ndjson.classification.values()) == len(classified) > 50
    osteoporosis = sum(1 for p in classified if p["category"] == "osteoporosis")
    assert sum(n for (c, _), n in from_ndjson.classification.items() if c == "osteoporosis") == (
        osteoporosis
    )
    rule, n = from_ndjson.rules.most_common(1)[0]
    assert n == sum(
        1
        for r in records
        if any(rule in c["extension"]["org.osteohooks"]["rules"] for c in r["cards"])
    )
    rescans = [p for r in records for p in _payloads(r, "rescan-interval")]
    assert sum(from_ndjson.rescan.values()) == len(rescans)
    # the broken file is the one input not evaluated; a data error stays "evaluated"
    assert from_ndjson.statuses["not-evaluated"] == 1
    assert from_ndjson.evaluated == len(records) - 1
    assert any(status == "ok" for _, _, status in from_ndjson.errors)
    assert not from_ndjson.timed


def test_parquet_folder_gives_the_same_counts_and_the_times(
    counts: tuple[Tally, Tally, list[dict[str, Any]]],
) -> None:
    from_ndjson, from_parquet, _ = counts
    for name in ("inputs", "evaluated", "cards", "classification", "topic_indicator", "rules"):
        assert getattr(from_parquet, name) == getattr(from_ndjson, name), name
    for name in ("findings", "change", "rescan", "versions"):
        assert getattr(from_parquet, name) == getattr(from_ndjson, name), name
    kinds = Counter({(s, c): n for (s, c, _), n in from_parquet.errors.items()})
    assert kinds == Counter({(s, c): n for (s, c, _), n in from_ndjson.errors.items()})
    assert from_parquet.statuses["unreadable"] == 1  # Parquet knows the status
    assert from_parquet.timed
    assert len(from_parquet.slowest) == 20
    slowest = max(from_parquet.slowest)
    page = population_page(from_parquet, source="results").render()
    assert slowest[2] in page


def test_every_section_of_the_population_page_has_data(
    counts: tuple[Tally, Tally, list[dict[str, Any]]],
) -> None:
    _, from_parquet, _ = counts
    text = population_page(from_parquet, source="results").render()
    titles = re.findall(r'data-title="([^"]+)"', text)
    assert titles == [
        "Patients by category and site",
        "Cards per topic and indicator",
        "Firing rate per rule",
        "Findings",
        "Rescan windows over time",
        "Data errors by kind",
        "Slowest inputs",
    ]
    charts = _charts(text)
    assert len(charts) == 7
    for chart_id, declared, marks in charts:
        assert declared == marks > 0, chart_id
    assert "(nothing to show)" not in text
    assert not REMOTE.search(text)
    assert len(text) < 1_000_000  # inline SVG text, not pictures


def test_cli_writes_the_page(replay_results: tuple[Path, Path], tmp_path: Path) -> None:
    ndjson, folder = replay_results
    for source in (ndjson, folder):
        out = tmp_path / f"{source.name}.html"
        result = CliRunner().invoke(app, ["report", str(source), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.read_text(encoding="utf-8").count('<figure class="chart"') == 7


def test_cli_says_what_is_wrong_with_results(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(tmp_path / "nope.ndjson")])
    assert result.exit_code == 1
    assert "no such file or folder" in result.output
    assert "--format ndjson" in result.output
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"input": "a", "cards": [], "outcome": null}\n{oops\n', encoding="utf-8")
    result = runner.invoke(app, ["report", str(bad), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 1
    assert f"{bad}:2: not a JSON line" in result.output
    result = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 1
    assert "no inputs.parquet" in result.output
    (tmp_path / "other.ndjson").write_text('{"resourceType": "Patient"}\n', encoding="utf-8")
    with pytest.raises(ReportError, match="expected a replay result line"):
        list(read_results(tmp_path / "other.ndjson"))


def test_rescan_windows_are_bucketed_by_month_quarter_or_year() -> None:
    from cds.replay.population import _periods

    months, of = _periods(["2027-03", "2027-01"])
    assert months == ["2027-01", "2027-02", "2027-03"]  # gaps filled
    assert of("2027-02") == "2027-02"
    quarters, of = _periods(["2027-01", "2030-12"])  # 48 months
    assert quarters[:2] == ["2027-Q1", "2027-Q2"]
    assert len(quarters) == 16
    assert of("2027-05") == "2027-Q2"
    years, of = _periods(["2027-01", "2040-06"])
    assert years == [str(y) for y in range(2027, 2041)]
    assert of("2031-07") == "2031"
    assert _periods([])[0] == []
