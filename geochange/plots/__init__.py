"""Pictures of a stack and its changes: the detect quicklook and a time series at one place.

Everything is drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, no
global figure state, safe in threads and in notebooks. Rasters are read decimated (GDAL
``out_shape`` or a strided dask array), never at the full resolution of a large scene.

Glossary (see docs/DESIGN.md): a change at date index j (1 … T-1) is first seen on ``dates[j]``,
after ``dates[j-1]``; the change-date raster holds j, 0 for no change and 255 for nodata.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.enums import Resampling

from geochange.bands import wavelength_from_name
from geochange.dates import is_missing, to_date
from geochange.errors import InputError, OutputExistsError
from geochange.grid import GridSpec
from geochange.io.atomic import atomic_path
from geochange.io.read import GDAL_ENV
from geochange.io.stack import Stack

__all__ = ["quicklook", "series", "series_values", "SeriesValues"]

log = logging.getLogger(__name__)

#: Value of the change-date raster where the pixel is nodata (DESIGN.md encodings).
DATE_NODATA = 255
#: Percentiles of the robust true-colour stretch.
STRETCH_PERCENTILES = (2.0, 98.0)
#: Colour of change polygon outlines drawn over imagery.
OUTLINE_COLOUR = "#ff2bd6"

# Band names (lower case) recognised as blue, green, red, near infrared.
_BAND_ALIASES: dict[str, frozenset[str]] = {
    "blue": frozenset({"b", "blue", "b02", "b2", "sr_b2", "coastal_blue"}),
    "green": frozenset({"g", "green", "b03", "b3", "sr_b3"}),
    "red": frozenset({"r", "red", "b04", "b4", "sr_b4"}),
    "nir": frozenset({"nir", "n", "b08", "b8", "nir08", "sr_b5", "b8a"}),
}
# Centre wavelength ranges (nm) of the same kinds (coastal aerosol, 443 nm, is not blue here).
_WAVELENGTHS_NM = {"blue": (460, 520), "green": (520, 600), "red": (620, 700), "nir": (760, 900)}
_BAND_COLOURS = {"blue": "tab:blue", "green": "tab:green", "red": "tab:red", "nir": "tab:purple"}


# --------------------------------------------------------------------------------------------
# Bands and stretch


def _band_kind(name: str | None) -> str | None:
    """'blue', 'green', 'red', 'nir' or None for a band description.

    Recognises names (``R``, ``red``, ``B04``; also as the first word, e.g. ``B04 665 nm``) and
    a centre wavelength (``665 nm``, see :func:`geochange.bands.wavelength_from_name`).
    """
    if not name:
        return None
    key = name.strip().lower()
    words = key.replace("_", " ").split()
    for kind, aliases in _BAND_ALIASES.items():
        if key in aliases or (words and words[0] in aliases):
            return kind
    nm = wavelength_from_name(name)
    if nm is not None:
        for kind, (lo, hi) in _WAVELENGTHS_NM.items():
            if lo <= nm < hi:
                return kind
    return None


def default_rgb_bands(band_count: int, band_names: Sequence[str | None] = ()) -> tuple[int, ...]:
    """1-based bands shown as true colour: (red, green, blue), or (1,) for greyscale.

    Bands named red/green/blue (``R``, ``red``, ``B04`` …) win; otherwise 3 bands are taken as
    R, G, B and 4 or more as B, G, R, NIR, … (the synthetic and Sentinel-2 10 m order): (3, 2, 1).
    One or two bands give greyscale of band 1.
    """
    if band_count < 3:
        return (1,)
    kinds = [_band_kind(n) for n in list(band_names)[:band_count]]
    if all(k in kinds for k in ("red", "green", "blue")):
        return tuple(kinds.index(k) + 1 for k in ("red", "green", "blue"))
    return (1, 2, 3) if band_count == 3 else (3, 2, 1)


def _check_rgb_bands(rgb_bands: Sequence[int] | None, stack: Stack) -> tuple[int, ...]:
    if rgb_bands is None:
        return default_rgb_bands(stack.band_count, stack.band_names)
    bands = tuple(int(b) for b in rgb_bands)
    if len(bands) not in (1, 3) or not all(1 <= b <= stack.band_count for b in bands):
        raise InputError(
            f"--rgb-bands: found {tuple(rgb_bands)}, expected 3 band numbers (red, green, blue) "
            f"or 1 for greyscale, each between 1 and {stack.band_count} (1-based); e.g. "
            "--rgb-bands 3 2 1 for a B, G, R, NIR stack"
        )
    return bands


def _stretch(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Robust 2–98 % stretch of (c, h, w) images to RGBA (h, w, 4) in [0, 1].

    The percentiles are computed per band over all ``images`` together, so the dates share one
    colour scale. NaN pixels (nodata) become transparent.
    """
    stacked = np.stack(images)  # (n, c, h, w)
    out = []
    lo = np.zeros(stacked.shape[1], np.float32)
    hi = np.ones(stacked.shape[1], np.float32)
    for b in range(stacked.shape[1]):
        values = stacked[:, b][np.isfinite(stacked[:, b])]
        if values.size:
            lo[b], hi[b] = np.percentile(values, STRETCH_PERCENTILES)
        if not hi[b] > lo[b]:
            hi[b] = lo[b] + 1.0
    for img in images:
        valid = np.isfinite(img).all(axis=0)
        scaled = (np.nan_to_num(img) - lo[:, None, None]) / (hi - lo)[:, None, None]
        scaled = np.clip(scaled, 0.0, 1.0)
        if scaled.shape[0] == 1:
            scaled = np.repeat(scaled, 3, axis=0)
        rgba = np.concatenate([scaled, valid[None].astype(scaled.dtype)], axis=0)
        out.append(np.moveaxis(rgba, 0, -1))
    return out


# --------------------------------------------------------------------------------------------
# Decimated reads


def _decimation(grid: GridSpec, max_size: int) -> tuple[int, int, int]:
    """(step, out_h, out_w): the integer step that brings the longer side to <= max_size."""
    if max_size < 16:
        raise InputError(f"max_size: found {max_size}, expected at least 16 pixels")
    step = max(1, math.ceil(max(grid.height, grid.width) / max_size))
    return step, math.ceil(grid.height / step), math.ceil(grid.width / step)


def _read_dates_decimated(
    stack: Stack, indices: Sequence[int], bands: Sequence[int], step: int
) -> list[np.ndarray]:
    """Dates ``indices`` (0-based), ``bands`` (1-based) at 1/step resolution.

    Returns:
        One (len(bands), ceil(h/step), ceil(w/step)) float32 per date, NaN where nodata.
    """
    out_h, out_w = math.ceil(stack.grid.height / step), math.ceil(stack.grid.width / step)
    if stack.align:
        # Warped dates: strided dask read, each chunk read, strided and dropped (bounded memory).
        sel = stack.data[list(indices)][:, [b - 1 for b in bands], ::step, ::step]
        return list(np.asarray(sel.compute(), dtype=np.float32))
    images = []
    with rasterio.Env(**GDAL_ENV):
        for i in indices:
            with rasterio.open(stack.paths[i]) as src:
                # GDAL reads overviews when present; nearest keeps nodata as nodata.
                arr = src.read(
                    indexes=list(bands),
                    out_shape=(len(bands), out_h, out_w),
                    resampling=Resampling.nearest,
                    masked=True,
                )
            data = np.asarray(arr.filled(np.nan) if arr.dtype.kind == "f" else arr, np.float32)
            invalid = np.ma.getmaskarray(arr).any(axis=0) | ~np.isfinite(data).all(axis=0)
            data[:, invalid] = np.nan
            images.append(data)
    return images


def _as_raster(array: Any, grid: GridSpec, step: int, name: str) -> np.ndarray:
    """A (y, x) array-like (numpy, dask, xarray) on ``grid``, strided by ``step``, as numpy."""
    shape = tuple(getattr(array, "shape", ()))
    if len(shape) == 3 and shape[0] == 1:
        array = array[0]
        shape = shape[1:]
    if shape != grid.shape:
        raise InputError(
            f"{name}: found shape {shape}, expected {grid.shape} (height, width of the stack); "
            "pass the raster detect wrote for this stack"
        )
    sub = array[::step, ::step]
    if hasattr(sub, "compute"):
        sub = sub.compute()
    return np.asarray(sub)


# --------------------------------------------------------------------------------------------
# Map furniture: extent, scale bar, CRS name


def _north_up(img: np.ndarray, grid: GridSpec) -> np.ndarray:
    """Flip an image (rows, cols, …) so row 0 is north and column 0 west."""
    t = grid.transform
    if t.b != 0 or t.d != 0:
        log.warning("the grid is rotated; the quicklook shows it unrotated within its bounds")
    if t.e > 0:
        img = img[::-1]
    if t.a < 0:
        img = img[:, ::-1]
    return img


def _extent(grid: GridSpec) -> tuple[float, float, float, float]:
    left, bottom, right, top = grid.bounds
    return (left, right, bottom, top)


def _crs_label(grid: GridSpec) -> str:
    """'EPSG:32633 (WGS 84 / UTM zone 33N)' or 'no CRS'."""
    crs = grid.crs
    if not crs:
        return "no CRS (pixel coordinates)"
    code = crs.to_string()
    try:
        from pyproj import CRS as ProjCRS

        name = ProjCRS.from_user_input(crs.to_wkt()).name
    except Exception:  # pragma: no cover - any CRS rasterio reads, pyproj reads too
        name = ""
    if name and name not in code:
        return f"{code} ({name})"
    return code


def _metres_per_unit(grid: GridSpec) -> float | None:
    """Metres per CRS unit along x at the scene centre; None without a CRS."""
    crs = grid.crs
    if not crs:
        return None
    if crs.is_geographic:
        from pyproj import Geod

        left, bottom, right, top = grid.bounds
        lat = (bottom + top) / 2
        lon = (left + right) / 2
        _, _, dist = Geod(ellps="WGS84").inv(lon - 0.5, lat, lon + 0.5, lat)
        return float(dist)
    try:
        return float(crs.linear_units_factor[1])
    except Exception:  # pragma: no cover - projected CRS without units: assume metres
        return 1.0


def _nice_length(target: float) -> float:
    """The 1, 2 or 5 × 10^n not larger than ``target`` (> 0)."""
    exp = math.floor(math.log10(target))
    for mult in (5, 2, 1):
        if mult * 10**exp <= target:
            return mult * 10**exp
    return 10**exp  # pragma: no cover


def _add_scale_bar(ax: Axes, grid: GridSpec) -> None:
    """A scale bar in metres (km from 1 km) in the lower left of ``ax``."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    mpu = _metres_per_unit(grid)
    if mpu is None or mpu <= 0:
        return
    left, _, right, _ = grid.bounds
    length_m = _nice_length((right - left) * mpu / 4)
    label = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    bar = AnchoredSizeBar(
        ax.transData,
        length_m / mpu,
        label,
        loc="lower left",
        pad=0.4,
        borderpad=0.6,
        sep=3,
        frameon=True,
        size_vertical=0,
        color="black",
    )
    bar.patch.set_alpha(0.75)
    ax.add_artist(bar)


def _style_map_axes(ax: Axes, grid: GridSpec, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlim(_extent(grid)[:2])
    ax.set_ylim(_extent(grid)[2:])
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    for label in ax.get_yticklabels():
        label.set_rotation(90)
        label.set_verticalalignment("center")
    if grid.crs and grid.crs.is_geographic:
        # Equal ground distances on both axes at the scene's mean latitude.
        _, bottom, _, top = grid.bounds
        ax.set_aspect(1 / max(math.cos(math.radians((bottom + top) / 2)), 1e-6))
    else:
        ax.set_aspect("equal")


def _outline_polygons(ax: Axes, changes: Any, grid: GridSpec) -> int:
    """Draw the outlines (exteriors and holes) of ``changes``; return the polygon count."""
    if changes is None or len(changes) == 0:
        return 0
    gdf = changes
    if grid.crs and gdf.crs is not None and gdf.crs != grid.crs:
        gdf = gdf.to_crs(grid.crs)
    lines = []
    for geom in gdf.geometry:
        if geom is None or geom.is_empty:
            continue
        for poly in getattr(geom, "geoms", [geom]):
            if poly.geom_type != "Polygon":
                continue
            lines.append(np.asarray(poly.exterior.coords)[:, :2])
            lines.extend(np.asarray(r.coords)[:, :2] for r in poly.interiors)
    ax.add_collection(LineCollection(lines, colors=OUTLINE_COLOUR, linewidths=1.2))
    return len(gdf)


# --------------------------------------------------------------------------------------------
# Change date colours and legend


def _date_legend_labels(dates: Sequence[dt.date]) -> list[str]:
    """Legend labels of the change-date panel, one per date index j = 1 … T-1.

    Label j reads ``"YYYY-MM-DD"`` of ``dates[j]``, the date on which the change is first seen.
    """
    return [f"{d.isoformat()}" for d in list(dates)[1:]]


def _date_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct colours ordered in time (early = dark blue … late = yellow/red)."""
    from matplotlib import colormaps

    cmap = colormaps["turbo"]
    if n == 1:
        return [cmap(0.8)]
    return [cmap(0.08 + 0.84 * i / (n - 1)) for i in range(n)]


def _save(fig: Figure, path: Path, overwrite: bool, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG under a temporary name in the same folder, then rename."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
        if path.exists() and not overwrite:
            raise OutputExistsError(
                f"{path}: exists; pass overwrite=True (--overwrite) or choose another name"
            )
    return path


def _check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(
            f"output {str(path)!r}: found suffix {path.suffix or '(none)'!r}, expected '.png'; "
            "name the picture like 'quicklook.png'"
        )
    if not path.parent.is_dir():
        raise InputError(
            f"output {str(path)!r}: folder {str(path.parent)!r} does not exist; create it first"
        )
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path}: exists; pass overwrite=True (--overwrite) or choose another name"
        )
    return path


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
    path = _check_output(path, overwrite)
    fig = _quicklook_figure(
        stack, prob, date_index, changes, rgb_bands=rgb_bands, max_size=max_size
    )
    _save(fig, path, overwrite)
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
    bands = _check_rgb_bands(rgb_bands, stack)
    step, _, _ = _decimation(grid, max_size)
    first, last = _read_dates_decimated(stack, [0, stack.T - 1], bands, step)
    first_rgba, last_rgba = (_north_up(im, grid) for im in _stretch([first, last]))
    prob_img = _north_up(_as_raster(prob, grid, step, "prob").astype(np.float32), grid)
    date_img = _north_up(_as_raster(date_index, grid, step, "date_index"), grid)
    extent = _extent(grid)
    dates = list(stack.dates)
    if len(bands) == 1:
        band_label = f"greyscale band {bands[0]}"
    else:
        band_label = "RGB = bands " + ", ".join(map(str, bands))

    fig = Figure(figsize=(15, 9.5), layout="constrained")
    axes = fig.subplots(2, 3)
    (ax_first, ax_last, ax_prob), (ax_poly, ax_date, ax_info) = axes
    fig.suptitle(
        f"geochange quicklook · {len(dates)} dates {dates[0]} … {dates[-1]} · {_crs_label(grid)}",
        fontsize=12,
    )

    ax_first.imshow(first_rgba, extent=extent, interpolation="nearest")
    _style_map_axes(ax_first, grid, f"first date {dates[0]} ({band_label})")
    ax_last.imshow(last_rgba, extent=extent, interpolation="nearest")
    _style_map_axes(ax_last, grid, f"last date {dates[-1]}")

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
    _style_map_axes(ax_prob, grid, "change probability")

    ax_poly.imshow(last_rgba, extent=extent, interpolation="nearest")
    n_poly = _outline_polygons(ax_poly, changes, grid)
    _style_map_axes(ax_poly, grid, f"change polygons ({n_poly}) on {dates[-1]}")

    # Change date: last date in faded grey under discrete colours, one per date j = 1 … T-1.
    grey = last_rgba[..., :3].mean(axis=-1)
    ax_date.imshow(grey, extent=extent, cmap="gray", vmin=-0.5, vmax=1.5, interpolation="nearest")
    labels = _date_legend_labels(dates)
    colours = _date_colours(len(labels))
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(0.5, len(labels) + 1.5), cmap.N)
    shown = np.ma.masked_where(
        (date_img == 0) | (date_img == DATE_NODATA) | (date_img >= len(dates)), date_img
    )
    ax_date.imshow(shown, extent=extent, cmap=cmap, norm=norm, interpolation="nearest")
    _style_map_axes(ax_date, grid, "change date (first seen)")

    for ax in (ax_first, ax_last, ax_prob, ax_poly, ax_date):
        _add_scale_bar(ax, grid)

    ax_info.set_axis_off()
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
        found_date = _to_date(change_date, "change_date")
    elif row_rec is not None:
        found_date = _to_date(row_rec.get("change_date", row_rec.get("date_after")), "change_date")
        before = _to_date(row_rec.get("date_before"), "date_before")
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
    path = _check_output(path, overwrite)
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
    _save(_series_figure(sv, stack), path, overwrite)
    log.info("series written to %s", path)
    return path


def _series_figure(sv: SeriesValues, stack: Stack) -> Figure:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.subplots()
    dates = list(sv.dates)
    others = iter(["tab:orange", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan"])
    for b, label in enumerate(sv.band_labels):
        kind = _band_kind(stack.band_names[b] if b < len(stack.band_names) else None)
        colour = _BAND_COLOURS.get(kind or "", None) or next(others, None)
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
    ax.set_title(f"{sv.description}{note}\n{_crs_label(stack.grid)}", fontsize=10)
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


def _to_date(value: Any, name: str) -> dt.date | None:
    """A ``datetime.date`` from a table cell or argument; None if empty."""
    return None if is_missing(value) else to_date(value, name)
