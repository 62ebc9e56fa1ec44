"""FHIR text in card markdown is escaped (issue 12): a hostile device display reaches the
card detail as literal text, never as a link or an image; the plain-text summary and the
suggestion labels keep it as written; links come only from the rules. CS-1.4: no card
text or suggestion names a scanner by its raw reference."""

from __future__ import annotations

import html
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from cds.contracts.cards import dump_cards
from cds.pipeline import EvaluationInput
from cds.rules.templates import MARKDOWN_KEYS, markdown_text
from tests.clinical.helpers import AS_OF, renderer, ruleset
from tests.clinical.test_fhir_boundaries import evaluator, obs, patient

HOSTILE = (
    "Scan [click](javascript:alert(1)) ![x](http://x.example/p.png) <b>hi</b> www.evil.example"
)
MD = MarkdownIt("commonmark")


def _hostile_patient() -> list[dict[str, Any]]:
    def scanned(o: dict[str, Any]) -> dict[str, Any]:
        o["device"] = {"reference": "Device/abc", "display": HOSTILE}  # Device not sent
        return o

    return [
        patient(),
        scanned(obs("lt1", "38267-1", -1.6, "{T-score}", "2024-11-11", dev=None)),
        scanned(obs("lb1", "24966-4", 0.900, "g/cm2", "2024-11-11", dev=None)),
        scanned(obs("lt2", "38267-1", -1.7, "{T-score}", "2026-11-09", dev=None)),
        scanned(obs("lb2", "24966-4", 0.890, "g/cm2", "2026-11-09", dev=None)),
    ]


def _cards() -> list[dict[str, Any]]:
    result = evaluator().evaluate(EvaluationInput(resources=_hostile_patient(), as_of=AS_OF))
    return dump_cards(result.cards)


def _html(markdown: str) -> str:
    return str(MD.render(markdown))


def test_hostile_display_is_literal_in_every_detail() -> None:
    cards = _cards()
    shown = [c for c in cards if "Scan" in c.get("detail", "")]
    assert shown, "the scanner display should be shown in some card detail"
    for card in cards:
        html = _html(card.get("detail", ""))
        assert "<a " not in html, html
        assert "<img" not in html, html
        assert "<b>" not in html, html
    for card in shown:
        html = _html(card["detail"])
        # what the reader sees is the display as written (entities decoded)
        assert "[click](javascript:alert(1))" in html
        assert "![x](http://x.example/p.png)" in html


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def test_summary_and_suggestions_are_plain_text_unescaped() -> None:
    cards = _cards()
    for card in cards:
        assert "\\" not in card["summary"]
    suggested = [t for c in cards for t in _strings(c.get("suggestions", []))]
    assert not any("\\[" in t for t in suggested)
    assert any(HOSTILE in t for t in suggested)  # the draft order's note, as written


def test_no_raw_device_reference_in_any_card_text() -> None:
    for card in _cards():
        texts = [card["summary"], card.get("detail", "")]
        texts += [s["label"] for s in card.get("suggestions", [])]
        assert not any("Device/" in t for t in texts), texts


def _detail_rules() -> list[str]:
    rs = ruleset()
    return [r.id for r in rs.rules if r.then.card is not None and r.then.card.detail]


@pytest.mark.parametrize("rule_id", _detail_rules())
def test_every_detail_escapes_hostile_text(rule_id: str) -> None:
    """Every card detail, rendered with hostile text in each free-text string field,
    shows it literally: no link, no image (the one renderer is Jinja's, MD_ENV)."""
    rs = ruleset()
    cards = renderer()
    plan = cards.plan(rule_id)
    fields = rs.fact_types[plan.fact_type].fields
    fact = {n: HOSTILE for n, spec in fields.items() if spec.kind == "string" and not spec.enum}
    try:
        card = plan.render(cards.template_fact(fact, plan.fact_type), rs.parameters)
    except Exception:  # a template that needs another type for some string field
        pytest.skip("the hostile fact does not render for this card")
    for key in MARKDOWN_KEYS:
        if key in card:
            assert "<a " not in _html(card[key])
            assert "<img" not in _html(card[key])


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=60))
def test_escaped_text_renders_as_itself(text: str) -> None:
    """Whatever the text, its escaped form renders as exactly that text (no markup)."""
    text = " ".join(text.split())  # inside a line, as templates write values
    rendered = MD.render("Scanner " + markdown_text(text))
    shown = html.escape(text, quote=False).replace('"', "&quot;")
    assert rendered == f"<p>Scanner {shown}</p>\n".replace(" </p>", "</p>")
