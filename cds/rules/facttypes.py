"""What the rules can read: the fact types of `cds.contracts.facts` plus YAML derived facts.

Each field is reduced to a `FieldSpec` with a *kind* the validator, compiler, reference
evaluator and docs generator share:

- ``integer`` / ``number``: ordering operators apply;
- ``date``: an ISO ``YYYY-MM-DD`` string; ordering operators apply (ISO order is time order);
- ``string`` (optionally with ``enum`` values) and ``boolean``: ``eq ne in`` only.
"""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from cds.contracts.facts import FACT_TYPES

Kind = Literal["integer", "number", "boolean", "string", "date"]
KINDS: tuple[Kind, ...] = ("integer", "number", "boolean", "string", "date")

#: Keys the engine message uses itself: no fact field may have these names.
RESERVED_FIELDS = frozenset({"id", "t", "sid"})

#: durable_rules refuses messages with more than 255 properties; `id`, `t` and `sid` count.
MAX_FACT_PROPERTIES = 255

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


@dataclass(frozen=True)
class FieldSpec:
    """One readable field of a fact type."""

    name: str
    kind: Kind
    optional: bool
    description: str
    enum: tuple[str, ...] | None = None
    has_default: bool = False
    default: Any = None

    def describe_kind(self) -> str:
        """The kind in words, e.g. 'a number' or 'one of female, male'."""
        if self.enum is not None:
            return "one of " + ", ".join(self.enum)
        return {
            "integer": "an integer",
            "number": "a number",
            "boolean": "a boolean (true or false)",
            "string": "a string",
            "date": "an ISO date (YYYY-MM-DD)",
        }[self.kind]

    @property
    def ordered(self) -> bool:
        """Ordering operators (lt le gt ge) apply to this field."""
        return self.kind in ("integer", "number", "date")

    def neutral_value(self) -> Any:
        """The value a `cds rules test` example fact uses when the author gives none.

        Schema defaults win; a required field without a default takes a neutral value:
        0 for numbers, false, the empty string, 1970-01-01, or 'unknown' (else the first
        value) for an enumeration. Optional fields without a default stay absent.
        """
        if self.has_default:
            return self.default
        if self.optional:
            return None
        if self.enum is not None:
            return "unknown" if "unknown" in self.enum else self.enum[0]
        return {"integer": 0, "number": 0.0, "boolean": False, "string": "", "date": "1970-01-01"}[
            self.kind
        ]

    def accepts(self, value: object) -> bool:
        """`value` is a literal of this field's type (and enumeration)."""
        if self.kind == "boolean":
            return isinstance(value, bool)
        if self.kind == "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        if self.kind == "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        if self.kind == "date":
            if not isinstance(value, str) or ISO_DATE.match(value) is None:
                return False
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                return False
            return True
        if not isinstance(value, str):
            return False
        return self.enum is None or value in self.enum


@dataclass
class FactType:
    """A fact type rules can match: an input type of the schema or a derived one."""

    name: str
    fields: dict[str, FieldSpec]
    derived: bool = False
    extends: str | None = None
    description: str = ""
    ancestors: tuple[str, ...] = field(default_factory=tuple)

    def extends_type(self, other: str) -> bool:
        """This type is `other` or carries all of its fields by `extends`."""
        return other == self.name or other in self.ancestors


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip Optional; return (inner annotation, optional)."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) != len(get_args(annotation))
        if len(args) == 1:
            return args[0], optional
    return annotation, False


def _kind_of(annotation: Any, metadata: list[Any]) -> tuple[Kind, tuple[str, ...] | None]:
    if get_origin(annotation) is typing.Annotated:
        args = get_args(annotation)
        return _kind_of(args[0], list(args[1:]) + metadata)
    if get_origin(annotation) is Literal:
        return "string", tuple(str(a) for a in get_args(annotation))
    if annotation is bool:
        return "boolean", None
    if annotation is int:
        return "integer", None
    if annotation is float:
        return "number", None
    if annotation is str:
        for meta in metadata:
            pattern = getattr(meta, "pattern", None)
            if pattern is None:
                inner = getattr(meta, "metadata", [])
                pattern = next((getattr(m, "pattern", None) for m in inner), None)
            if pattern == _DATE_PATTERN:
                return "date", None
        return "string", None
    raise TypeError(f"unsupported fact field annotation {annotation!r}")


def fields_of_model(model: type[BaseModel]) -> dict[str, FieldSpec]:
    """The readable fields of a pydantic fact model (all but `id`)."""
    result: dict[str, FieldSpec] = {}
    for name, info in model.model_fields.items():
        if name == "id":
            continue
        inner, optional = _unwrap(info.annotation)
        kind, enum = _kind_of(inner, list(info.metadata))
        has_default = info.default is not PydanticUndefined
        result[name] = FieldSpec(
            name=name,
            kind=kind,
            optional=optional,
            description=info.description or "",
            enum=enum,
            has_default=has_default,
            default=info.default if has_default else None,
        )
    return result


def input_fact_types() -> dict[str, FactType]:
    """The input fact types of `cds.contracts.facts.FACT_TYPES`."""
    return {
        name: FactType(
            name=name,
            fields=fields_of_model(model),
            description=(model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "",
        )
        for name, model in FACT_TYPES.items()
    }
