"""Every kind of rule error, message by message, with its line:col and did-you-mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds.rules import RuleSetError, load_ruleset
from tests.rules.conftest import ORDER_KEYS, ErrorLister, Loader, write_rules

HEAD = """
rules:
  - id: a.rule
    title: A rule
    version: 1
    status: active
    evidence: [CS-2.2]
"""
CARD = """
    then:
      card: {topic: screening, indicator: info, summary: hi}
"""


def rule(when: str, then: str = CARD, head: str = HEAD) -> str:
    """A one-rule file: HEAD (lines 1-6), `when` from line 7, then `then`."""
    return head.strip("\n") + "\n" + when.strip("\n") + "\n" + then.strip("\n") + "\n"


WHEN = """
    when:
      fact: assessment
      field: lowest_t
      le: -2.5
"""


def test_valid_minimal_rule_loads(load: Loader) -> None:
    ruleset = load(rule(WHEN))
    assert [r.id for r in ruleset.rules] == ["a.rule"]


# ----------------------------------------------------------------------- YAML and structure


def test_yaml_syntax_error(errors: ErrorLister) -> None:
    assert errors("rules: [\n  - id: x\n") == [
        "2:3: YAML: a list item ('- ') inside [ ] or { }. Fix: write the list either in "
        "brackets [a, b] or as lines starting with '- ', not both"
    ]


def test_duplicate_yaml_key(errors: ErrorLister) -> None:
    text = rule(WHEN).replace("    title: A rule\n", "    title: A rule\n    title: Again\n")
    assert errors(text) == [
        '4:5: YAML: duplicate key "title" with value "Again" (original value: "A rule"). '
        "Fix: a key appears once per mapping; remove or rename one"
    ]


def test_unknown_top_level_key(errors: ErrorLister) -> None:
    assert errors("parameter: {}\n" + rule(WHEN)) == [
        "1:1: unknown key 'parameter' (did you mean 'parameters'?)"
    ]


def test_unknown_rule_key(errors: ErrorLister) -> None:
    text = rule(WHEN).replace("    when:\n", "    whne: 1\n    when:\n")
    assert errors(text) == ["7:5: unknown key 'whne' (did you mean 'when'?)"]


def test_missing_rule_key(errors: ErrorLister) -> None:
    text = rule(WHEN).replace("    title: A rule\n", "")
    assert errors(text) == ["2:5: missing key 'title'"]


def test_wrong_value_type(errors: ErrorLister) -> None:
    text = rule(WHEN).replace("version: 1", "version: one")
    assert errors(text) == ["4:14: version: expected an integer, got 'one'"]


def test_unknown_operator(errors: ErrorLister) -> None:
    when = "    when:\n      fact: assessment\n      field: lowest_t\n      lte: -2.5\n"
    assert errors(rule(when)) == ["10:7: unknown operator or key 'lte' (did you mean 'le'?)"]


def test_parameter_value_must_be_scalar(errors: ErrorLister) -> None:
    text = "parameters:\n  p: {value: [1, 2]}\n" + rule(WHEN)
    assert errors(text) == [
        "2:14: value: expected a boolean (true or false) or a number or a string or an "
        "integer, got a list"
    ]


# ----------------------------------------------------------------------- the fact schema


def test_unknown_fact_type(errors: ErrorLister) -> None:
    when = WHEN.replace("fact: assessment", "fact: asessment")
    assert errors(rule(when)) == [
        "8:13: unknown fact type 'asessment' (did you mean 'assessment'?)"
    ]


def test_unknown_field(errors: ErrorLister) -> None:
    when = WHEN.replace("field: lowest_t", "field: lowest_tscore")
    assert errors(rule(when)) == [
        "9:14: unknown field 'lowest_tscore' of fact type 'assessment' (did you mean 'lowest_t'?)"
    ]


def test_ordering_operator_on_string(errors: ErrorLister) -> None:
    when = WHEN.replace("field: lowest_t", "field: sex").replace("le: -2.5", "lt: male")
    assert errors(rule(when)) == [
        "10:7: operator 'lt' does not apply to 'sex' (one of female, male, other, unknown): "
        "use eq, ne or in"
    ]


def test_ordering_operator_on_boolean(errors: ErrorLister) -> None:
    when = WHEN.replace("field: lowest_t", "field: has_dxa").replace("le: -2.5", "ge: true")
    assert errors(rule(when)) == [
        "10:7: operator 'ge' does not apply to 'has_dxa' (a boolean (true or false)): "
        "use eq, ne or in"
    ]


def test_literal_of_wrong_type(errors: ErrorLister) -> None:
    when = WHEN.replace("le: -2.5", "le: low")
    assert errors(rule(when)) == ["10:11: 'lowest_t' is a number, got 'low'"]


def test_literal_outside_enum(errors: ErrorLister) -> None:
    when = WHEN.replace("field: lowest_t", "field: sex").replace("le: -2.5", "eq: mail")
    assert errors(rule(when)) == [
        "10:11: 'mail' is not a value of 'sex' (did you mean 'male'?): "
        "one of female, male, other, unknown"
    ]


def test_integer_field_rejects_boolean(errors: ErrorLister) -> None:
    when = WHEN.replace("field: lowest_t", "field: age").replace("le: -2.5", "eq: true")
    assert errors(rule(when)) == ["10:11: 'age' is an integer, got true"]


def test_date_literal_must_be_iso(errors: ErrorLister) -> None:
    when = WHEN.replace("field: lowest_t", "field: last_dxa_date").replace(
        "le: -2.5", 'lt: "2024-13-01"'
    )
    assert errors(rule(when)) == [
        "10:11: 'last_dxa_date' is an ISO date (YYYY-MM-DD), got '2024-13-01'"
    ]


def test_in_needs_a_non_empty_list(errors: ErrorLister) -> None:
    when = WHEN.replace("field: lowest_t", "field: sex").replace("le: -2.5", "in: []")
    assert errors(rule(when)) == ["10:11: in needs a non-empty list"]


def test_exists_on_a_required_field(errors: ErrorLister) -> None:
    when = WHEN.replace("field: lowest_t", "field: age").replace("le: -2.5", "exists: true")
    assert errors(rule(when)) == ["10:7: 'age' is always present, so 'exists' is always true"]


def test_exists_takes_true(errors: ErrorLister) -> None:
    when = WHEN.replace("le: -2.5", "exists: false")
    assert errors(rule(when)) == ["10:15: exists takes true (for the opposite use missing: true)"]


def test_two_operators_in_one_test(errors: ErrorLister) -> None:
    when = WHEN + "      gt: -4.0\n"
    assert errors(rule(when)) == [
        "11:7: a test takes one operator, this one has le, gt: put each in its own test under all"
    ]


def test_condition_with_two_shapes(errors: ErrorLister) -> None:
    when = WHEN + "      all:\n        - {field: age, ge: 50}\n"
    assert errors(rule(when)) == [
        "8:7: a condition is exactly one of all, any, not, or a test; this one has all and a test"
    ]


def test_operator_without_field(errors: ErrorLister) -> None:
    when = "    when:\n      fact: assessment\n      all:\n        - {le: -2.5}\n"
    assert errors(rule(when)) == ["10:12: operator 'le' needs a field: {field: NAME, le: VALUE}"]


def test_test_without_operator(errors: ErrorLister) -> None:
    when = "    when:\n      fact: assessment\n      all:\n        - {field: age}\n"
    assert errors(rule(when)) == [
        "10:11: test on 'age' has no operator: add one of eq, ne, lt, le, gt, ge, in, exists, "
        "missing"
    ]


# ----------------------------------------------------------------------- parameters


PARAMS = """
parameters:
  osteoporosis_t: {value: -2.5, evidence: [CS-2.2], description: the threshold}
  site_name: {value: lumbar-spine}
"""


def test_unknown_parameter(errors: ErrorLister) -> None:
    when = WHEN.replace("le: -2.5", "le: {param: osteoporosis}")
    assert errors(PARAMS.lstrip("\n") + rule(when)) == [
        "13:19: unknown parameter 'osteoporosis' (did you mean 'osteoporosis_t'?)"
    ]


def test_parameter_of_wrong_type(errors: ErrorLister) -> None:
    when = WHEN.replace("le: -2.5", "le: {param: site_name}")
    assert errors(PARAMS.lstrip("\n") + rule(when)) == [
        "13:19: parameter 'site_name' is 'lumbar-spine', but 'lowest_t' is a number"
    ]


def test_parameter_evidence_checked(errors: ErrorLister) -> None:
    text = "parameters:\n  p: {value: 1, evidence: [CS-2.22]}\n" + rule(WHEN)
    assert errors(text) == ["2:28: unknown clinical-spec id 'CS-2.22' (did you mean 'CS-2.2'?)"]


def test_duplicate_parameter_across_files(errors: ErrorLister) -> None:
    files = {
        "a.yaml": "parameters:\n  p: {value: 1}\n" + rule(WHEN),
        "b.yaml": "parameters:\n  p: {value: 2}\n",
    }
    assert errors(files=files) == ["2:3: duplicate parameter 'p' (first at rules/a.yaml:2:3)"]


# ----------------------------------------------------------------------- satisfiability


def _all(*tests: str) -> str:
    lines = ["    when:", "      fact: assessment", "      all:"]
    lines += [f"        - {t}" for t in tests]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        (
            ("{field: lowest_t, lt: -2.5}", "{field: lowest_t, gt: -1.0}"),
            "conditions on 'lowest_t' can never all hold: lt -2.5 and gt -1.0",
        ),
        (
            ("{field: lowest_t, lt: -2.5}", "{field: lowest_t, ge: -2.5}"),
            "conditions on 'lowest_t' can never all hold: lt -2.5 and ge -2.5",
        ),
        (
            ("{field: sex, eq: male}", "{field: sex, in: [female, other]}"),
            "conditions on 'sex' can never all hold: eq male and in [female, other]",
        ),
        (
            ("{field: lowest_t, eq: -3.0}", "{field: lowest_t, gt: -2.5}"),
            "conditions on 'lowest_t' can never all hold: eq -3.0 and gt -2.5",
        ),
        (
            ("{field: lowest_t, exists: true}", "{field: lowest_t, missing: true}"),
            "conditions on 'lowest_t' can never all hold: exists and missing",
        ),
        (
            ("{field: lowest_t, missing: true}", "{field: lowest_t, le: -1.0}"),
            "conditions on 'lowest_t' can never all hold: missing and le -1.0",
        ),
        (
            ("{field: age, gt: 64}", "{field: age, lt: 65}"),
            "conditions on 'age' can never all hold: gt 64 and lt 65",
        ),
        (
            ("{field: has_dxa, ne: true}", "{field: has_dxa, ne: false}"),
            "conditions on 'has_dxa' can never all hold: ne true and ne false",
        ),
        (
            (
                '{field: last_dxa_date, gt: "2024-01-01"}',
                '{field: last_dxa_date, lt: "2024-01-02"}',
            ),
            "conditions on 'last_dxa_date' can never all hold: gt 2024-01-01 and lt 2024-01-02",
        ),
    ],
)
def test_unsatisfiable_all(errors: ErrorLister, tests: tuple[str, str], message: str) -> None:
    assert errors(rule(_all(*tests))) == [f"10:11: {message}"]


@pytest.mark.parametrize(
    "tests",
    [
        ("{field: lowest_t, le: -2.5}", "{field: lowest_t, ge: -2.5}"),  # exactly -2.5
        ("{field: age, gt: 64}", "{field: age, lt: 66}"),  # 65
        ("{field: sex, ne: male}", "{field: sex, in: [male, female]}"),
        ('{field: last_dxa_date, gt: "2024-01-01"}', '{field: last_dxa_date, lt: "2024-01-03"}'),
        ("{field: lowest_t, exists: true}", "{field: lowest_t, lt: 0}"),
    ],
)
def test_satisfiable_boundaries_load(load: Loader, tests: tuple[str, str]) -> None:
    assert load(rule(_all(*tests))).rules


# ----------------------------------------------------------------------- then, emit, derived


def test_rule_without_emit_or_card(errors: ErrorLister) -> None:
    assert errors(rule(WHEN, then="    then: {}\n")) == [
        "11:11: rule 'a.rule' has neither emit nor card under then"
    ]


DERIVED = """
derived_facts:
  scored:
    extends: assessment
    fields:
      score_type: {type: string, enum: [T, Z]}
"""


def test_derived_fact_never_read(errors: ErrorLister) -> None:
    then = "    then:\n      emit: {fact: scored, copy: true}\n"
    assert errors(DERIVED.lstrip("\n") + rule(WHEN, then)) == [
        "2:3: derived fact type 'scored' is not read by any rule "
        "(no rule has 'when: {fact: scored}')"
    ]


def test_emit_copy_needs_extends(errors: ErrorLister) -> None:
    derived = DERIVED.replace("    extends: assessment\n", "    extends: draft_order\n")
    text = (
        derived.lstrip("\n")
        + rule(WHEN, "    then:\n      emit: {fact: scored, copy: true}\n")
        + (
            "  - id: b.rule\n    title: B\n    version: 1\n    status: active\n"
            "    evidence: [CS-2.2]\n    when: {fact: scored}\n" + CARD.lstrip("\n")
        )
    )
    assert errors(text) == [
        "17:34: copy: 'scored' does not extend 'assessment', the rule's fact type "
        "(give it 'extends: assessment')"
    ]


def test_emit_set_unknown_field_and_type(errors: ErrorLister) -> None:
    then = "    then:\n      emit: {fact: scored, set: {score_typ: T, score_type: X}}\n"
    reader = (
        "  - id: b.rule\n    title: B\n    version: 1\n    status: active\n"
        "    evidence: [CS-2.2]\n    when: {fact: scored}\n" + CARD.lstrip("\n")
    )
    assert errors(DERIVED.lstrip("\n") + rule(WHEN, then) + reader) == [
        "17:34: unknown field 'score_typ' of fact type 'scored' (did you mean 'score_type'?)",
        "17:60: 'score_type' is one of T, Z, got 'X'",
    ]


def test_emit_of_an_input_type(errors: ErrorLister) -> None:
    then = "    then:\n      emit: {fact: assesment, copy: true}\n"
    assert errors(rule(WHEN, then)) == [
        "12:20: emit needs a derived fact type, 'assesment' is unknown"
    ]


def test_emit_cycle(errors: ErrorLister) -> None:
    derived = DERIVED + "  rescored:\n    extends: scored\n"
    cyc = (
        "  - id: b.rule\n    title: B\n    version: 1\n    status: active\n"
        "    evidence: [CS-2.2]\n    when: {fact: scored}\n"
        "    then:\n      emit: {fact: rescored, copy: true}\n"
        "  - id: c.rule\n    title: C\n    version: 1\n    status: active\n"
        "    evidence: [CS-2.2]\n    when: {fact: rescored}\n"
        "    then:\n      emit: {fact: scored, set: {score_type: T}}\n"
    )
    then = "    then:\n      emit: {fact: scored, copy: true}\n"
    assert errors(derived.lstrip("\n") + rule(WHEN, then) + cyc) == [
        "27:20: emitting 'rescored' from 'scored' makes a cycle: 'rescored' leads back to 'scored'",
        "35:20: emitting 'scored' from 'rescored' makes a cycle: 'scored' leads back to 'rescored'",
    ]


def test_derived_field_type_unknown(errors: ErrorLister) -> None:
    derived = DERIVED.replace("{type: string, enum: [T, Z]}", "{type: str}")
    text = derived.lstrip("\n") + rule(WHEN)
    assert errors(text) == [
        "2:3: derived fact type 'scored' is not read by any rule "
        "(no rule has 'when: {fact: scored}')",
        "5:26: unknown field type 'str' (did you mean 'string'?): integer, number, boolean, "
        "string, date",
    ]


def test_derived_extends_unknown(errors: ErrorLister) -> None:
    derived = DERIVED.replace("extends: assessment", "extends: assesment")
    reader = rule("    when: {fact: scored}\n")
    assert errors(derived.lstrip("\n") + reader) == [
        "3:14: unknown fact type 'assesment' (did you mean 'assessment'?)"
    ]


def test_too_many_fields_for_the_engine(errors: ErrorLister) -> None:
    fields = "".join(f"      f{i}: {{type: integer}}\n" for i in range(200))
    derived = "derived_facts:\n  wide:\n    extends: assessment\n    fields:\n" + fields
    from cds.contracts.facts import Assessment  # the schema grows additively: count, don't pin

    n = len(Assessment.model_fields) - 1 + 200  # every field but the id
    assert errors(derived + rule("    when: {fact: wide}\n")) == [
        f"2:3: derived fact type 'wide' has {n} fields; the engine takes at most 252 per fact"
    ]


# ----------------------------------------------------------------------- ids and evidence


def test_duplicate_rule_id_across_files(errors: ErrorLister) -> None:
    files = {"a.yaml": rule(WHEN), "b.yaml": rule(WHEN)}
    assert errors(files=files) == ["2:9: duplicate rule id 'a.rule' (first at rules/a.yaml:2:9)"]


def test_rule_id_format(errors: ErrorLister) -> None:
    assert errors(rule(WHEN).replace("id: a.rule", "id: A Rule")) == [
        "2:9: rule id 'A Rule' must be lower-case dotted words, e.g. classification.t.osteoporosis"
    ]


def test_unknown_status(errors: ErrorLister) -> None:
    assert errors(rule(WHEN).replace("status: active", "status: activ")) == [
        "5:13: unknown status 'activ' (did you mean 'active'?): active, draft or retired"
    ]


def test_evidence_needs_a_cs_id(errors: ErrorLister) -> None:
    assert errors(rule(WHEN).replace("[CS-2.2]", "[ISCD-2019]")) == [
        "6:15: evidence needs at least one clinical-spec id (CS-x.y)"
    ]


def test_unknown_cs_id_and_source(errors: ErrorLister) -> None:
    assert errors(rule(WHEN).replace("[CS-2.2]", "[CS-2.9, ISCD-2091]")) == [
        "6:16: unknown clinical-spec id 'CS-2.9' (did you mean 'CS-2.3'?)",
        "6:24: unknown evidence source 'ISCD-2091' (did you mean 'ISCD-2019'?)",
    ]


def test_missing_evidence_registry(tmp_path: Path) -> None:
    directory = write_rules(tmp_path / "rules", {"x.yaml": rule(WHEN)})
    (directory / "evidence.yaml").unlink()
    with pytest.raises(RuleSetError) as info:
        load_ruleset(directory, order_keys=ORDER_KEYS)
    assert [e.message for e in info.value.errors] == [
        "evidence registry not found: create it with 'sources' and 'clinical_spec_ids'"
    ]


# ----------------------------------------------------------------------- cards and templates


def card(body: str) -> str:
    return "    then:\n      card:\n" + "".join(f"        {line}\n" for line in body.splitlines())


def test_unknown_topic(errors: ErrorLister) -> None:
    then = card("topic: bmd-clasification\nindicator: info\nsummary: hi")
    assert errors(rule(WHEN, then)) == [
        "13:16: unknown card topic 'bmd-clasification' (did you mean 'bmd-classification'?)"
    ]


def test_unknown_indicator(errors: ErrorLister) -> None:
    then = card("topic: screening\nindicator: warn\nsummary: hi")
    assert errors(rule(WHEN, then)) == [
        "14:20: unknown indicator 'warn' (did you mean 'warning'?): info, warning or critical"
    ]


def test_payload_field_not_in_topic(errors: ErrorLister) -> None:
    then = card(
        "topic: bmd-classification\nindicator: info\nsummary: hi\npayload: {categry: normal}"
    )
    assert errors(rule(WHEN, then)) == [
        "16:19: payload field 'categry' is not part of topic 'bmd-classification' "
        "(did you mean 'category'?): category, scoreType, site, value, clinicalOsteoporosis, "
        "clinicalBasis"
    ]


def test_template_unknown_fact_field(errors: ErrorLister) -> None:
    then = card('topic: screening\nindicator: info\nsummary: "T {{ fact.lowest_tt }}"')
    assert errors(rule(WHEN, then)) == [
        "15:18: template reads fact.lowest_tt, not a field of 'assessment' "
        "(did you mean 'lowest_t'?)"
    ]


def test_template_unknown_param(errors: ErrorLister) -> None:
    then = card('topic: screening\nindicator: info\nsummary: hi\ndetail: "{{ param.osteo }}"')
    assert errors(PARAMS.lstrip("\n") + rule(WHEN, then)) == [
        "19:17: template reads param.osteo, not a parameter (did you mean 'osteoporosis_t'?)"
    ]


def test_template_unknown_name_and_syntax(errors: ErrorLister) -> None:
    then = card(
        'topic: screening\nindicator: info\nsummary: "{{ patient.age }}"\ndetail: "{{ fact. }}"'
    )
    assert errors(rule(WHEN, then)) == [
        "15:18: unknown name 'patient' in template: use fact.FIELD or param.NAME",
        "16:17: template syntax error: expected name or number",
    ]


def test_suggestion_order_keys(errors: ErrorLister) -> None:
    then = card(
        "topic: workup\nindicator: info\nsummary: hi\n"
        "suggestions:\n  - {label: Labs, orders: [lab-cbc, lab-vitamin-d]}"
    )
    assert errors(rule(WHEN, then)) == [
        "17:45: unknown order code key 'lab-vitamin-d' (did you mean 'lab-25-oh-vitamin-d'?) "
        "(fhir_profiles/order-codes.json)"
    ]


def test_suggestion_occurrence_templates_checked(errors: ErrorLister) -> None:
    then = card(
        "topic: workup\nindicator: info\nsummary: hi\nsuggestions:\n  - label: Labs\n"
        '    occurrence: {start: "{{ fact.last_dxa }}"}'
    )
    assert errors(rule(WHEN, then)) == [
        "18:33: template reads fact.last_dxa, not a field of 'assessment' "
        "(did you mean 'last_dxa_date'?)"
    ]


def test_link_must_be_absolute(errors: ErrorLister) -> None:
    then = card(
        "topic: workup\nindicator: info\nsummary: hi\n"
        "links: [{label: Guide, url: /guide, type: absolut}]"
    )
    assert errors(rule(WHEN, then)) == [
        "16:37: link url must be absolute (https://...), got '/guide'",
        "16:51: unknown link type 'absolut' (did you mean 'absolute'?): absolute or smart",
    ]


def test_static_summary_length(errors: ErrorLister) -> None:
    then = card("topic: screening\nindicator: info\nsummary: " + "x" * 140)
    assert errors(rule(WHEN, then)) == ["15:18: summary has 140 characters: keep it under 140"]


# ----------------------------------------------------------------------- examples


def test_example_unknown_field_and_bad_value(errors: ErrorLister) -> None:
    examples = (
        "    examples:\n"
        "      - name: one\n"
        "        fact: {lowest_tscore: -2.6, age: old, sex: null}\n"
        "        expect: {fires: true, payload: {category: x}}\n"
    )
    assert errors(rule(WHEN) + examples) == [
        "15:16: unknown field 'lowest_tscore' of fact type 'assessment' (did you mean 'lowest_t'?)",
        "15:42: 'age' is an integer, got 'old'",
        "15:52: 'sex' is always present in facts of type 'assessment': give a value, not null",
        "16:41: expect.payload field 'category' is not in the rule's card payload",
    ]


# ----------------------------------------------------------------------- reporting


def test_errors_sorted_across_files_and_never_half_loaded(tmp_path: Path) -> None:
    directory = write_rules(
        tmp_path / "rules",
        {
            "b.yaml": rule(WHEN.replace("lowest_t", "lowest_tt")),
            "a.yaml": rule(WHEN.replace("id: a.rule", "id: b.rule").replace("le:", "lte:")),
        },
    )
    with pytest.raises(RuleSetError) as info:
        load_ruleset(directory, order_keys=ORDER_KEYS)
    # the form error of a.yaml does not hide the meaning error of the well-formed b.yaml
    assert [str(e).split("rules/", 1)[1] for e in info.value.errors] == [
        "a.yaml:10:7: unknown operator or key 'lte' (did you mean 'le'?)",
        "b.yaml:9:14: unknown field 'lowest_tt' of fact type 'assessment' "
        "(did you mean 'lowest_t'?)",
    ]
    assert str(info.value).count("\n") == len(info.value.errors) - 1


def test_list_item_of_the_wrong_type(errors: ErrorLister) -> None:
    assert errors(rule(WHEN) + "  - just a string\n") == [
        "13:5: rules item 2: expected a mapping, got 'just a string'"
    ]


def test_when_needs_a_fact(errors: ErrorLister) -> None:
    when = "    when: {field: lowest_t, le: -2.5}\n"
    assert errors(rule(when)) == ["7:11: missing key 'fact'"]


def test_names_a_broken_file_may_define_are_not_reported(errors: ErrorLister) -> None:
    files = {
        "a.yaml": "parameters:\n  p: {value: -2.5, unit: [x]}\n"
        "derived_facts:\n  d: {extends: assessment}\n",
        "b.yaml": rule(WHEN.replace("le: -2.5", "le: {param: p}"))
        + "  - id: b.rule\n    title: B\n    version: 1\n    status: active\n"
        "    evidence: [CS-2.2]\n    when: {fact: d}\n" + CARD.lstrip("\n"),
    }
    # a.yaml does not parse, so 'p' and 'd' may well exist: only a.yaml's error is shown
    assert errors(files=files) == ["2:26: unit: expected a string, got a list"]
