"""Input check against the StructureDefinition profiles in fhir_profiles/ (differential form).

Supported differential constructs, enough for the profiles we ship and for a site's own:
``min`` (required elements), ``max: "0"`` (forbidden), ``type`` on choice elements
(``value[x]`` must be one of the listed types), ``type.targetProfile`` of a Reference
(the reference must point to that resource type), and ``binding`` with strength
``required`` to a contained ValueSet (the code, or one coding of a CodeableConcept, must
be in it). Each finding is a data error naming the resource and the element.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds.contracts.outcome import DataIssue
from cds.fhir import issues as di


@dataclass(frozen=True, slots=True)
class _Check:
    path: str  # full path as written, e.g. Observation.value[x]
    steps: tuple[str, ...]  # without the resource type
    expr: str  # FHIRPath of the element, e.g. Observation.valueQuantity.code
    parents: tuple[str, ...]  # steps to the parent element
    allowed_keys: frozenset[str]  # JSON names of the allowed types of a choice element
    choice: bool
    required: bool
    forbidden: bool
    types: tuple[str, ...]
    target_types: tuple[str, ...]
    valueset: frozenset[tuple[str, str]] | None  # (system, code); system "" = any
    codes: frozenset[str]  # the codes of valueset, for plain code elements
    last: str  # steps[-1]


@dataclass(frozen=True, slots=True)
class CompiledProfile:
    id: str
    url: str
    type: str
    checks: tuple[_Check, ...]


def _valueset(sd: dict[str, Any], ref: str) -> frozenset[tuple[str, str]] | None:
    if not ref.startswith("#"):
        return None  # external value sets are not expanded here
    for res in sd.get("contained", []) or []:
        if isinstance(res, dict) and res.get("id") == ref[1:]:
            out: set[tuple[str, str]] = set()
            for inc in (res.get("compose") or {}).get("include", []) or []:
                system = str(inc.get("system") or "")
                for concept in inc.get("concept", []) or []:
                    out.add((system, str(concept.get("code"))))
            return frozenset(out)
    raise ValueError(f"StructureDefinition {sd.get('id')}: contained ValueSet {ref} not found")


def compile_profile(sd: dict[str, Any]) -> CompiledProfile:
    """Compile a StructureDefinition's differential into checks (ValueError if malformed)."""
    rtype = str(sd.get("type"))
    checks: list[_Check] = []
    for el in (sd.get("differential") or {}).get("element", []) or []:
        path = str(el["path"])
        parts = path.split(".")
        if parts[0] != rtype or len(parts) < 2:
            continue
        steps = tuple(parts[1:])
        choice = steps[-1].endswith("[x]")
        types = tuple(str(t["code"]) for t in el.get("type", []) or [])
        targets = tuple(
            str(p).rsplit("/", 1)[-1]
            for t in el.get("type", []) or []
            for p in t.get("targetProfile", []) or []
        )
        binding = el.get("binding") or {}
        vs = None
        if binding.get("strength") == "required" and binding.get("valueSet"):
            vs = _valueset(sd, str(binding["valueSet"]))
        checks.append(
            _Check(
                path=path,
                steps=steps,
                expr=f"{rtype}.{'.'.join(steps)}",
                parents=steps[:-1],
                allowed_keys=frozenset(
                    steps[-1][:-3] + _upper_first(t) for t in types if steps[-1].endswith("[x]")
                ),
                choice=choice,
                required=int(el.get("min", 0) or 0) >= 1,
                forbidden=str(el.get("max", "*")) == "0",
                types=types,
                target_types=targets,
                valueset=vs,
                codes=frozenset(code for _, code in vs or ()),
                last=steps[-1],
            )
        )
    return CompiledProfile(
        id=str(sd.get("id")), url=str(sd.get("url")), type=rtype, checks=tuple(checks)
    )


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def check(profile: CompiledProfile, resource: dict[str, Any], ref: str) -> list[DataIssue]:
    """Check one resource (raw JSON) against a compiled profile.

    The common outcome, a conforming element, is decided here with the tests of
    _check_element (_wrong_target, _not_in_valueset); a choice element present with an
    allowed type by one set test. Every finding is made by _check_choice and
    _check_element."""
    issues: list[DataIssue] = []
    for c in profile.checks:
        node: Any = resource
        for step in c.parents:
            node = node.get(step) if isinstance(node, dict) else None
            if node is None:
                break
        if not isinstance(node, dict):
            continue  # the parent is absent: its own element reports it
        if c.choice:
            # present with an allowed type (one set lookup per key of node, in C: cheaper
            # than a Python-level lookup of each allowed key in node)
            if c.allowed_keys.isdisjoint(node):
                _check_choice(profile, c, node, ref, issues)
            continue
        value = node.get(c.last)
        if (
            (value or (value is not None and value != [] and value != ""))  # present
            and not c.forbidden
            and (not c.target_types or _wrong_target(c, value) is None)
            and (c.valueset is None or _not_in_valueset(c, value) is None)
        ):
            continue
        _check_element(profile, c, node, ref, issues)
    return issues


def _check_choice(
    profile: CompiledProfile, c: _Check, node: dict[str, Any], ref: str, issues: list[DataIssue]
) -> None:
    """A choice element (value[x]) without an allowed type: absent, or of another type."""
    stem = c.steps[-1][:-3]
    keys = [k for k in node if k.startswith(stem) and k[len(stem) : len(stem) + 1].isupper()]
    if not keys:
        if c.required:
            choices = ", ".join(stem + _upper_first(t) for t in c.types)
            issues.append(di.profile_choice_missing(ref, c.expr, profile.id, choices))
        return
    allowed = {stem + _upper_first(t) for t in c.types}
    for k in keys:
        if allowed and k not in allowed:
            expr = f"{profile.type}.{'.'.join((*c.steps[:-1], k))}"
            send = " or ".join(sorted(allowed))
            issues.append(di.profile_choice_type(ref, expr, profile.id, k, send))


def _check_element(
    profile: CompiledProfile, c: _Check, node: dict[str, Any], ref: str, issues: list[DataIssue]
) -> None:
    expr, name = c.expr, profile.id
    value = node.get(c.steps[-1])
    if value is None or value == [] or value == "":
        if c.required:
            issues.append(di.profile_missing(ref, expr, name))
        return
    if c.forbidden:
        issues.append(di.profile_forbidden(ref, expr, name))
        return
    target = _wrong_target(c, value) if c.target_types else None
    if target is not None:
        targets = " or ".join(c.target_types)
        issues.append(di.profile_target(ref, expr, name, targets, target))
    if c.valueset is not None:
        shown = _not_in_valueset(c, value)
        if shown is not None:
            allowed_codes = ", ".join(sorted(code for _, code in c.valueset))
            issues.append(di.profile_code(ref, expr, name, shown, allowed_codes))


def _wrong_target(c: _Check, value: Any) -> str | None:
    """The reference of a Reference `value` that points to a resource type not in the
    check's target types, else None (a wrong JSON type is reported by the parser)."""
    if not isinstance(value, dict):
        return None
    target = value.get("reference")
    if (
        isinstance(target, str)
        and "/" in target
        and not target.startswith("urn:")
        and target.rstrip("/").split("/")[-2] not in c.target_types
    ):
        return target
    return None


def _not_in_valueset(c: _Check, value: Any) -> str | None:
    """The value shown in the message when it is not in the check's value set, else None
    (a wrong type is reported by the parser)."""
    codes = c.valueset or frozenset()
    if isinstance(value, str):
        return None if value in c.codes else value
    if not isinstance(value, dict):
        return None
    codings = value.get("coding") or []
    for cd in codings if isinstance(codings, list) else []:
        if isinstance(cd, dict):
            key = (str(cd.get("system") or ""), str(cd.get("code") or ""))
            if key in codes:
                return None
    return str(value.get("text") or codings)
