"""Shared pieces of the map pictures: bands and stretch, decimated reads, map furniture, saving.

Everything is drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, no
global figure state, safe in threads and in notebooks. Rasters are read decimated (GDAL
``out_shape`` or a strided dask array), never at the full resolution of a large scene.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from rasterio.enums import Resampling

from geochange.bands import wavelength_from_name
from geochange.errors import InputError, OutputExistsError
from geochange.grid import GridSpec
from geochange.io.atomic import atomic_path
from geochange.io.read import GDAL_ENV
from geochange.io.stack import Stack
from geochange.palette import date_colours

__all__ = [
    "BAND_COLOURS",
    "DATE_NODATA",
    "OUTLINE_COLOUR",
    "STRETCH_PERCENTILES",
    "add_scale_bar",
    "as_raster",
    "band_kind",
    "check_png_output",
    "check_rgb_bands",
    "crs_label",
    "date_colours",
    "date_legend_labels",
    "decimation",
    "default_rgb_bands",
    "map_extent",
    "north_up",
    "outline_polygons",
    "read_dates_decimated",
    "save_png",
    "stretch_rgba",
    "style_map_axes",
]

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
BAND_COLOURS = {"blue": "tab:blue", "green": "tab:green", "red": "tab:red", "nir": "tab:purple"}


# --------------------------------------------------------------------------------------------
# Bands and stretch


def band_kind(name: str | None) -> str | None:
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
    kinds = [band_kind(n) for n in list(band_names)[:band_count]]
    if all(k in kinds for k in ("red", "green", "blue")):
        return tuple(kinds.index(k) + 1 for k in ("red", "green", "blue"))
    return (1, 2, 3) if band_count == 3 else (3, 2, 1)


def check_rgb_bands(rgb_bands: Sequence[int] | None, stack: Stack) -> tuple[int, ...]:
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


def stretch_rgba(images: Sequence[np.ndarray]) -> list[np.ndarray]:
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


def decimation(grid: GridSpec, max_size: int) -> tuple[int, int, int]:
    """(step, out_h, out_w): the integer step that brings the longer side to <= max_size."""
    if max_size < 16:
        raise InputError(f"max_size: found {max_size}, expected at least 16 pixels")
    step = max(1, math.ceil(max(grid.height, grid.width) / max_size))
    return step, math.ceil(grid.height / step), math.ceil(grid.width / step)


def read_dates_decimated(
    stack: Stack, indices: Sequence[int], bands: Sequence[int], step: int
) -> list[np.ndarray]:
    """Dates ``indices`` (0-based), ``bands`` (1-based) at 1/step resolution.

    Returns:
        One (len(bands), ceil(h/step), ceil(w/step)) float32 per date, NaN where nodata.
    """
    out_h, out_w = math.ceil(stack.grid.height / step), math.ceil(stack.grid.width / step)
    if stack.align or stack.sources or stack.bands:  # warped dates, a cube, bands per date
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


def as_raster(array: Any, grid: GridSpec, step: int, name: str) -> np.ndarray:
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


def north_up(img: np.ndarray, grid: GridSpec) -> np.ndarray:
    """Flip an image (rows, cols, …) so row 0 is north and column 0 west."""
    t = grid.transform
    if t.b != 0 or t.d != 0:
        log.warning("the grid is rotated; the quicklook shows it unrotated within its bounds")
    if t.e > 0:
        img = img[::-1]
    if t.a < 0:
        img = img[:, ::-1]
    return img


def map_extent(grid: GridSpec) -> tuple[float, float, float, float]:
    left, bottom, right, top = grid.bounds
    return (left, right, bottom, top)


def crs_label(grid: GridSpec) -> str:
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


def add_scale_bar(ax: Axes, grid: GridSpec) -> None:
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


def style_map_axes(ax: Axes, grid: GridSpec, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlim(map_extent(grid)[:2])
    ax.set_ylim(map_extent(grid)[2:])
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


def outline_polygons(ax: Axes, changes: Any, grid: GridSpec) -> int:
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


def date_legend_labels(dates: Sequence[dt.date]) -> list[str]:
    """Legend labels of the change-date panel, one per date index j = 1 … T-1.

    Label j reads ``"YYYY-MM-DD"`` of ``dates[j]``, the date on which the change is first seen.
    """
    return [f"{d.isoformat()}" for d in list(dates)[1:]]


def save_png(fig: Figure, path: Path, overwrite: bool, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG under a temporary name in the same folder, then rename."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
        if path.exists() and not overwrite:
            raise OutputExistsError(
                f"{path}: exists; pass overwrite=True (--overwrite) or choose another name"
            )
    return path


def check_png_output(path: str | os.PathLike, overwrite: bool) -> Path:
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
