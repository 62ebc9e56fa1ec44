"""Card text templates: Jinja2, sandboxed, strict, compiled once when the rules load.

A template string that is exactly one ``{{ expr }}`` evaluates to the expression's
native value (a number stays a number in the payload); any other string renders to
text. The context is ``fact`` (the matched fact: every field of its type, absent ones
``None``) and ``param`` (the parameters). Filters: ``add_months(n)`` on an ISO date
(the day is clamped to the month's end), ``fmt(digits)`` fixed decimals,
``against(digits, threshold, ...)`` a derived number rounded for display without
misstating how it compares with its thresholds (CS-1.11), and Jinja's ``round`` and
``abs``. ``add_months``, ``fmt`` and ``against`` pass an absent value (None) through;
``None`` renders as the empty string inside text.

Markdown (issue 12): a card's ``detail`` is markdown, and the strings its templates output
(FHIR text such as a device display, a condition's name) are escaped for markdown when they
are written (``markdown_text``), so they read as literal text and never become a link, an
image or HTML; links in cards come only from the rules' literal text and ``links``. Other
text (the plain-text ``summary``, suggestion labels) is written as it is: markdown text
is rendered by ``MD_ENV``, whose ``finalize`` escapes every output.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, meta, nodes
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
CONTEXT_NAMES = ("fact", "param")


def add_months(value: str | None, months: int) -> str | None:
    """ISO date plus `months` calendar months, the day clamped to the month's end.

    An absent date stays absent (None).
    """
    if value is None:
        return None
    base = dt.date.fromisoformat(str(value))
    total = base.year * 12 + (base.month - 1) + int(months)
    year, month = divmod(total, 12)
    # calendar.monthrange(year, month + 1)[1], without the weekday it also works out
    days = _MONTH_DAYS[month] + (month == 1 and calendar.isleap(year))
    day = min(base.day, days)
    return dt.date(year, month + 1, day).isoformat()


#: Days of each month (January first) in a common year (calendar's own table).
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def fmt(value: float | int | None, digits: int = 1) -> str | None:
    """A number with exactly `digits` decimals ('-2.50' for fmt(-2.5, 2)); None stays None."""
    if value is None:
        return None
    return f"{float(value):.{int(digits)}f}"


#: Most decimals `against` adds before it shows the value in full.
_AGAINST_MAX_DIGITS = 6


def _side(x: Decimal, t: Decimal) -> tuple[int, int]:
    """Where `x` lies against threshold `t`: by value and by magnitude (-1, 0, 1)."""
    return ((x > t) - (x < t), (abs(x) > abs(t)) - (abs(x) < abs(t)))


def against(value: float | int | None, digits: int, *thresholds: float | int | None) -> str | None:
    """`value` with `digits` decimals (half-up), or more when fewer would misstate it.

    CS-1.11: rounding is for display only and never to a figure that misstates a
    comparison. The shown figure lies on the same side of every threshold as the value,
    both by value (a gap of 0.95 against 1.0 is shown 0.95, not 1.0) and by magnitude
    (a change of -5.25% against an LSC of 5.3 is shown -5.25, not -5.3). Digits are added
    until that holds; beyond six decimals the value is shown as it is. None stays None
    (an absent threshold is skipped).
    """
    if value is None:
        return None
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    limits = [
        Decimal(repr(t)) if isinstance(t, float) else Decimal(t)
        for t in thresholds
        if t is not None
    ]
    for places in range(int(digits), _AGAINST_MAX_DIGITS + 1):
        shown = exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        if all(_side(shown, t) == _side(exact, t) for t in limits):
            return str(shown)
    return str(exact)


def _finalize(value: Any) -> Any:
    return "" if value is None else value


#: Card keys whose text is markdown (CDS Hooks: ``detail`` is GitHub Flavored Markdown).
MARKDOWN_KEYS = frozenset({"detail"})

#: Characters that could start markdown syntax (links, images, HTML, emphasis, code, tables,
#: headings, entities), ``:`` (which would let a URL autolink) and the dot after ``www``.
_MD_SPECIAL = re.compile(r"[\\`*_\[\]<>!|#~&:]|(?<=[wW][wW][wW])\.")


def markdown_text(text: str) -> str:
    """`text` as literal markdown inside a line: every character that could start inline
    syntax is backslash-escaped (CommonMark renders ``\\[`` as ``[``), so
    ``[click](javascript:x)`` and ``![x](http://x)`` show as written, never as a link or
    an image. Line structure (paragraphs, list items) is the template's own."""
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def _md_finalize(value: Any) -> Any:
    """``finalize`` for markdown text: None is empty, a string is escaped."""
    if value is None:
        return ""
    if isinstance(value, str):
        return markdown_text(value)
    return value


#: Names a dict answers with an attribute: the sandbox reads those, not the key.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Environment(SandboxedEnvironment):
    """The sandbox, reading ``fact.x`` from a dict without first failing ``getattr``.

    For a plain dict and a name that is not a dict attribute, the sandbox's own
    ``getattr`` raises AttributeError internally and then returns ``obj[name]``: this
    returns the same value directly; every other case is the sandbox's.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def make_environment(finalize: Callable[[Any], Any] = _finalize) -> SandboxedEnvironment:
    env = _Environment(
        undefined=StrictUndefined, autoescape=False, finalize=finalize, keep_trailing_newline=True
    )
    env.filters["add_months"] = add_months
    env.filters["fmt"] = fmt
    env.filters["against"] = against
    return env


ENV = make_environment()
#: The same environment for markdown text: outputs are escaped (`markdown_text`).
MD_ENV = make_environment(_md_finalize)


@dataclass(frozen=True)
class Reference:
    """A `fact.x` or `param.y` read by a template."""

    scope: str  # "fact" | "param"
    name: str


class TemplateProblem(ValueError):
    """A template that does not parse or reads an unknown name."""


def _is_single_expression(source: str) -> str | None:
    match = _SINGLE_EXPR.match(source)
    if match is None:
        return None
    expr = match.group("expr")
    if "{{" in expr or "}}" in expr or "{%" in expr or "{#" in expr:
        return None
    return expr


@functools.lru_cache(maxsize=4096)
def _parse(source: str) -> nodes.Template:
    """The Jinja AST of `source`, parsed once per process (raises TemplateSyntaxError).

    Shared by `references`, `compile_template` and the fast-path checks; Jinja's code
    generator and `meta` only read it.
    """
    return ENV.parse(source)


#: Nodes that declare no name and open no scope. In a template made of these alone whose
#: names are only ``fact`` and ``param``, the free names (what
#: ``meta.find_undeclared_variables`` reports, by running Jinja's code generator) are
#: simply the names it loads: every other template takes ``meta``.
_DECLARING_NOTHING = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.Name,
    nodes.Const,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Filter,
    nodes.Test,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Compare,
    nodes.Operand,
    nodes.CondExpr,
    nodes.Concat,
    nodes.Add,
    nodes.Sub,
    nodes.Mul,
    nodes.Div,
    nodes.FloorDiv,
    nodes.Mod,
    nodes.Pow,
    nodes.Neg,
    nodes.Pos,
    nodes.List,
    nodes.Tuple,
    nodes.Dict,
    nodes.Pair,
    nodes.Keyword,
    nodes.Slice,
)


@functools.lru_cache(maxsize=4096)
def free_names(source: str) -> frozenset[str]:
    """The names a template reads from its context (raises TemplateSyntaxError).

    Rule loading asks this of every template; the code generator run that ``meta`` does
    is a fifth of the rule set's load time, so the common shape is answered from the AST.
    """
    ast = _parse(source)
    names: set[str] = set()
    for node in _walk(ast):
        if type(node) not in _DECLARING_NOTHING:
            return frozenset(meta.find_undeclared_variables(ast))
        if isinstance(node, nodes.Name):
            # only `fact` and `param`: other names may be Jinja's own (self, namespace...)
            if node.ctx != "load" or node.name not in CONTEXT_NAMES:
                return frozenset(meta.find_undeclared_variables(ast))
            names.add(node.name)
    return frozenset(names)


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def references(source: str) -> tuple[list[Reference], set[str]]:
    """The fact/param attributes a template reads, and any other free names it uses.

    Raises TemplateProblem on a syntax error.
    """
    try:
        ast = _parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from exc
    refs: list[Reference] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if isinstance(target, nodes.Name) and target.name in CONTEXT_NAMES:
            if isinstance(node, nodes.Getattr):
                refs.append(Reference(target.name, node.attr))
            elif isinstance(node, nodes.Getitem):
                arg = node.arg
                if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                    refs.append(Reference(target.name, arg.value))
    free = set(free_names(source)) - set(CONTEXT_NAMES)
    return refs, free


Renderer = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Template:
    """A compiled template string.

    ``jinja`` is Jinja's own entry point (keyword arguments ``fact`` and ``param``);
    ``bare``, when set, is the same compiled template run with a bare context, without
    Jinja's per-call context set-up (it returns ``_MISS`` when it cannot, and any exception
    in it is answered by ``jinja``, so errors read exactly as Jinja's).
    """

    source: str
    native: bool
    jinja: Callable[..., Any]
    bare: Renderer | None = None

    def render(self, fact: Mapping[str, Any], param: Mapping[str, Any]) -> Any:
        """Render with the context; a native template returns the expression's value."""
        if self.bare is not None:
            try:
                value = self.bare(fact, param)
            except Exception:  # the canonical path below raises Jinja's exact error
                value = _MISS
            if value is not _MISS and not isinstance(value, Undefined):
                return value
        value = self.jinja(fact=fact, param=param)
        if isinstance(value, Undefined):  # an expression's value is not checked by Jinja
            raise UndefinedError(value._undefined_message)
        return value


_MISS: Any = object()


def _lookup(scope: str, name: str) -> Renderer | None:
    """``{{ fact.x }}`` / ``{{ param.x }}`` as a plain key lookup (sandbox getattr order)."""
    if name in _DICT_ATTRIBUTES:
        return None  # the sandbox would answer with the dict's attribute
    if scope == "fact":

        def from_fact(fact: Mapping[str, Any], _param: Mapping[str, Any]) -> Any:
            return fact.get(name, _MISS)

        return from_fact

    def from_param(_fact: Mapping[str, Any], param: Mapping[str, Any]) -> Any:
        return param.get(name, _MISS)

    return from_param


def _only_context_names(source: str) -> bool:
    return free_names(source) <= frozenset(CONTEXT_NAMES)


def _fast_expression(expr: str, compiled: Any) -> Renderer | None:
    """A native template without ``Template.new_context`` (which copies the globals)."""
    whole = "{{" + expr + "}}"
    try:
        ast = _parse(whole)
        if not _only_context_names(whole):
            return None
    except TemplateSyntaxError:
        return None
    body = ast.body
    if len(body) == 1 and isinstance(body[0], nodes.Output) and len(body[0].nodes) == 1:
        node = body[0].nodes[0]
        if (
            isinstance(node, nodes.Getattr)
            and isinstance(node.node, nodes.Name)
            and node.node.name in CONTEXT_NAMES
        ):
            return _lookup(node.node.name, node.attr)
    template: JinjaTemplate | None = getattr(compiled, "_template", None)
    if template is None:
        return None
    root = template.root_render_func
    name = template.name

    def run(fact: Mapping[str, Any], param: Mapping[str, Any]) -> Any:
        context = Context(ENV, {"fact": fact, "param": param}, name, {})
        for _event in root(context):
            pass
        return context.vars.get("result", _MISS)

    return run


def _fast_text(
    source: str, template: JinjaTemplate, env: SandboxedEnvironment = ENV
) -> Renderer | None:
    """A text template rendered by its compiled function with a bare context."""
    try:
        if not _only_context_names(source):
            return None
    except TemplateSyntaxError:
        return None
    root = template.root_render_func
    name = template.name
    concat = env.concat

    def run(fact: Mapping[str, Any], param: Mapping[str, Any]) -> Any:
        return concat(root(Context(env, {"fact": fact, "param": param}, name, {})))

    return run


def _jinja_text(source: str, env: SandboxedEnvironment = ENV) -> JinjaTemplate:
    """``env.from_string(source)`` without parsing the text a second time."""
    code = env.compile(_parse(source))
    return env.template_class.from_code(env, code, env.make_globals(None), None)


@functools.lru_cache(maxsize=4096)
def compile_template(source: str, markdown: bool = False) -> Template:
    """Compile once per process (raises TemplateProblem on a syntax error); `markdown`:
    the text is markdown, its outputs escaped (see the module docstring)."""
    try:
        if markdown:
            template = _jinja_text(source, MD_ENV)
            return Template(source, False, template.render, _fast_text(source, template, MD_ENV))
        expr = _is_single_expression(source)
        if expr is not None:
            compiled = ENV.compile_expression(expr, undefined_to_none=False)
            return Template(source, True, compiled, _fast_expression(expr, compiled))
        template = _jinja_text(source)
        return Template(source, False, template.render, _fast_text(source, template))
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from exc


def has_template(source: str) -> bool:
    return "{{" in source or "{%" in source


class TemplateCache:
    """Templates compiled once per rule set, keyed by source text."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bool], Template] = {}

    def get(self, source: str, markdown: bool = False) -> Template:
        template = self._cache.get((source, markdown))
        if template is None:
            template = compile_template(source, markdown)
            self._cache[source, markdown] = template
        return template

    def plan(self, value: Any, markdown: bool = False) -> Renderer:
        """`render_value` of `value` as one function of (fact, param), decided once.

        Strings without a template come back as they are; lists and mappings are
        rebuilt on every call (callers may keep or change what they get). The values of
        MARKDOWN_KEYS (and everything under them) are markdown text.
        """
        if isinstance(value, str):
            if not has_template(value):
                return functools.partial(_constant, value)
            return self.get(value, markdown).render
        if isinstance(value, list):
            items = [self.plan(v, markdown) for v in value]
            return functools.partial(_render_list, items)
        if isinstance(value, dict):
            pairs = [(k, self.plan(v, markdown or k in MARKDOWN_KEYS)) for k, v in value.items()]
            return functools.partial(_render_dict, pairs)
        return functools.partial(_constant, value)

    def render_value(
        self,
        value: Any,
        fact: Mapping[str, Any],
        param: Mapping[str, Any],
        markdown: bool = False,
    ) -> Any:
        """Render strings (recursively in lists and mappings); other values unchanged.
        The values of MARKDOWN_KEYS are markdown text (outputs escaped)."""
        if isinstance(value, str):
            if not has_template(value):
                return value
            return self.get(value, markdown).render(fact, param)
        if isinstance(value, list):
            return [self.render_value(v, fact, param, markdown) for v in value]
        if isinstance(value, dict):
            return {
                k: self.render_value(v, fact, param, markdown or k in MARKDOWN_KEYS)
                for k, v in value.items()
            }
        return value


def _constant(value: Any, _fact: Mapping[str, Any], _param: Mapping[str, Any]) -> Any:
    return value


def _render_list(
    items: list[Renderer], fact: Mapping[str, Any], param: Mapping[str, Any]
) -> list[Any]:
    return [item(fact, param) for item in items]


def _render_dict(
    pairs: list[tuple[Any, Renderer]], fact: Mapping[str, Any], param: Mapping[str, Any]
) -> dict[Any, Any]:
    return {key: item(fact, param) for key, item in pairs}
