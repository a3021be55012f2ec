"""xarray cubes in and out: the same data as a cube and as GeoTIFFs gives the same results, the
results come back on the cube's coordinates with its CRS, and bad cubes are named clearly."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import rasterio
import rioxarray
import xarray as xr
from helpers import DEFAULT_TRANSFORM, write_geotiff, write_stack

import geochange
from geochange.errors import AlignmentError, DateError, InputError
from geochange.io.cube import stack_from_xarray
from geochange.io.read import read_sample
from geochange.io.stack import open_stack

DATES = ["2022-03-01", "2022-05-17", "2022-08-02", "2022-10-20"]
NAMES = ["blue", "green", "red"]


def _scene(t=4, c=3, h=70, w=90, seed=0):
    """Smooth random land plus a planted change: a square appearing on date 2, a nodata strip."""
    rng = np.random.default_rng(seed)
    base = rng.normal(1000, 80, size=(c, h, w)).astype(np.float32)
    data = np.stack([base + rng.normal(0, 10, size=base.shape) for _ in range(t)])
    data[2:, :, 20:45, 30:62] += np.array([600, -400, 900][:c], np.float32)[:, None, None]
    data = np.clip(data, 1, 60000).astype(np.uint16)
    data[1, :, 60:, :12] = 0  # nodata on one date
    return data


@pytest.fixture(scope="module")
def tifs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cube") / "stack"
    return write_stack(d, _scene(), DATES, band_names=NAMES, nodata=0)


def _cube(paths, chunks=None):
    """What a user builds with rioxarray: one file per date, concatenated along time."""
    times = pd.Index(pd.to_datetime(DATES) + pd.Timedelta("10h31min"), name="time")
    opened = [rioxarray.open_rasterio(p, chunks=chunks) for p in paths]
    return xr.concat(opened, dim=times)


def _same_polygons(a, b) -> None:
    assert len(a) == len(b) >= 1
    for col in ("change_date", "date_before", "date_after", "n_pixels", "area_m2"):
        assert list(a[col]) == list(b[col]), col
    assert all(ga.equals_exact(gb, 0) for ga, gb in zip(a.geometry, b.geometry))


def test_a_lazy_cube_gives_the_files_polygons_and_comes_back_on_its_coordinates(tifs):
    files = geochange.detect(tifs[0].parent, chunk_size=32)
    cube = _cube(tifs, chunks={"y": 25, "x": 40})  # dask chunks that match no tile
    result = geochange.detect(cube, chunk_size=32)

    assert result.stack.wavelengths == (490.0, 560.0, 665.0)  # from the band descriptions
    np.testing.assert_array_equal(np.asarray(result.prob), np.asarray(files.prob))
    _same_polygons(result.changes, files.changes)
    assert result.changes.crs == files.changes.crs

    ds = result.to_xarray()
    np.testing.assert_array_equal(ds.x.values, cube.x.values)
    np.testing.assert_array_equal(ds.y.values, cube.y.values)
    assert ds.rio.crs == cube.rio.crs
    assert ds.rio.transform() == cube.rio.transform()
    np.testing.assert_array_equal(ds.prob.values, np.asarray(files.prob))
    # change_date: real datetimes, the cube's own times (with their hour), NaT where no change.
    assert ds.change_date.dtype == np.dtype("datetime64[ns]")
    index = np.asarray(files.date_index)
    seen = ds.change_date.values[index == 2]
    assert seen.size and (seen == cube.time.values[2]).all()
    assert np.isnat(ds.change_date.values[(index == 0) | (index == 255)]).all()


def test_in_memory_cube_in_any_dim_order_with_stackstac_metadata(tifs, tiny_model):
    """A numpy-backed cube built by hand: dims (band, time, x, y), CRS only as stackstac's
    ``epsg`` coordinate, band centres as its ``center_wavelength`` coordinate (µm)."""
    files = open_stack(tifs[0].parent)
    t = DEFAULT_TRANSFORM
    h, w = files.grid.shape
    values = np.asarray(files.data.compute())  # (t, c, y, x) float32 with NaN nodata
    cube = xr.DataArray(
        values.transpose(1, 0, 3, 2),
        dims=("band", "time", "x", "y"),
        coords={
            "band": ["B02", "B03", "B04"],
            "time": pd.to_datetime(DATES[::-1]).values[::-1],  # ascending after reversal
            "x": t.c + t.a * (np.arange(w) + 0.5),
            "y": t.f + t.e * (np.arange(h) + 0.5),
            "center_wavelength": ("band", [0.49, 0.56, 0.665]),
            "epsg": 32633,
        },
    )
    stack = stack_from_xarray(cube, chunk_size=32)
    assert stack.wavelengths == (490.0, 560.0, 665.0)
    assert stack.grid.same_grid(files.grid)
    assert [d.isoformat() for d in stack.dates] == DATES
    np.testing.assert_array_equal(read_sample(stack), read_sample(files))
    # What window_map ships to workers: picklable, and reads the same window after the trip.
    reader = pickle.loads(pickle.dumps(stack.reader()))
    np.testing.assert_array_equal(reader[:, :, 10:40, 5:50], files.window(10, 5, 30, 45))

    a = geochange.detect(files, model=tiny_model, device="cpu", skip=("coregister",))
    b = geochange.detect(cube, model=tiny_model, device="cpu", skip=("coregister",))
    np.testing.assert_array_equal(np.asarray(a.prob), np.asarray(b.prob))


def test_a_dataset_of_band_variables_is_a_cube(tifs):
    """odc-stac gives a Dataset with one variable per band."""
    cube = _cube(tifs).isel(band=0, drop=True)
    ds = xr.Dataset({n: cube + i for i, n in enumerate(["red", "nir08", "rededge1"])})
    stack = stack_from_xarray(ds)
    assert stack.wavelengths == (665.0, 865.0, 705.0)
    assert stack.band_names == ("red", "nir08", "rededge1")


@pytest.mark.parametrize(
    "change, error, match",
    [
        (
            lambda c: c.drop_vars("spatial_ref"),
            AlignmentError,
            r"xarray input: no CRS found.*Fix: array = array.rio.write_crs",
        ),
        (
            lambda c: c.assign_coords(
                time=pd.to_datetime(
                    ["2022-03-01T10:00", "2022-03-01T10:00", "2022-08-02T10:00", "2022-10-20T10:00"]
                )
            ),
            DateError,
            r"two acquisitions at 2022-03-01T10:00:00.*groupby='solar_day'",
        ),
        (lambda c: c.isel(band=0), InputError, r"found dims \('time', 'y', 'x'\), expected"),
        (lambda c: c.isel(time=[0]), InputError, r"found 1 time step\(s\); expected at least 2"),
        (
            lambda c: c.isel(x=[0, 1, 3, 4, 5]),
            AlignmentError,
            r"coordinate 'x' is not regularly spaced",
        ),
    ],
)
def test_bad_cubes_are_named(tifs, change, error, match):
    with pytest.raises(error, match=match):
        stack_from_xarray(change(_cube(tifs)))


def test_a_bare_array_or_file_options_with_a_cube_are_refused(tifs, tmp_path):
    with pytest.raises(
        InputError, match=r"found a numpy.ndarray of shape \(4, 3, 70, 90\) without"
    ):
        geochange.detect(np.zeros((4, 3, 70, 90), np.float32))
    with pytest.raises(InputError, match=r"masks: given with an xarray input"):
        geochange.detect(_cube(tifs), masks=str(tifs[0]))
    assert not list(tmp_path.iterdir())


def test_gdal_central_wavelength_is_read_from_the_files(tmp_path):
    paths = write_stack(tmp_path / "s", _scene(c=2), DATES)
    for p in paths:
        with rasterio.open(p, "r+") as dst:
            dst.update_tags(1, ns="IMAGERY", CENTRAL_WAVELENGTH_UM="0.665")
            dst.update_tags(2, ns="IMAGERY", CENTRAL_WAVELENGTH_UM="0.842")
    assert open_stack(tmp_path / "s").wavelengths == (665.0, 842.0)
    write_geotiff(tmp_path / "x_20210101.tif", _scene(c=2)[0])  # no metadata: unknown
    assert open_stack([tmp_path / "x_20210101.tif", paths[1]]).wavelengths == (None, None)
