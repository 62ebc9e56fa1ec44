"""CS-1.11: comparisons are exact, end to end from FHIR (values as reported, Decimal
arithmetic, thresholds from the rule parameters) and display rounding never misstates
a comparison (the ``against`` template filter)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cds.rules.templates import against
from tests.clinical.helpers import ruleset
from tests.clinical.test_fhir_boundaries import (
    VERTEBRA,
    device,
    ext,
    lumbar_bmd,
    lumbar_t,
    obs,
    patient,
    run,
)


def _param(name: str) -> Decimal:
    return Decimal(str(ruleset().parameters[name]))


def hip_t(value: float | Decimal) -> dict[str, Any]:
    return obs("ht", "38264-8", float(value), "{T-score}")


def _findings(cards: dict[str, Any]) -> list[str]:
    card = cards.get("artifact-warning")
    return [] if card is None else list(ext(card)["findings"])


# ------------------------------------------------------------------ CS-3.3 spine-hip gap


def test_spine_hip_gap_just_below_the_threshold_is_not_discordance() -> None:
    """A gap of 0.95 (threshold 1.0) is not ">= 1.0": rev 1 rounded it up and fired."""
    gap = _param("spine_hip_discordance_t")
    hip = Decimal("-2.0")
    below = hip + gap - Decimal("0.05")
    cards = run(patient(), device(), lumbar_t(float(below)), hip_t(hip))
    assert "spine-hip-discordance" not in _findings(cards)
    at = run(patient(), device(), lumbar_t(float(hip + gap)), hip_t(hip))
    assert "spine-hip-discordance" in _findings(at)
    assert f"is {gap} above" in at["artifact-warning"]["detail"]


# ------------------------------------------------------------------ CS-3.1 vertebrae


def _vertebrae(*values: str) -> list[dict[str, Any]]:
    return [
        obs(f"v{i}", "38267-1", float(v), "{T-score}", body_site=VERTEBRA[f"L{i + 1}"])
        for i, v in enumerate(values)
    ]


def test_vertebral_difference_of_1_04_is_reported_not_dropped() -> None:
    """1.04 > 1.0: rev 1 rounded it to 1.0 (no card) while excluding the vertebra."""
    limit = _param("vertebral_discordance_t")
    l2 = Decimal("-1.2") + limit + Decimal("0.04")
    cards = run(patient(), device(), *_vertebrae("-1.2", str(l2), "-1.2", "-1.3"))
    assert "vertebral-level-discordance" in _findings(cards)
    assert str(limit + Decimal("0.04")) in cards["artifact-warning"]["summary"]


def test_vertebral_difference_exactly_at_the_limit_does_not_qualify() -> None:
    """-2.1 - (-1.1) is exactly 1.0 in decimal arithmetic (not 1.0000000000000002)."""
    limit = _param("vertebral_discordance_t")
    low = Decimal("-1.1") - limit
    cards = run(patient(), device(), *_vertebrae(str(low), "-1.1", "-1.5", "-1.6"))
    assert "vertebral-level-discordance" not in _findings(cards)


# ------------------------------------------------------------------ CS-4.2 change vs LSC


def test_loss_of_5_25_percent_is_not_significant_against_5_3() -> None:
    """(0.758 - 0.800) / 0.800 x 100 is exactly -5.25: below the LSC, and shown -5.25."""
    lsc = _param("lsc_lumbar_spine_percent")
    old = Decimal("0.800")
    new = old * (1 - (lsc - Decimal("0.05")) / 100)
    cards = run(
        patient(),
        device(),
        lumbar_bmd(float(old), "2024-11-11"),
        lumbar_bmd(float(new), "2026-11-09"),
    )
    card = cards["bmd-change"]
    assert ext(card)["significant"] is False
    assert ext(card)["percentChange"] == float(-(lsc - Decimal("0.05")))
    assert f"{-(lsc - Decimal('0.05'))}%" in card["summary"]
    at = run(
        patient(),
        device(),
        lumbar_bmd(float(old), "2024-11-11"),
        lumbar_bmd(float(old * (1 - lsc / 100)), "2026-11-09"),
    )
    assert ext(at["bmd-change"])["significant"] is True


# ------------------------------------------------------------------ display rounding


def _side(x: Decimal, t: Decimal) -> tuple[int, int]:
    return ((x > t) - (x < t), (abs(x) > abs(t)) - (abs(x) < abs(t)))


def test_against_examples() -> None:
    assert against(0.95, 1, 1.0) == "0.95"
    assert against(-5.25, 1, 5.3) == "-5.25"
    assert against(1.04, 1, 1.0) == "1.04"
    assert against(1.0, 1, 1.0) == "1.0"
    assert against(6.25, 1, 5.3) == "6.3"  # rounding that keeps the side is kept
    assert against(None, 1, 1.0) is None


@given(
    st.decimals(min_value=-100, max_value=100, places=4, allow_nan=False),
    st.lists(st.decimals(min_value=-20, max_value=20, places=2), min_size=1, max_size=3),
    st.integers(min_value=0, max_value=2),
)
def test_against_never_moves_a_value_across_a_threshold(
    value: Decimal, thresholds: list[Decimal], digits: int
) -> None:
    shown = against(float(value), digits, *(float(t) for t in thresholds))
    assert shown is not None
    for t in thresholds:
        assert _side(Decimal(shown), t) == _side(value, t)
