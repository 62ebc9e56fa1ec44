"""JSON on the hot paths (replay inputs and results, HTTP requests and card responses), via orjson.

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

`loads` is ``json.loads``, value for value and error for error: orjson parses, and
whatever it refuses (NaN, Infinity, 1e400, lone surrogates, UTF-16 text, a byte-order
mark, deep nesting, malformed JSON) is parsed again by the standard library, which then
gives its own value or its own exception. Text with a run of 19 or more digits goes to the
standard library directly: orjson reads integers beyond 64 bits as floats.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_FALLBACK = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
#: Every ASCII digit to "0", every other byte to " ": a run of 19 digits is then a
#: plain substring search (~10 us for a 12 KB body, where a regex takes ~140 us).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19


def loads(data: str | bytes) -> Any:
    """``json.loads(data)``: the same value, or the same exception (see the module doc)."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: orjson refuses them anyway
            return json.loads(data)
    else:
        raw = data
    if _LONG_NUMBER not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def dumps(value: Any) -> str:
    """`value` as compact JSON text (non-ASCII characters as they are)."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except orjson.JSONEncodeError:
        return _FALLBACK.encode(value)


#: A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF): only there can `loads` give a
#: string holding a lone surrogate (raw UTF-8 cannot encode one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate(data: bytes, value: Any) -> str | None:
    """The path (`a.b[0]`) of a string or key in `value` (parsed from `data`) that holds a
    lone UTF-16 surrogate, which no UTF-8 text can carry; None when there is none. Only a
    body with a surrogate escape is walked."""
    if _SURROGATE_ESCAPE.search(data) is None:
        return None
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not _utf8(item):
                return path or "(the body)"
        elif isinstance(item, dict):
            for key, child in item.items():
                if not _utf8(key):
                    return f"a key of {path or '(the body)'}"
                where = f"{path}.{key}" if path else str(key)
                stack.append((where, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
