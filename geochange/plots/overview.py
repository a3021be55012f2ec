"""The quicklook of a detection: first and last date, the change probability, the polygons and
the change dates on one PNG."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from geochange.io.stack import Stack
from geochange.palette import date_ramp, ramp_colour, uses_ramp
from geochange.plots.maps import (
    DATE_NODATA,
    add_scale_bar,
    as_raster,
    check_png_output,
    check_rgb_bands,
    crs_label,
    date_colours,
    date_legend_labels,
    decimation,
    map_extent,
    north_up,
    outline_polygons,
    read_dates_decimated,
    save_png,
    stretch_rgba,
    style_map_axes,
)

__all__ = ["quicklook"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Quicklook


def quicklook(
    stack: Stack,
    prob: Any,
    date_index: Any,
    changes: Any,
    path: str | os.PathLike,
    *,
    rgb_bands: Sequence[int] | None = None,
    max_size: int = 1024,
    overwrite: bool = True,
) -> Path:
    """Write one PNG summarising a detect run.

    Panels: first and last date in true colour (robust 2–98 % stretch shared by both dates),
    change probability with a colour bar, change polygons outlined on the last date, and the
    change date coloured by date with a legend of the stack's dates. Maps are north-up in CRS
    units, the CRS is named in the title and each map has a scale bar.

    Args:
        stack: the stack detect ran on.
        prob: (y, x) change probability in [0, 1], NaN = nodata (numpy or dask).
        date_index: (y, x) uint8 change date index: 0 no change, j = 1 … T-1 first seen on
            ``stack.dates[j]``, 255 nodata (numpy or dask).
        changes: change polygons (GeoDataFrame; reprojected to the stack CRS if needed), or None.
        path: PNG to write.
        rgb_bands: 1-based (red, green, blue) bands, or one band for greyscale. Default: bands
            named red/green/blue, else (3, 2, 1) for 4+ bands (B, G, R, NIR order), (1, 2, 3) for
            3 bands, greyscale band 1 for 1–2 bands.
        max_size: longest side in pixels of the rasters read and drawn (decimated reads).
        overwrite: replace ``path`` if it exists.

    Returns:
        The path written.
    """
    path = check_png_output(path, overwrite)
    fig = _quicklook_figure(
        stack, prob, date_index, changes, rgb_bands=rgb_bands, max_size=max_size
    )
    save_png(fig, path, overwrite)
    log.info("quicklook written to %s", path)
    return path


def _quicklook_figure(
    stack: Stack,
    prob: Any,
    date_index: Any,
    changes: Any,
    *,
    rgb_bands: Sequence[int] | None = None,
    max_size: int = 1024,
) -> Figure:
    """The quicklook figure (see :func:`quicklook`), not yet saved."""
    grid = stack.grid
    bands = check_rgb_bands(rgb_bands, stack)
    step, _, _ = decimation(grid, max_size)
    first, last = read_dates_decimated(stack, [0, stack.T - 1], bands, step)
    first_rgba, last_rgba = (north_up(im, grid) for im in stretch_rgba([first, last]))
    prob_img = north_up(as_raster(prob, grid, step, "prob").astype(np.float32), grid)
    date_img = north_up(as_raster(date_index, grid, step, "date_index"), grid)
    extent = map_extent(grid)
    dates = list(stack.dates)
    if len(bands) == 1:
        band_label = f"greyscale band {bands[0]}"
    else:
        band_label = "RGB = bands " + ", ".join(map(str, bands))

    fig = Figure(figsize=(15, 9.5), layout="constrained")
    axes = fig.subplots(2, 3)
    (ax_first, ax_last, ax_prob), (ax_poly, ax_date, ax_info) = axes
    fig.suptitle(
        f"geochange quicklook · {len(dates)} dates {dates[0]} … {dates[-1]} · {crs_label(grid)}",
        fontsize=12,
    )

    ax_first.imshow(first_rgba, extent=extent, interpolation="nearest")
    style_map_axes(ax_first, grid, f"first date {dates[0]} ({band_label})")
    ax_last.imshow(last_rgba, extent=extent, interpolation="nearest")
    style_map_axes(ax_last, grid, f"last date {dates[-1]}")

    from matplotlib import colormaps

    prob_cmap = colormaps["magma"].with_extremes(bad="#d9d9d9")
    im = ax_prob.imshow(
        np.ma.masked_invalid(prob_img),
        extent=extent,
        cmap=prob_cmap,
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax_prob, shrink=0.85, label="change probability")
    style_map_axes(ax_prob, grid, "change probability")

    ax_poly.imshow(last_rgba, extent=extent, interpolation="nearest")
    n_poly = outline_polygons(ax_poly, changes, grid)
    style_map_axes(ax_poly, grid, f"change polygons ({n_poly}) on {dates[-1]}")

    # Change date: last date in faded grey under discrete colours, one per date j = 1 … T-1.
    grey = last_rgba[..., :3].mean(axis=-1)
    ax_date.imshow(grey, extent=extent, cmap="gray", vmin=-0.5, vmax=1.5, interpolation="nearest")
    labels = date_legend_labels(dates)
    ramp = uses_ramp(dates)
    colours = date_ramp(dates) if ramp else date_colours(len(labels))
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(0.5, len(labels) + 1.5), cmap.N)
    shown = np.ma.masked_where(
        (date_img == 0) | (date_img == DATE_NODATA) | (date_img >= len(dates)), date_img
    )
    ax_date.imshow(shown, extent=extent, cmap=cmap, norm=norm, interpolation="nearest")
    style_map_axes(ax_date, grid, "change date (first seen)")

    for ax in (ax_first, ax_last, ax_prob, ax_poly, ax_date):
        add_scale_bar(ax, grid)

    ax_info.set_axis_off()
    if ramp:
        _ramp_bar(fig, ax_info, dates)
    else:
        handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.5) for c in colours]
        ax_info.legend(
            handles,
            labels,
            loc="upper left",
            title=f"change first seen on\n(series starts {dates[0]})",
            ncols=max(1, math.ceil(len(labels) / 16)),
            fontsize=9,
            title_fontsize=10,
            frameon=False,
        )
    summary = [
        f"{grid.width} x {grid.height} px, pixel {grid.res[0]:g} x {grid.res[1]:g}",
        f"{stack.band_count} bands, {len(dates)} dates",
        f"shown at 1/{step} resolution" if step > 1 else "shown at full resolution",
    ]
    ax_info.text(0.0, 0.0, "\n".join(summary), transform=ax_info.transAxes, fontsize=9, va="bottom")
    return fig


def _ramp_bar(fig: Figure, ax: Any, dates: Sequence[Any]) -> None:
    """A horizontal colour bar of the continuous date ramp with a few date ticks (a series with
    more change dates than a legend can list)."""
    import datetime as dt

    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    lo, hi = dates[1].toordinal(), dates[-1].toordinal()
    cmap = LinearSegmentedColormap.from_list(
        "geochange-dates", [ramp_colour(i / 63) for i in range(64)]
    )
    bar_ax = ax.inset_axes((0.05, 0.62, 0.9, 0.08))
    bar = fig.colorbar(
        ScalarMappable(norm=Normalize(lo, max(hi, lo + 1)), cmap=cmap),
        cax=bar_ax,
        orientation="horizontal",
    )
    n_ticks = 5
    ticks = [lo + (hi - lo) * i / (n_ticks - 1) for i in range(n_ticks)]
    bar.set_ticks(ticks)
    bar.set_ticklabels([dt.date.fromordinal(int(round(t))).isoformat() for t in ticks], fontsize=8)
    bar_ax.set_title(
        f"change first seen on ({len(dates) - 1} dates, series starts {dates[0]})", fontsize=10
    )
