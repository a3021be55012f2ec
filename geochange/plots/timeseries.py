"""A time series at one place (a pixel, a window or a change polygon): band values over the dates
with the change date marked, as numbers (:func:`series_values`) or a PNG (:func:`series`)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from matplotlib.figure import Figure

from geochange.dates import When, is_missing, like
from geochange.errors import InputError
from geochange.grid import GridSpec
from geochange.io.stack import Stack
from geochange.plots.maps import (
    BAND_COLOURS,
    OUTLINE_COLOUR,
    band_kind,
    check_png_output,
    crs_label,
    save_png,
)

__all__ = ["SeriesValues", "series", "series_values"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Time series at a place


@dataclass(frozen=True)
class SeriesValues:
    """Band values over the dates at one place (a pixel, a window or a change polygon).

    Attributes:
        dates: the stack's dates.
        values: (t, c) mean over the valid pixels of the place, source units; NaN where no pixel
            of the place is valid on that date.
        std: (t, c) standard deviation over those pixels (0 for a single pixel).
        band_labels: one label per band (its description, else ``band i``).
        n_pixels: pixels in the place.
        description: where, in words (for titles).
        change_date: the detected change date (first seen), or None.
        date_before: the date before the change, or None.
    """

    dates: tuple[dt.date, ...]
    values: np.ndarray
    std: np.ndarray
    band_labels: tuple[str, ...]
    n_pixels: int
    description: str
    change_date: dt.date | None = None
    date_before: dt.date | None = None


def series_values(
    stack: Stack,
    x: float | None = None,
    y: float | None = None,
    *,
    crs: Any = None,
    window: int = 1,
    changes: Any = None,
    polygon_id: int | None = None,
    change_date: dt.date | str | None = None,
    date_index: Any = None,
) -> SeriesValues:
    """Band values over the dates at a point (or a window around it) or over one change polygon.

    Args:
        stack: the stack.
        x, y: the point, in ``crs`` units; ignored when ``polygon_id`` is given.
        crs: CRS of ``x, y`` (anything pyproj reads, e.g. "EPSG:4326"); default the stack's CRS.
        window: odd window edge in pixels centred on the point; the mean is taken (parts of the
            window outside the scene are left out).
        changes: change polygons: a GeoDataFrame or the GeoPackage detect wrote (layer
            ``changes``). With a point, the polygon holding the point gives the change date.
        polygon_id: ``id`` of the change polygon to average over (needs ``changes``).
        change_date: the change date to mark; overrides the polygons and ``date_index``.
        date_index: (y, x) change-date raster (array, or path to detect's ``*_date.tif``) used
            for the change date when no polygon gives it: the most frequent date in the place.

    Returns:
        The values; see :class:`SeriesValues`.

    Raises:
        InputError: point outside the scene, even or non-positive window, unknown polygon id,
            unreadable changes.
    """
    if (
        isinstance(window, bool)
        or not isinstance(window, (int, np.integer))
        or window < 1
        or window % 2 == 0
    ):
        raise InputError(
            f"--window: found {window!r}, expected an odd number of pixels >= 1 (1, 3, 5, …) so "
            "the window is centred on the point"
        )
    grid = stack.grid
    gdf = _load_changes(changes) if changes is not None else None
    if gdf is not None and grid.crs and gdf.crs is not None and gdf.crs != grid.crs:
        gdf = gdf.to_crs(grid.crs)
    row_rec = None

    if polygon_id is not None:
        if gdf is None:
            raise InputError(
                f"--polygon {polygon_id}: no change polygons given; add --changes OUT.gpkg "
                "(the GeoPackage geochange detect wrote)"
            )
        row_rec = _polygon_row(gdf, polygon_id, changes)
        data, mask, r0, c0 = _polygon_pixels(stack, row_rec.geometry, polygon_id)
        n = int(mask.sum())
        description = f"change polygon {polygon_id}: mean over {n} px"
    else:
        if x is None or y is None:
            raise InputError(
                "no place given: pass a point (x, y / --at X Y) or a change polygon "
                "(polygon_id / --polygon ID with --changes OUT.gpkg)"
            )
        sx, sy = _to_stack_crs(float(x), float(y), crs, grid)
        row, col = _point_pixel(float(x), float(y), sx, sy, crs, grid)
        half = window // 2
        r0, r1 = max(0, row - half), min(grid.height, row + half + 1)
        c0, c1 = max(0, col - half), min(grid.width, col + half + 1)
        data = np.asarray(stack.data[:, :, r0:r1, c0:c1].compute(), dtype=np.float32)
        mask = np.ones(data.shape[-2:], bool)
        n = int(mask.sum())
        where = f"{_fmt(float(x))}, {_fmt(float(y))}" + (f" ({_crs_name(crs)})" if crs else "")
        description = f"{where}, pixel row {row} col {col}" + (
            f", {r1 - r0}x{c1 - c0} window mean" if n > 1 else ""
        )
        if gdf is not None and len(gdf):
            from shapely.geometry import Point

            hits = gdf[gdf.geometry.intersects(Point(sx, sy))]
            if len(hits):
                row_rec = hits.iloc[0]
                pid = row_rec["id"] if "id" in hits.columns else hits.index[0]
                description += f", in change polygon {pid}"

    values, std = _masked_mean(data, mask)
    dates = tuple(stack.dates)
    found_date, before = None, None
    if change_date is not None:
        found_date = _to_date(change_date, "change_date", dates)
    elif row_rec is not None:
        found_date = _to_date(
            row_rec.get("change_date", row_rec.get("date_after")), "change_date", dates
        )
        before = _to_date(row_rec.get("date_before"), "date_before", dates)
    elif date_index is not None:
        j = _dominant_index(date_index, grid, r0, c0, mask, len(dates))
        found_date = dates[j] if j else None
    if found_date is not None and before is None and found_date in dates:
        j = dates.index(found_date)
        before = dates[j - 1] if j > 0 else None

    labels = tuple(
        name if name else f"band {i}" for i, name in enumerate(stack.band_names, start=1)
    )
    return SeriesValues(dates, values, std, labels, n, description, found_date, before)


def series(
    stack: Stack,
    x: float | None = None,
    y: float | None = None,
    *,
    path: str | os.PathLike,
    crs: Any = None,
    window: int = 1,
    changes: Any = None,
    polygon_id: int | None = None,
    change_date: dt.date | str | None = None,
    date_index: Any = None,
    overwrite: bool = True,
) -> Path:
    """Plot every band over the dates at a point, a window or a change polygon; write a PNG.

    The detected change is marked: a dashed line on the date it is first seen and a shaded span
    back to the date before. Arguments as :func:`series_values`; ``path`` is the PNG to write.

    Returns:
        The path written.
    """
    path = check_png_output(path, overwrite)
    sv = series_values(
        stack,
        x,
        y,
        crs=crs,
        window=window,
        changes=changes,
        polygon_id=polygon_id,
        change_date=change_date,
        date_index=date_index,
    )
    save_png(_series_figure(sv, stack), path, overwrite)
    log.info("series written to %s", path)
    return path


def _series_figure(sv: SeriesValues, stack: Stack) -> Figure:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.subplots()
    dates = list(sv.dates)
    others = iter(["tab:orange", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan"])
    for b, label in enumerate(sv.band_labels):
        kind = band_kind(stack.band_names[b] if b < len(stack.band_names) else None)
        colour = BAND_COLOURS.get(kind or "", None) or next(others, None)
        ax.plot(dates, sv.values[:, b], marker="o", ms=4, color=colour, label=label)
        if sv.n_pixels > 1:
            ax.fill_between(
                dates,
                sv.values[:, b] - sv.std[:, b],
                sv.values[:, b] + sv.std[:, b],
                color=colour,
                alpha=0.12,
                linewidth=0,
            )
    if sv.change_date is not None:
        if sv.date_before is not None:
            ax.axvspan(
                sv.date_before,
                sv.change_date,
                color="0.85",
                zorder=0,
                label=f"change between {sv.date_before} and {sv.change_date}",
            )
        ax.axvline(
            sv.change_date,
            color=OUTLINE_COLOUR,
            linestyle="--",
            linewidth=1.5,
            label=f"change first seen {sv.change_date}",
        )
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel("value (source units)" + (", mean ± std" if sv.n_pixels > 1 else ""))
    ax.grid(alpha=0.3)
    note = "" if sv.change_date is not None else " · no change detected here"
    ax.set_title(f"{sv.description}{note}\n{crs_label(stack.grid)}", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    return fig


def _fmt(v: float) -> str:
    return f"{v:.6f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:.2f}"


def _crs_name(crs: Any) -> str:
    from rasterio.crs import CRS

    try:
        return CRS.from_user_input(crs).to_string()
    except Exception:
        return str(crs)


def _to_stack_crs(x: float, y: float, crs: Any, grid: GridSpec) -> tuple[float, float]:
    """(x, y) from ``crs`` into the stack CRS."""
    if crs is None or not grid.crs:
        return x, y
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform

    try:
        src = CRS.from_user_input(crs)
    except CRSError as exc:
        raise InputError(
            f"--crs: found {crs!r}, which is not a CRS ({exc}); expected e.g. EPSG:4326"
        ) from None
    if src == grid.crs:
        return x, y
    xs, ys = transform(src, grid.crs, [x], [y])
    return float(xs[0]), float(ys[0])


def _point_pixel(
    x: float, y: float, sx: float, sy: float, crs: Any, grid: GridSpec
) -> tuple[int, int]:
    """(row, col) of the stack pixel holding (sx, sy) in the stack CRS; InputError outside."""
    inv = ~grid.transform
    col_f, row_f = inv @ (sx, sy)
    ok = np.isfinite(col_f) and np.isfinite(row_f)
    row, col = (math.floor(row_f), math.floor(col_f)) if ok else (-1, -1)
    if 0 <= row < grid.height and 0 <= col < grid.width:
        return row, col
    stack_crs = grid.crs.to_string() if grid.crs else "pixel units (no CRS)"
    given = f"({_fmt(x)}, {_fmt(y)})" + (f" in {_crs_name(crs)}" if crs else f" in {stack_crs}")
    moved = f" = ({_fmt(sx)}, {_fmt(sy)}) in {stack_crs}" if crs and (sx, sy) != (x, y) else ""
    bounds = ", ".join(_fmt(b) for b in grid.bounds)
    hint = ""
    if crs is None and grid.crs and grid.crs.is_projected and abs(x) <= 180 and abs(y) <= 90:
        hint = "; these look like longitude/latitude: add --crs EPSG:4326"
    raise InputError(
        f"point {given}{moved} is outside the scene: its bounds (left, bottom, right, top) are "
        f"({bounds}) in {stack_crs}; give a point inside them, or --crs for coordinates in "
        f"another CRS{hint}"
    )


def _load_changes(changes: Any) -> Any:
    """A GeoDataFrame from a GeoDataFrame or a GeoPackage path (layer ``changes``)."""
    if hasattr(changes, "geometry"):
        return changes
    import geopandas as gpd

    path = Path(changes)
    if not path.exists():
        raise InputError(
            f"--changes {str(path)!r}: file not found; expected the GeoPackage written by "
            "geochange detect (e.g. changes.gpkg)"
        )
    try:
        return gpd.read_file(path, layer="changes")
    except Exception as exc:
        raise InputError(
            f"--changes {str(path)!r}: cannot read its 'changes' layer ({exc}); expected the "
            "GeoPackage written by geochange detect"
        ) from None


def _polygon_row(gdf: Any, polygon_id: int, source: Any) -> Any:
    ids = gdf["id"] if "id" in gdf.columns else gdf.index.to_series()
    hits = gdf[np.asarray(ids) == polygon_id]
    if not len(hits):
        name = f" in {str(source)!r}" if not hasattr(source, "geometry") else ""
        span = f"ids {int(ids.min())} … {int(ids.max())}" if len(ids) else "no polygons at all"
        raise InputError(
            f"--polygon {polygon_id}: no change polygon with that id{name} ({len(gdf)} polygons, "
            f"{span}); pick an id from the 'id' column of the changes layer"
        )
    return hits.iloc[0]


def _polygon_pixels(
    stack: Stack, geom: Any, polygon_id: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(t, c, h, w) data of the polygon's bounding window, its (h, w) pixel mask, row0, col0."""
    from rasterio.features import geometry_mask
    from rasterio.windows import from_bounds

    grid = stack.grid
    win = from_bounds(*geom.bounds, transform=grid.transform)
    r0 = max(0, math.floor(win.row_off))
    c0 = max(0, math.floor(win.col_off))
    r1 = min(grid.height, math.ceil(win.row_off + win.height))
    c1 = min(grid.width, math.ceil(win.col_off + win.width))
    if r1 <= r0 or c1 <= c0:
        raise InputError(
            f"--polygon {polygon_id}: the polygon does not overlap the scene (bounds "
            f"{tuple(round(b, 3) for b in grid.bounds)}); use the changes detected on this stack"
        )
    # (rasterio.windows.transform warns with affine >= 3.1: compose the translation here.)
    wt = grid.transform @ Affine.translation(c0, r0)
    shape = (r1 - r0, c1 - c0)
    mask = geometry_mask([geom], out_shape=shape, transform=wt, invert=True)
    if not mask.any():  # a sliver thinner than a pixel: take every pixel it touches
        mask = geometry_mask([geom], out_shape=shape, transform=wt, invert=True, all_touched=True)
    data = np.asarray(stack.data[:, :, r0:r1, c0:c1].compute(), dtype=np.float32)
    return data, mask, r0, c0


def _masked_mean(data: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, c) mean and std over pixels where ``mask`` and finite; NaN where none."""
    px = data[:, :, mask]  # (t, c, n)
    valid = np.isfinite(px)
    count = valid.sum(axis=-1)
    total = np.where(valid, px, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        sq = np.where(valid, (px - mean[..., None]) ** 2, 0.0).sum(axis=-1)
        std = np.where(count > 0, np.sqrt(sq / np.maximum(count, 1)), np.nan)
    return mean.astype(np.float32), std.astype(np.float32)


def _dominant_index(
    date_index: Any, grid: GridSpec, r0: int, c0: int, mask: np.ndarray, n_dates: int
) -> int:
    """Most frequent change date index j (1 … T-1) within the place; 0 if none."""
    h, w = mask.shape
    if isinstance(date_index, (str, os.PathLike)):
        with rasterio.open(date_index) as src:
            if (src.height, src.width) != grid.shape:
                raise InputError(
                    f"--date-raster {str(date_index)!r}: found {src.width}x{src.height} px, "
                    f"expected {grid.width}x{grid.height} (the stack's grid); use the *_date.tif "
                    "detect wrote for this stack"
                )
            block = src.read(1, window=rasterio.windows.Window(c0, r0, w, h))
    else:
        if tuple(date_index.shape) != grid.shape:
            raise InputError(
                f"date_index: found shape {tuple(date_index.shape)}, expected {grid.shape}"
            )
        block = date_index[r0 : r0 + h, c0 : c0 + w]
        block = np.asarray(block.compute() if hasattr(block, "compute") else block)
    values = block[mask].astype(np.int64)
    values = values[(values >= 1) & (values < n_dates)]
    if not values.size:
        return 0
    return int(np.bincount(values).argmax())


def _to_date(value: Any, name: str, dates: tuple[When, ...]) -> When | None:
    """A date of the stack's kind (:func:`geochange.dates.like`) from a table cell or argument;
    None if empty."""
    return None if is_missing(value) else like(value, dates, name)
