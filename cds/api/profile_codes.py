"""Observation codes for the `observations` prefetch template, read from fhir_profiles/.

Every coding listed in the profile files of Observations the facts stage reads (DXA
scores and BMD, femoral neck, TBS, labs and height, menopausal status, and the laboratory
tests a card may order, whose recent results are not ordered again). LOINC codes are
written bare (`38267-1`), other systems as `system|code` (FHIR token search).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

OBSERVATION_FILES = (
    "dxa-codes.json",
    "femoral-neck-codes.json",
    "tbs-codes.json",
    "lab-codes.json",
    "menopausal-status.json",
    "order-codes.json",  # laboratory results: a recent test is not ordered again (CS-6.1)
)
LOINC = "http://loinc.org"


def profiles_dir() -> Path:
    env = os.environ.get("OSTEOHOOKS_FHIR_PROFILES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "fhir_profiles"


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


def observation_codes(folder: Path | None = None) -> list[str]:
    """Token search values, de-duplicated in file order; [] when no profile file exists."""
    folder = folder or profiles_dir()
    tokens: dict[str, None] = {}
    for name in OBSERVATION_FILES:
        path = folder / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for system, code in _codings(data):
            if system == "http://hl7.org/fhir/sid/icd-10-cm":
                continue  # diagnoses are Conditions, not Observation codes
            tokens[code if system == LOINC else f"{system}|{code}"] = None
    return list(tokens)
