"""Every numbered statement of clinical-spec sections 2-10 at its boundary, on both sides,
through facts -> durable_rules engine -> cards (the card JSON is what is checked).

Each case names the CS id it tests; tests/clinical/test_coverage.py checks that every CS
id of sections 2-10 appears in some test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from cds.contracts.facts import Fact
from tests.clinical.helpers import (
    assess,
    cards,
    contrast,
    lumbar,
    order,
    param,
    payload,
    structural,
    vertebrae,
)

ABSENT = object()

# The cut-offs under test, read from the rules (never written here): a case at a boundary
# is the parameter itself, the case beside it the parameter plus or minus one step of the
# value's precision, so moving a threshold in rules/*.yaml moves these cases with it.
NORMAL_T = param("normal_t")
OSTEOPOROSIS_T = param("osteoporosis_t")
Z_BELOW = param("z_below_expected")
MEN_T_AGE = param("t_score_men_min_age")
DISCORDANCE_T = param("vertebral_discordance_t")
MIN_VERTEBRAE = param("min_evaluable_vertebrae")
GAP_T = param("spine_hip_discordance_t")
GAP_AGE = param("spine_hip_discordance_age")
LSC_SPINE = param("lsc_lumbar_spine_percent")
RISE_AGE = param("paradoxical_rise_age")
TBS_NORMAL_W = param("tbs_normal_min_women")
TBS_DEGRADED_W = param("tbs_degraded_max_women")
TBS_NORMAL_M = param("tbs_normal_min_men")
TBS_DEGRADED_M = param("tbs_degraded_max_men")
CONTRAST_DAYS = param("recent_contrast_days")
ALP_BELOW = param("hypophosphatasia_alp_below")
ORDER_GC_MG = param("order_glucocorticoid_mg_day")
ORDER_GC_MONTHS = param("order_glucocorticoid_months")
SCREEN_WOMEN_AGE = param("screening_women_age")
SCREEN_MEN_AGE = param("screening_men_age")
SCREEN_RISK_MEN_AGE = param("screening_risk_men_age")


def nhanes_bmd(t: float) -> float:
    """The lumbar BMD whose NHANES T-score (rule parameters, CS-3.8) is `t`, to 3 decimals."""
    mean = Decimal(str(param("nhanes_lumbar_mean_bmd")))
    sd = Decimal(str(param("nhanes_lumbar_sd")))
    return float((mean + Decimal(str(t)) * sd).quantize(Decimal("0.001")))


@dataclass
class Case:
    cs: str
    name: str
    facts: tuple[Fact, ...]
    topic: str
    expect: dict[str, Any] | None = None  # None: no card of this topic
    has: dict[str, list[str]] = field(default_factory=dict)  # list field -> must contain
    lacks: dict[str, list[str]] = field(default_factory=dict)  # list field -> must not
    hook: str = "patient-view"

    @property
    def id(self) -> str:
        return f"{self.cs} {self.name}"


def hip(t: float, **kw: Any) -> Fact:
    """Lowest T-score at the total hip (the lumbar spine normal)."""
    return assess(
        lumbar_t=0.0,
        lumbar_t_date="2026-01-15",
        lumbar_vertebrae=4,
        total_hip_t=t,
        lowest_hip_t=t,
        lowest_hip_site="total-hip",
        lowest_t=t,
        lowest_t_site="total-hip",
        **kw,
    )


def change(pct: float, significant: bool, direction: str, **kw: Any) -> Fact:
    return lumbar(
        -1.5,
        change_available=True,
        change_comparable=True,
        change_percent=pct,
        change_lsc=LSC_SPINE,
        change_significant=significant,
        change_direction=direction,
        change_old_date="2024-01-10",
        change_new_date="2026-01-15",
        change_old_bmd=1.0,
        change_new_bmd=round(1.0 * (1 + pct / 100), 3),
        therapy_between_scans=kw.pop("therapy_between_scans", False),
        **kw,
    )


def tbs(value: float, sex: str = "female", t: float = -1.5, **kw: Any) -> Fact:
    age = kw.pop("age", 60)
    return lumbar(t, tbs=value, tbs_date="2026-01-15", sex=sex, age=age, **kw)


CASES: list[Case] = [
    # ---------------------------------------------------------------- CS-2.1 score type
    Case(
        "CS-2.1",
        "postmenopausal woman uses T",
        (lumbar(-1.5),),
        "bmd-classification",
        {"scoreType": "T", "category": "low-bone-mass"},
    ),
    Case(
        "CS-2.1",
        f"man of {MEN_T_AGE} uses T",
        (lumbar(-1.5, sex="male", age=MEN_T_AGE, lowest_z=-1.0, lowest_z_site="lumbar-spine"),),
        "bmd-classification",
        {"scoreType": "T"},
    ),
    Case(
        "CS-2.1",
        f"man of {MEN_T_AGE - 1} uses Z",
        (lumbar(-1.5, sex="male", age=MEN_T_AGE - 1, lowest_z=-1.0, lowest_z_site="lumbar-spine"),),
        "bmd-classification",
        {"scoreType": "Z", "category": "within-expected-range-for-age"},
    ),
    Case(
        "CS-2.1",
        "premenopausal woman of 49 uses Z",
        (
            lumbar(
                -2.6,
                age=49,
                menopausal_status="premenopausal",
                lowest_z=-1.0,
                lowest_z_site="lumbar-spine",
            ),
        ),
        "bmd-classification",
        {"scoreType": "Z", "category": "within-expected-range-for-age"},
    ),
    Case(
        "CS-2.1",
        "girl of 19: Z wording only",
        (
            assess(
                age=19,
                menopausal_status="premenopausal",
                lowest_z=-2.1,
                lowest_z_site="lumbar-spine",
            ),
        ),
        "bmd-classification",
        {"scoreType": "Z", "category": "below-expected-range-for-age"},
    ),
    # ---------------------------------------------------------------- CS-2.2 WHO categories
    Case(
        "CS-2.2",
        f"T {NORMAL_T} is normal",
        (lumbar(NORMAL_T),),
        "bmd-classification",
        {"category": "normal", "value": NORMAL_T, "site": "lumbar-spine"},
    ),
    Case(
        "CS-2.2",
        f"T {param('normal_t', '-0.1')} is low bone mass",
        (lumbar(param("normal_t", "-0.1")),),
        "bmd-classification",
        {"category": "low-bone-mass", "value": param("normal_t", "-0.1")},
    ),
    Case(
        "CS-2.2",
        f"T {param('osteoporosis_t', '0.1')} is low bone mass",
        (lumbar(param("osteoporosis_t", "0.1")),),
        "bmd-classification",
        {"category": "low-bone-mass", "value": param("osteoporosis_t", "0.1")},
    ),
    Case(
        "CS-2.2",
        f"T {OSTEOPOROSIS_T} is osteoporosis",
        (lumbar(OSTEOPOROSIS_T),),
        "bmd-classification",
        {"category": "osteoporosis", "value": OSTEOPOROSIS_T, "indicator": "warning"},
    ),
    # ---------------------------------------------------------------- CS-2.3 Z wording
    Case(
        "CS-2.3",
        f"Z {Z_BELOW} below expected range",
        (
            assess(
                age=40,
                menopausal_status="premenopausal",
                lowest_z=Z_BELOW,
                lowest_z_site="lumbar-spine",
            ),
        ),
        "bmd-classification",
        {"category": "below-expected-range-for-age", "value": Z_BELOW},
    ),
    Case(
        "CS-2.3",
        f"Z {param('z_below_expected', '0.1')} within expected range",
        (
            assess(
                age=40,
                menopausal_status="premenopausal",
                lowest_z=param("z_below_expected", "0.1"),
                lowest_z_site="lumbar-spine",
            ),
        ),
        "bmd-classification",
        {"category": "within-expected-range-for-age", "value": param("z_below_expected", "0.1")},
    ),
    Case(
        "CS-2.3",
        "low Z with a low T is never osteoporosis",
        (
            lumbar(
                -3.0,
                age=40,
                menopausal_status="premenopausal",
                lowest_z=-2.5,
                lowest_z_site="lumbar-spine",
            ),
        ),
        "bmd-classification",
        {"category": "below-expected-range-for-age"},
    ),
    # ---------------------------------------------------------------- CS-2.4 wrong score type
    Case(
        "CS-2.4",
        "premenopausal woman with only a T-score",
        (lumbar(-2.6, age=38, menopausal_status="premenopausal"),),
        "artifact-warning",
        {},
        has={"findings": ["wrong-score-type"]},
    ),
    Case(
        "CS-2.4",
        "premenopausal woman with only a T-score is not classifiable",
        (lumbar(-2.6, age=38, menopausal_status="premenopausal"),),
        "bmd-classification",
        {"category": "not-classifiable", "scoreType": "Z"},
    ),
    Case(
        "CS-2.4",
        "postmenopausal woman with only a Z-score",
        (assess(lowest_z=-1.2, lowest_z_site="lumbar-spine"),),
        "artifact-warning",
        {},
        has={"findings": ["wrong-score-type"]},
    ),
    Case(
        "CS-2.4",
        "both scores sent: no wrong-score-type",
        (lumbar(-1.5, lowest_z=-0.5, lowest_z_site="lumbar-spine"),),
        "artifact-warning",
        None,
    ),
    # ---------------------------------------------------------------- CS-2.5 lowest site
    Case(
        "CS-2.5",
        "the hip sets the category, lumbar shown",
        (
            assess(
                lumbar_t=-0.8,
                lumbar_t_date="2026-01-15",
                lumbar_vertebrae=4,
                total_hip_t=-2.6,
                lowest_hip_t=-2.6,
                lowest_hip_site="total-hip",
                lowest_t=-2.6,
                lowest_t_site="total-hip",
                spine_hip_gap=1.8,
            ),
        ),
        "bmd-classification",
        {
            "category": "osteoporosis",
            "site": "total-hip",
            "value": -2.6,
            "detail_contains": "Lumbar spine (L1-L4) T-score -0.8 on 2026-01-15",
        },
    ),
    # ---------------------------------------------------------------- CS-2.6 one vertebra
    Case(
        "CS-2.6",
        "lumbar result on one vertebra",
        (assess(lumbar_vertebrae=1, lowest_t=-1.8, lowest_t_site="total-hip"),),
        "artifact-warning",
        {},
        has={"findings": ["insufficient-vertebrae"]},
    ),
    Case(
        "CS-2.6",
        "lumbar result on two vertebrae",
        (assess(lumbar_vertebrae=2, lowest_t=-1.8, lowest_t_site="total-hip"),),
        "artifact-warning",
        None,
    ),
    # ---------------------------------------------------------------- CS-3.1 discordance
    Case(
        "CS-3.1",
        f"adjacent difference {param('vertebral_discordance_t', '0.1')}",
        (
            lumbar(-1.5),
            vertebrae(param("vertebral_discordance_t", "0.1"), discordant_vertebra="L3"),
        ),
        "artifact-warning",
        {"summary_contains": "L3"},
        has={"findings": ["vertebral-level-discordance"]},
    ),
    Case(
        "CS-3.1",
        f"adjacent difference {DISCORDANCE_T}",
        (lumbar(-1.5), vertebrae(DISCORDANCE_T)),
        "artifact-warning",
        None,
    ),
    # ---------------------------------------------------------------- CS-3.2 evaluable
    Case(
        "CS-3.2",
        f"{MIN_VERTEBRAE - 1} evaluable vertebrae",
        (lumbar(-1.5), vertebrae(1.6, evaluable=MIN_VERTEBRAE - 1)),
        "artifact-warning",
        {},
        has={"findings": ["insufficient-vertebrae"]},
    ),
    Case(
        "CS-3.2",
        f"{MIN_VERTEBRAE} evaluable vertebrae",
        (lumbar(-1.5), vertebrae(1.6, evaluable=MIN_VERTEBRAE)),
        "artifact-warning",
        {},
        lacks={"findings": ["insufficient-vertebrae"]},
    ),
    # ---------------------------------------------------------------- CS-3.3 spine-hip
    Case(
        "CS-3.3",
        f"gap {GAP_T} at {GAP_AGE}",
        (
            assess(
                age=GAP_AGE,
                lumbar_t=-1.0,
                lowest_hip_t=-2.0,
                lowest_hip_site="total-hip",
                lowest_t=-2.0,
                lowest_t_site="total-hip",
                spine_hip_gap=GAP_T,
            ),
        ),
        "artifact-warning",
        {},
        has={"findings": ["spine-hip-discordance"]},
    ),
    Case(
        "CS-3.3",
        f"gap {param('spine_hip_discordance_t', '-0.1')} at {GAP_AGE}",
        (
            assess(
                age=GAP_AGE,
                lumbar_t=-1.1,
                lowest_hip_t=-2.0,
                lowest_hip_site="total-hip",
                lowest_t=-2.0,
                lowest_t_site="total-hip",
                spine_hip_gap=param("spine_hip_discordance_t", "-0.1"),
            ),
        ),
        "artifact-warning",
        None,
    ),
    Case(
        "CS-3.3",
        f"gap {GAP_T} at {GAP_AGE - 1} without degeneration",
        (
            assess(
                age=GAP_AGE - 1,
                lumbar_t=-1.0,
                lowest_hip_t=-2.0,
                lowest_hip_site="total-hip",
                lowest_t=-2.0,
                lowest_t_site="total-hip",
                spine_hip_gap=GAP_T,
            ),
        ),
        "artifact-warning",
        None,
    ),
    Case(
        "CS-3.3",
        f"gap {GAP_T} at {GAP_AGE - 1} with degeneration",
        (
            assess(
                age=GAP_AGE - 1,
                degenerative_spine=True,
                lumbar_t=-1.0,
                lowest_hip_t=-2.0,
                lowest_hip_site="total-hip",
                lowest_t=-2.0,
                lowest_t_site="total-hip",
                spine_hip_gap=GAP_T,
            ),
        ),
        "artifact-warning",
        {},
        has={"findings": ["spine-hip-discordance"]},
    ),
    Case(
        "CS-3.3",
        "major discordance at 55",
        (
            assess(
                age=55,
                lumbar_t=-0.5,
                lowest_hip_t=-2.6,
                lowest_hip_site="total-hip",
                lowest_t=-2.6,
                lowest_t_site="total-hip",
                spine_hip_gap=2.1,
            ),
        ),
        "artifact-warning",
        {"indicator": "warning"},
        has={"findings": ["spine-hip-discordance"]},
    ),
    # ---------------------------------------------------------------- CS-3.4 structural
    *[
        Case(
            "CS-3.4",
            f"structural {f}",
            (lumbar(-1.5), structural(f)),
            "artifact-warning",
            {},
            has={"findings": [f]},
        )
        for f in (
            "degenerative-disease",
            "dish",
            "scoliosis",
            "vertebral-fracture",
            "spinal-hardware",
            "aortic-calcification",
        )
    ],
    # ---------------------------------------------------------------- CS-3.5 contrast
    Case(
        "CS-3.5",
        f"contrast {CONTRAST_DAYS} days before",
        (lumbar(-1.5), contrast(CONTRAST_DAYS)),
        "artifact-warning",
        {},
        has={"findings": ["recent-contrast"]},
    ),
    Case(
        "CS-3.5",
        f"contrast {CONTRAST_DAYS + 1} days before",
        (lumbar(-1.5), contrast(CONTRAST_DAYS + 1)),
        "artifact-warning",
        None,
    ),
    Case(
        "CS-3.5", "contrast after the scan", (lumbar(-1.5), contrast(-1)), "artifact-warning", None
    ),
    # ---------------------------------------------------------------- CS-3.6 hypophosphatasia
    Case(
        "CS-3.6",
        f"ALP {ALP_BELOW - 1} U/L off antiresorptives: possible hypophosphatasia (info)",
        (
            lumbar(
                -1.5,
                untreated_alkaline_phosphatase=float(ALP_BELOW - 1),
                untreated_alkaline_phosphatase_date="2026-01-05",
            ),
        ),
        "artifact-warning",
        {"indicator": "info"},
        has={"findings": ["possible-hypophosphatasia"]},
        lacks={"findings": ["hypophosphatasia"]},
    ),
    Case(
        "CS-3.6",
        f"ALP {ALP_BELOW} U/L",
        (lumbar(-1.5, untreated_alkaline_phosphatase=float(ALP_BELOW)),),
        "artifact-warning",
        None,
    ),
    Case(
        "CS-3.6",
        f"ALP {ALP_BELOW - 10} U/L measured on therapy is not used",
        (lumbar(-1.5, alkaline_phosphatase=float(ALP_BELOW - 10)),),
        "artifact-warning",
        None,
    ),
    Case(
        "CS-3.6",
        "hypophosphatasia condition",
        (lumbar(-1.5, hypophosphatasia_condition=True),),
        "artifact-warning",
        {},
        has={"findings": ["hypophosphatasia"]},
    ),
    # ---------------------------------------------------------------- CS-3.7 paradoxical rise
    Case(
        "CS-3.7",
        f"untreated rise at the LSC at {RISE_AGE}",
        (change(LSC_SPINE, True, "gain", age=RISE_AGE),),
        "artifact-warning",
        {},
        has={"findings": ["paradoxical-rise"]},
    ),
    Case(
        "CS-3.7",
        f"untreated rise at {RISE_AGE - 1}",
        (change(LSC_SPINE, True, "gain", age=RISE_AGE - 1),),
        "artifact-warning",
        None,
    ),
    Case(
        "CS-3.7",
        "rise on therapy at 70",
        (change(6.0, True, "gain", age=70, therapy_between_scans=True),),
        "artifact-warning",
        None,
    ),
    Case(
        "CS-3.7",
        "untreated rise below the LSC",
        (change(param("lsc_lumbar_spine_percent", "-0.1"), False, "stable", age=RISE_AGE),),
        "artifact-warning",
        None,
    ),
    # ---------------------------------------------------------------- CS-3.8 reference shift
    # The NHANES T-score is set at the category cut-offs (osteoporosis, normal) and one
    # step of its two decimals beside them; the BMD shown is the one that recomputes to it.
    Case(
        "CS-3.8",
        "Hologic, reported low bone mass vs NHANES at the osteoporosis cut-off",
        (
            lumbar(
                param("osteoporosis_t", "0.2"),
                lumbar_bmd=nhanes_bmd(OSTEOPOROSIS_T),
                manufacturer="hologic",
                nhanes_lumbar_t=OSTEOPOROSIS_T,
            ),
        ),
        "artifact-warning",
        {"indicator": "info", "summary_contains": f"{Decimal(str(OSTEOPOROSIS_T)):.2f}"},
        has={"findings": ["reference-shift"]},
    ),
    Case(
        "CS-3.8",
        "NHANES agrees (both at the normal cut-off)",
        (
            lumbar(
                NORMAL_T,
                lumbar_bmd=nhanes_bmd(NORMAL_T),
                manufacturer="hologic",
                nhanes_lumbar_t=NORMAL_T,
            ),
        ),
        "artifact-warning",
        None,
    ),
    Case(
        "CS-3.8",
        "unknown manufacturer is stated as assumed (NHANES one step below normal)",
        (
            lumbar(
                param("normal_t", "0.1"),
                lumbar_bmd=nhanes_bmd(param("normal_t", "-0.01")),
                manufacturer="unknown",
                manufacturer_assumed=True,
                nhanes_lumbar_t=param("normal_t", "-0.01"),
            ),
        ),
        "artifact-warning",
        {"detail_contains": "treated as Hologic"},
        has={"findings": ["reference-shift"]},
    ),
    Case(
        "CS-3.8",
        "never for GE Lunar",
        (
            lumbar(
                param("osteoporosis_t", "0.2"),
                lumbar_bmd=nhanes_bmd(OSTEOPOROSIS_T),
                manufacturer="ge-lunar",
                nhanes_lumbar_t=OSTEOPOROSIS_T,
            ),
        ),
        "artifact-warning",
        None,
    ),
    # ---------------------------------------------------------------- CS-4 change
    Case(
        "CS-4.1",
        "percent change of BMD is reported",
        (change(-3.3, False, "stable"),),
        "bmd-change",
        {
            "comparable": True,
            "percentChange": -3.3,
            "lsc": LSC_SPINE,
            "significant": False,
            "direction": "stable",
        },
    ),
    Case(
        "CS-4.2",
        "loss exactly at the LSC counts",
        (change(-LSC_SPINE, True, "loss"),),
        "bmd-change",
        {"significant": True, "direction": "loss", "indicator": "warning"},
    ),
    Case(
        "CS-4.2",
        "loss just below the LSC",
        (change(-param("lsc_lumbar_spine_percent", "-0.1"), False, "stable"),),
        "bmd-change",
        {"significant": False, "direction": "stable", "indicator": "info"},
    ),
    Case(
        "CS-4.2",
        "gain exactly at the LSC",
        (change(LSC_SPINE, True, "gain"),),
        "bmd-change",
        {"significant": True, "direction": "gain"},
    ),
    Case(
        "CS-4.3",
        "different scanners",
        (
            lumbar(
                -1.5,
                change_available=True,
                change_comparable=False,
                change_reason="different scanners",
            ),
        ),
        "bmd-change",
        {"comparable": False, "lsc": LSC_SPINE, "percentChange": ABSENT, "significant": ABSENT},
    ),
    Case(
        "CS-4.3",
        "scanner unknown",
        (lumbar(-1.5, change_available=True),),
        "bmd-change",
        {"comparable": False},
    ),
    Case(
        "CS-4.4",
        "significant loss on therapy",
        (change(-6.0, True, "loss", significant_loss_on_therapy=True, therapy_between_scans=True),),
        "bmd-change",
        {"direction": "loss", "indicator": "warning", "detail_contains": "adherence"},
    ),
    # ---------------------------------------------------------------- CS-5 TBS
    Case(
        "CS-5.1",
        f"TBS {TBS_NORMAL_W} normal",
        (tbs(TBS_NORMAL_W),),
        "tbs",
        {"tbsCategory": "normal"},
    ),
    Case(
        "CS-5.1",
        f"TBS {param('tbs_normal_min_women', '-0.001')} partially degraded",
        (tbs(param("tbs_normal_min_women", "-0.001")),),
        "tbs",
        {"tbsCategory": "partially-degraded"},
    ),
    Case(
        "CS-5.1",
        f"TBS {param('tbs_degraded_max_women', '0.001')} partially degraded",
        (tbs(param("tbs_degraded_max_women", "0.001")),),
        "tbs",
        {"tbsCategory": "partially-degraded"},
    ),
    Case(
        "CS-5.1",
        f"TBS {TBS_DEGRADED_W} degraded",
        (tbs(TBS_DEGRADED_W, t=-0.5),),
        "tbs",
        {"tbsCategory": "degraded"},
    ),
    Case(
        "CS-5.1",
        f"man TBS {TBS_NORMAL_M} normal",
        (tbs(TBS_NORMAL_M, sex="male"),),
        "tbs",
        {"tbsCategory": "normal"},
    ),
    Case(
        "CS-5.1",
        f"man TBS {param('tbs_normal_min_men', '-0.001')} partially degraded",
        (tbs(param("tbs_normal_min_men", "-0.001"), sex="male"),),
        "tbs",
        {"tbsCategory": "partially-degraded"},
    ),
    Case(
        "CS-5.1",
        f"man TBS {param('tbs_degraded_max_men', '0.001')} partially degraded",
        (tbs(param("tbs_degraded_max_men", "0.001"), sex="male"),),
        "tbs",
        {"tbsCategory": "partially-degraded"},
    ),
    Case(
        "CS-5.1",
        f"man TBS {TBS_DEGRADED_M} degraded",
        (tbs(TBS_DEGRADED_M, sex="male", t=-0.5),),
        "tbs",
        {"tbsCategory": "degraded"},
    ),
    Case(
        "CS-5.1",
        "man under 50: no TBS category",
        (tbs(1.100, sex="male", age=45, lowest_z=-1.0, lowest_z_site="lumbar-spine"),),
        "tbs",
        None,
    ),
    Case(
        "CS-5.2",
        "low bone mass with degraded TBS",
        (tbs(param("tbs_degraded_max_women", "-0.020"), t=-2.0),),
        "tbs",
        {"tbsCategory": "degraded", "summary_contains": "TBS-adjusted FRAX"},
    ),
    Case(
        "CS-5.2",
        f"low bone mass with TBS {param('tbs_degraded_max_women', '0.001')}",
        (tbs(param("tbs_degraded_max_women", "0.001"), t=-2.0),),
        "tbs",
        {"tbsCategory": "partially-degraded"},
    ),
    Case(
        "CS-5.3",
        "TBS value kept to three decimals",
        (tbs(1.2, t=-0.5),),
        "tbs",
        {"value": 1.2, "summary_contains": "1.200"},
    ),
    # ---------------------------------------------------------------- CS-6 workup
    Case(
        "CS-6.1",
        "T -1.1 triggers the secondary-cause labs",
        (lumbar(-1.1),),
        "workup",
        {},
        has={"items": ["secondary-cause-labs"]},
    ),
    Case("CS-6.1", "T -1.0 triggers nothing", (lumbar(-1.0),), "workup", None),
    Case(
        "CS-6.1",
        "Z -2.0 triggers the labs",
        (
            assess(
                age=40,
                menopausal_status="premenopausal",
                lowest_z=-2.0,
                lowest_z_site="lumbar-spine",
            ),
        ),
        "workup",
        {"detail_contains": "full secondary-cause search"},
        has={"items": ["secondary-cause-labs"]},
        lacks={"items": ["treatment-discussion", "cardiovascular-risk"]},
    ),
    Case(
        "CS-6.1",
        "Z -1.9 triggers nothing",
        (
            assess(
                age=40,
                menopausal_status="premenopausal",
                lowest_z=-1.9,
                lowest_z_site="lumbar-spine",
            ),
        ),
        "workup",
        None,
    ),
    Case(
        "CS-6.1",
        "men: testosterone",
        (lumbar(-1.5, sex="male", age=60),),
        "workup",
        {"suggestion_label": "Order total testosterone"},
    ),
    Case(
        "CS-6.2",
        "FRAX for low bone mass",
        (lumbar(-1.1),),
        "workup",
        {},
        has={"items": ["fracture-risk-assessment"]},
    ),
    Case(
        "CS-6.3",
        "woman 70 with T -1.1",
        (lumbar(-1.1, age=70),),
        "workup",
        {},
        has={"items": ["vertebral-imaging"]},
    ),
    Case(
        "CS-6.3",
        "woman 69 with T -2.0",
        (lumbar(-2.0, age=69),),
        "workup",
        {},
        lacks={"items": ["vertebral-imaging"]},
    ),
    Case(
        "CS-6.3",
        "man 80 with T -1.5",
        (lumbar(-1.5, sex="male", age=80),),
        "workup",
        {},
        has={"items": ["vertebral-imaging"]},
    ),
    Case(
        "CS-6.3",
        "man 79 with T -1.5",
        (lumbar(-1.5, sex="male", age=79),),
        "workup",
        {},
        lacks={"items": ["vertebral-imaging"]},
    ),
    Case(
        "CS-6.3",
        "height loss 4.1 cm",
        (lumbar(-1.5, height_loss_cm=4.1),),
        "workup",
        {},
        has={"items": ["vertebral-imaging"]},
    ),
    Case(
        "CS-6.3",
        "height loss 4.0 cm",
        (lumbar(-1.5, height_loss_cm=4.0),),
        "workup",
        {},
        lacks={"items": ["vertebral-imaging"]},
    ),
    Case(
        "CS-6.3",
        "self-reported vertebral fracture",
        (lumbar(-1.5, self_reported_vertebral_fracture=True),),
        "workup",
        {},
        has={"items": ["vertebral-imaging"]},
    ),
    Case(
        "CS-6.3",
        "prednisone 5 mg for 3 months",
        (lumbar(-1.5, glucocorticoid_mg_day=5.0, glucocorticoid_months=3.0),),
        "workup",
        {},
        has={"items": ["vertebral-imaging"]},
    ),
    Case(
        "CS-6.3",
        "prednisone 4.9 mg for a year",
        (lumbar(-1.5, glucocorticoid_mg_day=4.9, glucocorticoid_months=12.0),),
        "workup",
        {},
        lacks={"items": ["vertebral-imaging"]},
    ),
    Case("CS-6.3", "woman 75 with T -1.0: no imaging", (lumbar(-1.0, age=75),), "workup", None),
    Case(
        "CS-6.4",
        f"T {OSTEOPOROSIS_T} treatment discussion",
        (lumbar(OSTEOPOROSIS_T),),
        "workup",
        {},
        has={"items": ["treatment-discussion"]},
        lacks={"items": ["anabolic-first"]},
    ),
    Case(
        "CS-6.4",
        "T -2.4 no treatment discussion",
        (lumbar(-2.4),),
        "workup",
        {},
        lacks={"items": ["treatment-discussion"]},
    ),
    Case(
        "CS-6.4",
        "hip or vertebral fracture with T -1.5",
        (lumbar(-1.5, fragility_fracture=True, hip_or_vertebral_fracture=True),),
        "workup",
        {},
        has={"items": ["treatment-discussion"]},
    ),
    Case(
        "CS-6.4",
        "T -3.1 anabolic first",
        (lumbar(-3.1),),
        "workup",
        {},
        has={"items": ["anabolic-first", "treatment-discussion"]},
    ),
    Case(
        "CS-6.4",
        "T -3.0 not anabolic first by itself",
        (lumbar(-3.0),),
        "workup",
        {},
        lacks={"items": ["anabolic-first"]},
    ),
    Case(
        "CS-6.4",
        "vertebral fracture within 12 months",
        (
            lumbar(
                -2.0,
                fragility_fracture=True,
                hip_or_vertebral_fracture=True,
                fracture_within_12_months=True,
            ),
        ),
        "workup",
        {},
        has={"items": ["anabolic-first"]},
    ),
    Case(
        "CS-6.4",
        "fracture on therapy with T -2.6",
        (lumbar(-2.6, fragility_fracture=True, fracture_on_therapy=True),),
        "workup",
        {},
        has={"items": ["anabolic-first"]},
    ),
    Case(
        "CS-6.4",
        "multiple fractures with T -2.6",
        (lumbar(-2.6, fragility_fracture=True, multiple_fractures=True),),
        "workup",
        {},
        has={"items": ["anabolic-first"]},
    ),
    Case(
        "CS-6.5",
        "bone-health measures",
        (lumbar(-1.1),),
        "workup",
        {"detail_contains": "1000-1200 mg/day"},
        has={"items": ["fall-risk", "calcium-vitamin-d", "exercise", "lifestyle"]},
    ),
    Case(
        "CS-6.6",
        f"T {OSTEOPOROSIS_T} cardiovascular risk",
        (lumbar(OSTEOPOROSIS_T),),
        "workup",
        {},
        has={"items": ["cardiovascular-risk"]},
    ),
    Case(
        "CS-6.6",
        "T -2.4 no cardiovascular risk",
        (lumbar(-2.4),),
        "workup",
        {},
        lacks={"items": ["cardiovascular-risk"]},
    ),
    Case(
        "CS-6.7",
        "low ALP: evaluate hypophosphatasia",
        (lumbar(-2.6, untreated_alkaline_phosphatase=22.0),),
        "workup",
        {},
        has={"items": ["hypophosphatasia-evaluation"]},
    ),
    Case(
        "CS-6.7",
        f"ALP {ALP_BELOW}: no evaluation",
        (lumbar(-2.6, untreated_alkaline_phosphatase=float(ALP_BELOW)),),
        "workup",
        {},
        lacks={"items": ["hypophosphatasia-evaluation"]},
    ),
    # ---------------------------------------------------------------- CS-7 rescan
    Case(
        "CS-7.1",
        "teriparatide 11 months ago",
        (lumbar(-3.3, anabolic_started_months_ago=11, therapy_started_months_ago=11),),
        "rescan-interval",
        {
            "basis": "anabolic-start",
            "minMonths": 12,
            "maxMonths": 12,
            "dueFrom": "2027-01-15",
            "dueTo": "2027-01-15",
        },
    ),
    Case(
        "CS-7.1",
        "teriparatide 12 months ago",
        (lumbar(-3.3, anabolic_started_months_ago=12, therapy_started_months_ago=12),),
        "rescan-interval",
        {"basis": "routine"},
    ),
    Case(
        "CS-7.2",
        "loss on therapy",
        (lumbar(-2.0, significant_loss_on_therapy=True),),
        "rescan-interval",
        {"basis": "loss-on-therapy", "minMonths": 12, "maxMonths": 12},
    ),
    Case(
        "CS-7.3",
        "prednisone 2.5 mg for 3 months",
        (lumbar(-1.6, glucocorticoid_mg_day=2.5, glucocorticoid_months=3.0),),
        "rescan-interval",
        {
            "basis": "glucocorticoid",
            "minMonths": 12,
            "maxMonths": 24,
            "dueFrom": "2027-01-15",
            "dueTo": "2028-01-15",
        },
    ),
    Case(
        "CS-7.3",
        "prednisone 2.4 mg",
        (lumbar(-1.6, glucocorticoid_mg_day=2.4, glucocorticoid_months=6.0),),
        "rescan-interval",
        {"basis": "routine"},
    ),
    Case(
        "CS-7.4",
        "therapy started 11 months ago",
        (lumbar(-2.0, therapy_started_months_ago=11),),
        "rescan-interval",
        {"basis": "treatment-start", "minMonths": 12, "maxMonths": 24},
    ),
    Case(
        "CS-7.4",
        "therapy started 12 months ago",
        (lumbar(-2.0, therapy_started_months_ago=12),),
        "rescan-interval",
        {"basis": "routine"},
    ),
    Case(
        "CS-7.5",
        "alendronate 12 months",
        (
            lumbar(
                -2.0,
                antiresorptive_current=True,
                antiresorptive_months=12,
                therapy_started_months_ago=12,
            ),
        ),
        "rescan-interval",
        {
            "basis": "stable-antiresorptive",
            "minMonths": 24,
            "maxMonths": 36,
            "dueFrom": "2028-01-15",
            "dueTo": "2029-01-15",
        },
    ),
    Case(
        "CS-7.5",
        "alendronate 11 months is a start",
        (
            lumbar(
                -2.0,
                antiresorptive_current=True,
                antiresorptive_months=11,
                therapy_started_months_ago=11,
            ),
        ),
        "rescan-interval",
        {"basis": "treatment-start"},
    ),
    Case(
        "CS-7.6",
        "woman 67 untreated, hip -1.4",
        (hip(-1.4, age=67),),
        "rescan-interval",
        {
            "basis": "untreated-hip-band",
            "minMonths": 120,
            "maxMonths": 180,
            "dueFrom": "2036-01-15",
            "dueTo": "2041-01-15",
        },
    ),
    Case(
        "CS-7.6",
        "woman 67 untreated, hip -1.5",
        (hip(-1.5, age=67),),
        "rescan-interval",
        {"basis": "untreated-hip-band", "minMonths": 60, "maxMonths": 60},
    ),
    Case(
        "CS-7.6",
        "woman 67 untreated, hip -1.9",
        (hip(-1.9, age=67),),
        "rescan-interval",
        {"basis": "untreated-hip-band", "minMonths": 60},
    ),
    Case(
        "CS-7.6",
        "woman 67 untreated, hip -2.0",
        (hip(-2.0, age=67),),
        "rescan-interval",
        {"basis": "untreated-hip-band", "minMonths": 12, "maxMonths": 12},
    ),
    Case(
        "CS-7.6",
        "woman 67 untreated, hip -2.4",
        (hip(-2.4, age=67),),
        "rescan-interval",
        {"basis": "untreated-hip-band", "minMonths": 12},
    ),
    Case(
        "CS-7.6",
        "woman 67 untreated, hip -2.5 is routine",
        (hip(-2.5, age=67),),
        "rescan-interval",
        {"basis": "routine", "minMonths": 24},
    ),
    Case(
        "CS-7.6",
        "woman 66 is routine",
        (hip(-1.4, age=66),),
        "rescan-interval",
        {"basis": "routine", "minMonths": 24},
    ),
    Case(
        "CS-7.6",
        "fracture excludes the bands",
        (hip(-1.4, age=70, fragility_fracture=True),),
        "rescan-interval",
        {"basis": "routine"},
    ),
    Case(
        "CS-7.6",
        "treated woman excluded",
        (hip(-1.4, age=70, bone_therapy_ever=True),),
        "rescan-interval",
        {"basis": "routine"},
    ),
    Case(
        "CS-7.7",
        "routine low bone mass 24 months",
        (lumbar(-1.1),),
        "rescan-interval",
        {"basis": "routine", "minMonths": 24, "maxMonths": 24, "dueFrom": "2028-01-15"},
    ),
    Case(
        "CS-7.7",
        "routine normal 60 months",
        (lumbar(-1.0),),
        "rescan-interval",
        {"basis": "routine", "minMonths": 60, "maxMonths": 60, "dueTo": "2031-01-15"},
    ),
    Case(
        "CS-7.8",
        "every row's window comes from parameters",
        (lumbar(-2.0),),
        "rescan-interval",
        {"suggestion_occurrence": {"start": "2028-01-15", "end": "2028-01-15"}},
    ),
    # ---------------------------------------------------------------- CS-8 order timing
    Case(
        "CS-8.1",
        "draft DXA order gets a timing card",
        (lumbar(-1.5), order(25)),
        "dxa-order-timing",
        {"tooSoon": False, "exception": None},
        hook="order-select",
    ),
    Case(
        "CS-8.2",
        "22 months is too soon",
        (lumbar(-1.5), order(22)),
        "dxa-order-timing",
        {
            "tooSoon": True,
            "earliestDate": "2027-08-22",
            "indicator": "warning",
            "exception": None,  # the contract: a code or null
        },
        hook="order-sign",
    ),
    Case(
        "CS-8.2",
        "23 months is not",
        (lumbar(-1.5), order(23)),
        "dxa-order-timing",
        {"tooSoon": False, "indicator": "info"},
        hook="order-sign",
    ),
    Case(
        "CS-8.2",
        f"glucocorticoid {ORDER_GC_MG} mg for {param('order_glucocorticoid_months', '0.1')} months",
        (
            lumbar(-1.5),
            order(
                10,
                glucocorticoid_mg_day=float(ORDER_GC_MG),
                glucocorticoid_months=float(param("order_glucocorticoid_months", "0.1")),
            ),
        ),
        "dxa-order-timing",
        {"tooSoon": False, "exception": "glucocorticoid", "indicator": "info"},
        hook="order-sign",
    ),
    Case(
        "CS-8.2",
        f"glucocorticoid {ORDER_GC_MG} mg for exactly {ORDER_GC_MONTHS} months is too soon",
        (
            lumbar(-1.5),
            order(
                10,
                glucocorticoid_mg_day=float(ORDER_GC_MG),
                glucocorticoid_months=float(ORDER_GC_MONTHS),
            ),
        ),
        "dxa-order-timing",
        {"tooSoon": True},
        hook="order-sign",
    ),
    Case(
        "CS-8.2",
        "primary hyperparathyroidism",
        (lumbar(-1.5), order(12, primary_hyperparathyroidism=True)),
        "dxa-order-timing",
        {"tooSoon": False, "exception": "primary-hyperparathyroidism"},
        hook="order-sign",
    ),
    Case(
        "CS-8.2",
        "anabolic monitoring",
        (lumbar(-1.5), order(12, anabolic_started_months_ago=6)),
        "dxa-order-timing",
        {"tooSoon": False, "exception": "anabolic-start"},
        hook="order-sign",
    ),
    Case(
        "CS-8.2",
        "loss on therapy",
        (lumbar(-1.5), order(12, significant_loss_on_therapy=True)),
        "dxa-order-timing",
        {"tooSoon": False, "exception": "loss-on-therapy"},
        hook="order-sign",
    ),
    Case(
        "CS-8.3",
        "the previous scanner is named",
        (lumbar(-1.5), order(25)),
        "dxa-order-timing",
        {"detail_contains": "Hologic Horizon A (Device/dxa1)"},
        hook="order-select",
    ),
    Case(
        "CS-8.3",
        "too soon: re-order suggestion names the scanner",
        (lumbar(-1.5), order(14)),
        "dxa-order-timing",
        {"suggestion_note_contains": "Hologic Horizon A"},
        hook="order-select",
    ),
    # ---------------------------------------------------------------- CS-9 therapy safety
    Case(
        "CS-9.1",
        "denosumab overdue (more than 7 calendar months)",
        (
            lumbar(
                -2.0,
                denosumab_used=True,
                denosumab_overdue=True,
                denosumab_last_dose_date="2026-04-26",
            ),
        ),
        "therapy-safety",
        {"indicator": "critical"},
        has={"findings": ["denosumab-discontinuation"]},
    ),
    Case(
        "CS-9.1",
        "denosumab not yet overdue",
        (
            lumbar(
                -2.0,
                denosumab_used=True,
                denosumab_overdue=False,
                denosumab_last_dose_date="2026-04-27",
            ),
        ),
        "therapy-safety",
        None,
    ),
    Case(
        "CS-9.1",
        "denosumab overdue since yesterday",
        (
            lumbar(
                -2.0,
                denosumab_used=True,
                denosumab_overdue=True,
                denosumab_last_dose_date="2026-04-24",
            ),
        ),
        "therapy-safety",
        {"indicator": "critical"},
    ),
    Case(
        "CS-9.1",
        "denosumab 9 months ago, bisphosphonate since",
        (
            lumbar(
                -2.0,
                denosumab_used=True,
                denosumab_overdue=True,
                denosumab_last_dose_date="2026-02-20",
                bisphosphonate_after_denosumab=True,
            ),
        ),
        "therapy-safety",
        None,
    ),
    Case(
        "CS-9.2",
        "oral bisphosphonate 5.0 years, not high risk",
        (hip(-2.0, bisphosphonate_review_open=True, oral_bisphosphonate_years=5.0),),
        "therapy-safety",
        {"indicator": "info", "summary_contains": "drug holiday"},
        has={"findings": ["bisphosphonate-holiday-review"]},
    ),
    Case(
        "CS-9.2",
        "oral bisphosphonate 4.9 years",
        (hip(-2.0, bisphosphonate_review_open=True, oral_bisphosphonate_years=4.9),),
        "therapy-safety",
        None,
    ),
    Case(
        "CS-9.2",
        "oral 6 years with hip -2.5: continue",
        (hip(-2.5, bisphosphonate_review_open=True, oral_bisphosphonate_years=6.2),),
        "therapy-safety",
        {"summary_contains": "continue"},
        has={"findings": ["bisphosphonate-holiday-review"]},
    ),
    Case(
        "CS-9.2",
        "IV zoledronic 3.0 years",
        (hip(-2.0, bisphosphonate_review_open=True, iv_bisphosphonate_years=3.0),),
        "therapy-safety",
        {},
        has={"findings": ["bisphosphonate-holiday-review"]},
    ),
    Case(
        "CS-9.2",
        "IV zoledronic 2.9 years",
        (hip(-2.0, bisphosphonate_review_open=True, iv_bisphosphonate_years=2.9),),
        "therapy-safety",
        None,
    ),
    Case(
        "CS-9.3",
        "alendronate with hypophosphatasia on record",
        (lumbar(-2.0, antiresorptive_current=True, hypophosphatasia_condition=True),),
        "therapy-safety",
        {},
        has={"findings": ["antiresorptive-with-hypophosphatasia"]},
    ),
    Case(
        "CS-9.3",
        "alendronate with a low ALP but no diagnosis (CS-3.6 rev 2)",
        (lumbar(-2.0, antiresorptive_current=True, alkaline_phosphatase=float(ALP_BELOW - 10)),),
        "therapy-safety",
        None,
    ),
    # ---------------------------------------------------------------- CS-10 screening
    Case(
        "CS-10.1",
        f"woman {SCREEN_WOMEN_AGE} without DXA",
        (assess(age=SCREEN_WOMEN_AGE, has_dxa=False, last_dxa_date=None),),
        "screening",
        {"indicator": "info", "reason_contains": str(SCREEN_WOMEN_AGE)},
    ),
    Case(
        "CS-10.1",
        f"woman {SCREEN_WOMEN_AGE - 1} without DXA",
        (assess(age=SCREEN_WOMEN_AGE - 1, has_dxa=False, last_dxa_date=None),),
        "screening",
        None,
    ),
    Case(
        "CS-10.1",
        f"man {SCREEN_MEN_AGE} without DXA",
        (assess(age=SCREEN_MEN_AGE, sex="male", has_dxa=False, last_dxa_date=None),),
        "screening",
        {},
    ),
    Case(
        "CS-10.1",
        f"man {SCREEN_MEN_AGE - 1} without DXA",
        (assess(age=SCREEN_MEN_AGE - 1, sex="male", has_dxa=False, last_dxa_date=None),),
        "screening",
        None,
    ),
    Case(
        "CS-10.1",
        "postmenopausal woman 55 with a fracture",
        (assess(age=55, has_dxa=False, last_dxa_date=None, fragility_fracture=True),),
        "screening",
        {"reason_contains": "fracture"},
    ),
    Case(
        "CS-10.1",
        f"man {SCREEN_RISK_MEN_AGE} on glucocorticoids 3 months",
        (
            assess(
                age=SCREEN_RISK_MEN_AGE,
                sex="male",
                has_dxa=False,
                last_dxa_date=None,
                glucocorticoid_months=3.0,
                glucocorticoid_mg_day=5.0,
            ),
        ),
        "screening",
        {"reason_contains": "glucocorticoid"},
    ),
    Case(
        "CS-10.1",
        f"man {SCREEN_RISK_MEN_AGE - 1} on glucocorticoids",
        (
            assess(
                age=SCREEN_RISK_MEN_AGE - 1,
                sex="male",
                has_dxa=False,
                last_dxa_date=None,
                glucocorticoid_months=6.0,
                glucocorticoid_mg_day=5.0,
            ),
        ),
        "screening",
        None,
    ),
    Case(
        "CS-10.1", "woman 70 with a DXA: no screening", (lumbar(-1.0, age=70),), "screening", None
    ),
]


def _check(case: Case) -> None:
    got = cards(*case.facts, hook=case.hook)
    if case.expect is None:
        assert case.topic not in got, f"unexpected {case.topic} card: {got[case.topic]['summary']}"
        return
    assert case.topic in got, f"no {case.topic} card; got {sorted(got)}"
    card = got[case.topic]
    data = payload(card)
    for key, want in case.expect.items():
        if key == "indicator":
            assert card["indicator"] == want
        elif key == "summary_contains":
            assert want in card["summary"], card["summary"]
        elif key == "detail_contains":
            assert want in card["detail"], card["detail"]
        elif key == "reason_contains":
            assert want in data["reason"], data["reason"]
        elif key == "suggestion_label":
            assert want in [s["label"] for s in card.get("suggestions", [])]
        elif key == "suggestion_occurrence":
            periods = [
                a["resource"].get("occurrencePeriod")
                for s in card["suggestions"]
                for a in s.get("actions", [])
            ]
            assert want in periods, periods
        elif key == "suggestion_note_contains":
            notes = [
                n["text"]
                for s in card["suggestions"]
                for a in s.get("actions", [])
                for n in a["resource"].get("note", [])
            ]
            assert any(want in n for n in notes), notes
        elif want is ABSENT:
            assert key not in data, f"{key} should be absent: {data[key]!r}"
        elif want is None:  # present and null (the contract's "code or null")
            assert key in data, f"{key} should be present and null"
            assert data[key] is None, f"{key}: {data[key]!r} != None"
        else:
            assert data.get(key) == want, f"{key}: {data.get(key)!r} != {want!r}"
    for name, values in case.has.items():
        for value in values:
            assert value in data.get(name, []), f"{value} not in {name} {data.get(name)}"
    for name, values in case.lacks.items():
        for value in values:
            assert value not in data.get(name, []), f"{value} in {name} {data.get(name)}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_clinical_boundary(case: Case) -> None:
    _check(case)


def test_the_boundary_checker_can_fail() -> None:
    wrong = Case(
        "CS-2.2",
        "T -1.0 claimed low bone mass",
        (lumbar(-1.0),),
        "bmd-classification",
        {"category": "low-bone-mass"},
    )
    with pytest.raises(AssertionError):
        _check(wrong)
    absent = Case("CS-2.2", "claims no card", (lumbar(-1.0),), "bmd-classification", None)
    with pytest.raises(AssertionError):
        _check(absent)
