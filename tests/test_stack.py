"""Tests of geochange.io.stack and geochange.io.read on small real GeoTIFFs written with rasterio in tmp_path."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import cloudpickle
import dask
import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import DEFAULT_TRANSFORM, write_geotiff, write_stack
from rasterio.warp import transform_bounds

from geochange.errors import AlignmentError, DateError, InputError
from geochange.io.read import GDAL_ENV, read_sample
from geochange.io.stack import open_stack

T, C, H, W = 3, 3, 64, 80
DATES = ["2023-01-15", "2023-02-14", "2023-03-16"]


def _data(t: int = T, c: int = C, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """(t, c, h, w) uint16 reflectance-like values, never 0 (0 is the nodata used in tests)."""
    return np.random.default_rng(seed).integers(1, 10_000, (t, c, h, w)).astype("uint16")


def _smooth(t: int, c: int, h: int, w: int) -> np.ndarray:
    """(t, c, h, w) float32 smooth ramps, so bilinear warps stay close to the source."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((t, c, h, w), np.float32)
    for i in range(t):
        for b in range(c):
            out[i, b] = 1000 + 7 * xx + 5 * yy + 100 * b + 10 * i
    return out


def _shift(t: Affine, cols: float, rows: float) -> Affine:
    """``t`` moved by ``cols`` and ``rows`` pixels (no Affine product: it warns in affine 3.1)."""
    return Affine(t.a, t.b, t.c + t.a * cols + t.b * rows, t.d, t.e, t.f + t.d * cols + t.e * rows)


def _direct(paths: list[Path]) -> np.ndarray:
    """(t, c, h, w) float32 read with plain rasterio, NaN where any band equals nodata."""
    out = []
    for p in paths:
        with rasterio.open(p) as src:
            a = src.read().astype(np.float32)
            if src.nodata is not None:
                a[:, (src.read() == src.nodata).any(axis=0)] = np.nan
        out.append(a)
    return np.stack(out)


# ------------------------------------------------------------------------------------- dates


def test_dates_from_tags_sorted(tmp_path: Path) -> None:
    data = _data()
    # Written out of order; names carry no date.
    dates = ["2023-03-16", "2023-01-15", "2023-02-14"]
    paths = write_stack(tmp_path, data, dates, name_fmt="scene_{i}.tif", band_names=["B", "G", "R"])
    stack = open_stack(tmp_path)
    assert stack.dates == tuple(dt.date.fromisoformat(d) for d in DATES)
    assert stack.paths == (str(paths[1]), str(paths[2]), str(paths[0]))
    assert stack.T == 3 and stack.band_count == 3 and stack.dtype == "uint16"
    assert stack.band_names == ("B", "G", "R")
    assert stack.grid.shape == (H, W) and stack.grid.transform == DEFAULT_TRANSFORM
    assert stack.grid.crs.to_epsg() == 32633
    np.testing.assert_array_equal(stack.data.compute(), data[[1, 2, 0]].astype(np.float32))


def test_dates_from_tiff_datetime(tmp_path: Path) -> None:
    data = _data()
    for i, day in enumerate(["2023:05:02 10:11:12", "2023:04:01 09:00:00", "2023:06:03 00:00:00"]):
        write_geotiff(tmp_path / f"img{i}.tif", data[i], tags={"TIFFTAG_DATETIME": day})
    stack = open_stack(sorted(tmp_path.glob("*.tif")))
    assert [d.isoformat() for d in stack.dates] == ["2023-04-01", "2023-05-02", "2023-06-03"]
    assert [Path(p).name for p in stack.paths] == ["img1.tif", "img0.tif", "img2.tif"]


@pytest.mark.parametrize(
    "fmt",
    ["S2_{date:%Y%m%d}.tif", "L8_{date:%Y-%m-%d}_T33.tiff", "x_{date:%Y_%m_%d}.TIF"],
)
def test_dates_from_file_names(tmp_path: Path, fmt: str) -> None:
    write_stack(tmp_path, _data(), DATES, name_fmt=fmt, tag_dates=False)
    stack = open_stack(str(tmp_path))
    assert [d.isoformat() for d in stack.dates] == DATES


def test_tag_with_time_and_lowercase_key(tmp_path: Path) -> None:
    data = _data(t=2)
    write_geotiff(tmp_path / "a.tif", data[0], tags={"acquisition_date": "2023-05-02T10:11:12Z"})
    write_geotiff(tmp_path / "b.tif", data[1], tags={"ACQUISITION_DATE": "20230401"})
    stack = open_stack(tmp_path)
    assert stack.dates == (dt.date(2023, 4, 1), dt.date(2023, 5, 2))


def test_tag_wins_over_name(tmp_path: Path) -> None:
    # Name says 2020, tag says 2023: the tag is the acquisition date.
    write_stack(tmp_path, _data(t=2), DATES[:2], name_fmt="S2_2020010{i}.tif")
    stack = open_stack(tmp_path)
    assert [d.isoformat() for d in stack.dates] == DATES[:2]


def test_dates_argument_and_glob(tmp_path: Path) -> None:
    paths = write_stack(tmp_path, _data(), DATES, name_fmt="a{i}.tif", tag_dates=False)
    # Dates pair with files in listed order (glob sorted by name), then the stack sorts by date.
    stack = open_stack(str(tmp_path / "a*.tif"), dates="2022-12-01, 2022-11-01,2023-01-01")
    assert stack.paths == (str(paths[1]), str(paths[0]), str(paths[2]))
    assert stack.dates == (dt.date(2022, 11, 1), dt.date(2022, 12, 1), dt.date(2023, 1, 1))
    stack = open_stack(paths, dates=[dt.date(2020, 1, 1), "2020-01-02", "20200103"])
    assert stack.paths == tuple(str(p) for p in paths)


def test_twenty_four_dates(tmp_path: Path) -> None:
    dates = [dt.date(2022, 1, 1) + dt.timedelta(days=15 * i) for i in range(24)]
    data = _data(t=24, c=2, h=16, w=20)
    write_stack(tmp_path, data, dates)
    stack = open_stack(tmp_path, chunk_size=8)
    assert stack.T == 24 and stack.dates == tuple(dates)
    assert stack.data.shape == (24, 2, 16, 20)
    np.testing.assert_array_equal(stack.data.compute(), data.astype(np.float32))


# -------------------------------------------------------------------------------- lazy array


def test_lazy_array_equals_direct_read_uneven_chunks(tmp_path: Path) -> None:
    data = _data()
    data[1, 2, 10, 11] = 0  # one band nodata -> all bands NaN at that date and pixel
    data[2, :, 63, 79] = 0
    paths = write_stack(tmp_path, data, DATES, nodata=0, blocksize=16, compress="deflate")
    stack = open_stack(tmp_path, chunk_size=24)
    arr = stack.data
    assert arr.dtype == np.float32
    assert arr.chunks == ((1, 1, 1), (3,), (24, 24, 16), (24, 24, 24, 8))
    assert stack.grid.nodata == 0
    got = arr.compute(scheduler="threads")
    np.testing.assert_array_equal(got, _direct(paths))
    assert np.isnan(got[1, :, 10, 11]).all() and not np.isnan(got[0, :, 10, 11]).any()
    assert np.isnan(got[2, :, 63, 79]).all()
    assert np.isnan(got).sum() == 2 * C
    # Any slice of the lazy array, and the eager window, agree with the direct read.
    np.testing.assert_array_equal(
        arr[:, 1:, 5:50:3, 70].compute(), _direct(paths)[:, 1:, 5:50:3, 70]
    )
    np.testing.assert_array_equal(stack.window(8, 60, 20, 20), _direct(paths)[:, :, 8:28, 60:80])
    assert arr[:, :, 5:5].compute().shape == (T, C, 0, W)
    assert stack.window(3, 4, 0, 2).shape == (T, C, 0, 2)
    with pytest.raises(ValueError, match="outside"):
        stack.window(50, 0, 20, 10)


def test_nodata_per_file_and_float_nan(tmp_path: Path) -> None:
    a = _data(t=1)[0].astype(np.float32)
    b = a.copy()
    a[0, 3, 4] = -9999
    b[2, 5, 6] = np.nan
    write_geotiff(tmp_path / "a_20230101.tif", a, nodata=-9999)
    write_geotiff(tmp_path / "b_20230201.tif", b, nodata=np.nan)
    got = open_stack(tmp_path).data.compute()
    assert np.isnan(got[0, :, 3, 4]).all() and np.isnan(got[1, :, 5, 6]).all()
    assert np.isnan(got).sum() == 2 * C


def test_internal_mask_is_nodata(tmp_path: Path) -> None:
    data = _data(t=2)
    paths = write_stack(tmp_path, data, DATES[:2])
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(paths[1], "r+") as dst:
        mask = np.full((H, W), 255, np.uint8)
        mask[20:22, 30:33] = 0
        dst.write_mask(mask)
    got = open_stack(tmp_path).data.compute()
    assert np.isnan(got[1, :, 20:22, 30:33]).all() and np.isnan(got).sum() == 6 * C
    assert not np.isnan(got[0]).any()


def test_mixed_dtypes_become_float32(tmp_path: Path) -> None:
    data = _data(t=2)
    write_geotiff(tmp_path / "a_20230101.tif", data[0])
    write_geotiff(tmp_path / "b_20230201.tif", data[1].astype(np.int32))
    stack = open_stack(tmp_path)
    assert stack.dtype == "uint16" and stack.data.dtype == np.float32
    np.testing.assert_array_equal(stack.data.compute(), data.astype(np.float32))


def test_data_pickles_and_computes_threaded(tmp_path: Path) -> None:
    data = _data()
    write_stack(tmp_path, data, DATES)
    stack = open_stack(tmp_path, chunk_size=32)
    arr = cloudpickle.loads(cloudpickle.dumps(stack.data))
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(arr.compute(), data.astype(np.float32))
    # One task per (date, chunk), each with plain picklable arguments.
    graph = dict(stack.data.__dask_graph__())
    assert sum(isinstance(k, tuple) and k[0] == stack.data.name for k in graph) == T * 2 * 3
    assert cloudpickle.loads(cloudpickle.dumps(stack)) == stack


def test_gdal_env_defaults() -> None:
    assert GDAL_ENV["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert "GDAL_CACHEMAX" in GDAL_ENV


def test_read_sample(tmp_path: Path) -> None:
    data = _data()
    data[0, 0, :32] = 0
    write_stack(tmp_path, data, DATES, nodata=0)
    stack = open_stack(tmp_path)
    sample = read_sample(stack, max_pixels=200)
    assert sample.dtype == np.float32 and sample.shape[:2] == (T, C)
    assert 100 <= sample.shape[2] <= 200
    assert 0.3 < np.isnan(sample[0]).mean() < 0.7 and not np.isnan(sample[1:]).any()
    # Values come from the source (nearest neighbour, no blending).
    assert np.isin(sample[1, 0], data[1, 0]).all()
    # A one-row scene still gives at most max_pixels.
    assert read_sample(stack, max_pixels=1).shape == (T, C, 1)
    full = read_sample(stack, max_pixels=10**6)
    assert full.shape == (T, C, H * W)
    np.testing.assert_array_equal(full, _direct(sorted(tmp_path.glob("*.tif"))).reshape(T, C, -1))


# ------------------------------------------------------------------------------------ align


def test_align_half_pixel_shift_and_other_crs(tmp_path: Path) -> None:
    data = _smooth(3, 2, H, W)
    ref_t = DEFAULT_TRANSFORM
    write_geotiff(tmp_path / "a_20230101.tif", data[0], transform=ref_t)
    shifted = _shift(ref_t, 0.5, 0.5)  # half a pixel right and down
    write_geotiff(tmp_path / "b_20230201.tif", data[1], transform=shifted)
    # Date 3 in EPSG:4326: same footprint, ~2x finer pixels, values from the ramp at each centre.
    left, bottom, right, top = transform_bounds(
        "EPSG:32633", "EPSG:4326", ref_t.c, ref_t.f - 10 * H, ref_t.c + 10 * W, ref_t.f
    )
    geo_h, geo_w = 2 * H, 2 * W
    geo_t = Affine((right - left) / geo_w, 0, left, 0, -(top - bottom) / geo_h, top)
    rows, cols = np.mgrid[0:geo_h, 0:geo_w] + 0.5
    lon, lat = geo_t.c + geo_t.a * cols, geo_t.f + geo_t.e * rows
    x, y = rasterio.warp.transform("EPSG:4326", "EPSG:32633", lon.ravel(), lat.ravel())
    px = (np.array(x) - ref_t.c) / 10 - 0.5
    py = (ref_t.f - np.array(y)) / 10 - 0.5
    geo = np.stack([1000 + 7 * px + 5 * py + 100 * b + 20 for b in range(2)]).reshape(
        2, geo_h, geo_w
    )
    write_geotiff(
        tmp_path / "c_20230301.tif", geo.astype(np.float32), crs="EPSG:4326", transform=geo_t
    )

    with pytest.raises(AlignmentError, match=r"transform differs.*--align"):
        open_stack(tmp_path)
    stack = open_stack(tmp_path, align=True, chunk_size=32)
    assert stack.align and stack.grid.transform == ref_t and stack.grid.shape == (H, W)
    got = stack.data.compute()
    assert got.shape == (3, 2, H, W)
    np.testing.assert_array_equal(got[0], data[0])
    inner = (slice(None), slice(4, H - 4), slice(4, W - 4))
    # Shifted half a pixel right/down: the ref pixel (r, c) sits at (r - 0.5, c - 0.5) there.
    expected_b = data[1] - 0.5 * 7 - 0.5 * 5
    np.testing.assert_allclose(got[1][inner], expected_b[inner], atol=0.5)
    expected_c = _smooth(1, 2, H, W)[0] + 20
    np.testing.assert_allclose(got[2][inner], expected_c[inner], atol=3.0)
    # Every reference pixel centre lies in the shifted footprint: no NaN anywhere.
    assert not np.isnan(got).any()
    # Eager windows and samples go through the same warp.
    np.testing.assert_array_equal(stack.window(10, 10, 8, 8), got[:, :, 10:18, 10:18])
    assert read_sample(stack, 400).shape[:2] == (3, 2)


def test_align_different_resolution_and_footprint(tmp_path: Path) -> None:
    data = _smooth(2, 1, H, W)
    write_geotiff(tmp_path / "a_20230101.tif", data[0])
    # 20 m pixels starting 5 reference pixels to the right: reference columns 0-4 are outside.
    coarse = Affine(20.0, 0.0, DEFAULT_TRANSFORM.c + 50, 0.0, -20.0, DEFAULT_TRANSFORM.f)
    rows, cols = np.mgrid[0 : H // 2, 0 : (W - 5) // 2]
    # The ramp of date 2 sampled at the coarse pixel centres, in reference pixel units.
    ramp = 1000 + 7 * (5 + 2 * cols + 1 - 0.5) + 5 * (2 * rows + 1 - 0.5) + 10
    write_geotiff(tmp_path / "b_20230201.tif", ramp[None].astype(np.float32), transform=coarse)
    with pytest.raises(AlignmentError, match=r"size is 37x32 px, expected 80x64 px.*--align"):
        open_stack(tmp_path)
    got = open_stack(tmp_path, align=True).data.compute()
    assert got.shape == (2, 1, H, W)
    assert np.isnan(got[1, :, :, :5]).all() and not np.isnan(got[1, :, :, 5:79]).any()
    inner = (slice(None), slice(2, H - 2), slice(7, W - 4))
    np.testing.assert_allclose(got[1][inner], data[1][inner], atol=0.01)


# ------------------------------------------------------------------------------------ masks


def test_masks_per_date_by_name_and_values(tmp_path: Path) -> None:
    data = _data()
    write_stack(tmp_path / "img", data, DATES)
    masks = tmp_path / "masks"
    masks.mkdir()
    # SCL-like classes: 4 = vegetation (keep), 9 = cloud high probability, 3 = shadow; 0 = nodata.
    scl0 = np.full((H, W), 4, np.uint8)
    scl0[:10, :20] = 9
    scl0[40:, 60:] = 3
    scl2 = np.full((H, W), 4, np.uint8)
    scl2[5:15, 5:15] = 9
    scl2[50:, :] = 0  # the mask's own nodata: not masked
    write_geotiff(masks / "SCL_20230115.tif", scl0, nodata=0)
    write_geotiff(masks / "SCL_2023-03-16.tif", scl2, nodata=0)  # no mask for 2023-02-14
    stack = open_stack(tmp_path / "img", masks=masks, mask_values="3,8,9,10", chunk_size=24)
    assert [m and Path(m[0]).name for m in stack.masks] == [
        "SCL_20230115.tif",
        None,
        "SCL_2023-03-16.tif",
    ]
    got = stack.data.compute()
    expected = data.astype(np.float32)
    expected[0][:, (scl0 == 9) | (scl0 == 3)] = np.nan
    expected[2][:, scl2 == 9] = np.nan
    np.testing.assert_array_equal(got, expected)
    # The scene sample (normalisation statistics) leaves masked pixels out too.
    full = read_sample(stack, max_pixels=10**6)
    np.testing.assert_array_equal(full, expected.reshape(T, C, -1))
    coarse = read_sample(stack, max_pixels=400)
    assert 0.05 < np.isnan(coarse[0, 0]).mean() < 0.3 and not np.isnan(coarse[1]).any()
    # Without mask_values every non-zero value masks: all of date 1 (4 and 9 alike).
    assert np.isnan(open_stack(tmp_path / "img", masks=masks).data[0].compute()).all()


def test_mask_one_band_per_date(tmp_path: Path) -> None:
    data = _data()
    write_stack(tmp_path / "img", data, DATES)
    m = np.zeros((T, H, W), np.uint8)
    m[1, 20:30, 30:50] = 1  # a cloud on the second date only
    path = write_geotiff(tmp_path / "clouds.tif", m)
    got = open_stack(tmp_path / "img", masks=[path]).data.compute()
    assert np.isnan(got[1, :, 20:30, 30:50]).all()
    assert np.isnan(got).sum() == C * 10 * 20


def test_mask_on_other_grid_needs_align(tmp_path: Path) -> None:
    data = _data(t=2)
    write_stack(tmp_path / "img", data, DATES[:2])
    # A 20 m mask (like Sentinel-2 SCL under 10 m bands) with one masked 20 m pixel at (3, 4).
    coarse = Affine(20.0, 0.0, DEFAULT_TRANSFORM.c, 0.0, -20.0, DEFAULT_TRANSFORM.f)
    m = np.zeros((H // 2, W // 2), np.uint8)
    m[3, 4] = 9
    path = write_geotiff(tmp_path / "SCL_20230214.tif", m, transform=coarse)
    with pytest.raises(AlignmentError, match=r"SCL_20230214.tif: mask grid .*--align"):
        open_stack(tmp_path / "img", masks=path)
    got = open_stack(tmp_path / "img", masks=path, align=True).data.compute()
    masked = np.isnan(got[1, 0])
    assert masked[6:8, 8:10].all() and masked.sum() == 4 and not np.isnan(got[0]).any()


def test_mask_errors(tmp_path: Path) -> None:
    data = _data()
    write_stack(tmp_path / "img", data, DATES)
    bad_date = write_geotiff(tmp_path / "cloud_20240101.tif", np.zeros((H, W), np.uint8))
    with pytest.raises(DateError, match=r"cloud_20240101.tif: mask date 2024-01-01; expected one"):
        open_stack(tmp_path / "img", masks=bad_date)
    two = write_geotiff(tmp_path / "two_20230115.tif", np.zeros((2, H, W), np.uint8))
    with pytest.raises(InputError, match=r"two_20230115.tif: mask has 2 bands; expected 1 band"):
        open_stack(tmp_path / "img", masks=two)
    ok = write_geotiff(tmp_path / "ok_20230115.tif", np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match=r"--mask-values: 'x' is not a number"):
        open_stack(tmp_path / "img", masks=ok, mask_values="3,x")
    with pytest.raises(InputError, match=r"--mask-values '3,8' given without --masks"):
        open_stack(tmp_path / "img", mask_values="3,8")


# ----------------------------------------------------------------------------------- errors


def test_error_crs_mismatch(tmp_path: Path) -> None:
    data = _data(t=2)
    write_geotiff(tmp_path / "a_20230101.tif", data[0])
    write_geotiff(tmp_path / "b_20230201.tif", data[1], crs="EPSG:32632")
    with pytest.raises(
        AlignmentError,
        match=r"b_20230201\.tif: CRS is EPSG:32632, expected EPSG:32633 .*Fix: pass --align",
    ):
        open_stack(tmp_path)


def test_error_size_mismatch(tmp_path: Path) -> None:
    data = _data(t=2)
    write_geotiff(tmp_path / "a_20230101.tif", data[0])
    write_geotiff(tmp_path / "b_20230201.tif", data[1][:, :60])
    with pytest.raises(
        AlignmentError, match=r"b_20230201\.tif: size is 80x60 px, expected 80x64 px.*align=True"
    ):
        open_stack(tmp_path)


def test_error_transform_mismatch(tmp_path: Path) -> None:
    data = _data(t=2)
    write_geotiff(tmp_path / "a_20230101.tif", data[0])
    write_geotiff(tmp_path / "b_20230201.tif", data[1], transform=_shift(DEFAULT_TRANSFORM, 3, 0))
    with pytest.raises(
        AlignmentError,
        match=r"b_20230201\.tif: transform differs: origin \(500030, 5e\+06\).*expected origin "
        r"\(500000, 5e\+06\).*--align",
    ):
        open_stack(tmp_path)


@pytest.mark.parametrize("align", [False, True])
def test_error_band_count(tmp_path: Path, align: bool) -> None:
    data = _data(t=2)
    write_geotiff(tmp_path / "a_20230101.tif", data[0])
    write_geotiff(tmp_path / "b_20230201.tif", data[1][:2])
    with pytest.raises(
        AlignmentError,
        match=r"b_20230201\.tif: has 2 bands, expected 3 .*--align cannot fix.*select the same bands",
    ):
        open_stack(tmp_path, align=align)


def test_error_one_date(tmp_path: Path) -> None:
    (path,) = write_stack(tmp_path, _data(t=1), DATES[:1])
    with pytest.raises(InputError, match=r"only one date found; expected at least 2 dates"):
        open_stack(path)
    # The same file listed twice is still one date.
    with pytest.raises(InputError, match=r"only one date found"):
        open_stack([path, str(path)])


def test_error_duplicate_dates(tmp_path: Path) -> None:
    write_stack(tmp_path, _data(), ["2023-01-01", "2023-02-01", "2023-01-01"], name_fmt="im{i}.tif")
    with pytest.raises(
        DateError, match=r"im0\.tif and .*im2\.tif have the same date 2023-01-01.*--dates"
    ):
        open_stack(tmp_path)


def test_error_no_date(tmp_path: Path) -> None:
    write_stack(tmp_path, _data(t=2), DATES[:2], name_fmt="scene_{i}.tif", tag_dates=False)
    with pytest.raises(
        DateError,
        match=r"scene_0\.tif: no acquisition date found.*Fix: pass --dates .*ACQUISITION_DATE"
        r".*file name",
    ):
        open_stack(tmp_path)


def test_error_dates_count_and_malformed(tmp_path: Path) -> None:
    write_stack(tmp_path, _data(), DATES)
    with pytest.raises(DateError, match=r"--dates: got 2 dates for 3 files \(S2_20230115\.tif"):
        open_stack(tmp_path, dates=["2023-01-01", "2023-01-02"])
    with pytest.raises(DateError, match=r"'2023-02-30' is not a valid date"):
        open_stack(tmp_path, dates="2023-01-01,2023-02-30,2023-03-01")


@pytest.mark.parametrize("options", [{}, {"blocksize": 16, "compress": "deflate"}])
def test_error_truncated_file(tmp_path: Path, options: dict) -> None:
    paths = write_stack(tmp_path, _data(), DATES, **options)
    size = os.path.getsize(paths[1])
    with open(paths[1], "r+b") as f:
        f.truncate(size * 2 // 3)
    with pytest.raises(
        InputError, match=re.escape(str(paths[1])) + r": cannot read it as a raster.*truncated"
    ):
        open_stack(tmp_path)


def test_error_not_a_raster(tmp_path: Path) -> None:
    write_stack(tmp_path, _data(t=2), DATES[:2])
    (tmp_path / "S2_20230301.tif").write_text("not a tiff")
    with pytest.raises(InputError, match=r"S2_20230301\.tif: cannot read it as a raster"):
        open_stack(tmp_path)


def test_error_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"folder has no \.tif/\.tiff files"):
        open_stack(tmp_path)
    with pytest.raises(InputError, match=r"glob pattern matches no file"):
        open_stack(str(tmp_path / "*.tif"))
    with pytest.raises(InputError, match=r"nope\.tif: no such file or folder.*Fix: check the path"):
        open_stack([tmp_path / "nope.tif", tmp_path / "nope2.tif"])
    with pytest.raises(InputError, match=r"no input given"):
        open_stack([])
