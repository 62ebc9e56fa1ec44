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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
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


class _Events:
    """The parse events of one document, with anchored nodes replayed at their aliases.

    libyaml's events are read one at a time and dropped once used: no node tree of the
    whole file is built (composing one made ~60,000 objects per 250 rules that lived
    while the file was converted, long enough to reach the collector's oldest
    generation, so each file triggered full collections of everything read before it:
    the load was quadratic in the rule count, issue 15). The events of an anchored node
    are kept to be read again at each alias (the alias is its anchored node again, as
    the composer makes it).
    """

    def __init__(self, events: Iterator[Any]) -> None:
        self._events = events
        #: events to read again (an alias's anchored node), the next one last
        self._replay: list[Any] = []
        self._recording: list[list[Any]] = []
        self.anchors: dict[str, list[Any]] = {}
        #: the last event read is one read again
        self.replayed = False

    def next(self) -> Any:
        self.replayed = bool(self._replay)
        if self.replayed:
            return self._replay.pop()
        event = next(self._events)
        for recording in self._recording:
            recording.append(event)
        return event

    def record(self, event: Any) -> list[Any] | None:
        """Start keeping the events of the anchored node `event` (the last event read)
        starts (None: it is being read again, its events are kept already)."""
        if event.anchor in self.anchors:
            if self.replayed:
                return None
            raise _NotPlain  # an anchor defined twice: the round-trip loader words it
        recording = [event]
        self._recording.append(recording)
        return recording

    def recorded(self, anchor: str, recording: list[Any]) -> None:
        self._recording.remove(recording)
        self.anchors[anchor] = recording

    def replay(self, anchor: str) -> None:
        if anchor not in self.anchors:
            raise _NotPlain  # an undefined alias: the round-trip loader words it
        self._replay.extend(reversed(self.anchors[anchor]))


def _events(text: str) -> tuple[Iterator[Any], Any, SafeConstructor]:
    yaml = YAML(typ="safe", pure=False)
    return iter(yaml.parse(text)), yaml.resolver, yaml.constructor


@functools.lru_cache(maxsize=128)
def _fast_parse(shown: str, text: str) -> Source | None:
    if CParser is None or "%YAML" in text:
        return None
    try:
        stream, resolver, constructor = _events(text)
        events = _Events(stream)
        src = Source(shown, None)
        data = _document(events, src, resolver, constructor)
    except _NotPlain:
        return None
    except Exception:  # a syntax error, or a scalar the safe constructor refuses:
        return None  # let round-trip say why
    src.data = {} if data is None else data
    return src


def _document(events: _Events, src: Source, resolver: Any, constructor: SafeConstructor) -> Any:
    """The one document of the stream as plain data, its positions recorded in `src`."""
    scalars: dict[tuple[str, str], Any] = {}  # (tag, text) -> value, within this file

    def resolved(event: Any, kind: type[Node]) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            value = event.value if kind is ScalarNode else None
            return str(resolver.resolve(kind, value, event.implicit))
        return str(tag)

    def scalar(event: Any) -> Any:
        tag = resolved(event, ScalarNode)
        if tag not in _FAST_SCALARS:
            raise _NotPlain
        if tag == _TAG + "str":
            return str(event.value)
        key = (tag, event.value)
        if key not in scalars:
            node = ScalarNode(tag, event.value, event.start_mark, event.end_mark)
            value = constructor.construct_non_recursive_object(node)
            if isinstance(value, bool):
                value = bool(value)
            elif isinstance(value, int):
                value = int(value)
            elif isinstance(value, float):
                value = float(value)
            scalars[key] = value
        return scalars[key]

    def plain(event: Any, loc: Loc, line: int, col: int) -> Any:
        # An alias is its anchored node again: its marks are the anchor's, as the
        # round-trip loader records them.
        src.positions[loc] = (line, col)
        anchor = getattr(event, "anchor", None)
        if anchor is None:
            return value_of(event, loc)
        recording = events.record(event)
        value = value_of(event, loc)
        if recording is not None:
            events.recorded(anchor, recording)
        return value

    def value_of(event: Any, loc: Loc) -> Any:
        if isinstance(event, MappingStartEvent):
            if resolved(event, MappingNode) != _TAG + "map":
                raise _NotPlain
            out: dict[str, Any] = {}
            while True:
                key_event = node_event()
                if isinstance(key_event, MappingEndEvent):
                    return out
                if not isinstance(key_event, ScalarEvent):
                    raise _NotPlain  # merge keys, non-string keys
                if resolved(key_event, ScalarNode) != _TAG + "str":
                    raise _NotPlain
                key = key_event.value
                if key in out:
                    raise _NotPlain  # duplicate key: the round-trip loader words it
                kmark = key_event.start_mark
                src.key_positions[(*loc, key)] = (kmark.line + 1, kmark.column + 1)
                value_event = node_event()
                vmark = value_event.start_mark
                out[key] = plain(value_event, (*loc, key), vmark.line + 1, vmark.column + 1)
        if isinstance(event, SequenceStartEvent):
            if resolved(event, SequenceNode) != _TAG + "seq":
                raise _NotPlain
            items: list[Any] = []
            while True:
                item_event = node_event()
                if isinstance(item_event, SequenceEndEvent):
                    return items
                mark = item_event.start_mark
                items.append(plain(item_event, (*loc, len(items)), mark.line + 1, mark.column + 1))
        if isinstance(event, ScalarEvent):
            return scalar(event)
        raise _NotPlain

    def node_event() -> Any:
        """The next node's first event (an alias: its anchored node's, replayed)."""
        event = events.next()
        if isinstance(event, AliasEvent):
            events.replay(event.anchor)
            event = events.next()
        return event

    event = events.next()  # stream start
    event = events.next()
    if isinstance(event, StreamEndEvent):
        src.positions[()] = (1, 1)
        return None
    if not isinstance(event, DocumentStartEvent):
        raise _NotPlain
    data = plain(node_event(), (), 1, 1)
    if not isinstance(events.next(), DocumentEndEvent):
        raise _NotPlain
    if not isinstance(events.next(), StreamEndEvent):
        raise _NotPlain  # more than one document: the round-trip loader words it
    return data


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
