"""Code lists and profiles from ``fhir_profiles/`` (data, not code).

Every code the service recognises or suggests lives in a JSON file there, one file per
concern; this module loads them once, checks their shape (errors name the file), and
builds the lookup indexes the readers use. Point ``OSTEOHOOKS_FHIR_PROFILES`` at another
folder to use a site's own copy (:class:`cds.settings.DataFolders` owns that choice).

This module is the one reader of those files: the facts stage, the cards (order codes,
card-topic codings), the rule validation (order keys) and the service's prefetch
template (observation codes) all take what they need from :class:`Profiles`.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from cds.fhir.models import CodeableConcept, Coding
from cds.fhir.structure import CompiledProfile, compile_profile
from cds.settings import data_folders

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"

#: Systems whose codes match by prefix (a listed M47.81 matches M47.816).
PREFIX_SYSTEMS = frozenset({ICD10CM, CPT})

M = TypeVar("M", bound=BaseModel)

DxaSite = Literal["lumbar-spine", "total-hip", "femoral-neck", "femur", "forearm"]
ScoreType = Literal["T", "Z", "BMD"]


class ProfileError(Exception):
    """fhir_profiles/ data is missing or malformed (a deployment error, not a data error)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeEntry(_Strict):
    system: str
    code: str
    display: str
    verified: bool = True
    note: str | None = None


class DxaCodeEntry(CodeEntry):
    site: DxaSite
    score: ScoreType
    side: Literal["left", "right"] | None = None


class _DxaFile(_Strict):
    description: str
    evidence: list[str]
    codes: list[DxaCodeEntry]
    panels: list[CodeEntry]
    units: dict[str, Any]


class FemoralNeckEntry(CodeEntry):
    score: ScoreType
    side: Literal["left", "right"] | None = None


class _TextScore(_Strict):
    contains: list[str]
    score: ScoreType


class _FemoralNeckFile(_Strict):
    description: str
    evidence: list[str]
    codes: list[FemoralNeckEntry]
    text_patterns: list[_TextScore]


class _TbsFile(_Strict):
    description: str
    evidence: list[str]
    codes: list[CodeEntry]
    text_patterns: list[str]
    units: list[str]


class VertebraEntry(CodeEntry):
    vertebra: Literal["L1", "L2", "L3", "L4"]


class _VertebraFile(_Strict):
    description: str
    evidence: list[str]
    codes: list[VertebraEntry]


class _Range(_Strict):
    min: Decimal
    max: Decimal
    unit: str | None = None


class _RangesFile(_Strict):
    description: str
    evidence: list[str]
    T: _Range
    Z: _Range
    BMD: _Range
    TBS: _Range
    alkaline_phosphatase: _Range
    height: _Range
    egfr: _Range


class _LabGroup(_Strict):
    codes: list[CodeEntry]
    units: dict[str, Decimal]


class _LabFile(_Strict):
    description: str
    evidence: list[str]
    alkaline_phosphatase: _LabGroup
    height: _LabGroup
    egfr: _LabGroup


class _MenopauseFile(_Strict):
    description: str
    evidence: list[str]
    postmenopausal: list[CodeEntry]
    premenopausal: list[CodeEntry]


class MedClass(_Strict):
    display: str
    bone_active: bool
    antiresorptive: bool
    anabolic: bool
    dosing_interval_months: int | None


class _IngredientCode(_Strict):
    code: str
    display: str
    verified: bool = True


class Ingredient(_Strict):
    ingredient: str
    med_class: str
    prednisone_factor: Decimal | None = None
    rxnorm: _IngredientCode
    atc: _IngredientCode
    names: list[str]


class _SystemicRule(_Strict):
    """CS-1.8 rev 2: which glucocorticoid statements are systemic."""

    description: str
    route_system: str
    route_codes: list[str]
    non_systemic_words: list[str]


class _OncologyRegimens(_Strict):
    """CS-1.8 rev 2: oncology regimens of denosumab and zoledronic acid."""

    description: str
    names: dict[str, str]  # product name -> ingredient
    doses_mg: dict[str, Decimal]  # ingredient -> the oncology dose


class _MedFile(_Strict):
    description: str
    evidence: list[str]
    systems: dict[str, str]
    classes: dict[str, MedClass]
    ingredients: list[dict[str, Any]]
    glucocorticoid_dose_units: dict[str, Decimal]
    glucocorticoid_systemic: _SystemicRule
    oncology_regimens: _OncologyRegimens


class HarmingDrug(_Strict):
    """One drug that harms bone (CS-6.8); its class is set when the file is read."""

    ingredient: str
    atc: str
    names: list[str]
    drug_class: str = ""
    class_display: str = ""
    long_term: bool = False


class _HarmingClass(_Strict):
    display: str
    long_term: bool = False
    drugs: list[HarmingDrug]


class _HarmingFile(_Strict):
    description: str
    evidence: list[str]
    atc_system: str
    classes: dict[str, _HarmingClass]


class _CodesWithText(_Strict):
    codes: list[CodeEntry]
    text_patterns: list[str]


class _ConditionFile(_Strict):
    description: str
    evidence: list[str]
    primary_hyperparathyroidism: list[CodeEntry]
    hypophosphatasia: list[CodeEntry]
    hypophosphatasia_note: str | None = None
    hypophosphatasia_if_named: _CodesWithText
    advanced_ckd: list[CodeEntry]
    # clin-followup, revision 2 (CS-6.4)
    myocardial_infarction_or_stroke: list[CodeEntry]


class _FractureFile(_Strict):
    description: str
    evidence: list[str]
    hip: list[CodeEntry]
    vertebral: list[CodeEntry]
    other: list[CodeEntry]
    self_reported_vertebral: list[CodeEntry]
    # clin-followup, revision 2 (CS-1.10)
    injury_prefixes: list[str]
    augmentation_procedures: list[CodeEntry]
    augmentation_text: list[str]


class _Finding(_Strict):
    bias: str
    codes: list[CodeEntry]
    text_patterns: list[str]


class _StructuralFile(_Strict):
    description: str
    evidence: list[str]
    findings: dict[str, _Finding]


class _ContrastFile(_Strict):
    description: str
    evidence: list[str]
    codes: list[CodeEntry]
    text_patterns: list[str]


class _CodesFile(_Strict):
    description: str
    evidence: list[str]
    codes: list[CodeEntry]


class _MfrPattern(_Strict):
    contains: str
    manufacturer: Literal["hologic", "ge-lunar", "other"]


class _MfrFile(_Strict):
    description: str
    evidence: list[str]
    patterns: list[_MfrPattern]
    #: CS-1.4 rev 2: regular expressions; a device display matching one identifies a device
    display_identifier_patterns: list[str] = []

    @field_validator("display_identifier_patterns")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {p!r} ({exc})") from None
        return patterns


#: ServiceRequest.category per order category (FHIR servicerequest-category, SNOMED CT).
_CATEGORY_CODINGS: dict[str, dict[str, str]] = {
    "laboratory": {
        "system": "http://snomed.info/sct",
        "code": "108252007",
        "display": "Laboratory procedure",
    },
    "imaging": {"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"},
}


class OrderCode(CodeEntry):
    category: Literal["laboratory", "imaging"]
    #: CS-6.1 rev 2: a recent result of this test leaves it out of the suggested orders
    skip_if_recent: bool = False

    def coding(self) -> dict[str, str]:
        """The Coding JSON of a drafted ServiceRequest.code."""
        return {"system": self.system, "code": self.code, "display": self.display}

    def category_coding(self) -> dict[str, str] | None:
        """The ServiceRequest.category Coding JSON."""
        return _CATEGORY_CODINGS.get(self.category)


class _OrderFile(_Strict):
    description: str
    evidence: list[str]
    orders: dict[str, OrderCode]


class _Topic(_Strict):
    display: str


class _TopicFile(_Strict):
    description: str
    system: str
    topics: dict[str, _Topic]


def _norm(system: str | None, code: str | None) -> tuple[str, str]:
    s = (system or "").strip()
    c = (code or "").strip()
    if s in PREFIX_SYSTEMS:
        c = c.upper().replace(".", "")
    return s, c


@dataclass(frozen=True)
class CodeList:
    """Codes matched exactly, or by prefix for ICD-10-CM and CPT."""

    entries: tuple[CodeEntry, ...]
    _exact: dict[tuple[str, str], CodeEntry] = field(default_factory=dict, repr=False)
    # prefix entries by (system, first 3 characters), longest prefix first
    _prefix: dict[tuple[str, str], tuple[tuple[str, CodeEntry], ...]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def of(cls, entries: list[CodeEntry] | tuple[CodeEntry, ...]) -> CodeList:
        exact: dict[tuple[str, str], CodeEntry] = {}
        grouped: dict[tuple[str, str], list[tuple[str, CodeEntry]]] = {}
        for e in entries:
            key = _norm(e.system, e.code)
            if e.system in PREFIX_SYSTEMS:
                if len(key[1]) < 3:
                    raise ProfileError(f"prefix code {e.code!r} ({e.system}) is shorter than 3")
                grouped.setdefault((key[0], key[1][:3]), []).append((key[1], e))
            else:
                exact[key] = e
        # longest prefix first so the most specific entry wins
        prefix = {k: tuple(sorted(v, key=lambda p: -len(p[0]))) for k, v in grouped.items()}
        return cls(tuple(entries), exact, prefix)

    def match_coding(self, coding: Coding) -> CodeEntry | None:
        code = coding.get("code")
        if not code:
            return None
        key = _norm(coding.get("system"), code)
        hit = self._exact.get(key)
        if hit is not None:
            return hit
        for pre, entry in self._prefix.get((key[0], key[1][:3]), ()):
            if key[1].startswith(pre):
                return entry
        return None

    def match(self, concept: CodeableConcept | None) -> tuple[CodeEntry, Coding] | None:
        if concept is None:
            return None
        for coding in concept.get("coding", ()):
            hit = self.match_coding(coding)
            if hit is not None:
                return hit, coding
        return None


@dataclass(frozen=True)
class StructuralFindingProfile:
    finding: str
    bias: str
    codes: CodeList
    text_patterns: tuple[str, ...]


@dataclass(frozen=True)
class Profiles:
    """All of fhir_profiles/, indexed."""

    folder: Path
    dxa: dict[tuple[str, str], DxaCodeEntry]
    dxa_panels: CodeList
    bmd_units: dict[str, Decimal]
    t_units: frozenset[str]
    z_units: frozenset[str]
    femoral_neck: dict[tuple[str, str], FemoralNeckEntry]
    femoral_neck_text: tuple[tuple[tuple[str, ...], ScoreType], ...]
    tbs: CodeList
    tbs_text: tuple[str, ...]
    tbs_units: frozenset[str]
    vertebrae: dict[tuple[str, str], str]
    ranges: dict[str, tuple[Decimal, Decimal]]
    alp: CodeList
    alp_units: dict[str, Decimal]
    height: CodeList
    height_units: dict[str, Decimal]
    egfr: CodeList
    egfr_units: dict[str, Decimal]
    postmenopausal: CodeList
    premenopausal: CodeList
    med_classes: dict[str, MedClass]
    ingredients: tuple[Ingredient, ...]
    rxnorm: dict[str, Ingredient]
    atc: dict[str, Ingredient]
    med_names: tuple[tuple[str, Ingredient], ...]
    dose_units: dict[str, Decimal]
    #: CS-1.8 rev 2 (clin-therapy): systemic glucocorticoids, oncology regimens
    systemic_route_system: str
    systemic_route_codes: frozenset[str]
    non_systemic_words: re.Pattern[str]
    oncology_names: dict[str, str]
    oncology_doses_mg: dict[str, Decimal]
    #: CS-6.8 (clin-therapy): drugs that harm bone, by ATC code and by name (longest first)
    harming_atc_system: str
    harming_atc: dict[str, HarmingDrug]
    harming_names: tuple[tuple[str, HarmingDrug], ...]
    hyperparathyroidism: CodeList
    hypophosphatasia: CodeList
    #: codes that mean hypophosphatasia only when their display or text names it (CS-3.6)
    hypophosphatasia_if_named: CodeList
    hypophosphatasia_text: tuple[str, ...]
    advanced_ckd: CodeList
    fracture_hip: CodeList
    fracture_vertebral: CodeList
    fracture_other: CodeList
    fracture_self_reported: CodeList
    # clin-followup, revision 2 (CS-1.10, CS-6.4)
    fracture_injury_prefixes: tuple[str, ...]
    fracture_augmentation: CodeList
    fracture_augmentation_text: tuple[str, ...]
    mi_or_stroke: CodeList
    structural: tuple[StructuralFindingProfile, ...]
    contrast: CodeList
    contrast_text: tuple[str, ...]
    dxa_orders: CodeList
    manufacturers: tuple[tuple[str, str], ...]
    device_identifiers: tuple[re.Pattern[str], ...]
    order_codes: dict[str, OrderCode]
    card_topic_system: str
    card_topics: dict[str, str]
    structure_definitions: dict[str, dict[str, Any]]

    observation_codes: tuple[str, ...]

    # -- the lookup indexes of the FHIR read, built once from the fields above
    #: (system, code) -> (its ObsKind, its laboratory order key) of every Observation code
    #: the read knows, one lookup per coding for both (either may be None)
    obs_codes: dict[tuple[str, str], ObsCode] = field(init=False, repr=False, compare=False)
    #: every Condition/Procedure code list at once
    code_index: CodeIndex = field(init=False, repr=False, compare=False)
    #: score -> accepted unit -> factor to the normalised unit
    unit_factors: dict[str, dict[str, Decimal]] = field(init=False, repr=False, compare=False)
    #: the StructureDefinitions, compiled
    compiled_profiles: dict[str, CompiledProfile] = field(init=False, repr=False, compare=False)
    #: the compiled profile a result of each kind must conform to (kinds without one absent)
    kind_profiles: dict[ObsKind, CompiledProfile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__  # frozen: the indexes are set once, here
        setattr_(self, "obs_codes", _obs_codes(self))
        setattr_(self, "code_index", _code_index(self))
        setattr_(self, "unit_factors", _unit_factors(self))
        compiled = {sid: compile_profile(sd) for sid, sd in self.structure_definitions.items()}
        setattr_(self, "compiled_profiles", compiled)
        setattr_(self, "kind_profiles", _kind_profiles(self.obs_codes, compiled))

    @property
    def order_keys(self) -> frozenset[str]:
        """The order keys of order-codes.json (what rule suggestions may name)."""
        return frozenset(self.order_codes)

    def order(self, key: str) -> OrderCode:
        """The order of a key of order-codes.json (ProfileError names the key and file)."""
        try:
            return self.order_codes[key]
        except KeyError:
            raise ProfileError(
                f"unknown order key {key!r} (not in {self.folder / 'order-codes.json'})"
            ) from None

    def topic_coding(self, topic: str) -> dict[str, str]:
        """The card source.topic Coding JSON (ProfileError for a topic not in the file)."""
        display = self.card_topics.get(topic)
        if display is None:
            raise ProfileError(f"card topic {topic!r} is not in {self.folder / 'card-topics.json'}")
        return {"system": self.card_topic_system, "code": topic, "display": display}


#: The files of Observation codes the facts stage reads (the `observations` prefetch),
#: and the laboratory tests a card may order, whose recent results are not ordered
#: again (CS-6.1).
OBSERVATION_FILES = (
    "dxa-codes.json",
    "femoral-neck-codes.json",
    "tbs-codes.json",
    "lab-codes.json",
    "menopausal-status.json",
    "order-codes.json",
)


def _codings(node: Any) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        if node.get("category") == "imaging":
            return found  # an order of imaging, not an Observation code
        system, code = node.get("system"), node.get("code")
        if isinstance(system, str) and isinstance(code, str):
            found.append((system, code))
        for value in node.values():
            found.extend(_codings(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_codings(value))
    return found


def _observation_codes(raw: dict[str, Any]) -> tuple[str, ...]:
    """FHIR token search values of every coding in OBSERVATION_FILES, in file order:
    LOINC codes bare (`38267-1`), other systems as `system|code`; diagnoses (ICD-10-CM)
    are Conditions, not Observation codes, and are left out."""
    tokens: dict[str, None] = {}
    for name in OBSERVATION_FILES:
        for system, code in _codings(raw[name]):
            if system == ICD10CM:
                continue
            tokens[code if system == LOINC else f"{system}|{code}"] = None
    return tuple(tokens)


def _read(folder: Path, name: str) -> Any:
    path = folder / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: missing (fhir_profiles/ must contain {name})") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None


def _model(folder: Path, name: str, model: type[M], raw: dict[str, Any] | None = None) -> M:
    data = _read(folder, name)
    if raw is not None:
        raw[name] = data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ProfileError(f"{folder / name}: {loc}: {first['msg']}") from None


def _build(folder: Path) -> Profiles:
    documents: dict[str, Any] = {}
    dxa = _model(folder, "dxa-codes.json", _DxaFile, documents)
    try:
        bmd_units = {str(k): Decimal(str(v)) for k, v in dict(dxa.units["BMD"]).items()}
        t_units = frozenset(str(u) for u in dxa.units["T"])
        z_units = frozenset(str(u) for u in dxa.units["Z"])
    except (KeyError, TypeError, ArithmeticError) as exc:
        raise ProfileError(
            f"{folder / 'dxa-codes.json'}: units: need BMD, T and Z ({exc})"
        ) from None
    neck = _model(folder, "femoral-neck-codes.json", _FemoralNeckFile, documents)
    tbs = _model(folder, "tbs-codes.json", _TbsFile, documents)
    vert = _model(folder, "vertebral-body-sites.json", _VertebraFile)
    ranges = _model(folder, "plausible-ranges.json", _RangesFile)
    labs = _model(folder, "lab-codes.json", _LabFile, documents)
    meno = _model(folder, "menopausal-status.json", _MenopauseFile, documents)
    meds = _model(folder, "medication-classes.json", _MedFile)
    conds = _model(folder, "condition-codes.json", _ConditionFile)
    frac = _model(folder, "fragility-fractures.json", _FractureFile)
    struct = _model(folder, "structural-findings.json", _StructuralFile)
    contrast = _model(folder, "contrast-procedures.json", _ContrastFile)
    orders = _model(folder, "dxa-order-codes.json", _CodesFile)
    mfr = _model(folder, "device-manufacturers.json", _MfrFile)
    order_codes = _model(folder, "order-codes.json", _OrderFile, documents)
    topics = _model(folder, "card-topics.json", _TopicFile)
    harming = _model(folder, "bone-harming-drugs.json", _HarmingFile)
    harming_drugs = [
        d.model_copy(
            update={"drug_class": key, "class_display": c.display, "long_term": c.long_term}
        )
        for key, c in harming.classes.items()
        for d in c.drugs
    ]
    words = sorted(meds.glucocorticoid_systemic.non_systemic_words, key=lambda w: (-len(w), w))

    ingredients: list[Ingredient] = []
    for i, raw in enumerate(meds.ingredients):
        data = dict(raw)
        data["med_class"] = data.pop("class", None)
        try:
            ing = Ingredient.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ProfileError(
                f"{folder / 'medication-classes.json'}: ingredients[{i}].{loc}: {first['msg']}"
            ) from None
        if ing.med_class not in meds.classes:
            raise ProfileError(
                f"{folder / 'medication-classes.json'}: ingredients[{i}]: unknown class "
                f"{ing.med_class!r} (classes: {sorted(meds.classes)})"
            )
        if ing.med_class == "glucocorticoid" and ing.prednisone_factor is None:
            raise ProfileError(
                f"{folder / 'medication-classes.json'}: ingredients[{i}]: a glucocorticoid "
                "needs prednisone_factor"
            )
        ingredients.append(ing)
    names = sorted(
        ((n.lower(), ing) for ing in ingredients for n in ing.names),
        key=lambda p: (-len(p[0]), p[0]),
    )

    sds: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("StructureDefinition-*.json")):
        sd = _read(folder, path.name)
        if not isinstance(sd, dict) or sd.get("resourceType") != "StructureDefinition":
            raise ProfileError(f"{path}: not a StructureDefinition")
        sds[str(sd.get("id"))] = sd

    return Profiles(
        folder=folder,
        dxa={_norm(c.system, c.code): c for c in dxa.codes},
        dxa_panels=CodeList.of(dxa.panels),
        bmd_units=bmd_units,
        t_units=t_units,
        z_units=z_units,
        femoral_neck={_norm(c.system, c.code): c for c in neck.codes},
        femoral_neck_text=tuple(
            (tuple(w.lower() for w in p.contains), p.score) for p in neck.text_patterns
        ),
        tbs=CodeList.of(tbs.codes),
        tbs_text=tuple(t.lower() for t in tbs.text_patterns),
        tbs_units=frozenset(tbs.units),
        vertebrae={_norm(c.system, c.code): c.vertebra for c in vert.codes},
        ranges={
            "T": (ranges.T.min, ranges.T.max),
            "Z": (ranges.Z.min, ranges.Z.max),
            "BMD": (ranges.BMD.min, ranges.BMD.max),
            "TBS": (ranges.TBS.min, ranges.TBS.max),
            "alkaline_phosphatase": (
                ranges.alkaline_phosphatase.min,
                ranges.alkaline_phosphatase.max,
            ),
            "height": (ranges.height.min, ranges.height.max),
            "egfr": (ranges.egfr.min, ranges.egfr.max),
        },
        alp=CodeList.of(labs.alkaline_phosphatase.codes),
        alp_units=dict(labs.alkaline_phosphatase.units),
        height=CodeList.of(labs.height.codes),
        height_units=dict(labs.height.units),
        egfr=CodeList.of(labs.egfr.codes),
        egfr_units=dict(labs.egfr.units),
        postmenopausal=CodeList.of(meno.postmenopausal),
        premenopausal=CodeList.of(meno.premenopausal),
        med_classes=dict(meds.classes),
        ingredients=tuple(ingredients),
        rxnorm={i.rxnorm.code: i for i in ingredients if i.rxnorm.verified},
        atc={i.atc.code.upper(): i for i in ingredients},
        med_names=tuple(names),
        dose_units=dict(meds.glucocorticoid_dose_units),
        systemic_route_system=meds.glucocorticoid_systemic.route_system,
        systemic_route_codes=frozenset(meds.glucocorticoid_systemic.route_codes),
        non_systemic_words=re.compile(
            r"\b(" + "|".join(re.escape(w.lower()) for w in words) + r")\b"
        ),
        oncology_names={k.lower(): v for k, v in meds.oncology_regimens.names.items()},
        oncology_doses_mg=dict(meds.oncology_regimens.doses_mg),
        harming_atc_system=harming.atc_system,
        harming_atc={d.atc.upper(): d for d in harming_drugs},
        harming_names=tuple(
            sorted(
                ((n.lower(), d) for d in harming_drugs for n in d.names),
                key=lambda p: (-len(p[0]), p[0]),
            )
        ),
        hyperparathyroidism=CodeList.of(conds.primary_hyperparathyroidism),
        hypophosphatasia=CodeList.of(conds.hypophosphatasia),
        hypophosphatasia_if_named=CodeList.of(conds.hypophosphatasia_if_named.codes),
        hypophosphatasia_text=tuple(
            t.lower() for t in conds.hypophosphatasia_if_named.text_patterns
        ),
        advanced_ckd=CodeList.of(conds.advanced_ckd),
        fracture_hip=CodeList.of(frac.hip),
        fracture_vertebral=CodeList.of(frac.vertebral),
        fracture_other=CodeList.of(frac.other),
        fracture_self_reported=CodeList.of(frac.self_reported_vertebral),
        fracture_injury_prefixes=tuple(x.upper() for x in frac.injury_prefixes),
        fracture_augmentation=CodeList.of(frac.augmentation_procedures),
        fracture_augmentation_text=tuple(t.lower() for t in frac.augmentation_text),
        mi_or_stroke=CodeList.of(conds.myocardial_infarction_or_stroke),
        structural=tuple(
            StructuralFindingProfile(
                finding=name,
                bias=f.bias,
                codes=CodeList.of(f.codes),
                text_patterns=tuple(t.lower() for t in f.text_patterns),
            )
            for name, f in struct.findings.items()
        ),
        contrast=CodeList.of(contrast.codes),
        contrast_text=tuple(t.lower() for t in contrast.text_patterns),
        dxa_orders=CodeList.of(orders.codes),
        manufacturers=tuple((p.contains.lower(), p.manufacturer) for p in mfr.patterns),
        device_identifiers=tuple(re.compile(p) for p in mfr.display_identifier_patterns),
        order_codes=dict(order_codes.orders),
        card_topic_system=topics.system,
        card_topics={k: v.display for k, v in topics.topics.items()},
        structure_definitions=sds,
        observation_codes=_observation_codes(documents),
    )


# ---------------------------------------------------------------------------- read indexes

#: (kind, site, score, side) of an Observation code
ObsKind = tuple[str, str | None, str, str | None]
#: what an Observation code is: (its ObsKind or None, its laboratory order key or None)
ObsCode = tuple[ObsKind | None, str | None]
#: category of a code list -> (its entry, the Coding that matched)
Hits = dict[str, tuple[CodeEntry, Coding]]
_ONE = Decimal(1)


@dataclass(frozen=True)
class CodeIndex:
    """Every Condition/Procedure code list at once: category -> first (longest) match."""

    exact: dict[tuple[str, str], list[tuple[str, CodeEntry]]]
    prefix: dict[tuple[str, str], list[tuple[str, str, CodeEntry]]]
    #: the structural findings of the Profiles, in order, with their category in hits
    structural: tuple[tuple[StructuralFindingProfile, str], ...]

    def hits(self, cc: CodeableConcept) -> Hits:
        out: Hits = {}
        for coding in cc.get("coding", ()):
            code = coding.get("code")
            if not code:
                continue
            key = _norm(coding.get("system"), code)
            for cat, entry in self.exact.get(key, ()):
                out.setdefault(cat, (entry, coding))
            for pre, cat, entry in self.prefix.get((key[0], key[1][:3]), ()):
                if cat not in out and key[1].startswith(pre):
                    out[cat] = (entry, coding)
        return out


def _obs_codes(profiles: Profiles) -> dict[tuple[str, str], ObsCode]:
    """The Observation codes: result kinds, and the laboratory orders a recent result
    leaves out (`skip_if_recent`, CS-6.1)."""
    kinds = _obs_kinds(profiles)
    labs = {
        (o.system, o.code): key
        for key, o in profiles.order_codes.items()
        if o.category == "laboratory" and o.skip_if_recent
    }
    return {code: (kinds.get(code), labs.get(code)) for code in {*kinds, *labs}}


def _obs_kinds(profiles: Profiles) -> dict[tuple[str, str], ObsKind]:
    index: dict[tuple[str, str], ObsKind] = {}
    for e in profiles.height.entries:
        index[(e.system, e.code)] = ("height", None, "HEIGHT", None)
    for e in profiles.alp.entries:
        index[(e.system, e.code)] = ("alp", None, "ALP", None)
    for e in profiles.egfr.entries:
        index[(e.system, e.code)] = ("egfr", None, "EGFR", None)
    for e in profiles.tbs.entries:
        index[(e.system, e.code)] = ("tbs", None, "TBS", None)
    for key, fn in profiles.femoral_neck.items():
        index[key] = ("dxa", "femoral-neck", fn.score, fn.side)
    for key, d in profiles.dxa.items():
        index[key] = ("dxa", d.site, d.score, d.side)
    return index


#: the kind of a result recognised by its text as TBS (the other text kinds, femoral neck
#: scores, have no profile)
TBS_KIND: ObsKind = ("tbs", None, "TBS", None)


def profile_for(kind: ObsKind) -> str | None:
    """The id of the StructureDefinition a result of this kind must conform to, if any."""
    if kind[0] == "tbs":
        return "osteohooks-tbs"
    if kind[0] == "dxa" and kind[1] == "lumbar-spine":
        return "osteohooks-lumbar-bmd" if kind[2] == "BMD" else "osteohooks-lumbar-score"
    return None


def _kind_profiles(
    codes: dict[tuple[str, str], ObsCode], compiled: dict[str, CompiledProfile]
) -> dict[ObsKind, CompiledProfile]:
    kinds = {kind for kind, _ in codes.values() if kind is not None} | {TBS_KIND}
    out: dict[ObsKind, CompiledProfile] = {}
    for kind in kinds:
        sd_id = profile_for(kind)
        if sd_id is not None and sd_id in compiled:
            out[kind] = compiled[sd_id]
    return out


def _unit_factors(p: Profiles) -> dict[str, dict[str, Decimal]]:
    """The score units (T, Z, TBS) are sets in Profiles and map to 1 here, so
    ``table[score].get(unit)`` is the factor (None: the unit is not accepted) for every
    score, and ``table[score]`` lists the accepted units."""
    return {
        "BMD": dict(p.bmd_units),
        "T": dict.fromkeys(p.t_units, _ONE),
        "Z": dict.fromkeys(p.z_units, _ONE),
        "TBS": dict.fromkeys(p.tbs_units, _ONE),
        "ALP": dict(p.alp_units),
        "HEIGHT": dict(p.height_units),
        "EGFR": dict(p.egfr_units),
    }


def _code_index(p: Profiles) -> CodeIndex:
    lists: list[tuple[str, CodeList]] = [
        ("fx-self", p.fracture_self_reported),
        ("fx-vertebral", p.fracture_vertebral),
        ("fx-hip", p.fracture_hip),
        ("fx-other", p.fracture_other),
        ("post", p.postmenopausal),
        ("pre", p.premenopausal),
        ("hpt", p.hyperparathyroidism),
        ("hpp", p.hypophosphatasia),
        ("hpp-if-named", p.hypophosphatasia_if_named),
        ("ckd", p.advanced_ckd),
        ("cv", p.mi_or_stroke),
        ("fx-augmentation", p.fracture_augmentation),
        ("contrast", p.contrast),
        *((f"sf:{sf.finding}", sf.codes) for sf in p.structural),
    ]
    exact: dict[tuple[str, str], list[tuple[str, CodeEntry]]] = {}
    prefix: dict[tuple[str, str], list[tuple[str, str, CodeEntry]]] = {}
    for cat, cl in lists:
        for e in cl.entries:
            key = _norm(e.system, e.code)
            if e.system in PREFIX_SYSTEMS:
                prefix.setdefault((key[0], key[1][:3]), []).append((key[1], cat, e))
            else:
                exact.setdefault(key, []).append((cat, e))
    for v in prefix.values():
        v.sort(key=lambda t: -len(t[0]))  # longest prefix first
    structural = tuple((sf, f"sf:{sf.finding}") for sf in p.structural)
    return CodeIndex(exact, prefix, structural)


_CACHE: dict[Path, Profiles] = {}
_LOCK = threading.Lock()


def load_profiles(folder: Path | None = None) -> Profiles:
    """Load (once per folder) and index fhir_profiles/; ProfileError names a bad file.

    `folder` defaults to :func:`cds.settings.data_folders` (``OSTEOHOOKS_FHIR_PROFILES``,
    else the bundled folder).
    """
    path = (folder if folder is not None else data_folders().fhir_profiles).resolve()
    with _LOCK:
        hit = _CACHE.get(path)
        if hit is None:
            hit = _build(path)
            _CACHE[path] = hit
        return hit
