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
            )
        )
    return CompiledProfile(
        id=str(sd.get("id")), url=str(sd.get("url")), type=rtype, checks=tuple(checks)
    )


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def check(profile: CompiledProfile, resource: dict[str, Any], ref: str) -> list[DataIssue]:
    """Check one resource (raw JSON) against a compiled profile."""
    issues: list[DataIssue] = []
    name = profile.id
    for c in profile.checks:
        node: Any = resource
        for step in c.parents:
            node = node.get(step) if isinstance(node, dict) else None
            if node is None:
                break
        if not isinstance(node, dict):
            continue  # the parent is absent: its own element reports it
        last = c.steps[-1]
        expr = c.expr
        if c.choice:
            # present with an allowed type (looking up the few allowed keys in node, where
            # allowed_keys.isdisjoint(node) would walk every key of node)
            if any(map(node.__contains__, c.allowed_keys)):
                continue
            stem = last[:-3]
            keys = [
                k for k in node if k.startswith(stem) and k[len(stem) : len(stem) + 1].isupper()
            ]
            if not keys:
                if c.required:
                    issues.append(
                        DataIssue(
                            severity="error",
                            code="required",
                            resource=ref,
                            expression=expr,
                            message=f"{expr} is required by profile {name} "
                            f"(one of: {', '.join(stem + _upper_first(t) for t in c.types)})",
                        )
                    )
                continue
            allowed = {stem + _upper_first(t) for t in c.types}
            for k in keys:
                if allowed and k not in allowed:
                    issues.append(
                        DataIssue(
                            severity="error",
                            code="structure",
                            resource=ref,
                            expression=f"{profile.type}.{'.'.join((*c.steps[:-1], k))}",
                            message=f"{k} is not allowed by profile {name}; send "
                            f"{' or '.join(sorted(allowed))}",
                        )
                    )
            continue
        value = node.get(last)
        if value is None or value == [] or value == "":
            if c.required:
                issues.append(
                    DataIssue(
                        severity="error",
                        code="required",
                        resource=ref,
                        expression=expr,
                        message=f"{expr} is required by profile {name} but is missing",
                    )
                )
            continue
        if c.forbidden:
            issues.append(
                DataIssue(
                    severity="error",
                    code="structure",
                    resource=ref,
                    expression=expr,
                    message=f"{expr} is not allowed by profile {name}",
                )
            )
            continue
        if c.target_types and isinstance(value, dict):
            target = value.get("reference")
            if isinstance(target, str) and "/" in target and not target.startswith("urn:"):
                rtype = target.rstrip("/").split("/")[-2]
                if rtype not in c.target_types:
                    issues.append(
                        DataIssue(
                            severity="error",
                            code="structure",
                            resource=ref,
                            expression=f"{expr}.reference",
                            message=f"{expr} must reference {' or '.join(c.target_types)}, "
                            f"not {target!r} (profile {name})",
                        )
                    )
        if c.valueset is not None:
            codes = c.valueset
            ok = False
            shown = ""
            if isinstance(value, str):
                ok = value in c.codes
                shown = value
            elif isinstance(value, dict):
                codings = value.get("coding") or []
                for cd in codings if isinstance(codings, list) else []:
                    if isinstance(cd, dict):
                        key = (str(cd.get("system") or ""), str(cd.get("code") or ""))
                        if key in codes:
                            ok = True
                            break
                if not ok:  # only the message shows it
                    shown = str(value.get("text") or codings)
            else:
                ok = True  # a wrong type is reported by the parser
            if not ok:
                allowed_codes = ", ".join(sorted(code for _, code in codes))
                issues.append(
                    DataIssue(
                        severity="error",
                        code="code-invalid",
                        resource=ref,
                        expression=expr,
                        message=f"{expr} {shown!r} is not allowed by profile {name} "
                        f"(allowed: {allowed_codes})",
                    )
                )
    return issues
