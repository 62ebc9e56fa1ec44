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


def test_a_referenced_device_that_is_not_in_the_data_is_traced_as_not_available_once() -> None:
    """Card contract rev 2: the cards name the scanner by the reference's display, and the
    trace says the Device was not available."""
    data = read(
        lumbar_t(-1.0, device="gone", device_display="Hologic Horizon A SN 123"),
        lumbar_t(-1.5, device="gone", device_display="Hologic Horizon A SN 123", id="b"),
    )
    (reason,) = ignored(data, "Device/gone")
    assert "not available" in reason
    assert "reference's display" in reason
    assert {mm.scanner.label for mm in data.measurements if mm.scanner} == {
        "Hologic Horizon A SN 123"
    }
    present = read(device("d1"), lumbar_t(-1.0, device="d1"))
    assert not [i for i in present.trace.ignored if "not available" in i.reason]
