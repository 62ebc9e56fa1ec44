"""Small builders of FHIR R4 JSON for tests (shared: stories, properties, replay, facts).

Every builder returns a plain dict (raw FHIR JSON, as an EHR would send it) and takes
keyword overrides; ids are derived from the content unless given, so a test that builds the
same resources twice gets the same ids. Dates default to the 2026-11-23 as-of date's past.

    from tests.fhir_factory import PARAMS, AS_OF, patient, lumbar_t, hip_t, bundle
    fs = build_facts([bundle(patient(), lumbar_t(-2.1), hip_t(-1.4))], PARAMS, AS_OF)
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
LOCAL_DXA = "https://osteohooks.org/fhir/CodeSystem/local-dxa"

AS_OF = date(2026, 11, 23)

#: The rule parameters cds.facts reads, at the clinical-spec defaults.
PARAMS: dict[str, int | float] = {
    "lsc_lumbar_spine_percent": 5.3,
    "lsc_total_hip_percent": 5.0,
    "lsc_femoral_neck_percent": 6.9,
    "vertebral_discordance_t": 1.0,
    "menopause_assumption_age": 50,
    "nhanes_lumbar_mean_bmd": 1.065,
    "nhanes_lumbar_sd": 0.122,
    "dxa_min_interval_months": 23,
    "recent_fracture_months": 12,
    # clin-therapy, revision 2 (CS-3.6, CS-9.1, CS-9.2, CS-9.4)
    "denosumab_overdue_months": 7,
    "egfr_window_months": 12,
    "possible_hpp_bisphosphonate_months": 12,
    "possible_hpp_denosumab_months": 7,
    "holiday_after_months": 12,
    "holiday_reassess_from_months": 24,
    "holiday_reassess_to_months": 36,
    "ppi_long_term_months": 12,
    "lab_recent_months": 12,
    "fragility_injury_min_age": 50,
    "normal_t": -1.0,
    "osteoporosis_t": -2.5,
    "t_score_men_min_age": 50,
    "romosozumab_cv_event_months": 12,
    "current_exam_window_days": 31,
}

VERTEBRA_SNOMED = {"L1": "61032001", "L2": "53983007", "L3": "55492004", "L4": "71996003"}

Json = dict[str, Any]


def _id(prefix: str, body: Json) -> str:
    blob = json.dumps(body, sort_keys=True)
    return f"{prefix}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def _finish(res: Json, rid: str | None, prefix: str, extra: Json) -> Json:
    res.update(extra)
    res["id"] = rid if rid is not None else _id(prefix, res)
    return res


def cc(
    code: str | None = None,
    system: str = LOINC,
    display: str | None = None,
    text: str | None = None,
) -> Json:
    out: Json = {}
    if code is not None:
        coding: Json = {"system": system, "code": code}
        if display is not None:
            coding["display"] = display
        out["coding"] = [coding]
    if text is not None:
        out["text"] = text
    return out


def patient(
    id: str = "p1",
    gender: str | None = "female",
    birth_date: str | None = "1955-03-01",
    **extra: Any,
) -> Json:
    res: Json = {"resourceType": "Patient", "id": id}
    if gender is not None:
        res["gender"] = gender
    if birth_date is not None:
        res["birthDate"] = birth_date
    res.update(extra)
    return res


def observation(
    code: str | None,
    value: Any = None,
    unit: str | None = None,
    *,
    system: str = LOINC,
    id: str | None = None,
    status: str = "final",
    date: str | None = "2026-01-10",
    subject: str | None = "p1",
    device: str | None = None,
    device_display: str | None = None,
    body_site: Json | None = None,
    text: str | None = None,
    display: str | None = None,
    value_key: str = "valueQuantity",
    **extra: Any,
) -> Json:
    """An Observation; value None = no value[x]; value_key picks the value[x] element."""
    res: Json = {
        "resourceType": "Observation",
        "status": status,
        "code": cc(code, system, display, text),
    }
    if subject is not None:
        res["subject"] = {"reference": f"Patient/{subject}"}
    if date is not None:
        res["effectiveDateTime"] = date
    if value is not None:
        if value_key == "valueQuantity":
            q: Json = {"value": value}
            if unit is not None:
                q.update({"unit": unit, "system": UCUM, "code": unit})
            res["valueQuantity"] = q
        else:
            res[value_key] = value
    if device is not None or device_display is not None:
        ref: Json = {}
        if device is not None:
            ref["reference"] = f"Device/{device}"
        if device_display is not None:
            ref["display"] = device_display
        res["device"] = ref
    if body_site is not None:
        res["bodySite"] = body_site
    return _finish(res, id, "obs", extra)


def lumbar_t(value: Any, **kw: Any) -> Json:
    return observation("38267-1", value, kw.pop("unit", "{T-score}"), **kw)


def lumbar_z(value: Any, **kw: Any) -> Json:
    return observation("85394-5", value, kw.pop("unit", "{Z-score}"), **kw)


def lumbar_bmd(value: Any, **kw: Any) -> Json:
    return observation("24966-4", value, kw.pop("unit", "g/cm2"), **kw)


def vertebra_t(level: str, value: Any, **kw: Any) -> Json:
    site = cc(VERTEBRA_SNOMED[level], SNOMED)
    return observation("38267-1", value, kw.pop("unit", "{T-score}"), body_site=site, **kw)


def hip_t(value: Any, side: str | None = None, **kw: Any) -> Json:
    code = {"left": "80946-7", "right": "80945-9", None: "38264-8"}[side]
    return observation(code, value, kw.pop("unit", "{T-score}"), **kw)


def hip_z(value: Any, **kw: Any) -> Json:
    return observation("80933-5", value, kw.pop("unit", "{Z-score}"), **kw)


def neck_t(value: Any, **kw: Any) -> Json:
    return observation("femoral-neck-t", value, kw.pop("unit", "{T-score}"), system=LOCAL_DXA, **kw)


def neck_z(value: Any, **kw: Any) -> Json:
    return observation("femoral-neck-z", value, kw.pop("unit", "{Z-score}"), system=LOCAL_DXA, **kw)


def tbs(value: Any, **kw: Any) -> Json:
    if "text" in kw and "code" not in kw:
        return observation(None, value, kw.pop("unit", "1"), **kw)
    return observation(
        kw.pop("code", "tbs-lumbar"),
        value,
        kw.pop("unit", "1"),
        system=kw.pop("system", LOCAL_DXA),
        **kw,
    )


def alp(value: Any, **kw: Any) -> Json:
    return observation("6768-6", value, kw.pop("unit", "U/L"), **kw)


def height(value: Any, **kw: Any) -> Json:
    return observation("8302-2", value, kw.pop("unit", "cm"), **kw)


def menopause_obs(status: str = "postmenopausal", **kw: Any) -> Json:
    code = {"postmenopausal": "76498008", "premenopausal": "289903006"}[status]
    return observation(
        "menopausal-status",
        value=cc(code, SNOMED),
        value_key="valueCodeableConcept",
        system="https://example.org/local",
        **kw,
    )


def device(
    id: str = "dxa1",
    manufacturer: str | None = "Hologic",
    model: str | None = "Horizon A",
    **extra: Any,
) -> Json:
    res: Json = {"resourceType": "Device", "id": id}
    if manufacturer is not None:
        res["manufacturer"] = manufacturer
    if model is not None:
        res["deviceName"] = [{"name": model, "type": "model-name"}]
    res.update(extra)
    return res


def condition(
    code: str | None = None,
    system: str = ICD10CM,
    *,
    id: str | None = None,
    clinical: str | None = "active",
    verification: str | None = None,
    onset: str | None = None,
    text: str | None = None,
    display: str | None = None,
    subject: str | None = "p1",
    **extra: Any,
) -> Json:
    res: Json = {"resourceType": "Condition", "code": cc(code, system, display, text)}
    if clinical is not None:
        res["clinicalStatus"] = cc(
            clinical, "http://terminology.hl7.org/CodeSystem/condition-clinical"
        )
    if verification is not None:
        res["verificationStatus"] = cc(
            verification, "http://terminology.hl7.org/CodeSystem/condition-ver-status"
        )
    if subject is not None:
        res["subject"] = {"reference": f"Patient/{subject}"}
    if onset is not None:
        res["onsetDateTime"] = onset
    return _finish(res, id, "cond", extra)


def procedure(
    code: str | None = None,
    system: str = CPT,
    *,
    id: str | None = None,
    status: str = "completed",
    date: str | None = "2026-01-05",
    text: str | None = None,
    display: str | None = None,
    subject: str | None = "p1",
    **extra: Any,
) -> Json:
    res: Json = {
        "resourceType": "Procedure",
        "status": status,
        "code": cc(code, system, display, text),
    }
    if subject is not None:
        res["subject"] = {"reference": f"Patient/{subject}"}
    if date is not None:
        res["performedDateTime"] = date
    return _finish(res, id, "proc", extra)


def _medication(name: str | None, rxnorm: str | None, atc: str | None) -> Json:
    codings = []
    if rxnorm is not None:
        codings.append({"system": RXNORM, "code": rxnorm})
    if atc is not None:
        codings.append({"system": ATC, "code": atc})
    out: Json = {}
    if codings:
        out["coding"] = codings
    if name is not None:
        out["text"] = name
    return out


def _dosage(dose_mg: Any, frequency: int | None, period_unit: str | None, unit: str) -> Json:
    d: Json = {
        "doseAndRate": [
            {"doseQuantity": {"value": dose_mg, "unit": unit, "system": UCUM, "code": unit}}
        ]
    }
    if frequency is not None or period_unit is not None:
        d["timing"] = {
            "repeat": {"frequency": frequency or 1, "period": 1, "periodUnit": period_unit or "d"}
        }
    return d


def med_statement(
    name: str | None = "alendronate",
    *,
    rxnorm: str | None = None,
    atc: str | None = None,
    id: str | None = None,
    status: str = "active",
    start: str | None = "2024-01-01",
    end: str | None = None,
    dose_mg: Any = None,
    frequency: int | None = None,
    period_unit: str | None = None,
    dose_unit: str = "mg",
    subject: str | None = "p1",
    **extra: Any,
) -> Json:
    res: Json = {
        "resourceType": "MedicationStatement",
        "status": status,
        "medicationCodeableConcept": _medication(name, rxnorm, atc),
    }
    if subject is not None:
        res["subject"] = {"reference": f"Patient/{subject}"}
    if start is not None or end is not None:
        period: Json = {}
        if start is not None:
            period["start"] = start
        if end is not None:
            period["end"] = end
        res["effectivePeriod"] = period
    if dose_mg is not None:
        res["dosage"] = [_dosage(dose_mg, frequency, period_unit, dose_unit)]
    return _finish(res, id, "ms", extra)


def med_request(
    name: str | None = "alendronate",
    *,
    rxnorm: str | None = None,
    atc: str | None = None,
    id: str | None = None,
    status: str = "active",
    intent: str = "order",
    authored: str | None = "2024-01-01",
    dose_mg: Any = None,
    frequency: int | None = None,
    period_unit: str | None = None,
    subject: str | None = "p1",
    **extra: Any,
) -> Json:
    res: Json = {
        "resourceType": "MedicationRequest",
        "status": status,
        "intent": intent,
        "medicationCodeableConcept": _medication(name, rxnorm, atc),
    }
    if subject is not None:
        res["subject"] = {"reference": f"Patient/{subject}"}
    if authored is not None:
        res["authoredOn"] = authored
    if dose_mg is not None:
        res["dosageInstruction"] = [_dosage(dose_mg, frequency, period_unit, "mg")]
    return _finish(res, id, "mr", extra)


def med_admin(
    name: str | None = "denosumab",
    *,
    rxnorm: str | None = None,
    atc: str | None = None,
    id: str | None = None,
    status: str = "completed",
    date: str | None = "2026-01-01",
    subject: str | None = "p1",
    **extra: Any,
) -> Json:
    res: Json = {
        "resourceType": "MedicationAdministration",
        "status": status,
        "medicationCodeableConcept": _medication(name, rxnorm, atc),
    }
    if subject is not None:
        res["subject"] = {"reference": f"Patient/{subject}"}
    if date is not None:
        res["effectiveDateTime"] = date
    return _finish(res, id, "ma", extra)


def draft_dxa(
    id: str = "order1",
    code: str = "77080",
    system: str = CPT,
    *,
    authored: str | None = None,
    status: str = "draft",
    subject: str | None = "p1",
    **extra: Any,
) -> Json:
    res: Json = {
        "resourceType": "ServiceRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "code": cc(code, system),
    }
    if subject is not None:
        res["subject"] = {"reference": f"Patient/{subject}"}
    if authored is not None:
        res["authoredOn"] = authored
    res.update(extra)
    return res


def bundle(*resources: Json, type: str = "collection") -> Json:
    return {
        "resourceType": "Bundle",
        "type": type,
        "entry": [
            {"fullUrl": f"urn:uuid:{r.get('resourceType')}-{r.get('id')}", "resource": r}
            for r in resources
        ],
    }
