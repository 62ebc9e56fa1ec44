"""The evaluation trace: which resources were used (for what), which were ignored (why),
and which facts were made from which resources. ``cds explain`` prints it."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

from pydantic import BaseModel, Field

# The entries are slots dataclasses (pydantic validates and serialises them as fields of
# `Trace`): made ~25 times per 20-resource Bundle from our own str values, so they are not
# validated again when made (a pydantic model costs ~4 us a call, a dataclass ~0.8 us).
# UsedResource and IgnoredResource, made about once per resource read, are not frozen: a
# frozen dataclass sets each field through object.__setattr__ (callgrind: 4,100
# instructions a UsedResource, 1,500 not frozen); nothing changes or hashes them.


@dataclass(slots=True)
class UsedResource:
    #: Type/id
    resource: str
    #: what it was used for, e.g. 'lumbar-spine T-score -2.1'
    purpose: str


@dataclass(slots=True)
class IgnoredResource:
    #: Type/id (or 'input[3]' for an unnamed input)
    resource: str
    #: why it was not used, e.g. 'status entered-in-error'
    reason: str


@dataclass(frozen=True, slots=True)
class FactTrace:
    fact_id: str
    fact_type: str
    #: Type/id of the sources
    sources: list[str] = field(default_factory=list)


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
        self.used.append(UsedResource(resource, purpose))

    def ignore(self, resource: str, reason: str) -> None:
        self.ignored.append(IgnoredResource(resource, reason))

    def fact(self, fact_id: str, fact_type: str, sources: list[str]) -> None:
        """Record a fact made and its sources (Type/id, in order)."""
        self.facts.append(FactTrace(fact_id, fact_type, sources))

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
