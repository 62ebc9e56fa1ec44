"""What cards need from ``fhir_profiles/``: order codes and the card-topic CodeSystem.

Read once per folder from the JSON data (``order-codes.json``, ``card-topics.json``) so
that a site can change a LOINC/CPT code or a display without touching Python.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ServiceRequest.category per order category (FHIR servicerequest-category, SNOMED CT).
_CATEGORY_CODINGS: dict[str, dict[str, str]] = {
    "laboratory": {
        "system": "http://snomed.info/sct",
        "code": "108252007",
        "display": "Laboratory procedure",
    },
    "imaging": {"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"},
}


class CatalogError(RuntimeError):
    """fhir_profiles/ data the cards need is missing or malformed (a deployment error)."""


@dataclass(frozen=True)
class OrderCode:
    key: str
    system: str
    code: str
    display: str
    category: str | None = None

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}

    def category_coding(self) -> dict[str, str] | None:
        return _CATEGORY_CODINGS.get(self.category or "")


@dataclass(frozen=True)
class Catalog:
    """Order codes by key and the card-topic codings."""

    folder: Path
    orders: dict[str, OrderCode]
    topic_system: str
    topic_displays: dict[str, str]

    def order(self, key: str) -> OrderCode:
        try:
            return self.orders[key]
        except KeyError:
            raise CatalogError(
                f"unknown order key {key!r} (not in {self.folder / 'order-codes.json'})"
            ) from None

    def topic_coding(self, topic: str) -> dict[str, str]:
        display = self.topic_displays.get(topic)
        if display is None:
            raise CatalogError(f"card topic {topic!r} is not in {self.folder / 'card-topics.json'}")
        return {"system": self.topic_system, "code": topic, "display": display}


def default_profiles_dir() -> Path:
    """$OSTEOHOOKS_FHIR_PROFILES, else the repository's ``fhir_profiles/``."""
    env = os.environ.get("OSTEOHOOKS_FHIR_PROFILES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "fhir_profiles"


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from None


def _build(folder: Path) -> Catalog:
    raw_orders = _read(folder / "order-codes.json")
    if isinstance(raw_orders, dict) and isinstance(raw_orders.get("orders"), dict):
        raw_orders = raw_orders["orders"]
    if not isinstance(raw_orders, dict):
        raise CatalogError(f"{folder / 'order-codes.json'}: expected an object of orders")
    orders: dict[str, OrderCode] = {}
    for key, entry in raw_orders.items():
        if not isinstance(entry, dict):
            continue
        try:
            orders[key] = OrderCode(
                key=key,
                system=str(entry["system"]),
                code=str(entry["code"]),
                display=str(entry["display"]),
                category=str(entry["category"]) if entry.get("category") else None,
            )
        except KeyError as exc:
            raise CatalogError(
                f"{folder / 'order-codes.json'}: order {key!r} lacks {exc.args[0]!r}"
            ) from None
    topics = _read(folder / "card-topics.json")
    try:
        system = str(topics["system"])
        displays = {str(k): str(v["display"]) for k, v in topics["topics"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise CatalogError(f"{folder / 'card-topics.json'}: malformed ({exc})") from None
    return Catalog(folder=folder, orders=orders, topic_system=system, topic_displays=displays)


_CACHE: dict[Path, Catalog] = {}
_LOCK = threading.Lock()


def load_catalog(folder: Path | None = None) -> Catalog:
    """The catalog of ``folder`` (default: :func:`default_profiles_dir`), loaded once."""
    path = (folder or default_profiles_dir()).resolve()
    with _LOCK:
        catalog = _CACHE.get(path)
        if catalog is None:
            catalog = _build(path)
            _CACHE[path] = catalog
        return catalog
