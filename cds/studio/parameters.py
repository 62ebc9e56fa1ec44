"""The studio's parameter form: list the rule set's parameters and write a new value into
the rule file that defines it.

The value is changed in the file's text at the position ruamel.yaml's round-trip loader
reports for that parameter's `value:` scalar, so every comment, quote, blank line and the
rest of the layout stay as written; only that one token changes. The new text then goes
through the studio's usual path (lint on a copy, cards side by side, save with a backup).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from cds.rules.model import Parameter

#: A plain YAML number as the rule files write them (what `Decimal` and YAML agree on).
_NUMBER = re.compile(r"^-?(?:\d+)(?:\.\d+)?$")
#: The end of a plain scalar token on its line: before a comment or the line's end.
_TOKEN_END = re.compile(r"\s+#|\s*$")
#: The same inside a flow mapping, where `,` and `}` end a plain scalar too.
_FLOW_TOKEN_END = re.compile(r"\s+#|\s*[,}\]]|\s*$")


class ParameterEditError(ValueError):
    """A parameter value the form cannot write (the message says what to type)."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line

    def as_error(self) -> dict[str, Any]:
        return {"file": self.file or "", "line": self.line or 0, "col": 0, "message": str(self)}


@dataclass(frozen=True)
class Located:
    file: str  # a file name of the rules folder
    line: int  # 1-based line of the `value:` scalar
    col: int  # 0-based column where it starts
    flow: bool = False  # written as `name: {value: 1.2, unit: TBS}`


def _load(text: str) -> Any:
    yaml = YAML(typ="rt")
    return yaml.load(io.StringIO(text))


def index(rules_dir: Path) -> dict[str, Located]:
    """Where each parameter's value is written in the rules folder (files that do not
    parse are left out: lint reports them)."""
    out: dict[str, Located] = {}
    for path in sorted(rules_dir.glob("*.yaml")):
        try:
            doc = _load(path.read_text(encoding="utf-8"))
        except YAMLError:
            continue
        params = doc.get("parameters") if isinstance(doc, CommentedMap) else None
        if not isinstance(params, CommentedMap):
            continue
        for name, spec in params.items():
            if isinstance(spec, CommentedMap) and "value" in spec and name not in out:
                line, col = spec.lc.value("value")
                flow = bool(spec.fa.flow_style())
                out[str(name)] = Located(path.name, line + 1, col, flow)
    return out


def locate(rules_dir: Path, name: str) -> Located:
    """Where parameter `name`'s value is written in the rules folder."""
    where = index(rules_dir).get(name)
    if where is None:
        raise ParameterEditError(
            f"no rule file of {rules_dir} defines parameter {name!r} with a 'value:': "
            "pick one from the list"
        )
    return where


def _span(body: str, col: int, flow: bool) -> int:
    """The end column of the scalar token starting at `col` of line `body`."""
    rest = body[col:]
    if rest.startswith(("'", '"')):  # a quoted scalar: up to its closing quote
        return col + rest.index(rest[0], 1) + 1
    match = (_FLOW_TOKEN_END if flow else _TOKEN_END).search(rest)
    return col + (match.start() if match else len(rest))


def written(text: str, where: Located) -> str:
    """The value's token as the file writes it (`1.200`, not the float 1.2)."""
    body = text.splitlines()[where.line - 1]
    return body[where.col : _span(body, where.col, where.flow)]


def _token(value: str, current: Any, name: str, unit: str | None) -> str:
    """The YAML text for `value` (typed in the form), of the same kind as `current`."""
    typed = value.strip()
    kind = f" ({unit})" if unit else ""
    if isinstance(current, bool):
        if typed not in ("true", "false"):
            raise ParameterEditError(f"{name} is true or false; {typed!r} is neither")
        return typed
    if isinstance(current, int | float | Decimal):
        if not _NUMBER.match(typed):
            raise ParameterEditError(
                f"{name} takes a number{kind}, like {current}; {typed!r} is not one "
                "(digits with an optional '.' and decimals, no unit)"
            )
        try:
            Decimal(typed)
        except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
            raise ParameterEditError(f"{name}: {typed!r} is not a number") from None
        if isinstance(current, int) and "." in typed:
            raise ParameterEditError(f"{name} takes a whole number{kind}; {typed!r} has decimals")
        return typed
    if "\n" in value:
        raise ParameterEditError(f"{name} takes one line of text")
    return json.dumps(value, ensure_ascii=False)  # a double-quoted YAML string


def set_value(text: str, where: Located, name: str, spec: Parameter, value: str) -> str:
    """`text` (the rule file) with parameter `name`'s value replaced by `value`."""
    token = _token(value, spec.value, name, spec.unit)
    lines = text.splitlines(keepends=True)
    line = lines[where.line - 1]
    body = line.rstrip("\r\n")
    end = _span(body, where.col, where.flow)
    lines[where.line - 1] = body[: where.col] + token + body[end:] + line[len(body) :]
    return "".join(lines)


def listing(specs: dict[str, Parameter], rules_dir: Path) -> list[dict[str, Any]]:
    """The form's list: each parameter with its value, unit, evidence, description and
    the file and line where its value is written."""
    where = index(rules_dir)
    texts = {w.file: (rules_dir / w.file).read_text(encoding="utf-8") for w in where.values()}
    out = []
    for name in sorted(specs):
        spec, at = specs[name], where.get(name)
        out.append(
            {
                "name": name,
                "value": written(texts[at.file], at) if at else str(spec.value),
                "unit": spec.unit,
                "evidence": list(spec.evidence),
                "description": spec.description,
                "file": at.file if at else None,
                "line": at.line if at else None,
            }
        )
    return out
