"""The evaluation trace: which resources were used (for what), which were ignored (why),
and which facts were made from which resources. ``cds explain`` prints it."""

from __future__ import annotations

from operator import attrgetter
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

_M = TypeVar("_M", bound=BaseModel)
_new = object.__new__
_setattr = object.__setattr__
# BaseModel's slots, set through their descriptors (what object.__setattr__ ends up calling)
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _construct(cls: type[_M], values: dict[str, Any], fields: set[str] | None = None) -> _M:
    """``cls.model_construct(**values)`` for a plain model whose fields are all given.

    What pydantic's model_construct does for such a model (no aliases, defaults, extra,
    private attributes or post-init), without its per-field loop (~3 us a call, ~25 calls
    per 20-resource Bundle). `fields`: the set of the field names, shared by the frozen
    entries of one type (pydantic only replaces it, on a copy, never changes it).
    """
    model = _new(cls)
    _setattr(model, "__dict__", values)
    _set_fields_set(model, set(values) if fields is None else fields)
    _set_extra(model, None)
    _set_private(model, None)
    return model


class UsedResource(BaseModel):
    model_config = ConfigDict(frozen=True)

    resource: str = Field(description="Type/id")
    purpose: str = Field(description="what it was used for, e.g. 'lumbar-spine T-score -2.1'")


class IgnoredResource(BaseModel):
    model_config = ConfigDict(frozen=True)

    resource: str = Field(description="Type/id (or 'input[3]' for an unnamed input)")
    reason: str = Field(description="why it was not used, e.g. 'status entered-in-error'")


class FactTrace(BaseModel):
    model_config = ConfigDict(frozen=True)

    fact_id: str
    fact_type: str
    sources: list[str] = Field(default_factory=list, description="Type/id of the sources")


_USED_FIELDS = {"resource", "purpose"}
_IGNORED_FIELDS = {"resource", "reason"}
_USED_KEY = attrgetter("resource", "purpose")  # (u.resource, u.purpose)
_IGNORED_KEY = attrgetter("resource", "reason")  # (i.resource, i.reason)


class Trace(BaseModel):
    """Resources used and ignored, facts made, and assumptions taken."""

    used: list[UsedResource] = Field(default_factory=list)
    ignored: list[IgnoredResource] = Field(default_factory=list)
    facts: list[FactTrace] = Field(default_factory=list)
    assumptions: list[str] = Field(
        default_factory=list, description="stated assumptions, e.g. menopausal status from age"
    )

    def use(self, resource: str, purpose: str) -> None:
        # both are str from our own code: skip re-validating them (~2 us each, ~20 a call)
        values = {"resource": resource, "purpose": purpose}
        self.used.append(_construct(UsedResource, values, _USED_FIELDS))

    def ignore(self, resource: str, reason: str) -> None:
        # as in `use`: str from our own code (mypy --strict checks the callers)
        values = {"resource": resource, "reason": reason}
        self.ignored.append(_construct(IgnoredResource, values, _IGNORED_FIELDS))

    def fact(self, fact_id: str, fact_type: str, sources: list[str]) -> None:
        """Record a fact made and its sources (Type/id, in order)."""
        # as in `use`: str and a fresh list of str from our own code (mypy --strict checks)
        self.facts.append(
            _construct(FactTrace, {"fact_id": fact_id, "fact_type": fact_type, "sources": sources})
        )

    def sort(self) -> None:
        """Put every list in a deterministic order (input order must not matter)."""
        self.used.sort(key=_USED_KEY)
        self.ignored.sort(key=_IGNORED_KEY)

    def lines(self) -> list[str]:
        """The trace as text lines (for `cds explain`)."""
        out = [f"used     {u.resource}: {u.purpose}" for u in self.used]
        out += [f"ignored  {i.resource}: {i.reason}" for i in self.ignored]
        out += [f"fact     {f.fact_id} <- {', '.join(f.sources) or '-'}" for f in self.facts]
        out += [f"assumed  {a}" for a in self.assumptions]
        return out
