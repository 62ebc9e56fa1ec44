"""Write a synthetic rule set of N rules for scale tests and benchmarks.

    .venv/bin/python tools/synthetic_rules.py --rules 2000 --out /tmp/syn

writes ``/tmp/syn/rules`` (the bundled rules plus copies) and ``/tmp/syn/fhir_profiles``
(a copy of the bundled profiles, so the order codes resolve as for the bundled set).

Each copy is a bundled rule without an ``emit`` (copies of emit rules would multiply
derived facts, which no real rule set does), renamed ``<id>.syn<k>``, without examples,
with one extra test that makes its pattern distinct and never holds (a required integer
field ``ge 1000000+k``, else a required text field ``eq "syn-<k>"``; with ``--fire`` it
always holds instead: ``ge -1000000-k`` / ``ne "syn-<k>"``; durable_rules shares nodes
between identical patterns, so plain copies would not grow the engine as distinct rules
do), and with a card detail ending "Local variant <k>." (every copy's
templates are its own, as with per-site variants). Copies go into files of at most
``--per-file`` rules. Deterministic: the same arguments write the same files.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]


def _yaml() -> YAML:
    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    y.width = 4096
    return y


def _fields_named(node: Any) -> set[str]:
    if isinstance(node, dict):
        named = {str(node["field"])} if "field" in node else set()
        return named.union(*(_fields_named(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_fields_named(v) for v in node))
    return set()


def _always_true_field(
    fact_type: str,
    extends: dict[str, str],
    avoid: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[str, str]:
    """(field, kind) of an int or free-text field every fact of `fact_type` (or what it
    extends) has, preferring one that is not in `avoid` (the fields the rule already
    tests: a never-holding test on one of those is refused by the loader as
    unsatisfiable, e.g. `ge 40 and le 90 and ge 1000077`)."""
    from cds.contracts.facts import FACT_TYPES

    while fact_type not in FACT_TYPES:
        fact_type = extends[fact_type]
    # required fields, and plain int/str fields with a default: every fact has them
    fields = [
        (name, info)
        for name, info in FACT_TYPES[fact_type].model_fields.items()
        if name != "id"
        and (info.is_required() or info.annotation in (int, str))
        and not info.metadata
    ]
    ranked = sorted(fields, key=lambda item: item[0] in avoid)
    for kind, annotation in (("int", int), ("str", str)):
        for name, info in ranked:
            if info.annotation is annotation and name not in avoid:
                return name, kind
    for kind, annotation in (("int", int), ("str", str)):
        for name, info in ranked:
            if info.annotation is annotation:
                return name, kind
    raise ValueError(f"fact type {fact_type!r} has no required int or str field")


def _distinct(when: dict[str, Any], k: int, extends: dict[str, str], fire: bool) -> dict[str, Any]:
    fact = when["fact"]
    node = {key: value for key, value in when.items() if key != "fact"}
    name, kind = _always_true_field(fact, extends, _fields_named(node))
    # no age, count or day offset is beyond 10**6 and no text is "syn-<k>": the test
    # always holds (fire) or never does (a variant for another site)
    test: dict[str, Any] = {"field": name, "ne" if fire else "eq": f"syn-{k}"}
    if kind == "int":
        test = {"field": name, "ge": -1_000_000 - k} if fire else {"field": name, "ge": 10**6 + k}
    if not node:
        return {"fact": fact, "all": [test]}
    if list(node) == ["all"]:
        return {"fact": fact, "all": [*node["all"], test]}
    return {"fact": fact, "all": [node, test]}


def write_synthetic(
    n_rules: int,
    out: Path,
    *,
    rules_dir: Path = ROOT / "rules",
    profiles_dir: Path = ROOT / "fhir_profiles",
    per_file: int = 250,
    fire: bool = False,
) -> Path:
    """Write ``out/rules`` with `n_rules` active rules in all; returns that folder.

    `fire`: every copy fires wherever its original does (the worst case for cards and for
    durable's results per fact); otherwise no copy ever fires (variants for other sites:
    the engine still tests every one).
    """
    y = _yaml()
    target = out / "rules"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if (out / "fhir_profiles").exists():
        shutil.rmtree(out / "fhir_profiles")
    shutil.copytree(profiles_dir, out / "fhir_profiles")
    originals: list[dict[str, Any]] = []
    extends: dict[str, str] = {}
    count = 0
    for path in sorted(rules_dir.glob("*.yaml")):
        shutil.copyfile(path, target / path.name)
        data = y.load(path.read_text(encoding="utf-8")) or {}
        for name, spec in (data.get("derived_facts") or {}).items():
            extends[name] = spec["extends"]
        for rule in data.get("rules") or []:
            if rule.get("status", "active") != "active":
                continue
            count += 1
            if "emit" not in (rule.get("then") or {}):
                originals.append(rule)
    if n_rules < count:
        raise ValueError(f"the bundled rule set alone has {count} active rules")
    copies: list[dict[str, Any]] = []
    k = 0
    while count + len(copies) < n_rules:
        rule = copy.deepcopy(originals[k % len(originals)])
        rule["id"] = f"{rule['id']}.syn{k}"
        rule.pop("examples", None)
        rule["when"] = _distinct(rule["when"], k, extends, fire)
        card = (rule.get("then") or {}).get("card")
        if card is not None and isinstance(card.get("detail"), str):
            # per-site variants carry their own text: every copy's templates are its own
            card["detail"] = f"{card['detail'].rstrip()}\n\nLocal variant {k}.\n"
        copies.append(rule)
        k += 1
    for index in range(0, len(copies), per_file):
        chunk = copies[index : index + per_file]
        with (target / f"synthetic-{index // per_file:04d}.yaml").open("w", encoding="utf-8") as fh:
            y.dump({"rules": chunk}, fh)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, required=True, help="active rules in all")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-file", type=int, default=250)
    parser.add_argument("--fire", action="store_true", help="copies fire like their originals")
    args = parser.parse_args(argv)
    folder = write_synthetic(args.rules, args.out, per_file=args.per_file, fire=args.fire)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
