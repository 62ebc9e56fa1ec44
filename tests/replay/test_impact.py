"""`cds impact` and `cds.replay.impact`: which answers a rule change changes.

The oracle for the population tests is `cds replay` itself: the patients whose
classification card names another category under the edited rules, found from the two
replay runs' NDJSON, must be exactly the patients the impact report groups under
`payload-changed category`. Thresholds come from the rules (the edit moves the
osteoporosis cut-off up to just below the normal one).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cds.cli import app
from cds.contracts.cards import EXTENSION_KEY
from cds.replay.impact import (
    Impact,
    ImpactError,
    ImpactOptions,
    compare_answers,
    render_text,
    rules_at_revision,
    run_impact,
)
from cds.rules import load_ruleset
from cds.studio import parameters

REPO = Path(__file__).resolve().parents[2]
STORIES = REPO / "tests" / "fixtures" / "stories"
AS_OF = "2026-11-23"
PARAMETER = "osteoporosis_t"


def _edited_rules(tmp: Path, name: str = PARAMETER, offset: str = "0") -> tuple[Path, Any]:
    """A copy of the rules with `name` set to the normal cut-off minus 0.1 plus offset
    (so most low-bone-mass patients become osteoporosis), written as the studio's form
    writes a parameter (the one token changed)."""
    rules = tmp / "rules"
    shutil.copytree(REPO / "rules", rules)
    ruleset = load_ruleset(rules)
    value = Decimal(str(ruleset.parameters["normal_t"])) - Decimal("0.1") + Decimal(offset)
    where = parameters.locate(rules, name)
    path = rules / where.file
    text = parameters.set_value(
        path.read_text(encoding="utf-8"), where, name, ruleset.parameter_specs[name], str(value)
    )
    path.write_text(text, encoding="utf-8")
    return rules, value


def _card(topic: str, rule: str, **fields: Any) -> dict[str, Any]:
    payload = fields.pop("payload", {})
    card = {
        "uuid": fields.pop("uuid", "u-1"),
        "summary": fields.pop("summary", f"{rule} card"),
        "indicator": fields.pop("indicator", "info"),
        "source": {"label": "x", "topic": {"code": topic}},
        "extension": {EXTENSION_KEY: {"rule": rule, **payload}},
    }
    card.update(fields)
    return card


# ------------------------------------------------------------------ compare_answers


def test_the_same_answer_is_no_change_whatever_the_uuids_and_ruleset_version() -> None:
    a = _card("bmd-classification", "r.a", uuid="1", payload={"rulesetVersion": "x"})
    b = _card("bmd-classification", "r.a", uuid="2", payload={"rulesetVersion": "y"})
    assert compare_answers("ok", [a], None, "ok", [b], None) == []


def test_each_kind_of_change_is_named() -> None:
    base = [
        _card("bmd-classification", "c.low", payload={"category": "low-bone-mass"}),
        _card("screening", "s.gone"),
        _card(
            "workup",
            "w.one",
            payload={"rules": ["w.one", "w.two"]},
            detail="**Secondary causes**: CBC.",
            suggestions=[{"label": "Order labs"}],
        ),
    ]
    new = [
        _card(
            "bmd-classification",
            "c.low",
            indicator="warning",
            payload={"category": "osteoporosis"},
        ),
        _card("rescan-interval", "r.new"),
        _card(
            "workup",
            "w.one",
            payload={"rules": ["w.one", "w.three"]},
            detail="**Secondary causes**: CBC; PTH.",
            suggestions=[{"label": "Order labs and PTH"}],
        ),
    ]
    kinds = {
        (c.kind, c.topic, c.rule, c.field)
        for c in compare_answers("ok", base, None, "ok", new, None)
    }
    assert kinds == {
        ("indicator-changed", "bmd-classification", "c.low", "indicator"),
        ("payload-changed", "bmd-classification", "c.low", "category"),
        ("card-removed", "screening", "s.gone", None),
        ("card-added", "rescan-interval", "r.new", None),
        ("rule-added", "workup", "w.three", None),
        ("rule-removed", "workup", "w.two", None),
        ("text-changed", "workup", "w.one", "detail"),
        ("suggestions-changed", "workup", "w.one", "suggestions"),
    }


def test_cards_of_one_topic_are_paired_by_rule_before_order() -> None:
    base = [_card("change", "change.spine"), _card("change", "change.hip")]
    new = [_card("change", "change.hip"), _card("change", "change.spine", summary="other")]
    changes = compare_answers("ok", base, None, "ok", new, None)
    assert [(c.kind, c.rule, c.field) for c in changes] == [
        ("text-changed", "change.spine", "summary")
    ]


def test_a_status_or_data_error_change_is_an_outcome_change() -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}
    [change] = compare_answers("ok", [], None, "failed", [], outcome)
    assert (change.kind, change.field) == ("outcome-changed", "status")
    assert change.before == {"status": "ok", "issues": 0}
    assert change.after == {"status": "failed", "issues": 1}


def test_a_patient_counts_once_per_group_and_examples_are_bounded() -> None:
    impact = Impact("base", "new", __import__("datetime").date(2026, 11, 23), examples=2)
    base = [_card("change", "c", payload={"a": 1, "sites": [1]})]
    for index in range(5):
        new = [_card("change", "c", payload={"a": 2, "sites": [2]})]
        impact.add(f"p{index}", compare_answers("ok", base, None, "ok", new, None))
    impact.add("same", [])
    assert (impact.inputs, impact.changed, impact.unchanged) == (6, 5, 1)
    groups = {g.field: g for g in impact.sorted_groups()}
    assert groups["a"].patients == 5
    assert [e.input for e in groups["a"].examples] == ["p0", "p1"]
    assert impact.by_topic == {"change": 5}


# ------------------------------------------------------------------ a population


def _replay_categories(rules: Path, tmp: Path, name: str) -> dict[str, str | None]:
    out = tmp / f"{name}.ndjson"
    result = CliRunner().invoke(
        app,
        [
            "replay",
            str(STORIES),
            "--rules",
            str(rules),
            "--as-of",
            AS_OF,
            "--workers",
            "0",
            "--format",
            "ndjson",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code in (0, 1), result.output
    categories: dict[str, str | None] = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "input" not in row or "cards" not in row:
            continue
        found = None
        for card in row["cards"]:
            if card["source"]["topic"]["code"] == "bmd-classification":
                found = card["extension"][EXTENSION_KEY].get("category")
        categories[row["input"]] = found
    return categories


@pytest.mark.usefixtures("shared_evaluator")
def test_the_patients_whose_category_changes_are_exactly_those_replay_shows(
    tmp_path: Path,
) -> None:
    rules, value = _edited_rules(tmp_path)
    before = _replay_categories(REPO / "rules", tmp_path, "before")
    after = _replay_categories(rules, tmp_path, "after")
    moved = {name for name in before if before[name] != after.get(name)}
    assert moved, f"moving {PARAMETER} to {value} changes no story's category: pick another edit"

    out = tmp_path / "impact.json"
    result = CliRunner().invoke(
        app,
        [
            "impact",
            str(STORIES),
            "--rules",
            str(rules),
            "--base-rules",
            str(REPO / "rules"),
            "--as-of",
            AS_OF,
            "--workers",
            "0",
            "--format",
            "json",
            "--examples",
            "100",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["inputs"] == len(before)
    category = [
        g for g in report["groups"] if g["kind"] == "payload-changed" and g["field"] == "category"
    ]
    assert {e["input"] for g in category for e in g["examples"]} == moved
    assert sum(g["patients"] for g in category) == len(moved)
    for group in category:
        for example in group["examples"]:
            assert example["before"] == before[example["input"]]
            assert example["after"] == after[example["input"]]
    assert report["changed"] >= len(moved)
    assert report["byTopic"]["bmd-classification"] >= len(moved)


def test_identical_rules_change_nothing_on_worker_processes(tmp_path: Path) -> None:
    options = ImpactOptions(
        paths=[str(STORIES)],
        as_of=__import__("datetime").date(2026, 11, 23),
        new_rules=REPO / "rules",
        base_rules=REPO / "rules",
        base_label="rules",
        new_label="rules",
        workers=2,
    )
    impact = run_impact(options)
    assert impact.inputs == len(list(STORIES.glob("*.json")))
    assert (impact.changed, impact.groups) == (0, {})
    assert "no answer changes." in render_text(impact)


@pytest.mark.usefixtures("shared_evaluator")
def test_fail_on_change_exits_1_only_when_an_answer_changes(tmp_path: Path) -> None:
    rules, _value = _edited_rules(tmp_path)
    story = str(STORIES / "03-t-boundary-minus-2-5.json")
    common = ["--as-of", AS_OF, "--workers", "0", "--fail-on-change"]
    same = CliRunner().invoke(
        app,
        [
            "impact",
            story,
            "--rules",
            str(REPO / "rules"),
            "--base-rules",
            str(REPO / "rules"),
            *common,
        ],
    )
    assert same.exit_code == 0, same.output
    assert "0 with a changed answer" in same.output
    # A low-bone-mass story whose category moves with the edit.
    changed = CliRunner().invoke(
        app,
        [
            "impact",
            str(STORIES),
            "--rules",
            str(rules),
            "--base-rules",
            str(REPO / "rules"),
            *common,
        ],
    )
    assert changed.exit_code == 1, changed.output
    assert "payload-changed category" in changed.output
    assert "[-low-bone-mass-]" not in changed.output  # short values shown before -> after
    assert '"low-bone-mass" -> "osteoporosis"' in changed.output or (
        "low-bone-mass -> osteoporosis" in changed.output
    )


# ------------------------------------------------------------------ --base-rev


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.usefixtures("shared_evaluator")
def test_base_rev_compares_the_working_tree_with_a_commit(tmp_path: Path) -> None:
    repo = tmp_path / "checkout"
    repo.mkdir()
    shutil.copytree(REPO / "rules", repo / "rules")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "add", "rules")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "rules")
    edited, _value = _edited_rules(tmp_path / "edit")
    shutil.rmtree(repo / "rules")
    shutil.copytree(edited, repo / "rules")

    with rules_at_revision(repo / "rules", "HEAD") as (base, label):
        assert (base / "classification.yaml").read_text(encoding="utf-8") == (
            REPO / "rules" / "classification.yaml"
        ).read_text(encoding="utf-8")
        assert "at HEAD (" in label

    result = CliRunner().invoke(
        app,
        [
            "impact",
            str(STORIES / "10-man-55-osteopenia.json"),
            "--rules",
            str(repo / "rules"),
            "--as-of",
            AS_OF,
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 with a changed answer" in result.output
    assert "at HEAD (" in result.output


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_base_rev_that_cannot_be_had_says_why(tmp_path: Path) -> None:
    with (
        pytest.raises(ImpactError, match="no-such-rev"),
        rules_at_revision(REPO / "rules", "no-such-rev"),
    ):
        pass
    outside = tmp_path / "rules"
    shutil.copytree(REPO / "rules", outside)
    result = CliRunner().invoke(
        app, ["impact", str(STORIES), "--rules", str(outside), "--as-of", AS_OF, "--workers", "0"]
    )
    assert result.exit_code == 2
    assert "--base-rules DIR" in result.output


def test_base_rules_and_base_rev_together_are_a_usage_error() -> None:
    result = CliRunner().invoke(
        app, ["impact", str(STORIES), "--base-rules", "rules", "--base-rev", "HEAD"]
    )
    assert result.exit_code == 2
    assert "not both" in result.output


@pytest.mark.usefixtures("shared_evaluator")
def test_the_html_report_is_a_self_contained_page_of_the_same_groups(tmp_path: Path) -> None:
    rules, _value = _edited_rules(tmp_path)
    common = ["--rules", str(rules), "--base-rules", str(REPO / "rules"), "--as-of", AS_OF]
    out = tmp_path / "impact.html"
    html_run = CliRunner().invoke(
        app,
        ["impact", str(STORIES), *common, "--workers", "0", "--format", "html", "--out", str(out)],
    )
    assert html_run.exit_code == 0, html_run.output
    page = out.read_text(encoding="utf-8")
    json_run = CliRunner().invoke(
        app, ["impact", str(STORIES), *common, "--workers", "0", "--format", "json"]
    )
    report = json.loads(json_run.output)
    assert "Impact of a rule change" in page
    assert page.count("<svg") >= 3  # by topic, by rule, by kind
    assert not re.search(r"""(src|href)=["']https?://""", page)
    for group in report["groups"]:
        assert html.escape(group["rule"]) in page
    assert f"{report['changed']} (" in page


def test_impact_on_dask_gives_the_local_engines_report(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    rules, _value = _edited_rules(tmp_path)
    story_dir = tmp_path / "some"
    story_dir.mkdir()
    for name in sorted(p.name for p in STORIES.glob("*.json"))[:12]:
        shutil.copy(STORIES / name, story_dir / name)
    common = ["impact", str(story_dir), "--rules", str(rules), "--base-rules", str(REPO / "rules")]
    common += ["--as-of", AS_OF, "--format", "json", "--examples", "100"]
    local = CliRunner().invoke(app, [*common, "--workers", "0"])
    dask = CliRunner().invoke(app, [*common, "--workers", "2", "--engine", "dask"])
    assert local.exit_code == 0, local.output
    assert dask.exit_code == 0, dask.output
    assert json.loads(dask.output) == json.loads(local.output)
    assert json.loads(local.output)["changed"] > 0
