"""Seeded synthetic multi-date scenes with labelled changes: :func:`make_scene`."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import shapes
from shapely.geometry import shape as to_shape

from geochange.dates import to_date
from geochange.errors import InputError
from geochange.grid import GridSpec
from geochange.synth.changes import MICRO_MAX_PX, plant_changes
from geochange.synth.land import Land, background_table, make_land
from geochange.synth.nuisances import LEVELS, Nuisance, apply_date, draw_atmosphere, make_clouds
from geochange.synth.spectra import default_wavelengths, signature

__all__ = ["Scene", "make_scene", "DN_SCALE", "changes_frame"]

log = logging.getLogger(__name__)

# Digital numbers are reflectance x DN_SCALE (Sentinel-2 L1C/L2A convention); 0 = nodata.
DN_SCALE = 10000.0
MAX_DATES = 254  # date indices are uint8 and 255 means "unknown"
MAX_BANDS = 16


@dataclass
class Scene:
    """A synthetic (or semi-synthetic) multi-date scene and its ground truth.

    Attributes:
        images: (t, c, h, w) uint16 reflectance x 10000; 0 is reserved for nodata.
        dates: t acquisition dates, increasing, irregularly spaced.
        change: (h, w) uint8: 0 no change, 1 change (255 ignore, semi-synthetic only).
        date_index: (h, w) uint8: 0 no change, j in 1 ... t-1 the first date the change is seen
            (255 unknown, semi-synthetic only).
        clouds: (t, h, w) bool cloud or cloud shadow on that date (image coordinates).
        grid: the scene's grid (projected CRS, nodata 0).
        changes: one row per change: geometry (scene CRS), change_date (ISO), date_index,
            kind, micro (area <= 9 px), area_px.
        band_wavelengths: centre wavelength (nm) of each band.
        events: (K, h, w) uint8 date index of each pixel's change events in time order (0 =
            none) for a scene made with ``events=K`` > 1; None otherwise (one event per pixel:
            ``date_index``).
    """

    images: np.ndarray
    dates: tuple[dt.date, ...]
    change: np.ndarray
    date_index: np.ndarray
    clouds: np.ndarray
    grid: GridSpec
    changes: gpd.GeoDataFrame
    band_wavelengths: tuple[float, ...]
    events: np.ndarray | None = None


def _check_int(name: str, value: object, lo: int, hi: int, fix: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or not lo <= int(value) <= hi
    ):
        raise InputError(f"{name}={value!r}: expected an integer from {lo} to {hi}; {fix}")
    return int(value)


def _check_nuisance(nuisance: str) -> str:
    if nuisance not in LEVELS:
        raise InputError(
            f"nuisance={nuisance!r}: expected one of {', '.join(LEVELS)}; pass e.g. nuisance='medium'"
        )
    return nuisance


def make_grid(height: int, width: int, crs: str | CRS, pixel_size: float) -> GridSpec:
    """A north-up grid with ``pixel_size`` metre pixels, upper-left at (500000, 5000000)."""
    try:
        crs_obj = CRS.from_user_input(crs)
    except CRSError as exc:
        raise InputError(f"crs={crs!r}: not a CRS ({exc}); pass e.g. crs='EPSG:32633'") from exc
    if not crs_obj.is_projected:
        raise InputError(
            f"crs={crs!r}: found a geographic CRS, expected a projected one in metres "
            "(pixel_size is in metres); pass a UTM CRS such as 'EPSG:32633'"
        )
    if not pixel_size > 0:
        raise InputError(
            f"pixel_size={pixel_size!r}: expected a positive size in metres, e.g. 10.0"
        )
    transform = Affine(float(pixel_size), 0.0, 500000.0, 0.0, -float(pixel_size), 5000000.0)
    return GridSpec(crs_obj, transform, int(height), int(width), 0)


def make_dates(rng: np.random.Generator, n: int, start: str | dt.date) -> tuple[dt.date, ...]:
    """``n`` increasing dates from ``start``, 10-60 days apart (irregular revisit with gaps)."""
    start = to_date(start, "start")
    gaps = np.concatenate([[0], np.cumsum(rng.integers(10, 61, n - 1))])
    return tuple(start + dt.timedelta(days=int(g)) for g in gaps)


def _offset(t: Affine, row: int, col: int) -> Affine:
    """Transform of the window starting at (row, col) (no Affine products: affine>=3.1 warns)."""
    return Affine(t.a, t.b, t.c + t.a * col + t.b * row, t.d, t.e, t.f + t.d * col + t.e * row)


def changes_frame(
    items: list[tuple[str, int, slice, slice, np.ndarray]],
    dates: tuple[dt.date, ...],
    grid: GridSpec,
) -> gpd.GeoDataFrame:
    """Vectorise change masks into a GeoDataFrame (one row per change, pixel-exact polygons).

    Args:
        items: (kind, date_index, rows, cols, mask (h', w') bool) per change.
    """
    rows_out = []
    for kind, j, rows, cols, mask in items:
        tr = _offset(grid.transform, rows.start, cols.start)
        polys = [
            to_shape(geom)
            for geom, val in shapes(mask.astype(np.uint8), mask=mask, connectivity=4, transform=tr)
            if val == 1
        ]
        geom = shapely.union_all(polys) if len(polys) > 1 else polys[0]
        area = int(mask.sum())
        rows_out.append(
            {
                "geometry": geom,
                "change_date": dates[j].isoformat() if 0 < j < len(dates) else None,
                "date_index": int(j),
                "kind": kind,
                "micro": area <= MICRO_MAX_PX,
                "area_px": area,
            }
        )
    cols_ = ["geometry", "change_date", "date_index", "kind", "micro", "area_px"]
    if not rows_out:
        return gpd.GeoDataFrame({c: [] for c in cols_[1:]}, geometry=[], crs=grid.crs)[cols_]
    frame = gpd.GeoDataFrame(rows_out, geometry="geometry", crs=grid.crs)
    return frame.astype({"date_index": "int64", "micro": "bool", "area_px": "int64"})[cols_]


def _render_ground(
    land: Land,
    bg: np.ndarray,
    veg: np.ndarray,
    green_t: np.ndarray,
    show_alt: np.ndarray,
    alt_spec: np.ndarray,
    alt_g: np.ndarray,
) -> np.ndarray:
    """(c, h, w) surface reflectance: background mixed with green vegetation by fraction g."""
    b = np.where(show_alt[None], alt_spec, bg)
    g = np.where(show_alt, alt_g, green_t)
    return b + g[None] * (veg[:, None, None] * land.vigour[None] - b)


def make_scene(
    size: int = 512,
    dates: int = 8,
    bands: int = 4,
    seed: int = 0,
    nuisance: Nuisance = "medium",
    *,
    height: int | None = None,
    width: int | None = None,
    crs: str | CRS = "EPSG:32633",
    pixel_size: float = 10.0,
    start: str | dt.date = "2023-01-15",
    events: int = 1,
    _apply_clouds: bool = True,
) -> Scene:
    """Make a seeded synthetic scene: land, phenology, dated changes and nuisances.

    Same arguments give byte-identical arrays. Independent random streams are used for land,
    dates, clouds, changes, atmosphere and noise, so switching one part off (``_apply_clouds``,
    for tests) leaves the others unchanged.

    Args:
        size: height and width in pixels unless ``height``/``width`` are given (>= 16).
        dates: number of dates t (2 ... 254).
        bands: number of bands c (1 ... 16), sampled from spectral curves at
            :func:`~geochange.synth.spectra.default_wavelengths` (4 = blue, green, red, NIR).
        seed: random seed (training uses 0-999, held-out benchmarks 5000+, data_samples 2024).
        nuisance: strength of illumination, haze, clouds, noise and misregistration.
        height, width: scene shape in pixels, overriding ``size``.
        crs: projected CRS of the grid; pixel_size: metres; start: first date (ISO).
        events: up to this many change events per pixel (1 .. 8): with more than one, some
            changed objects change again later (:mod:`geochange.synth.events`); the truth is
            ``Scene.events``. 1 (the default) gives the scene of earlier versions unchanged.

    Returns:
        A :class:`Scene` with images (t, c, h, w) uint16 reflectance x 10000.
    """
    h = _check_int("height", size if height is None else height, 16, 16384, "use e.g. size=256")
    w = _check_int("width", size if width is None else width, 16, 16384, "use e.g. size=256")
    n_t = _check_int("dates", dates, 2, MAX_DATES, "use e.g. dates=8")
    n_c = _check_int("bands", bands, 1, MAX_BANDS, "use e.g. bands=4")
    seed = _check_int("seed", seed, 0, 2**63 - 1, "use a non-negative integer")
    n_events = _check_int("events", events, 1, 8, "use e.g. events=2")
    level = LEVELS[_check_nuisance(nuisance)]
    grid = make_grid(h, w, crs, pixel_size)
    r_land, r_dates, r_clouds, r_changes, r_atm, r_noise = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
    )
    wl = default_wavelengths(n_c)
    wl_arr = np.asarray(wl, dtype=np.float32)
    date_list = make_dates(r_dates, n_t, start)

    land = make_land(r_land, (h, w))
    bg = land.background(background_table(wl))
    veg = signature("green_veg", wl)
    green = np.stack([land.green(d) for d in date_list])
    clouds = make_clouds(r_clouds, (h, w), n_t, level)
    planted = plant_changes(r_changes, land, bg, veg, green, wl, clouds.mask)
    atm = draw_atmosphere(r_atm, (h, w), n_t, n_c, level)
    cloud_spec = signature("cloud", wl)
    later = None
    if n_events > 1:
        from geochange.synth.events import plan_later_events

        # Its own stream (not one of the six above): the one-event scene stays as it was.
        r_events = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        later = plan_later_events(r_events, planted, n_t, n_events, wl, clouds.mask)

    images = np.empty((n_t, n_c, h, w), dtype=np.uint16)
    for t in range(n_t):
        show = ((planted.post > 0) & (planted.post <= t)) | ((planted.pre > 0) & (t < planted.pre))
        ground = _render_ground(land, bg, veg, green[t], show, planted.alt_spec, planted.alt_g)
        if later is not None:
            natural = _render_ground(
                land, bg, veg, green[t], np.zeros_like(show), planted.alt_spec, planted.alt_g
            )
            ground = later.ground(t, ground, natural)
        img = apply_date(
            ground,
            t,
            wl_arr,
            atm,
            clouds if _apply_clouds else None,
            cloud_spec,
            level.noise_sd,
            r_noise,
        )
        images[t] = np.clip(np.rint(img * DN_SCALE), 1, 65535).astype(np.uint16)

    date_index = planted.date_index()
    change = (date_index > 0).astype(np.uint8)
    frame = changes_frame(
        [(c.kind, c.date_index, c.rows, c.cols, c.mask) for c in planted.changes], date_list, grid
    )
    log.debug("scene seed=%d: %d changes, %.2f %% changed", seed, len(frame), 100 * change.mean())
    truth = None if later is None else later.truth(date_index)
    return Scene(images, date_list, change, date_index, clouds.mask.copy(), grid, frame, wl, truth)
