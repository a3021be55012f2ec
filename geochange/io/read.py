"""Reading a stack's pixels: windows of every date, and a decimated sample of the whole scene.

A :class:`StackReader` is the picklable array-like behind ``Stack.data`` and ``Stack.window``:
file paths and the grid, no data. Each ``reader[...]`` opens its files inside the call (rasterio
handles are neither picklable nor thread-safe) under :data:`GDAL_ENV` and reads only its window,
so the dask graph runs on the threaded scheduler and on ``dask.distributed`` alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geochange import shift
from geochange.grid import GridSpec

if TYPE_CHECKING:
    from geochange.io.stack import Stack

__all__ = [
    "ALIGN_RESAMPLING",
    "GDAL_ENV",
    "DateSource",
    "StackReader",
    "read_sample",
    "stack_reader",
]

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
    # A VRT may not read raw bytes of arbitrary files as pixels (VRTRawRasterBand). GDAL 3.10
    # reads this only at build time; geochange.io.drivers refuses such VRTs itself.
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",
}

#: Resampling used by ``align=True``: reflectances are continuous data.
ALIGN_RESAMPLING = Resampling.bilinear


def stack_reader(stack: Stack) -> StackReader:
    """Picklable array-like (t, c, y, x) float32 over the files of ``stack``, read when sliced."""
    return StackReader(
        _sources(stack), stack.band_count, stack.grid.height, stack.grid.width, stack.shifts
    )


def _sources(stack: Stack) -> tuple[DateSource, ...]:
    if stack.sources:  # an xarray cube (geochange.io.cube)
        return stack.sources
    grid = stack.grid
    target = (grid.crs, grid.transform, grid.height, grid.width)
    masks = stack.masks or (None,) * stack.T
    bands = stack.bands or (None,) * stack.T
    return tuple(
        _Source(path, *target, stack.align, mask, stack.mask_values, b)
        for path, mask, b in zip(stack.paths, masks, bands)
    )


# --------------------------------------------------------------------------------------------
# Read tasks: plain picklable values and top-level functions, one file opened per call.


class DateSource(Protocol):
    """One date of a stack, read on the stack grid inside a task (picklable, no open handle):
    a file (below) or a date of an xarray cube (:class:`geochange.io.cube.CubeDate`)."""

    def read(self, window: Window) -> np.ndarray:
        """(c, h, w) float32 of ``window`` of the stack grid, NaN where any band is nodata."""
        ...

    def read_decimated(self, out_h: int, out_w: int) -> np.ndarray:
        """(c, out_h, out_w) float32 of the whole date at reduced resolution (nearest)."""
        ...


@dataclass(frozen=True)
class _Source:
    """What a read task needs to read one date of a file on the stack grid."""

    path: str
    crs: CRS | None
    transform: Affine
    height: int
    width: int
    align: bool
    mask: tuple[str, int] | None = None
    mask_values: tuple[float, ...] | None = None
    bands: tuple[int, ...] | None = None  # 1-based bands of the file holding this date; None = all

    def read(self, window: Window) -> np.ndarray:
        return _read_window(self, window)

    def read_decimated(self, out_h: int, out_w: int) -> np.ndarray:
        return _read_decimated(self, out_h, out_w)


@dataclass(frozen=True)
class StackReader:
    """Array-like (t, c, y, x) float32 over the files; each ``[...]`` opens and reads the files.

    Used as the source of :func:`dask.array.from_array`: dask calls ``reader[slices]`` once per
    chunk, inside the task.
    """

    sources: tuple[DateSource, ...]
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
            out = np.stack([self.sources[int(t)].read(window) for t in dates])
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
            return self.sources[t].read(Window(x0, y0, x1 - x0, y1 - y0))
        m = shift.margin(np.asarray(self.shifts[t]))
        ya, yb = max(0, y0 - m), min(self.height, y1 + m)
        xa, xb = max(0, x0 - m), min(self.width, x1 + m)
        img = self.sources[t].read(Window(xa, ya, xb - xa, yb - ya))
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
        bands = {"indexes": list(source.bands)} if source.bands else {}
        if source.align and not _on_grid(src, source):
            with _warped(src, source, ALIGN_RESAMPLING) as vrt:
                out = _masked_read(vrt, window=window, **bands)
        else:
            out = _masked_read(src, window=window, **bands)
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
    with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, then nodata
        out = raw.astype(np.float32)
    # NaN and ±inf (and float64 values beyond float32's range) are nodata.
    invalid = ~np.isfinite(out).all(axis=0)
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


def axis_chunks(size: int, chunk: int) -> tuple[int, ...]:
    """Chunk sizes along an axis of ``size`` pixels: ``chunk`` each, the last one smaller."""
    full, rest = divmod(size, chunk)
    return (chunk,) * full + ((rest,) if rest else ())


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
    samples = [src.read_decimated(out_h, out_w) for src in _sources(stack)]
    return np.stack(samples).reshape(stack.T, stack.band_count, out_h * out_w)


def _read_decimated(source: _Source, out_h: int, out_w: int) -> np.ndarray:
    """(c, out_h, out_w) float32 of a whole date, NaN where nodata or masked."""
    with rasterio.Env(**GDAL_ENV), rasterio.open(source.path) as src:
        bands = {"indexes": list(source.bands)} if source.bands else {}
        if source.align and not _on_grid(src, source):
            # Warp straight onto a coarse version of the target grid: no full-resolution warp.
            coarse = _coarse(source, out_h, out_w)
            with _warped(src, coarse, Resampling.nearest) as vrt:
                out = _masked_read(vrt, **bands)
            if source.mask is not None:
                out[:, _read_mask(coarse)] = np.nan
            return out
        count = len(source.bands) if source.bands else src.count
        out = _masked_read(
            src, out_shape=(count, out_h, out_w), resampling=Resampling.nearest, **bands
        )
    if source.mask is not None:  # decimated the same way as the image
        out[:, _read_mask(source, out_shape=(out_h, out_w), resampling=Resampling.nearest)] = np.nan
    return out


def _coarse(source: _Source, out_h: int, out_w: int) -> _Source:
    """``source`` on a grid of ``out_h`` x ``out_w`` pixels over the same extent (aligned)."""
    # Pixels (sx, sy) times larger; spelled out because Affine products warn in affine >= 3.1.
    t, sx, sy = source.transform, source.width / out_w, source.height / out_h
    coarse = Affine(t.a * sx, t.b * sy, t.c, t.d * sx, t.e * sy, t.f)
    return _Source(
        source.path,
        source.crs,
        coarse,
        out_h,
        out_w,
        True,
        source.mask,
        source.mask_values,
        source.bands,
    )
