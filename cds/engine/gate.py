"""Which chunks of the split a fact could match in (an index built from the compiled rules).

Creating a durable session zeroes tables for every rule of its ruleset (~11,000
instructions a rule, whatever the facts), so at thousands of rules most of an evaluation
went into sessions of chunks none of whose rules could match. A `Gate` (one per fact
type) is built once per engine from each rule's compiled pattern: the tests that every
match of the rule requires (the leaves of its top-level `$and`; an `$or` requires none
of its branches). For a fact it answers which chunks hold a rule none of whose required
tests is known to fail; the engine opens a session (and sends the fact) only there.
durable still decides every match: the gate only leaves out chunks where no match can
happen, and says "may match" whenever it is not sure.

What the gate knows of durable-rules 2.0.28 (its `events.c`), and nothing more:
- every test but `$nex` needs the field present (durable visits a node only for a
  property the message has), and `$nex` needs it absent;
- `$eq` and the four orderings compare two strings byte for byte, two booleans, or two
  numbers as doubles (ints as int64); across kinds durable converts (`"5" == 5`,
  `true == 1`), so a test on a value of another kind never counts as failing;
- numbers only where int64 and double agree and the text durable reads is plain
  (ints within 2**53, finite floats; a rule constant written with an exponent is not
  indexed); strings are indexed for `$eq` only (durable orders them by `strncmp` on the
  escaped JSON text, which is not Python's order);
- `$neq` is never used (it holds for most values).
A test the gate does not index leaves the rule "may match" on that field.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: ints beyond this are not exact as doubles (durable compares an int with a double as
#: doubles): the gate does not index them
_EXACT_INT = 2**53

_ORDERINGS = ("$gte", "$gt", "$lte", "$lt")


def _kind(value: Any) -> str | None:
    """The kind a fact value is compared as ('s', 'b', 'n'), None when the gate cannot tell."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, str):
        return "s"
    if isinstance(value, int):
        return "n" if -_EXACT_INT <= value <= _EXACT_INT else None
    if isinstance(value, float):
        return "n" if math.isfinite(value) else None
    return None


def _constant_kind(value: Any) -> str | None:
    """As `_kind`, for a rule's literal, which durable reads from Python's JSON text
    (where `1e+16` has no fraction and is misread): such floats are not indexed."""
    kind = _kind(value)
    if kind == "n" and isinstance(value, float) and "e" in repr(value).lower():
        return None
    return kind


def _key(kind: str, value: Any) -> Any:
    return float(value) if kind == "n" else value


def required_tests(expr: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(operator, field, literal) of every test a match of `expr` requires: the leaves of
    its `$and` (nested `$and` flattened), the `{"field": value}` shorthand as `$eq`;
    nothing of an `$or`."""
    ((op, arg),) = expr.items()
    if op == "$and":
        for item in arg:
            yield from required_tests(item)
    elif op == "$or":
        return
    elif op.startswith("$"):
        ((name, value),) = arg.items()
        yield op, str(name), value
    else:
        yield "$eq", op, arg


@dataclass
class _Thresholds:
    """Rules with an ordering test on one field: thresholds ascending, each with the rules
    that fail for a value on the excluded side (cumulated)."""

    op: str
    values: list[float] = field(default_factory=list)
    cumulated: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, op: str, entries: Mapping[float, int]) -> _Thresholds:
        values = sorted(entries)
        masks = [entries[v] for v in values]
        if op in ("$gte", "$gt"):  # fails for thresholds above the value: suffixes
            cumulated = [*masks, 0]
            for i in range(len(masks) - 1, -1, -1):
                cumulated[i] = masks[i] | cumulated[i + 1]
        else:  # $lte, $lt fail for thresholds below the value: prefixes
            cumulated = [0]
            for mask in masks:
                cumulated.append(cumulated[-1] | mask)
        return cls(op, values, cumulated)

    def entry(self) -> _ThresholdEntry:
        """(bisect, thresholds, cumulated): the rules failing a value `v` are
        `cumulated[bisect(thresholds, v)]`."""
        # $gte fails where c > v, $gt where c >= v, $lte where c < v, $lt where c <= v
        bisect = bisect_left if self.op in ("$gt", "$lte") else bisect_right
        return bisect, self.values, self.cumulated


_ThresholdEntry = tuple[Callable[[list[float], float], int], list[float], list[int]]


@dataclass
class _FieldGate:
    """The rules that one field of a fact can rule out (bit masks over the type's rules)."""

    name: str
    present: int = 0  # rules that need the field present
    absent: int = 0  # rules that need it absent ($nex)
    #: per kind, rules with an `$eq` of that kind; per (kind, key), those that a value
    #: with that key fails (a value of the kind with no entry fails them all)
    equal: dict[str, int] = field(default_factory=dict)
    equal_failing: dict[tuple[str, Any], int] = field(default_factory=dict)
    orderings: list[_Thresholds] = field(default_factory=list)

    def only(self, rules: int) -> _FieldGate:
        """This field's tests of `rules` only."""
        return _FieldGate(
            self.name,
            self.present & rules,
            self.absent & rules,
            {kind: mask & rules for kind, mask in self.equal.items()},
            {key: mask & rules for key, mask in self.equal_failing.items()},
            [
                _Thresholds(t.op, t.values, [mask & rules for mask in t.cumulated])
                for t in self.orderings
            ],
        )

    def entry(self) -> _FieldEntry:
        """The field as `Gate.chunks` reads it: per value class, the rules a value of that
        class fails when it has no entry in the table, the table, and the orderings."""
        orderings = tuple(t.entry() for t in self.orderings)
        by_class: dict[type, _ClassEntry] = {}
        for cls, kind in ((str, "s"), (bool, "b"), (float, "n")):
            equal = self.equal.get(kind, 0)
            table = {
                key: self.absent | mask
                for (k, key), mask in self.equal_failing.items()
                if k == kind
            }
            by_class[cls] = (self.absent | equal, table, orderings if kind == "n" else ())
        return self.name, self.present, self.absent, by_class


#: (rules a value fails unless it has an entry, per key the rules that value fails,
#: the orderings to apply to the value)
_ClassEntry = tuple[int, dict[Any, int], tuple[_ThresholdEntry, ...]]
#: (field, rules needing it present, rules needing it absent, per value class its entry)
_FieldEntry = tuple[str, int, int, dict[type, _ClassEntry]]
#: the class whose entry a value of a kind takes (ints take the float one: numbers are
#: keyed as floats; subclasses of str take str's)
_CLASS_OF = {"s": str, "b": bool, "n": float}


class Gate:
    """For the rules of one fact type, in chunk order (`spans`: each chunk's index and the
    end of its run of rule positions), the chunks a fact could match in."""

    def __init__(
        self, patterns: Sequence[Mapping[str, Any]], spans: Sequence[tuple[int, int]]
    ) -> None:
        self._all = (1 << len(patterns)) - 1
        self._spans = list(spans)
        #: rule position -> position in `_spans` of the chunk holding it
        self._chunk_of: list[int] = []
        start = 0
        for position, (_, end) in enumerate(self._spans):
            self._chunk_of.extend([position] * (end - start))
            start = end
        if start != len(patterns):
            raise ValueError("the chunk spans do not cover the rules")
        fields: dict[str, _FieldGate] = {}
        #: per field, per rule position, the keys of its `$eq` tests there
        equal: dict[str, dict[int, set[tuple[str, Any]]]] = {}
        orderings: dict[str, dict[str, dict[float, int]]] = {}
        for position, pattern in enumerate(patterns):
            bit = 1 << position
            for op, name, value in required_tests(pattern):
                if name == "t":
                    continue  # the fact type: facts only reach the gate of their type
                gate = fields.setdefault(name, _FieldGate(name))
                if op == "$nex":
                    gate.absent |= bit
                    continue
                gate.present |= bit
                kind = _constant_kind(value)
                if op == "$eq" and kind is not None:
                    gate.equal[kind] = gate.equal.get(kind, 0) | bit
                    keys = equal.setdefault(name, {}).setdefault(position, set())
                    keys.add((kind, _key(kind, value)))
                elif op in _ORDERINGS and kind == "n":
                    by_threshold = orderings.setdefault(name, {}).setdefault(op, {})
                    threshold = float(value)
                    by_threshold[threshold] = by_threshold.get(threshold, 0) | bit
        for name, per_rule in equal.items():
            gate = fields[name]
            # a value of a kind holds for a rule only if it is the one key of that kind
            # the rule's `$eq` tests on this field have (two different keys: none holds)
            holding: dict[tuple[str, Any], int] = {}
            for position, keys in per_rule.items():
                for kind in {k for k, _ in keys}:
                    of_kind = [key for key in keys if key[0] == kind]
                    if len(of_kind) == 1:
                        holding[of_kind[0]] = holding.get(of_kind[0], 0) | 1 << position
            gate.equal_failing = {key: gate.equal[key[0]] & ~mask for key, mask in holding.items()}
        for name, by_op in orderings.items():
            fields[name].orderings = [
                _Thresholds.build(op, entries) for op, entries in sorted(by_op.items())
            ]
        decided = _decided(self._spans, fields.values())
        self._fields = tuple(
            fields[name].only(decided).entry()
            for name in sorted(fields)
            if (fields[name].present | fields[name].absent) & decided
        )

    def chunks(self, data: Mapping[str, Any]) -> list[int]:
        """The indexes of the chunks where the fact `data` could match some rule."""
        failing = 0
        for name, present, absent, by_class in self._fields:
            value = data.get(name)
            if value is None:
                failing |= present
                continue
            cls = type(value)
            entry = by_class.get(cls)
            if entry is None or cls is float:
                kind = _kind(value)  # ints within 2**53, finite floats, subclasses
                if kind is None:
                    failing |= absent
                    continue
                entry = by_class[_CLASS_OF[kind]]
            otherwise, table, orderings = entry
            found = table.get(value)
            failing |= otherwise if found is None else found
            for bisect, thresholds, cumulated in orderings:
                failing |= cumulated[bisect(thresholds, value)]
        possible = self._all & ~failing
        out: list[int] = []
        while possible:
            position = self._chunk_of[(possible & -possible).bit_length() - 1]
            index, end = self._spans[position]
            out.append(index)
            possible >>= end
            possible <<= end
        return out


def _decided(spans: Sequence[tuple[int, int]], fields: Iterable[_FieldGate]) -> int:
    """The rules in chunks where every rule requires some test. A chunk holding a rule
    that requires none runs for every fact, so the tests of its other rules decide
    nothing: the gate leaves them out (and the fields left with no test)."""
    gated = 0
    for gate in fields:
        gated |= gate.present | gate.absent
    decided = start = 0
    for _, end in spans:
        span = ((1 << end) - 1) ^ ((1 << start) - 1)
        if span & ~gated == 0:
            decided |= span
        start = end
    return decided
