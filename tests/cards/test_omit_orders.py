"""CS-6.1 rev 2: a suggestion's ``omit_orders`` leaves out tests with a recent result."""

from __future__ import annotations

from typing import Any

from tests.clinical.helpers import cards, lumbar


def order_codes(card: dict[str, Any]) -> dict[str, list[str]]:
    return {
        s["label"]: [a["resource"]["code"]["coding"][0]["code"] for a in s.get("actions", [])]
        for s in card.get("suggestions", [])
    }


def test_cs_6_1_recent_tests_are_left_out_and_named() -> None:
    got = cards(
        lumbar(
            -1.8,
            bone_therapy_ever=False,
            recent_lab_orders="lab-tsh,lab-25-oh-vitamin-d",
            recent_lab_tests="TSH (2026-05-04); 25-OH vitamin D (2025-11-23)",
        )
    )
    workup = got["workup"]
    labs = order_codes(workup)["Order the secondary-cause laboratory tests"]
    assert "3016-3" not in labs  # TSH
    assert "62292-8" not in labs  # 25-OH vitamin D
    assert "2731-8" in labs  # PTH
    assert "TSH (2026-05-04)" in workup["detail"]


def test_cs_6_1_a_suggestion_with_every_test_recent_is_dropped() -> None:
    recent = "lab-spep,lab-free-light-chains-kappa,lab-free-light-chains-lambda"
    got = cards(lumbar(-1.8, bone_therapy_ever=False, recent_lab_orders=recent))
    labels = order_codes(got["workup"])
    assert "Consider serum protein electrophoresis with free light chains" not in labels
    assert "Order the secondary-cause laboratory tests" in labels


def test_cs_6_1_nothing_recent_orders_everything() -> None:
    got = cards(lumbar(-1.8, bone_therapy_ever=False))
    labs = order_codes(got["workup"])["Order the secondary-cause laboratory tests"]
    assert "3016-3" in labs
