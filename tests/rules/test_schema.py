"""The editor schema (cds/rules/rules.schema.json): generated from the rule model, shipped
in the package, named by every bundled rule file, accepting each of them and rejecting
broken ones where an editor should underline them."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from cds.cli import app
from cds.fhir import load_profiles
from cds.rules import RuleSet, load_ruleset
from cds.rules.schema import MODELINE, SHIPPED, dumps, generate

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
RULE_FILES = sorted(p for p in RULES.glob("*.yaml") if p.name != "evidence.yaml")


@pytest.fixture(scope="module")
def bundled() -> RuleSet:
    return load_ruleset(RULES, order_keys=load_profiles().order_keys)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SHIPPED.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _data(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def test_shipped_schema_is_the_generated_one(bundled: RuleSet) -> None:
    assert SHIPPED.read_text(encoding="utf-8") == dumps(generate(bundled)), (
        "cds/rules/rules.schema.json is out of date with the rules or the rule model: run "
        "`make golden` and review the diff"
    )


def test_schema_is_package_data() -> None:
    shipped = resources.files("cds.rules").joinpath("rules.schema.json")
    assert shipped.is_file()
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"rules/rules.schema.json"' in pyproject


def test_cli_prints_the_schema(bundled: RuleSet) -> None:
    result = CliRunner().invoke(app, ["rules", "schema", str(RULES)])
    assert result.exit_code == 0, result.output
    assert result.stdout == dumps(generate(bundled))


@pytest.mark.parametrize("path", RULE_FILES, ids=[p.name for p in RULE_FILES])
def test_every_rule_file_names_the_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == MODELINE
    target = (path.parent / first.partition("$schema=")[2]).resolve()
    assert target == SHIPPED.resolve()


@pytest.mark.parametrize("path", RULE_FILES, ids=[p.name for p in RULE_FILES])
def test_every_bundled_rule_file_validates(
    validator: jsonschema.Draft7Validator, path: Path
) -> None:
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_data(path))]
    assert problems == []


def _first_rule_on(data: dict[str, Any], fact: str) -> dict[str, Any]:
    rule: dict[str, Any] = next(r for r in data["rules"] if r["when"]["fact"] == fact)
    return rule


def _field_test(rule: dict[str, Any]) -> dict[str, Any]:
    test: dict[str, Any] = next(c for c in rule["when"]["all"] if "field" in c)
    return test


def _break(data: dict[str, Any], how: str) -> None:
    """One mistake an author makes, applied to the TBS rule file's data."""
    rules = data["rules"]
    rule = _first_rule_on(data, "scored_assessment")
    card = next(r["then"]["card"] for r in rules if "card" in r["then"])
    if how == "unknown field":
        _field_test(rule)["field"] = "tbs_score"
    elif how == "unknown operator":
        test = _field_test(rule)
        op = next(k for k in test if k != "field")
        test["lte"] = test.pop(op)
    elif how == "value not of the field":
        rule["when"]["all"].append({"field": "sex", "eq": "mail"})
    elif how == "unknown parameter":
        rule["when"]["all"].append({"field": "tbs", "le": {"param": "tbs_degraded_max"}})
    elif how == "unknown fact type":
        rule["when"]["fact"] = "asessment"
    elif how == "unknown topic":
        card["topic"] = "bmd-clasification"
    elif how == "unknown indicator":
        card["indicator"] = "warn"
    elif how == "payload value outside the contract":
        card["payload"]["tbsCategory"] = "not-measured"
    elif how == "payload field of another topic":
        card["payload"]["category"] = "osteoporosis"
    elif how == "unknown status":
        rule["status"] = "activ"
    elif how == "unknown evidence id":
        rule["evidence"] = ["CS-99.9"]
    elif how == "missing title":
        del rule["title"]
    elif how == "unknown rule key":
        rule["whne"] = rule["when"]
    elif how == "example field of another fact type":
        rule["examples"][0]["fact"]["tbs_score"] = 1.2
    elif how == "example value not of the field":
        rule["examples"][0]["fact"]["sex"] = "mail"
    elif how == "version as text":
        rule["version"] = "one"
    else:  # pragma: no cover - a typo in the table below
        raise AssertionError(how)


BROKEN = [
    "unknown field",
    "unknown operator",
    "value not of the field",
    "unknown parameter",
    "unknown fact type",
    "unknown topic",
    "unknown indicator",
    "payload value outside the contract",
    "payload field of another topic",
    "unknown status",
    "unknown evidence id",
    "missing title",
    "unknown rule key",
    "example field of another fact type",
    "example value not of the field",
    "version as text",
]


@pytest.mark.parametrize("how", BROKEN)
def test_broken_rule_files_fail(validator: jsonschema.Draft7Validator, how: str) -> None:
    data = _data(RULES / "tbs.yaml")
    assert list(validator.iter_errors(data)) == []
    broken = copy.deepcopy(data)
    _break(broken, how)
    assert list(validator.iter_errors(broken)), f"the schema accepts a file with {how}"
