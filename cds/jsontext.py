"""Compact JSON text for the hot paths (replay results, HTTP card responses), via orjson.

Encoding a 20-resource patient's cards (~22 KB) takes ~0.2 ms with the standard
library's encoder and ~0.02 ms with orjson: a tenth of a replay's per-input budget.

The text is the standard library's ``json.dumps(value, ensure_ascii=False,
separators=(",", ":"))`` for every value osteohooks produces (dicts with string keys,
lists, strings, finite numbers, booleans, None), with one difference of spelling: a float
whose repr has a negative exponent is written as a plain decimal (1e-05 -> 0.00001), the
same number for every JSON reader. A value orjson does not take (an integer beyond 64
bits, a non-string key) is written by the standard library instead, and a value neither
can write raises TypeError as ``json.dumps`` does. Non-finite floats, which the standard
library writes as the invalid tokens NaN/Infinity, come out as ``null``; the FHIR stage
rejects non-finite numbers, so cards never hold one.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_FALLBACK = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps_bytes(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _FALLBACK.encode(value).encode("utf-8")


def dumps(value: Any) -> str:
    """`value` as compact JSON text (non-ASCII characters as they are)."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except orjson.JSONEncodeError:
        return _FALLBACK.encode(value)
