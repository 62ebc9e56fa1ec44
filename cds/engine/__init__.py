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
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import durable_rules_engine  # type: ignore[import-not-found]
from durable.engine import Host

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

__all__ = ["Engine", "EngineError", "EngineResult", "Firing"]

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


def _pattern_fields(pattern: Mapping[str, Any]) -> tuple[str, frozenset[str]]:
    """(fact type, fields read) of a compiled single-fact pattern."""
    fields: set[str] = set()
    fact_type = ""

    def walk(expr: Mapping[str, Any]) -> None:
        nonlocal fact_type
        ((op, arg),) = expr.items()
        if op in ("$and", "$or"):
            for item in arg:
                walk(item)
        elif op.startswith("$"):
            fields.update(arg)
        elif op == "t":
            fact_type = str(arg)
        else:
            fields.add(op)

    walk(pattern)
    return fact_type, frozenset(fields)


class _QuietHost(Host):  # type: ignore[misc]
    """A durable Host without the two background timer threads."""

    def _run(self) -> None:
        return None


@dataclass
class _Evaluation:
    sid: str
    facts: dict[str, tuple[str, dict[str, Any]]]
    firings: dict[tuple[str, str], Firing] = field(default_factory=dict)
    emitted: list[dict[str, Any]] = field(default_factory=list)


class Engine:
    """Evaluate facts against one compiled rule set.

    `Engine(ruleset)` takes a `cds.rules.RuleSet` (its `.compiled`) or the compiled dict.
    """

    def __init__(self, ruleset: Any) -> None:
        compiled = ruleset if isinstance(ruleset, Mapping) else ruleset.compiled
        if compiled.get("format") != FORMAT:
            raise EngineError(f"not a compiled rule set of format {FORMAT}")
        self._rules: dict[str, Any] = dict(compiled["rules"])
        self._emits: dict[str, Any] = dict(compiled["emits"])
        self._host: _QuietHost | None = None
        self._handle: Any = None
        #: per fact type, the fields some pattern reads: only those go into the engine
        #: (a smaller message is parsed faster by durable, in C and in its actions)
        self._fields: dict[str, tuple[str, ...]] = {}
        definition: dict[str, Any] = {}
        for rule_id, rule in self._rules.items():
            assert_single_fact(rule_id, rule)
            fact_type, fields = _pattern_fields(rule["all"][0]["m"])
            known = set(self._fields.get(fact_type, ()))
            self._fields[fact_type] = tuple(sorted(known | fields))
            entry = copy.deepcopy(rule)
            entry["run"] = _dispatched_by_engine
            definition[rule_id] = entry
        if definition:
            definition[SESSION_RULE] = {
                "all": [{"m": {"$and": [{"t": SESSION_TYPE}]}}],
                "run": _dispatched_by_engine,
            }
            with _LOCK:
                self._host = _QuietHost({RULESET_NAME: definition})
                self._handle = self._host.get_ruleset(RULESET_NAME)._handle

    @property
    def rule_ids(self) -> list[str]:
        return sorted(self._rules)

    def close(self) -> None:
        """Free the C engine's rule set (the Engine cannot evaluate afterwards)."""
        with _LOCK:
            if self._handle is not None:
                durable_rules_engine.delete_ruleset(self._handle)
                self._handle = None
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
        # forward chaining: the actions it queues run in this session's action loop;
        # code 1 (not handled) only says that no rule matches the derived fact
        code, _ = durable_rules_engine.assert_fact(self._handle, _encode(message))
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

    def _run_batch(self, ev: _Evaluation, messages: list[dict[str, Any]]) -> None:
        """Assert a batch, then run the actions it queued (and those they queue).

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
        handle = self._handle
        try:
            code, state_handle = durable_rules_engine.assert_facts(handle, _encode(messages))
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
            if self._handle is None and self._rules:
                raise EngineError("the engine was closed")
            return EngineResult()
        with _LOCK:
            ev = _Evaluation(sid=str(uuid.uuid4()), facts={d["id"]: (t, d) for t, d in normalized})
            messages = [{"id": SESSION_FACT_ID, "t": SESSION_TYPE, "sid": ev.sid}]
            messages.extend(self._message(ftype, data, ev.sid) for ftype, data in normalized)
            asserted = False
            try:
                self._run_batch(ev, messages)
                asserted = True
            except EngineError:
                asserted = True
                raise
            finally:
                try:
                    self._host.delete_state(RULESET_NAME, ev.sid)
                except durable_rules_engine.error:
                    if asserted:
                        raise
        return make_result(ev.firings.values(), ev.emitted)
