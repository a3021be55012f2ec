"""Dates: the one parser of acquisition and change dates (standard library only).

An acquisition is a day (``datetime.date``) or a day with its time (``datetime.datetime``,
naive, UTC). The rule for times (:func:`settle`): times a user gives (``--dates
2023-01-15T10:00``) are kept; times read from tags, file names or a time coordinate are kept
only when two acquisitions fall on one day (then they tell them apart); otherwise dates are
days. Within one stack the dates are all days or all datetimes, never a mix.

- :func:`parse_dates`: dates a user gives (``--dates``, ``open_stack(dates=)``), strict.
- :func:`value_when` and :func:`name_when`: a date, with its time when one is written, at the
  start of a tag value or inside a file name; :func:`value_date` and :func:`name_date` the day
  alone. None when there is none.
- :func:`to_date`: a date read back from a table or a raster tag (``date``, ``datetime``, pandas
  ``Timestamp`` or an ISO string, time of day ignored); :func:`to_when` keeps the time;
  :func:`is_missing` tells empty cells.
- :func:`iso`: the ISO text of a date or datetime (``2023-01-15`` or ``2023-01-15T10:00:00``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geochange.errors import DateError

__all__ = [
    "DateLike",
    "When",
    "has_times",
    "is_missing",
    "iso",
    "like",
    "name_date",
    "name_when",
    "parse_dates",
    "settle",
    "to_date",
    "to_when",
    "value_date",
    "value_when",
]

DateLike = str | dt.date
#: A day, or a day with its time of acquisition (naive, UTC).
When = dt.date | dt.datetime

# A date in a file name: 20230115, 2023-01-15 or 2023_01_15, not inside a longer number.
_NAME_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d)([-_]?)(\d\d)\2(\d\d)(?!\d)")
# A date at the start of a tag value: 2023-01-15, 2023:01:15 (TIFF DateTime) or 20230115.
_VALUE_DATE = re.compile(r"^\s*(\d{4})([-:/]?)(\d{2})\2(\d{2})(?=$|[T\s_Z+])")
# A date a user types: 2023-01-15 or 20230115, optionally with a time: T10:00, T10:00:30,
# T101500, then Z or an offset such as +02:00.
_USER_DATE = re.compile(
    r"(\d{4})(-?)(\d{2})\2(\d{2})"
    r"(?:T(\d{2}):?(\d{2})(?::?(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
)
# A time right after a date in a tag value: T10:00:00, " 10:00:00" (TIFF), T101500, + zone.
_VALUE_TIME = re.compile(r"[T\s_](\d{2}):?(\d{2})(?::?(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?")
# A time right after a date in a file name: 20230115T101500 (Sentinel-2, Landsat collections).
_NAME_TIME = re.compile(r"T(\d{2})(\d{2})(\d{2})(?!\d)")


def _ymd(match: re.Match[str]) -> dt.date | None:
    try:
        return dt.date(int(match[1]), int(match[3]), int(match[4]))
    except ValueError:
        return None


def _with_time(
    day: dt.date, hh: str | None, mm: str | None, ss: str | None, zone: str | None
) -> When | None:
    """``day`` at hh:mm:ss (naive UTC; a zone is converted), or None when the time is invalid."""
    if hh is None:
        return day
    try:
        when = dt.datetime(day.year, day.month, day.day, int(hh), int(mm or 0), int(ss or 0))
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        when -= sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return when


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def parse_dates(values: Sequence[DateLike]) -> list[When]:
    """Parse dates given by a user.

    Args:
        values: ``datetime.date``/``datetime.datetime`` objects or strings ``YYYY-MM-DD`` (also
            ``YYYYMMDD``), optionally with a time ``THH:MM[:SS]`` and a zone (``Z``, ``+02:00``);
            a string may hold several dates separated by commas or spaces.

    Returns:
        The dates, in the order given: days, or datetimes (naive UTC) where a time was given.

    Raises:
        DateError: a value is not a valid date.
    """
    out: list[When] = []
    for value in values:
        if isinstance(value, dt.datetime):
            out.append(_naive_utc(value))
            continue
        if isinstance(value, dt.date):
            out.append(value)
            continue
        for part in re.split(r"[,\s]+", str(value).strip()):
            if not part:
                continue
            match = _USER_DATE.fullmatch(part)
            day = _ymd(match) if match else None
            when = _with_time(day, *match.groups()[4:]) if day is not None else None
            if when is None:
                raise DateError(
                    f"--dates: {part!r} is not a valid date; expected YYYY-MM-DD, e.g. "
                    "2023-01-15, or with a UTC time 2023-01-15T10:00. Fix: correct the date"
                )
            out.append(when)
    return out


def has_times(values: Sequence[When]) -> bool:
    """True when any value is a datetime."""
    return any(isinstance(v, dt.datetime) for v in values)


def settle(values: Sequence[When], keep_times: bool = False) -> list[When]:
    """One kind of date for a stack (see the module docstring).

    Args:
        values: per acquisition a day or a datetime.
        keep_times: keep the times (they were given by the user).

    Returns:
        All datetimes (a day without a time at 00:00) when ``keep_times`` or when two values
        with times fall on one day; otherwise all days.
    """
    days = [v.date() if isinstance(v, dt.datetime) else v for v in values]
    shared = len(set(days)) < len(days) and has_times(values)
    if not (keep_times and has_times(values)) and not shared:
        return days
    return [
        v if isinstance(v, dt.datetime) else dt.datetime(v.year, v.month, v.day) for v in values
    ]


def iso(value: When) -> str:
    """``2023-01-15`` for a day, ``2023-01-15T10:00:00`` for a datetime."""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    return value.isoformat()


def value_date(value: str | None) -> dt.date | None:
    """A date at the start of a tag value (``2023-01-15...``, ``2023:01:15 10:00:00``)."""
    if not value:
        return None
    match = _VALUE_DATE.match(value)
    return _ymd(match) if match else None


def value_when(value: str | None) -> When | None:
    """Like :func:`value_date`, with the time when the value has one (``2023:01:15 10:00:00``,
    ``2023-01-15T10:00:00Z``) as a naive UTC datetime."""
    day = value_date(value)
    if day is None:
        return None
    rest = str(value).strip()[10:]
    time = _VALUE_TIME.match(rest)
    return (_with_time(day, *time.groups()) or day) if time else day


def name_date(path: str) -> dt.date | None:
    """The first valid date in a file name."""
    when = name_when(path)
    return when.date() if isinstance(when, dt.datetime) else when


def name_when(path: str) -> When | None:
    """The first valid date in a file name, with its time when ``THHMMSS`` follows it
    (``S2B_MSIL2A_20230115T101409_...``)."""
    name = Path(path).name
    for match in _NAME_DATE.finditer(name):
        date = _ymd(match)
        if date is not None:
            time = _NAME_TIME.match(name, match.end())
            return (_with_time(date, *time.groups(), None) or date) if time else date
    return None


def is_missing(value: Any) -> bool:
    """True for an empty table cell: None, NaN, NaT."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and NaT are the values unequal to themselves
    except TypeError:  # pandas NA: a comparison with it is NA again, which has no truth value
        return True


def to_when(value: Any, what: str) -> When:
    """Like :func:`to_date`, keeping the time of a datetime, a pandas Timestamp or an ISO string
    written with one (``2023-06-01T10:00:00``), as a naive UTC datetime."""
    if isinstance(value, dt.datetime):
        return _naive_utc(value)
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    if len(text) > 10:
        try:
            return _naive_utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            pass
    return to_date(value, what)


def like(value: Any, dates: Sequence[When], what: str) -> When:
    """``value`` (a table cell, tag or date) as the kind of ``dates``: a datetime when the
    stack's dates carry times (a day alone at 00:00), else a day."""
    if not has_times(dates):
        return to_date(value, what)
    when = to_when(value, what)
    return when if isinstance(when, dt.datetime) else dt.datetime(when.year, when.month, when.day)


def to_date(value: Any, what: str) -> dt.date:
    """A ``datetime.date`` from a date, datetime, pandas Timestamp or ISO string.

    Strings are read by their first 10 characters (``2023-06-01T10:00:00`` is 2023-06-01).

    Args:
        value: the value to read.
        what: the argument, column or tag it comes from, named in the error.

    Raises:
        DateError: ``value`` is not a date.
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise DateError(
            f"{what}: found {value!r}; expected an ISO date YYYY-MM-DD such as 2023-06-01. "
            "Fix: correct the date"
        ) from None
