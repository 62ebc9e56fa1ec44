"""cds.fhir.conditions (through Reader): Conditions and Procedures as records, by the code
lists of fhir_profiles (the codes are taken from the profiles, not written here)."""

from __future__ import annotations

import pytest

from cds.fhir.profiles import CodeList
from tests.fhir.helpers import errors, ignored, profiles, read, used
from tests.fhir_factory import condition, procedure


def _code(codes: CodeList) -> tuple[str, str]:
    entry = codes.entries[0]
    return entry.code, entry.system


def test_a_hip_fracture_is_history_even_when_resolved() -> None:
    code, system = _code(profiles().fracture_hip)
    data = read(condition(code, system, id="c", clinical="resolved", onset="2026-03-01"))
    (fx,) = data.fractures
    assert (fx.ref, fx.kind, fx.code, str(fx.when.date if fx.when else None)) == (
        "Condition/c",
        "hip",
        code,
        "2026-03-01",
    )
    assert used(data, "Condition/c") == ["hip fracture (history; clinicalStatus resolved)"]


def test_an_unconfirmed_vertebral_fracture_is_self_reported_and_others_do_not_count() -> None:
    code, system = _code(profiles().fracture_vertebral)
    data = read(condition(code, system, verification="provisional"))
    assert [fx.kind for fx in data.fractures] == ["self-reported-vertebral"]
    code, system = _code(profiles().fracture_hip)
    assert read(condition(code, system, verification="provisional")).fractures == []


@pytest.mark.parametrize("verification", ["entered-in-error", "refuted"])
def test_excluded_verification_statuses(verification: str) -> None:
    code, system = _code(profiles().fracture_hip)
    data = read(condition(code, system, id="c", verification=verification))
    assert data.fractures == []
    assert ignored(data, "Condition/c") == [f"verificationStatus {verification}"]


def test_active_conditions_the_rules_read() -> None:
    p = profiles()
    hpt, ckd = _code(p.hyperparathyroidism), _code(p.advanced_ckd)
    data = read(condition(*hpt, id="a"), condition(*ckd, id="b"))
    assert (data.hyperparathyroidism, data.advanced_ckd) == (["Condition/a"], ["Condition/b"])
    inactive = read(condition(*hpt, clinical="resolved"))
    assert inactive.hyperparathyroidism == []


def test_a_code_that_names_hypophosphatasia_only_by_its_text() -> None:
    p = profiles()
    code, system = _code(p.hypophosphatasia_if_named)
    named = read(condition(code, system, text=p.hypophosphatasia_text[0].title()))
    assert len(named.hypophosphatasia) == 1
    other = read(condition(code, system, id="c", display="Hypophosphatemia"))
    assert other.hypophosphatasia == []
    assert "not counted as hypophosphatasia" in ignored(other, "Condition/c")[0]


def test_a_bad_onset_date_is_a_warning_and_left_out() -> None:
    code, system = _code(profiles().fracture_hip)
    data = read(condition(code, system, onset="2026-13-45"))
    assert [fx.when for fx in data.fractures] == [None]
    assert [i.severity for i in data.issues] == ["warning"]


def test_a_structural_finding_procedure_by_text() -> None:
    sf = next(f for f in profiles().structural if f.text_patterns)
    data = read(procedure("00000", text=f"Procedure: {sf.text_patterns[0]}", id="p"))
    assert [f.finding for f in data.findings] == [sf.finding]


def test_a_contrast_study_needs_its_date() -> None:
    code, system = _code(profiles().contrast)
    data = read(procedure(code, system, id="p", date="2026-02-01"))
    assert [str(c.when.date) for c in data.contrast] == ["2026-02-01"]
    undated = read(procedure(code, system, id="p", date=None))
    assert undated.contrast == []
    assert [i.expression for i in errors(undated)] == ["Procedure.performed[x]"]


def test_vertebral_augmentation_is_a_vertebral_fracture() -> None:
    code, system = _code(profiles().fracture_augmentation)
    (fx,) = read(procedure(code, system)).fractures
    assert (fx.kind, fx.augmentation) == ("vertebral", True)


def test_a_procedure_not_done_is_ignored() -> None:
    code, system = _code(profiles().contrast)
    data = read(procedure(code, system, id="p", status="not-done"))
    assert ignored(data, "Procedure/p") == ["status not-done"]
