"""cds.engine: the compiled rule set on durable_rules (the only importer of `durable`).

- `_QuietHost` overrides `Host._run`, so no timer threads poll the C engine.
- One Host per compiled rule set; a module-wide lock serialises every call into the C
  engine (evaluations, creation, deletion).
- One fresh session id per evaluation, deleted in `finally`; every fact asserted with
  its explicit `id`, its type as `t`, and the session id `sid`; absent fields omitted,
  and so are fields no pattern reads (results are built from the caller's facts).
- "Not handled" (durable's MessageNotHandledException, code 1 of the C calls) means
  that some fact matched no rule: an empty result for it, not an error. An exception
  in an action raises `EngineError` naming the rule (durable would swallow it into the
  session state).
- Actions are dispatched by `Engine._run_batch` straight from the C engine's action
  queue (as durable's `do_actions` does, minus its per-action Python overhead).
- Emit rules assert their derived fact in the same session (forward chaining).
- A rule whose condition holds through several `$or` branches is reported once per fact.
- The compiled rules are split over several durable rulesets ("chunks") so that none
  exceeds durable's fixed tables: a node of its alpha network keeps at
  most 128 `$ex`/`$nex` successors (`NEXT_LIST_LENGTH`; the 129th fails with error 107) and
  512 hashed successors (`NEXT_BUCKET_LENGTH`; the insert then never returns: the "cliff"
  at ~800 rules); and one fact making more than 64 results in one ruleset corrupts the
  heap. So a chunk holds, per fact type, rules whose result bound, distinct tests and
  rule count stay within `SplitBounds`; a chunk holds rules of one fact type. Each chunk
  that runs costs one more session per evaluation (~0.15M instructions: the sentinel's
  action, parsing the fact, deleting the session), so chunks are as full as allowed;
  creating a session also zeroes durable's tables for every rule of the chunk (~11,000
  instructions a rule, whatever the facts). So a chunk runs only where the gate
  (`cds.engine.gate`, built from the compiled patterns) finds that some fact could
  match one of its rules: a fact is encoded once per evaluation and that text goes to
  the chunks of its type the gate admits for it; a fact emitted in one chunk goes
  through the gate too, is asserted at once into that chunk if admitted there, and is
  queued for the others (which may not have run yet), until no chunk has work (forward
  chaining across chunks). Each chunk that runs gets its own session per evaluation
  (with the sentinel fact), all deleted at the end. Results do not depend on the split
  or the gate: firings and emitted facts are sets (sorted in `EngineResult`).
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import heapq
import json
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import durable_rules_engine  # type: ignore[import-not-found]
from durable.engine import Host

from cds.engine.gate import Gate
from cds.jsontext import dumps
from cds.rules.compiler import FORMAT, assert_single_fact
from cds.rules.facttypes import MAX_FACT_PROPERTIES
from cds.rules.result import (
    EngineResult,
    FactError,
    FactInput,
    Firing,
    build_emitted,
    make_result,
    normalize_facts,
)

__all__ = ["Engine", "EngineError", "EngineResult", "Firing", "SplitBounds"]

_LOCK = threading.RLock()
RULESET_NAME = "osteohooks"
#: Every session starts with this fact, matched by an internal no-op rule: durable-rules
#: 2.0.28 crashes (SIGSEGV) deleting a session in which no fact matched any rule.
SESSION_TYPE = "$session"
SESSION_FACT_ID = "$session"
SESSION_RULE = "$session"


#: The start of an action message, `{"<rule>":{"m":{"id": "<fact id>", ...`: durable
#: hands back the asserted message text, where `_message` puts the id first. Parsing
#: just this head instead of the whole message is ~10x faster; ids with escapes
#: (quotes, backslashes) do not match and take the json.loads path.
_ACTION = re.compile(r'^\{\s*"([^"\\]*)"\s*:\s*\{\s*"m"\s*:\s*\{\s*"id"\s*:\s*"([^"\\]*)"')


#: durable_rules' JSON reader refuses a number with an exponent but no fraction (`1e+16`,
#: `1e-07`, `5e-324`: error 204), which is how orjson writes such floats; it reads
#: `1.0e+16`. A string token is matched whole, so text inside strings is never changed.
_EXPONENT_HINT = re.compile(r"\d[eE][-+]?\d")
_BARE_EXPONENT = re.compile(r'"(?:[^"\\]|\\.)*"|(?<![\d.])(-?\d+)([eE][-+]?\d+)')


def _fraction(match: re.Match[str]) -> str:
    if match.group(1) is None:
        return match.group(0)
    return f"{match.group(1)}.0{match.group(2)}"


def _encode(value: Any) -> str:
    """Engine messages as compact JSON text (orjson: ~2 instead of ~15 us for a batch),
    every exponent number given the fraction durable_rules needs."""
    text = dumps(value)
    if _EXPONENT_HINT.search(text) is None:
        return text
    return _BARE_EXPONENT.sub(_fraction, text)


class EngineError(RuntimeError):
    """The engine failed (never to be read as 'no cards'); `rule_id` names the rule if known."""

    def __init__(self, message: str, rule_id: str | None = None) -> None:
        super().__init__(message)
        self.rule_id = rule_id


def _dispatched_by_engine(c: Any) -> None:  # pragma: no cover - never called
    """durable wants a `run` per rule; `Engine._run_batch` dispatches the actions itself."""


@dataclass(frozen=True)
class _Pattern:
    """What the split needs of one compiled single-fact pattern."""

    fact_type: str
    fields: frozenset[str]
    #: distinct `$ex`/`$nex` tests and distinct other tests (JSON text of each)
    exists_tests: frozenset[str]
    other_tests: frozenset[str]
    #: at most how many results one fact can make through this pattern (`_paths`)
    paths: int


def _field(expr: Mapping[str, Any]) -> str | None:
    ((op, arg),) = expr.items()
    if op in ("$and", "$or"):
        return None
    return str(next(iter(arg))) if op.startswith("$") else op


def _paths(expr: Mapping[str, Any]) -> int:
    """An upper bound of the results one fact makes through `expr` in durable.

    durable reports a match once per `$or` branch that holds, so a fact can match one
    rule several times. `$and`: the product of its parts; `$or`: the sum of its branches,
    where the leaf tests of one field count as one path (`$nex` excludes every comparison
    on its field, and `$eq` tests of one field exclude each other) plus one per other
    comparison of that field (two `$neq` or `$lt` tests may both hold).
    """
    ((op, arg),) = expr.items()
    if op == "$and":
        product = 1
        for item in arg:
            product *= _paths(item)
        return product
    if op != "$or":
        return 1
    total = 0
    by_field: dict[str, list[str]] = {}
    for item in arg:
        name = _field(item)
        if name is None:
            total += _paths(item)
        else:
            by_field.setdefault(name, []).append(next(iter(item)))
    for ops in by_field.values():
        overlapping = sum(1 for o in ops if o not in ("$nex", "$eq"))
        total += max(1, overlapping + (1 if "$eq" in ops else 0))
    return total


def _pattern(pattern: Mapping[str, Any]) -> _Pattern:
    fields: set[str] = set()
    exists: set[str] = set()
    other: set[str] = set()
    fact_type = ""

    def walk(expr: Mapping[str, Any]) -> None:
        nonlocal fact_type
        ((op, arg),) = expr.items()
        if op in ("$and", "$or"):
            for item in arg:
                walk(item)
            return
        if op == "t":
            fact_type = str(arg)
            return
        (exists if op in ("$ex", "$nex") else other).add(json.dumps(expr, sort_keys=True))
        if op.startswith("$"):
            fields.update(arg)
        else:
            fields.add(op)

    walk(pattern)
    return _Pattern(
        fact_type, frozenset(fields), frozenset(exists), frozenset(other), _paths(pattern)
    )


@dataclass(frozen=True)
class SplitBounds:
    """How much of one fact type's rules one durable ruleset may hold (module docstring).

    - `results`: durable-rules 2.0.28 corrupts its heap (`free(): invalid size`, the
      process aborts; with other heap layouts SIGSEGV, or durable's error 303) when
      one fact makes more than 64 results in one ruleset's session
      (`tests/engine/test_scale.py` shows 64 and 65 in a child process). A fact makes one
      result per rule it matches, or more where `$or` branches hold together (a rule of
      the bundled set makes 20 for one fact with many absent fields). A chunk keeps the
      sum of its rules' `_paths` bounds per fact type within 64, so no fact can make more.
    - `exists`, `hashed`: a node of durable's alpha network has children of two kinds:
      `$ex`/`$nex` tests in a list of 128 entries (the 129th fails, error 107) and every
      other test and rule end in a hash set of 512 (the 513th insert never returns).
      Children of one node are distinct tests (durable shares identical ones), so a chunk
      whose distinct tests of a kind plus its rules stay within these bounds can never
      overflow either table, whatever the shape of its rules.
    """

    results: int = 64
    exists: int = 100
    hashed: int = 400


def partition(patterns: Mapping[str, _Pattern], bounds: SplitBounds) -> list[list[str]]:
    """Rule ids in chunks of one fact type each: per fact type (in name order), in rule id
    order, a new chunk when the next rule would take the chunk past `bounds`.
    Deterministic. A chunk never mixes types, so a fact wakes only chunks of its own
    type (and the gate leaves out those where it cannot match: `cds.engine.gate`)."""

    @dataclass
    class Open:
        rule_ids: list[str] = field(default_factory=list)
        exists: set[str] = field(default_factory=set)
        other: set[str] = field(default_factory=set)
        results: int = 0

    per_type: dict[str, list[Open]] = {}
    for rule_id in sorted(patterns):
        p = patterns[rule_id]
        chunks = per_type.setdefault(p.fact_type, [Open()])
        last = chunks[-1]
        rules = len(last.rule_ids) + 1
        fits = (
            last.results + p.paths <= bounds.results
            and len(last.exists | p.exists_tests) + rules <= bounds.exists
            and len(last.other | p.other_tests) + rules <= bounds.hashed
        )
        if not fits and last.rule_ids:
            last = Open()
            chunks.append(last)
        last.rule_ids.append(rule_id)
        last.results += p.paths
        last.exists |= p.exists_tests
        last.other |= p.other_tests
    return [chunk.rule_ids for fact_type in sorted(per_type) for chunk in per_type[fact_type]]


#: glibc's M_TRIM_THRESHOLD and M_MMAP_THRESHOLD (malloc.h) and the values the engine
#: sets: see `_keep_freed_heap` (32 MiB is glibc's largest mmap threshold on 64 bits)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 256 * 1024 * 1024
MMAP_THRESHOLD = 32 * 1024 * 1024
_heap_kept = False


def _keep_freed_heap() -> bool:
    """Keep up to `TRIM_THRESHOLD` bytes of freed heap in the process (glibc `mallopt`),
    and take blocks of up to `MMAP_THRESHOLD` bytes from the heap, not from fresh mmaps.

    Each evaluation creates one durable session per chunk, and each session allocates
    and zeroes tables for every rule of its chunk (~8 kB a rule: ~40 MB at 5,000 rules),
    all freed when the sessions are deleted at the end (one chunk's block of rule tables
    is ~0.5 MB). With glibc's defaults that memory goes back to the kernel after every
    evaluation (heap trimmed, blocks above the mmap threshold unmapped; setting one
    value also stops glibc's own adjustment of the other) and the next one faults it in
    again: in a service-sized process ~10,000 page faults and ~13 ms of
    system time per 5,000-rule evaluation, more than the rules themselves. Kept, the
    next evaluation reuses it (peak RSS is unchanged: the memory is in use at every
    evaluation's peak anyway). Process-wide and set once; a no-op where the C library is
    not glibc. Returns whether it was set.
    """
    global _heap_kept
    if _heap_kept:
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    kept = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)
    _heap_kept = kept and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    return _heap_kept


class _QuietHost(Host):  # type: ignore[misc]
    """A durable Host without the two background timer threads."""

    def _run(self) -> None:
        return None


@dataclass
class _Chunk:
    """One durable ruleset of the split: its C handle and its rules (all of one fact type)."""

    name: str
    handle: Any
    rule_ids: tuple[str, ...]


@dataclass
class _Evaluation:
    sid: str
    facts: dict[str, tuple[str, dict[str, Any]]]
    firings: dict[tuple[str, str], Firing] = field(default_factory=dict)
    emitted: list[dict[str, Any]] = field(default_factory=list)
    #: the JSON text of the messages waiting for each chunk (by index), and those indexes
    #: as a heap (a chunk's batch runs before any later chunk's); chunks whose session
    #: exists. Each fact is encoded once and its text sent to every chunk of its type.
    pending: dict[int, list[str]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    started: set[int] = field(default_factory=set)
    running: int = -1

    def queue(self, index: int, text: str) -> None:
        waiting = self.pending.get(index)
        if waiting is None:
            self.pending[index] = [text]
            heapq.heappush(self.order, index)
        else:
            waiting.append(text)


class Engine:
    """Evaluate facts against one compiled rule set.

    `Engine(ruleset)` takes a `cds.rules.RuleSet` (its `.compiled`) or the compiled dict;
    `bounds` limits each chunk of the split (module docstring; tests make them small).
    """

    def __init__(self, ruleset: Any, *, bounds: SplitBounds | None = None) -> None:
        compiled = ruleset if isinstance(ruleset, Mapping) else ruleset.compiled
        if compiled.get("format") != FORMAT:
            raise EngineError(f"not a compiled rule set of format {FORMAT}")
        self._rules: dict[str, Any] = dict(compiled["rules"])
        self._emits: dict[str, Any] = dict(compiled["emits"])
        self._host: _QuietHost | None = None
        self._chunks: list[_Chunk] = []
        #: per fact type, which of its chunks a fact could match in (`cds.engine.gate`)
        self._gates: dict[str, Gate] = {}
        #: per fact type, the fields some pattern reads: only those go into the engine
        #: (a smaller message is parsed faster by durable, in C and in its actions)
        self._fields: dict[str, tuple[str, ...]] = {}
        patterns: dict[str, _Pattern] = {}
        for rule_id, rule in self._rules.items():
            assert_single_fact(rule_id, rule)
            p = patterns[rule_id] = _pattern(rule["all"][0]["m"])
            known = set(self._fields.get(p.fact_type, ()))
            self._fields[p.fact_type] = tuple(sorted(known | p.fields))
        groups = partition(patterns, bounds or SplitBounds())
        definitions: dict[str, dict[str, Any]] = {}
        for index, rule_ids in enumerate(groups):
            definition: dict[str, Any] = {}
            for rule_id in rule_ids:
                entry = copy.deepcopy(self._rules[rule_id])
                entry["run"] = _dispatched_by_engine
                definition[rule_id] = entry
            definition[SESSION_RULE] = {
                "all": [{"m": {"$and": [{"t": SESSION_TYPE}]}}],
                "run": _dispatched_by_engine,
            }
            definitions[self._chunk_name(index, len(groups))] = definition
        # per fact type, its rules in chunk order and where each chunk's run ends
        ordered: dict[str, list[Mapping[str, Any]]] = {}
        spans: dict[str, list[tuple[int, int]]] = {}
        for index, rule_ids in enumerate(groups):
            fact_type = patterns[rule_ids[0]].fact_type
            rules = ordered.setdefault(fact_type, [])
            rules.extend(self._rules[r]["all"][0]["m"] for r in rule_ids)
            spans.setdefault(fact_type, []).append((index, len(rules)))
        self._gates = {t: Gate(ordered[t], spans[t]) for t in ordered}
        if definitions:
            with _LOCK:
                _keep_freed_heap()
                self._host = _QuietHost(definitions)
                for index, rule_ids in enumerate(groups):
                    name = self._chunk_name(index, len(groups))
                    self._chunks.append(
                        _Chunk(
                            name,
                            self._host.get_ruleset(name)._handle,
                            tuple(rule_ids),
                        )
                    )

    @staticmethod
    def _chunk_name(index: int, count: int) -> str:
        return RULESET_NAME if count == 1 else f"{RULESET_NAME}-{index}"

    @property
    def rule_ids(self) -> list[str]:
        return sorted(self._rules)

    @property
    def chunk_count(self) -> int:
        """How many durable rulesets the rules are split over."""
        return len(self._chunks)

    def close(self) -> None:
        """Free the C engine's rule sets (the Engine cannot evaluate afterwards)."""
        with _LOCK:
            for chunk in self._chunks:
                if chunk.handle is not None:
                    durable_rules_engine.delete_ruleset(chunk.handle)
                    chunk.handle = None
            self._host = None

    def _fire(self, ev: _Evaluation, rule_id: str, fact_id: str) -> None:
        """The action of every rule: record the firing; an emit rule asserts its fact."""
        key = (rule_id, fact_id)
        if key in ev.firings:
            return  # the same fact matched through another $or branch
        ftype, data = ev.facts[fact_id]
        ev.firings[key] = Firing(rule_id, fact_id, ftype, data)
        emit = self._emits.get(rule_id)
        if emit is None:
            return
        target, new = build_emitted(emit, data, rule_id)
        if new["id"] in ev.facts:
            raise FactError(f"emitted fact id {new['id']} is taken")
        message = self._message(target, new, ev.sid)
        if len(message) > MAX_FACT_PROPERTIES:
            raise FactError(f"emitted fact {new['id']} has too many properties")
        ev.facts[new["id"]] = (target, new)
        ev.emitted.append({**new, "t": target})
        text = _encode(message)
        gate = self._gates.get(target)
        for index in gate.chunks(new) if gate is not None else ():
            if index != ev.running:
                ev.queue(index, text)
                continue
            # forward chaining: the actions it queues run in this session's action loop;
            # code 1 (not handled) only says that no rule matches the derived fact
            code, _ = durable_rules_engine.assert_fact(self._chunks[index].handle, text)
            if code == 2:
                raise FactError(f"durable_rules saw the emitted fact {new['id']} already")

    def _message(self, fact_type: str, data: Mapping[str, Any], sid: str) -> dict[str, Any]:
        """The engine message of a fact: id, t, sid and the fields patterns read."""
        message = {"id": data["id"], "t": fact_type, "sid": sid}  # id first: see _ACTION
        for name in self._fields.get(fact_type, ()):
            value = data.get(name)
            if value is not None:
                message[name] = value
        return message

    def _run_batch(self, ev: _Evaluation, index: int, texts: list[str]) -> None:
        """Assert a batch into one chunk, then run the actions it queued (and theirs).

        The C engine is driven directly, as durable's `Ruleset.do_actions` does, without
        its per-action Python machinery (closures, timers, state JSON round trips):
        `start_action_for_state`, then `complete_and_start_action` after each action
        until no action is left. durable also re-writes the session state after every
        action (`update_state`); our actions never change the state and no rule reads
        it (`$s`), so that write (~40% of the action loop) is skipped. durable's own
        `Host.assert_facts` raises MessageNotHandledException when any one fact of a
        batch matches no rule, *before* running the actions the others queued: here the
        actions run whatever the batch's code.
        """
        handle = self._chunks[index].handle
        ev.running = index
        try:
            code, state_handle = durable_rules_engine.assert_facts(
                handle, "[" + ",".join(texts) + "]"
            )
        except Exception as exc:
            raise EngineError(f"durable_rules refused the facts: {exc}") from exc
        if code == 2:
            raise EngineError("durable_rules reported a fact as already seen (duplicate id)")
        started = durable_rules_engine.start_action_for_state(handle, state_handle)
        if not started:
            return
        message_text = started[1]
        while message_text:
            head = _ACTION.match(message_text)
            if head is not None:
                rule_id, fact_id = head.group(1), head.group(2)
            else:  # an id with escapes: parse the whole message
                ((rule_id, match),) = json.loads(message_text).items()
                fact_id = str(match["m"]["id"])
            if rule_id != SESSION_RULE:
                try:
                    self._fire(ev, rule_id, fact_id)
                except Exception as exc:
                    durable_rules_engine.abandon_action(handle, state_handle)
                    raise EngineError(
                        f"rule '{rule_id}' failed: {type(exc).__name__}: {exc}", rule_id
                    ) from exc
            message_text = durable_rules_engine.complete_and_start_action(handle, state_handle)

    def _drain(self, ev: _Evaluation) -> None:
        """Run every chunk's waiting messages until none is left (chunks in order)."""
        sentinel = _encode({"id": SESSION_FACT_ID, "t": SESSION_TYPE, "sid": ev.sid})
        while ev.order:
            index = heapq.heappop(ev.order)
            texts = ev.pending.pop(index)
            if index not in ev.started:
                # every session starts with the sentinel: see SESSION_TYPE
                texts.insert(0, sentinel)
                ev.started.add(index)
            self._run_batch(ev, index, texts)

    def evaluate(self, facts: Sequence[FactInput]) -> EngineResult:
        """Run every rule over `facts` (Fact models, or mappings with `t` and `id`)."""
        try:
            normalized = normalize_facts(facts)
        except FactError as exc:
            raise EngineError(str(exc)) from exc
        for ftype, data in normalized:
            if data["id"] == SESSION_FACT_ID or ftype == SESSION_TYPE:
                raise EngineError(f"the fact id and type {SESSION_FACT_ID!r} are the engine's own")
            if len(data) + 2 > MAX_FACT_PROPERTIES:
                raise EngineError(
                    f"fact {data['id']} of type '{ftype}' has {len(data) + 2} properties; "
                    f"durable_rules takes at most {MAX_FACT_PROPERTIES}"
                )
        if self._host is None or not normalized:
            if self._host is None and self._rules:
                raise EngineError("the engine was closed")
            return EngineResult()
        with _LOCK:
            ev = _Evaluation(sid=str(uuid.uuid4()), facts={d["id"]: (t, d) for t, d in normalized})
            for ftype, data in normalized:
                gate = self._gates.get(ftype)
                routes = gate.chunks(data) if gate is not None else ()
                if routes:
                    text = _encode(self._message(ftype, data, ev.sid))
                    for index in routes:
                        ev.queue(index, text)
            failed = True
            try:
                self._drain(ev)
                failed = False
            finally:
                for index in sorted(ev.started):
                    try:
                        durable_rules_engine.delete_state(self._chunks[index].handle, ev.sid)
                    except durable_rules_engine.error:
                        if not failed:
                            raise
        return make_result(ev.firings.values(), ev.emitted)
