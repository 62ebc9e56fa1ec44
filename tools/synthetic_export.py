"""Synthetic FHIR Bulk Data exports: N patients with realistic DXA histories, therapies,
conditions and labs, in the `$export` layout, deterministic by seed.

    .venv/bin/python tools/synthetic_export.py OUT_DIR --patients 10000 --seed 7 [--gzip]

writes `OUT_DIR/manifest.json` and one NDJSON file per resource type (`Patient.ndjson`,
`Device.ndjson`, `Observation.000.ndjson`, `Observation.001.ndjson`, ... split every
`--part` lines, `.ndjson.gz` with `--gzip`), as an EHR's export does: resources tied to
their patient by `subject`/`patient`, scanners shared by many patients and joined by
reference. The mix is drawn per patient from the seed:

- women (80%) and men of 45 to 90; 10% with no DXA on record (screening);
- 1 to 4 DXA exams 18 to 30 months apart on one or two scanners (Hologic, GE Lunar),
  each with lumbar spine T/Z/BMD and total hip and femoral neck T/BMD (BMD consistent
  with the T-score), sometimes forearm and TBS; bone loss or gain between exams;
- therapy for a third of them: alendronate (statements), denosumab (6-monthly
  administrations, some overdue), zoledronic acid (yearly), teriparatide; a drug holiday
  for some; systemic glucocorticoids, proton pump inhibitors, aromatase inhibitors;
- conditions: fragility fractures (vertebral, hip, wrist), CKD stage 4, rheumatoid
  arthritis, lumbar spondylosis, rarely hypophosphatasia; kyphoplasty procedures;
- labs: eGFR, alkaline phosphatase (a few below 30 U/L), 25-OH vitamin D.

The numbers here describe a population, not clinical thresholds: the rules decide what
each patient's data means. `tests/tools/test_synthetic_export.py` checks that the export
reads back as these patients and that the population reaches every card topic.
"""

from __future__ import annotations

import argparse
import gzip as gz
import json
import random
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

LOINC = "http://loinc.org"
LOCAL_DXA = "https://osteohooks.org/fhir/CodeSystem/local-dxa"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"

#: The export's "today" (the manifest's transactionTime); exams and doses lie before it.
EXPORTED = date(2026, 11, 20)
#: Observation lines per file part (`Observation.000.ndjson`, ...).
PART = 100_000
#: Scanners shared by the population: (id, manufacturer, model).
SCANNERS = (
    ("dxa-hologic-1", "Hologic", "Horizon A"),
    ("dxa-hologic-2", "Hologic", "Discovery W"),
    ("dxa-lunar-1", "GE Healthcare", "Lunar iDXA"),
    ("dxa-lunar-2", "GE Healthcare", "Lunar Prodigy"),
)
#: Young-adult reference BMD (g/cm2) mean and SD per site, to draw BMD that agrees with the
#: T-score (generator data only, not the rules' NHANES parameters).
REFERENCE = {"lumbar": (1.047, 0.110), "hip": (0.942, 0.122), "neck": (0.858, 0.120)}

Json = dict[str, Any]


def _day(value: date) -> str:
    return value.isoformat()


def _obs(
    rid: str, pid: str, system: str, code: str, display: str, value: float, unit: str, day: date
) -> Json:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": _day(day),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def _dxa(
    rid: str,
    pid: str,
    system: str,
    code: str,
    display: str,
    value: float,
    unit: str,
    day: date,
    scanner: str,
) -> Json:
    out = _obs(rid, pid, system, code, display, value, unit, day)
    out["device"] = {"reference": f"Device/{scanner}"}
    return out


def _condition(rid: str, pid: str, code: str, display: str, onset: date) -> Json:
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
        "code": {"coding": [{"system": ICD10CM, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": _day(onset),
    }


def _medication(atc: str, text: str) -> Json:
    return {"coding": [{"system": ATC, "code": atc, "display": text}], "text": text}


def _statement(
    rid: str,
    pid: str,
    atc: str,
    text: str,
    start: date,
    end: date | None,
    dose_mg: float | None = None,
) -> Json:
    out: Json = {
        "resourceType": "MedicationStatement",
        "id": rid,
        "status": "active" if end is None else "completed",
        "medicationCodeableConcept": _medication(atc, text),
        "subject": {"reference": f"Patient/{pid}"},
        "effectivePeriod": {"start": _day(start), **({"end": _day(end)} if end else {})},
    }
    if dose_mg is not None:
        out["dosage"] = [
            {
                "doseAndRate": [
                    {"doseQuantity": {"value": dose_mg, "unit": "mg", "system": UCUM, "code": "mg"}}
                ],
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            }
        ]
    return out


def _administration(rid: str, pid: str, atc: str, text: str, day: date) -> Json:
    return {
        "resourceType": "MedicationAdministration",
        "id": rid,
        "status": "completed",
        "medicationCodeableConcept": _medication(atc, text),
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": _day(day),
    }


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, min(day.day, 28))


class _Patient:
    """One patient's resources, drawn from `rng`."""

    def __init__(self, index: int, rng: random.Random) -> None:
        self.rng = rng
        self.pid = f"syn-{index}"
        self.female = rng.random() < 0.8
        self.age = rng.randint(45, 90)
        self.out: list[Json] = []
        self._n = 0

    def rid(self, tag: str) -> str:
        self._n += 1
        return f"{self.pid}-{tag}{self._n}"

    def build(self) -> list[Json]:
        rng = self.rng
        birth = date(EXPORTED.year - self.age, rng.randint(1, 12), rng.randint(1, 28))
        self.out.append(
            {
                "resourceType": "Patient",
                "id": self.pid,
                "gender": "female" if self.female else "male",
                "birthDate": _day(birth),
            }
        )
        base_t = min(1.5, max(-4.2, rng.gauss(-1.3 - (self.age - 60) * 0.03, 0.9)))
        exams = 0 if rng.random() < 0.10 else rng.choice((1, 1, 2, 2, 3, 4))
        treated = self._therapy(base_t) if exams else False
        self._exams(exams, base_t, treated)
        self._conditions(base_t)
        self._labs()
        return self.out

    # -------------------------------------------------------------- DXA

    def _exams(self, exams: int, t: float, treated: bool) -> None:
        rng = self.rng
        scanners = rng.sample(SCANNERS, 2)
        same_scanner = rng.random() < 0.8
        day = EXPORTED - timedelta(days=rng.randint(20, 400))
        days = []
        for _ in range(exams):
            days.append(day)
            day -= timedelta(days=rng.randint(18 * 30, 30 * 30))
        drift = rng.gauss(0.03 if treated else -0.02, 0.025)  # BMD change per exam
        for n, when in enumerate(reversed(days)):
            scanner = scanners[0] if same_scanner or n % 2 == 0 else scanners[1]
            self._exam(when, t + drift * 9 * n, scanner[0], rng.random() < 0.1)

    def _exam(self, day: date, t: float, scanner: str, tbs: bool) -> None:
        rng, pid = self.rng, self.pid
        lumbar_t = round(t + rng.gauss(0, 0.3), 1)
        hip_t = round(t + rng.gauss(0.3, 0.3), 1)
        neck_t = round(t + rng.gauss(0.1, 0.3), 1)
        values = (
            (LOINC, "38267-1", "DXA Lumbar spine [T-score] Bone density", lumbar_t, "{T-score}"),
            (
                LOINC,
                "85394-5",
                "DXA Lumbar spine [Z-score] Bone density",
                round(lumbar_t + (self.age - 30) * 0.025, 1),
                "{Z-score}",
            ),
            (
                LOINC,
                "24966-4",
                "DXA Lumbar spine [Mass/Area] Bone density",
                self._bmd("lumbar", lumbar_t),
                "g/cm2",
            ),
            (LOINC, "38264-8", "DXA Hip [T-score] Bone density", hip_t, "{T-score}"),
            (
                LOINC,
                "38261-4",
                "DXA Hip [Mass/Area] Bone density",
                self._bmd("hip", hip_t),
                "g/cm2",
            ),
            (
                LOCAL_DXA,
                "femoral-neck-t",
                "DXA Femoral neck [T-score] Bone density",
                neck_t,
                "{T-score}",
            ),
        )
        for system, code, display, value, unit in values:
            self.out.append(
                _dxa(self.rid("o"), pid, system, code, display, value, unit, day, scanner)
            )
        if rng.random() < 0.05:
            forearm = round(t + rng.gauss(-0.2, 0.4), 1)
            self.out.append(
                _dxa(
                    self.rid("o"),
                    pid,
                    LOINC,
                    "38265-5",
                    "DXA Radius and Ulna [T-score] Bone density",
                    forearm,
                    "{T-score}",
                    day,
                    scanner,
                )
            )
        if tbs:
            score = round(min(1.6, max(1.0, rng.gauss(1.30, 0.09))), 3)
            self.out.append(
                _dxa(
                    self.rid("o"),
                    pid,
                    LOCAL_DXA,
                    "tbs-lumbar",
                    "Trabecular bone score, lumbar spine",
                    score,
                    "1",
                    day,
                    scanner,
                )
            )

    def _bmd(self, site: str, t: float) -> float:
        mean, sd = REFERENCE[site]
        return round(mean + t * sd + self.rng.gauss(0, 0.004), 3)

    # -------------------------------------------------------------- therapy

    def _therapy(self, t: float) -> bool:
        rng, pid = self.rng, self.pid
        if rng.random() < 0.10:
            start = _months_before(EXPORTED, rng.randint(3, 40))
            self.out.append(
                _statement(
                    self.rid("m"),
                    pid,
                    "H02AB07",
                    "prednisone",
                    start,
                    None,
                    float(rng.choice((5, 7.5, 10, 15))),
                )
            )
        if rng.random() < 0.10:
            self.out.append(
                _statement(
                    self.rid("m"),
                    pid,
                    "A02BC01",
                    "omeprazole",
                    _months_before(EXPORTED, rng.randint(2, 60)),
                    None,
                )
            )
        if self.female and rng.random() < 0.05:
            self.out.append(
                _statement(
                    self.rid("m"),
                    pid,
                    "L02BG03",
                    "anastrozole",
                    _months_before(EXPORTED, rng.randint(6, 48)),
                    None,
                )
            )
        if rng.random() >= (0.55 if t <= -2.0 else 0.15):
            return False
        kind = rng.choices(
            ("alendronate", "denosumab", "zoledronic", "teriparatide"), (5, 3, 2, 1)
        )[0]
        if kind == "alendronate":
            years = rng.randint(1, 12)
            start = _months_before(EXPORTED, years * 12)
            end = None if rng.random() < 0.6 else _months_before(EXPORTED, rng.randint(1, 30))
            if end is not None and end <= start:
                end = None
            self.out.append(
                _statement(self.rid("m"), pid, "M05BA04", "alendronic acid 70 mg", start, end)
            )
        elif kind == "denosumab":
            last = _months_before(EXPORTED, rng.choice((1, 3, 5, 6, 8, 11)))
            for n in range(rng.randint(1, 8)):
                self.out.append(
                    _administration(
                        self.rid("m"),
                        pid,
                        "M05BX04",
                        "denosumab 60 mg",
                        _months_before(last, 6 * n),
                    )
                )
        elif kind == "zoledronic":
            last = _months_before(EXPORTED, rng.randint(1, 30))
            for n in range(rng.randint(1, 6)):
                self.out.append(
                    _administration(
                        self.rid("m"),
                        pid,
                        "M05BA08",
                        "zoledronic acid 5 mg",
                        _months_before(last, 12 * n),
                    )
                )
        else:
            start = _months_before(EXPORTED, rng.randint(2, 20))
            self.out.append(_statement(self.rid("m"), pid, "H05AA02", "teriparatide", start, None))
        return True

    # -------------------------------------------------------------- conditions and labs

    def _conditions(self, t: float) -> None:
        rng, pid = self.rng, self.pid
        onset = _months_before(EXPORTED, rng.randint(2, 96))
        if rng.random() < (0.15 if t <= -2.0 else 0.05):
            code, display = rng.choice(
                (
                    (
                        "M80.08XA",
                        "Age-related osteoporosis with current pathological fracture, "
                        "vertebra(e), initial encounter for fracture",
                    ),
                    (
                        "S72.001A",
                        "Fracture of unspecified part of neck of right femur, initial "
                        "encounter for closed fracture",
                    ),
                    (
                        "S52.501A",
                        "Unspecified fracture of the lower end of right radius, "
                        "initial encounter for closed fracture",
                    ),
                )
            )
            self.out.append(_condition(self.rid("c"), pid, code, display, onset))
            if code.startswith("M80") and rng.random() < 0.2:
                self.out.append(
                    {
                        "resourceType": "Procedure",
                        "id": self.rid("p"),
                        "status": "completed",
                        "code": {
                            "coding": [
                                {"system": CPT, "code": "22513", "display": "Kyphoplasty, thoracic"}
                            ]
                        },
                        "subject": {"reference": f"Patient/{pid}"},
                        "performedDateTime": _day(onset + timedelta(days=20)),
                    }
                )
        for chance, code, display in (
            (0.03, "N18.4", "Chronic kidney disease, stage 4 (severe)"),
            (0.05, "M06.9", "Rheumatoid arthritis, unspecified"),
            (0.05, "M47.816", "Spondylosis without myelopathy or radiculopathy, lumbar region"),
            (0.003, "E83.39", "Hypophosphatasia"),
            (0.30, "I10", "Essential (primary) hypertension"),
        ):
            if rng.random() < chance:
                self.out.append(_condition(self.rid("c"), pid, code, display, onset))

    def _labs(self) -> None:
        rng, pid = self.rng, self.pid
        day = EXPORTED - timedelta(days=rng.randint(10, 500))
        if rng.random() < 0.4:
            egfr = round(min(120.0, max(8.0, rng.gauss(70, 20))))
            self.out.append(
                _obs(
                    self.rid("l"),
                    pid,
                    LOINC,
                    "33914-3",
                    "Glomerular filtration rate/1.73 sq M.predicted",
                    egfr,
                    "mL/min/{1.73_m2}",
                    day,
                )
            )
        if rng.random() < 0.3:
            alp = round(max(12.0, rng.gauss(75, 25)))
            self.out.append(
                _obs(
                    self.rid("l"),
                    pid,
                    LOINC,
                    "6768-6",
                    "Alkaline phosphatase [Enzymatic activity/volume] in Serum",
                    alp,
                    "U/L",
                    day,
                )
            )
        if rng.random() < 0.3:
            vit_d = round(max(4.0, rng.gauss(28, 10)), 1)
            self.out.append(
                _obs(
                    self.rid("l"),
                    pid,
                    LOINC,
                    "1989-3",
                    "25-hydroxyvitamin D3 [Mass/volume] in Serum or Plasma",
                    vit_d,
                    "ng/mL",
                    day,
                )
            )


def patient_resources(index: int, rng: random.Random) -> list[Json]:
    """Patient `index`'s resources (its Patient first), drawn from `rng`; the scanners it
    references are `scanner_resources()`."""
    return _Patient(index, rng).build()


def scanner_resources() -> list[Json]:
    """The Devices every synthetic DXA references."""
    return [
        {
            "resourceType": "Device",
            "id": sid,
            "manufacturer": maker,
            "deviceName": [{"name": model, "type": "model-name"}],
            "serialNumber": f"SN-{n:04d}",
        }
        for n, (sid, maker, model) in enumerate(SCANNERS)
    ]


def patients(count: int, seed: int) -> Iterator[list[Json]]:
    """Every patient's resources, in order, deterministic by seed."""
    rng = random.Random(seed)
    for index in range(count):
        yield patient_resources(index, rng)


def write_export(
    folder: Path, count: int, seed: int, *, part: int = PART, gzip: bool = False
) -> int:
    """Write the export of `count` patients into `folder`; returns the resources written."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".ndjson.gz" if gzip else ".ndjson"
    handles: dict[str, IO[str]] = {}
    names: list[str] = []
    counts: dict[str, int] = {}

    def write(resource: Json) -> None:
        rtype = resource["resourceType"]
        n = counts.get(rtype, 0)
        name = f"{rtype}.{n // part:03d}{suffix}" if rtype == "Observation" else f"{rtype}{suffix}"
        handle = handles.get(name)
        if handle is None:
            path = folder / name
            if gzip:  # kept open across the whole export, closed below
                handle = gz.open(path, "wt", encoding="utf-8")  # noqa: SIM115
            else:
                handle = path.open("w", encoding="utf-8")
            handles[name] = handle
            names.append(name)
        handle.write(json.dumps(resource, separators=(",", ":")) + "\n")
        counts[rtype] = n + 1

    for device in scanner_resources():
        write(device)
    for resources in patients(count, seed):
        for resource in resources:
            write(resource)
    for handle in handles.values():
        handle.close()
    manifest = {
        "transactionTime": f"{EXPORTED.isoformat()}T00:00:00Z",
        "request": "https://ehr.example/fhir/Patient/$export",
        "requiresAccessToken": False,
        "output": [
            {"type": n.split(".", 1)[0], "url": f"https://ehr.example/export/{n}"} for n in names
        ],
        "error": [],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return sum(counts.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the export folder to write")
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--part", type=int, default=PART, help="Observation lines per file")
    parser.add_argument("--gzip", action="store_true", help="write .ndjson.gz files")
    args = parser.parse_args(argv)
    written = write_export(args.out, args.patients, args.seed, part=args.part, gzip=args.gzip)
    print(f"{args.patients} patients, {written} resources in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
