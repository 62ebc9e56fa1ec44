"""Lint that teaches: YAML syntax errors in plain words with their position and fix, a
did-you-mean for realistic typos, payload values checked against the card contract, and
the guide's own example messages (docs/rule-authoring.md section 5) as lint prints them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cds.cli import app
from cds.contracts.cards import CARD_TOPICS, INDICATORS, TOPIC_PAYLOAD_VALUES
from cds.contracts.facts import Assessment
from cds.rules.errors import did_you_mean
from cds.rules.model import OPERATORS, STATUSES
from tests.rules.conftest import ErrorLister, Loader

REPO = Path(__file__).resolve().parents[2]

RULE = """rules:
  - id: a.rule
    title: A rule
    version: 1
    status: active
    evidence: [CS-2.2]
    when: {fact: assessment, field: lowest_t, le: -2.5}
    then:
      card: {topic: screening, indicator: info, summary: hi}
"""

# (what an author typed, where lint points, what lint says after "YAML: ")
YAML_MISTAKES = [
    (
        "a tab for indentation",
        RULE.replace("    title: A rule", "\ttitle: A rule"),
        "3:1",
        "a tab character: YAML indents with spaces only. Fix: replace the tab with spaces "
        "(2 per level, like the lines around it)",
    ),
    (
        "an unquoted ': ' in a text",
        RULE.replace("    title: A rule", "    title: Osteoporosis: T-score"),
        "3:24",
        "': ' inside the value of 'title' starts a new key. Fix: put the value in quotes: "
        'title: "Osteoporosis: T-score"',
    ),
    (
        "a key without its colon",
        RULE.replace("    title: A rule", "    title A rule"),
        "3:5",
        "'title A rule' has no ':' after its key. Fix: write 'key: value' (a colon, then a "
        "space), or join it to the line above if it continues that text",
    ),
    (
        "a key indented too far",
        RULE.replace("    version: 1", "      version: 1"),
        "4:7",
        "indentation: this key is indented more than the one on line 3 ('title: A rule'), "
        "which has a value already. Fix: indent it like the other keys of its mapping",
    ),
    (
        "a key indented too little",
        RULE.replace("    version: 1", "   version: 1"),
        "4:4",
        "indentation: this line is indented by 3 spaces, which matches no level above it. "
        "Fix: indent it exactly like the keys (or list items) it belongs with",
    ),
    (
        "an unclosed double quote",
        RULE.replace("    title: A rule", '    title: "A rule'),
        "3:12",
        'the quote " opened here is never closed. Fix: end the text with " on the same line '
        "(or the line where the text ends)",
    ),
    (
        "an unclosed single quote",
        RULE.replace("    title: A rule", "    title: 'A rule"),
        "3:12",
        "the quote ' opened here is never closed. Fix: end the text with ' on the same line "
        "(or the line where the text ends)",
    ),
    (
        "an unclosed bracket",
        RULE.replace("evidence: [CS-2.2]", "evidence: [CS-2.2"),
        "6:15",
        "the '[' opened here is not closed with ']' before line 7. Fix: close it where its "
        "items end, e.g. [a, b]",
    ),
    (
        "an unclosed brace",
        RULE.replace("le: -2.5}", "le: -2.5"),
        "7:11",
        "the '{' opened here is not closed with '}' before line 8. Fix: close it where its "
        "items end, e.g. {field: tbs, le: 1.2}",
    ),
    (
        "a closing bracket too many",
        RULE.replace("evidence: [CS-2.2]", "evidence: [CS-2.2]]"),
        "6:23",
        "a ']' without its opening bracket. Fix: remove it or add the opening one",
    ),
    (
        "an unquoted template at the start of a text",
        RULE.replace("    title: A rule", "    title: {{ fact.lowest_t }} is low"),
        "3:32",
        "a value starting with '{' is read as a YAML mapping (templates too). Fix: put the "
        'whole text in quotes: "{{ fact.lowest_t }} is low"',
    ),
    (
        "text after a closing quote",
        RULE.replace("    title: A rule", '    title: "A" rule'),
        "3:16",
        "text continues after the closing quote. Fix: put the whole text inside the quotes",
    ),
    (
        "a list dash without its space",
        RULE.replace("  - id: a.rule", "  -id: a.rule\n  - id: b.rule"),
        "2:3",
        "'-id: a.rule': a list item needs a space after '-'. Fix: '- id: a.rule'",
    ),
    (
        "a text starting with a backtick",
        RULE.replace("    title: A rule", "    title: `T` score"),
        "3:12",
        "a value cannot start with '`' in YAML. Fix: put the whole text in quotes: \"`T` score\"",
    ),
    (
        "markdown bold at the start of a text",
        RULE.replace("    title: A rule", "    title: *Low* bone mass"),
        "3:12",
        "a value starting with '*' is read as a YAML alias. Fix: put the whole text in "
        'quotes: "*Low* bone mass"',
    ),
    (
        "a duplicate key",
        RULE.replace("    version: 1", "    version: 1\n    version: 2"),
        "5:5",
        'duplicate key "version" with value "2" (original value: "1"). Fix: a key appears '
        "once per mapping; remove or rename one",
    ),
]


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [case[1:] for case in YAML_MISTAKES],
    ids=[case[0] for case in YAML_MISTAKES],
)
def test_yaml_mistake_in_plain_words(
    errors: ErrorLister, text: str, where: str, message: str
) -> None:
    assert errors(text) == [f"{where}: YAML: {message}"]


def test_an_unrecognised_yaml_error_keeps_the_parser_words_and_a_hint(
    errors: ErrorLister,
) -> None:
    assert errors(RULE.replace("    title: A rule", "    title: |x")) == [
        "3:13: YAML: expected chomping or indentation indicators, but found 'x' (while "
        "scanning a block scalar). Fix: check the indentation (spaces only, the same for "
        "keys of one mapping) and quote any text that contains ': ' or starts with a "
        "special character"
    ]


FIELDS = list(Assessment.model_fields)
ORDERS = list(json.loads((REPO / "fhir_profiles" / "order-codes.json").read_text())["orders"])
PAYLOAD_TBS = TOPIC_PAYLOAD_VALUES["tbs"]["tbsCategory"]

# (typed, candidates, suggested): typos as informaticists make them
TYPOS = [
    ("tbs_score", FIELDS, "tbs"),  # the guide's example
    ("lowest_tscore", FIELDS, "lowest_t"),
    ("lowestT", FIELDS, "lowest_t"),
    ("Lowest_T", FIELDS, "lowest_t"),
    ("lowestTSite", FIELDS, "lowest_t_site"),
    ("lowest-t-site", FIELDS, "lowest_t_site"),
    ("lowset_t", FIELDS, "lowest_t"),
    ("TBS", FIELDS, "tbs"),
    ("age_years", FIELDS, "age"),
    ("sex_at_birth", FIELDS, "sex"),
    ("menopause_status", FIELDS, "menopausal_status"),
    ("months_since_dxa", FIELDS, "months_since_last_dxa"),
    ("last_dxa", FIELDS, "last_dxa_date"),
    ("change_pct", FIELDS, "change_percent"),
    ("change_percentage", FIELDS, "change_percent"),
    ("chg_pct", FIELDS, "change_percent"),
    ("lte", OPERATORS, "le"),
    ("<=", OPERATORS, "le"),
    ("gte", OPERATORS, "ge"),
    ("equals", OPERATORS, "eq"),
    ("exist", OPERATORS, "exists"),
    ("bmd-clasification", CARD_TOPICS, "bmd-classification"),
    ("bmd_classification", CARD_TOPICS, "bmd-classification"),
    ("rescan", CARD_TOPICS, "rescan-interval"),
    ("warn", INDICATORS, "warning"),
    ("Critical", INDICATORS, "critical"),
    ("activ", STATUSES, "active"),
    ("lab-vitd", ORDERS, "lab-25-oh-vitamin-d"),  # the guide's example
    ("degradded", PAYLOAD_TBS, "degraded"),
    ("partially_degraded", PAYLOAD_TBS, "partially-degraded"),
]


@pytest.mark.parametrize(("typed", "candidates", "meant"), TYPOS, ids=[t[0] for t in TYPOS])
def test_did_you_mean_on_realistic_typos(typed: str, candidates: list[str], meant: str) -> None:
    assert did_you_mean(typed, candidates) == f" (did you mean '{meant}'?)"


@pytest.mark.parametrize("typed", ["xyz", "cholesterol", "not-measured"])
def test_no_suggestion_when_nothing_is_close(typed: str) -> None:
    assert did_you_mean(typed, [*FIELDS, *PAYLOAD_TBS]) == ""


def _tbs_card(value: str) -> str:
    return RULE.replace(
        "card: {topic: screening, indicator: info, summary: hi}",
        f"card: {{topic: tbs, indicator: info, summary: hi, payload: {{tbsCategory: {value}}}}}",
    )


def test_payload_value_outside_the_contract_is_an_error(errors: ErrorLister) -> None:
    allowed = ", ".join(PAYLOAD_TBS)
    assert errors(_tbs_card("not-measured")) == [
        "9:79: 'not-measured' is not an allowed value of payload field 'tbsCategory' of "
        f"topic 'tbs': {allowed} (the card contract)"
    ]
    assert errors(_tbs_card("degradded")) == [
        "9:79: 'degradded' is not an allowed value of payload field 'tbsCategory' of topic "
        f"'tbs' (did you mean 'degraded'?): {allowed} (the card contract)"
    ]


@pytest.mark.parametrize("value", [*PAYLOAD_TBS, '"{{ fact.lowest_t_site }}"'])
def test_contract_values_and_templates_pass(load: Loader, value: str) -> None:
    assert [rule.id for rule in load(_tbs_card(value)).rules] == ["a.rule"]


def _bundled_copy(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    return rules


def _lint(rules: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["rules", "lint", str(rules)])
    return result.exit_code, result.output


def test_the_guides_tbs_score_example(tmp_path: Path) -> None:
    """docs/rule-authoring.md section 5, first line: a field misspelt in rules/tbs.yaml."""
    rules = _bundled_copy(tmp_path)
    path = rules / "tbs.yaml"
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if "{field: tbs, " in line)
    column = lines[index].index("tbs,") + 1
    path.write_text(text.replace("{field: tbs, ", "{field: tbs_score, ", 1), encoding="utf-8")
    code, out = _lint(rules)
    assert code == 1
    assert (
        f"tbs.yaml:{index + 1}:{column}: unknown field 'tbs_score' of fact type "
        "'scored_assessment' (did you mean 'tbs'?)" in out
    )


def test_the_guides_not_measured_example(tmp_path: Path) -> None:
    rules = _bundled_copy(tmp_path)
    path = rules / "tbs.yaml"
    text = path.read_text(encoding="utf-8")
    assert "tbsCategory: degraded" in text
    path.write_text(text.replace("tbsCategory: degraded", "tbsCategory: not-measured", 1))
    code, out = _lint(rules)
    assert code == 1
    assert "'not-measured' is not an allowed value of payload field 'tbsCategory'" in out
