"""`cds replay --format parquet --out DIR`, read back with DuckDB as an analyst would, and
checked row by row and type by type against the NDJSON output of the same run."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cds.cli import app
from cds.contracts.cards import EXTENSION_KEY, PAYLOAD_MODELS, Card
from cds.replay.parquet import (
    CARDS_FILE,
    DATA_ERRORS_FILE,
    INPUTS_FILE,
    ParquetError,
    ParquetWriter,
    cards_schema,
)
from cds.replay.summary import Summary
from cds.replay.worker import InputResult

duckdb = pytest.importorskip("duckdb", reason="pip install duckdb (in the test extras)")

FIXTURES = Path(__file__).parent.parent / "fixtures"
AS_OF = "2026-11-23"


@pytest.fixture(autouse=True)
def _fast(shared_evaluator: Any) -> None:
    """Every in-process run here reuses one Evaluator for the bundled rules."""


def replay(*args: str) -> Any:
    return CliRunner().invoke(
        app, ["replay", *args, "--as-of", AS_OF, "--workers", "0"], catch_exceptions=False
    )


def rows(path: Path, order: str = "") -> list[dict[str, Any]]:
    relation = duckdb.sql(f"SELECT * FROM read_parquet('{path}') {order}")
    names = relation.columns
    return [dict(zip(names, values, strict=True)) for values in relation.fetchall()]


def column_types(path: Path) -> dict[str, str]:
    described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
    return {name: kind for name, kind, *_ in described}


@pytest.fixture(scope="module")
def run(replay_results: tuple[Path, Path]) -> tuple[list[dict[str, Any]], Path]:
    """The NDJSON records and the Parquet folder of one run (conftest `replay_results`)."""
    ndjson, folder = replay_results
    records = [json.loads(line) for line in ndjson.read_text(encoding="utf-8").splitlines()]
    return records, folder


def _same(parquet_value: Any, json_value: Any) -> bool:
    """A typed Parquet value against the NDJSON value it was written from."""
    if isinstance(json_value, bool) or json_value is None:
        return parquet_value is json_value
    if isinstance(json_value, int | float):
        return isinstance(parquet_value, int | float) and math.isclose(parquet_value, json_value)
    if isinstance(json_value, str):
        if isinstance(parquet_value, dt.date):
            return parquet_value.isoformat() == json_value
        return isinstance(parquet_value, str) and parquet_value == json_value
    if isinstance(json_value, list):
        return isinstance(parquet_value, list) and all(
            _same(p, j) for p, j in zip(parquet_value, json_value, strict=True)
        )
    if isinstance(json_value, dict):
        return isinstance(parquet_value, dict) and all(
            _same(parquet_value.get(key), json_value.get(key))
            for key in {*parquet_value, *json_value}
        )
    return False


def test_cards_are_the_ndjson_cards_row_by_row(run: tuple[list[dict[str, Any]], Path]) -> None:
    records, folder = run
    cards = rows(folder / CARDS_FILE)
    expected = [(r["input"], card) for r in records for card in r["cards"]]
    assert len(cards) == len(expected) > 200
    payload_columns = set(cards_schema().names) - {
        "input",
        "patient_id",
        "hook",
        "topic",
        "indicator",
        "summary",
        "uuid",
    }
    for row, (name, card) in zip(cards, expected, strict=True):
        assert row["input"] == name
        assert row["topic"] == card["source"]["topic"]["code"]
        assert row["indicator"] == card["indicator"]
        assert row["summary"] == card["summary"]
        assert row["uuid"] == card["uuid"]
        payload = card["extension"][EXTENSION_KEY]
        assert set(payload) <= payload_columns, "a payload field without its column"
        for column in payload_columns:
            assert _same(row[column], payload.get(column)), (name, column, row[column])
    assert {row["hook"] for row in cards} == {"patient-view", "order-select", "order-sign"}


def test_patient_ids_are_the_patients_the_cards_are_about(
    run: tuple[list[dict[str, Any]], Path],
) -> None:
    _, folder = run
    cards = rows(folder / CARDS_FILE)
    for row in cards:
        assert row["patient_id"], row["input"]
        if "#Patient/" in row["input"]:  # a split Bundle names its patient
            assert row["input"].endswith(f"#Patient/{row['patient_id']}")


def test_columns_are_typed_from_the_card_contract(run: tuple[list[dict[str, Any]], Path]) -> None:
    _, folder = run
    types = column_types(folder / CARDS_FILE)
    # every payload field of every topic is a column
    for model in PAYLOAD_MODELS.values():
        assert set(model.model_fields) <= set(types), model.__name__
    assert types["rule"] == "VARCHAR"
    assert types["rules"] == types["evidence"] == types["findings"] == "VARCHAR[]"
    assert types["value"] == types["percentChange"] == "DOUBLE"  # a number (int or float)
    assert types["minMonths"] == types["maxMonths"] == "BIGINT"  # an integer
    assert types["dueFrom"] == types["dueTo"] == types["earliestDate"] == "DATE"
    assert types["comparable"] == types["tooSoon"] == "BOOLEAN"
    assert types["sites"].startswith("STRUCT(")
    assert types["sites"].endswith("[]")
    assert "percentChange DOUBLE" in types["sites"]
    # an analyst's query: rescan windows by month, on typed dates
    [(due,)] = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{folder / CARDS_FILE}') "
        "WHERE topic = 'rescan-interval' AND dueFrom < DATE '2100-01-01'"
    ).fetchall()
    assert due > 50


def test_data_errors_are_the_outcome_issues(run: tuple[list[dict[str, Any]], Path]) -> None:
    records, folder = run
    errors = rows(folder / DATA_ERRORS_FILE)
    expected = [
        (r["input"], issue) for r in records for issue in (r["outcome"] or {}).get("issue", [])
    ]
    assert len(errors) == len(expected) >= 3
    for row, (name, issue) in zip(errors, expected, strict=True):
        assert row["input"] == name
        assert row["severity"] == issue["severity"]
        assert row["code"] == issue["code"]
        assert row["diagnostics"] == issue.get("diagnostics")
        assert row["details"] == issue.get("details", {}).get("text")
        assert row["expression"] == issue.get("expression")
    statuses = {row["input"]: row["status"] for row in errors}
    assert statuses["cases/broken.json"] == "unreadable"
    assert "ok" in statuses.values()  # a data error of an evaluated input
    types = column_types(folder / DATA_ERRORS_FILE)
    assert types["expression"] == "VARCHAR[]"


def test_one_input_row_per_ndjson_line(run: tuple[list[dict[str, Any]], Path]) -> None:
    records, folder = run
    inputs = rows(folder / INPUTS_FILE)
    assert [row["input"] for row in inputs] == [r["input"] for r in records]
    for row, record in zip(inputs, records, strict=True):
        assert row["cards"] == len(record["cards"])
        assert row["seconds"] >= 0
    by_name = {row["input"]: row for row in inputs}
    assert by_name["cases/broken.json"]["status"] == "unreadable"
    assert by_name["cases/broken.json"]["cards"] == 0
    assert sum(row["data_errors"] for row in inputs) >= 1
    assert column_types(folder / INPUTS_FILE)["seconds"] == "DOUBLE"
    assert not list(folder.glob("*.partial"))


def _result(index: int, cards: list[dict[str, Any]]) -> InputResult:
    return InputResult.of(
        f"in-{index}",
        f"in-{index}",
        [Card.model_validate(c) for c in cards],
        None,
        "ok",
        0.001,
        hook="patient-view",
    )


def _card(value: Any) -> dict[str, Any]:
    return {
        "summary": "s",
        "indicator": "info",
        "uuid": "u",
        "source": {"label": "l", "topic": {"system": "x", "code": "tbs"}},
        "extension": {EXTENSION_KEY: {"rule": "r", "evidence": ["CS-5.1"], "value": value}},
    }


def test_rows_stream_out_in_row_groups(tmp_path: Path) -> None:
    """Memory holds at most one row group per table; the file has many."""
    writer = ParquetWriter(tmp_path, rows_per_group=7)
    for index in range(50):
        writer.write(_result(index, [_card(1.2), _card(1)]), None)
        assert len(writer.cards.rows) < 7
        assert len(writer.inputs.rows) < 7
    assert not (tmp_path / CARDS_FILE).exists()  # written as .partial until closed
    writer.close(Summary())
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / CARDS_FILE).num_row_groups == 15
    assert pq.ParquetFile(tmp_path / INPUTS_FILE).num_row_groups == 8
    values = [row["value"] for row in rows(tmp_path / CARDS_FILE)]
    assert values == [1.2, 1.0] * 50


def test_a_card_outside_the_contract_is_named(tmp_path: Path) -> None:
    writer = ParquetWriter(tmp_path, rows_per_group=100)
    writer.write(_result(0, [_card(1.5)]), None)
    writer.write(_result(1, [_card("high")]), None)
    with pytest.raises(
        ParquetError, match=r"input 'in-1': field 'value' value 'high' is not double"
    ):
        writer.close(Summary())


def test_parquet_needs_a_folder(tmp_path: Path) -> None:
    story = str(FIXTURES / "stories" / "01-normal-postmenopausal.json")
    result = replay(story, "--format", "parquet")
    assert result.exit_code == 2
    assert "give --out DIR" in result.output
    (tmp_path / "file").write_text("", encoding="utf-8")
    result = replay(story, "--format", "parquet", "--out", str(tmp_path / "file"))
    assert result.exit_code == 2
    assert "is a file" in result.output
    result = replay(story, "--format", "parquet", "--out", str(tmp_path / "new" / "dir"))
    assert result.exit_code == 0, result.output
    assert len(rows(tmp_path / "new" / "dir" / CARDS_FILE)) >= 1


def test_the_guides_duckdb_queries_run_on_the_results(
    run: tuple[list[dict[str, Any]], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/qa-replay.md's SQL, pasted as is, against a results folder named `results`."""
    import re

    _, folder = run
    assert folder.name == "results"
    guide = (Path(__file__).parents[2] / "docs" / "qa-replay.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", guide, re.S)
    statements = [s for block in blocks for s in block.split(";") if s.strip()]
    assert len(statements) >= 3
    monkeypatch.chdir(folder.parent)
    answers = [duckdb.sql(statement).fetchall() for statement in statements]
    assert answers[0], "patients by category and site"
    assert answers[1], "rescans per month"
