"""Find the GeoTIFFs of a time series, read their dates, check their grids, open them lazily.

One GeoTIFF holds one date with all its bands. :func:`open_stack` turns paths, folders, glob
patterns or GDAL URLs into a :class:`Stack`: the dates sorted ascending, the grid they share (a
:class:`~geochange.grid.GridSpec`) and a lazy dask array ``(t, c, y, x)`` float32 with NaN where
a source pixel is nodata.

The dask graph holds one read task per (date, chunk); the reading itself is
:mod:`geochange.io.read`. Dates come from :mod:`geochange.dates`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import dask.array as da
import numpy as np
import rasterio
from affine import Affine
from dask.base import tokenize
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geochange.bands import band_wavelengths, parse_wavelengths
from geochange.dates import (
    DateLike,
    When,
    has_times,
    iso,
    name_when,
    parse_dates,
    settle,
    value_when,
)
from geochange.errors import AlignmentError, DateError, InputError
from geochange.grid import GridSpec
from geochange.io.read import GDAL_ENV, DateSource, StackReader, axis_chunks, stack_reader

__all__ = ["Stack", "open_stack"]

logger = logging.getLogger(__name__)

InputPath = str | os.PathLike
Inputs = InputPath | Sequence[InputPath]


# --------------------------------------------------------------------------------------------
# The stack


@dataclass(frozen=True)
class Stack:
    """T dates of a scene on one grid, read lazily.

    Attributes:
        paths: one file per date, sorted by date; local paths or GDAL URLs (``/vsis3/...``).
        dates: acquisition dates, strictly increasing: all days, or all datetimes (naive UTC)
            when times tell acquisitions apart (:func:`geochange.dates.settle`).
        grid: grid of the first date (the target grid when ``align``); ``grid.nodata`` is the
            first file's nodata (each file's own nodata is used when reading it).
        band_count: bands per date (c).
        dtype: source data type of the first file, e.g. ``"uint16"``.
        band_names: band descriptions of the first file (None where unnamed).
        wavelengths: band centres in nm (None where unknown), from ``open_stack(wavelengths=)``
            or the first file's tag / band descriptions (:mod:`geochange.bands`); the default
            model is told them.
        chunk_size: spatial chunk size of :attr:`data` in pixels.
        align: whether dates are warped onto ``grid`` when read.
        masks: per date None or ``(path, band)`` of its cloud/validity mask (see
            :func:`open_stack`); masked pixels read as NaN, like nodata.
        mask_values: mask values that mean "masked"; None = any non-zero value.
        shifts: per date (dy, dx) pixels resampled away on every read (bilinear; output pixel
            (y, x) takes the date's (y - dy, x - dx)), set by
            :func:`geochange.stages.coregister.coregister`; () = read as stored.
        sources: per date a picklable :class:`~geochange.io.read.DateSource` read instead of
            ``paths`` (an xarray cube, :mod:`geochange.io.cube`); ``paths`` then only name the
            dates. () = the files in ``paths``.
        bands: per date the 1-based bands of its file that hold it (one file with a band per
            date, ``layout="band-per-date"``); () = every band of each file.
    """

    paths: tuple[str, ...]
    dates: tuple[When, ...]
    grid: GridSpec
    band_count: int
    dtype: str
    band_names: tuple[str | None, ...]
    chunk_size: int
    align: bool
    masks: tuple[tuple[str, int] | None, ...] = ()
    mask_values: tuple[float, ...] | None = None
    wavelengths: tuple[float | None, ...] = ()
    shifts: tuple[tuple[float, float], ...] = ()
    sources: tuple[DateSource, ...] = ()
    bands: tuple[tuple[int, ...], ...] = ()

    @property
    def T(self) -> int:  # noqa: N802 - T is the glossary's name for the number of dates
        """Number of dates."""
        return len(self.paths)

    @property
    def mask_names(self) -> list[str]:
        """Per date ``"path:band"`` of its mask, ``""`` for none (provenance records)."""
        return [f"{m[0]}:{m[1]}" if m else "" for m in self.masks]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(t, c, y, x) shape of :attr:`data`."""
        return (self.T, self.band_count, self.grid.height, self.grid.width)

    @cached_property
    def data(self) -> da.Array:
        """Lazy (t, c, y, x) float32 array, source units, NaN where nodata.

        Chunks: one date per chunk, all bands, ``chunk_size`` square in y and x (edges smaller).
        """
        reader = self.reader()
        chunks = (
            (1,) * self.T,
            (self.band_count,),
            axis_chunks(self.grid.height, self.chunk_size),
            axis_chunks(self.grid.width, self.chunk_size),
        )
        name = "read-stack-" + tokenize(reader, self.chunk_size)
        return da.from_array(
            reader,
            chunks=chunks,
            name=name,
            lock=False,
            asarray=False,
            fancy=False,
            meta=np.empty((0, 0, 0, 0), dtype=np.float32),
        )

    def window(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """Read a window of every date now.

        Args:
            row_off, col_off: upper-left pixel of the window on :attr:`grid`.
            height, width: window size in pixels; the window must lie inside the grid.

        Returns:
            (t, c, height, width) float32, source units, NaN where nodata.
        """
        if (
            row_off < 0
            or col_off < 0
            or height < 0
            or width < 0
            or row_off + height > self.grid.height
            or col_off + width > self.grid.width
        ):
            raise ValueError(
                f"window rows {row_off}:{row_off + height}, cols {col_off}:{col_off + width} "
                f"is outside the {self.grid.height}x{self.grid.width} grid"
            )
        reader = self.reader()
        return reader[:, :, row_off : row_off + height, col_off : col_off + width]

    def reader(self) -> StackReader:
        """Picklable array-like (t, c, y, x) float32 over the files, read when sliced.

        What :func:`geochange.tiling.window_map` ships to the workers: file paths and the grid,
        no data.
        """
        return stack_reader(self)


# --------------------------------------------------------------------------------------------
# Opening a stack


@dataclass(frozen=True)
class _FileInfo:
    path: str
    crs: CRS | None
    transform: Affine
    height: int
    width: int
    count: int
    dtype: str
    nodata: float | None
    band_names: tuple[str | None, ...]
    wavelengths: tuple[float | None, ...]
    tag_date: When | None
    tiff_date: When | None

    @property
    def grid(self) -> GridSpec:
        return GridSpec(self.crs, self.transform, self.height, self.width, self.nodata)


def open_stack(
    inputs: Inputs,
    *,
    dates: Sequence[DateLike] | str | None = None,
    chunk_size: int = 512,
    align: bool = False,
    masks: Inputs | None = None,
    mask_values: Sequence[float] | str | None = None,
    wavelengths: Sequence[float | None] | str | None = None,
    allow_driver: Sequence[str] | str | None = (),
    allow_no_crs: bool = True,
    layout: Literal["file-per-date", "band-per-date"] = "file-per-date",
    bands_per_date: int | None = None,
) -> Stack:
    """Open a time series of GeoTIFFs, one file per date, as a lazy :class:`Stack`.

    Args:
        inputs: a file, a folder (its ``*.tif``/``*.tiff``, not recursive; ``*.vrt`` too when
            ``allow_driver`` names VRT), a glob pattern (local, or on a GDAL path or object
            store: ``/vsizip/a.zip/*.tif``, ``s3://bucket/S2_*.tif``), a GDAL URL, a list file
            ``@paths.txt`` (one input per line), or a list mixing them
            (:mod:`geochange.io.inputs`).
        dates: one date per file (ISO ``YYYY-MM-DD`` strings, with a UTC time
            ``2023-01-15T10:00`` if wanted, a comma-separated string or ``datetime.date`` /
            ``datetime.datetime``), in the order the files are listed (folders and globs sorted
            by name). Default: each file's ``ACQUISITION_DATE`` tag, else its TIFF DateTime tag,
            else a date in its name (``20230115``, ``2023-01-15``, ``2023_01_15``; a following
            ``T101500`` is its time). Times a user gives are kept; times from tags and names
            only when two files fall on one day (:func:`geochange.dates.settle`).
        chunk_size: spatial chunk size of ``Stack.data`` in pixels.
        align: read every date onto the grid of the first date (bilinear warp) instead of
            requiring all dates to share the grid.
        masks: cloud / validity masks, read as nodata (a masked date never creates change):
            either single-band rasters, one per date, matched to the dates by their own date
            (tag or name, like the images; dates without a mask are used unmasked), or one
            raster with one band per date (band i = i-th date, e.g. ``truth/clouds.tif`` from
            ``geochange synth``). Files, folders, globs or a list, like ``inputs``.
        mask_values: mask values that mean "masked", e.g. ``"3,8,9,10"`` for the cloud and
            shadow classes of a Sentinel-2 SCL raster; None = every non-zero value.
        wavelengths: band centres in nm, one per band (``"490,560,665,842"``; empty or None =
            unknown). Default: the first file's ``WAVELENGTHS_NM`` tag, else its band
            descriptions (``B04``, ``665 nm``, ``red``), else unknown (see :mod:`geochange.bands`).
        allow_driver: GDAL drivers allowed besides GTiff (e.g. "VRT");
            see :mod:`geochange.io.drivers`.
        allow_no_crs: accept files without a CRS (pixel coordinates only).
        layout: "file-per-date" (one file per date, all its bands), or "band-per-date": one
            file holding every date, its bands date after date (date 1's bands, then date 2's,
            ...), as an export of a time series gives it (one band per date for an index such as
            NDVI). The dates come from ``dates`` (one per date) or from the band descriptions
            (``2023-01-15``, ``NDVI_20230115``, ``B04_20230115T101409``: consecutive bands of
            one date form that date).
        bands_per_date: with "band-per-date": bands of each date (default: the file's bands
            divided by the number of dates, or as the descriptions group them).

    Returns:
        The stack, dates sorted ascending.

    Raises:
        InputError: no files, missing or unreadable file, a single date.
        DateError: a missing, malformed or duplicated date, or a wrong number of ``dates``.
        AlignmentError: the dates differ in band count, or (without ``align``) in CRS, size or
            transform; a mask lies on another grid (without ``align``).
    """
    if chunk_size < 1:
        raise InputError(f"chunk_size={chunk_size}: expected a positive number of pixels")
    if mask_values is not None and masks is None:
        raise InputError(
            f"--mask-values {mask_values!r} given without --masks; expected the mask rasters "
            "these values refer to. Fix: add --masks (e.g. the SCL rasters) or drop --mask-values"
        )
    from geochange.io.drivers import allowed_drivers, check_drivers

    drivers = allowed_drivers(allow_driver)
    paths = _expand_inputs(inputs, drivers)
    given = None
    if dates is not None:
        given = parse_dates([dates] if isinstance(dates, (str, dt.date)) else list(dates))
    groups: list[tuple[int, ...]] | None = None
    if layout == "band-per-date":
        check_drivers(paths, drivers, GDAL_ENV)
        infos, file_dates, groups = _split_bands(paths, given, bands_per_date)
    elif layout != "file-per-date":
        raise InputError(
            f"--layout: found {layout!r}, expected file-per-date (one file per date, the "
            "default) or band-per-date (one file with the dates' bands one after another)"
        )
    else:
        if bands_per_date is not None:
            raise InputError(
                "--bands-per-date: given without --layout band-per-date; expected it only for "
                "one file holding every date. Fix: add --layout band-per-date or drop it"
            )
        if given is not None and len(given) != len(paths):
            listed = ", ".join(Path(p).name for p in paths[:6]) + (
                ", ..." if len(paths) > 6 else ""
            )
            raise DateError(
                f"--dates: got {len(given)} dates for {len(paths)} files ({listed}); expected one "
                "date per file, in the order the files are listed (folders and globs sorted by "
                "name). Fix: give exactly one date per file"
            )
        check_drivers(paths, drivers, GDAL_ENV)
        infos = [_inspect(p) for p in paths]
        file_dates = given if given is not None else [_file_date(info) for info in infos]
    if masks is not None:
        check_drivers(_expand_inputs(masks, drivers), drivers, GDAL_ENV)
    _check_same_day(infos, file_dates)
    file_dates = settle(file_dates, keep_times=given is not None)

    order = sorted(range(len(infos)), key=lambda i: file_dates[i])
    infos = [infos[i] for i in order]
    file_dates = [file_dates[i] for i in order]
    if groups is not None:
        groups = [groups[i] for i in order]
    if len(infos) < 2:
        raise InputError(
            f"{infos[0].path}: only one date found; expected at least 2 dates (one GeoTIFF per "
            "date). Fix: give two or more files, a folder or a glob such as 'scenes/*.tif'"
        )
    for (a, da_), (b, db) in zip(zip(infos, file_dates), zip(infos[1:], file_dates[1:])):
        if da_ == db:
            raise DateError(
                f"{a.path} and {b.path} have the same date {iso(da_)}; expected one file per "
                "date (two of one day need their times). Fix: remove one of them, or give the "
                "right dates with --dates (e.g. 2023-01-15T10:00,2023-01-15T14:30)"
            )

    ref = infos[0]
    for info in infos[1:]:
        _check_grid(info, ref, align)
    if align and ref.crs is None:
        raise AlignmentError(
            f"{ref.path}: has no CRS; --align needs the reference (first) date georeferenced. "
            "Fix: assign a CRS to the file (e.g. gdal_edit.py -a_srs EPSG:32633)"
        )
    if ref.crs is None and not allow_no_crs:
        raise AlignmentError(
            f"{ref.path}: has no CRS (not georeferenced), so change polygons would have no place "
            "on Earth; assign one (gdal_edit.py -a_srs EPSG:32633 -a_ullr ...) or pass "
            "--allow-no-crs to work in pixel coordinates"
        )
    date_masks = () if masks is None else _match_masks(masks, file_dates, ref, align, drivers)
    logger.info("opened %d dates on %s", len(infos), ref.grid.describe())
    return Stack(
        paths=tuple(info.path for info in infos),
        dates=tuple(file_dates),
        grid=ref.grid,
        band_count=ref.count,
        dtype=ref.dtype,
        band_names=ref.band_names,
        chunk_size=int(chunk_size),
        align=bool(align),
        masks=date_masks,
        mask_values=_parse_mask_values(mask_values),
        wavelengths=ref.wavelengths
        if wavelengths is None
        else parse_wavelengths(wavelengths, ref.count),
        bands=tuple(groups) if groups is not None else (),
    )


def _split_bands(
    paths: Sequence[str], given: list[When] | None, per_date: int | None
) -> tuple[list[_FileInfo], list[When], list[tuple[int, ...]]]:
    """One file with a band per date: per date its file info (its bands only), its date and its
    1-based band numbers."""
    if len(paths) != 1:
        raise InputError(
            f"--layout band-per-date: found {len(paths)} files ({paths[0]}, ...); expected one "
            "file holding every date's bands. Fix: give that one file"
        )
    info = _inspect(paths[0])
    n = info.count
    if given is None:
        found = [_band_date(d) for d in info.band_names]
        if any(d is None for d in found):
            raise DateError(
                f"{info.path}: band {found.index(None) + 1} of {n} has no date in its "
                f"description ({info.band_names[found.index(None)]!r}); expected a date per "
                "band (e.g. NDVI_20230115) or --dates. Fix: pass --dates with one date per "
                "date in the file (its bands grouped by --bands-per-date)"
            )
        dates: list[When] = []
        sizes: list[int] = []
        for d in found:
            if dates and d == dates[-1]:
                sizes[-1] += 1
            else:
                dates.append(d)
                sizes.append(1)
        c = sizes[0]
        if set(sizes) != {c} or (per_date is not None and per_date != c):
            raise InputError(
                f"{info.path}: the band descriptions give {len(dates)} dates of "
                f"{', '.join(map(str, sizes))} bands; expected the same number of bands per "
                f"date{f' ({per_date}, --bands-per-date)' if per_date else ''}, one date's bands "
                "after another. Fix: pass --dates and --bands-per-date"
            )
    else:
        dates = list(given)
        c = per_date if per_date is not None else n // max(1, len(dates))
        if c < 1 or c * len(dates) != n:
            raise DateError(
                f"--dates: got {len(dates)} dates for {info.path}, which has {n} bands"
                f"{f' and --bands-per-date {per_date}' if per_date else ''}; expected dates x "
                "bands per date = the file's bands. Fix: give one date per date in the file, "
                "or --bands-per-date"
            )
    groups = [tuple(range(i * c + 1, i * c + c + 1)) for i in range(len(dates))]
    infos = [
        dataclasses.replace(
            info,
            count=c,
            band_names=tuple(info.band_names[b - 1] for b in g),
            wavelengths=tuple(info.wavelengths[b - 1] for b in g),
        )
        for g in groups
    ]
    return infos, dates, groups


def _band_date(description: str | None) -> When | None:
    if not description:
        return None
    return value_when(description) or name_when(description)


def _check_same_day(infos: Sequence[_FileInfo], dates: Sequence[When]) -> None:
    """Two files of one day, one of them without a time: they cannot be ordered."""
    by_day: dict[dt.date, list[int]] = {}
    for i, d in enumerate(dates):
        by_day.setdefault(d.date() if isinstance(d, dt.datetime) else d, []).append(i)
    for day, members in by_day.items():
        if len(members) > 1 and has_times([dates[i] for i in members]):
            bare = [i for i in members if not isinstance(dates[i], dt.datetime)]
            if bare:
                other = next(i for i in members if i != bare[0])
                raise DateError(
                    f"{infos[bare[0]].path} and {infos[other].path} are both of "
                    f"{day.isoformat()} and {infos[bare[0]].path} has no time; expected a time "
                    "for each acquisition of one day. Fix: give the times with --dates (e.g. "
                    "2023-01-15T10:00) or in the ACQUISITION_DATE tag"
                )


def _parse_mask_values(values: Sequence[float] | str | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    parts = re.split(r"[,\s]+", values.strip()) if isinstance(values, str) else list(values)
    out = []
    for part in parts:
        if part == "":
            continue
        try:
            out.append(float(part))
        except (TypeError, ValueError):
            raise InputError(
                f"--mask-values: {part!r} is not a number; expected mask values such as "
                "'3,8,9,10' (Sentinel-2 SCL cloud and shadow classes). Fix: give numbers "
                "separated by commas"
            ) from None
    if not out:
        raise InputError(
            "--mask-values: no value given; expected e.g. '3,8,9,10', or leave it out to mask "
            "every non-zero mask pixel"
        )
    return tuple(out)


def _match_masks(
    masks: Inputs, dates: Sequence[dt.date], ref: _FileInfo, align: bool, drivers: Sequence[str]
) -> tuple[tuple[str, int] | None, ...]:
    """Per date ``(path, band)`` of its mask, or None (see ``open_stack(masks=...)``)."""
    infos = [_inspect(p) for p in _expand_inputs(masks, drivers)]
    for info in infos:
        _check_mask_grid(info, ref, align)
    if len(infos) == 1 and infos[0].count == len(dates):
        return tuple((infos[0].path, i + 1) for i in range(len(dates)))
    out: list[tuple[str, int] | None] = [None] * len(dates)
    for info in infos:
        if info.count != 1:
            raise InputError(
                f"{info.path}: mask has {info.count} bands; expected 1 band (one mask file per "
                f"date) or one band per date ({len(dates)}) in a single mask file. Fix: give "
                "single-band masks, or one file holding a band for every date"
            )
        date = info.tag_date or info.tiff_date or name_when(info.path)
        i = _mask_index(date, dates)
        if i is None:
            listed = ", ".join(iso(d) for d in dates)
            raise DateError(
                f"{info.path}: mask date {iso(date) if date else 'not found'}; expected "
                f"one of the image dates ({listed}). Fix: put the image's date in the mask's "
                "name (e.g. cloud_20230115.tif) or its ACQUISITION_DATE tag (with its time "
                "when two images share the day)"
            )
        if out[i] is not None:
            raise DateError(
                f"{info.path} and {out[i][0]} are both masks of {iso(dates[i])}; expected at "
                "most one mask per date. Fix: remove one of them"
            )
        out[i] = (info.path, 1)
    missing = [iso(d) for d, m in zip(dates, out) if m is None]
    if missing:
        logger.info("no mask for %s: used unmasked", ", ".join(missing))
    return tuple(out)


def _mask_index(date: When | None, dates: Sequence[When]) -> int | None:
    """The image date a mask's date names: the same date and time, else the one image of that
    day (a mask named by its day alone)."""
    if date is None:
        return None
    day = date.date() if isinstance(date, dt.datetime) else date
    days = [d.date() if isinstance(d, dt.datetime) else d for d in dates]
    same = [i for i, d in enumerate(dates) if d == date]
    if same:
        return same[0]
    matches = [i for i, d in enumerate(days) if d == day]
    return matches[0] if len(matches) == 1 else None


def _check_mask_grid(info: _FileInfo, ref: _FileInfo, align: bool) -> None:
    if align:
        if info.crs is None:
            raise AlignmentError(
                f"{info.path}: mask has no CRS; --align needs it to put the mask on the image "
                "grid. Fix: assign the CRS of the images to the mask"
            )
        return
    if info.crs != ref.crs or not ref.grid.same_grid(info.grid):
        raise AlignmentError(
            f"{info.path}: mask grid {info.grid.describe()} differs from the image grid "
            f"{ref.grid.describe()}. Fix: pass --align (API: align=True) to resample the mask "
            "onto the image grid (nearest neighbour), or export the mask on the image grid"
        )


def _expand_inputs(inputs: Inputs, drivers: Sequence[str] = ("GTiff",)) -> list[str]:
    """Files named by ``inputs`` (:func:`geochange.io.inputs.expand_inputs`)."""
    from geochange.io.inputs import expand_inputs

    return expand_inputs(inputs, drivers)


def _inspect(path: str) -> _FileInfo:
    """Open a file, read its metadata and check that its last block is readable."""
    try:
        with rasterio.Env(**GDAL_ENV), rasterio.open(path) as src:
            if src.count < 1:
                raise InputError(f"{path}: has no raster bands; expected a GeoTIFF with bands")
            # A truncated GeoTIFF opens fine and fails on read: read the bottom-right pixel of
            # every band (the last block written).
            src.read(window=Window(src.width - 1, src.height - 1, 1, 1))
            tags = src.tags()
            return _FileInfo(
                path=path,
                crs=src.crs,
                transform=src.transform,
                height=src.height,
                width=src.width,
                count=src.count,
                dtype=src.dtypes[0],
                nodata=src.nodata,
                band_names=tuple(d or None for d in src.descriptions),
                wavelengths=band_wavelengths(
                    tags,
                    src.descriptions,
                    path,
                    imagery=[src.tags(i, ns="IMAGERY") for i in src.indexes],
                ),
                tag_date=_tag_date(tags),
                tiff_date=value_when(tags.get("TIFFTAG_DATETIME")),
            )
    except RasterioError as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise InputError(
            f"{path}: cannot read it as a raster: {exc}{cause}; expected a complete, readable "
            "GeoTIFF. Fix: re-download or re-export the file (it may be truncated or corrupt)"
        ) from exc


def _tag_date(tags: dict[str, str]) -> When | None:
    for key, value in tags.items():
        if key.upper() == "ACQUISITION_DATE":
            return value_when(value)
    return None


def _file_date(info: _FileInfo) -> When:
    date = info.tag_date or info.tiff_date or name_when(info.path)
    if date is None:
        raise DateError(
            f"{info.path}: no acquisition date found (no ACQUISITION_DATE or TIFFTAG_DATETIME "
            "tag, no date like 20230115 or 2023-01-15 in the name); expected one date per file. "
            "Fix: pass --dates 2023-01-15,2023-02-14,... (API: dates=[...]), set the "
            "ACQUISITION_DATE tag, or put the date in the file name"
        )
    return date


def _check_grid(info: _FileInfo, ref: _FileInfo, align: bool) -> None:
    """Raise AlignmentError when ``info`` cannot be stacked with the reference date ``ref``."""
    if info.count != ref.count:
        raise AlignmentError(
            f"{info.path}: has {info.count} bands, expected {ref.count} like {ref.path}; "
            "--align cannot fix a band count. Fix: select the same bands for every date "
            "(e.g. gdal_translate -b 1 -b 2 -b 3)"
        )
    if align:
        return
    hint = "Fix: pass --align (API: align=True) to warp every date onto the first date's grid"
    if info.crs != ref.crs:
        found = info.crs.to_string() if info.crs else "no CRS"
        expected = ref.crs.to_string() if ref.crs else "no CRS"
        raise AlignmentError(
            f"{info.path}: CRS is {found}, expected {expected} like {ref.path}. {hint}"
        )
    if (info.height, info.width) != (ref.height, ref.width):
        raise AlignmentError(
            f"{info.path}: size is {info.width}x{info.height} px, expected "
            f"{ref.width}x{ref.height} px like {ref.path}. {hint}"
        )
    if not ref.grid.same_grid(info.grid):
        raise AlignmentError(
            f"{info.path}: transform differs: origin ({info.transform.c:g}, "
            f"{info.transform.f:g}) pixel ({info.transform.a:g}, {info.transform.e:g}), expected "
            f"origin ({ref.transform.c:g}, {ref.transform.f:g}) pixel ({ref.transform.a:g}, "
            f"{ref.transform.e:g}) like {ref.path}. {hint}"
        )
