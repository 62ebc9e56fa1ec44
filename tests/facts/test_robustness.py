"""Never raise on data: shuffled input, junk in any field, Bundles, nulls, OperationOutcomes,
duplicates, unknown types, parameters, the OperationOutcome shape, full FHIR validation."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.facts import ParameterError, build_facts
from tests.facts.helpers import assessment, errors, ignored, run
from tests.fhir_factory import (
    AS_OF,
    PARAMS,
    alp,
    bundle,
    condition,
    device,
    draft_dxa,
    height,
    hip_t,
    lumbar_bmd,
    lumbar_t,
    med_admin,
    med_request,
    med_statement,
    neck_t,
    patient,
    procedure,
    tbs,
    vertebra_t,
)


def rich_patient() -> list[dict[str, Any]]:
    return [
        patient(),
        device("d1"),
        lumbar_t(-2.1, device="d1"),
        lumbar_bmd(0.812, device="d1"),
        lumbar_bmd(0.860, device="d1", date="2024-01-05"),
        hip_t(-1.4, side="left"),
        hip_t(-1.6, side="right"),
        neck_t(-1.9),
        vertebra_t("L1", -1.0),
        vertebra_t("L2", -2.6),
        vertebra_t("L3", -1.1),
        vertebra_t("L4", -1.2),
        tbs(1.25),
        alp(28),
        height(165, date="2000-01-01"),
        height(160.5),
        condition("M47.816"),
        condition("S32.010A", onset="2026-02-01"),
        med_statement("prednisone", dose_mg=5, start="2026-06-01"),
        med_statement("alendronate", start="2021-01-01"),
        med_admin("denosumab", date="2025-01-01"),
        med_request("teriparatide", authored="2026-03-01"),
        procedure("74240", date="2026-01-06"),
        procedure("22514", date="2019-01-06"),
    ]


def dump(fs: Any) -> Any:
    return (
        [f.model_dump() for f in fs.facts],
        [i.model_dump() for i in fs.issues],
        fs.trace.model_dump(),
    )


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_input_gives_identical_facts_issues_and_trace(seed: int) -> None:
    base = [*rich_patient(), lumbar_t(-2.0, id="bad", unit="%")]
    expected = dump(build_facts(base, PARAMS, AS_OF, draft_orders=[draft_dxa()]))
    shuffled = list(base)
    random.Random(seed).shuffle(shuffled)
    # also split across nested Bundles
    mixed = [
        bundle(*shuffled[:7]),
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": bundle(*shuffled[7:15])}],
        },
        *shuffled[15:],
    ]
    got = dump(build_facts(mixed, PARAMS, AS_OF, draft_orders=[draft_dxa()]))
    assert got == expected


def test_null_and_operation_outcome_are_no_data_with_a_trace_entry() -> None:
    oo = {
        "resourceType": "OperationOutcome",
        "id": "oo1",
        "issue": [{"severity": "error", "code": "not-found", "diagnostics": "no access"}],
    }
    fs = build_facts([patient(), None, oo, bundle(oo)], PARAMS, AS_OF)
    assert assessment(fs).has_dxa is False
    assert not fs.issues
    reasons = [i.reason for i in fs.trace.ignored]
    assert "no data (null)" in reasons
    assert any("OperationOutcome: no access" in r for r in reasons)


def test_unsupported_resource_type_is_ignored() -> None:
    fs = run({"resourceType": "Encounter", "id": "e1"})
    assert ignored(fs)["Encounter/e1"] == "resource type Encounter is not read"


def test_non_object_input_is_a_data_error() -> None:
    fs = build_facts([patient(), "Observation/1", 42, {"foo": 1}], PARAMS, AS_OF)
    assert len(errors(fs)) == 3
    assert assessment(fs).age == 71


def test_duplicates_keep_one_copy_whatever_the_order() -> None:
    old = lumbar_t(-1.0, id="o1", meta={"lastUpdated": "2026-01-01T00:00:00Z"})
    new = lumbar_t(-2.0, id="o1", meta={"lastUpdated": "2026-02-01T00:00:00Z"})
    assert assessment(run(old, new)).lumbar_t == -2.0
    assert assessment(run(new, old)).lumbar_t == -2.0


def test_deeply_nested_bundles_stop_with_an_error() -> None:
    b: dict[str, Any] = bundle(lumbar_t(-2.0))
    for _ in range(10):
        b = bundle(b)
    fs = build_facts([patient(), b], PARAMS, AS_OF)
    assert any("nested deeper" in e.message for e in errors(fs))


def test_missing_parameters_are_named() -> None:
    params = dict(PARAMS)
    del params["nhanes_lumbar_sd"]
    del params["recent_fracture_months"]
    with pytest.raises(
        ParameterError, match=r"nhanes_lumbar_sd \(CS-3.8\).*recent_fracture_months"
    ):
        build_facts([patient()], params, AS_OF)


def test_non_numeric_parameter_is_named() -> None:
    with pytest.raises(ParameterError, match="lsc_total_hip_percent"):
        build_facts([patient()], {**PARAMS, "lsc_total_hip_percent": "five"}, AS_OF)


def test_outcome_shape() -> None:
    fs = run(lumbar_bmd(0.8, id="b1", unit="kg"))
    oo = fs.outcome()
    assert oo is not None
    assert oo["resourceType"] == "OperationOutcome"
    [issue] = oo["issue"]
    assert issue["severity"] == "error"
    assert issue["code"] == "code-invalid"  # the lumbar BMD profile binds the unit
    assert issue["expression"] == ["Observation.valueQuantity.code"]
    assert issue["diagnostics"].startswith("Observation/b1: ")
    assert run(lumbar_t(-1.0)).outcome() is None


def test_invalid_element_type_names_the_element_from_the_validation_error() -> None:
    o = hip_t(-2.0, id="h1")
    o["code"]["coding"][0]["code"] = 38264
    fs = run(o)
    [err] = errors(fs)
    assert err.resource == "Observation/h1"
    assert err.expression == "Observation.code.coding[0].code"


def test_profile_check_errors_are_data_errors() -> None:
    o = lumbar_t(-2.0, id="l1")
    del o["subject"]
    o["effectiveInstant"] = o.pop("effectiveDateTime")
    fs = run(o)
    exprs = {(e.resource, e.expression) for e in errors(fs)}
    assert ("Observation/l1", "Observation.subject") in exprs
    assert ("Observation/l1", "Observation.effectiveInstant") in exprs
    assert "osteohooks-lumbar-score" in errors(fs)[0].message


def test_subject_that_is_not_the_patient_is_ignored() -> None:
    o = lumbar_t(-2.0, id="l1")
    o["subject"] = {"reference": "Group/g1"}
    fs = run(o)
    assert ignored(fs)["Observation/l1"] == "not this patient (subject Group/g1)"


def test_profile_reference_target_check() -> None:
    from cds.fhir.profiles import load_profiles
    from cds.fhir.structure import check, compile_profile

    sd = load_profiles().structure_definitions["osteohooks-tbs"]
    o = tbs(1.3, id="t1")
    o["subject"] = {"reference": "Group/g1"}
    [err] = check(compile_profile(sd), o, "Observation/t1")
    assert err.expression == "Observation.subject.reference"


def test_full_fhir_validation_mode_reports_what_the_slim_models_skip() -> None:
    o = lumbar_t(-2.0, id="l1")
    o["issued"] = "not-a-time"  # an element the facts never read
    assert assessment(run(o)).lumbar_t == -2.0
    fs = run(o, validation="full")
    assert assessment(fs).lumbar_t is None
    [err] = errors(fs)
    assert (err.resource, err.expression) == ("Observation/l1", "Observation.issued")


def test_full_mode_accepts_valid_resources() -> None:
    fs = build_facts(rich_patient(), PARAMS, AS_OF, validation="full")
    assert not errors(fs)
    assert assessment(fs).lumbar_t == -2.1


# ---------------------------------------------------------------- property: junk never raises

JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "",
            "2024",
            "2024-02-30",
            "Patient/p1",
            "final",
            "g/cm2",
            "mg/cm2",
            "38267-1",
            "http://loinc.org",
            "active",
            "-",
            "1e309",
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "value",
                    "code",
                    "system",
                    "coding",
                    "text",
                    "start",
                    "end",
                    "reference",
                    "display",
                    "unit",
                    "repeat",
                    "frequency",
                    "period",
                ]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_junk_in_any_field_of_any_resource_never_raises(data: st.DataObject) -> None:
    resources = copy.deepcopy(rich_patient())
    drafts = [draft_dxa(authored="2026-11-01")]
    pool = resources + drafts
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(pool))
        path = data.draw(st.sampled_from(_paths(target)))
        _set(target, path, data.draw(JUNK))
    fs = build_facts(resources, PARAMS, AS_OF, draft_orders=drafts)
    fs.outcome()
    for issue in fs.issues:
        assert issue.message


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(JUNK, max_size=4))
def test_junk_resources_never_raise(items: list[Any]) -> None:
    fs = build_facts([patient(), *items], PARAMS, AS_OF, draft_orders=items)
    fs.outcome()


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=25)
@given(data=st.data())
def test_junk_never_raises_with_full_fhir_validation(data: st.DataObject) -> None:
    resources = copy.deepcopy(rich_patient())
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from(resources))
        path = data.draw(st.sampled_from(_paths(target)))
        _set(target, path, data.draw(JUNK))
    build_facts(resources, PARAMS, AS_OF, validation="full").outcome()
