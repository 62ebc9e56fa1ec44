"""cds.jsontext: orjson text, equal to the standard library's compact text for card values."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds.jsontext import dumps, loads


def _stdlib(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _plain_float(x: float) -> bool:
    """Floats whose repr has no negative exponent (the one spelling that differs)."""
    return math.isfinite(x) and "e-" not in repr(x)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False).filter(_plain_float)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@given(JSON_VALUES)
def test_same_text_as_the_standard_library(value: Any) -> None:
    assert dumps(value) == _stdlib(value)


def test_a_real_card_list_is_byte_identical() -> None:
    cards = [
        {
            "uuid": "00f5a425-048b-5871-bb82-522eeb35f41b",
            "summary": "Osteoporosis: lowest T-score -2.5 at the lumbar spine",
            "indicator": "warning",
            "detail": "**Osteoporosis** T-score \u2264 -2.5 \u2014 CS-2.2\n\n0.663 g/cm\u00b2",
            "extension": {"org.osteohooks": {"value": -2.5, "rules": ["a", "b"], "n": 4}},
            "suggestions": [{"label": "DXA", "isRecommended": True}],
            "exception": None,
        }
    ]
    assert dumps(cards) == _stdlib(cards)


def test_small_numbers_are_the_same_number() -> None:
    text = dumps({"v": 1e-05})
    assert text == '{"v":0.00001}'
    assert json.loads(text) == {"v": 1e-05}


@pytest.mark.parametrize("value", [{"big": 2**70}, {1: "non-string key"}, [-(2**64)]])
def test_what_orjson_refuses_is_written_by_the_standard_library(value: Any) -> None:
    assert dumps(value) == _stdlib(value)


def test_an_unserialisable_value_raises_type_error() -> None:
    with pytest.raises(TypeError):
        dumps({"x": object()})
    with pytest.raises(TypeError):
        dumps({"x": {1, 2}})


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and int/float told apart."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _outcome(parse: Any, data: str | bytes) -> tuple[str, Any]:
    try:
        return "value", parse(data)
    except Exception as exc:  # the exception's type and text are part of the contract
        return type(exc).__name__, str(exc)


WIDE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)

ODD_TEXTS = [
    "1e400",
    "-1e400",
    "NaN",
    "[Infinity, -Infinity]",
    '"\\ud800"',
    "123456789012345678901234567890",
    "-9223372036854775809",
    "18446744073709551616",
    '{"a": 1, "a": 2}',
    "[1,]",
    "\ufeff{}",
    "",
    "[" * 5000 + "]" * 5000,
    '{"a": "\\u0000"}',
    "9007199254740993",
]


@given(WIDE_VALUES)
def test_loads_is_json_loads_on_any_json_text(value: Any) -> None:
    text = json.dumps(value)  # NaN, Infinity and big integers included
    for data in (text, text.encode("utf-8")):
        kind, got = _outcome(loads, data)
        want_kind, want = _outcome(json.loads, data)
        assert kind == want_kind
        assert _same(got, want)


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_loads_is_json_loads_on_junk(data: str | bytes) -> None:
    kind, got = _outcome(loads, data)
    want_kind, want = _outcome(json.loads, data)
    assert (kind, kind == "value" or got) == (want_kind, kind == "value" or want)
    if kind == "value":
        assert _same(got, want)


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_loads_is_json_loads_where_orjson_differs(text: str) -> None:
    for data in (text, text.encode("utf-8"), text.encode("utf-16")):
        kind, got = _outcome(loads, data)
        want_kind, want = _outcome(json.loads, data)
        assert kind == want_kind
        if kind == "value":
            assert _same(got, want)
        else:
            assert got == want
