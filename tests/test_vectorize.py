"""Tests of geochange.vectorize: polygons merged across chunks, attributes, geodesic areas."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import dask.array as da
import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rasterio.crs import CRS
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box

from geochange.errors import InputError
from geochange.grid import GridSpec
from geochange.io.rasters import write_gpkg
from geochange.vectorize import COLUMNS, geodesic_area, polygons_from_rasters

DATES = [dt.date(2023, 1, 1), dt.date(2023, 3, 1), dt.date(2023, 5, 2), dt.date(2023, 8, 30)]


def utm_grid(h: int = 64, w: int = 80) -> GridSpec:
    return GridSpec(
        crs=CRS.from_epsg(32633),
        transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0),
        height=h,
        width=w,
    )


def ring_scene(h: int = 64, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A square ring with a hole, crossing chunk borders, plus a small blob; dates 2 and 3."""
    prob = np.full((h, w), 0.1, np.float32)
    prob[10:50, 10:60] = 0.8
    prob[20:40, 22:48] = 0.2  # the hole
    prob[30, 30] = 0.95  # an island inside the hole: its own polygon
    prob[55:60, 70:75] = 0.6
    date = np.where(prob >= 0.5, 2, 0).astype(np.uint8)
    date[10:14, 10:60] = 1  # a minority of the ring's pixels carry date 1
    date[55:60, 70:75] = 3
    return prob, date


def test_ring_across_chunks_is_one_polygon_with_hole() -> None:
    grid = utm_grid()
    prob, date = ring_scene()
    whole = polygons_from_rasters(prob, date, grid, DATES, chunk_size=1024)
    assert len(whole) == 3
    for cs in (7, 16, 25, 32):
        chunked = polygons_from_rasters(prob, date, grid, DATES, chunk_size=cs)
        assert len(chunked) == 3
        ring = chunked.geometry.iloc[0]
        assert ring.geom_type == "Polygon" and len(ring.interiors) == 1
        assert ring.is_valid
        for a, b in zip(whole.geometry, chunked.geometry):
            assert a.equals_exact(b, tolerance=0.0)  # same vertices, same order
        pd_cols = [c for c in COLUMNS if c != "id"]
        assert whole[pd_cols].equals(chunked[pd_cols])
    ring = whole.geometry.iloc[0]
    assert ring.area == pytest.approx(100.0 * (40 * 50 - 20 * 26))
    assert len(ring.exterior.coords) == 5  # no leftover vertices on former chunk borders


def test_attributes_and_dates() -> None:
    grid = utm_grid()
    prob, date = ring_scene()
    gdf = polygons_from_rasters(prob, date, grid, DATES, chunk_size=16)
    assert list(gdf.columns) == [*COLUMNS, "geometry"]
    assert gdf.crs == grid.crs
    assert gdf["id"].tolist() == [1, 2, 3]
    ring, island, blob = (gdf.iloc[k] for k in range(3))
    assert ring.n_pixels == 40 * 50 - 20 * 26
    assert ring.mean_prob == pytest.approx(0.8) and ring.max_prob == pytest.approx(0.8)
    # Majority date index 2 (date_after = DATES[2]), not the 200 px minority with index 1.
    assert ring.change_date == ring.date_after == "2023-05-02"
    assert ring.date_before == "2023-03-01"
    assert island.n_pixels == 1 and island.max_prob == pytest.approx(0.95)
    assert (blob.date_before, blob.date_after) == ("2023-05-02", "2023-08-30")
    assert blob.mean_prob == pytest.approx(0.6)
    # Dates after the change date: the blob's change is on the last date, seen there alone.
    assert (ring.later_dates, blob.later_dates) == (len(DATES) - 3, 0)
    assert gdf["id"].dtype == np.int64 and gdf["n_pixels"].dtype == np.int64


@settings(max_examples=25, deadline=None)
@given(
    mask=arrays(np.bool_, (23, 29), elements=st.booleans()),
    chunk=st.integers(3, 30),
)
def test_random_masks_chunk_size_changes_nothing(mask: np.ndarray, chunk: int) -> None:
    grid = utm_grid(23, 29)
    prob = np.where(mask, 0.9, 0.1).astype(np.float32)
    date = mask.astype(np.uint8)
    whole = polygons_from_rasters(prob, date, grid, DATES[:2], chunk_size=64)
    part = polygons_from_rasters(prob, date, grid, DATES[:2], chunk_size=chunk)
    assert len(whole) == len(part)
    assert whole.drop(columns="geometry").equals(part.drop(columns="geometry"))
    for a, b in zip(whole.geometry, part.geometry):
        assert a.equals_exact(b, tolerance=0.0)
    assert whole["n_pixels"].sum() == mask.sum()
    assert whole.geometry.area.sum() == pytest.approx(100.0 * mask.sum())


def test_diagonal_touch_is_two_regions() -> None:
    grid = utm_grid(8, 8)
    prob = np.zeros((8, 8), np.float32)
    prob[1:3, 1:3] = 0.9
    prob[3:5, 3:5] = 0.9  # touches the first square at one corner only
    gdf = polygons_from_rasters(prob, np.ones((8, 8), np.uint8), grid, DATES, chunk_size=3)
    assert len(gdf) == 2 and gdf["n_pixels"].tolist() == [4, 4]


def test_dask_input_equals_numpy_and_works_per_chunk() -> None:
    grid = utm_grid()
    prob, date = ring_scene()
    seen: list[tuple[int, ...]] = []

    def spy(x: np.ndarray) -> np.ndarray:
        if x.size:
            seen.append(x.shape)
        return x

    dprob = da.from_array(prob, chunks=16).map_blocks(spy, dtype=prob.dtype)
    ddate = da.from_array(date, chunks=(20, 33))
    lazy = polygons_from_rasters(dprob, ddate, grid, DATES, chunk_size=16)
    eager = polygons_from_rasters(prob, date, grid, DATES, chunk_size=16)
    assert lazy.drop(columns="geometry").equals(eager.drop(columns="geometry"))
    assert all(a.equals_exact(b, 0.0) for a, b in zip(lazy.geometry, eager.geometry))
    assert seen and max(h * w for h, w in seen) <= 16 * 16


def test_nodata_never_becomes_a_polygon() -> None:
    grid = utm_grid(20, 20)
    prob = np.full((20, 20), np.nan, np.float32)  # all nodata ...
    date = np.full((20, 20), 255, np.uint8)
    prob[2:6, 2:6] = 0.9  # ... except a valid change,
    date[2:6, 2:6] = 1
    prob[10:15, 10:15] = 0.99  # a high probability where the date raster says nodata,
    prob[0, 10:20] = np.nan  # and NaN next to valid change pixels
    date[0, 10:20] = 1
    gdf = polygons_from_rasters(prob, date, grid, DATES, chunk_size=7)
    assert len(gdf) == 1 and gdf.iloc[0].n_pixels == 16
    nothing = polygons_from_rasters(
        np.full((20, 20), np.nan, np.float32), date, grid, DATES, chunk_size=7
    )
    assert len(nothing) == 0


def test_empty_result_has_columns_and_crs(tmp_path: Path) -> None:
    grid = utm_grid(16, 16)
    gdf = polygons_from_rasters(
        np.zeros((16, 16), np.float32), np.zeros((16, 16), np.uint8), grid, DATES
    )
    assert len(gdf) == 0
    assert list(gdf.columns) == [*COLUMNS, "geometry"]
    assert gdf.crs == grid.crs
    out = write_gpkg(gdf, tmp_path / "empty.gpkg")
    back = gpd.read_file(out, layer="changes")
    assert len(back) == 0 and back.crs == grid.crs


def test_area_utm_square() -> None:
    grid = utm_grid(30, 30)
    prob = np.zeros((30, 30), np.float32)
    prob[5:15, 5:15] = 0.9
    gdf = polygons_from_rasters(prob, np.ones((30, 30), np.uint8), grid, DATES)
    assert gdf.iloc[0].area_m2 == pytest.approx(10_000.0, rel=0.005)


def test_area_geographic_square() -> None:
    lat = 45.0
    grid = GridSpec(
        crs=CRS.from_epsg(4326),
        transform=Affine(1e-4, 0.0, 10.0, 0.0, -1e-4, lat + 0.0005),
        height=20,
        width=20,
    )
    prob = np.zeros((20, 20), np.float32)
    prob[0:10, 0:10] = 0.9  # 10 x 10 px = 0.001 deg square from lat 44.9995 to 45.0005
    gdf = polygons_from_rasters(prob, np.ones((20, 20), np.uint8), grid, DATES)
    poly = gdf.geometry.iloc[0]
    assert poly.bounds == pytest.approx((10.0, lat - 0.0005, 10.001, lat + 0.0005))
    lons = [10.0, 10.001, 10.001, 10.0]
    lats = [lat - 0.0005, lat - 0.0005, lat + 0.0005, lat + 0.0005]
    expected = abs(pyproj.Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)[0])
    assert gdf.iloc[0].area_m2 == pytest.approx(expected, rel=1e-6)
    rough = (0.001 * 111_320.0 * math.cos(math.radians(lat))) * (0.001 * 111_320.0)
    assert gdf.iloc[0].area_m2 == pytest.approx(rough, rel=0.01)
    assert gdf.iloc[0].area_m2 != pytest.approx(poly.area, rel=0.5)  # not degrees²


def test_geodesic_area_holes_multipart_orientation() -> None:
    outer = box(0, 0, 100, 100)
    holed = Polygon(outer.exterior.coords, [box(10, 10, 30, 30).exterior.coords])
    cw = shapely.reverse(box(200, 0, 210, 10))  # clockwise part
    multi = MultiPolygon([holed, cw])
    crs = CRS.from_epsg(32633)
    shifted = affinity.translate
    geoms = [shifted(g, 500_000, 5_000_000) for g in (outer, holed, multi)]
    a = geodesic_area(geoms, crs)
    assert a[0] == pytest.approx(10_000, rel=0.005)
    assert a[1] / a[0] == pytest.approx(0.96, rel=1e-4)
    assert a[2] / a[0] == pytest.approx(0.97, rel=1e-4)
    assert geodesic_area([], crs).shape == (0,)


def test_min_area_and_simplify() -> None:
    grid = utm_grid()
    prob, date = ring_scene()
    all_ = polygons_from_rasters(prob, date, grid, DATES)
    big = polygons_from_rasters(prob, date, grid, DATES, min_area=1_000.0)  # island is 100 m²
    assert len(all_) == 3 and len(big) == 2
    assert big["id"].tolist() == [1, 2]
    assert (big["area_m2"] >= 1_000.0).all()

    staircase = np.zeros((40, 40), np.float32)
    for r in range(30):
        staircase[r + 5, 5 : 6 + r] = 0.9  # a triangle with a stepped edge
    grid2 = utm_grid(40, 40)
    ones = np.ones((40, 40), np.uint8)
    raw = polygons_from_rasters(staircase, ones, grid2, DATES)
    simple = polygons_from_rasters(staircase, ones, grid2, DATES, simplify=15.0)
    g_raw, g_simple = raw.geometry.iloc[0], simple.geometry.iloc[0]
    assert len(g_simple.exterior.coords) < len(g_raw.exterior.coords) // 4
    assert g_simple.is_valid
    assert simple.iloc[0].n_pixels == raw.iloc[0].n_pixels
    assert g_simple.area == pytest.approx(g_raw.area, rel=0.1)


def test_input_errors() -> None:
    grid = utm_grid(10, 10)
    z = np.zeros((10, 10), np.float32)
    with pytest.raises(InputError, match=r"prob: found shape \(10, 11\), expected the grid"):
        polygons_from_rasters(np.zeros((10, 11)), z, grid, DATES)
    with pytest.raises(InputError, match=r"threshold: found 1.5"):
        polygons_from_rasters(z, z, grid, DATES, threshold=1.5)
    with pytest.raises(InputError, match=r"dates: found 1, expected at least 2"):
        polygons_from_rasters(z, z, grid, DATES[:1])
    with pytest.raises(InputError, match=r"min_area: found -1"):
        polygons_from_rasters(z, z, grid, DATES, min_area=-1)
