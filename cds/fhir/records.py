"""The typed records the FHIR read makes of usable resources, and PatientData, everything
read for one patient (what cds.facts builds facts from)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal, NamedTuple

from cds.contracts.outcome import DataIssue
from cds.fhir.dates import When
from cds.fhir.profiles import HarmingDrug, Ingredient
from cds.fhir.trace import Trace

Validation = Literal["fast", "full"]
Manufacturer = Literal["hologic", "ge-lunar", "other", "unknown"]


@dataclass(frozen=True, slots=True)
class Scanner:
    identity: str | None  # Device/x or identifier system|value; None: not identified
    label: str | None
    manufacturer: Manufacturer


class Measurement(NamedTuple):
    """One numeric result. Immutable like the other records; a NamedTuple rather than a
    frozen dataclass because it is made for every result read (a frozen dataclass sets each
    of its 11 fields through object.__setattr__: ~2.4 us against ~1 us)."""

    ref: str
    kind: Literal["dxa", "tbs", "alp", "height", "egfr"]
    site: str | None  # DxaSite for dxa
    score: str  # T, Z, BMD, TBS, ALP, HEIGHT
    side: str | None
    vertebra: str | None
    vertebra_count: int | None
    value: Decimal  # normalised (g/cm2, U/L, cm)
    when: When
    preliminary: bool
    scanner: Scanner | None


class MedRecord(NamedTuple):
    """One medication record (a NamedTuple for the reason given at Measurement)."""

    ref: str
    ingredient: Ingredient
    med_class: str
    source: Literal["statement", "request", "administration"]
    status: str
    start: date | None
    end: date | None
    ongoing: bool
    dose_date: date | None  # administrations
    mg_day: Decimal | None  # prednisone-equivalent, glucocorticoids only
    label: str
    oncology: bool = False  # CS-1.8 rev 2: Xgeva / oncology zoledronic acid


@dataclass(frozen=True, slots=True)
class HarmingRecord:
    """A drug that harms bone (CS-6.8)."""

    ref: str
    drug: HarmingDrug
    start: date | None
    ongoing: bool
    label: str


@dataclass(frozen=True, slots=True)
class FractureRecord:
    ref: str
    kind: Literal["hip", "vertebral", "other", "self-reported-vertebral"]
    code: str
    display: str
    when: When | None
    #: an injury code (CS-1.10 rev 2): the mechanism is unknown, assumed low-trauma from 50
    injury: bool = False
    #: a vertebral augmentation procedure: the fracture it treated, not one more fracture
    augmentation: bool = False


@dataclass(frozen=True, slots=True)
class FindingRecord:
    ref: str
    finding: str
    display: str


@dataclass(frozen=True, slots=True)
class ContrastRecord:
    ref: str
    display: str
    when: When


@dataclass(frozen=True, slots=True)
class DraftRecord:
    ref: str
    display: str
    authored: When | None


@dataclass
class PatientData:
    """Everything read for one patient."""

    patient_ref: str | None = None
    gender: str | None = None
    birth_date: date | None = None
    measurements: list[Measurement] = field(default_factory=list)
    menopause: list[tuple[str, str, When | None]] = field(default_factory=list)  # status, ref
    meds: list[MedRecord] = field(default_factory=list)
    hyperparathyroidism: list[str] = field(default_factory=list)
    hypophosphatasia: list[str] = field(default_factory=list)
    advanced_ckd: list[str] = field(default_factory=list)  # CS-9.1
    harming: list[HarmingRecord] = field(default_factory=list)  # CS-6.8
    #: (order key, result date, Observation) of laboratory tests a card may order (CS-6.1)
    lab_results: list[tuple[str, date, str]] = field(default_factory=list)
    fractures: list[FractureRecord] = field(default_factory=list)
    #: myocardial infarction or stroke Conditions (CS-6.4 rev 2): (ref, date or None)
    cv_events: list[tuple[str, When | None]] = field(default_factory=list)
    findings: list[FindingRecord] = field(default_factory=list)
    contrast: list[ContrastRecord] = field(default_factory=list)
    drafts: list[DraftRecord] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    trace: Trace = field(default_factory=Trace)
