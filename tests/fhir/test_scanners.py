"""cds.fhir.scanners (through Reader): a result's scanner, by Device reference, identifier
or display (CS-1.4 rev 2)."""

from __future__ import annotations

from tests.fhir.helpers import ignored, read
from tests.fhir_factory import device, lumbar_t


def test_a_referenced_device_gives_identity_label_and_manufacturer() -> None:
    data = read(device("d1"), lumbar_t(-1.0, device="d1"), lumbar_t(-1.5, device="d1", id="b"))
    scanners = {mm.scanner for mm in data.measurements}
    assert len(scanners) == 1
    (sc,) = scanners
    assert sc is not None
    assert (sc.identity, sc.label, sc.manufacturer) == ("Device/d1", "Hologic Horizon A", "hologic")


def test_a_device_no_result_uses_is_traced() -> None:
    data = read(device("d1"), lumbar_t(-1.0))
    assert ignored(data, "Device/d1") == ["Device not referenced by a DXA result used"]


def test_a_display_that_is_only_a_reference_names_nothing() -> None:
    (mm,) = read(lumbar_t(-1.0, device_display="Device/abc")).measurements
    assert mm.scanner is not None
    assert (mm.scanner.identity, mm.scanner.label, mm.scanner.manufacturer) == (
        None,
        None,
        "other",
    )


def test_an_identifier_is_an_identity() -> None:
    obs = lumbar_t(-1.0)
    obs["device"] = {"identifier": {"system": "urn:serial", "value": "123"}}
    (mm,) = read(obs).measurements
    assert mm.scanner is not None
    assert (mm.scanner.identity, mm.scanner.manufacturer) == ("urn:serial|123", "unknown")
