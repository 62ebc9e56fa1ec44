"""Any facts the schema allows (absent values, long texts, extreme numbers) give cards
that build and meet the contract: a template never fails or overflows the summary."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from cds.cards import CardContext, build_cards, contract_problems
from cds.contracts.facts import (
    Assessment,
    ContrastStudy,
    DraftOrder,
    StructuralFindingFact,
    VertebraAnalysis,
)
from tests.clinical.helpers import AS_OF, engine, renderer, ruleset

DATES = st.sampled_from(["2020-02-29", "2024-01-31", "2025-12-31", "2026-01-15"])
TEXT = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F), min_size=1, max_size=200
)


def _for(annotation: Any, name: str) -> st.SearchStrategy[Any]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        inner = st.one_of(*[_for(a, name) for a in options])
        return st.one_of(st.none(), inner) if type(None) in get_args(annotation) else inner
    if origin is typing.Annotated:
        return DATES
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(min_value=0, max_value=400)
    if annotation is float:
        return st.integers(min_value=-60, max_value=60).map(lambda i: i / 10)
    if annotation is str:
        return DATES if name.endswith("date") else TEXT
    raise TypeError(f"no strategy for {name}: {annotation!r}")


def facts_of(model: type[BaseModel], fact_id: str) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(model, include_extras=True)
    fields = {n: _for(hints[n], n) for n in model.model_fields if n != "id"}
    return st.fixed_dictionaries(fields).map(lambda d: model(id=fact_id, **d))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    assessment=facts_of(Assessment, "assessment:1"),
    extra=st.lists(
        st.one_of(
            facts_of(VertebraAnalysis, "vertebra_analysis:1"),
            facts_of(StructuralFindingFact, "structural_finding:1"),
            facts_of(ContrastStudy, "contrast_study:1"),
            facts_of(DraftOrder, "draft_order:1"),
        ),
        max_size=4,
        unique_by=lambda f: f.id,
    ),
)
def test_any_schema_facts_give_contract_cards(assessment: Assessment, extra: list[Any]) -> None:
    rs = ruleset()
    result = engine().evaluate([assessment, *extra])
    context = CardContext(ruleset_version=rs.version, patient_id="p1", as_of=AS_OF, uuid_seed="r")
    for card in build_cards(result.firings, renderer(), context):
        assert contract_problems(card) == [], card.summary
