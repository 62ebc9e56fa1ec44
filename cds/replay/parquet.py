"""`cds replay --format parquet --out DIR`: results as three Parquet tables for analysts.

- `DIR/cards.parquet`: one row per card: the input, the patient, the hook, the card's
  topic, indicator, summary and uuid, then every payload field of the card contract as a
  typed column (`rule`, `rules`, `evidence`, `rulesetVersion`, `category`, `value`,
  `dueFrom`...). The columns and their types are made from the contract's payload models
  (`cds.contracts.cards.PAYLOAD_MODELS`, through their JSON Schema), so a field added to
  the contract is a column here without a second list; a field several topics share
  (`value`, `findings`) is one column, read with the row's `topic`.
- `DIR/data_errors.parquet`: one row per OperationOutcome issue of an input (the data
  errors of evaluated inputs, and why an input could not be read or evaluated).
- `DIR/inputs.parquet`: one row per input: status, cards, data errors, seconds.

Rows are written in row groups as results stream in (`pyarrow.parquet.ParquetWriter`):
memory holds one row group per table, whatever the size of the run. The files are
written as `*.parquet.partial` and renamed when the run closes them, so a file named
`*.parquet` is always complete.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from cds.contracts.cards import (
    CARD_TOPICS,
    COMMON_PAYLOAD_FIELDS,
    PAYLOAD_MODELS,
    payload_schema,
)
from cds.replay.worker import InputResult, card_payload, card_topic

if TYPE_CHECKING:
    from cds.replay.golden import GoldenCheck
    from cds.replay.summary import Summary

CARDS_FILE = "cards.parquet"
DATA_ERRORS_FILE = "data_errors.parquet"
INPUTS_FILE = "inputs.parquet"
#: Rows buffered per table before a row group is written.
ROW_GROUP_ROWS = 10_000

#: The card's own columns, before the payload's.
CARD_COLUMNS: tuple[pa.Field[Any], ...] = (
    pa.field("input", pa.string(), nullable=False),
    pa.field("patient_id", pa.string()),
    pa.field("hook", pa.string()),
    pa.field("topic", pa.string(), nullable=False),
    pa.field("indicator", pa.string()),
    pa.field("summary", pa.string()),
    pa.field("uuid", pa.string()),
)
DATA_ERROR_SCHEMA = pa.schema(
    [
        pa.field("input", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("severity", pa.string()),
        pa.field("code", pa.string()),
        pa.field("diagnostics", pa.string()),
        pa.field("details", pa.string()),
        pa.field("expression", pa.list_(pa.string())),
        pa.field("location", pa.list_(pa.string())),
    ]
)
_INPUT_FIELDS: list[pa.Field[Any]] = [
    pa.field("input", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("hook", pa.string()),
    pa.field("patient_id", pa.string()),
    pa.field("cards", pa.int32(), nullable=False),
    pa.field("data_errors", pa.int32(), nullable=False),
    pa.field("seconds", pa.float64(), nullable=False),
]
INPUT_SCHEMA = pa.schema(_INPUT_FIELDS)


class ParquetError(ValueError):
    """A result that does not fit the columns (a card outside the card contract)."""


def _arrow_type(schema: dict[str, Any], definitions: dict[str, Any]) -> pa.DataType:
    """The Arrow type of one payload field, from its JSON Schema."""
    if "$ref" in schema:
        inner = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        return pa.struct(
            [pa.field(name, _arrow_type(s, definitions)) for name, s in inner["properties"].items()]
        )
    if "anyOf" in schema:
        kinds = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if all(s.get("type") in ("integer", "number") for s in kinds):
            numbers = {s["type"] for s in kinds}
            return pa.int64() if numbers == {"integer"} else pa.float64()
        if len(kinds) == 1:
            return _arrow_type(kinds[0], definitions)
        raise TypeError(f"no Parquet column type for a field of JSON Schema {schema}")
    kind = schema.get("type")
    if kind == "array":
        return pa.list_(_arrow_type(schema.get("items", {}), definitions))
    if kind == "string":
        return pa.date32() if schema.get("format") == "date" else pa.string()
    simple: dict[str, pa.DataType] = {
        "integer": pa.int64(),
        "number": pa.float64(),
        "boolean": pa.bool_(),
    }
    if kind in simple:
        return simple[kind]
    raise TypeError(f"no Parquet column type for a field of JSON Schema {schema}")


@cache
def payload_columns() -> tuple[pa.Field[Any], ...]:
    """The payload columns: every field of every topic's payload model, the common fields
    first, then in topic order; one column per field name (topics that share a name must
    agree on its type)."""
    definitions = payload_schema()["$defs"]
    types: dict[str, pa.DataType] = {}
    owners: dict[str, str] = {}
    for topic in CARD_TOPICS:
        model = PAYLOAD_MODELS[topic]
        properties = definitions[model.__name__]["properties"]
        names = [*COMMON_PAYLOAD_FIELDS, *(n for n in properties if n not in COMMON_PAYLOAD_FIELDS)]
        for name in names:
            kind = _arrow_type(properties[name], definitions)
            if name in types and types[name] != kind:
                raise TypeError(
                    f"payload field {name!r} is {types[name]} in {owners[name]} but {kind} in "
                    f"{topic}: one Parquet column cannot hold both (rename one in the contract)"
                )
            types.setdefault(name, kind)
            owners.setdefault(name, topic)
    clash = {f.name for f in CARD_COLUMNS} & set(types)
    if clash:
        raise TypeError(f"payload fields {sorted(clash)} clash with the card columns")
    return tuple(pa.field(name, kind) for name, kind in types.items())


@cache
def cards_schema() -> pa.Schema:
    """The schema of `cards.parquet`."""
    return pa.schema([*CARD_COLUMNS, *payload_columns()])


def _to_date(value: Any) -> Any:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


@cache
def _converters() -> dict[str, Callable[[Any], Any]]:
    """Payload fields whose JSON value needs converting to the column's type (ISO dates)."""
    return {f.name: _to_date for f in payload_columns() if pa.types.is_date(f.type)}


def card_row(result: InputResult, card: dict[str, Any]) -> dict[str, Any]:
    """One row of `cards.parquet` for one card of an input."""
    row: dict[str, Any] = {
        "input": result.name,
        "patient_id": result.patient_id,
        "hook": result.hook or None,
        "topic": card_topic(card),
        "indicator": card.get("indicator"),
        "summary": card.get("summary"),
        "uuid": card.get("uuid"),
    }
    convert = _converters()
    for name, value in card_payload(card).items():
        row[name] = convert[name](value) if name in convert else value
    return row


def issue_rows(result: InputResult) -> list[dict[str, Any]]:
    """The rows of `data_errors.parquet` for one input: one per OperationOutcome issue."""
    outcome = result.outcome
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    rows = []
    for issue in issues if isinstance(issues, list) else ():
        if not isinstance(issue, dict):
            continue
        details = issue.get("details")
        rows.append(
            {
                "input": result.name,
                "status": result.status,
                "severity": issue.get("severity"),
                "code": issue.get("code"),
                "diagnostics": issue.get("diagnostics"),
                "details": details.get("text") if isinstance(details, dict) else None,
                "expression": _strings(issue.get("expression")),
                "location": _strings(issue.get("location")),
            }
        )
    return rows


def _strings(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list) else None


class _Table:
    """One Parquet file written in row groups of `rows_per_group` rows."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.schema = schema
        self.rows_per_group = rows_per_group
        self.rows: list[dict[str, Any]] = []
        self.writer = pq.ParquetWriter(self.partial, schema, compression="zstd")

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        try:
            table = pa.Table.from_pylist(self.rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            raise self._culprit() from None
        self.writer.write_table(table)
        self.rows.clear()

    def _culprit(self) -> ParquetError:
        """Which row (and field) does not fit the schema, in words."""
        for row in self.rows:
            for name, value in row.items():
                if name not in self.schema.names:
                    continue
                kind = self.schema.field(name).type
                try:
                    pa.array([value], type=kind)
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                    return ParquetError(
                        f"{self.path.name}: input {row.get('input')!r}: field {name!r} "
                        f"value {value!r} is not {kind} as the card contract says ({exc}); "
                        "check the rule that made the card with `cds rules lint`"
                    )
        return ParquetError(f"{self.path.name}: a row does not fit the schema")

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.partial.replace(self.path)


class ParquetWriter:
    """The replay `Writer` of the Parquet results folder (see the module docstring)."""

    def __init__(self, folder: Path, *, rows_per_group: int = ROW_GROUP_ROWS) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.cards = _Table(folder / CARDS_FILE, cards_schema(), rows_per_group)
        self.errors = _Table(folder / DATA_ERRORS_FILE, DATA_ERROR_SCHEMA, rows_per_group)
        self.inputs = _Table(folder / INPUTS_FILE, INPUT_SCHEMA, rows_per_group)

    def write(self, result: InputResult, _golden: GoldenCheck | None) -> None:
        cards = result.cards
        for card in cards:
            self.cards.add(card_row(result, card))
        for row in issue_rows(result):
            self.errors.add(row)
        self.inputs.add(
            {
                "input": result.name,
                "key": result.key,
                "status": result.status,
                "hook": result.hook or None,
                "patient_id": result.patient_id,
                "cards": len(cards),
                "data_errors": result.data_errors,
                "seconds": result.seconds,
            }
        )

    def close(self, _summary: Summary) -> None:
        for table in (self.cards, self.errors, self.inputs):
            table.close()
