"""Semi-synthetic date series built from a real labelled pair, for ``series_real.py``.

This generator is deliberately separate from the training generator (``geochange.synth``): the
network never saw series made this way, so a benchmark on them does not reward learning the
generator's own habits.

A series of ``T`` dates repeats the pair's first image up to the change date ``k`` and its second
image from ``k`` on (dates ``k .. T-1`` show the change, the reference date index is ``k``). Each
date gets the ordinary differences between acquisitions, each drawn per date from the seed:

- a gain of 0.9-1.1 (one per date, times a per-band jitter of +-2 %),
- an offset of +-2 % of the band's mean,
- a light haze: a smooth veil up to 3 % of the scene's mean brightness, strongest in blue
  (scaled by (490 nm / wavelength)^2 where the sensor's band centres are known),
- a sub-pixel shift of up to +-0.4 px in x and y (bilinear resampling).

Values stay in the pair's source dtype (rounded and clipped for integer types), so the series is
read like any user's GeoTIFFs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

#: Per-date nuisance ranges (see the module docstring).
GAIN = (0.9, 1.1)
BAND_JITTER = 0.02
OFFSET = 0.02
HAZE = 0.03
SHIFT = 0.4


def _haze_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A smooth field in [0, 1] (a few blobs across the scene)."""
    h, w = shape
    coarse = rng.random((4, 4))
    field = ndimage.zoom(coarse, (h / 4, w / 4), order=1, mode="nearest")[:h, :w]
    field = np.pad(field, ((0, h - field.shape[0]), (0, w - field.shape[1])), mode="edge")
    return (field - field.min()) / max(float(np.ptp(field)), 1e-6)


def make_series(
    t0: np.ndarray,
    t1: np.ndarray,
    *,
    dates: int,
    change_at: int,
    seed: int,
    wavelengths: Sequence[float] | None = None,
    quiet: bool = False,
) -> list[np.ndarray]:
    """``dates`` images (c, h, w) in the source dtype: ``t0`` before ``change_at``, ``t1`` from
    it on, each with its own gain, offset, haze and sub-pixel shift (``quiet``: none of them,
    the two images repeated as they are)."""
    if not 1 <= change_at <= dates - 1:
        raise ValueError(f"change_at: {change_at}, expected 1..{dates - 1}")
    rng = np.random.default_rng(seed)
    c, h, w = t0.shape
    a0, a1 = t0.astype(np.float32), t1.astype(np.float32)
    mean = 0.5 * (a0.reshape(c, -1).mean(axis=1) + a1.reshape(c, -1).mean(axis=1))
    if wavelengths is not None and len(wavelengths) == c:
        blue = (490.0 / np.asarray(wavelengths, dtype=np.float32)) ** 2
    else:
        blue = np.ones(c, dtype=np.float32)
    info = np.iinfo(t0.dtype) if np.issubdtype(t0.dtype, np.integer) else None
    out = []
    if quiet:
        return [(t0 if i < change_at else t1).copy() for i in range(dates)]
    for i in range(dates):
        img = a0 if i < change_at else a1
        gain = rng.uniform(*GAIN) * (1 + rng.uniform(-BAND_JITTER, BAND_JITTER, c))
        offset = rng.uniform(-OFFSET, OFFSET, c) * mean
        haze = rng.uniform(0, HAZE) * float(mean.mean()) * blue
        field = _haze_field(rng, (h, w))
        dy, dx = rng.uniform(-SHIFT, SHIFT, 2)
        y = np.empty_like(img)
        for b in range(c):
            moved = ndimage.shift(img[b], (dy, dx), order=1, mode="nearest")
            y[b] = moved * gain[b] + offset[b] + haze[b] * field
        if info is not None:
            y = np.clip(np.rint(y), info.min, info.max)
        out.append(y.astype(t0.dtype))
    return out


def series_dates(first: str | None, last: str | None, n: int) -> list[str]:
    """``n`` ISO dates evenly spread from ``first`` to ``last`` (or 30 days apart from 2000)."""
    if first and last:
        a, b = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    else:
        a = dt.date(2000, 1, 1)
        b = a + dt.timedelta(days=30 * (n - 1))
    step = (b - a).days / (n - 1)
    days = [round(i * step) for i in range(n)]
    for i in range(1, n):  # distinct dates even for a short span
        days[i] = max(days[i], days[i - 1] + 1)
    return [(a + dt.timedelta(days=d)).isoformat() for d in days]


def write_series(
    images: Sequence[np.ndarray],
    dates: Sequence[str],
    folder: Path,
    *,
    name: str,
    grid: object | None,
    wavelengths: Sequence[float] | None = None,
) -> list[Path]:
    """One GeoTIFF per date under ``folder`` (dated by tag and file name); PNG pairs (no grid)
    get a local stand-in grid (EPSG:32633, 1 m)."""
    from geochange.grid import GridSpec

    c, h, w = images[0].shape
    if grid is None:
        grid = GridSpec(CRS.from_epsg(32633), Affine(1.0, 0, 500000.0, 0, -1.0, 0.0), h, w, None)
    folder.mkdir(parents=True, exist_ok=True)
    tags = {}
    if wavelengths is not None and len(wavelengths) == c:
        tags["WAVELENGTHS_NM"] = ",".join(f"{v:g}" for v in wavelengths)
    paths = []
    for img, d in zip(images, dates):
        path = folder / f"{name}_{d.replace('-', '')}.tif"
        profile = grid.profile(count=c, dtype=img.dtype.name, nodata=None)  # type: ignore[attr-defined]
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(img)
            dst.update_tags(ACQUISITION_DATE=d, **tags)
        paths.append(path)
    return paths
