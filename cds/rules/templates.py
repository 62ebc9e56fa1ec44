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
text (the plain-text ``summary``, suggestion labels) is written as it is. Both renderers
(Jinja's, with its ``finalize``, and the translation to Python) escape the same way.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, meta, nodes
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import UndefinedError
from jinja2.nodes import EvalContext
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
def _free_names(source: str) -> frozenset[str]:
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
    free = set(_free_names(source)) - set(CONTEXT_NAMES)
    return refs, free


Renderer = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Template:
    """A compiled template string.

    ``_render`` is Jinja's own entry point (keyword arguments ``fact`` and ``param``);
    ``_fast``, when set, gives the same value for the same context without Jinja's
    per-call context set-up (it returns ``_MISS`` when it cannot, and any exception in it
    is answered by ``_render``, so errors read exactly as Jinja's).
    """

    source: str
    native: bool
    _render: Callable[..., Any]
    _fast: Renderer | None = None

    def render(self, fact: Mapping[str, Any], param: Mapping[str, Any]) -> Any:
        """Render with the context; a native template returns the expression's value."""
        if self._fast is not None:
            try:
                value = self._fast(fact, param)
            except Exception:  # the canonical path below raises Jinja's exact error
                value = _MISS
            if value is not _MISS and not isinstance(value, Undefined):
                return value
        value = self._render(fact=fact, param=param)
        if isinstance(value, Undefined):  # an expression's value is not checked by Jinja
            raise UndefinedError(value._undefined_message)
        return value


_MISS: Any = object()


def _lookup(scope: str, name: str) -> Renderer | None:
    """``{{ fact.x }}`` / ``{{ param.x }}`` as a plain key lookup (sandbox getattr order)."""
    if name in _DICT_ATTRIBUTES:
        return None  # the sandbox would answer with the dict's attribute
    if scope == "fact":

        def from_fact(fact: Mapping[str, Any], param: Mapping[str, Any]) -> Any:
            return fact.get(name, _MISS)

        return from_fact

    def from_param(fact: Mapping[str, Any], param: Mapping[str, Any]) -> Any:
        return param.get(name, _MISS)

    return from_param


def _only_context_names(source: str) -> bool:
    return _free_names(source) <= frozenset(CONTEXT_NAMES)


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


# ---------------------------------------------------------------- translation to Python
#
# The template shapes the rules use (text, `fact.x` / `param.y` / `fact['x']`, the filters
# and tests below, `or` / `and` / `not`, comparisons, `if` blocks, `a if b else c`) are
# translated once (when compiled; a card's templates together, into one function building
# the card, when the card is first rendered) into one Python expression each: the code
# Jinja's own code generator writes for the same AST (jinja2.compiler; print it with
# ``ENV.compile(source, raw=True)``), with the run-time indirections resolved in advance:
#
# * ``environment.getattr(fact, 'x')`` is ``fact['x']``: for a dict and a name that is
#   not a dict attribute that is what `_Environment.getattr` returns; a dict attribute
#   name (``fact.items``) is not translated. ``environment.getitem(fact, 'x')`` is the
#   sandbox's ``obj[argument]`` first try. An absent key raises KeyError where Jinja
#   would make a StrictUndefined (and raise, or answer a ``defined`` test): every
#   exception makes the caller render with Jinja instead, so values and error texts are
#   always Jinja's.
# * filters and tests are the very functions of ``ENV.filters`` / ``ENV.tests`` that
#   Jinja's code calls, with the same arguments in the same order (the environment or
#   a fixed, never modified, EvalContext where the filter asks for one);
# * an output ``{{ e }}`` is ``str(finalize(e))``: ``'' if e is None else str(e)``;
#   text between tags is the TemplateData text; the pieces are joined as Jinja's
#   ``concat`` (``''.join``) does; ``{% if %}`` / ``elif`` / ``else`` become conditional
#   expressions over the joined pieces of each branch (tests in the same order);
# * ``and`` / ``or`` / ``not``, comparisons and ``a if b else c`` are Python's, as in
#   Jinja's code (the sandbox intercepts no operator: ``intercepted_binops`` is empty).
#
# Sandbox: the generated code reads nothing but ``fact[...]`` / ``param[...]`` with
# constant keys, calls only the listed filters and tests, and holds no name from the
# template: keys and literals are ``repr`` of str / int / float / bool / None constants.
# Anything else (other nodes, filters, tests, keyword arguments, names, attribute
# chains) is not translated and keeps the Jinja path.

#: Filters and tests a translation may call (pure functions of their arguments).
_TRANSLATED_FILTERS = frozenset(
    {"add_months", "fmt", "against", "replace", "truncate", "format", "round", "abs"}
)
_TRANSLATED_TESTS = frozenset({"string", "number", "none"})
_COMPARE_OPS = {
    "eq": "==",
    "ne": "!=",
    "gt": ">",
    "gteq": ">=",
    "lt": "<",
    "lteq": "<=",
    "in": "in",
    "notin": "not in",
}
#: What ``context.eval_ctx`` is for a fresh render of ENV's templates (autoescape off,
#: not volatile); only read, by filters that ask for it (``replace``).
_EVAL_CONTEXT = EvalContext(ENV)


class _Unsupported(Exception):
    """A template shape that is not translated (Jinja renders it)."""


#: How a translation reads ``fact.<key>``: the Python code of the read.
FactRead = Callable[[str], str]


def _index_read(key: str) -> str:
    return f"fact[{key!r}]"


def filled_read(fields: Collection[str], hidden: Collection[str]) -> FactRead:
    """Reads of the template fact ``{**dict.fromkeys(fields), **fact}`` (its `hidden`
    keys then None when they are fields, else removed) done on the raw ``fact``.

    A field is ``_get(key)`` (``fact.get``: the fact's value, else None), a hidden
    field is None, any other key is ``fact[key]`` (absent: KeyError, where the template
    fact has no key either); a hidden key that is no field is not translated.
    """
    field_names = frozenset(fields)
    hidden_names = frozenset(hidden)

    def read(key: str) -> str:
        if key in hidden_names:
            if key in field_names:
                return "None"
            raise _Unsupported(key)
        if key in field_names:
            return f"_get({key!r})"
        return f"fact[{key!r}]"

    return read


class _Translator:
    """One Python expression per template AST (see the comment above)."""

    def __init__(self, read_fact: FactRead, names: dict[str, Any]) -> None:
        self.read_fact = read_fact
        self.names = names  # the generated module's globals: the filters and tests
        self.markdown = False  # outputs escaped for markdown (MD_ENV's finalize)

    def _callable(self, kind: str, name: str) -> str:
        table = ENV.filters if kind == "filter" else ENV.tests
        func = table.get(name)
        if func is None:
            raise _Unsupported(name)
        alias = f"_{kind}_{name}"
        self.names[alias] = func
        return alias

    def const(self, value: Any) -> str:
        if value is None or type(value) in (str, int, bool):
            return repr(value)
        if type(value) is float and math.isfinite(value):
            return repr(value)  # repr of a finite float reads back as the same float
        raise _Unsupported(repr(value))

    def _read(self, target: nodes.Node, key: str) -> str:
        if not (isinstance(target, nodes.Name) and target.ctx == "load"):
            raise _Unsupported("attribute of an expression")
        if target.name == "fact":
            return self.read_fact(key)
        if target.name == "param":
            return f"param[{key!r}]"
        raise _Unsupported(target.name)

    def _args(self, node: nodes.Filter | nodes.Test, alias: str, func: Any) -> str:
        if node.kwargs or node.dyn_args is not None or node.dyn_kwargs is not None:
            raise _Unsupported("keyword or dynamic arguments")
        args: list[str] = []
        pass_arg = getattr(func, "jinja_pass_arg", None)
        if pass_arg is not None:
            if pass_arg.name == "environment":
                self.names["_environment"] = ENV
                args.append("_environment")
            elif pass_arg.name == "eval_context":
                self.names["_eval_context"] = _EVAL_CONTEXT
                args.append("_eval_context")
            else:
                raise _Unsupported("a filter that needs the template context")
        if node.node is None:
            raise _Unsupported("filter block")
        args.append(self.expr(node.node))
        args.extend(self.expr(arg) for arg in node.args)
        return f"{alias}({', '.join(args)})"

    def expr(self, node: nodes.Node) -> str:
        if isinstance(node, nodes.Const):
            return self.const(node.value)
        if isinstance(node, nodes.Getattr):
            if node.attr in _DICT_ATTRIBUTES:
                raise _Unsupported("a dict attribute")
            return self._read(node.node, node.attr)
        if isinstance(node, nodes.Getitem):
            if not (isinstance(node.arg, nodes.Const) and type(node.arg.value) is str):
                raise _Unsupported("a computed key")
            return self._read(node.node, node.arg.value)
        if isinstance(node, nodes.Filter):
            if node.name not in _TRANSLATED_FILTERS:
                raise _Unsupported(node.name)
            alias = self._callable("filter", node.name)
            return self._args(node, alias, self.names[alias])
        if isinstance(node, nodes.Test):
            if node.name not in _TRANSLATED_TESTS:
                raise _Unsupported(node.name)
            alias = self._callable("test", node.name)
            return self._args(node, alias, self.names[alias])
        if isinstance(node, nodes.And):
            return f"({self.expr(node.left)} and {self.expr(node.right)})"
        if isinstance(node, nodes.Or):
            return f"({self.expr(node.left)} or {self.expr(node.right)})"
        if isinstance(node, nodes.Not):
            return f"(not {self.expr(node.node)})"
        if isinstance(node, nodes.Compare):
            parts = [self.expr(node.expr)]
            for operand in node.ops:
                op = _COMPARE_OPS.get(operand.op)
                if op is None:
                    raise _Unsupported(operand.op)
                parts.append(f"{op} {self.expr(operand.expr)}")
            return "(" + " ".join(parts) + ")"
        if isinstance(node, nodes.CondExpr):
            if node.expr2 is None:
                raise _Unsupported("an if expression without else")
            test, yes, no = self.expr(node.test), self.expr(node.expr1), self.expr(node.expr2)
            return f"({yes} if {test} else {no})"
        raise _Unsupported(type(node).__name__)

    def _pieces(self, body: list[nodes.Node]) -> list[str]:
        pieces: list[str] = []
        for node in body:
            if isinstance(node, nodes.Output):
                for child in node.nodes:
                    if isinstance(child, nodes.TemplateData):
                        pieces.append(repr(child.data))
                    else:
                        value = self.expr(child)
                        if self.markdown:
                            self.names["_md_finalize"] = _md_finalize
                            pieces.append(f"str(_md_finalize({value}))")
                        else:
                            pieces.append(f"('' if (_v := {value}) is None else str(_v))")
            elif isinstance(node, nodes.If):
                other = self.text(node.else_)
                for branch in reversed(node.elif_):
                    other = f"({self.text(branch.body)} if {self.expr(branch.test)} else {other})"
                pieces.append(f"({self.text(node.body)} if {self.expr(node.test)} else {other})")
            else:
                raise _Unsupported(type(node).__name__)
        return pieces

    def text(self, body: list[nodes.Node]) -> str:
        """The joined output of a template body (a str)."""
        pieces = self._pieces(body)
        if not pieces:
            return "''"
        return "''.join((" + ", ".join(pieces) + ",))"

    def template(self, source: str, markdown: bool = False) -> str:
        """The code of a template's value: the expression's for a native one, else text
        (markdown text is always text, its outputs escaped)."""
        expr = None if markdown else _is_single_expression(source)
        if expr is None:
            self.markdown = markdown
            try:
                return self.text(_parse(source).body)
            finally:
                self.markdown = False
        body = _parse("{{" + expr + "}}").body
        if not (
            len(body) == 1
            and isinstance(body[0], nodes.Output)
            and len(body[0].nodes) == 1
            and not isinstance(body[0].nodes[0], nodes.TemplateData)
        ):
            raise _Unsupported("not one expression")
        return self.expr(body[0].nodes[0])


def _define(value: str, names: dict[str, Any], filename: str) -> Renderer | None:
    """``def _render(fact, param)`` returning the expression `value` (its globals:
    `names`, and of the builtins only ``str``, ``type`` and ``dict``; ``_get`` is
    ``fact.get``), answering ``_MISS`` when `fact` or `param` is not a plain dict. None
    when Python cannot compile it (e.g. beyond its nesting limits): the template then
    keeps the Jinja path."""
    code = (
        "def _render(fact, param):\n"
        "    if type(fact) is not dict or type(param) is not dict:\n"
        "        return _MISS\n"
        "    _get = fact.get\n"
        f"    return {value}\n"
    )
    names["_MISS"] = _MISS
    namespace: dict[str, Any] = {"__builtins__": {"str": str, "type": type, "dict": dict}}
    namespace.update(names)
    try:
        # Only code written by `_Translator` and `TemplateCache.translate` comes here.
        exec(compile(code, filename, "exec"), namespace)
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    render: Renderer = namespace["_render"]
    return render


def _translate_template(source: str, markdown: bool = False) -> Renderer | None:
    """The template as a Python function of (fact, param), or None when not translated.

    Like the other fast paths it answers ``_MISS`` for a fact or param that is not a
    plain dict (the sandbox treats other mappings differently) and may raise anything,
    which `Template.render` answers with Jinja's own render.
    """
    names: dict[str, Any] = {}
    try:
        value = _Translator(_index_read, names).template(source, markdown)
    except (_Unsupported, TemplateSyntaxError, RecursionError):
        return None
    return _define(value, names, "<template>")


class _CompiledOnFirstUse:
    """Jinja's render function of a translated template, compiled when first called.

    A translated template is rendered by its translation; Jinja renders it only when the
    translation answers ``_MISS`` or raises (junk in a fact), so its code generation,
    a quarter of the rule set's load time, is left until then. It cannot fail: the
    translator takes only known filters and tests and no other construct Jinja's
    compiler could refuse (an untranslated template is compiled at load, so its errors
    still surface then).
    """

    __slots__ = ("_make", "_render")

    def __init__(self, make: Callable[[], Callable[..., Any]]) -> None:
        self._make = make
        self._render: Callable[..., Any] | None = None

    def __call__(self, **context: Any) -> Any:
        render = self._render
        if render is None:
            render = self._render = self._make()
        return render(**context)


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
            translated = _translate_template(source, markdown=True)
            if translated is not None:
                text = functools.partial(_text_render, source, MD_ENV)
                return Template(source, False, _CompiledOnFirstUse(text), translated)
            template = _jinja_text(source, MD_ENV)
            return Template(source, False, template.render, _fast_text(source, template, MD_ENV))
        expr = _is_single_expression(source)
        translated = _translate_template(source)
        if expr is not None:
            if translated is not None:
                native = functools.partial(ENV.compile_expression, expr, undefined_to_none=False)
                return Template(source, True, _CompiledOnFirstUse(native), translated)
            compiled = ENV.compile_expression(expr, undefined_to_none=False)
            return Template(source, True, compiled, _fast_expression(expr, compiled))
        if translated is not None:
            text = functools.partial(_text_render, source)
            return Template(source, False, _CompiledOnFirstUse(text), translated)
        template = _jinja_text(source)
        return Template(source, False, template.render, _fast_text(source, template))
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from exc


def _text_render(source: str, env: SandboxedEnvironment = ENV) -> Callable[..., Any]:
    return _jinja_text(source, env).render


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

    def translate(self, value: Any, read_fact: FactRead) -> Renderer | None:
        """`plan(value)` as one generated Python function, or None when not translated.

        Every template of `value` is translated (see `_Translator`), with ``fact.<key>``
        read by the code ``read_fact(key)`` gives (it raises `_Unsupported` for a key it
        does not read); lists and mappings are literals, so each call builds fresh ones
        in the same order, and text without a template and other scalars are constants
        (``repr`` of a str / int / bool / None / finite float reads back as an equal
        value of the same type). The function answers ``_MISS`` when `param` or the fact
        is not a plain dict and may raise anything: the caller then renders with `plan`,
        which gives the values and the errors of Jinja.
        """
        names: dict[str, Any] = {}
        translator = _Translator(read_fact, names)

        def code(item: Any, markdown: bool = False) -> str:
            if isinstance(item, str):
                if type(item) is not str:
                    raise _Unsupported("a str subclass")
                if has_template(item):
                    return translator.template(item, markdown)
                return repr(item)
            if isinstance(item, list):
                return "[" + ", ".join(code(v, markdown) for v in item) + "]"
            if isinstance(item, dict):
                if not all(type(k) is str for k in item):
                    raise _Unsupported("a key that is not a str")
                return (
                    "{"
                    + ", ".join(
                        f"{k!r}: {code(v, markdown or k in MARKDOWN_KEYS)}" for k, v in item.items()
                    )
                    + "}"
                )
            return translator.const(item)

        try:
            body = code(value)
        except (_Unsupported, TemplateSyntaxError, RecursionError):
            return None
        return _define(body, names, "<card>")

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


def _constant(value: Any, fact: Mapping[str, Any], param: Mapping[str, Any]) -> Any:
    return value


def _render_list(
    items: list[Renderer], fact: Mapping[str, Any], param: Mapping[str, Any]
) -> list[Any]:
    return [item(fact, param) for item in items]


def _render_dict(
    pairs: list[tuple[Any, Renderer]], fact: Mapping[str, Any], param: Mapping[str, Any]
) -> dict[Any, Any]:
    return {key: item(fact, param) for key, item in pairs}
