"""`cds explain FILE`: how one input was evaluated, for rule authors and QA.

The report (a JSON-able dict; `render_text` prints it for people) holds:

- `facts`: every fact the evaluation made, with its values and the resources it came
  from (derived facts: the rule and fact that emitted them);
- `fired`: every rule that fired, per fact, with its condition tree and, for each test,
  the fact's value and whether the test held;
- `close`: rules that came close without firing: all but one top-level condition held,
  or every condition that failed is a numeric threshold within 10% of the fact's value;
- `used` / `ignored`: the resources used (for what) and ignored (why), and assumptions;
- `cards` and `outcome`: exactly what `cds replay` returns for the input.

Condition truth comes from `cds.rules.reference` (the definition of the rule language),
so the explanation and the engine agree; a disagreement is reported, not hidden.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from cds.contracts.cards import EXTENSION_KEY, dump_cards
from cds.replay.inputs import Source, discover, is_ndjson
from cds.replay.reader import Job, Unreadable, read_source
from cds.rules.model import ORDERING_OPERATORS, Condition, Rule
from cds.rules.reference import holds

if TYPE_CHECKING:
    from cds.contracts.facts import Fact
    from cds.pipeline import EvaluationResult, Evaluator
    from cds.rules import RuleSet

#: A failed numeric test is "close" when the fact's value is within this fraction of the
#: threshold (|value - threshold| <= 10% of |threshold|).
CLOSE_FRACTION = 0.10

Report = dict[str, Any]


class ExplainError(Exception):
    """The input cannot be explained (not found, unreadable, ambiguous): say which."""


# ------------------------------------------------------------------------ finding the input


def _split_name(name: str) -> tuple[str, str]:
    """(file path, '#...' fragment), the file being the longest existing prefix."""
    if os.path.exists(name):
        return name, ""
    head, hash_, tail = name.partition("#")
    return head, hash_ + tail


def resolve(name: str, hook: str | None) -> Job:
    """The job for an input name as `cds replay` reports it (file, #L<n>, #Patient/<id>)."""
    path, fragment = _split_name(name)
    if not os.path.isfile(path):
        raise ExplainError(f"{path}: no such file (explain takes one file, not a folder)")
    sources: list[Source] = list(discover([path]))
    if is_ndjson(path):
        line, _, rest = fragment.removeprefix("#").partition("#")
        wanted = [s for s in sources if s.name == f"{path}#{line}"] if line else sources
        if len(wanted) != 1:
            raise ExplainError(
                f"{path} holds {len(sources)} inputs: name one line, e.g. {path}#L1"
                if not line
                else f"{path}: no input {line} (lines are named {path}#L<n>)"
            )
        source = wanted[0]
        fragment = f"#{rest}" if rest else ""
    else:
        (source,) = sources
    items = read_source(source, hook)
    for item in items:
        if isinstance(item, Unreadable):
            issues = item.outcome.get("issue") or [{}]
            raise ExplainError(str(issues[0].get("diagnostics", "cannot be read")))
    jobs = [item for item in items if isinstance(item, Job)]
    wanted_name = source.name + fragment
    chosen = [job for job in jobs if job.name == wanted_name]
    if not chosen and len(jobs) == 1 and not fragment:
        chosen = jobs
    if len(chosen) != 1:
        names = ", ".join(job.name for job in jobs)
        raise ExplainError(f"{name}: name one input of {names}")
    return chosen[0]


# --------------------------------------------------------------------------- conditions


def _operand(node: Condition, op: str, parameters: Mapping[str, Any]) -> tuple[Any, str | None]:
    raw = node.operand(op)
    if isinstance(raw, dict) and set(raw) == {"param"}:
        return parameters[raw["param"]], str(raw["param"])
    if op == "in":
        values = [
            parameters[v["param"]] if isinstance(v, dict) and set(v) == {"param"} else v
            for v in raw or []
        ]
        return values, None
    return raw, None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _closeness(value: Any, threshold: Any) -> float | None:
    """|value - threshold| / |threshold| for numbers (absolute distance at 0)."""
    if not (_number(value) and _number(threshold)):
        return None
    distance = abs(float(value) - float(threshold))
    return distance / abs(float(threshold)) if threshold else distance


def condition_tree(
    node: Condition, fact: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """The condition as a tree: each test with the fact's value and whether it held."""
    result = holds(node, fact, parameters)
    if node.all is not None or node.any is not None:
        kind = "all" if node.all is not None else "any"
        children = node.all if node.all is not None else node.any
        return {
            kind: [condition_tree(child, fact, parameters) for child in children or []],
            "holds": result,
        }
    if node.not_ is not None:
        return {"not": condition_tree(node.not_, fact, parameters), "holds": result}
    if node.field is None:
        return {"every": True, "holds": result}
    (op,) = node.operators()
    operand, param = _operand(node, op, parameters)
    test: dict[str, Any] = {
        "field": node.field,
        "op": op,
        "value": fact.get(node.field),
        "holds": result,
    }
    if op not in ("exists", "missing"):
        test["operand"] = operand
    if param is not None:
        test["param"] = param
    if not result and (op in ORDERING_OPERATORS or op == "eq"):
        ratio = _closeness(fact.get(node.field), operand)
        if ratio is not None and ratio <= CLOSE_FRACTION + 1e-9:
            test["within"] = round(ratio * 100, 1)
    return test


def _top_level(rule: Rule) -> list[Condition]:
    when = rule.when
    if when.all is not None:
        return list(when.all)
    return [when]


def _has_close_test(tree: dict[str, Any]) -> bool:
    if "within" in tree:
        return True
    for key in ("all", "any"):
        if key in tree:
            return any(_has_close_test(child) for child in tree[key] if not child["holds"])
    if "not" in tree:
        return False  # a negated test that failed held inside: not a near threshold
    return False


def _failing_leaves(tree: dict[str, Any]) -> list[dict[str, Any]]:
    if tree["holds"]:
        return []
    for key in ("all", "any"):
        if key in tree:
            return [leaf for child in tree[key] for leaf in _failing_leaves(child)]
    if "not" in tree or "every" in tree:
        return [tree]
    return [tree]


def _only_absent(tree: dict[str, Any]) -> bool:
    """A failed condition whose failed tests all read absent fields: nothing was measured
    that could have been near, so it is not "close"."""
    leaves = _failing_leaves(tree)
    return bool(leaves) and all(
        "field" in leaf and leaf["value"] is None and leaf["op"] not in ("exists", "missing")
        for leaf in leaves
    )


def came_close(
    rule: Rule, fact: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Why a rule that did not fire for this fact came close, or None."""
    top = _top_level(rule)
    trees = [condition_tree(node, fact, parameters) for node in top]
    failing = [tree for tree in trees if not tree["holds"]]
    if not failing:
        return None
    reasons: list[str] = []
    if len(top) >= 2 and len(failing) == 1 and not _only_absent(failing[0]):
        reasons.append(f"all but one of {len(top)} conditions held")
    if all(_has_close_test(tree) for tree in failing):
        reasons.append("every failed condition is a numeric threshold within 10%")
    if not reasons:
        return None
    return {"reasons": reasons, "conditions": trees}


def _close_order(item: dict[str, Any]) -> tuple[int, str, str]:
    """Near thresholds first, then by rule id and fact id."""
    near = any("threshold" in reason for reason in item["reasons"])
    return (0 if near else 1, item["rule"], item["fact"])


# ------------------------------------------------------------------------------- report


def _trace_dict(result: EvaluationResult) -> dict[str, Any]:
    dumped: dict[str, Any] = result.trace.model_dump(mode="json")
    return dumped


def build_report(
    job: Job,
    ruleset: RuleSet,
    input_facts: Sequence[Fact],
    result: EvaluationResult,
    as_of: date,
) -> Report:
    """The explanation of one evaluated job (see the module docstring)."""
    from cds.rules.reference import evaluate
    from cds.rules.result import emitted_id, normalize_facts

    parameters = ruleset.parameters
    trace = _trace_dict(result)
    sources = {f["fact_id"]: f.get("sources", []) for f in trace.get("facts", [])}
    typed = normalize_facts(list(input_facts))
    reference = evaluate(ruleset.rules, parameters, list(input_facts))
    # What the engine did (the pipeline reports it), checked against the reference
    # evaluator's answer below.
    firings = list(result.firings)
    emitted = list(result.emitted)
    emitted_by: dict[str, str] = {}
    emitted_from: dict[str, str] = {}
    for firing in firings:
        emit = ruleset.rule(firing.rule_id).then.emit
        if emit is not None:
            eid = emitted_id(emit.fact, firing.fact_id, firing.rule_id)
            emitted_by[eid] = f"rule {firing.rule_id} from {firing.fact_id}"
            emitted_from[eid] = firing.fact_id
    all_facts = typed + [
        (str(e["t"]), {k: v for k, v in e.items() if k not in ("t", "sid")}) for e in emitted
    ]
    facts_out = [
        {
            "id": data["id"],
            "type": ftype,
            "sources": sources.get(data["id"], [])
            if data["id"] not in emitted_by
            else [emitted_by[data["id"]]],
            "values": data,
            **({"from": emitted_from[data["id"]]} if data["id"] in emitted_from else {}),
        }
        for ftype, data in all_facts
    ]
    fired_pairs = {(f.rule_id, f.fact_id) for f in firings}
    fired_out: list[dict[str, Any]] = []
    close_out: list[dict[str, Any]] = []
    for rule in ruleset.active_rules:
        for ftype, data in all_facts:
            if ftype != rule.when.fact:
                continue
            base = {
                "rule": rule.id,
                "title": rule.title,
                "evidence": list(rule.evidence),
                "fact": data["id"],
            }
            if (rule.id, data["id"]) in fired_pairs:
                tree = condition_tree(rule.when, data, parameters)
                fired_out.append({**base, "conditions": tree})
                continue
            close = came_close(rule, data, parameters)
            if close is not None:
                close_out.append({**base, **close})
    close_out.sort(key=_close_order)
    engine_fired = sorted({f.rule_id for f in firings})
    notes: list[str] = []
    if engine_fired != reference.fired:
        notes.append(
            "the engine and the reference evaluator disagree: engine fired "
            f"{', '.join(engine_fired)}; reference fired {', '.join(reference.fired)}"
        )
    cards = dump_cards(result.cards)
    return {
        "input": job.name,
        "hook": job.hook,
        "asOf": as_of.isoformat(),
        "patientId": job.patient_id,
        "rulesetVersion": ruleset.version,
        "facts": facts_out,
        "fired": fired_out,
        "close": close_out,
        "used": trace.get("used", []),
        "ignored": trace.get("ignored", []),
        "assumptions": trace.get("assumptions", []),
        "cards": cards,
        "outcome": result.outcome,
        "notes": notes,
    }


def explain_input(
    name: str,
    *,
    evaluator: Evaluator,
    as_of: date,
    hook: str | None = None,
) -> Report:
    """Evaluate one input (as named by `cds replay`) and explain the evaluation."""
    from cds.pipeline import EvaluationError

    job = resolve(name, hook)
    try:
        result = evaluator.evaluate(job.to_input(as_of))
    except EvaluationError as exc:
        raise ExplainError(f"{job.name}: evaluation failed: {exc}") from None
    return build_report(job, evaluator.ruleset, result.facts, result, as_of)


# --------------------------------------------------------------------------------- text


_ABSENT = object()


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _tree_lines(tree: dict[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    mark = "✓" if tree["holds"] else "✗"
    for kind in ("all", "any"):
        if kind in tree:
            lines = [f"{pad}{mark} {kind} of:"]
            for child in tree[kind]:
                lines.extend(_tree_lines(child, depth + 1))
            return lines
    if "not" in tree:
        return [f"{pad}{mark} not:", *_tree_lines(tree["not"], depth + 1)]
    if "every" in tree:
        return [f"{pad}{mark} every fact of the type"]
    test = f"{tree['field']} {tree['op']}"
    if "operand" in tree:
        test += f" {_show(tree['operand'])}"
    if "param" in tree:
        test += f" ({tree['param']})"
    value = "absent" if tree["value"] is None else _show(tree["value"])
    line = f"{pad}{mark} {test}   [{tree['field']} = {value}]"
    if "within" in tree:
        line += f"   within {tree['within']}% of the threshold"
    return [line]


def render_text(report: Report) -> str:
    """The report for people."""
    out = [
        f"{report['input']}  ({report['hook']}, as of {report['asOf']}, "
        f"patient {report['patientId'] or '-'})",
        f"rule set {report['rulesetVersion']}",
        "",
        f"FACTS ({len(report['facts'])})",
    ]
    shown: dict[str, dict[str, Any]] = {}
    for fact in report["facts"]:
        out.append(f"  {fact['id']} ({fact['type']}) <- {', '.join(fact['sources']) or '-'}")
        values = {k: v for k, v in fact["values"].items() if k != "id"}
        origin = fact.get("from")
        if origin in shown:  # a derived copy: only what it adds or changes
            base = shown[origin]
            values = {k: v for k, v in values.items() if base.get(k, _ABSENT) != v}
            out.append(f"      (the fields of {origin}, and:)")
        shown[fact["id"]] = fact["values"]
        out.extend(f"      {k} = {_show(v)}" for k, v in values.items())
    out += ["", f"RULES FIRED ({len(report['fired'])})"]
    for item in report["fired"]:
        out.append(f"  {item['rule']}: {item['title']}  on {item['fact']}")
        out.extend(_tree_lines(item["conditions"], 2))
    out += ["", f"RULES THAT CAME CLOSE ({len(report['close'])})"]
    for item in report["close"]:
        out.append(
            f"  {item['rule']}: {item['title']}  on {item['fact']} ({'; '.join(item['reasons'])})"
        )
        for tree in item["conditions"]:
            out.extend(_tree_lines(tree, 2))
    out += ["", f"RESOURCES USED ({len(report['used'])})"]
    out.extend(f"  {u['resource']}: {u['purpose']}" for u in report["used"])
    out += ["", f"RESOURCES IGNORED ({len(report['ignored'])})"]
    out.extend(f"  {i['resource']}: {i['reason']}" for i in report["ignored"])
    if report["assumptions"]:
        out += ["", "ASSUMPTIONS"]
        out.extend(f"  {a}" for a in report["assumptions"])
    outcome = report["outcome"] or {}
    issues = outcome.get("issue") or []
    out += ["", f"DATA ERRORS ({len(issues)})"]
    for issue in issues:
        where = ", ".join(issue.get("expression") or [])
        out.append(
            f"  {issue.get('severity')}: {issue.get('diagnostics')}"
            + (f" [{where}]" if where else "")
        )
    out += ["", f"CARDS ({len(report['cards'])})"]
    for card in report["cards"]:
        topic = ((card.get("source") or {}).get("topic") or {}).get("code", "?")
        out.append(f"  {card.get('indicator', '?'):<8} {topic:<18} {card.get('summary', '')}")
        payload = (card.get("extension") or {}).get(EXTENSION_KEY) or {}
        out.extend(f"      {k} = {_show(v)}" for k, v in payload.items())
    for note in report["notes"]:
        out += ["", f"NOTE: {note}"]
    return "\n".join(out) + "\n"
