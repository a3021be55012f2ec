"""Semi-synthetic series: a real labelled pair spread over T dates with synthetic nuisances."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from geochange.errors import InputError
from geochange.grid import GridSpec
from geochange.synth.nuisances import LEVELS, Nuisance, apply_date, draw_atmosphere, make_clouds
from geochange.synth.scene import (
    DN_SCALE,
    MAX_DATES,
    Scene,
    _check_int,
    _check_nuisance,
    changes_frame,
    make_dates,
    make_grid,
)
from geochange.synth.spectra import default_wavelengths, signature

__all__ = ["semi_synthetic", "to_reflectance"]

log = logging.getLogger(__name__)

# Band centres (nm) assumed when none are given, by band count: 3 = RGB PNG (red, green, blue),
# 4 = Sentinel-2 B2, B3, B4, B8 (OSCD), 6 = Landsat TM/ETM+ 1, 2, 3, 4, 5, 7.
_PAIR_WAVELENGTHS = {
    3: (665.0, 560.0, 490.0),
    4: (490.0, 560.0, 665.0, 842.0),
    6: (485.0, 560.0, 660.0, 830.0, 1650.0, 2215.0),
}


def to_reflectance(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance-like float32 values of an image of any dtype, and its nodata mask.

    uint8/int8 are taken as 0-255 DN (-> /255), other integers as reflectance x 10000, floats as
    reflectance when their maximum is <= 2 and as x 10000 otherwise. Nodata: NaN in any band, or
    0 in every band (integer images).

    Args:
        img: (c, h, w).
    Returns:
        (c, h, w) float32 reflectance, (h, w) bool nodata.
    """
    a = np.asarray(img)
    f = a.astype(np.float32)
    nodata = np.isnan(f).any(axis=0)
    if np.issubdtype(a.dtype, np.integer):
        nodata |= (a == 0).all(axis=0)
        f /= 255.0 if a.dtype.itemsize == 1 else DN_SCALE
    else:
        mx = np.nanmax(f) if np.isfinite(f).any() else 0.0
        if mx > 2.0:
            f /= DN_SCALE
    return np.nan_to_num(f, nan=0.0), nodata


def semi_synthetic(
    t0: np.ndarray,
    t1: np.ndarray,
    label: np.ndarray,
    *,
    dates: int = 8,
    seed: int = 0,
    nuisance: Nuisance = "medium",
    change_date_index: int | None = None,
    grid: GridSpec | None = None,
    band_wavelengths: Sequence[float] | None = None,
    start: str | dt.date = "2023-01-15",
) -> Scene:
    """Spread a real labelled pair over ``dates`` dates with independent synthetic nuisances.

    Dates 0 ... k-1 show ``t0``, dates k ... T-1 show ``t1``, each with its own illumination,
    haze, noise, misregistration and (on some dates, never on date k) clouds, so the change is
    first seen on date k.

    Args:
        t0, t1: (c, h, w) images of any dtype (see :func:`to_reflectance`).
        label: (h, w) 0 no change, 1 change, 255 unlabelled.
        dates: T (2 ... 254). seed: random seed. nuisance: strength (see ``LEVELS``).
        change_date_index: k in 1 ... T-1; random (seeded) when None.
        grid: grid of the pair; None (PNG pairs) gives a local stand-in grid
            (EPSG:32633, 10 m pixels).
        band_wavelengths: band centres in nm; by default guessed from the band count
            (3 = R, G, B; 4 = Sentinel-2 B2, B3, B4, B8; 6 = Landsat TM 1-5, 7).
        start: first date (ISO).

    Returns:
        Scene with change = label, date_index = k on change, 255 where unlabelled, and
        changes = one polygon per connected change region (kind "real").
    """
    t0 = np.asarray(t0)
    t1 = np.asarray(t1)
    label = np.asarray(label)
    if t0.ndim != 3 or t0.shape != t1.shape:
        raise InputError(
            f"t0 {t0.shape} and t1 {t1.shape}: expected two (c, h, w) images of the same shape"
        )
    c, h, w = t0.shape
    if label.shape != (h, w):
        raise InputError(f"label {label.shape}: expected (h, w) = {(h, w)} like t0 and t1")
    bad = np.setdiff1d(np.unique(label), [0, 1, 255])
    if bad.size:
        raise InputError(
            f"label: found values {bad[:5].tolist()}, expected 0 (no change), 1 (change) and "
            "255 (unlabelled); map a 0/255 mask with (label > 0)"
        )
    n_t = _check_int("dates", dates, 2, MAX_DATES, "use e.g. dates=8")
    seed = _check_int("seed", seed, 0, 2**63 - 1, "use a non-negative integer")
    level = LEVELS[_check_nuisance(nuisance)]
    r_k, r_dates, r_clouds, r_atm, r_noise = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    k = int(r_k.integers(1, n_t))
    if change_date_index is not None:
        k = _check_int("change_date_index", change_date_index, 1, n_t - 1, f"use 1 ... {n_t - 1}")
    if band_wavelengths is None:
        wl = _PAIR_WAVELENGTHS.get(c) or default_wavelengths(c)
    else:
        wl = tuple(float(v) for v in band_wavelengths)
        if len(wl) != c:
            raise InputError(
                f"band_wavelengths: found {len(wl)} values, expected {c} (one per band)"
            )
    if grid is None:
        grid = make_grid(h, w, "EPSG:32633", 10.0)
        log.info("pair has no georeferencing: using a local stand-in grid %s", grid.describe())
    elif grid.shape != (h, w):
        raise InputError(f"grid {grid.shape}: expected the image shape {(h, w)}")

    date_list = make_dates(r_dates, n_t, start)
    r0, nd0 = to_reflectance(t0)
    r1, nd1 = to_reflectance(t1)
    clouds = make_clouds(r_clouds, (h, w), n_t, level, exclude=(k,))
    atm = draw_atmosphere(r_atm, (h, w), n_t, c, level)
    wl_arr = np.asarray(wl, dtype=np.float32)
    cloud_spec = signature("cloud", wl)
    images = np.empty((n_t, c, h, w), dtype=np.uint16)
    for t in range(n_t):
        ground, nd = (r0, nd0) if t < k else (r1, nd1)
        img = apply_date(ground, t, wl_arr, atm, clouds, cloud_spec, level.noise_sd, r_noise)
        dn = np.clip(np.rint(img * DN_SCALE), 1, 65535).astype(np.uint16)
        dn[:, nd] = 0
        images[t] = dn

    change = label.astype(np.uint8)
    date_index = np.where(change == 1, k, np.where(change == 255, 255, 0)).astype(np.uint8)
    comps, n = ndimage.label(change == 1)
    items = [
        ("real", k, sl[0], sl[1], comps[sl] == i + 1)
        for i, sl in enumerate(ndimage.find_objects(comps))
        if sl is not None
    ]
    frame = changes_frame(items, date_list, grid)
    return Scene(images, date_list, change, date_index, clouds.mask.copy(), grid, frame, wl)
