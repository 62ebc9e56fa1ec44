"""Card contract: one card per topic, merge rules, CDS Hooks 2.0.1 invariants
(cds-resp-1..7), per-topic payload fields, suggestions as draft ServiceRequests, uuids."""

from __future__ import annotations

import copy
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from cds.cards import (
    OVERRIDE_REASONS,
    CardBuildError,
    CardContext,
    CardRenderer,
    build_cards,
    contract_problems,
    hl7_problems,
)
from cds.contracts.cards import dump_cards
from cds.contracts.facts import Fact
from cds.engine import Engine
from cds.fhir import load_profiles
from cds.rules import RuleSet, load_ruleset
from cds.rules.reference import evaluate_ruleset
from tests.clinical.helpers import (
    AS_OF,
    EXT,
    RULES,
    assess,
    cards,
    contrast,
    engine,
    lumbar,
    order,
    payload,
    renderer,
    ruleset,
    structural,
    vertebrae,
)


def rich_facts() -> list[Fact]:
    """One patient with something for every topic but screening."""
    return [
        assess(
            age=72,
            menopausal_assumed=True,
            scanner="Hologic Horizon A (Device/dxa1)",
            manufacturer="hologic",
            lumbar_t=-0.8,
            lumbar_t_date="2026-01-15",
            lumbar_bmd=0.97,
            lumbar_vertebrae=4,
            total_hip_t=-2.6,
            lowest_hip_t=-2.6,
            lowest_hip_site="total-hip",
            lowest_t=-2.6,
            lowest_t_site="total-hip",
            spine_hip_gap=1.8,
            degenerative_spine=True,
            tbs=1.19,
            change_available=True,
            change_comparable=True,
            change_percent=-6.0,
            change_lsc=5.3,
            change_significant=True,
            change_direction="loss",
            change_old_date="2024-01-10",
            change_new_date="2026-01-15",
            change_old_bmd=1.03,
            change_new_bmd=0.97,
            therapy_between_scans=True,
            significant_loss_on_therapy=True,
            bone_therapy_ever=True,
            antiresorptive_current=True,
            bisphosphonate_review_open=True,
            oral_bisphosphonate_years=5.5,
            denosumab_used=True,
            denosumab_overdue=True,
            denosumab_last_dose_date="2026-02-20",
            denosumab_overdue_from="2026-09-21",
            hypophosphatasia_condition=True,
            preliminary=True,
        ),
        vertebrae(1.4, evaluable=3, discordant_vertebra="L3"),
        structural("degenerative-disease"),
        structural("scoliosis", 2),
        contrast(3),
        order(10),
    ]


def all_cards(hook: str = "patient-view", seed: str | None = "s") -> list[dict[str, Any]]:
    rs = ruleset()
    result = engine().evaluate(rich_facts())
    built = build_cards(
        result.firings,
        renderer(),
        CardContext(
            ruleset_version=rs.version, hook=hook, patient_id="p1", as_of=AS_OF, uuid_seed=seed
        ),
    )
    return dump_cards(built)


@pytest.mark.parametrize("hook", ["patient-view", "order-select", "order-sign"])
def test_every_card_meets_the_contract_and_hl7_invariants(hook: str) -> None:
    built = all_cards(hook)
    assert built
    for card in built:
        assert contract_problems(card) == [], card["summary"]
    topics = [c["source"]["topic"]["code"] for c in built]
    assert len(topics) == len(set(topics)), "one card per topic"


def test_patient_view_has_every_topic_of_the_rich_patient() -> None:
    topics = {c["source"]["topic"]["code"] for c in all_cards()}
    assert topics == {
        "bmd-classification",
        "artifact-warning",
        "bmd-change",
        "tbs",
        "workup",
        "rescan-interval",
        "therapy-safety",
        "dxa-order-timing",  # the facts include a draft DXA order
    }


def test_order_hooks_answer_the_order_and_critical_alerts_only() -> None:
    topics = [c["source"]["topic"]["code"] for c in all_cards("order-select")]
    assert topics == ["therapy-safety", "dxa-order-timing"]  # critical first


def test_cards_are_ordered_most_severe_first() -> None:
    severity = {"info": 0, "warning": 1, "critical": 2}
    order_seen = [severity[c["indicator"]] for c in all_cards()]
    assert order_seen == sorted(order_seen, reverse=True)


def test_merge_takes_scalars_from_the_winner_and_unions_lists() -> None:
    artifact = next(c for c in all_cards() if c["source"]["topic"]["code"] == "artifact-warning")
    data = payload(artifact)
    rs = ruleset()
    priorities = [rs.rule(r).priority for r in data["rules"]]
    assert priorities == sorted(priorities, reverse=True)
    assert data["rule"] == data["rules"][0]
    assert data["rule"] == "artifacts.hypophosphatasia"  # priority 50, the highest here
    # findings: ordered union, each once, in priority order
    assert data["findings"][0] == "hypophosphatasia"
    assert len(data["findings"]) == len(set(data["findings"]))
    assert {
        "vertebral-level-discordance",
        "spine-hip-discordance",
        "degenerative-disease",
        "scoliosis",
        "recent-contrast",
    } <= set(data["findings"])
    # indicator: the most severe (structural findings are info, discordance warning)
    assert artifact["indicator"] == "warning"
    # evidence: the union of the rules' evidence, no repeats
    cited = {e for r in data["rules"] for e in rs.rule(r).evidence}
    assert set(data["evidence"]) == cited
    assert len(data["evidence"]) == len(cited)
    # summary from the winner; detail joins every contribution
    assert artifact["summary"].startswith("Hypophosphatasia")
    assert "Vertebral level discordance" in artifact["detail"]
    assert "Scoliosis" in artifact["detail"]


def test_workup_items_are_the_union_in_priority_order() -> None:
    workup = next(c for c in all_cards() if c["source"]["topic"]["code"] == "workup")
    items = payload(workup)["items"]
    # priority order: hypophosphatasia evaluation (55) before treatment discussion (50)
    assert items[:2] == ["hypophosphatasia-evaluation", "treatment-discussion"]
    # osteoporosis indicates treatment: no FRAX beside it (CS-6.2 rev 2)
    assert "fracture-risk-assessment" not in items
    assert {
        "secondary-cause-labs",
        "fall-risk",
        "calcium-vitamin-d",
        "exercise",
        "lifestyle",
        "cardiovascular-risk",
        "hypophosphatasia-evaluation",
    } <= set(items)


def test_detail_states_what_was_assumed_and_preliminary_data() -> None:
    classification = next(
        c for c in all_cards() if c["source"]["topic"]["code"] == "bmd-classification"
    )
    assert "Assumed" in classification["detail"]
    assert "Preliminary" in classification["detail"]
    assert "Lumbar spine (L1-L4) T-score -0.8 on 2026-01-15" in classification["detail"]


def test_source_names_the_first_source_and_the_topic_coding() -> None:
    profiles = load_profiles()
    for card in all_cards():
        data = payload(card)
        rule = ruleset().rule(data["rule"])
        first = next(e for e in rule.evidence if e in ruleset().evidence.sources)
        src = ruleset().evidence.sources[first]
        assert card["source"]["label"] == src.label
        assert card["source"]["url"] == src.url
        topic = card["source"]["topic"]
        assert topic == profiles.topic_coding(topic["code"])
        assert data["rulesetVersion"] == ruleset().version


def test_suggestions_are_draft_service_requests_coded_from_the_profiles() -> None:
    profiles = load_profiles()
    rescan = next(c for c in all_cards() if c["source"]["topic"]["code"] == "rescan-interval")
    assert rescan["selectionBehavior"] == "any"
    (suggestion,) = rescan["suggestions"]
    uuid.UUID(suggestion["uuid"])
    (action,) = suggestion["actions"]
    assert action["type"] == "create"
    assert action["description"]
    resource = action["resource"]
    assert resource["resourceType"] == "ServiceRequest"
    assert resource["status"] == "draft"
    assert resource["intent"] == "proposal"
    assert resource["subject"] == {"reference": "Patient/p1"}
    assert resource["code"]["coding"] == [profiles.order("dxa-axial").coding()]
    data = payload(rescan)
    assert resource["occurrencePeriod"] == {"start": data["dueFrom"], "end": data["dueTo"]}
    assert "Hologic Horizon A" in resource["note"][0]["text"]  # the scanner to use (CS-8.3)
    workup = next(c for c in all_cards() if c["source"]["topic"]["code"] == "workup")
    lab_codes = {
        a["resource"]["code"]["coding"][0]["code"]
        for s in workup["suggestions"]
        for a in s.get("actions", [])
    }
    assert profiles.order("lab-25-oh-vitamin-d").code in lab_codes
    assert profiles.order("lab-pth").code in lab_codes


def test_actionable_cards_offer_override_reasons_with_displays() -> None:
    for card in all_cards():
        actionable = "suggestions" in card or card["indicator"] != "info"
        assert ("overrideReasons" in card) is actionable
        if not actionable:
            continue
        for reason, (code, display) in zip(card["overrideReasons"], OVERRIDE_REASONS, strict=True):
            assert reason["code"] == code
            assert reason["display"] == display
            assert reason["system"].startswith("https://")


def test_links_are_absolute_and_never_the_unpublished_brief() -> None:
    for card in all_cards():
        for link in card.get("links", []):
            assert link["type"] == "absolute"
            assert link["url"].startswith("https://")
            assert "osteohooks.org/docs" not in link["url"]


def test_no_nulls_or_empty_values_anywhere() -> None:
    """CDS Hooks: no null or empty element, "unless otherwise specified": the card contract
    specifies dxa-order-timing `exception` as "code or null", so that key is always present."""

    def walk(value: Any, path: str) -> None:
        if path.endswith("|dxa-order-timing.extension.org.osteohooks.exception"):
            assert value is None or (isinstance(value, str) and value), path
            return
        assert value is not None, path
        if isinstance(value, str | list | dict):
            assert len(value) > 0, path
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        if isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")

    for card in all_cards():
        walk(card, f"{card['summary']}|{card['source']['topic']['code']}")
        if card["source"]["topic"]["code"] == "dxa-order-timing":
            assert "exception" in card["extension"]["org.osteohooks"], card["summary"]


def test_summaries_are_short_and_carry_the_number() -> None:
    for card in all_cards():
        assert len(card["summary"]) < 140
        assert any(ch.isdigit() for ch in card["summary"]), card["summary"]


def test_deterministic_uuids_repeat_and_random_ones_do_not() -> None:
    first, again = all_cards(seed="s"), all_cards(seed="s")
    assert json.dumps(first) == json.dumps(again)
    other = all_cards(seed="t")
    assert {c["uuid"] for c in first}.isdisjoint({c["uuid"] for c in other})
    random1, random2 = all_cards(seed=None), all_cards(seed=None)
    assert {c["uuid"] for c in random1}.isdisjoint({c["uuid"] for c in random2})
    for card in random1:
        assert uuid.UUID(card["uuid"]).version == 4
    for card in first:
        assert uuid.UUID(card["uuid"]).version == 5


def test_engine_and_reference_give_the_same_cards() -> None:
    rs = ruleset()
    context = CardContext(ruleset_version=rs.version, patient_id="p1", as_of=AS_OF, uuid_seed="x")
    by_engine = build_cards(engine().evaluate(rich_facts()).firings, renderer(), context)
    by_reference = build_cards(evaluate_ruleset(rs, rich_facts()).firings, renderer(), context)
    assert by_engine == by_reference


def test_nothing_to_say_gives_no_cards() -> None:
    assert (
        cards(assess(age=40, menopausal_status="premenopausal", has_dxa=False, last_dxa_date=None))
        == {}
    )


def _one_rule_set(tmp_path: Path, rule_id: str, title: str, card_lines: str) -> RuleSet:
    """A rule folder of one osteoporosis rule whose card has `card_lines` besides its
    topic, indicator and payload (the bundled evidence registry beside it)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES / "evidence.yaml", rules / "evidence.yaml")
    (rules / "rule.yaml").write_text(
        f"""rules:
  - id: {rule_id}
    title: {title}
    version: 1
    status: active
    evidence: [CS-2.2, WHO-1994]
    when:
      fact: assessment
      all:
        - {{field: lowest_t, le: -2.5}}
    then:
      card:
        topic: bmd-classification
        indicator: warning
        payload: {{category: osteoporosis}}
{card_lines}
    examples:
      - name: fires
        fact: {{lowest_t: -2.5}}
        expect: {{fires: true}}
      - name: does not
        fact: {{lowest_t: -2.4}}
        expect: {{fires: false}}
""",
        encoding="utf-8",
    )
    return load_ruleset(rules)


def test_a_too_long_summary_is_a_build_error_naming_the_rule(tmp_path: Path) -> None:
    rs = _one_rule_set(
        tmp_path,
        "test.long-summary",
        "A summary that grows with its data",
        '        summary: "Osteoporosis at {{ fact.scanner }}"',
    )
    facts = [lumbar(-2.6, scanner="x" * 130)]
    firings = Engine(rs).evaluate(facts).firings
    with pytest.raises(CardBuildError) as info:
        build_cards(firings, CardRenderer(rs), CardContext(ruleset_version=rs.version))
    assert info.value.rule_id == "test.long-summary"
    assert "test.long-summary" in str(info.value)
    short = [lumbar(-2.6, scanner="Hologic")]
    (card,) = build_cards(
        Engine(rs).evaluate(short).firings,
        CardRenderer(rs),
        CardContext(ruleset_version=rs.version),
    )
    assert card.summary == "Osteoporosis at Hologic"


def test_a_card_that_is_not_a_cds_hooks_card_is_a_build_error_naming_the_rule(
    tmp_path: Path,
) -> None:
    """The builder validates each card once as the contract's `Card` (what every reader
    gets): a rule whose card breaks CDS Hooks (here a link without a label) never answers."""
    rs = _one_rule_set(
        tmp_path,
        "test.unlabelled-link",
        "A link with an empty label",
        "        summary: Osteoporosis\n"
        "        links:\n"
        '          - {label: "", url: "https://example.org/guide"}',
    )
    firings = Engine(rs).evaluate([lumbar(-2.6)]).firings
    with pytest.raises(CardBuildError) as info:
        build_cards(firings, CardRenderer(rs), CardContext(ruleset_version=rs.version))
    assert info.value.rule_id == "test.unlabelled-link"
    assert "links[0].label" in str(info.value)


def _good_card() -> dict[str, Any]:
    return copy.deepcopy(
        next(c for c in all_cards() if c["source"]["topic"]["code"] == "rescan-interval")
    )


def _two_recommended_at_most_one(card: dict[str, Any]) -> None:
    card["selectionBehavior"] = "at-most-one"
    card["suggestions"].append(copy.deepcopy(card["suggestions"][0]))
    for suggestion in card["suggestions"]:
        suggestion["isRecommended"] = True


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda c: c.pop("selectionBehavior"), "cds-resp-6"),
        (lambda c: _two_recommended_at_most_one(c), "cds-resp-1"),
        (lambda c: c["suggestions"][0]["actions"][0].pop("description"), "cds-resp-5"),
        (lambda c: c["suggestions"][0]["actions"][0].update(type="delete"), "cds-resp-2"),
        (lambda c: c["links"][0].update(appContext="x"), "cds-resp-3"),
        (lambda c: c["overrideReasons"][0].pop("display"), "cds-resp-4"),
        (lambda c: c["suggestions"][0].update(actionSelectionBehavior="some"), "cds-resp-7"),
        (lambda c: c.update(summary="x" * 140), "summary"),
        (lambda c: c.update(detail=None), "null"),
        (lambda c: c["extension"][EXT].update(items=[]), "empty list"),
        (lambda c: c["extension"][EXT].pop("rule"), "rule"),
        (lambda c: c["source"].update(url="doi.org/x"), "absolute"),
        (lambda c: c["extension"][EXT].update(category="normal"), "outside topic"),
    ],
)
def test_the_contract_checker_can_fail(mutate: Any, problem: str) -> None:
    card = _good_card()
    assert contract_problems(card) == []
    mutate(card)
    found = contract_problems(card)
    assert any(problem in p for p in found), found


def test_hl7_checker_requires_summary_indicator_source() -> None:
    assert len(hl7_problems({})) >= 3


def test_indicators_follow_cs_11_2() -> None:
    """CS-11.2: critical only for the denosumab gap (CS-9.1); warning only for
    osteoporosis, diagnosis-changing artifacts, significant loss and too-soon orders."""
    by_indicator: dict[str, set[str]] = {"info": set(), "warning": set(), "critical": set()}
    for rule in ruleset().active_rules:
        if rule.then.card is not None:
            by_indicator[rule.then.card.indicator].add(rule.id)
    assert by_indicator["critical"] == {
        "therapy-safety.denosumab-discontinuation",
        "therapy-safety.denosumab-discontinuation.reduced-kidney-function",
    }
    for rule_id in by_indicator["warning"]:
        assert rule_id.split(".")[0] in ("classification", "artifacts", "change", "order-timing")
    assert "classification.t.osteoporosis" in by_indicator["warning"]
    assert "order-timing.too-soon" in by_indicator["warning"]
    assert {"change.significant-loss", "change.significant-loss-on-therapy"} <= by_indicator[
        "warning"
    ]
    assert "classification.t.low-bone-mass" in by_indicator["info"]


def test_every_card_names_its_evidence_and_rule() -> None:
    """CS-11.3: source label and URL from the evidence, the rule that fired in the payload."""
    for card in all_cards():
        data = payload(card)
        assert card["source"]["label"]
        assert card["source"]["url"].startswith("https://")
        assert data["rule"] in data["rules"]
        assert any(e.startswith("CS-") for e in data["evidence"])


def test_random_uuids_of_one_evaluation_are_distinct_version_4() -> None:
    cards = all_cards(seed=None)
    drawn = [c["uuid"] for c in cards] + [
        s["uuid"] for c in cards for s in c.get("suggestions", [])
    ]
    assert len(drawn) > len(cards)  # suggestions too
    assert len(set(drawn)) == len(drawn)
    for text in drawn:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
