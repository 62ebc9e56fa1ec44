"""Rule author tooling: examples runner, docs generator, and the `cds rules` CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cds.authoring.docs import render_docs
from cds.authoring.examples import example_fact, run_examples
from cds.cli import app
from cds.rules import load_ruleset
from cds.settings import data_folders
from tests.rules.conftest import FIXTURES, ORDER_KEYS, Loader

BASIC = FIXTURES / "basic"
runner = CliRunner()


@pytest.fixture
def rules_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the basic fixture rules (its order keys are in the bundled fhir_profiles)."""
    shutil.copytree(BASIC, tmp_path / "rules")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "rules"


def test_examples_of_the_fixture_pass() -> None:
    report = run_examples(load_ruleset(BASIC, order_keys=ORDER_KEYS))
    assert report.failures == []
    assert report.run == 9
    assert report.passed == 9


def test_example_fact_uses_defaults_and_neutral_values() -> None:
    ruleset = load_ruleset(BASIC, order_keys=ORDER_KEYS)
    rule = ruleset.rule("score.t.older-man")
    fact = example_fact(ruleset, rule, rule.examples[0])
    assert fact["id"] == "example:1"
    assert fact["t"] == "assessment"
    assert (fact["sex"], fact["age"]) == ("male", 50)  # from the example
    assert fact["menopausal_status"] == "unknown"  # required enum: 'unknown'
    assert fact["has_dxa"] is False  # required boolean: false
    assert fact["manufacturer"] == "unknown"  # schema default
    assert "lowest_t" not in fact  # optional: absent


FAILING = """
rules:
  - id: a.rule
    title: A
    version: 1
    status: active
    evidence: [CS-2.2]
    when: {fact: assessment, field: lowest_t, le: -2.5}
    then:
      card:
        topic: bmd-classification
        indicator: warning
        summary: "T {{ fact.lowest_t }}"
        payload: {category: osteoporosis, value: "{{ fact.lowest_t }}"}
    examples:
      - name: boundary
        fact: {lowest_t: -2.4}
        expect: {fires: true}
      - name: payload
        fact: {lowest_t: -3.0}
        expect: {fires: true, payload: {value: -3.1}, summary_contains: "T -3.5"}
"""


def test_failing_examples_say_where_and_what(load: Loader) -> None:
    report = run_examples(load(FAILING))
    assert [str(f) for f in report.failures] == [
        "rules/x.yaml:15:9: a.rule: example 'boundary': expected fires: true, got: did not fire "
        "(engine)",
        "rules/x.yaml:15:9: a.rule: example 'boundary': expected fires: true, got: did not fire "
        "(reference)",
        "rules/x.yaml:18:9: a.rule: example 'payload': payload.value: expected -3.1, got -3.0 "
        "(engine)",
        "rules/x.yaml:18:9: a.rule: example 'payload': summary: expected to contain 'T -3.5', "
        "got 'T -3.0' (engine)",
        "rules/x.yaml:18:9: a.rule: example 'payload': payload.value: expected -3.1, got -3.0 "
        "(reference)",
        "rules/x.yaml:18:9: a.rule: example 'payload': summary: expected to contain 'T -3.5', "
        "got 'T -3.0' (reference)",
    ]
    assert report.passed == 0


def test_docs_say_conditions_in_words() -> None:
    text = render_docs(load_ruleset(BASIC, order_keys=ORDER_KEYS))
    assert "### classification.t.osteoporosis: Osteoporosis by T-score" in text
    assert (
        "  - lowest usable T-score of lumbar spine, total hip, femoral neck (`lowest_t`) "
        "is at most -2.5 (osteoporosis_t)"
    ) in text
    assert "- any of:\n  - a usable DXA measurement is on record (`has_dxa`) is false" in text
    assert "  - not:\n    - date of the most recent usable DXA (`last_dxa_date`) is known" in text
    assert "[ISCD-2019](https://example.org/iscd-2019) (ISCD Adult Official Positions 2019)" in text
    assert "Then contributes to the **bmd-classification** card (warning)" in text
    assert "Then emits a copy of the fact as `scored_assessment` with score_type = T." in text
    assert "| `osteoporosis_t` | -2.5 | T-score |" in text


def test_cli_lint_ok(rules_copy: Path) -> None:
    result = runner.invoke(app, ["rules", "lint", str(rules_copy)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "6 rules in 1 files OK\n"


def test_cli_lint_default_dir_from_env(rules_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSTEOHOOKS_RULES", str(rules_copy))
    result = runner.invoke(app, ["rules", "lint"])
    assert result.exit_code == 0, result.output


def test_cli_lint_checks_order_keys_against_the_configured_profiles(
    rules_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = tmp_path / "site-profiles"
    shutil.copytree(data_folders().fhir_profiles, profiles)
    orders = json.loads((profiles / "order-codes.json").read_text(encoding="utf-8"))
    del orders["orders"]["lab-cbc"]
    (profiles / "order-codes.json").write_text(json.dumps(orders), encoding="utf-8")
    assert runner.invoke(app, ["rules", "lint", str(rules_copy)]).exit_code == 0
    monkeypatch.setenv("OSTEOHOOKS_FHIR_PROFILES", str(profiles))
    result = runner.invoke(app, ["rules", "lint", str(rules_copy)])
    assert result.exit_code == 1
    assert "unknown order code key 'lab-cbc'" in result.stderr


def test_cli_lint_errors_on_stderr(rules_copy: Path) -> None:
    path = rules_copy / "classification.yaml"
    path.write_text(path.read_text().replace("le: {param: osteoporosis_t}", "le: {param: osteo}"))
    result = runner.invoke(app, ["rules", "lint", "rules"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "rules/classification.yaml:77:41: unknown parameter 'osteo' "
        "(did you mean 'osteoporosis_t'?)\n"
        "1 error: the rule set was not loaded\n"
    )


def test_cli_test(rules_copy: Path) -> None:
    result = runner.invoke(app, ["rules", "test", "rules"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "9 of 9 examples passed\n"
    path = rules_copy / "classification.yaml"
    path.write_text(path.read_text().replace("value: -2.5\n", "value: -2.6\n", 1))
    result = runner.invoke(app, ["rules", "test", "rules"])
    assert result.exit_code == 1
    assert "FAIL rules/classification.yaml:" in result.stderr
    assert "example 'T -2.5 exactly is osteoporosis (CS-2.2 boundary)'" in result.stderr
    assert "expected fires: true, got: did not fire (engine)" in result.stderr
    assert result.stdout.endswith("8 of 9 examples passed, 1 failed\n")


def test_cli_docs_and_compile(rules_copy: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["rules", "docs", "rules", "--out", "out/rules.md"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "rules.md").read_text().startswith("# Rules\n")
    result = runner.invoke(app, ["rules", "compile", "rules", "--out", "golden"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "wrote golden/classification.json (5 rules)\n"
    text = (tmp_path / "golden" / "classification.json").read_text()
    assert '"classification.t.osteoporosis"' in text
    assert '"timing.too-soon"' not in text  # a draft rule is not compiled
