"""xarray cubes in and out: a (time, band, y, x) DataArray as a :class:`Stack`, results as a Dataset.

What ``stackstac.stack``, ``odc.stac.load`` and ``rioxarray.open_rasterio`` (concatenated along
``time``) give goes in as it is, lazy (dask-backed) or in memory:

- dates from the ``time`` coordinate, as days unless two acquisitions fall on one day (then
  with their times; group scenes of one pass first, e.g.
  ``odc.stac.load(..., groupby="solar_day")``);
- the grid from rioxarray's ``.rio`` (CRS, transform from the regular ``x``/``y`` coordinates),
  else a ``crs`` attribute or an ``epsg`` coordinate (stackstac);
- nodata from ``.rio.nodata`` (``_FillValue``/``nodata`` attributes); NaN is nodata anyway;
- band centres from ``center_wavelength`` (µm, stackstac's per-band coordinate), the ``eo:bands``
  attribute, band names (``red``, ``nir08``, ``B04``: :mod:`geochange.bands`) or ``long_name``.

The stack reads the cube per window inside each task (:class:`CubeDate`): nothing is written to
disk and nothing is loaded before a task asks for its tile. An ``xarray.Dataset`` whose variables
are the bands (``odc.stac.load``) is taken as the DataArray ``dataset.to_dataarray("band")``.

Results come back on the input's coordinates: :func:`result_dataset` (``DetectResult.to_xarray``)
gives ``prob`` (float32, NaN nodata) and ``change_date`` (datetime64, NaT where no change).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geochange.bands import parse_wavelengths, wavelength_from_name, wavelength_from_um
from geochange.dates import has_times, iso, parse_dates, settle
from geochange.errors import AlignmentError, DateError, InputError
from geochange.grid import GridSpec
from geochange.io.stack import Stack

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

    from geochange.pipeline import DetectResult

__all__ = ["CubeDate", "cube_coords", "is_cube", "result_dataset", "stack_from_xarray"]

_INSTALL = "pip install 'geochange[xarray]'"


def is_cube(obj: Any) -> bool:
    """True for an ``xarray.DataArray`` or ``xarray.Dataset`` (without importing xarray)."""
    return type(obj).__module__.startswith("xarray.") and hasattr(obj, "dims")


def _require_rio() -> None:
    try:
        import rioxarray  # noqa: F401 - registers the .rio accessor
    except ImportError:
        raise InputError(
            "xarray input: rioxarray is not installed; expected it for the cube's CRS and "
            f"transform. Fix: {_INSTALL}"
        ) from None


# --------------------------------------------------------------------------------------------
# Reading a cube per window


@dataclass(frozen=True)
class CubeDate:
    """One date of a (time, band, y, x) cube, read per window inside a task.

    Picklable as the cube is (a dask graph, a lazily indexed rioxarray file, or numpy data);
    a dask-backed cube computes only the chunks under the window, on the task's own thread.
    """

    cube: Any
    index: int
    nodata: float | None = None

    def read(self, window: Window) -> np.ndarray:
        rows = slice(int(window.row_off), int(window.row_off + window.height))
        cols = slice(int(window.col_off), int(window.col_off + window.width))
        return self._valid(self.cube[self.index, :, rows, cols])

    def read_decimated(self, out_h: int, out_w: int) -> np.ndarray:
        # GDAL's nearest-neighbour decimation (the file reader's): output pixel i takes source
        # pixel floor((i + 0.5) * size / out), so a cube and its GeoTIFFs give the same sample.
        height, width = self.cube.shape[-2:]
        rows = np.floor((np.arange(out_h) + 0.5) * (height / out_h)).astype(int)
        cols = np.floor((np.arange(out_w) + 0.5) * (width / out_w)).astype(int)
        return self._valid(self.cube[self.index][:, rows][:, :, cols])

    def _valid(self, part: Any) -> np.ndarray:
        """(c, h, w) float32, NaN where any band is nodata or not finite (NaN, inf, float64
        beyond float32), like a file's pixels."""
        raw = _load(part)
        with np.errstate(over="ignore", invalid="ignore"):
            out = raw.astype(np.float32)
        invalid = ~np.isfinite(out).all(axis=0)
        nodata = self.nodata
        if nodata is not None and not np.isnan(nodata):
            invalid |= (raw == nodata).any(axis=0)
        out[:, invalid] = np.nan
        return out


def _load(part: Any) -> np.ndarray:
    """The values of an xarray/dask/numpy slice, computed on this thread (inside a dask task a
    nested threaded compute would oversubscribe the cores)."""
    import dask

    if hasattr(part, "compute"):
        with dask.config.set(scheduler="synchronous"):
            part = part.compute()
    return np.asarray(getattr(part, "values", part))


# --------------------------------------------------------------------------------------------
# A cube as a Stack


def _as_dataarray(cube: Any) -> xr.DataArray:
    if hasattr(cube, "data_vars"):  # a Dataset: its variables are the bands
        nodata = {cube[v].attrs.get("nodata", cube[v].attrs.get("_FillValue")) for v in cube}
        to = getattr(cube, "to_dataarray", None) or cube.to_array
        cube = to(dim="band")
        if len(nodata) == 1 and None not in nodata:  # odc-stac's per-band nodata attribute
            cube.attrs["nodata"] = nodata.pop()
    return cube


def _spatial_dims(cube: xr.DataArray) -> tuple[str, str]:
    try:
        return cube.rio.y_dim, cube.rio.x_dim
    except Exception as exc:  # rioxarray's MissingSpatialDimensionError
        raise InputError(
            f"xarray input: dims {tuple(cube.dims)} have no spatial y/x pair; expected dims "
            "(time, band, y, x) (or latitude/longitude). Fix: rename the spatial dims, e.g. "
            "array.rename({'northing': 'y', 'easting': 'x'})"
        ) from exc


def _crs(cube: xr.DataArray) -> CRS:
    crs = cube.rio.crs
    if crs is None and cube.attrs.get("crs"):
        crs = cube.attrs["crs"]
    if crs is None and "epsg" in cube.coords and cube.coords["epsg"].size == 1:
        crs = f"EPSG:{int(cube.coords['epsg'].values)}"
    if crs is None:
        raise AlignmentError(
            "xarray input: no CRS found (no .rio.crs, crs attribute or epsg coordinate); "
            "expected the cube's coordinate reference system. Fix: "
            "array = array.rio.write_crs('EPSG:32633') with the cube's CRS"
        )
    return CRS.from_user_input(crs)


def _transform(cube: xr.DataArray, y_dim: str, x_dim: str) -> Affine:
    for dim in (y_dim, x_dim):
        if dim not in cube.coords or cube.sizes[dim] < 2:
            raise AlignmentError(
                f"xarray input: dim {dim!r} has {'no coordinate' if dim not in cube.coords else 'one value'}; "
                "expected at least 2 pixel centres to place the grid. Fix: assign the pixel "
                "centre coordinates (e.g. rioxarray's array.rio.write_transform)"
            )
        values = np.asarray(cube.coords[dim].values, dtype=float)
        steps = np.diff(values)
        if not np.allclose(steps, steps[0], rtol=1e-6, atol=0):
            raise AlignmentError(
                f"xarray input: coordinate {dim!r} is not regularly spaced (steps "
                f"{steps.min():g} to {steps.max():g}); expected a regular grid. Fix: reproject "
                "the cube onto a grid (array.rio.reproject)"
            )
    return cube.rio.transform(recalc=True)


def _dates(cube: xr.DataArray) -> tuple[list[dt.datetime], np.ndarray]:
    if "time" not in cube.coords:
        raise DateError(
            "xarray input: no 'time' coordinate; expected one acquisition time per date. Fix: "
            "array.assign_coords(time=[...]) or pass dates=[...]"
        )
    times = np.asarray(cube.coords["time"].values)
    if not np.issubdtype(times.dtype, np.datetime64):
        raise DateError(
            f"xarray input: 'time' coordinate holds {times.dtype} values; expected datetimes. "
            "Fix: array.assign_coords(time=pandas.to_datetime(array.time))"
        )
    whens = [t.astype("datetime64[s]").astype(object) for t in times]  # naive datetimes
    return whens, times


def _cube_wavelengths(cube: xr.DataArray) -> tuple[float | None, ...]:
    count = cube.sizes["band"]
    found: list[float | None] = [None] * count
    if "center_wavelength" in cube.coords and cube.coords["center_wavelength"].dims == ("band",):
        found = [wavelength_from_um(v) for v in cube.coords["center_wavelength"].values]
    eo = cube.attrs.get("eo:bands")
    if isinstance(eo, Sequence) and len(eo) == count:
        for i, item in enumerate(eo):
            if found[i] is None and isinstance(item, dict):
                found[i] = wavelength_from_um(item.get("center_wavelength")) or (
                    wavelength_from_name(item.get("common_name") or item.get("name"))
                )
    names = _band_names(cube)
    return tuple(f if f is not None else wavelength_from_name(n) for f, n in zip(found, names))


def _band_names(cube: xr.DataArray) -> tuple[str | None, ...]:
    count = cube.sizes["band"]
    names: list[str | None] = [None] * count
    if "band" in cube.coords:
        names = [v if isinstance(v, str) else None for v in cube.coords["band"].values.tolist()]
    if "common_name" in cube.coords and cube.coords["common_name"].dims == ("band",):
        common = cube.coords["common_name"].values.tolist()
        names = [n if wavelength_from_name(n) else c for n, c in zip(names, common)]
    long_name = cube.attrs.get("long_name")
    if isinstance(long_name, (tuple, list)) and len(long_name) == count:
        names = [n or (str(ln) if ln else None) for n, ln in zip(names, long_name)]
    return tuple(n if isinstance(n, str) and n else None for n in names)


def stack_from_xarray(
    cube: Any,
    *,
    chunk_size: int = 512,
    dates: Sequence[Any] | str | None = None,
    wavelengths: Sequence[float | None] | str | None = None,
    labels: Sequence[str] | None = None,
) -> Stack:
    """An xarray cube as a lazy :class:`Stack` read per window.

    Args:
        cube: ``xarray.DataArray`` with dims (time, band, y, x) in any order and a CRS (see the
            module docstring), or an ``xarray.Dataset`` with one variable per band.
        chunk_size: spatial chunk size of ``Stack.data`` in pixels.
        dates: one date per time step, overriding the ``time`` coordinate.
        wavelengths: band centres in nm, overriding the cube's band metadata.
        labels: one name per time step for the ``runs`` record (e.g. STAC item ids);
            default ``xarray:YYYY-MM-DD``.

    Raises:
        InputError: missing rioxarray, wrong dims, a single date.
        AlignmentError: no CRS, an irregular grid.
        DateError: no/odd ``time`` coordinate, two acquisitions on one day.
    """
    _require_rio()
    cube = _as_dataarray(cube)
    y_dim, x_dim = _spatial_dims(cube)
    expected = {"time", "band", y_dim, x_dim}
    if set(cube.dims) != expected:
        raise InputError(
            f"xarray input: found dims {tuple(cube.dims)}, expected (time, band, {y_dim}, "
            f"{x_dim}). Fix: add a missing dim (array.expand_dims('band')) or select away extra "
            "ones (array.isel(...))"
        )
    if chunk_size < 1:
        raise InputError(f"chunk_size={chunk_size}: expected a positive number of pixels")
    cube = cube.transpose("time", "band", y_dim, x_dim)
    keep_times = False
    if dates is not None:
        given = parse_dates([dates] if isinstance(dates, (str, dt.date)) else list(dates))
        keep_times = has_times(given)
        if len(given) != cube.sizes["time"]:
            raise DateError(
                f"--dates: got {len(given)} dates for {cube.sizes['time']} time steps; expected "
                "one date per time step"
            )
        cube = cube.assign_coords(time=np.array(given, dtype="datetime64[ns]"))
    _, unsorted = _dates(cube)  # a clear error before sorting by a missing or odd coordinate
    order = np.argsort(unsorted, kind="stable")
    if labels is not None and len(labels) == len(order):
        labels = [labels[i] for i in order]
    cube = cube.isel(time=order)
    whens, times = _dates(cube)
    if len(whens) < 2:
        raise InputError(
            f"xarray input: found {len(whens)} time step(s); expected at least 2 dates. Fix: "
            "load a longer time range"
        )
    for a, b in zip(whens, whens[1:]):
        if a == b:
            raise DateError(
                f"xarray input: two acquisitions at {iso(a)}; expected one per time. Fix: merge "
                "them first, e.g. odc.stac.load(..., groupby='solar_day') or "
                "array.groupby('time').first()"
            )
    # Days, unless times tell two acquisitions of one day apart (or were given).
    days = settle(whens, keep_times=keep_times)
    crs = _crs(cube)
    transform = _transform(cube, y_dim, x_dim)
    nodata = cube.rio.nodata
    if nodata is None and cube.attrs.get("nodata") is not None:
        nodata = cube.attrs["nodata"]
    nodata = None if nodata is None else float(nodata)
    count = cube.sizes["band"]
    grid = GridSpec(crs, transform, cube.sizes[y_dim], cube.sizes[x_dim], nodata)
    found = _cube_wavelengths(cube)
    names = labels or [f"xarray:{iso(d)}" for d in days]
    if len(names) != len(days):
        raise InputError(f"labels: found {len(names)}, expected {len(days)} (one per time step)")
    return Stack(
        paths=tuple(str(n) for n in names),
        dates=tuple(days),
        grid=grid,
        band_count=count,
        dtype=str(cube.dtype),
        band_names=_band_names(cube),
        chunk_size=int(chunk_size),
        align=False,
        wavelengths=found if wavelengths is None else parse_wavelengths(wavelengths, count),
        sources=tuple(CubeDate(cube, t, nodata) for t in range(len(days))),
    )


def cube_coords(cube: Any) -> dict[str, Any]:
    """The y/x coordinates (with their dim names) and times of a cube, for
    :func:`result_dataset`: results come back on exactly the input's coordinates."""
    cube = _as_dataarray(cube)
    _require_rio()
    y_dim, x_dim = _spatial_dims(cube)
    return {
        "y": (y_dim, cube.coords[y_dim].values),
        "x": (x_dim, cube.coords[x_dim].values),
        "time": np.sort(np.asarray(cube.coords["time"].values)),
    }


# --------------------------------------------------------------------------------------------
# Results as a Dataset


def result_dataset(result: DetectResult, coords: dict[str, Any] | None = None) -> xr.Dataset:
    """``prob`` and ``change_date`` of a detect result as an ``xarray.Dataset`` with its CRS.

    Args:
        result: what :func:`geochange.detect` returned.
        coords: :func:`cube_coords` of the input cube; None = pixel centres of the stack grid
            and the stack's dates at midnight.

    Returns:
        Dataset on (y, x): ``prob`` float32 (NaN nodata), ``change_date`` datetime64[ns] (the
        first date the change is seen; NaT where no change or nodata), lazy where the result is;
        CRS and transform written with rioxarray; attributes ``dates`` and ``threshold``.
    """
    import dask.array as da

    try:
        import xarray as xr
    except ImportError:
        raise InputError(f"to_xarray: xarray is not installed. Fix: {_INSTALL}") from None
    _require_rio()
    stack = result.stack
    grid = stack.grid
    if coords is None:
        t = grid.transform
        coords = {
            "y": ("y", t.f + t.e * (np.arange(grid.height) + 0.5)),
            "x": ("x", t.c + t.a * (np.arange(grid.width) + 0.5)),
            "time": np.array(stack.dates, dtype="datetime64[ns]"),
        }
    times = np.asarray(coords["time"]).astype("datetime64[ns]")
    # Date index j = 1 … T-1 -> its time; 0 (no change) and 255 (nodata) stay NaT.
    lut = np.full(256, np.datetime64("NaT"), dtype="datetime64[ns]")
    lut[1 : len(times)] = times[1:]
    index = result.date_index
    change_date = (
        da.map_blocks(lambda block: lut[block], index, dtype=lut.dtype)
        if isinstance(index, da.Array)
        else lut[np.asarray(index)]
    )
    (y_dim, y), (x_dim, x) = coords["y"], coords["x"]
    ds = xr.Dataset(
        {
            "prob": ((y_dim, x_dim), result.prob),
            "change_date": ((y_dim, x_dim), change_date),
        },
        coords={y_dim: y, x_dim: x},
        attrs={
            "dates": ",".join(str(np.datetime_as_string(t, unit="s")) for t in times),
            "threshold": float(result.run.get("threshold", np.nan)),
        },
    )
    ds["prob"].attrs["long_name"] = "change probability"
    ds["change_date"].attrs["long_name"] = "first date the change is seen"
    ds = ds.rio.set_spatial_dims(x_dim=x_dim, y_dim=y_dim)
    ds = ds.rio.write_crs(grid.crs)
    return ds.rio.write_transform(grid.transform)
