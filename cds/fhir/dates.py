"""FHIR date and dateTime values: partial dates, time zones, and the ordering rule.

Rule (documented in docs/fhir-inputs.md):

* The *date* of an event is the calendar date as written in the source, never shifted by
  the UTC offset (a scan at ``2024-05-01T23:30:00-05:00`` was on 1 May at the clinic).
* A partial date stands for its first day: ``2024`` is 2024-01-01 and ``2024-05`` is
  2024-05-01 (the earliest instant it can mean); the precision is kept so callers can
  say so.
* Events are *ordered* by their earliest instant in UTC: the offset is applied when
  present; a date, a partial date or a time without offset is read as UTC.
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Literal

Precision = Literal["year", "month", "day", "time"]

_DATETIME = re.compile(
    r"^(?P<y>[0-9]{4})(?:-(?P<m>[0-9]{2})(?:-(?P<d>[0-9]{2})"
    r"(?:T(?P<H>[0-9]{2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:\.(?P<f>[0-9]{1,9}))?)?"
    r"(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?$"
)


@dataclass(frozen=True, slots=True)
class When:
    """A parsed FHIR date/dateTime."""

    date: date
    instant: datetime  # earliest instant, UTC
    precision: Precision
    text: str
    #: the date as YYYY-MM-DD (str(date), made once per parsed text: traces print it)
    day: str = ""

    def __post_init__(self) -> None:
        if not self.day:
            object.__setattr__(self, "day", self.date.isoformat())

    @property
    def partial(self) -> bool:
        return self.precision in ("year", "month")


@functools.lru_cache(maxsize=4096)
def parse_when(text: str) -> When:
    """Parse a FHIR date or dateTime; raise ValueError saying what is wrong.

    Memoised (a When is immutable): one record's dates repeat across its resources.
    """
    if len(text) == 10 and text[4] == "-" and text[7] == "-" and text[:4].isdigit():
        try:  # fast path: a full date, the common case
            d = date.fromisoformat(text)
        except ValueError:
            pass
        else:
            if d.year >= 1:
                instant = datetime(d.year, d.month, d.day, tzinfo=UTC)
                return When(date=d, instant=instant, precision="day", text=text)
    m = _DATETIME.match(text)
    if m is None:
        raise ValueError(
            f"'{text}' is not a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD[Thh:mm:ss+zz:zz])"
        )
    year = int(m["y"])
    if year < 1:
        raise ValueError(f"'{text}': year 0000 does not exist")
    month = int(m["m"]) if m["m"] else 1
    day = int(m["d"]) if m["d"] else 1
    precision: Precision = "year" if not m["m"] else "month" if not m["d"] else "day"
    try:
        local_date = date(year, month, day)
    except ValueError as exc:
        raise ValueError(f"'{text}': {exc}") from None
    hour = minute = second = micro = 0
    offset = timedelta(0)
    if m["H"] is not None:
        precision = "time"
        hour, minute = int(m["H"]), int(m["M"])
        second = int(m["S"]) if m["S"] else 0
        if m["f"]:
            micro = int(m["f"][:6].ljust(6, "0"))
        if hour > 23 or minute > 59 or second > 60:
            raise ValueError(f"'{text}': time out of range")
        second = min(second, 59)  # leap second
        tz = m["tz"]
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            oh, om = int(tz[1:3]), int(tz[4:6])
            if oh > 14 or om > 59:
                raise ValueError(f"'{text}': time zone offset out of range")
            offset = sign * timedelta(hours=oh, minutes=om)
    try:
        local = datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
        instant = local.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"'{text}': {exc}") from None
    return When(date=local_date, instant=instant, precision=precision, text=text)


@functools.lru_cache(maxsize=4096)
def add_months(start: date, months: int) -> date:
    """start + months, clamped to the last day of a shorter month (31 Mar + 11 = 28/29 Feb).

    Memoised like parse_when (dates are immutable; the as-of date and a record's dates
    repeat across its facts); a ValueError is raised again on every call (not cached).
    """
    total = start.year * 12 + (start.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    if year < 1 or year > 9999:
        raise ValueError("date out of range")
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(start.day, last))


@functools.lru_cache(maxsize=4096)
def whole_months(start: date, end: date) -> int:
    """Whole calendar months from start to end (negative when end is before start).

    A month is complete on the same day of the month, or on the last day of a shorter
    month, so ``whole_months(d, add_months(d, n)) == n`` for every d and n >= 0.
    """
    if end < start:
        return -whole_months(end, start)
    months = (end.year - start.year) * 12 + (end.month - start.month)
    if end.day < start.day and end.day != calendar.monthrange(end.year, end.month)[1]:
        months -= 1
    return months


@functools.lru_cache(maxsize=4096)
def fractional_months(start: date, end: date) -> float:
    """Months from start to end: whole months plus the rest in days / 30.4375."""
    if end <= start:
        return 0.0
    whole = whole_months(start, end)
    rest = (end - add_months(start, whole)).days
    return whole + rest / 30.4375
