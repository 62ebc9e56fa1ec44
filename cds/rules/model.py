"""The rule language as pydantic v2 models (structure only; meaning is checked in validate).

Every model forbids unknown keys. Values whose type depends on the fact schema (test
operands, example facts, `set` values) are typed loosely here and checked against the
schema by `cds.rules.validate`, which can say *why* a value does not fit.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr

#: The test operators of a condition, in the order docs list them.
OPERATORS: tuple[str, ...] = ("eq", "ne", "lt", "le", "gt", "ge", "in", "exists", "missing")
ORDERING_OPERATORS = frozenset({"lt", "le", "gt", "ge"})
STATUSES: tuple[str, ...] = ("active", "draft", "retired")
FIELD_TYPES: tuple[str, ...] = ("integer", "number", "boolean", "string", "date")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Parameter(_Model):
    value: Scalar
    unit: StrictStr | None = None
    evidence: list[StrictStr] = Field(default_factory=list)
    description: StrictStr | None = None


class DerivedField(_Model):
    type: StrictStr
    enum: list[StrictStr] | None = None
    description: StrictStr | None = None


class DerivedFact(_Model):
    extends: StrictStr | None = None
    description: StrictStr | None = None
    fields: dict[StrictStr, DerivedField] = Field(default_factory=dict)


class Condition(_Model):
    """A condition node: exactly one of all / any / not / a test (checked in validate)."""

    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(None, alias="not")
    field: StrictStr | None = None
    eq: Any = None
    ne: Any = None
    lt: Any = None
    le: Any = None
    gt: Any = None
    ge: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    exists: StrictBool | None = None
    missing: StrictBool | None = None

    def shape(self) -> list[str]:
        """The structural keys present (all, any, not, field) and operators given."""
        keys = [k for k in ("all", "any", "field") if getattr(self, k) is not None]
        if self.not_ is not None:
            keys.insert(2, "not")
        return keys

    def operators(self) -> list[str]:
        """The test operators given (normally exactly one)."""
        return [op for op in OPERATORS if getattr(self, "in_" if op == "in" else op) is not None]

    def operand(self, op: str) -> Any:
        return getattr(self, "in_" if op == "in" else op)


class When(Condition):
    fact: StrictStr


class Emit(_Model):
    fact: StrictStr
    copy_: StrictBool = Field(False, alias="copy")
    set: dict[StrictStr, Scalar] = Field(default_factory=dict)


class Occurrence(_Model):
    start: StrictStr | None = None
    end: StrictStr | None = None


class Suggestion(_Model):
    label: StrictStr
    recommended: StrictBool = False
    orders: list[StrictStr] = Field(default_factory=list)
    #: a template giving order keys (comma-separated) to leave out of `orders` for this
    #: fact, e.g. tests with a recent result (CS-6.1); a suggestion left with no order
    #: is dropped
    omit_orders: StrictStr | None = None
    occurrence: Occurrence | None = None
    note: StrictStr | None = None


class Link(_Model):
    label: StrictStr
    url: StrictStr
    type: StrictStr = "absolute"


class Card(_Model):
    topic: StrictStr
    indicator: StrictStr
    summary: StrictStr
    detail: StrictStr | None = None
    payload: dict[StrictStr, Any] = Field(default_factory=dict)
    findings: list[StrictStr] = Field(default_factory=list)
    items: list[StrictStr] = Field(default_factory=list)
    suggestions: list[Suggestion] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)


class Then(_Model):
    emit: Emit | None = None
    card: Card | None = None


class Expect(_Model):
    fires: StrictBool
    emits: dict[StrictStr, Any] | None = None
    payload: dict[StrictStr, Any] | None = None
    summary_contains: StrictStr | None = None


class Example(_Model):
    name: StrictStr
    fact: dict[StrictStr, Any] = Field(default_factory=dict)
    expect: Expect


class Rule(_Model):
    id: StrictStr
    title: StrictStr
    version: StrictInt = Field(ge=1)
    status: StrictStr
    evidence: list[StrictStr]
    priority: StrictInt = 0
    when: When
    then: Then
    examples: list[Example] = Field(default_factory=list)


class RuleFile(_Model):
    """One `rules/*.yaml` document."""

    parameters: dict[StrictStr, Parameter] = Field(default_factory=dict)
    derived_facts: dict[StrictStr, DerivedFact] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)


class EvidenceSource(_Model):
    label: StrictStr
    url: StrictStr


class EvidenceRegistry(_Model):
    """`rules/evidence.yaml`: source short names and the clinical-spec ids that exist."""

    sources: dict[StrictStr, EvidenceSource] = Field(default_factory=dict)
    clinical_spec_ids: list[StrictStr] = Field(default_factory=list)
