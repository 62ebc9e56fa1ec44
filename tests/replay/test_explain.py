"""`cds explain` building blocks: condition trees, "came close", finding the input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cds.authoring.explain import ExplainError, came_close, condition_tree, resolve
from cds.cli import app
from cds.rules.model import Rule

FIXTURES = Path(__file__).parent.parent / "fixtures" / "replay"
PARAMS = {"osteoporosis_t": -2.5, "zero": 0}


def rule(when: dict[str, Any]) -> Rule:
    return Rule.model_validate(
        {
            "id": "test.rule",
            "title": "Test rule",
            "version": 1,
            "status": "active",
            "evidence": ["CS-2.2"],
            "when": {"fact": "assessment", **when},
            "then": {"card": {"topic": "tbs", "indicator": "info", "summary": "s"}},
        }
    )


OSTEO = rule(
    {
        "all": [
            {"field": "sex", "eq": "female"},
            {"field": "lowest_t", "le": {"param": "osteoporosis_t"}},
        ]
    }
)


def test_condition_tree_shows_values_operands_params_and_truth() -> None:
    tree = condition_tree(OSTEO.when, {"sex": "female", "lowest_t": -2.7}, PARAMS)
    assert tree == {
        "all": [
            {"field": "sex", "op": "eq", "value": "female", "holds": True, "operand": "female"},
            {
                "field": "lowest_t",
                "op": "le",
                "value": -2.7,
                "holds": True,
                "operand": -2.5,
                "param": "osteoporosis_t",
            },
        ],
        "holds": True,
    }


def test_a_rule_that_fired_did_not_come_close() -> None:
    assert came_close(OSTEO, {"sex": "female", "lowest_t": -2.5}, PARAMS) is None


def test_threshold_within_ten_percent_and_one_condition_short() -> None:
    close = came_close(OSTEO, {"sex": "female", "lowest_t": -2.4}, PARAMS)
    assert close is not None
    assert close["reasons"] == [
        "all but one of 2 conditions held",
        "every failed condition is a numeric threshold within 10%",
    ]
    assert close["conditions"][1]["within"] == 4.0
    assert close["conditions"][1]["holds"] is False


def test_threshold_far_away_is_close_only_by_the_one_condition_count() -> None:
    close = came_close(OSTEO, {"sex": "female", "lowest_t": -2.0}, PARAMS)
    assert close is not None
    assert close["reasons"] == ["all but one of 2 conditions held"]
    assert "within" not in close["conditions"][1]


@pytest.mark.parametrize(("value", "close"), [(-2.25, True), (-2.24, False)])
def test_ten_percent_boundary_on_both_sides(value: float, close: bool) -> None:
    single = rule({"field": "lowest_t", "le": {"param": "osteoporosis_t"}})
    result = came_close(single, {"lowest_t": value}, PARAMS)
    assert (result is not None) is close
    if result is not None:
        assert result["reasons"] == ["every failed condition is a numeric threshold within 10%"]


def test_two_failed_conditions_one_not_numeric_is_not_close() -> None:
    assert came_close(OSTEO, {"sex": "male", "lowest_t": -2.4}, PARAMS) is None


def test_absent_value_is_never_within_a_threshold() -> None:
    single = rule({"field": "lowest_t", "le": {"param": "osteoporosis_t"}})
    assert came_close(single, {}, PARAMS) is None
    tree = condition_tree(single.when, {}, PARAMS)
    assert tree["value"] is None
    assert "within" not in tree


def test_zero_threshold_uses_absolute_distance() -> None:
    single = rule({"field": "spine_hip_gap", "gt": {"param": "zero"}})
    assert came_close(single, {"spine_hip_gap": -0.1}, PARAMS) is not None
    assert came_close(single, {"spine_hip_gap": -0.2}, PARAMS) is None


def test_nested_any_and_not_trees() -> None:
    nested = rule(
        {
            "any": [
                {"field": "tbs", "exists": True},
                {"not": {"field": "sex", "in": ["female", "male"]}},
            ]
        }
    )
    tree = condition_tree(nested.when, {"sex": "female"}, PARAMS)
    assert tree == {
        "any": [
            {"field": "tbs", "op": "exists", "value": None, "holds": False},
            {
                "not": {
                    "field": "sex",
                    "op": "in",
                    "value": "female",
                    "holds": True,
                    "operand": ["female", "male"],
                },
                "holds": False,
            },
        ],
        "holds": False,
    }


def test_resolve_finds_ndjson_lines_and_split_patients() -> None:
    bulk = str(FIXTURES / "cases" / "bulk.ndjson")
    assert resolve(f"{bulk}#L3", None).patient_id == "r-line2"
    family = str(FIXTURES / "cases" / "family.json")
    assert resolve(f"{family}#Patient/r-son", None).patient_id == "r-son"
    request = resolve(str(FIXTURES / "cases" / "requests" / "order-select.json"), None)
    assert request.hook == "order-select"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cases/bulk.ndjson", "holds 2 inputs: name one line, e.g. "),
        ("cases/bulk.ndjson#L2", "no input L2 (lines are named "),
        ("cases/family.json", "name one input of "),
        ("cases/family.json#Patient/nobody", "name one input of "),
        ("cases/missing.json", "no such file"),
        ("cases", "no such file (explain takes one file, not a folder)"),
        ("broken/array.json", "expected a JSON object"),
    ],
)
def test_resolve_says_what_to_name(name: str, message: str) -> None:
    with pytest.raises(ExplainError, match=None) as error:
        resolve(str(FIXTURES / name), None)
    assert message in str(error.value)


# ------------------------------------------------------------------ end to end (CLI)


@pytest.fixture
def near_osteoporosis(tmp_path: Path) -> Path:
    """Lumbar T -2.4 (4% above the -2.5 threshold) and an entered-in-error result."""
    bundle = json.loads((FIXTURES / "cases" / "spine" / "osteoporosis.json").read_text())
    observation = bundle["entry"][2]["resource"]
    assert observation["id"] == "r-osteo-t"
    observation["valueQuantity"]["value"] = -2.4
    wrong = json.loads(json.dumps(observation))
    wrong.update(id="r-osteo-wrong", status="entered-in-error")
    wrong["valueQuantity"]["value"] = -3.9
    bundle["entry"].append({"resource": wrong})
    path = tmp_path / "near.json"
    path.write_text(json.dumps(bundle))
    return path


def explain(*args: str) -> Any:
    return CliRunner().invoke(app, ["explain", *args, "--as-of", "2026-11-23"])


def test_explain_json_facts_fired_close_ignored_and_cards(
    shared_evaluator: Any, near_osteoporosis: Path
) -> None:
    result = explain(str(near_osteoporosis), "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["input"] == str(near_osteoporosis)
    assert (report["hook"], report["asOf"], report["patientId"]) == (
        "patient-view",
        "2026-11-23",
        "r-osteo",
    )
    assert report["rulesetVersion"] == shared_evaluator.ruleset_version

    assessment = next(f for f in report["facts"] if f["type"] == "assessment")
    assert assessment["values"]["lumbar_t"] == -2.4
    assert "Observation/r-osteo-t" in assessment["sources"]
    derived = [f for f in report["facts"] if "from" in f]
    assert derived
    assert all(f["sources"][0].startswith("rule ") for f in derived)

    fired = {item["rule"]: item for item in report["fired"]}
    low = fired["classification.t.low-bone-mass"]
    assert low["conditions"]["holds"] is True
    lowest = [c for c in low["conditions"]["all"] if c["field"] == "lowest_t"]
    assert {c["value"] for c in lowest} == {-2.4}
    assert all(c["holds"] for c in lowest)
    assert "classification.t.osteoporosis" not in fired

    close = {item["rule"]: item for item in report["close"]}
    osteo = close["classification.t.osteoporosis"]
    assert "every failed condition is a numeric threshold within 10%" in osteo["reasons"]
    threshold = next(c for c in osteo["conditions"] if c.get("field") == "lowest_t")
    assert threshold == {
        "field": "lowest_t",
        "op": "le",
        "value": -2.4,
        "holds": False,
        "operand": -2.5,
        "param": "osteoporosis_t",
        "within": 4.0,
    }
    assert report["close"][0]["reasons"][-1].startswith("every failed condition")

    assert any(
        i["resource"] == "Observation/r-osteo-wrong" and "entered-in-error" in i["reason"]
        for i in report["ignored"]
    )
    assert any(u["resource"] == "Observation/r-osteo-t" for u in report["used"])

    replayed = CliRunner().invoke(
        app,
        [
            "replay",
            str(near_osteoporosis),
            "--as-of",
            "2026-11-23",
            "--format",
            "ndjson",
            "--workers",
            "0",
        ],
    )
    assert report["cards"] == json.loads(replayed.stdout)["cards"]
    assert report["outcome"] is None
    assert report["notes"] == []


def test_explain_text_has_every_section(shared_evaluator: Any, near_osteoporosis: Path) -> None:
    result = explain(str(near_osteoporosis))
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith(
        f"{near_osteoporosis}  (patient-view, as of 2026-11-23, patient r-osteo)\n"
    )
    for heading in (
        "FACTS (",
        "RULES FIRED (",
        "RULES THAT CAME CLOSE (",
        "RESOURCES USED (",
        "RESOURCES IGNORED (1)",
        "DATA ERRORS (0)",
        "CARDS (",
    ):
        assert f"\n{heading}" in text
    assert (
        "    ✗ lowest_t le -2.5 (osteoporosis_t)   [lowest_t = -2.4]   "
        "within 4.0% of the threshold\n" in text
    )
    assert "\n  Observation/r-osteo-wrong: " in text
    assert "      (the fields of assessment:r-osteo, and:)\n" in text
    assert "\n  info     bmd-classification Low bone mass" in text


def test_explain_names_an_ndjson_line_and_a_patient(shared_evaluator: Any) -> None:
    bulk = FIXTURES / "cases" / "bulk.ndjson"
    report = json.loads(explain(f"{bulk}#L3", "--format", "json").stdout)
    assert report["patientId"] == "r-line2"
    family = FIXTURES / "cases" / "family.json"
    son = json.loads(explain(f"{family}#Patient/r-son", "--format", "json").stdout)
    assert son["patientId"] == "r-son"


def test_explain_of_an_unreadable_or_ambiguous_input_exits_1(shared_evaluator: Any) -> None:
    result = explain(str(FIXTURES / "cases" / "family.json"))
    assert result.exit_code == 1
    assert "name one input of" in result.output
    broken = explain(str(FIXTURES / "broken" / "not-json.json"))
    assert broken.exit_code == 1
    assert "not valid JSON" in broken.output
