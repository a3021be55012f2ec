"""Labelled scenes held in memory for training: synthetic ones, or a user stack with its labels.

A *scene* is a whole labelled stack: raw bands (t, c, h, w) float32 in source units (NaN =
nodata), its scene statistics (computed once from a decimated sample of the whole scene, exactly
as at inference), a change mask and a change-date index. User labels are a label raster on the
stack grid (band 1 change 0/1/255, band 2 date index) or polygons (GeoPackage) with a
``date_index`` or ``change_date`` column, rasterised on the stack grid.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from geochange.bands import wavelength_array
from geochange.dates import iso, like
from geochange.errors import InputError
from geochange.model.losses import IGNORE
from geochange.model.normalize import apply
from geochange.robust import scene_stats
from geochange.shift import shift_dates
from geochange.stages.coregister import coregister as coregister_stack
from geochange.stages.coregister import estimate_shifts

__all__ = [
    "HARD_SHARE",
    "HARD_WINDOW",
    "SAMPLE_PIXELS",
    "LabelledScene",
    "decimated_sample",
    "hard_negatives",
    "load_labelled_stack",
    "scene_from_arrays",
    "synthetic_scene",
]

logger = logging.getLogger(__name__)

#: Pixels per date and band of the scene sample used for statistics (as ``read_sample``).
SAMPLE_PIXELS = 256 * 256

#: Share of a scene's unchanged pixels kept as hard negatives (see :func:`hard_negatives`).
HARD_SHARE = 0.03
#: Box (pixels) over which date differences are averaged before ranking hard negatives.
HARD_WINDOW = 7


@dataclass(frozen=True)
class LabelledScene:
    """A whole labelled scene in memory.

    Attributes:
        raw: (t, c, h, w) float32 source units, NaN = nodata.
        stats: (t, c, 2) scene statistics (``robust.scene_stats`` of a decimated sample).
        change: (h, w) uint8 0/1, 255 = ignore.
        date_index: (h, w) uint8 j in 1..t-1, 0 no change, 255 unknown.
        clouds: (t, h, w) bool cloud/shadow masks, or None.
        name: description for logs and reports.
        wavelengths: (c,) float32 band centres in nm, NaN = unknown; None = all unknown.
    """

    raw: np.ndarray
    stats: np.ndarray
    change: np.ndarray
    date_index: np.ndarray
    clouds: np.ndarray | None = None
    name: str = ""
    wavelengths: np.ndarray | None = None

    @cached_property
    def hard(self) -> np.ndarray:
        """Flat indices of the hard negatives (:func:`hard_negatives`), found on first use.

        They are looked for with the clouds masked: random chips hold clouds enough, the rarer
        look-alikes (crop green-up, harvest, haze edges) need the extra draws.
        """
        raw = self.raw
        if self.clouds is not None:
            raw = np.where(self.clouds[:, None], np.nan, raw)
        return hard_negatives(apply(raw, self.stats)[0], self.change)


def decimated_sample(raw: np.ndarray, max_pixels: int = SAMPLE_PIXELS) -> np.ndarray:
    """(t, c, n) nearest-neighbour decimated sample of a (t, c, h, w) array, like ``read_sample``."""
    t, c, h, w = raw.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / max_pixels))))
    return raw[:, :, ::step, ::step].reshape(t, c, -1)


def hard_negatives(x: np.ndarray, change: np.ndarray, share: float = HARD_SHARE) -> np.ndarray:
    """Flat indices of the unchanged pixels whose appearance changes most, coherently, between dates.

    The measure is the largest band-averaged magnitude of the consecutive-date difference of the
    standardised, gap-filled series ``x`` (t, c, h, w) from ``normalize.apply``, box-averaged over
    ``HARD_WINDOW`` pixels first: noise and misregistered texture cancel out, coherent look-alikes
    stay (crop green-up and harvest, haze, unmasked cloud edges). Among pixels labelled 0 the top
    ``share`` are returned, none within ``HARD_WINDOW`` px of a labelled change (whose blur would
    make the chip a change chip). Measured on the data_samples scene: 92 % of them lie in crop
    fields; without the box average 77 % were urban texture.
    """
    diff = ndimage.uniform_filter(np.diff(x, axis=0), size=(1, 1, HARD_WINDOW, HARD_WINDOW))
    score = np.abs(diff).mean(axis=1).max(axis=0)
    near = ndimage.binary_dilation(change != 0, iterations=HARD_WINDOW)
    cand = np.flatnonzero(~near.ravel())
    n = int(round(share * cand.size))
    if n == 0:
        return cand[:0]
    top = np.argpartition(score.ravel()[cand], cand.size - n)[cand.size - n :]
    return np.sort(cand[top])


def scene_from_arrays(
    raw: np.ndarray,
    change: np.ndarray,
    date_index: np.ndarray,
    clouds: np.ndarray | None = None,
    nodata: float | None = None,
    name: str = "",
    wavelengths: Sequence[float | None] | None = None,
    coregister: bool = False,
) -> LabelledScene:
    """Build a :class:`LabelledScene`; statistics from a decimated sample of the whole scene.

    Args:
        raw: (t, c, h, w) any numeric dtype; ``nodata`` values (and NaN) become nodata.
        change, date_index: (h, w) labels (see module docstring).
        clouds: optional (t, h, w) bool.
        nodata: source nodata value, e.g. 0 for the synthetic uint16 scenes.
        wavelengths: band centres in nm (None items = unknown); None = all unknown.
        coregister: estimate and undo whole-date shifts (:mod:`geochange.stages.coregister`), as
            ``detect`` does; cloud masks move with their dates.
    """
    arr = np.asarray(raw).astype(np.float32)
    if nodata is not None:
        arr[np.asarray(raw) == nodata] = np.nan
    # A pixel is nodata on a date when any band is.
    arr[~np.isfinite(arr).all(axis=1, keepdims=True).repeat(arr.shape[1], axis=1)] = np.nan
    if coregister:
        shifts = estimate_shifts(arr).shifts
        arr = shift_dates(arr, shifts)
        if clouds is not None:
            moved = shift_dates(np.asarray(clouds, np.float32)[:, None], shifts)[:, 0]
            clouds = moved > 0.5
    stats = scene_stats(decimated_sample(arr))
    return LabelledScene(
        raw=arr,
        stats=stats,
        change=np.asarray(change, dtype=np.uint8),
        date_index=np.asarray(date_index, dtype=np.uint8),
        clouds=None if clouds is None else np.asarray(clouds, dtype=bool),
        name=name,
        wavelengths=wavelength_array(wavelengths, arr.shape[1]),
    )


# ----------------------------------------------------------------------------------------------
# Sources


def synthetic_scene(
    seed: int,
    size: int = 128,
    dates: Sequence[int] = (2, 10),
    bands: Sequence[int] = (1, 16),
    nuisance: Sequence[str] = ("low", "medium", "high"),
    coregister: bool = False,
) -> LabelledScene:
    """A synthetic scene from :func:`geochange.synth.make_scene`, its (T, C, nuisance) drawn
    from ``seed``.

    Args:
        seed: scene seed (also fixes T, band count and nuisance level).
        size: scene edge in pixels.
        dates: inclusive range of T.
        bands: inclusive range of the band count.
        nuisance: levels to choose from.
        coregister: undo the scene's whole-date shifts as ``detect`` does.
    """
    from geochange.synth import make_scene

    rng = np.random.default_rng([seed, 7919])
    t = int(rng.integers(dates[0], dates[1] + 1))
    c = int(rng.integers(bands[0], bands[1] + 1))
    level = str(nuisance[int(rng.integers(len(nuisance)))])
    scene = make_scene(size=size, dates=t, bands=c, seed=int(seed), nuisance=level)
    return scene_from_arrays(
        scene.images,
        scene.change,
        scene.date_index,
        clouds=scene.clouds,
        nodata=0,
        name=f"synth seed={seed} T={t} C={c} nuisance={level}",
        wavelengths=scene.band_wavelengths,
        coregister=coregister,
    )


def _date_lookup(change_dates: Sequence[Any], dates: Sequence[dt.date], path: str) -> np.ndarray:
    """Stack date index j (first date on or after the change date) for each change date."""
    out = []
    for value in change_dates:
        d = like(value, dates, f"labels {path}: change_date")
        j = next((i for i, sd in enumerate(dates) if sd >= d), None)
        if j is None or j == 0:
            raise InputError(
                f"labels {path}: change_date {iso(d)} is not after the first stack date "
                f"{iso(dates[0])} or is after the last {iso(dates[-1])}; "
                "expected a date within the series (the first date the change is seen)"
            )
        out.append(j)
    return np.asarray(out, dtype=np.uint8)


def _labels_from_gpkg(path: str, stack: Any) -> tuple[np.ndarray, np.ndarray]:
    import geopandas as gpd
    from rasterio.features import rasterize

    gdf = gpd.read_file(path)
    if gdf.crs is None:
        raise InputError(
            f"labels {path}: the layer has no CRS; expected polygons with a CRS (set one in QGIS "
            "or with geopandas .set_crs)"
        )
    gdf = gdf.to_crs(stack.grid.crs)
    if "date_index" in gdf.columns:
        j = gdf["date_index"].fillna(IGNORE).astype(int).to_numpy()
    elif "change_date" in gdf.columns:
        j = _date_lookup(list(gdf["change_date"]), stack.dates, path).astype(int)
    else:
        j = np.full(len(gdf), IGNORE, dtype=int)
    shape, transform = stack.grid.shape, stack.grid.transform
    geoms = [g for g in gdf.geometry if g is not None and not g.is_empty]
    change = np.zeros(shape, np.uint8)
    date_index = np.zeros(shape, np.uint8)
    if geoms:
        change = rasterize(
            ((g, 1) for g in geoms), out_shape=shape, transform=transform, fill=0, dtype="uint8"
        )
        pairs = [(g, int(v)) for g, v in zip(gdf.geometry, j) if g is not None and not g.is_empty]
        date_index = rasterize(pairs, out_shape=shape, transform=transform, fill=0, dtype="uint8")
    return change, date_index


def _labels_from_raster(path: str, stack: Any) -> tuple[np.ndarray, np.ndarray]:
    import rasterio

    from geochange.grid import GridSpec

    with rasterio.open(path) as src:
        grid = GridSpec(src.crs, src.transform, src.height, src.width, src.nodata)
        if not grid.same_grid(stack.grid):
            raise InputError(
                f"labels {path}: grid {grid.describe()} differs from the stack's "
                f"{stack.grid.describe()}; write the label raster on the stack grid"
            )
        if src.count < 1:
            raise InputError(f"labels {path}: no band; expected band 1 = change mask")
        change = src.read(1).astype(np.uint8)
        date_index = (
            src.read(2).astype(np.uint8) if src.count >= 2 else np.full_like(change, IGNORE)
        )
    return change, date_index


def load_labelled_stack(
    stack: str | os.PathLike | Sequence[str | os.PathLike],
    labels: str | os.PathLike | None = None,
    dates: Sequence[str] | str | None = None,
    align: bool = False,
    coregister: bool = False,
    examples: str | os.PathLike | None = None,
) -> LabelledScene:
    """Read a user stack and its labels into memory.

    Args:
        stack: the stack's files, folder or glob (as ``geochange.open_stack``).
        labels: a label raster on the stack grid (``.tif``) or polygons (``.gpkg``) with a
            ``date_index`` or ``change_date`` column (no column: change with unknown date).
        dates: dates of the files, as ``open_stack``.
        align: warp all dates onto the first date's grid.
        coregister: estimate and undo whole-date shifts, as ``detect`` does.
        examples: instead of ``labels``, the user's example polygons
            (:mod:`geochange.io.examples`): change 1, no change 0, the rest ignored; the change
            date is the second date of a pair and unknown in a longer series.

    Raises:
        InputError: missing labels, labels on another grid, change dates outside the series.
    """
    if examples is not None:
        return _examples_scene(stack, examples, dates, align, coregister)
    if labels is None:
        raise InputError("labels: none given; pass a label raster, change polygons or examples")
    from geochange.io.read import read_sample
    from geochange.io.stack import open_stack

    labels = str(labels)
    if not Path(labels).is_file():
        raise InputError(
            f"labels {labels}: file not found; expected a label raster (.tif) or change "
            "polygons (.gpkg) for the stack"
        )
    inputs = [str(s) for s in stack] if isinstance(stack, (list, tuple)) else str(stack)
    st = open_stack(inputs, dates=dates, align=align)
    if coregister:
        st = coregister_stack(st)
    h, w = st.grid.shape
    raw = st.window(0, 0, h, w)
    if labels.lower().endswith((".gpkg", ".geojson", ".shp", ".fgb")):
        change, date_index = _labels_from_gpkg(labels, st)
    else:
        change, date_index = _labels_from_raster(labels, st)
    stats = scene_stats(read_sample(st, SAMPLE_PIXELS))
    return LabelledScene(
        raw=raw.astype(np.float32),
        stats=stats,
        change=change,
        date_index=date_index,
        name=f"stack {inputs} labels {labels}",
        wavelengths=wavelength_array(st.wavelengths, st.band_count),
    )


def _examples_scene(stack, examples, dates, align, coregister) -> LabelledScene:
    """:func:`load_labelled_stack` with the user's example polygons as labels."""
    from geochange.io.examples import UNKNOWN, read_examples
    from geochange.io.read import read_sample
    from geochange.io.stack import open_stack

    inputs = [str(s) for s in stack] if isinstance(stack, (list, tuple)) else str(stack)
    st = open_stack(inputs, dates=dates, align=align)
    if coregister:
        st = coregister_stack(st)
    change = read_examples(examples, st.grid).label
    date_index = np.where(change == 1, 1 if st.T == 2 else UNKNOWN, change).astype(np.uint8)
    h, w = st.grid.shape
    return LabelledScene(
        raw=st.window(0, 0, h, w).astype(np.float32),
        stats=scene_stats(read_sample(st, SAMPLE_PIXELS)),
        change=change,
        date_index=date_index,
        name=f"stack {inputs} examples {examples}",
        wavelengths=wavelength_array(st.wavelengths, st.band_count),
    )
