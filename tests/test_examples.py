"""Examples of change read from vector files and rasterised on a stack's grid."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import LineString, Point, Polygon, box

from geochange.errors import InputError
from geochange.grid import GridSpec
from geochange.io.examples import parse_flag, read_examples

# 40 x 50 px of 10 m in UTM 33N; pixel (row, col) spans x 500000 + 10 col .. +10, y 5e6 - 10 row.
GRID = GridSpec(CRS.from_epsg(32633), Affine(10.0, 0, 500_000.0, 0, -10.0, 5_000_000.0), 40, 50)


def px_box(r0: int, c0: int, r1: int, c1: int) -> Polygon:
    """Polygon covering pixel rows r0..r1-1, cols c0..c1-1 of GRID."""
    return box(500_000 + 10 * c0, 5_000_000 - 10 * r1, 500_000 + 10 * c1, 5_000_000 - 10 * r0)


def write(path, layer, geoms, crs="EPSG:32633", **cols):
    gpd.GeoDataFrame(cols, geometry=geoms, crs=crs).to_file(path, layer=layer, driver="GPKG")
    return path


def test_change_column_labelled_layer_and_overlap(tmp_path):
    path = tmp_path / "ex.gpkg"
    write(path, "examples", [px_box(2, 2, 6, 6), px_box(10, 10, 14, 14), px_box(5, 5, 8, 8)],
          change=["yes", "0", "no"])  # fmt: skip
    write(path, "labelled", [px_box(20, 20, 30, 30)])
    write(path, "more", [px_box(22, 22, 24, 24)])  # no `change` column: all change
    ex = read_examples(path, GRID)
    lab = ex.label
    assert lab.shape == GRID.shape and lab.dtype == np.uint8
    assert (lab[2:5, 2:5] == 1).all()  # change only
    assert lab[5, 5] == 255  # change and no change overlap: unknown
    assert (lab[10:14, 10:14] == 0).all()
    assert (lab[20:30, 20:30][lab[20:30, 20:30] != 1] == 0).all()  # reviewed area: no change
    assert (lab[22:24, 22:24] == 1).all()
    assert lab[35, 45] == 255 and lab[0, 49] == 255
    assert (ex.n_change, ex.n_no_change, ex.n_labelled) == (2, 2, 1)
    assert len(ex.sha256) == 64 and ex.summary()["examples_change_px"] == ex.change_pixels


def test_other_crs_multipolygon_and_repaired_bowtie(tmp_path):
    import shapely

    path = tmp_path / "ex.gpkg"
    g = gpd.GeoSeries([px_box(2, 2, 6, 6).union(px_box(10, 30, 12, 40))], crs="EPSG:32633")
    write(path, "examples", list(g.to_crs("EPSG:4326")), crs="EPSG:4326", change=[1])
    bowtie = Polygon([(500_300, 4_999_700), (500_400, 4_999_600), (500_400, 4_999_700),
                      (500_300, 4_999_600)])  # fmt: skip
    assert not shapely.is_valid(bowtie)
    write(path, "bad", [bowtie], change=[True])
    lab = read_examples(path, GRID).label
    assert (lab[3:5, 3:5] == 1).all() and (lab[10:12, 31:39] == 1).all()
    assert (lab[30:40, 30:40] == 1).sum() > 0  # the repaired bow-tie


def test_verdict_rows_only_and_geochange_output_needs_verdict(tmp_path):
    path = tmp_path / "run.gpkg"
    write(path, "changes", [px_box(2, 2, 6, 6), px_box(10, 10, 14, 14), px_box(20, 20, 24, 24)],
          mean_prob=[0.9, 0.8, 0.7], verdict=["1", None, "no"])  # fmt: skip
    import pandas as pd
    import pyogrio

    pyogrio.write_dataframe(pd.DataFrame({"method": ["cnn-lstm"]}), path, layer="runs")
    ex = read_examples(path, GRID)
    assert (ex.label[2:6, 2:6] == 1).all() and (ex.label[20:24, 20:24] == 0).all()
    assert (ex.label[10:14, 10:14] == 255).all() and ex.n_unchecked == 1

    plain = tmp_path / "plain.gpkg"
    write(plain, "changes", [px_box(2, 2, 6, 6)], mean_prob=[0.9])
    pyogrio.write_dataframe(pd.DataFrame({"method": ["cnn-lstm"]}), plain, layer="runs")
    with pytest.raises(InputError, match="without a 'verdict' column"):
        read_examples(plain, GRID)


@pytest.mark.parametrize(
    "case, match",
    [
        ("outside", "no change polygon lies on the stack"),
        ("no_change_example", "no change example"),
        ("not_vector", "not vector data"),
        ("points", "is a Point, expected polygons"),
        ("lines", "is a LineString, expected polygons"),
        ("no_crs", "has no CRS"),
        ("bad_value", "holds 'maybe'"),
        ("missing", "file not found"),
    ],
)
def test_bad_examples_refused(tmp_path, case, match):
    path = tmp_path / "ex.gpkg"
    if case == "outside":
        write(path, "examples", [box(0, 0, 10, 10)], change=[1])
    elif case == "no_change_example":
        write(path, "examples", [px_box(2, 2, 6, 6)], change=[0])
    elif case == "not_vector":
        path = tmp_path / "ex.txt"
        path.write_text("this is not a vector file\n")
    elif case == "points":
        write(path, "examples", [Point(500_050, 4_999_950)], change=[1])
    elif case == "lines":
        write(path, "examples", [LineString([(500_050, 4_999_950), (500_150, 4_999_850)])])
    elif case == "no_crs":
        with pytest.warns(UserWarning, match="crs"):
            gpd.GeoDataFrame({"change": [1]}, geometry=[px_box(2, 2, 6, 6)]).to_file(path)
    elif case == "bad_value":
        write(path, "examples", [px_box(2, 2, 6, 6), px_box(8, 8, 9, 9)], change=["1", "maybe"])
    elif case == "missing":
        path = tmp_path / "nothing.gpkg"
    with pytest.raises(InputError, match=match) as err:
        read_examples(path, GRID)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_parse_flag():
    assert [parse_flag(v) for v in (1, "TRUE", "Yes", 0, "false", "no", None, "", float("nan"))] == [
        True, True, True, False, False, False, None, None, None]  # fmt: skip
    with pytest.raises(ValueError):
        parse_flag("2")
