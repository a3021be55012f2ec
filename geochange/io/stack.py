"""Find the GeoTIFFs of a time series, read their dates, check their grids, open them lazily.

One GeoTIFF holds one date with all its bands. :func:`open_stack` turns paths, folders, glob
patterns or GDAL URLs into a :class:`Stack`: the dates sorted ascending, the grid they share (a
:class:`~geochange.grid.GridSpec`) and a lazy dask array ``(t, c, y, x)`` float32 with NaN where
a source pixel is nodata.

The dask graph holds one read task per (date, chunk). Each task opens its file inside the task
(rasterio handles are neither picklable nor thread-safe) under :data:`GDAL_ENV` and reads only its
window, so the graph runs on the threaded scheduler and on ``dask.distributed`` alike.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
from affine import Affine
from dask.base import tokenize
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geochange import shift
from geochange.bands import band_wavelengths, parse_wavelengths
from geochange.errors import AlignmentError, DateError, InputError
from geochange.grid import GridSpec

__all__ = ["GDAL_ENV", "Stack", "open_stack", "parse_dates", "read_sample"]

logger = logging.getLogger(__name__)

#: GDAL settings for every read, in one place. Applied with ``rasterio.Env(**GDAL_ENV)`` inside
#: each read task (GDAL settings are per process/thread, and dask workers are other processes).
GDAL_ENV: dict[str, Any] = {
    # Do not list the folder of every file on open (slow on network file systems and S3);
    # side-car files (.aux.xml, .msk, .ovr) are then not found: use internal masks and overviews.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Block cache in MB per process; chunks are read once, so a small cache suffices.
    "GDAL_CACHEMAX": 256 * 1024**2,  # bytes: rasterio reads an int as bytes, not MB
    # For /vsicurl/ and /vsis3/: only fetch GeoTIFFs, retry transient HTTP errors.
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MAX_RETRY": 3,
    "GDAL_HTTP_RETRY_DELAY": 1,
    "VSI_CACHE": "TRUE",
}

#: Resampling used by ``align=True``: reflectances are continuous data.
ALIGN_RESAMPLING = Resampling.bilinear

InputPath = str | os.PathLike
Inputs = InputPath | Sequence[InputPath]
DateLike = str | dt.date

_TIF_SUFFIXES = (".tif", ".tiff")
_GLOB_CHARS = re.compile(r"[*?\[]")
# A date in a file name: 20230115, 2023-01-15 or 2023_01_15, not inside a longer number.
_NAME_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d)([-_]?)(\d\d)\2(\d\d)(?!\d)")
# A date at the start of a tag value: 2023-01-15, 2023:01:15 (TIFF DateTime) or 20230115.
_VALUE_DATE = re.compile(r"^\s*(\d{4})([-:/]?)(\d{2})\2(\d{2})(?=$|[T\s_Z+])")


# --------------------------------------------------------------------------------------------
# The stack


@dataclass(frozen=True)
class Stack:
    """T dates of a scene on one grid, read lazily.

    Attributes:
        paths: one file per date, sorted by date; local paths or GDAL URLs (``/vsis3/...``).
        dates: acquisition dates, strictly increasing.
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
    """

    paths: tuple[str, ...]
    dates: tuple[dt.date, ...]
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
            _axis_chunks(self.grid.height, self.chunk_size),
            _axis_chunks(self.grid.width, self.chunk_size),
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

    def reader(self) -> _StackReader:
        """Picklable array-like (t, c, y, x) float32 over the files, read when sliced.

        What :func:`geochange.tiling.window_map` ships to the workers: file paths and the grid,
        no data.
        """
        return _StackReader(
            self._sources(), self.band_count, self.grid.height, self.grid.width, self.shifts
        )

    def _sources(self) -> tuple[_Source, ...]:
        target = (self.grid.crs, self.grid.transform, self.grid.height, self.grid.width)
        masks = self.masks or (None,) * self.T
        return tuple(
            _Source(path, *target, self.align, mask, self.mask_values)
            for path, mask in zip(self.paths, masks)
        )


# --------------------------------------------------------------------------------------------
# Read tasks: plain picklable values and top-level functions, one file opened per call.


@dataclass(frozen=True)
class _Source:
    """What a read task needs to read one date on the stack grid."""

    path: str
    crs: CRS | None
    transform: Affine
    height: int
    width: int
    align: bool
    mask: tuple[str, int] | None = None
    mask_values: tuple[float, ...] | None = None


@dataclass(frozen=True)
class _StackReader:
    """Array-like (t, c, y, x) float32 over the files; each ``[...]`` opens and reads the files.

    Used as the source of :func:`dask.array.from_array`: dask calls ``reader[slices]`` once per
    chunk, inside the task.
    """

    sources: tuple[_Source, ...]
    bands: int
    height: int
    width: int
    shifts: tuple[tuple[float, float], ...] = ()
    dtype = np.dtype("float32")
    ndim = 4

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.sources), self.bands, self.height, self.width)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (4 - len(key))
        t_key, c_key, y_key, x_key = key
        # Read the bounding window in y/x once per date, then apply steps/indices with numpy.
        (y0, y1), y_rest = _bounding(y_key, self.height)
        (x0, x1), x_rest = _bounding(x_key, self.width)
        window = Window(x0, y0, x1 - x0, y1 - y0)
        t_index = np.arange(len(self.sources))[t_key]
        dates = np.atleast_1d(t_index)
        if dates.size and y1 > y0 and x1 > x0 and self.shifts:
            out = np.stack([self._read_shifted(int(t), y0, y1, x0, x1) for t in dates])
        elif dates.size and y1 > y0 and x1 > x0:
            out = np.stack([_read_window(self.sources[int(t)], window) for t in dates])
        else:  # nothing to read: do not open the files
            out = np.empty((dates.size, self.bands, y1 - y0, x1 - x0), np.float32)
        # Index one axis at a time so that arrays index each axis on its own (outer indexing).
        out = out.astype(np.float32, copy=False)[:, c_key]
        out = out[..., y_rest, :]
        out = out[..., x_rest]
        return out[0] if np.ndim(t_index) == 0 else out

    def _read_shifted(self, t: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Date ``t`` in rows y0:y1, cols x0:x1 with its shift resampled away: reads a margin
        (clipped at the grid edge, where edges are replicated), so any window gives the same
        pixels."""
        dy, dx = self.shifts[t]
        if max(abs(dy), abs(dx)) < shift.MIN_APPLIED:
            return _read_window(self.sources[t], Window(x0, y0, x1 - x0, y1 - y0))
        m = shift.margin(np.asarray(self.shifts[t]))
        ya, yb = max(0, y0 - m), min(self.height, y1 + m)
        xa, xb = max(0, x0 - m), min(self.width, x1 + m)
        img = _read_window(self.sources[t], Window(xa, ya, xb - xa, yb - ya))
        return shift.shift_bilinear(img, dy, dx)[:, y0 - ya : y1 - ya, x0 - xa : x1 - xa]


def _bounding(key: Any, size: int) -> tuple[tuple[int, int], Any]:
    """Smallest [start, stop) holding ``key`` and the index of ``key`` inside that range."""
    if isinstance(key, slice):
        start, stop, step = key.indices(size)
        if step == 1:
            return (start, max(start, stop)), slice(None)
    idx = np.arange(size)[key]
    if np.ndim(idx) == 0:
        return (int(idx), int(idx) + 1), 0
    if idx.size == 0:
        return (0, 0), slice(0, 0)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    return (lo, hi), idx - lo


def _read_window(source: _Source, window: Window) -> np.ndarray:
    """Read all bands of one date in ``window`` of the stack grid.

    Returns:
        (c, h, w) float32, NaN where any band is nodata or the pixel is masked.
    """
    with rasterio.Env(**GDAL_ENV), rasterio.open(source.path) as src:
        if source.align and not _on_grid(src, source):
            with _warped(src, source, ALIGN_RESAMPLING) as vrt:
                out = _masked_read(vrt, window=window)
        else:
            out = _masked_read(src, window=window)
        if source.mask is not None:
            out[:, _read_mask(source, window=window)] = np.nan
        return out


def _warped(src: Any, source: _Source, resampling: Resampling, image: bool = True) -> WarpedVRT:
    """``src`` warped onto the grid of ``source``; an ``image`` reads as float32, NaN nodata."""
    kwargs = {"src_nodata": src.nodata, "nodata": np.nan, "dtype": "float32"} if image else {}
    return WarpedVRT(
        src,
        crs=source.crs,
        transform=source.transform,
        width=source.width,
        height=source.height,
        resampling=resampling,
        **kwargs,
    )


def _read_mask(source: _Source, **read_kwargs: Any) -> np.ndarray:
    """(h, w) bool: True where the date's mask file says masked (cloud, shadow, ...).

    The mask is read on the stack grid (nearest-neighbour warp when ``align`` and the mask lies
    on another grid). The mask file's own nodata pixels are not masked.
    """
    assert source.mask is not None
    path, band = source.mask
    with rasterio.open(path) as src:
        if not _on_grid(src, source):  # align, or the coarse grid of read_sample
            with _warped(src, source, Resampling.nearest, image=False) as vrt:
                return _mask_values(vrt, band, source.mask_values, **read_kwargs)
        return _mask_values(src, band, source.mask_values, **read_kwargs)


def _mask_values(
    src: Any, band: int, values: tuple[float, ...] | None, **read_kwargs: Any
) -> np.ndarray:
    if "out_shape" in read_kwargs:
        read_kwargs["out_shape"] = read_kwargs["out_shape"][-2:]
    m = src.read(band, **read_kwargs)
    masked = m != 0 if values is None else np.isin(m, np.asarray(values, dtype=m.dtype))
    if src.nodata is not None and not (isinstance(src.nodata, float) and math.isnan(src.nodata)):
        masked &= m != src.nodata
    return masked


def _on_grid(src: Any, source: _Source) -> bool:
    """True when an open file lies exactly on the target grid (no warp needed)."""
    grid = GridSpec(source.crs, source.transform, source.height, source.width)
    return grid.same_grid(GridSpec(src.crs, src.transform, src.height, src.width))


def _masked_read(src: Any, **read_kwargs: Any) -> np.ndarray:
    """``src.read(**read_kwargs)`` as float32 with NaN where nodata or masked (whole pixel)."""
    raw = src.read(**read_kwargs)
    out = raw.astype(np.float32)
    invalid = np.isnan(out).any(axis=0) if out.dtype.kind == "f" else np.zeros(out.shape[1:], bool)
    nodata = src.nodata
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        invalid |= (raw == nodata).any(axis=0)
    if _has_mask(src):
        mask_kwargs = dict(read_kwargs)
        if "out_shape" in mask_kwargs:
            mask_kwargs["out_shape"] = mask_kwargs["out_shape"][-2:]
        invalid |= src.dataset_mask(**mask_kwargs) == 0
    out[:, invalid] = np.nan
    return out


def _has_mask(src: Any) -> bool:
    """True when the file has an internal mask or alpha band (not just a nodata value)."""
    return any(
        MaskFlags.per_dataset in flags or MaskFlags.alpha in flags for flags in src.mask_flag_enums
    )


def _axis_chunks(size: int, chunk: int) -> tuple[int, ...]:
    full, rest = divmod(size, chunk)
    return (chunk,) * full + ((rest,) if rest else ())


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
    tag_date: dt.date | None
    tiff_date: dt.date | None

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
) -> Stack:
    """Open a time series of GeoTIFFs, one file per date, as a lazy :class:`Stack`.

    Args:
        inputs: a file, a folder (its ``*.tif``/``*.tiff``, not recursive), a glob pattern, a GDAL
            URL (``/vsis3/bucket/key.tif``), or a list mixing them.
        dates: one date per file (ISO ``YYYY-MM-DD`` strings, a comma-separated string or
            ``datetime.date``), in the order the files are listed (folders and globs sorted by
            name). Default: each file's ``ACQUISITION_DATE`` tag, else its TIFF DateTime tag, else
            a date in its name (``20230115``, ``2023-01-15``, ``2023_01_15``).
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
    paths = _expand_inputs(inputs)
    given = None
    if dates is not None:
        given = parse_dates([dates] if isinstance(dates, (str, dt.date)) else list(dates))
        if len(given) != len(paths):
            listed = ", ".join(Path(p).name for p in paths[:6]) + (
                ", ..." if len(paths) > 6 else ""
            )
            raise DateError(
                f"--dates: got {len(given)} dates for {len(paths)} files ({listed}); expected one "
                "date per file, in the order the files are listed (folders and globs sorted by "
                "name). Fix: give exactly one date per file"
            )
    infos = [_inspect(p) for p in paths]
    file_dates = given if given is not None else [_file_date(info) for info in infos]

    order = sorted(range(len(infos)), key=lambda i: file_dates[i])
    infos = [infos[i] for i in order]
    file_dates = [file_dates[i] for i in order]
    if len(infos) < 2:
        raise InputError(
            f"{infos[0].path}: only one date found; expected at least 2 dates (one GeoTIFF per "
            "date). Fix: give two or more files, a folder or a glob such as 'scenes/*.tif'"
        )
    for (a, da_), (b, db) in zip(zip(infos, file_dates), zip(infos[1:], file_dates[1:])):
        if da_ == db:
            raise DateError(
                f"{a.path} and {b.path} have the same date {da_.isoformat()}; expected one file "
                "per date. Fix: remove one of them, or give the right dates with --dates"
            )

    ref = infos[0]
    for info in infos[1:]:
        _check_grid(info, ref, align)
    if align and ref.crs is None:
        raise AlignmentError(
            f"{ref.path}: has no CRS; --align needs the reference (first) date georeferenced. "
            "Fix: assign a CRS to the file (e.g. gdal_edit.py -a_srs EPSG:32633)"
        )
    date_masks = () if masks is None else _match_masks(masks, file_dates, ref, align)
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
    masks: Inputs, dates: Sequence[dt.date], ref: _FileInfo, align: bool
) -> tuple[tuple[str, int] | None, ...]:
    """Per date ``(path, band)`` of its mask, or None (see ``open_stack(masks=...)``)."""
    infos = [_inspect(p) for p in _expand_inputs(masks)]
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
        date = info.tag_date or info.tiff_date or _name_date(info.path)
        if date not in dates:
            listed = ", ".join(d.isoformat() for d in dates)
            raise DateError(
                f"{info.path}: mask date {date.isoformat() if date else 'not found'}; expected "
                f"one of the image dates ({listed}). Fix: put the image's date in the mask's "
                "name (e.g. cloud_20230115.tif) or its ACQUISITION_DATE tag"
            )
        i = list(dates).index(date)
        if out[i] is not None:
            raise DateError(
                f"{info.path} and {out[i][0]} are both masks of {date.isoformat()}; expected at "
                "most one mask per date. Fix: remove one of them"
            )
        out[i] = (info.path, 1)
    missing = [d.isoformat() for d, m in zip(dates, out) if m is None]
    if missing:
        logger.info("no mask for %s: used unmasked", ", ".join(missing))
    return tuple(out)


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


def _expand_inputs(inputs: Inputs) -> list[str]:
    """Files named by ``inputs``: folders and globs expanded (sorted by name), duplicates dropped."""
    items: Iterable[InputPath]
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise InputError("no input given; expected GeoTIFF files, a folder or a glob pattern")
    found: list[str] = []
    for item in items:
        text = os.fspath(item)
        if text.startswith("/vsi") or "://" in text:
            found.append(text)  # a GDAL URL: checked when opened
        elif os.path.isdir(text):
            names = sorted(
                os.path.join(text, n)
                for n in os.listdir(text)
                if n.lower().endswith(_TIF_SUFFIXES) and os.path.isfile(os.path.join(text, n))
            )
            if not names:
                raise InputError(
                    f"{text}: folder has no .tif/.tiff files; expected one GeoTIFF per date. "
                    "Fix: point to the folder holding the GeoTIFFs (subfolders are not searched)"
                )
            found.extend(names)
        elif os.path.exists(text):
            found.append(text)
        elif _GLOB_CHARS.search(text):
            names = sorted(n for n in glob.glob(text) if os.path.isfile(n))
            if not names:
                raise InputError(
                    f"{text}: glob pattern matches no file; expected GeoTIFFs, one per date. "
                    "Fix: check the pattern and the folder"
                )
            found.extend(names)
        else:
            raise InputError(
                f"{text}: no such file or folder; expected a GeoTIFF, a folder of GeoTIFFs or a "
                "glob pattern. Fix: check the path"
            )
    unique: list[str] = []
    seen: set[str] = set()
    for path in found:
        key = path if path.startswith("/vsi") or "://" in path else os.path.realpath(path)
        if key in seen:
            logger.info("%s listed twice; reading it once", path)
            continue
        seen.add(key)
        unique.append(path)
    return unique


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
                wavelengths=band_wavelengths(tags, src.descriptions, path),
                tag_date=_tag_date(tags),
                tiff_date=_parse_value_date(tags.get("TIFFTAG_DATETIME")),
            )
    except RasterioError as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise InputError(
            f"{path}: cannot read it as a raster: {exc}{cause}; expected a complete, readable "
            "GeoTIFF. Fix: re-download or re-export the file (it may be truncated or corrupt)"
        ) from exc


def _tag_date(tags: dict[str, str]) -> dt.date | None:
    for key, value in tags.items():
        if key.upper() == "ACQUISITION_DATE":
            return _parse_value_date(value)
    return None


def _parse_value_date(value: str | None) -> dt.date | None:
    """A date at the start of a tag value (``2023-01-15...``, ``2023:01:15 10:00:00``)."""
    if not value:
        return None
    match = _VALUE_DATE.match(value)
    if not match:
        return None
    try:
        return dt.date(int(match[1]), int(match[3]), int(match[4]))
    except ValueError:
        return None


def _name_date(path: str) -> dt.date | None:
    """The first valid date in a file name."""
    for match in _NAME_DATE.finditer(Path(path).name):
        try:
            return dt.date(int(match[1]), int(match[3]), int(match[4]))
        except ValueError:
            continue
    return None


def _file_date(info: _FileInfo) -> dt.date:
    date = info.tag_date or info.tiff_date or _name_date(info.path)
    if date is None:
        raise DateError(
            f"{info.path}: no acquisition date found (no ACQUISITION_DATE or TIFFTAG_DATETIME "
            "tag, no date like 20230115 or 2023-01-15 in the name); expected one date per file. "
            "Fix: pass --dates 2023-01-15,2023-02-14,... (API: dates=[...]), set the "
            "ACQUISITION_DATE tag, or put the date in the file name"
        )
    return date


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
            match = re.fullmatch(r"(\d{4})(-?)(\d{2})\2(\d{2})", part)
            date = None
            if match:
                try:
                    date = dt.date(int(match[1]), int(match[3]), int(match[4]))
                except ValueError:
                    date = None
            if date is None:
                raise DateError(
                    f"--dates: {part!r} is not a valid date; expected YYYY-MM-DD, e.g. "
                    "2023-01-15. Fix: correct the date"
                )
            out.append(date)
    return out


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


# --------------------------------------------------------------------------------------------
# Scene sample


def read_sample(stack: Stack, max_pixels: int = 256 * 256) -> np.ndarray:
    """A decimated read of the whole scene, for scene-wide statistics.

    Each date is read at a reduced resolution (nearest neighbour, so nodata stays nodata, and
    GDAL uses overviews when the files have them): never the full resolution of a large scene.

    Args:
        stack: the stack.
        max_pixels: most pixels per date and band in the sample.

    Returns:
        (t, c, n) float32, source units, NaN where nodata; ``n <= max_pixels``.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels={max_pixels}: expected a positive number of pixels")
    height, width = stack.grid.shape
    scale = min(1.0, math.sqrt(max_pixels / float(height * width)))
    # floor(h * s) * floor(w * s) <= h * w * s**2 = max_pixels; the clamp to one row or column
    # of a very elongated scene is made up for on the other axis.
    out_h = max(1, min(height, int(height * scale)))
    out_w = max(1, min(width, int(width * scale), max_pixels // out_h))
    samples = [_read_decimated(src, out_h, out_w) for src in stack._sources()]
    return np.stack(samples).reshape(stack.T, stack.band_count, out_h * out_w)


def _read_decimated(source: _Source, out_h: int, out_w: int) -> np.ndarray:
    """(c, out_h, out_w) float32 of a whole date, NaN where nodata or masked."""
    with rasterio.Env(**GDAL_ENV), rasterio.open(source.path) as src:
        if source.align and not _on_grid(src, source):
            # Warp straight onto a coarse version of the target grid: no full-resolution warp.
            coarse = _coarse(source, out_h, out_w)
            with _warped(src, coarse, Resampling.nearest) as vrt:
                out = _masked_read(vrt)
            if source.mask is not None:
                out[:, _read_mask(coarse)] = np.nan
            return out
        out = _masked_read(src, out_shape=(src.count, out_h, out_w), resampling=Resampling.nearest)
    if source.mask is not None:  # decimated the same way as the image
        out[:, _read_mask(source, out_shape=(out_h, out_w), resampling=Resampling.nearest)] = np.nan
    return out


def _coarse(source: _Source, out_h: int, out_w: int) -> _Source:
    """``source`` on a grid of ``out_h`` x ``out_w`` pixels over the same extent (aligned)."""
    # Pixels (sx, sy) times larger; spelled out because Affine products warn in affine >= 3.1.
    t, sx, sy = source.transform, source.width / out_w, source.height / out_h
    coarse = Affine(t.a * sx, t.b * sy, t.c, t.d * sx, t.e * sy, t.f)
    return _Source(
        source.path, source.crs, coarse, out_h, out_w, True, source.mask, source.mask_values
    )
