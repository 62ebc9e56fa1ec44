"""The one null the card contract specifies (dxa-order-timing `exception`: "code or null")
passes the service's no-null guard; every other null is still refused."""

from __future__ import annotations

from typing import Any

import pytest

from cds.api.hooks import _no_empty


def card(topic: str, **payload: Any) -> dict[str, Any]:
    return {
        "uuid": "0b0b0b0b-0000-4000-8000-000000000000",
        "summary": "s",
        "indicator": "info",
        "source": {"label": "l", "topic": {"code": topic}},
        "extension": {"org.osteohooks": {"rule": "r", "evidence": ["CS-8.2"], **payload}},
    }


def test_the_contract_null_is_sent() -> None:
    _no_empty([card("dxa-order-timing", tooSoon=False, exception=None)], "cards")


@pytest.mark.parametrize(
    "bad",
    [
        card("dxa-order-timing", tooSoon=False, exception=None, earliestDate=None),
        card("therapy-safety", findings=["x"], exception=None),
        {**card("dxa-order-timing", exception=None), "detail": None},
        card("dxa-order-timing", exception=""),
    ],
    ids=["other-field-of-the-card", "exception-on-another-topic", "card-field", "empty-string"],
)
def test_every_other_null_or_empty_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="null or empty"):
        _no_empty([bad], "cards")
