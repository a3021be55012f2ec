"""Dates: the one parser of acquisition and change dates (standard library only).

- :func:`parse_dates`: dates a user gives (``--dates``, ``open_stack(dates=)``), strict.
- :func:`value_date` and :func:`name_date`: a date at the start of a tag value or inside a file
  name, None when there is none.
- :func:`to_date`: a date read back from a table or a raster tag (``date``, ``datetime``, pandas
  ``Timestamp`` or an ISO string, time of day ignored); :func:`is_missing` tells empty cells.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geochange.errors import DateError

__all__ = ["DateLike", "is_missing", "name_date", "parse_dates", "to_date", "value_date"]

DateLike = str | dt.date

# A date in a file name: 20230115, 2023-01-15 or 2023_01_15, not inside a longer number.
_NAME_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d)([-_]?)(\d\d)\2(\d\d)(?!\d)")
# A date at the start of a tag value: 2023-01-15, 2023:01:15 (TIFF DateTime) or 20230115.
_VALUE_DATE = re.compile(r"^\s*(\d{4})([-:/]?)(\d{2})\2(\d{2})(?=$|[T\s_Z+])")
# A date a user types: 2023-01-15 or 20230115.
_USER_DATE = re.compile(r"(\d{4})(-?)(\d{2})\2(\d{2})")


def _ymd(match: re.Match[str]) -> dt.date | None:
    try:
        return dt.date(int(match[1]), int(match[3]), int(match[4]))
    except ValueError:
        return None


def parse_dates(values: Sequence[DateLike]) -> list[dt.date]:
    """Parse dates given by a user.

    Args:
        values: ``datetime.date`` objects or strings ``YYYY-MM-DD`` (also ``YYYYMMDD``); a string
            may hold several dates separated by commas or spaces.

    Returns:
        The dates, in the order given.

    Raises:
        DateError: a value is not a valid date.
    """
    out: list[dt.date] = []
    for value in values:
        if isinstance(value, dt.datetime):
            out.append(value.date())
            continue
        if isinstance(value, dt.date):
            out.append(value)
            continue
        for part in re.split(r"[,\s]+", str(value).strip()):
            if not part:
                continue
            match = _USER_DATE.fullmatch(part)
            date = _ymd(match) if match else None
            if date is None:
                raise DateError(
                    f"--dates: {part!r} is not a valid date; expected YYYY-MM-DD, e.g. "
                    "2023-01-15. Fix: correct the date"
                )
            out.append(date)
    return out


def value_date(value: str | None) -> dt.date | None:
    """A date at the start of a tag value (``2023-01-15...``, ``2023:01:15 10:00:00``)."""
    if not value:
        return None
    match = _VALUE_DATE.match(value)
    return _ymd(match) if match else None


def name_date(path: str) -> dt.date | None:
    """The first valid date in a file name."""
    for match in _NAME_DATE.finditer(Path(path).name):
        date = _ymd(match)
        if date is not None:
            return date
    return None


def is_missing(value: Any) -> bool:
    """True for an empty table cell: None, NaN, NaT."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and NaT are the values unequal to themselves
    except TypeError:  # pandas NA: a comparison with it is NA again, which has no truth value
        return True


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
