"""Dates with times: two acquisitions of one day are two dates when their times differ, from
--dates, tags, file names or a cube's time coordinate; the outputs carry the times (DATETIME
fields, the date raster's tags and attribute table, the xarray result)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.shutil
from helpers import run_cli, write_geotiff, write_stack

import geochange
from geochange.dates import iso, name_when, parse_dates, settle, to_when, value_when
from geochange.errors import DateError
from geochange.io.gpkg import default_style_qml
from geochange.io.stack import open_stack

WHENS = [
    dt.datetime(2022, 3, 1, 10, 0),
    dt.datetime(2022, 3, 1, 14, 30),
    dt.datetime(2022, 5, 17, 10, 0),
]
ISO = ["2022-03-01T10:00:00", "2022-03-01T14:30:00", "2022-05-17T10:00:00"]


def _scene(t=3, c=3, h=40, w=48, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(1000, 80, size=(c, h, w)).astype(np.float32)
    data = np.stack([base + rng.normal(0, 10, size=base.shape) for _ in range(t)])
    data[1:, :, 10:25, 12:30] += np.array([600, -400, 900][:c], np.float32)[:, None, None]
    data[2:, :, 28:36, 30:44] += np.array([500, 300, -300][:c], np.float32)[:, None, None]
    return np.clip(data, 1, 60000).astype(np.uint16)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-01-15T10:00", dt.datetime(2023, 1, 15, 10, 0)),
        ("2023-01-15T10:00:30Z", dt.datetime(2023, 1, 15, 10, 0, 30)),
        ("2023-01-15T12:00+02:00", dt.datetime(2023, 1, 15, 10, 0)),
        ("20230115T101500", dt.datetime(2023, 1, 15, 10, 15)),
        ("2023-01-15", dt.date(2023, 1, 15)),
    ],
)
def test_parse_dates_keeps_a_given_time_in_utc(text, expected):
    assert parse_dates([text]) == [expected]
    assert type(parse_dates([text])[0]) is type(expected)


def test_bad_times_are_refused():
    with pytest.raises(DateError, match=r"'2023-01-15T25:00' is not a valid date.*T10:00"):
        parse_dates(["2023-01-15T25:00"])


def test_tags_and_names_give_times():
    assert value_when("2023:01:15 10:00:00") == dt.datetime(2023, 1, 15, 10)  # TIFF DateTime
    assert value_when("2023-01-15T10:00:00Z") == dt.datetime(2023, 1, 15, 10)
    assert value_when("2023-01-15") == dt.date(2023, 1, 15)
    s2 = "S2B_MSIL2A_20230115T101409_N0509_R022_T32TQM_20230115T121418.tif"
    assert name_when(s2) == dt.datetime(2023, 1, 15, 10, 14, 9)
    assert name_when("S2_20230115_B04.tif") == dt.date(2023, 1, 15)
    assert to_when("2023-01-15T10:00:00", "x") == dt.datetime(2023, 1, 15, 10)
    assert iso(dt.datetime(2023, 1, 15, 10)) == "2023-01-15T10:00:00"


def test_settle_keeps_times_only_when_they_are_needed_or_given():
    days = [dt.datetime(2022, 3, 1, 10), dt.datetime(2022, 5, 17, 10, 30)]
    assert settle(days) == [dt.date(2022, 3, 1), dt.date(2022, 5, 17)]  # tags' times dropped
    assert settle(days, keep_times=True) == days  # a user's times kept
    assert settle(WHENS) == WHENS  # one day twice: the times tell them apart
    mixed = [dt.date(2022, 3, 1), dt.datetime(2022, 3, 1, 14, 30)]
    assert settle(mixed) == [dt.datetime(2022, 3, 1), dt.datetime(2022, 3, 1, 14, 30)]


def test_two_files_of_one_day_from_their_tags_are_two_dates(tmp_path):
    data = _scene()
    (tmp_path / "s").mkdir()
    for i, when in enumerate(WHENS):
        tag = {"TIFFTAG_DATETIME": when.strftime("%Y:%m:%d %H:%M:%S")}
        write_geotiff(tmp_path / "s" / f"x{i}.tif", data[i], tags=tag)
    assert open_stack(tmp_path / "s").dates == tuple(WHENS)
    # the same from file names, Sentinel-2 style
    write_stack(
        tmp_path / "n", data, WHENS, tag_dates=False, name_fmt="S2_{date:%Y%m%dT%H%M%S}.tif"
    )
    assert open_stack(tmp_path / "n").dates == tuple(WHENS)


def test_one_day_twice_without_a_time_is_refused(tmp_path):
    data = _scene()
    paths = write_stack(tmp_path / "s", data, ["2022-03-01", "2022-05-17", "2022-06-01"])
    with rasterio.open(paths[1], "r+") as dst:
        dst.update_tags(ACQUISITION_DATE="2022-03-01T14:30:00")
    with pytest.raises(DateError, match=r"are both of 2022-03-01 and .*S2_20220301\.tif has no "
                       r"time; expected a time for each acquisition of one day"):  # fmt: skip
        open_stack(tmp_path / "s")


def test_dates_with_times_reach_every_output(tmp_path):
    """Three files, two of one day: --dates with times; the GeoPackage has DATETIME fields
    that read back with their times, the date raster's tags and table carry them."""
    paths = write_stack(tmp_path / "s", _scene(), ["2022-01-01", "2022-01-02", "2022-01-03"])
    out = tmp_path / "o" / "c.gpkg"
    given = "2022-03-01T10:00,2022-03-01T14:30,2022-05-17T10:00"
    code, stdout, err = run_cli(
        "detect", *paths, "--dates", given, "-o", out, "--method", "cva", "--no-progress",
        "--chunk-size", "32",
    )  # fmt: skip
    assert code == 0, err
    assert "(2022-03-01 10:00:00 .. 2022-05-17 10:00:00)" in stdout
    changes = pyogrio.read_dataframe(out, layer="changes")
    assert len(changes) >= 2
    got = {c.isoformat() for c in changes["change_date"]}
    assert got <= set(ISO[1:]) and len(got) == 2, got  # both changes, at their times
    before = {c.isoformat() for c in changes["date_before"]}
    assert before <= set(ISO[:2])
    with sqlite3.connect(out) as db:
        schema = db.execute("SELECT sql FROM sqlite_master WHERE name = 'changes'").fetchone()[0]
    assert '"change_date" DATETIME' in schema
    runs = pyogrio.read_dataframe(out, layer="runs")
    assert ISO[1] in runs["dates"][0]
    date_tif = out.with_name("c_date.tif")
    with rasterio.open(date_tif) as src:
        assert [src.tags()[f"DATE_{j}"] for j in (1, 2)] == ISO[1:]
    rasterio.shutil.copy(date_tif, tmp_path / "d.vrt", driver="VRT")
    table = ET.parse(tmp_path / "d.vrt").find("VRTRasterBand/GDALRasterAttributeTable")
    rows = [[f.text or "" for f in row.findall("F")] for row in table.findall("Row")]
    assert [r[2] for r in rows[1:3]] == ISO[1:]
    qml = ET.fromstring(default_style_qml(ISO).split("\n", 1)[1])
    ranges = qml.findall("renderer-v2/ranges/range")
    assert [r.get("upper") for r in ranges] == ["20220301143000", "20220517100000"]
    assert "yyyyMMddhhmmss" in qml.find("renderer-v2").get("attr")


def test_a_cube_with_one_day_twice_keeps_the_times(tmp_path):
    import pandas as pd
    import rioxarray
    import xarray as xr

    paths = write_stack(tmp_path / "s", _scene(), ["2022-01-01", "2022-01-02", "2022-01-03"])
    times = pd.Index(pd.to_datetime(ISO), name="time")
    cube = xr.concat([rioxarray.open_rasterio(p) for p in paths], dim=times)
    result = geochange.detect(cube, method="cva", chunk_size=32)
    assert result.stack.dates == tuple(WHENS)
    ds = result.to_xarray()
    found = {str(t)[:19] for t in np.unique(ds["change_date"].values) if not np.isnat(t)}
    assert found == set(ISO[1:])


def test_since_on_dates_with_times_compares_days(tmp_path):
    paths = write_stack(tmp_path / "s", _scene(), ["2022-01-01", "2022-01-02", "2022-01-03"])
    stack = open_stack(paths, dates=ISO)
    late = geochange.detect(stack, method="cva", chunk_size=32, since="2022-05-01")
    assert set(late.changes["change_date"]) <= {ISO[2]}
    every = geochange.detect(stack, method="cva", chunk_size=32, since="2022-03-01")
    assert set(every.changes["change_date"]) == set(ISO[1:])
