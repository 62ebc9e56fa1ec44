"""The lint's contradiction check (`satisfiable`) agrees with the reference semantics.

For random tests on one field under `all`, `satisfiable` must say True exactly when some
value (or absence) of the field passes every test, as the reference evaluator decides.
The candidate values cover every region between the literals used (midpoints, values
just beyond), so for numbers, integers, dates and enumerations the brute force is exact.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cds.rules.facttypes import FieldSpec
from cds.rules.model import Condition
from cds.rules.reference import holds
from cds.rules.validate import _Test, satisfiable

SPECS = {
    "number": FieldSpec("x", "number", True, "", None),
    "integer": FieldSpec("x", "integer", True, "", None),
    "date": FieldSpec("x", "date", True, "", None),
    "enum": FieldSpec("x", "string", True, "", ("a", "b", "c")),
    "boolean": FieldSpec("x", "boolean", True, "", None),
}
POOLS: dict[str, list[Any]] = {
    "number": [-2.5, -1.0, 0, 0.5, 1.0],
    "integer": [0, 1, 2, 3, 5],
    "date": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-03-01"],
    "enum": ["a", "b", "c"],
    "boolean": [True, False],
}


def candidates(kind: str) -> list[Any]:
    pool = POOLS[kind]
    if kind == "number":
        points = sorted({float(v) for v in pool})
        mids = [(a + b) / 2 for a, b in itertools.pairwise(points)]
        return [*points, *mids, points[0] - 1, points[-1] + 1]
    if kind == "integer":
        return list(range(-3, 10))
    if kind == "date":
        start = dt.date(2023, 12, 29)
        return [(start + dt.timedelta(days=i)).isoformat() for i in range(70)]
    return list(pool)


@st.composite
def field_tests(draw: Any) -> tuple[str, list[dict[str, Any]]]:
    kind = draw(st.sampled_from(sorted(SPECS)))
    ops = ["eq", "ne", "in", "exists", "missing"]
    if kind in ("number", "integer", "date"):
        ops += ["lt", "le", "gt", "ge"]
    tests = []
    for _ in range(draw(st.integers(2, 4))):
        op = draw(st.sampled_from(ops))
        if op in ("exists", "missing"):
            tests.append({"field": "x", op: True})
        elif op == "in":
            values = draw(st.lists(st.sampled_from(POOLS[kind]), min_size=1, max_size=3))
            tests.append({"field": "x", "in": values})
        else:
            tests.append({"field": "x", op: draw(st.sampled_from(POOLS[kind]))})
    return kind, tests


@given(field_tests())
def test_satisfiable_is_exact(case: tuple[str, list[dict[str, Any]]]) -> None:
    kind, raw = case
    spec = SPECS[kind]
    conditions = [Condition.model_validate(t) for t in raw]
    tests = []
    for cond, data in zip(conditions, raw, strict=True):
        (op,) = cond.operators()
        tests.append(_Test(spec, op, data[op], ()))
    facts: list[dict[str, Any]] = [{}] + [{"x": v} for v in candidates(kind)]
    brute = any(all(holds(c, fact, {}) for c in conditions) for fact in facts)
    assert satisfiable(spec, tests) == brute, raw
