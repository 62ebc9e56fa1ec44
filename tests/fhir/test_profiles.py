"""fhir_profiles/: every code's system, code and display agree with each other.

Checks: systems are canonical URLs; each system's code format (LOINC with its mod-10 check
digit, SNOMED CT ids with their Verhoeff check digit, ICD-10-CM, CPT, ATC, RxNorm, UCUM);
the same system+code never carries two displays across files; the codes CS-1.7, CS-1.8 and
CS-8.1 name are present with the meaning the spec gives; StructureDefinitions agree with the
code lists; a site can add a local code by editing the data only.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from cds.contracts.cards import CARD_TOPICS
from cds.facts import build_facts
from cds.fhir.profiles import ProfileError, load_profiles
from cds.settings import data_folders
from tests.facts.helpers import assessment
from tests.fhir_factory import AS_OF, PARAMS, observation, patient

CANONICAL = {
    "http://loinc.org",
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://www.ama-assn.org/go/cpt",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://www.whocc.no/atc",
    "http://unitsofmeasure.org",
}
BUNDLED = data_folders().fhir_profiles
LOCAL_PREFIX = "https://osteohooks.org/fhir/CodeSystem/"
FORMATS = {
    "http://loinc.org": r"^\d{1,7}-\d$",
    "http://snomed.info/sct": r"^[1-9]\d{5,17}$",
    "http://hl7.org/fhir/sid/icd-10-cm": r"^[A-Z]\d[0-9A-Z](\.[0-9A-Z]{1,4})?$",
    "http://www.ama-assn.org/go/cpt": r"^\d{4}[0-9FTU]$",
    "http://www.whocc.no/atc": r"^[A-Z]\d{2}[A-Z]{2}\d{2}$",
}


def loinc_check_digit_ok(code: str) -> bool:
    number, check = code.split("-")
    digits = number[::-1]
    odd = digits[0::2][::-1]
    even = digits[1::2][::-1]
    joined = str(int(odd) * 2) + even
    return (10 - sum(int(c) for c in joined) % 10) % 10 == int(check)


_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def verhoeff_ok(number: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(number)):
        c = _D[c][_P[i % 8][int(ch)]]
    return c == 0


def codings() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(obj: Any, where: str) -> None:
        if isinstance(obj, dict):
            if isinstance(obj.get("system"), str) and isinstance(obj.get("code"), str):
                out.append((where, obj))
            for v in obj.values():
                walk(v, where)
        elif isinstance(obj, list):
            for v in obj:
                walk(v, where)

    for path in sorted(BUNDLED.glob("*.json")):
        data = json.loads(path.read_text())
        walk(data, path.name)
        # StructureDefinition ValueSets: include.system + concept codes
        for res in data.get("contained", []) if isinstance(data, dict) else []:
            for inc in res.get("compose", {}).get("include", []):
                for concept in inc.get("concept", []):
                    out.append((path.name, {"system": inc["system"], **concept}))
    return out


def test_known_check_digit_algorithms() -> None:
    assert loinc_check_digit_ok("2160-0")
    assert not loinc_check_digit_ok("2160-1")
    assert verhoeff_ok("22298006")
    assert not verhoeff_ok("22298007")
    # the spec's L2 vertebral body and bone densitometry ids (CS-1.7, CS-8.1) are valid
    assert verhoeff_ok("53983007")
    assert verhoeff_ok("312681000")


def test_verhoeff_tables_are_the_standard_ones() -> None:
    """P[i] is P[1] applied i times, and D is the dihedral group D5's table.

    A one-entry typo in P[4] once made two valid SNOMED CT ids of the spec look invalid.
    """
    for i in range(2, 8):
        assert _P[i] == [_P[1][x] for x in _P[i - 1]], f"row {i} of the permutation table"
    for j in range(10):
        for k in range(10):
            # every row and column of D is a permutation, and 0 is the identity
            assert sorted(_D[j]) == list(range(10))
            assert _D[0][k] == k
    # a single-digit error is always caught
    for code in ("61032001", "53983007", "55492004", "71996003", "312681000"):
        for pos in range(len(code)):
            for digit in "0123456789":
                if digit != code[pos]:
                    assert not verhoeff_ok(code[:pos] + digit + code[pos + 1 :])


@pytest.mark.parametrize(("where", "coding"), codings(), ids=lambda x: str(x)[:40])
def test_each_code_matches_its_system(where: str, coding: dict[str, Any]) -> None:
    system, code = coding["system"], coding["code"]
    assert system in CANONICAL or system.startswith(LOCAL_PREFIX), (where, system)
    pattern = FORMATS.get(system)
    if pattern is not None:
        assert re.match(pattern, code), (where, system, code)
    if system == "http://loinc.org":
        assert loinc_check_digit_ok(code), (where, code)
    if system == "http://snomed.info/sct":
        assert verhoeff_ok(code), (where, code)
        assert code[-3:-1] in ("00", "10"), "partition: a concept id"


def test_rxnorm_and_atc_codes_in_medication_classes() -> None:
    data = json.loads((BUNDLED / "medication-classes.json").read_text())
    for ing in data["ingredients"]:
        assert re.match(r"^\d+$", ing["rxnorm"]["code"])
        assert re.match(FORMATS["http://www.whocc.no/atc"], ing["atc"]["code"])
    verified = {i["rxnorm"]["code"] for i in data["ingredients"] if i["rxnorm"]["verified"]}
    assert verified == {"46041", "77655", "8640"}  # the ones CS-1.8 names


def test_same_code_never_has_two_displays() -> None:
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for where, c in codings():
        if "display" not in c:
            continue
        key = (c["system"], c["code"])
        if key in seen:
            assert seen[key][1] == c["display"], (key, seen[key], where, c["display"])
        seen[key] = (where, c["display"])


def test_display_words_agree_with_dxa_meaning() -> None:
    for c in json.loads((BUNDLED / "dxa-codes.json").read_text())["codes"]:
        d = c["display"]
        want = {"T": "[T-score]", "Z": "[Z-score]", "BMD": "[Mass/Area]"}[c["score"]]
        assert want in d, c
        site_word = {
            "lumbar-spine": "Lumbar spine",
            "total-hip": "Hip",
            "femur": "Femur",
            "forearm": "Radius",
        }[c["site"]]
        assert site_word in d, c
        if c["side"]:
            assert c["side"] in d, c


def test_cs_1_7_codes_have_the_spec_meaning() -> None:
    p = load_profiles()
    expect = {
        "38267-1": ("lumbar-spine", "T"),
        "85394-5": ("lumbar-spine", "Z"),
        "24966-4": ("lumbar-spine", "BMD"),
        "38264-8": ("total-hip", "T"),
        "80946-7": ("total-hip", "T"),
        "80945-9": ("total-hip", "T"),
        "80933-5": ("total-hip", "Z"),
        "38261-4": ("total-hip", "BMD"),
        "46278-8": ("total-hip", "BMD"),
        "46279-6": ("total-hip", "BMD"),
        "38263-0": ("femur", "T"),
        "80948-3": ("femur", "T"),
        "80947-5": ("femur", "T"),
        "24701-5": ("femur", "BMD"),
        "38265-5": ("forearm", "T"),
    }
    got = {code: (e.site, e.score) for (system, code), e in p.dxa.items()}
    assert got == expect
    assert set(p.vertebrae.values()) == {"L1", "L2", "L3", "L4"}
    assert {(k[1], v) for k, v in p.vertebrae.items()} == {
        ("61032001", "L1"),
        ("53983007", "L2"),
        ("55492004", "L3"),
        ("71996003", "L4"),
    }


def test_cs_1_8_atc_codes() -> None:
    p = load_profiles()
    atc = {code: ing.ingredient for code, ing in p.atc.items()}
    assert atc == {
        "M05BA04": "alendronate",
        "M05BA06": "ibandronate",
        "M05BA07": "risedronate",
        "M05BA08": "zoledronic acid",
        "M05BX04": "denosumab",
        "M05BX06": "romosozumab",
        "H05AA02": "teriparatide",
        "H05AA04": "abaloparatide",
        "H02AB07": "prednisone",
        "H02AB06": "prednisolone",
        "H02AB04": "methylprednisolone",
        "H02AB02": "dexamethasone",
        "H02AB09": "hydrocortisone",
    }
    factors = {
        i.ingredient: str(i.prednisone_factor)
        for i in p.ingredients
        if i.prednisone_factor is not None
    }
    assert factors == {
        "prednisone": "1",
        "prednisolone": "1",
        "methylprednisolone": "1.25",
        "dexamethasone": "6.67",
        "hydrocortisone": "0.25",
    }


def test_cs_8_1_dxa_order_codes() -> None:
    p = load_profiles()
    assert {(e.system.rsplit("/", 1)[-1], e.code) for e in p.dxa_orders.entries} == {
        ("loinc.org", "38269-7"),
        ("cpt", "77080"),
        ("cpt", "77081"),
        ("cpt", "77085"),
        ("sct", "312681000"),
    }


def test_order_codes_cover_the_cs_6_1_workup_and_imaging() -> None:
    p = load_profiles()
    for key in [
        "lab-cbc",
        "lab-cmp",
        "lab-calcium",
        "lab-albumin",
        "lab-phosphate",
        "lab-creatinine",
        "lab-egfr",
        "lab-alkaline-phosphatase",
        "lab-25-oh-vitamin-d",
        "lab-pth",
        "lab-tsh",
        "lab-24h-urine-calcium",
        "lab-24h-urine-creatinine",
        "lab-ttg-iga",
        "lab-total-testosterone",
        "lab-spep",
        "lab-free-light-chains-kappa",
        "lab-free-light-chains-lambda",
        "imaging-vfa",
        "imaging-lateral-spine-xray",
        "dxa-axial",
    ]:
        coding = p.order(key).coding()
        assert set(coding) == {"system", "code", "display"}
    with pytest.raises(
        ProfileError, match=r"unknown order key 'lab-nope' \(not in .*order-codes\.json\)"
    ):
        p.order("lab-nope")


def test_card_topics_match_the_contract() -> None:
    p = load_profiles()
    assert p.card_topic_system == "https://osteohooks.org/fhir/CodeSystem/card-topic"
    assert set(p.card_topics) == set(
        CARD_TOPICS
    )  # the card contract (cds.contracts.cards) owns the list
    assert p.topic_coding("tbs")["system"] == p.card_topic_system
    with pytest.raises(ProfileError, match=r"card topic 'nope' is not in .*card-topics\.json"):
        p.topic_coding("nope")


def test_structure_definition_units_agree_with_the_code_lists() -> None:
    p = load_profiles()
    sds = p.structure_definitions
    assert set(sds) == {"osteohooks-lumbar-bmd", "osteohooks-lumbar-score", "osteohooks-tbs"}

    def vs(sd: dict[str, Any], vid: str) -> set[str]:
        [res] = [r for r in sd["contained"] if r["id"] == vid]
        return {c["code"] for inc in res["compose"]["include"] for c in inc["concept"]}

    assert vs(sds["osteohooks-lumbar-bmd"], "lumbar-bmd-units") == set(p.bmd_units)
    assert vs(sds["osteohooks-lumbar-score"], "lumbar-score-units") == (
        (p.t_units | p.z_units) - {""}
    )
    assert vs(sds["osteohooks-tbs"], "tbs-units") == p.tbs_units - {""}
    lumbar = {code for (_, code), e in p.dxa.items() if e.site == "lumbar-spine"}
    assert (
        vs(sds["osteohooks-lumbar-bmd"], "lumbar-bmd-codes")
        | vs(sds["osteohooks-lumbar-score"], "lumbar-score-codes")
        == lumbar
    )
    for sd in sds.values():
        assert sd["url"].endswith(sd["id"])
        assert sd["derivation"] == "constraint"
        assert sd["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/Observation"


def test_a_site_adds_a_local_tbs_code_in_data_only(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    shutil.copytree(BUNDLED, folder)
    path = folder / "tbs-codes.json"
    data = json.loads(path.read_text())
    data["codes"].append({"system": "urn:oid:1.2.3.4", "code": "TBS01", "display": "TBS"})
    path.write_text(json.dumps(data))
    obs = observation("TBS01", 1.28, "1", system="urn:oid:1.2.3.4")
    default = build_facts([patient(), obs], PARAMS, AS_OF)
    assert assessment(default).tbs is None
    local = build_facts([patient(), obs], PARAMS, AS_OF, profiles=load_profiles(folder))
    assert assessment(local).tbs == 1.28


def test_broken_profile_file_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    shutil.copytree(BUNDLED, folder)
    (folder / "dxa-codes.json").write_text('{"codes": [')
    with pytest.raises(ProfileError, match=r"dxa-codes.json:1:\d+: invalid JSON"):
        load_profiles(folder)
    shutil.copy(BUNDLED / "dxa-codes.json", folder / "dxa-codes.json")
    data = json.loads((folder / "medication-classes.json").read_text())
    data["ingredients"][0]["class"] = "vitamin"
    (folder / "medication-classes.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"ingredients\[0\]: unknown class 'vitamin'"):
        load_profiles(folder)
