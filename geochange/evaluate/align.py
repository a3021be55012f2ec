"""Read a prediction and a reference from files and bring them onto one grid.

The prediction (a probability or 0/1 raster, or a GeoPackage of change polygons) and the reference
(a label raster or a GeoPackage of polygons) are brought onto ONE grid through their
georeferencing — never by pixel index: the reference raster's grid when the reference is a raster,
otherwise the prediction's. Rasters are warped with ``rasterio.warp.reproject`` (nearest for
labels and 0/1 masks, bilinear for probabilities, then thresholded); polygons are reprojected
(``to_crs``) and burnt with ``rasterio.features.rasterize`` (pixel centres).

Pixel sets on that grid:

- *mapped*: the prediction has a value (inside its footprint, not nodata; a GeoPackage maps the
  whole grid).
- *valid* (evaluated): mapped and labelled in the reference (not the ignore value, not nodata).

Reference encodings accepted (``docs/DESIGN.md``): label raster band 1 = 0 no change, 1 change,
``ignore_value`` (255) unlabelled; optional band 2 = change date index ``j`` (1 … T-1 the first
date the change is seen, 0 no change, 255 unknown). A single-band raster holding only 0 and 255
without a nodata value of 255 is read as a PNG-style mask (255 = change). GeoPackage polygons are
change (everything else no change) with an optional ``date_index`` or ``change_date`` column.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.features import rasterize
from rasterio.warp import reproject

from geochange.dates import is_missing, to_date
from geochange.errors import InputError
from geochange.evaluate.scoring import Aligned, metrics
from geochange.grid import GridSpec

__all__ = ["PathLike", "align_inputs", "evaluate"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
_VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb"}


@dataclass
class _Raster:
    path: Path
    data: np.ndarray  # (bands, h, w) as read
    grid: GridSpec | None  # None when not georeferenced
    nodata: float | None
    tags: dict[str, str]
    scale: float = 1.0  # GDAL scale/offset of band 1 (geochange's probability: uint8, 1/254)
    offset: float = 0.0


def _check_exists(path: PathLike, role: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(
            f"{role} {str(p)!r}: file not found; expected a GeoTIFF or a GeoPackage; "
            "fix: check the path."
        )
    return p


def _is_vector(p: Path) -> bool:
    return p.suffix.lower() in _VECTOR_SUFFIXES


def _read_raster(p: Path, role: str) -> _Raster:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(p) as src:
                data = src.read()
                georef = src.crs is not None and src.transform != Affine.identity()
                grid = (
                    GridSpec(src.crs, src.transform, src.height, src.width, src.nodata)
                    if georef
                    else None
                )
                return _Raster(
                    p, data, grid, src.nodata, dict(src.tags()), src.scales[0], src.offsets[0]
                )
    except RasterioIOError as exc:
        raise InputError(
            f"{role} {str(p)!r}: unknown format ({exc}); expected a GeoTIFF (probability, 0/1 or "
            "label raster) or a GeoPackage of polygons (.gpkg); fix: convert it with gdal_translate "
            "or ogr2ogr."
        ) from None


def _read_vector(p: Path, role: str, layer: str | None):  # -> GeoDataFrame
    import geopandas as gpd
    import pyogrio

    try:
        layers = [name for name, _ in pyogrio.list_layers(p)]
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise InputError(
            f"{role} {str(p)!r}: unreadable vector file ({exc}); expected a GeoPackage of "
            "polygons; fix: check the file (ogrinfo) or export it again."
        ) from None
    if layer not in layers:
        layer = layers[0]
    gdf = gpd.read_file(p, layer=layer, engine="pyogrio")
    if "geometry" not in gdf or gdf.crs is None:
        raise InputError(
            f"{role} {str(p)!r}, layer {layer!r}: found no geometry or no CRS; expected polygons "
            "with a CRS; fix: set the CRS (ogr2ogr -a_srs EPSG:…)."
        )
    return gdf, layer, layers


def _decode_mask(band: np.ndarray, nodata: float | None, ignore: int, role: str) -> np.ndarray:
    """A 0/1 mask band → float32 0/1 with NaN where unlabelled/nodata (see module docstring)."""
    band = np.asarray(band)
    if np.issubdtype(band.dtype, np.floating):
        bad = ~np.isfinite(band)
    else:
        bad = np.zeros(band.shape, bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        bad |= band == nodata
    values = set(np.unique(band[~bad]).tolist())
    png_style = values <= {0, 255} and 255 in values and nodata != 255
    if png_style:
        log.info("%s: values 0/255 only, read as a PNG-style mask (255 = change)", role)
        out = (band == 255).astype(np.float32)
    else:
        bad |= band == ignore
        extra = values - {0, 1, ignore}
        if extra:
            shown = sorted(extra)[:5]
            raise InputError(
                f"{role}: found values {shown} in band 1; expected 0 (no change), 1 (change) "
                f"and {ignore} (ignore); fix: recode the mask or pass --ignore-value."
            )
        out = (band == 1).astype(np.float32)
    out[bad] = np.nan
    return out


def _decode_dates(band: np.ndarray, nodata: float | None) -> np.ndarray:
    """Date index band (label encoding) → float32 with NaN where unknown or nodata."""
    out = band.astype(np.float32)
    out[(band == 255) | (band < 0)] = np.nan
    if nodata is not None and not math.isnan(float(nodata)):
        out[band == nodata] = np.nan
    return out


def _warp(
    arr: np.ndarray, src: GridSpec | None, dst: GridSpec, resampling: Resampling
) -> np.ndarray:
    """float32 (h, w) NaN-nodata on ``src`` → float32 on ``dst`` (NaN outside the source)."""
    if src is None or src.same_grid(dst):
        return arr.astype(np.float32, copy=False)
    out = np.full(dst.shape, np.nan, np.float32)
    reproject(
        source=arr.astype(np.float32, copy=False),
        destination=out,
        src_transform=src.transform,
        src_crs=src.crs,
        src_nodata=np.nan,
        dst_transform=dst.transform,
        dst_crs=dst.crs,
        dst_nodata=np.nan,
        resampling=resampling,
    )
    return out


def _parse_dates(values: Sequence[Any], role: str) -> list[_dt.date]:
    return sorted(to_date(v, role) for v in values)


def _date_index(values: Any, dates: list[_dt.date], role: str) -> np.ndarray:
    """change_date values → date index j (first stack date on or after the change date)."""
    ordinals = np.array([d.toordinal() for d in dates])
    idx = []
    for v in values:
        if is_missing(v):
            idx.append(np.nan)
            continue
        d = to_date(v, role)
        j = int(np.searchsorted(ordinals, d.toordinal(), side="left"))
        idx.append(j if 1 <= j < len(dates) else np.nan)
    return np.array(idx, dtype=np.float32)


def _check_polygons_overlap(gdf, grid: GridSpec, pred: Path, ref: Path) -> None:
    """Predicted polygons that all lie outside the reference grid mean the wrong pair of files
    (a prediction without polygons cannot be told apart from one without change)."""
    from shapely.geometry import box

    if len(gdf) == 0 or grid.crs is None:
        return
    inside = gdf.to_crs(grid.crs).intersects(box(*grid.bounds))
    if not bool(inside.any()):
        raise InputError(
            f"prediction {str(pred)!r} and reference {str(ref)!r}: found none of the "
            f"{len(gdf)} predicted polygons on the reference grid ({grid.describe()}); expected "
            "overlapping footprints; fix: check that both cover the same area (and their CRSs)."
        )


def _burn(gdf, grid: GridSpec, values: np.ndarray | None) -> np.ndarray:
    """Rasterize polygons (reprojected to the grid CRS) → float32 (values or 1), 0 elsewhere."""
    if len(gdf) == 0:
        return np.zeros(grid.shape, np.float32)
    geoms = gdf.to_crs(grid.crs).geometry
    vals = np.ones(len(gdf), np.float32) if values is None else values
    shapes = [(g, float(v)) for g, v in zip(geoms, vals) if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(grid.shape, np.float32)
    return rasterize(
        shapes, out_shape=grid.shape, transform=grid.transform, fill=0, dtype="float32"
    )


def _pixel_area(grid: GridSpec) -> np.ndarray:
    """(h, w) m² of each pixel: geodesic for geographic CRSs, from the transform otherwise."""
    t = grid.transform
    if grid.crs is not None and grid.crs.is_geographic:
        from pyproj import Geod

        geod = Geod(ellps="WGS84")
        rows = np.arange(grid.height)
        x0, x1 = t.c, t.c + t.a
        areas = []
        for r in rows:
            y0, y1 = t.f + t.e * r, t.f + t.e * (r + 1)
            a, _ = geod.polygon_area_perimeter([x0, x1, x1, x0], [y0, y0, y1, y1])
            areas.append(abs(a))
        return np.repeat(np.array(areas)[:, None], grid.width, axis=1)
    factor = 1.0
    if grid.crs is not None and grid.crs.linear_units_factor:
        factor = grid.crs.linear_units_factor[1]
    return np.full(grid.shape, abs(t.a * t.e - t.b * t.d) * factor**2)


def _dates_from(
    dates: Sequence[Any] | None, rasters: Sequence[_Raster | None], runs: list[str] | None
) -> list[_dt.date] | None:
    if dates:
        return _parse_dates(dates, "dates")
    if runs:
        return _parse_dates(runs, "runs layer 'dates'")
    for r in rasters:
        if r is not None and r.tags.get("dates"):
            return _parse_dates(r.tags["dates"].split(","), f"{r.path} tag 'dates'")
    return None


def _runs_dates(p: Path, layers: list[str]) -> list[str] | None:
    if "runs" not in layers:
        return None
    import pyogrio

    runs = pyogrio.read_dataframe(p, layer="runs", read_geometry=False)
    if "dates" not in runs or not len(runs):
        return None
    try:
        value = json.loads(runs["dates"].iloc[0])
    except (TypeError, ValueError):
        return None
    return list(value) if isinstance(value, list) else None


def align_inputs(
    pred: PathLike,
    reference: PathLike,
    *,
    threshold: float = 0.5,
    ignore_value: int = 255,
    dates: Sequence[str | _dt.date] | None = None,
    pred_dates: PathLike | None = None,
) -> Aligned:
    """Read the prediction and the reference and bring them onto one grid.

    Args:
        pred: probability raster (float, thresholded at ``threshold``), 0/1 (or 0/255) raster, or
            GeoPackage (layer ``changes``, optional ``change_date`` or ``date_index`` column).
        reference: label raster (band 1 change 0/1 with ``ignore_value``, optional band 2 date
            index) or GeoPackage of change polygons (optional ``date_index``/``change_date``).
        threshold: probability at or above which a pixel is change.
        ignore_value: reference value for unlabelled pixels.
        dates: the stack dates, to turn ``change_date`` columns into date indices; default from
            the prediction GeoPackage's ``runs`` layer or a raster's ``dates`` tag.
        pred_dates: change-date raster of the prediction (uint8, label encoding, 255 nodata).

    Returns:
        An :class:`Aligned` on the reference raster's grid (the prediction raster's when the
        reference is a GeoPackage).

    Raises:
        InputError: a file is missing or unreadable, neither input is a raster, an input has no
            georeferencing, or prediction and reference do not overlap.
    """
    pred_p = _check_exists(pred, "prediction")
    ref_p = _check_exists(reference, "reference")
    dates_p = _check_exists(pred_dates, "--pred-dates") if pred_dates is not None else None

    ref_r = None if _is_vector(ref_p) else _read_raster(ref_p, "reference")
    pred_r = None if _is_vector(pred_p) else _read_raster(pred_p, "prediction")
    date_r = _read_raster(dates_p, "--pred-dates") if dates_p is not None else None

    # The evaluation grid.
    ungeo = [r for r in (ref_r, pred_r, date_r) if r is not None and r.grid is None]
    if ref_r is not None and ref_r.grid is None and pred_r is not None and pred_r.grid is None:
        if ref_r.data.shape[1:] != pred_r.data.shape[1:] or date_r is not None and date_r.grid:
            raise InputError(
                f"prediction {str(pred_p)!r} and reference {str(ref_p)!r}: found no "
                f"georeferencing and sizes {pred_r.data.shape[1:]} vs {ref_r.data.shape[1:]}; "
                "expected georeferenced rasters; fix: give both a CRS and transform."
            )
        log.warning("neither input is georeferenced: comparing them pixel by pixel")
        h, w = ref_r.data.shape[1:]
        # A pixel grid without CRS; areas are then in (unknown) pixel units taken as 1 m².
        grid = GridSpec(None, Affine.identity(), h, w)  # type: ignore[arg-type]
        ref_r.grid = pred_r.grid = grid
        if date_r is not None:
            date_r.grid = grid
    elif ungeo:
        r = ungeo[0]
        raise InputError(
            f"{str(r.path)!r}: found no georeferencing (no CRS or geotransform); expected a "
            "georeferenced raster, since inputs are matched by location, never by pixel index; "
            "fix: assign the grid it lies on (gdal_translate -a_srs … -a_ullr …)."
        )
    if ref_r is not None:
        grid = ref_r.grid
    elif pred_r is not None:
        grid = pred_r.grid
    elif date_r is not None:
        grid = date_r.grid
    else:
        raise InputError(
            f"prediction {str(pred_p)!r} and reference {str(ref_p)!r}: found two GeoPackages; "
            "expected at least one raster to define the evaluation grid; fix: pass the "
            "prediction's probability raster, or --pred-dates DATE.tif."
        )
    assert grid is not None

    runs = None
    pred_gdf = ref_gdf = None
    if pred_r is None:
        pred_gdf, _, layers = _read_vector(pred_p, "prediction", "changes")
        runs = _runs_dates(pred_p, layers)
    if ref_r is None:
        ref_gdf, _, _ = _read_vector(ref_p, "reference", None)
    stack_dates = _dates_from(dates, [date_r, pred_r, ref_r], runs)

    # Reference.
    ref_date = None
    if ref_r is not None:
        ref_f = _decode_mask(ref_r.data[0], ref_r.nodata, ignore_value, f"reference {ref_p.name}")
        if ref_r.data.shape[0] >= 2:
            ref_date = _decode_dates(ref_r.data[1], None)
    else:
        ref_f = _burn(ref_gdf, grid, None)
        ref_date = _vector_dates(ref_gdf, grid, stack_dates, "reference")

    # Prediction.
    prob = None
    pred_date = None
    if pred_r is not None:
        band = pred_r.data[0]
        scaled = (pred_r.scale, pred_r.offset) != (1.0, 0.0)
        if np.issubdtype(band.dtype, np.floating) or scaled:
            # A probability; integers with a GDAL scale (detect's uint8) are unscaled first,
            # as a division when the scale is 1/k so that k/2 reads exactly 0.5.
            steps = 1.0 / pred_r.scale
            if abs(steps - round(steps)) < 1e-6:
                src = band.astype(np.float32) / np.float32(round(steps))
            else:
                src = band.astype(np.float32) * np.float32(pred_r.scale)
            src += np.float32(pred_r.offset)
            if pred_r.nodata is not None and not math.isnan(pred_r.nodata):
                src[band == pred_r.nodata] = np.nan
            prob = _warp(src, pred_r.grid, grid, Resampling.bilinear)
            pred_f = np.where(np.isnan(prob), np.nan, (prob >= threshold).astype(np.float32))
        else:
            mask = _decode_mask(band, pred_r.nodata, 255, f"prediction {pred_p.name}")
            pred_f = _warp(mask, pred_r.grid, grid, Resampling.nearest)
    else:
        _check_polygons_overlap(pred_gdf, grid, pred_p, ref_p)
        pred_f = _burn(pred_gdf, grid, None)
        pred_date = _vector_dates(pred_gdf, grid, stack_dates, "prediction")
    if date_r is not None:
        pred_date = _warp(
            _decode_dates(date_r.data[0], date_r.nodata), date_r.grid, grid, Resampling.nearest
        )
        if not np.isfinite(pred_date).any():
            raise InputError(
                f"--pred-dates {str(dates_p)!r}: found no pixel on the evaluation grid "
                f"({grid.describe()}): it lies on another area or CRS; expected the _date.tif "
                "written with the prediction; fix: pass the date raster of the same run."
            )

    mapped = np.isfinite(pred_f)
    labelled = np.isfinite(ref_f)
    valid = mapped & labelled
    if not valid.any():
        why = "do not overlap" if not mapped.any() else "share no labelled, mapped pixel"
        raise InputError(
            f"prediction {str(pred_p)!r} and reference {str(ref_p)!r}: found they {why} on the "
            f"reference grid ({grid.describe()}); expected overlapping footprints; fix: check "
            "that both cover the same area (and their CRSs)."
        )
    return Aligned(
        grid=grid,
        pred=(pred_f == 1) & mapped,
        ref=(ref_f == 1) & labelled,
        valid=valid,
        mapped=mapped,
        labelled=labelled,
        pred_date=_int_dates(pred_date),
        ref_date=_int_dates(ref_date),
        pixel_area_m2=_pixel_area(grid),
        prob=prob,
        dates=stack_dates,
    )


def _int_dates(arr: np.ndarray | None) -> np.ndarray | None:
    if arr is None:
        return None
    return np.where(np.isfinite(arr), arr, -1).astype(np.int16)


def _vector_dates(gdf, grid: GridSpec, dates: list[_dt.date] | None, role: str):
    """Burn a polygon date column into a date index raster (NaN unknown), or None."""
    if "date_index" in gdf:
        vals = gdf["date_index"].to_numpy(dtype=np.float32)
    elif "change_date" in gdf:
        if dates is None:
            log.warning(
                "%s: has change_date but the stack dates are unknown; pass dates= (--dates) "
                "to score change dates",
                role,
            )
            return None
        raw = gdf["change_date"]
        vals = _date_index(raw.to_numpy(), dates, f"{role} change_date")
    else:
        return None
    burnt = _burn(gdf, grid, np.where(np.isfinite(vals), vals, 255))
    burnt[(burnt == 0) | (burnt == 255)] = np.nan
    return burnt


def evaluate(
    pred: PathLike,
    reference: PathLike,
    *,
    threshold: float = 0.5,
    ignore_value: int = 255,
    dates: Sequence[str | _dt.date] | None = None,
    pred_dates: PathLike | None = None,
) -> dict[str, Any]:
    """Evaluate a change map against reference data (arguments as :func:`align_inputs`).

    Returns:
        A JSON-ready dict (NaN for undefined ratios): ``pred``, ``reference``, ``threshold``,
        ``ignore_value``, ``grid``, ``pixels`` (evaluated / ignored / pred_nodata counts),
        ``pixel`` (:func:`pixel_metrics`), ``object`` (:func:`object_metrics`), ``date``
        (:func:`date_accuracy`, or None without dates on both sides) and ``area``
        (:func:`area_estimates`, the prediction's mapped pixels as strata).
    """
    a = align_inputs(
        pred,
        reference,
        threshold=threshold,
        ignore_value=ignore_value,
        dates=dates,
        pred_dates=pred_dates,
    )
    out = {
        "pred": str(pred),
        "reference": str(reference),
        "threshold": threshold,
        "ignore_value": ignore_value,
    }
    out.update(metrics(a))
    return out
