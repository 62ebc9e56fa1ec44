"""YAML reading with positions: plain Python data plus the line/column of every node.

ruamel.yaml (round-trip) keeps the position of each key and value. The loaded document
is converted to plain dicts/lists/scalars (ruamel's scalar subclasses and YAML dates
become int/float/bool/str), and `Source.positions` maps each node's path (a tuple of
keys and list indices from the document root) to where its value starts, and
`Source.key_positions` to where its key starts.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:  # libyaml through ruamel.yaml.clib: the fast path of read_yaml
    from _ruamel_yaml import CParser  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - without it every parse is round-trip
    CParser = None

from cds.rules.errors import RuleError
from cds.rules.yamlhelp import explain as explain_yaml_error

Loc = tuple[str | int, ...]


@dataclass
class Source:
    """One parsed YAML file."""

    path: str
    data: Any
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def _nearest(self, loc: Loc, table: dict[Loc, tuple[int, int]]) -> tuple[int, int]:
        probe = tuple(loc)
        while probe:
            if probe in table:
                return table[probe]
            probe = probe[:-1]
        return self.positions.get((), (1, 1))

    def at(self, loc: Loc) -> tuple[int, int]:
        """Position of the value at `loc` (or of its nearest existing ancestor)."""
        return self._nearest(loc, self.positions)

    def key_at(self, loc: Loc) -> tuple[int, int]:
        """Position of the key of `loc` (falls back to its value's position)."""
        if loc in self.key_positions:
            return self.key_positions[loc]
        return self.at(loc)

    def error(self, loc: Loc, message: str, *, key: bool = False) -> RuleError:
        line, col = self.key_at(loc) if key else self.at(loc)
        return RuleError(self.path, line, col, message)

    def has(self, loc: Loc) -> bool:
        return loc in self.positions


def _plain(node: Any, loc: Loc, src: Source, line: int, col: int) -> Any:
    src.positions[loc] = (line, col)
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key in node:
            kline, kcol = node.lc.key(key)
            vline, vcol = node.lc.value(key)
            skey = str(key) if not isinstance(key, str) else key
            src.key_positions[(*loc, skey)] = (kline + 1, kcol + 1)
            out[skey] = _plain(node[key], (*loc, skey), src, vline + 1, vcol + 1)
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for index, item in enumerate(node):
            iline, icol = node.lc.item(index)
            items.append(_plain(item, (*loc, index), src, iline + 1, icol + 1))
        return items
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, dt.datetime):
        return node.isoformat()
    if isinstance(node, dt.date):
        return node.isoformat()
    if isinstance(node, str):
        return str(node)
    return node


def display_path(path: Path) -> str:
    """The path as users see it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_yaml(path: Path, text: str | None = None, *, fast: bool = False) -> Source | RuleError:
    """Parse one YAML file; a syntax error (or duplicate key) is returned as a RuleError.

    ruamel's round-trip parser is pure Python (~0.2 s for a large rule file), so parses
    are memoised on (shown path, text): reloading unchanged rules in one process (a
    service reload, a test suite) does not parse them again. Sources are never mutated.

    `fast=True` first composes the document with libyaml (ruamel.yaml.clib) and takes
    the data and the positions from its nodes (the same marks the round-trip loader
    records); anything beyond plain mappings, sequences and str/int/float/bool/null
    scalars (merge keys, tags, dates, duplicate or non-string keys, a syntax
    error) takes the round-trip path, which words the errors.
    """
    shown = display_path(path)
    if text is None:
        text = path.read_text(encoding="utf-8")
    if fast:
        source = _fast_parse(shown, text)
        if source is not None:
            return source
    return _parse(shown, text)


_TAG = "tag:yaml.org,2002:"
_FAST_SCALARS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null"))


class _NotPlain(Exception):
    """The document needs the round-trip loader."""


def _compose(text: str) -> tuple[Node | None, SafeConstructor]:
    yaml = YAML(typ="safe", pure=False)
    node = yaml.compose(text)
    return node, yaml.constructor


@functools.lru_cache(maxsize=128)
def _fast_parse(shown: str, text: str) -> Source | None:
    if CParser is None or "%YAML" in text:
        return None
    try:
        root, constructor = _compose(text)
    except Exception:
        return None
    src = Source(shown, None)
    if root is None:
        src.positions[()] = (1, 1)
        src.data = {}
        return src

    def plain(node: Node, loc: Loc, line: int, col: int) -> Any:
        # An alias is its anchored node again: its marks are the anchor's, as the
        # round-trip loader records them.
        src.positions[loc] = (line, col)
        if isinstance(node, MappingNode):
            if node.tag != _TAG + "map":
                raise _NotPlain
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag != _TAG + "str":
                    raise _NotPlain  # merge keys, non-string keys
                key = key_node.value
                if key in out:
                    raise _NotPlain  # duplicate key: the round-trip loader words it
                kmark = key_node.start_mark
                src.key_positions[(*loc, key)] = (kmark.line + 1, kmark.column + 1)
                vmark = value_node.start_mark
                out[key] = plain(value_node, (*loc, key), vmark.line + 1, vmark.column + 1)
            return out
        if isinstance(node, SequenceNode):
            if node.tag != _TAG + "seq":
                raise _NotPlain
            items: list[Any] = []
            for index, item in enumerate(node.value):
                mark = item.start_mark
                items.append(plain(item, (*loc, index), mark.line + 1, mark.column + 1))
            return items
        if not isinstance(node, ScalarNode) or node.tag not in _FAST_SCALARS:
            raise _NotPlain
        if node.tag == _TAG + "str":
            return str(node.value)
        value = constructor.construct_object(node, deep=True)
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        return value

    try:
        src.data = plain(root, (), 1, 1)
    except _NotPlain:
        return None
    except Exception:  # a scalar the safe constructor refuses: let round-trip say why
        return None
    if src.data is None:
        src.data = {}
    return src


@functools.lru_cache(maxsize=128)
def _parse(shown: str, text: str) -> Source | RuleError:
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        explained = explain_yaml_error(exc, text)
        return RuleError(shown, explained.line, explained.col, f"YAML: {explained.message}")
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad encoding)
        return RuleError(shown, 1, 1, f"YAML: {exc}")
    src = Source(shown, None)
    src.data = _plain(doc, (), src, 1, 1)
    if src.data is None:
        src.data = {}
    return src
