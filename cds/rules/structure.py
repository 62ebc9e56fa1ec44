"""Structural validation: pydantic errors mapped back to `file:line:col: message`."""

from __future__ import annotations

import types
import typing
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError

from cds.rules.errors import RuleError, did_you_mean
from cds.rules.model import Condition
from cds.rules.source import Loc, Source

M = TypeVar("M", bound=BaseModel)

_EXPECTED = {
    "bool_type": "a boolean (true or false)",
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "int_from_float": "an integer",
    "bool_parsing": "a boolean (true or false)",
}


def describe(value: Any) -> str:
    """A value in words for messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"'{value}'"
    return repr(value)


def _strip(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(args) == 1:
                annotation = args[0]
                continue
            if models:
                annotation = models[0]
                continue
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
            continue
        return annotation


def _model_at(root: type[BaseModel], loc: Loc) -> Any:
    """The model class (or annotation) at `loc` under `root`."""
    cur: Any = root
    for part in loc:
        cur = _strip(cur)
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            for name, info in cur.model_fields.items():
                if part in (name, info.alias):
                    cur = info.annotation
                    break
            else:
                return None
        elif get_origin(cur) in (list, dict):
            cur = get_args(cur)[-1]
        else:
            return None
    return _strip(cur)


def _keys(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [info.alias or name for name, info in model.model_fields.items()]
    return []


def _data_prefix(data: Any, loc: tuple[Any, ...]) -> Loc:
    """The longest prefix of a pydantic loc that names a node in the data."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        in_map = isinstance(cur, dict) and isinstance(part, str) and part in cur
        in_list = isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        if in_map or in_list:
            cur = cur[part]
        else:
            break
        out.append(part)
    return tuple(out)


def _value_at(data: Any, loc: Loc) -> Any:
    cur = data
    for part in loc:
        cur = cur[part]
    return cur


def validate_structure(
    src: Source, model: type[M], data: Any = None, base: Loc = ()
) -> tuple[M | None, list[RuleError]]:
    """Validate `data` (default: the whole document) into `model`; map errors to positions."""
    if data is None:
        data = src.data
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, map_errors(src, model, data, exc, base)


def map_errors(
    src: Source, model: type[BaseModel], data: Any, exc: ValidationError, base: Loc = ()
) -> list[RuleError]:
    errors: list[RuleError] = []
    grouped: dict[Loc, list[Any]] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            parent = _model_at(model, loc[:-1])
            allowed = _keys(parent)
            is_condition = isinstance(parent, type) and issubclass(parent, Condition)
            what = "operator or key" if is_condition else "key"
            errors.append(
                src.error(
                    (*base, *loc),
                    f"unknown {what} '{key}'{did_you_mean(key, allowed)}",
                    key=True,
                )
            )
            continue
        if kind == "missing":
            parent_loc = _data_prefix(data, loc[:-1])
            errors.append(src.error((*base, *parent_loc), f"missing key '{loc[-1]}'"))
            continue
        grouped.setdefault(_data_prefix(data, loc), []).append(err)
    for where, errs in grouped.items():
        value = _value_at(data, where)
        name = next((str(p) for p in reversed(where) if isinstance(p, str)), "value")
        if where and isinstance(where[-1], int):
            name = f"{name} item {where[-1] + 1}"  # a list element: say which (from 1)
        expected = sorted({_EXPECTED[e["type"]] for e in errs if e["type"] in _EXPECTED})
        if all(e["type"] in _EXPECTED for e in errs):
            message = f"{name}: expected {' or '.join(expected)}, got {describe(value)}"
        else:
            message = f"{name}: " + "; ".join(
                sorted({str(e["msg"]).replace("Input should", "should") for e in errs})
            )
        errors.append(src.error((*base, *where), message))
    return errors
