"""cds.engine: the compiled rule set on durable_rules (the only importer of `durable`).

- `_QuietHost` overrides `Host._run`, so no timer threads poll the C engine.
- One Host per compiled rule set; a module-wide lock serialises every call into the C
  engine (evaluations, creation, deletion).
- One fresh session id per evaluation, deleted in `finally`; every fact asserted with
  its explicit `id`, its type as `t`, and the session id `sid`; absent fields omitted.
- `MessageNotHandledException` means no rule matched (an empty result, not an error);
  an exception in an action, or one durable stored in the session state, raises
  `EngineError` naming the rule.
- Emit rules assert their derived fact in the same session (forward chaining).
- A rule whose condition holds through several `$or` branches is reported once per fact.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import durable_rules_engine  # type: ignore[import-not-found]
from durable.engine import Host, MessageNotHandledException

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


class EngineError(RuntimeError):
    """The engine failed (never to be read as 'no cards'); `rule_id` names the rule if known."""

    def __init__(self, message: str, rule_id: str | None = None) -> None:
        super().__init__(message)
        self.rule_id = rule_id


def _session_started(c: Any) -> None:
    """The internal session rule's action: nothing to do."""


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
    errors: list[tuple[str, str]] = field(default_factory=list)


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
        self._current: _Evaluation | None = None
        self._host: _QuietHost | None = None
        self._handle: Any = None
        definition: dict[str, Any] = {}
        for rule_id, rule in self._rules.items():
            assert_single_fact(rule_id, rule)
            entry = copy.deepcopy(rule)
            entry["run"] = self._action(rule_id)
            definition[rule_id] = entry
        if definition:
            definition[SESSION_RULE] = {
                "all": [{"m": {"$and": [{"t": SESSION_TYPE}]}}],
                "run": _session_started,
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

    def _action(self, rule_id: str) -> Any:
        emit = self._emits.get(rule_id)

        def run(c: Any) -> None:
            ev = self._current
            if ev is None:  # pragma: no cover - only reachable if durable calls us late
                return
            try:
                fact_id = str(c.m._d["id"])
                key = (rule_id, fact_id)
                if key in ev.firings:
                    return  # the same fact matched through another $or branch
                ftype, data = ev.facts[fact_id]
                ev.firings[key] = Firing(rule_id, fact_id, ftype, dict(data))
                if emit is not None:
                    target, new = build_emitted(emit, data, rule_id)
                    if new["id"] in ev.facts:
                        raise FactError(f"emitted fact id {new['id']} is taken")
                    if len(new) + 2 > MAX_FACT_PROPERTIES:
                        raise FactError(f"emitted fact {new['id']} has too many properties")
                    ev.facts[new["id"]] = (target, new)
                    ev.emitted.append({**new, "t": target})
                    # MessageNotHandled: no rule matches the derived fact, nothing more to do
                    with contextlib.suppress(MessageNotHandledException):
                        c.assert_fact({**new, "t": target, "sid": ev.sid})
            except Exception as exc:
                ev.errors.append((rule_id, f"{type(exc).__name__}: {exc}"))

        return run

    def _run_batch(self, messages: list[dict[str, Any]]) -> Any:
        """Assert a batch and run the actions it queued.

        durable's `Host.assert_facts` raises MessageNotHandledException when any one fact
        of a batch matches no rule, *before* running the actions the others queued; so
        the C call is made here and the actions are run whatever the batch's code.
        """
        assert self._host is not None
        ruleset = self._host.get_ruleset(RULESET_NAME)
        try:
            code, state_handle = durable_rules_engine.assert_facts(
                self._handle, json.dumps(messages, ensure_ascii=False)
            )
        except Exception as exc:
            raise EngineError(f"durable_rules refused the facts: {exc}") from exc
        if code == 2:
            raise EngineError("durable_rules reported a fact as already seen (duplicate id)")
        outcome: list[Any] = [None, None]

        def complete(error: Any, state: Any) -> None:
            outcome[0], outcome[1] = error, state

        ruleset.do_actions(0 if code == 3 else state_handle, complete)
        if outcome[0]:
            raise EngineError(f"durable_rules failed: {outcome[0]}")
        return outcome[1]

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
            messages.extend({**data, "t": ftype, "sid": ev.sid} for ftype, data in normalized)
            self._current = ev
            asserted = False
            try:
                state = self._run_batch(messages)
                asserted = True
                if ev.errors:
                    rule_id, message = ev.errors[0]
                    raise EngineError(f"rule '{rule_id}' failed: {message}", rule_id)
                if isinstance(state, dict) and state.get("exception"):
                    raise EngineError(f"durable_rules action failed: {state['exception']}")
            finally:
                self._current = None
                try:
                    self._host.delete_state(RULESET_NAME, ev.sid)
                except durable_rules_engine.error:
                    if asserted:
                        raise
        return make_result(ev.firings.values(), ev.emitted)
