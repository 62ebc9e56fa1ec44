"""The DXA scanner of a result (CS-1.4 rev 2): its identity, label and manufacturer."""

from __future__ import annotations

import re

from cds.fhir import models as m
from cds.fhir.bundle import ref_target
from cds.fhir.common import ReadContext
from cds.fhir.records import Manufacturer, Scanner

#: A display that is only a relative or absolute FHIR reference ("Device/abc").
_REFERENCE_TEXT = re.compile(r"^(?:\S*/)?[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


def scanner(ctx: ReadContext, device: m.Reference | None) -> Scanner | None:
    """The scanner a result's `device` names (read once per Reference), None without one."""
    if device is None:
        return None
    ident = device.get("identifier")
    key = (
        device.get("reference"),
        device.get("display"),
        None if ident is None else (ident.get("system"), ident.get("value")),
    )
    hit = ctx.scanners.get(key)
    if hit is None:
        hit = ctx.scanners[key] = read_scanner(ctx, device)
    return hit


def read_scanner(ctx: ReadContext, device: m.Reference) -> Scanner:
    """CS-1.4 (rev 2): identity by Device reference, by identifier, or by a display that
    carries a serial number or other identifier (profile patterns), compared case- and
    whitespace-insensitively; the label is the Device's manufacturer and model when
    known, else the display, never the raw reference (None: nothing to show)."""
    identity: str | None = None
    shown = device.get("display")
    display = " ".join((shown or "").split()) or None
    if display is not None and _REFERENCE_TEXT.match(display):
        display = None  # a reference copied into the display names nothing (CS-1.4)
    label = display
    texts: list[str] = [shown or ""]
    reference = device.get("reference")
    ident = device.get("identifier")
    if reference:
        identity = ref_target(reference, ctx.urls) or reference
        dev = ctx.devices.get(identity)
        if dev is not None:
            label = _device_label(dev, texts) or label
        elif identity.startswith("Device/") and identity not in ctx.missing_devices:
            # the contract (rev 2): the trace says the Device was not available
            ctx.missing_devices.add(identity)
            named = "the reference's display" if label else "no name (scanner not identified)"
            ctx.data.trace.ignore(
                identity,
                f"referenced by a DXA result but not in the data (not available): the "
                f"scanner is named by {named}",
            )
    elif ident is not None and ident.get("value"):
        identity = f"{ident.get('system') or ''}|{ident.get('value')}"
    elif display is not None and any(p.search(display) for p in ctx.p.device_identifiers):
        identity = f"display|{display.casefold()}"
    return Scanner(identity=identity, label=label, manufacturer=_manufacturer(ctx, texts))


def _device_label(dev: m.Device, texts: list[str]) -> str:
    """The Device's manufacturer and model ("" when unknown); its words go to `texts`."""
    names = [name for n in dev.get("deviceName", ()) if (name := n.get("name"))]
    manufacturer, number = dev.get("manufacturer"), dev.get("modelNumber")
    texts += [manufacturer or "", number or "", *names]
    kind = dev.get("type")
    if kind is not None:
        texts.append(m.words(kind))
    model = number or (names[0] if names else None)
    known = [t for t in (manufacturer, model) if t]
    if manufacturer and model and manufacturer.lower() in model.lower():
        known = [model]  # deviceName "Hologic Horizon A" already names it
    return " ".join(known)


def _manufacturer(ctx: ReadContext, texts: list[str]) -> Manufacturer:
    words = " ".join(t for t in texts if t).lower()
    if not words.strip():
        return "unknown"
    for needle, mf in ctx.p.manufacturers:
        if needle in words:
            return mf  # type: ignore[return-value]
    return "other"
