"""Loading a rules folder into a validated, compiled `RuleSet` (all or nothing)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds.rules.errors import RuleError, RuleSetError
from cds.rules.facttypes import FactType, input_fact_types
from cds.rules.model import DerivedFact, EvidenceRegistry, Parameter, Rule, RuleFile
from cds.rules.source import Loc, Source, display_path, read_yaml
from cds.rules.structure import validate_structure
from cds.rules.templates import MARKDOWN_KEYS, TemplateCache
from cds.rules.validate import (
    Context,
    build_derived,
    check_emit_cycles,
    check_evidence,
    check_rule,
)
from cds.settings import data_folders

EVIDENCE_FILE = "evidence.yaml"
ParamValue = bool | int | float | str


def default_rules_dir() -> Path:
    """The rules folder of this run: OSTEOHOOKS_RULES, else the bundled one (DataFolders)."""
    return data_folders().rules


@dataclass(frozen=True)
class Origin:
    """Where a rule (or one of its examples) is written."""

    path: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass
class RuleSet:
    """A validated rule set: the model, its parameters, fact types and compiled form."""

    rules: list[Rule]
    parameters: dict[str, ParamValue]
    parameter_specs: dict[str, Parameter]
    derived_facts: dict[str, DerivedFact]
    fact_types: dict[str, FactType]
    evidence: EvidenceRegistry
    version: str
    files: list[str]
    rule_files: dict[str, str]
    origins: dict[str, Origin]
    example_origins: dict[tuple[str, int], Origin]
    templates: TemplateCache = field(default_factory=TemplateCache)
    compiled: dict[str, Any] = field(default_factory=dict)
    #: The order keys suggestions may name (None: not checked).
    order_keys: frozenset[str] | None = None
    #: Rules by id (the first of a rejected duplicate id), made once: `rules` is not
    #: changed after load.
    _by_id: dict[str, Rule] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for rule in self.rules:
            self._by_id.setdefault(rule.id, rule)

    @property
    def active_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.status == "active"]

    def rule(self, rule_id: str) -> Rule:
        try:
            return self._by_id[rule_id]
        except KeyError:
            raise KeyError(rule_id) from None


def _version(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def load_ruleset(
    directory: Path | str | None = None,
    *,
    order_keys: Collection[str] | None = None,
    compile: bool = True,
) -> RuleSet:
    """Load, validate and compile every `*.yaml` rule file of `directory`.

    `directory/evidence.yaml` is the evidence registry. Suggestions may name only the
    order keys of `order_keys` (`cds.fhir.load_profiles(...).order_keys`; None: not
    checked). Raises RuleSetError with every problem found; never returns a partial set.

    The YAML is first read through libyaml (`read_yaml(fast=True)`); a rule set with
    any problem is read again with the round-trip loader alone, so every error message
    and position is the round-trip loader's.
    """
    try:
        return _load(directory, order_keys=order_keys, compile=compile, fast=True)
    except RuleSetError:
        return _load(directory, order_keys=order_keys, compile=compile, fast=False)


def _load(
    directory: Path | str | None,
    *,
    order_keys: Collection[str] | None,
    compile: bool,
    fast: bool,
) -> RuleSet:
    root = Path(directory) if directory is not None else default_rules_dir()
    errors: list[RuleError] = []
    if not root.is_dir():
        raise RuleSetError([RuleError(display_path(root), 1, 1, "rules folder not found")])
    paths = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    evidence_path = root / EVIDENCE_FILE

    evidence = EvidenceRegistry()
    evidence_ok = False
    if not evidence_path.exists():
        errors.append(
            RuleError(
                display_path(evidence_path),
                1,
                1,
                "evidence registry not found: create it with 'sources' and 'clinical_spec_ids'",
            )
        )
    else:
        parsed = read_yaml(evidence_path, fast=fast)
        if isinstance(parsed, RuleError):
            errors.append(parsed)
        else:
            model, errs = validate_structure(parsed, EvidenceRegistry)
            errors.extend(errs)
            if model is not None:
                evidence, evidence_ok = model, True

    files: list[tuple[Source, RuleFile]] = []
    for path in paths:
        if path.name == EVIDENCE_FILE:
            continue
        parsed = read_yaml(path, fast=fast)
        if isinstance(parsed, RuleError):
            errors.append(parsed)
            continue
        if not isinstance(parsed.data, dict):
            errors.append(
                parsed.error((), "a rule file is a mapping with parameters, derived_facts, rules")
            )
            continue
        doc, errs = validate_structure(parsed, RuleFile)
        errors.extend(errs)
        if doc is not None:
            files.append((parsed, doc))
    # Form errors do not stop the checks of meaning in the well-formed files; only the
    # checks that need a name another file may define are held back (Context.partial).
    inputs = input_fact_types()
    ctx = Context(
        fact_types=dict(inputs),
        parameters={},
        evidence=evidence,
        order_codes=None if order_keys is None else set(order_keys),
        partial=bool(errors),
        evidence_ok=evidence_ok,
    )
    param_origin: dict[str, Source] = {}
    parameter_specs: dict[str, Parameter] = {}
    for src, doc in files:
        for name, param in doc.parameters.items():
            loc: Loc = ("parameters", name)
            if name in param_origin:
                first = param_origin[name]
                line, col = first.key_at(loc)
                ctx.add(
                    src,
                    loc,
                    f"duplicate parameter '{name}' (first at {first.path}:{line}:{col})",
                    key=True,
                )
                continue
            param_origin[name] = src
            parameter_specs[name] = param
            ctx.parameters[name] = param.value
            check_evidence(src, (*loc, "evidence"), param.evidence, ctx, need_cs=False)
    build_derived(files, ctx, inputs)

    all_rules: list[tuple[Source, Loc, Rule]] = []
    seen: dict[str, tuple[Source, Loc]] = {}
    origins: dict[str, Origin] = {}
    example_origins: dict[tuple[str, int], Origin] = {}
    rule_files: dict[str, str] = {}
    for src, doc in files:
        for index, rule in enumerate(doc.rules):
            loc = ("rules", index)
            if rule.id in seen:
                first_src, first_loc = seen[rule.id]
                line, col = first_src.at((*first_loc, "id"))
                ctx.add(
                    src,
                    (*loc, "id"),
                    f"duplicate rule id '{rule.id}' (first at {first_src.path}:{line}:{col})",
                )
            else:
                seen[rule.id] = (src, loc)
                line, col = src.at(loc)
                origins[rule.id] = Origin(src.path, line, col)
                rule_files[rule.id] = src.path
                for eindex in range(len(rule.examples)):
                    eline, ecol = src.at((*loc, "examples", eindex))
                    example_origins[(rule.id, eindex)] = Origin(src.path, eline, ecol)
            all_rules.append((src, loc, rule))
            check_rule(src, loc, rule, ctx)

    read = {rule.when.fact for _s, _l, rule in all_rules}
    for src, doc in files:
        for name in doc.derived_facts:
            if name not in read:
                ctx.add(
                    src,
                    ("derived_facts", name),
                    f"derived fact type '{name}' is not read by any rule "
                    f"(no rule has 'when: {{fact: {name}}}')",
                    key=True,
                    cross=True,
                )
    check_emit_cycles(all_rules, ctx)
    if errors or ctx.errors:
        raise RuleSetError([*errors, *ctx.errors])

    ruleset = RuleSet(
        rules=[rule for _s, _l, rule in all_rules],
        parameters=dict(ctx.parameters),
        parameter_specs=parameter_specs,
        derived_facts={n: d for _s, doc in files for n, d in doc.derived_facts.items()},
        fact_types=ctx.fact_types,
        evidence=evidence,
        version=_version(paths),
        files=[src.path for src, _doc in files],
        rule_files=rule_files,
        origins=origins,
        example_origins=example_origins,
        templates=ctx.templates,
        order_keys=None if order_keys is None else frozenset(order_keys),
    )
    _precompile_templates(ruleset)
    if compile:
        from cds.rules.compiler import compile_ruleset

        ruleset.compiled = compile_ruleset(ruleset)
    return ruleset


def _precompile_templates(ruleset: RuleSet) -> None:
    """Compile every template once now, so evaluation never parses text."""

    def walk(value: Any, markdown: bool = False) -> None:
        if isinstance(value, str):
            if "{{" in value or "{%" in value:
                ruleset.templates.get(value, markdown)
        elif isinstance(value, list):
            for item in value:
                walk(item, markdown)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, markdown or key in MARKDOWN_KEYS)

    for rule in ruleset.rules:
        if rule.then.card is not None:
            walk(rule.then.card.model_dump(exclude_none=True))
