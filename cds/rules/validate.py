"""Semantic validation of rule files against the fact schema, parameters and evidence.

Every check appends a `RuleError` at the position of the offending node; nothing stops
at the first error. The caller raises them together as one `RuleSetError`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cds.contracts.cards import (
    CARD_TOPICS,
    INDICATORS,
    LINK_TYPES,
    MAX_SUMMARY,
    TOPIC_PAYLOAD_FIELDS,
    TOPIC_PAYLOAD_VALUES,
)
from cds.rules.errors import RuleError, did_you_mean
from cds.rules.facttypes import (
    KINDS,
    MAX_FACT_PROPERTIES,
    RESERVED_FIELDS,
    FactType,
    FieldSpec,
    Kind,
)
from cds.rules.model import (
    FIELD_TYPES,
    OPERATORS,
    ORDERING_OPERATORS,
    STATUSES,
    Card,
    Condition,
    EvidenceRegistry,
    Example,
    Rule,
    RuleFile,
    When,
)
from cds.rules.source import Loc, Source
from cds.rules.templates import (
    MARKDOWN_KEYS,
    TemplateCache,
    TemplateProblem,
    has_template,
    references,
)

RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$")
CS_ID = re.compile(r"^CS-\d+(\.\d+)*$")
URL = re.compile(r"^https?://[^\s]+$")


@dataclass
class Context:
    """Everything the checks need, accumulated across files."""

    fact_types: dict[str, FactType]
    parameters: dict[str, Any]
    evidence: EvidenceRegistry
    order_codes: set[str] | None
    errors: list[RuleError] = field(default_factory=list)
    templates: TemplateCache = field(default_factory=TemplateCache)
    #: some file (or the evidence registry) did not parse: names it defines are unknown
    partial: bool = False
    #: the evidence registry loaded (else evidence ids are not checked)
    evidence_ok: bool = True

    def add(
        self, src: Source, loc: Loc, message: str, *, key: bool = False, cross: bool = False
    ) -> None:
        """Record an error; `cross` errors (a name another file may define) are dropped
        while some file is not well-formed, so they cannot be false alarms."""
        if cross and self.partial:
            return
        self.errors.append(src.error(loc, message, key=key))


def resolve_operand(value: Any, ctx: Context) -> tuple[bool, Any]:
    """(True, value) for a literal or a known {param: NAME}; (False, None) otherwise."""
    if isinstance(value, dict):
        if set(value) == {"param"} and isinstance(value["param"], str):
            name = value["param"]
            if name in ctx.parameters:
                return True, ctx.parameters[name]
        return False, None
    return True, value


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value)


# ---------------------------------------------------------------- evidence and params


def check_evidence(src: Source, loc: Loc, ids: list[str], ctx: Context, *, need_cs: bool) -> None:
    cs_known = set(ctx.evidence.clinical_spec_ids)
    sources = set(ctx.evidence.sources)
    has_cs = False
    for index, item in enumerate(ids):
        where = (*loc, index)
        if not ctx.evidence_ok:  # the registry did not load: ids cannot be checked
            has_cs = has_cs or item.startswith("CS-")
            continue
        if item.startswith("CS-"):
            has_cs = True
            if item not in cs_known:
                ctx.add(
                    src, where, f"unknown clinical-spec id '{item}'{did_you_mean(item, cs_known)}"
                )
        elif item not in sources:
            hint = did_you_mean(item, sources) or did_you_mean(item, cs_known)
            ctx.add(src, where, f"unknown evidence source '{item}'{hint}")
    if need_cs and not has_cs:
        ctx.add(src, loc, "evidence needs at least one clinical-spec id (CS-x.y)")


# ---------------------------------------------------------------- conditions


@dataclass
class _Test:
    field: FieldSpec
    op: str
    value: Any  # resolved literal, list for `in`, True for exists/missing
    loc: Loc

    def words(self) -> str:
        if self.op in ("exists", "missing"):
            return self.op
        if self.op == "in":
            return "in [" + ", ".join(_fmt(v) for v in self.value) + "]"
        return f"{self.op} {_fmt(self.value)}"


def check_operand(
    src: Source, loc: Loc, spec: FieldSpec, op: str, raw: Any, ctx: Context
) -> tuple[bool, Any]:
    """Check one operand (a literal or {param: NAME}) against the field; return it resolved."""
    if isinstance(raw, dict):
        if set(raw) != {"param"} or not isinstance(raw.get("param"), str):
            ctx.add(src, loc, f"{op}: expected a literal or {{param: NAME}}, got a mapping")
            return False, None
        name = raw["param"]
        if name not in ctx.parameters:
            hint = did_you_mean(name, ctx.parameters)
            ctx.add(src, (*loc, "param"), f"unknown parameter '{name}'{hint}", cross=True)
            return False, None
        value = ctx.parameters[name]
        if not spec.accepts(value):
            ctx.add(
                src,
                (*loc, "param"),
                f"parameter '{name}' is {_fmt(value)!r}, but '{spec.name}' is "
                f"{spec.describe_kind()}",
            )
            return False, None
        return True, value
    if isinstance(raw, list):
        ctx.add(src, loc, f"{op}: expected a single value, got a list (use 'in' for a list)")
        return False, None
    if not spec.accepts(raw):
        if spec.enum is not None and isinstance(raw, str):
            ctx.add(
                src,
                loc,
                f"'{raw}' is not a value of '{spec.name}'{did_you_mean(raw, spec.enum)}: "
                f"{spec.describe_kind()}",
            )
        else:
            shown = f"'{raw}'" if isinstance(raw, str) else _fmt(raw)
            ctx.add(src, loc, f"'{spec.name}' is {spec.describe_kind()}, got {shown}")
        return False, None
    return True, raw


def check_condition(
    src: Source, loc: Loc, node: Condition, ftype: FactType, ctx: Context, *, root: bool = False
) -> list[_Test] | None:
    """Check a condition node; return its direct tests (for `all` analysis) or None."""
    shape = node.shape()
    ops = node.operators()
    if not shape and not ops:
        if not root:
            ctx.add(
                src,
                loc,
                "empty condition: give all, any, not, or a test {field: NAME, OP: VALUE}",
            )
        return []
    structural = [k for k in shape if k != "field"]
    if len(structural) > 1 or (structural and (ops or "field" in shape)):
        present = structural + (["a test"] if ops or "field" in shape else [])
        ctx.add(
            src,
            loc,
            "a condition is exactly one of all, any, not, or a test; this one has "
            + " and ".join(present),
        )
        return None
    if structural:
        kind = structural[0]
        if kind == "not":
            assert node.not_ is not None
            check_condition(src, (*loc, "not"), node.not_, ftype, ctx)
            return []
        children: list[Condition] = getattr(node, kind)
        if not children:
            ctx.add(src, (*loc, kind), f"{kind} needs at least one condition")
            return []
        tests: list[_Test] = []
        for index, child in enumerate(children):
            sub = check_condition(src, (*loc, kind, index), child, ftype, ctx)
            if kind == "all" and sub is not None and (child.field is not None or child.all):
                tests.extend(sub)
        if kind == "all":
            check_satisfiable(src, tests, ctx)
        return tests
    # a test
    if node.field is None:
        ctx.add(
            src,
            (*loc, ops[0]),
            f"operator '{ops[0]}' needs a field: {{field: NAME, {ops[0]}: VALUE}}",
            key=True,
        )
        return None
    spec = ftype.fields.get(node.field)
    if spec is None:
        hint = did_you_mean(node.field, ftype.fields)
        ctx.add(
            src, (*loc, "field"), f"unknown field '{node.field}' of fact type '{ftype.name}'{hint}"
        )
        return None
    if not ops:
        ctx.add(
            src,
            loc,
            f"test on '{node.field}' has no operator: add one of " + ", ".join(OPERATORS),
        )
        return None
    if len(ops) > 1:
        ctx.add(
            src,
            (*loc, ops[1]),
            f"a test takes one operator, this one has {', '.join(ops)}: "
            "put each in its own test under all",
            key=True,
        )
        return None
    op = ops[0]
    where = (*loc, op)
    raw = node.operand(op)
    if op in ORDERING_OPERATORS and not spec.ordered:
        ctx.add(
            src,
            where,
            f"operator '{op}' does not apply to '{spec.name}' ({spec.describe_kind()}): "
            "use eq, ne or in",
            key=True,
        )
        return None
    if op in ("exists", "missing"):
        if raw is not True:
            other = "missing" if op == "exists" else "exists"
            ctx.add(src, where, f"{op} takes true (for the opposite use {other}: true)")
            return None
        if not spec.optional:
            always = "always true" if op == "exists" else "never true"
            ctx.add(
                src,
                where,
                f"'{spec.name}' is always present, so '{op}' is {always}",
                key=True,
            )
            return None
        return [_Test(spec, op, True, loc)]
    if op == "in":
        values: list[Any] = []
        if not raw:
            ctx.add(src, where, "in needs a non-empty list")
            return None
        ok = True
        for index, item in enumerate(raw):
            good, value = check_operand(src, (*where, index), spec, "in", item, ctx)
            ok = ok and good
            values.append(value)
        return [_Test(spec, op, values, loc)] if ok else None
    good, value = check_operand(src, where, spec, op, raw, ctx)
    return [_Test(spec, op, value, loc)] if good else None


def satisfiable(spec: FieldSpec, tests: list[_Test]) -> bool:
    """Can one value (or absence) of the field pass every test? (interval/set analysis)

    Dates are compared as day numbers, so dates and integers are both discrete.
    """

    def _key(value: Any) -> Any:
        if spec.kind == "date":
            return dt.date.fromisoformat(value).toordinal()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return value

    ops = {t.op for t in tests}
    if "missing" in ops:
        return ops == {"missing"}
    lo: tuple[Any, bool] | None = None  # (bound, strict)
    hi: tuple[Any, bool] | None = None
    candidates: set[Any] | None = None
    excluded: set[Any] = set()
    for test in tests:
        if test.op == "exists":
            continue
        if test.op == "eq":
            allowed = {_key(test.value)}
        elif test.op == "in":
            allowed = {_key(v) for v in test.value}
        else:
            allowed = None
        if allowed is not None:
            candidates = allowed if candidates is None else candidates & allowed
        elif test.op == "ne":
            excluded.add(_key(test.value))
        else:
            bound = _key(test.value)
            strict = test.op in ("lt", "gt")
            if test.op in ("gt", "ge"):
                if lo is None or bound > lo[0] or (bound == lo[0] and strict):
                    lo = (bound, strict)
            elif hi is None or bound < hi[0] or (bound == hi[0] and strict):
                hi = (bound, strict)

    def inside(value: Any) -> bool:
        if value in excluded:
            return False
        if lo is not None and (value < lo[0] or (lo[1] and value == lo[0])):
            return False
        return not (hi is not None and (value > hi[0] or (hi[1] and value == hi[0])))

    if candidates is None:
        if spec.kind == "boolean":
            candidates = {True, False}
        elif spec.enum is not None:
            candidates = set(spec.enum)
    if candidates is not None:
        return any(inside(v) for v in candidates)
    if lo is None or hi is None:
        return True  # an unbounded side always leaves values beyond any exclusions
    if spec.kind in ("integer", "date"):
        low = math.floor(lo[0]) + 1 if lo[1] and lo[0] == math.floor(lo[0]) else math.ceil(lo[0])
        high = math.ceil(hi[0]) - 1 if hi[1] and hi[0] == math.ceil(hi[0]) else math.floor(hi[0])
        if low > high:
            return False
        holes = {v for v in excluded if low <= v <= high and v == math.floor(v)}
        return bool((high - low + 1) > len(holes))
    if lo[0] > hi[0] or (lo[0] == hi[0] and (lo[1] or hi[1])):
        return False
    if lo[0] == hi[0]:
        return lo[0] not in excluded
    return True  # a non-empty real interval holds more values than any exclusion


def check_satisfiable(src: Source, tests: list[_Test], ctx: Context) -> None:
    by_field: dict[str, list[_Test]] = {}
    for test in tests:
        by_field.setdefault(test.field.name, []).append(test)
    for name, group in by_field.items():
        if len(group) > 1 and not satisfiable(group[0].field, group):
            words = " and ".join(t.words() for t in group)
            ctx.add(src, group[0].loc, f"conditions on '{name}' can never all hold: {words}")


# ---------------------------------------------------------------- templates and cards


def check_template(
    src: Source, loc: Loc, text: str, ftype: FactType, ctx: Context, *, markdown: bool = False
) -> None:
    """Check one template; `markdown`: the text is markdown (under a MARKDOWN_KEYS key).

    It is compiled here as it will render (markdown or not) and kept in `ctx.templates`,
    so the rule set's load compiles each template once (compiling a detail as plain text
    here made the load compile it again as markdown, and past the process caches' size
    parse it again: issue 15).
    """
    if not has_template(text):
        return
    try:
        ctx.templates.get(text, markdown)  # compiled once here, kept for rendering
        refs, free = references(text)
    except TemplateProblem as exc:
        ctx.add(src, loc, str(exc))
        return
    for name in sorted(free):
        ctx.add(src, loc, f"unknown name '{name}' in template: use fact.FIELD or param.NAME")
    for ref in refs:
        if ref.scope == "fact" and ref.name not in ftype.fields and ref.name != "id":
            hint = did_you_mean(ref.name, ftype.fields)
            ctx.add(
                src,
                loc,
                f"template reads fact.{ref.name}, not a field of '{ftype.name}'{hint}",
            )
        if ref.scope == "param" and ref.name not in ctx.parameters:
            hint = did_you_mean(ref.name, ctx.parameters)
            ctx.add(src, loc, f"template reads param.{ref.name}, not a parameter{hint}", cross=True)


def _walk_strings(value: Any, loc: Loc) -> Iterable[tuple[Loc, str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_strings(item, (*loc, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_strings(item, (*loc, key))


def _templated(value: object) -> bool:
    return isinstance(value, str) and has_template(value)


def check_card(src: Source, loc: Loc, card: Card, ftype: FactType, ctx: Context) -> None:
    if card.topic not in CARD_TOPICS:
        ctx.add(
            src,
            (*loc, "topic"),
            f"unknown card topic '{card.topic}'{did_you_mean(card.topic, CARD_TOPICS)}",
        )
    else:
        allowed = TOPIC_PAYLOAD_FIELDS[card.topic]
        values = TOPIC_PAYLOAD_VALUES.get(card.topic, {})
        for key, value in card.payload.items():
            if key not in allowed:
                ctx.add(
                    src,
                    (*loc, "payload", key),
                    f"payload field '{key}' is not part of topic '{card.topic}'"
                    f"{did_you_mean(key, allowed)}: " + ", ".join(allowed),
                    key=True,
                )
            elif key in values and not _templated(value) and value not in values[key]:
                hint = did_you_mean(value, values[key]) if isinstance(value, str) else ""
                ctx.add(
                    src,
                    (*loc, "payload", key),
                    f"{value!r} is not an allowed value of payload field '{key}' of topic "
                    f"'{card.topic}'{hint}: " + ", ".join(values[key]) + " (the card contract)",
                )
    if card.indicator not in INDICATORS:
        ctx.add(
            src,
            (*loc, "indicator"),
            f"unknown indicator '{card.indicator}'{did_you_mean(card.indicator, INDICATORS)}: "
            "info, warning or critical",
        )
    if not has_template(card.summary) and len(card.summary) >= MAX_SUMMARY:
        ctx.add(
            src,
            (*loc, "summary"),
            f"summary has {len(card.summary)} characters: keep it under {MAX_SUMMARY}",
        )
    texts: list[tuple[Loc, str]] = [((*loc, "summary"), card.summary)]
    if card.detail is not None:
        texts.append(((*loc, "detail"), card.detail))
    texts.extend(_walk_strings(card.payload, (*loc, "payload")))
    for index, sug in enumerate(card.suggestions):
        sloc = (*loc, "suggestions", index)
        texts.append(((*sloc, "label"), sug.label))
        if sug.note is not None:
            texts.append(((*sloc, "note"), sug.note))
        if sug.omit_orders is not None:
            texts.append(((*sloc, "omit_orders"), sug.omit_orders))
        if sug.occurrence is not None:
            for part in ("start", "end"):
                value = getattr(sug.occurrence, part)
                if value is not None:
                    texts.append(((*sloc, "occurrence", part), value))
        for oindex, order in enumerate(sug.orders):
            if ctx.order_codes is not None and order not in ctx.order_codes:
                ctx.add(
                    src,
                    (*sloc, "orders", oindex),
                    f"unknown order code key '{order}'{did_you_mean(order, ctx.order_codes)} "
                    "(fhir_profiles/order-codes.json)",
                )
    for index, link in enumerate(card.links):
        lloc = (*loc, "links", index)
        texts.append(((*lloc, "label"), link.label))
        if link.type not in LINK_TYPES:
            ctx.add(
                src,
                (*lloc, "type"),
                f"unknown link type '{link.type}'{did_you_mean(link.type, LINK_TYPES)}: "
                "absolute or smart",
            )
        if not URL.match(link.url):
            ctx.add(
                src, (*lloc, "url"), f"link url must be absolute (https://...), got '{link.url}'"
            )
    for where, text in texts:
        markdown = any(part in MARKDOWN_KEYS for part in where[len(loc) :])
        check_template(src, where, text, ftype, ctx, markdown=markdown)


# ---------------------------------------------------------------- examples


def check_example(
    src: Source,
    loc: Loc,
    example: Example,
    rule: Rule,
    ftype: FactType,
    ctx: Context,
) -> None:
    for key, value in example.fact.items():
        spec = ftype.fields.get(key)
        if spec is None:
            if key == "id":
                continue
            hint = did_you_mean(key, ftype.fields)
            ctx.add(
                src,
                (*loc, "fact", key),
                f"unknown field '{key}' of fact type '{ftype.name}'{hint}",
                key=True,
            )
        elif value is None and not spec.optional:
            ctx.add(
                src,
                (*loc, "fact", key),
                f"'{key}' is always present in facts of type '{ftype.name}': "
                "give a value, not null",
            )
        elif value is not None and not spec.accepts(value):
            shown = f"'{value}'" if isinstance(value, str) else _fmt(value)
            ctx.add(src, (*loc, "fact", key), f"'{key}' is {spec.describe_kind()}, got {shown}")
    expect = example.expect
    eloc = (*loc, "expect")
    if expect.emits is not None:
        if rule.then.emit is None:
            ctx.add(
                src, (*eloc, "emits"), "expect.emits given but the rule emits nothing", key=True
            )
        else:
            target = ctx.fact_types.get(rule.then.emit.fact)
            if target is not None:
                for key in expect.emits:
                    if key not in target.fields and key != "id":
                        hint = did_you_mean(key, target.fields)
                        ctx.add(
                            src,
                            (*eloc, "emits", key),
                            f"unknown field '{key}' of fact type '{target.name}'{hint}",
                            key=True,
                        )
    if rule.then.card is None:
        for name in ("payload", "summary_contains"):
            if getattr(expect, name) is not None:
                ctx.add(
                    src, (*eloc, name), f"expect.{name} given but the rule has no card", key=True
                )
    elif expect.payload is not None:
        for key in expect.payload:
            if key not in rule.then.card.payload and key not in ("findings", "items"):
                hint = did_you_mean(key, list(rule.then.card.payload))
                ctx.add(
                    src,
                    (*eloc, "payload", key),
                    f"expect.payload field '{key}' is not in the rule's card payload{hint}",
                    key=True,
                )


# ---------------------------------------------------------------- rules


def check_rule(src: Source, loc: Loc, rule: Rule, ctx: Context) -> None:
    if not RULE_ID.match(rule.id):
        ctx.add(
            src,
            (*loc, "id"),
            f"rule id '{rule.id}' must be lower-case dotted words, "
            "e.g. classification.t.osteoporosis",
        )
    if rule.status not in STATUSES:
        ctx.add(
            src,
            (*loc, "status"),
            f"unknown status '{rule.status}'{did_you_mean(rule.status, STATUSES)}: "
            "active, draft or retired",
        )
    if not rule.evidence:
        ctx.add(src, (*loc, "evidence"), "evidence needs at least one clinical-spec id (CS-x.y)")
    else:
        check_evidence(src, (*loc, "evidence"), rule.evidence, ctx, need_cs=True)
    when: When = rule.when
    ftype = ctx.fact_types.get(when.fact)
    if ftype is None:
        hint = did_you_mean(when.fact, ctx.fact_types)
        ctx.add(src, (*loc, "when", "fact"), f"unknown fact type '{when.fact}'{hint}", cross=True)
    else:
        check_condition(src, (*loc, "when"), when, ftype, ctx, root=True)
    then = rule.then
    if then.emit is None and then.card is None:
        ctx.add(src, (*loc, "then"), f"rule '{rule.id}' has neither emit nor card under then")
    if then.emit is not None:
        eloc = (*loc, "then", "emit")
        target = ctx.fact_types.get(then.emit.fact)
        if target is None or not target.derived:
            derived = [n for n, t in ctx.fact_types.items() if t.derived]
            what = "an input fact type" if target is not None else "unknown"
            ctx.add(
                src,
                (*eloc, "fact"),
                f"emit needs a derived fact type, '{then.emit.fact}' is {what}"
                f"{did_you_mean(then.emit.fact, derived)}",
                cross=target is None,
            )
        else:
            if then.emit.copy_ and ftype is not None and not target.extends_type(ftype.name):
                ctx.add(
                    src,
                    (*eloc, "copy"),
                    f"copy: '{target.name}' does not extend '{ftype.name}', the rule's fact type "
                    f"(give it 'extends: {ftype.name}')",
                )
            for key, value in then.emit.set.items():
                spec = target.fields.get(key)
                if spec is None:
                    hint = did_you_mean(key, target.fields)
                    ctx.add(
                        src,
                        (*eloc, "set", key),
                        f"unknown field '{key}' of fact type '{target.name}'{hint}",
                        key=True,
                    )
                elif not spec.accepts(value):
                    shown = f"'{value}'" if isinstance(value, str) else _fmt(value)
                    ctx.add(
                        src, (*eloc, "set", key), f"'{key}' is {spec.describe_kind()}, got {shown}"
                    )
            if not then.emit.copy_ and not then.emit.set:
                ctx.add(src, eloc, "emit gives no fields: add copy: true or set")
    if then.card is not None and ftype is not None:
        check_card(src, (*loc, "then", "card"), then.card, ftype, ctx)
    if ftype is not None:
        for index, example in enumerate(rule.examples):
            check_example(src, (*loc, "examples", index), example, rule, ftype, ctx)


# ---------------------------------------------------------------- derived facts


def build_derived(
    files: list[tuple[Source, RuleFile]], ctx: Context, inputs: dict[str, FactType]
) -> None:
    """Add every derived fact type to ctx.fact_types (after checking its declaration)."""
    declared: dict[str, tuple[Source, Any]] = {}
    for src, doc in files:
        for name, decl in doc.derived_facts.items():
            loc: Loc = ("derived_facts", name)
            if name in inputs:
                ctx.add(
                    src,
                    loc,
                    f"derived fact type '{name}' has the name of an input fact type",
                    key=True,
                )
                continue
            if name in declared:
                first = declared[name][0]
                line, col = first.key_at(loc)
                ctx.add(
                    src,
                    loc,
                    f"duplicate derived fact type '{name}' (first at {first.path}:{line}:{col})",
                    key=True,
                )
                continue
            declared[name] = (src, decl)
    resolving: set[str] = set()

    def resolve(name: str) -> FactType | None:
        if name in ctx.fact_types:
            return ctx.fact_types[name]
        if name not in declared or name in resolving:
            return None
        src, decl = declared[name]
        loc: Loc = ("derived_facts", name)
        resolving.add(name)
        fields: dict[str, FieldSpec] = {}
        ancestors: tuple[str, ...] = ()
        if decl.extends is not None:
            base = resolve(decl.extends)
            if base is None:
                if decl.extends in resolving:
                    ctx.add(
                        src, (*loc, "extends"), f"'{name}' extends itself through '{decl.extends}'"
                    )
                else:
                    hint = did_you_mean(decl.extends, [*inputs, *declared])
                    ctx.add(
                        src,
                        (*loc, "extends"),
                        f"unknown fact type '{decl.extends}'{hint}",
                        cross=True,
                    )
            else:
                ancestors = (base.name, *base.ancestors)
                for fname, spec in base.fields.items():
                    fields[fname] = FieldSpec(
                        name=spec.name,
                        kind=spec.kind,
                        optional=True,
                        description=spec.description,
                        enum=spec.enum,
                    )
        for fname, fdecl in decl.fields.items():
            floc = (*loc, "fields", fname)
            if fname in RESERVED_FIELDS:
                ctx.add(src, floc, f"field name '{fname}' is reserved (id, t, sid)", key=True)
                continue
            if fname in fields:
                ctx.add(
                    src, floc, f"field '{fname}' is already a field of '{decl.extends}'", key=True
                )
                continue
            if fdecl.type not in FIELD_TYPES:
                hint = did_you_mean(fdecl.type, FIELD_TYPES)
                ctx.add(
                    src,
                    (*floc, "type"),
                    f"unknown field type '{fdecl.type}'{hint}: " + ", ".join(FIELD_TYPES),
                )
                continue
            if fdecl.enum is not None and fdecl.type != "string":
                ctx.add(src, (*floc, "enum"), "enum applies to string fields only")
            fields[fname] = FieldSpec(
                name=fname,
                kind=_as_kind(fdecl.type),
                optional=True,
                description=fdecl.description or "",
                enum=tuple(fdecl.enum) if fdecl.enum else None,
            )
        if len(fields) + len(RESERVED_FIELDS) > MAX_FACT_PROPERTIES:
            ctx.add(
                src,
                loc,
                f"derived fact type '{name}' has {len(fields)} fields; the engine takes at most "
                f"{MAX_FACT_PROPERTIES - len(RESERVED_FIELDS)} per fact",
                key=True,
            )
        resolving.discard(name)
        ftype = FactType(
            name=name,
            fields=fields,
            derived=True,
            extends=decl.extends,
            description=decl.description or "",
            ancestors=ancestors,
        )
        ctx.fact_types[name] = ftype
        return ftype

    for name in declared:
        resolve(name)


def _as_kind(name: str) -> Kind:
    for kind in KINDS:
        if kind == name:
            return kind
    raise ValueError(name)


def check_emit_cycles(rules: list[tuple[Source, Loc, Rule]], ctx: Context) -> None:
    """Forward chaining must end: no fact type may (transitively) emit itself."""
    edges: dict[str, set[str]] = {}
    for _src, _loc, rule in rules:
        if rule.then.emit is not None and rule.status == "active":
            edges.setdefault(rule.when.fact, set()).add(rule.then.emit.fact)

    def reaches(start: str, goal: str) -> bool:
        seen: set[str] = set()
        stack = list(edges.get(start, ()))
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(edges.get(node, ()))
        return False

    for src, loc, rule in rules:
        emit = rule.then.emit
        if emit is not None and rule.status == "active" and reaches(emit.fact, rule.when.fact):
            ctx.add(
                src,
                (*loc, "then", "emit", "fact"),
                f"emitting '{emit.fact}' from '{rule.when.fact}' makes a cycle: "
                f"'{emit.fact}' leads back to '{rule.when.fact}'",
            )
