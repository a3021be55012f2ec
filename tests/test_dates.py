"""Tests of geochange.dates: the one date parser."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from geochange.dates import is_missing, name_date, parse_dates, to_date, value_date
from geochange.errors import DateError


def test_parse_dates() -> None:
    assert parse_dates(["2023-01-15,2023-02-01", "20230301", dt.date(2023, 4, 1)]) == [
        dt.date(2023, 1, 15),
        dt.date(2023, 2, 1),
        dt.date(2023, 3, 1),
        dt.date(2023, 4, 1),
    ]
    with pytest.raises(DateError, match=r"'2023-13-01' is not a valid date; expected YYYY-MM-DD"):
        parse_dates(["2023-01-01,2023-13-01"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023-01-15", dt.date(2023, 1, 15)),
        ("2023:01:15 10:00:00", dt.date(2023, 1, 15)),
        ("20230115T101500Z", dt.date(2023, 1, 15)),
        ("2023-02-30", None),
        ("2023-01-151", None),
        ("", None),
        (None, None),
    ],
)
def test_value_date(value: str | None, expected: dt.date | None) -> None:
    assert value_date(value) == expected


def test_name_date_takes_the_first_valid_date() -> None:
    assert name_date("/data/S2_20231301_20230115.tif") == dt.date(2023, 1, 15)
    assert name_date("scene_2023_02_14_B04.tif") == dt.date(2023, 2, 14)
    assert name_date("tile_120230115.tif") is None  # inside a longer number


def test_to_date_reads_what_tables_hold() -> None:
    assert to_date("2023-06-01T10:00:00", "change_date") == dt.date(2023, 6, 1)
    assert to_date(pd.Timestamp("2023-06-01 10:00"), "change_date") == dt.date(2023, 6, 1)
    assert to_date(dt.datetime(2023, 6, 1, 10), "change_date") == dt.date(2023, 6, 1)
    assert to_date(np.datetime64("2023-06-01"), "change_date") == dt.date(2023, 6, 1)
    with pytest.raises(DateError, match=r"change_date: found 'June'; expected an ISO date"):
        to_date("June", "change_date")


@pytest.mark.parametrize("value", [None, float("nan"), pd.NaT, pd.NA, np.datetime64("NaT")])
def test_is_missing(value: object) -> None:
    assert is_missing(value)


@pytest.mark.parametrize("value", ["", "2023-06-01", dt.date(2023, 6, 1), 0])
def test_is_not_missing(value: object) -> None:
    assert not is_missing(value)
