"""Measure a change map against reference data: pixels, objects, dates and areas.

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
from scipy import ndimage

from geochange.dates import is_missing, to_date
from geochange.errors import InputError
from geochange.grid import GridSpec

__all__ = [
    "Aligned",
    "align_inputs",
    "area_estimates",
    "date_accuracy",
    "error_map",
    "evaluate",
    "evaluate_arrays",
    "format_report",
    "metrics",
    "object_metrics",
    "pixel_metrics",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
_VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb"}
#: Size classes of objects in pixels of the evaluation grid: (name, min, max) inclusive.
SIZE_CLASSES = (("micro", 1, 9), ("small", 10, 100), ("large", 101, None))
OBJECT_RULE = (
    "a reference object (8-connected change pixels) is detected when predicted change covers "
    ">= 50 % of its pixels or a predicted object overlaps it with IoU >= 0.25; a predicted object "
    "is correct when it overlaps any reference object"
)
_NAN = float("nan")


# --------------------------------------------------------------------------------------------
# Metrics on arrays
# --------------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else _NAN


def pixel_metrics(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Confusion counts and scores of the change class over the valid pixels.

    Args:
        pred: (h, w) bool predicted change.
        ref: (h, w) bool reference change.
        valid: (h, w) bool pixels to evaluate.

    Returns:
        ``tp, fp, fn, tn`` (pixel counts) and ``precision, recall, f1, iou`` of the change class,
        ``kappa`` (Cohen), ``overall_accuracy``; a ratio with a zero denominator is NaN.
    """
    p, r, v = (np.asarray(a, bool) for a in (pred, ref, valid))
    tp = int(np.sum(p & r & v))
    fp = int(np.sum(p & ~r & v))
    fn = int(np.sum(~p & r & v))
    tn = int(np.sum(~p & ~r & v))
    n = tp + fp + fn + tn
    po = _ratio(tp + tn, n)
    pe = _ratio((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn), n * n) if n else _NAN
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "kappa": _ratio(po - pe, 1 - pe) if n and pe != 1 else _NAN,
        "overall_accuracy": po,
    }


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if (p + r) > 0 else _NAN if math.isnan(p + r) else 0.0


def object_metrics(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    valid: np.ndarray,
    pixel_area: float | np.ndarray = 1.0,
) -> dict[str, Any]:
    """Object-level detection scores, overall and by object size.

    Objects are 8-connected components of change within the valid pixels. Rule: a reference
    object is *detected* when predicted change covers at least 50 % of its pixels OR a predicted
    object overlaps it with IoU >= 0.25; a predicted object is *correct* when it overlaps any
    reference object. Object recall = detected / reference objects, precision = correct /
    predicted objects, F1 their harmonic mean. Size classes in pixels: micro <= 9, small 10-100,
    large > 100 (reference objects for recall, predicted objects for precision).

    Args:
        pred_mask: (h, w) bool predicted change.
        ref_mask: (h, w) bool reference change.
        valid: (h, w) bool evaluated pixels.
        pixel_area: m² of one pixel, scalar or (h, w), for the object areas reported.

    Returns:
        ``n_ref, n_pred, detected, correct, precision, recall, f1``,
        ``mean_ref_area_m2``, ``rule`` and ``by_size`` {class: same counts and scores}.
    """
    v = np.asarray(valid, bool)
    struct = np.ones((3, 3), bool)
    rl, nr = ndimage.label(np.asarray(ref_mask, bool) & v, struct)
    pl, npred = ndimage.label(np.asarray(pred_mask, bool) & v, struct)
    rsize = np.bincount(rl.ravel(), minlength=nr + 1)
    psize = np.bincount(pl.ravel(), minlength=npred + 1)
    both = (rl > 0) & (pl > 0)
    key = rl[both].astype(np.int64) * (npred + 1) + pl[both]
    pairs, inter = np.unique(key, return_counts=True)
    r_ids, p_ids = pairs // (npred + 1), pairs % (npred + 1)
    iou = inter / (rsize[r_ids] + psize[p_ids] - inter)
    covered = np.bincount(rl[both], minlength=nr + 1)
    best_iou = np.zeros(nr + 1)
    np.maximum.at(best_iou, r_ids, iou)
    detected = (covered >= 0.5 * rsize) | (best_iou >= 0.25)
    correct = np.zeros(npred + 1, bool)
    correct[p_ids] = True
    area = np.broadcast_to(np.asarray(pixel_area, float), rl.shape)
    ref_area = np.bincount(rl.ravel(), weights=area.ravel(), minlength=nr + 1)[1:]

    def scores(r_sel: np.ndarray, p_sel: np.ndarray) -> dict[str, Any]:
        n_ref, n_pred = int(r_sel.sum()), int(p_sel.sum())
        det = int(detected[1:][r_sel].sum())
        cor = int(correct[1:][p_sel].sum())
        prec, rec = _ratio(cor, n_pred), _ratio(det, n_ref)
        return {
            "n_ref": n_ref,
            "n_pred": n_pred,
            "detected": det,
            "correct": cor,
            "precision": prec,
            "recall": rec,
            "f1": _f1(prec, rec),
        }

    out = scores(np.ones(nr, bool), np.ones(npred, bool))
    out["mean_ref_area_m2"] = float(ref_area.mean()) if nr else _NAN
    out["rule"] = OBJECT_RULE
    out["by_size"] = {}
    for name, lo, hi in SIZE_CLASSES:
        hi_ = np.inf if hi is None else hi
        out["by_size"][name] = scores(
            (rsize[1:] >= lo) & (rsize[1:] <= hi_), (psize[1:] >= lo) & (psize[1:] <= hi_)
        )
    return out


def date_accuracy(
    pred_date_index: np.ndarray, ref_date_index: np.ndarray, correct_mask: np.ndarray
) -> dict[str, float | int]:
    """Change-date accuracy on correctly detected change pixels.

    Date indices use the label encoding: ``j`` in 1 … T-1 = first date the change is seen;
    0 (no change), 255 or any negative value = unknown. Pixels where either date is unknown are
    counted in ``n_unknown`` and left out.

    Args:
        pred_date_index: (h, w) int predicted date index.
        ref_date_index: (h, w) int reference date index.
        correct_mask: (h, w) bool true-positive pixels.

    Returns:
        ``n`` pixels compared, ``n_unknown``, ``exact`` and ``within_one`` (fractions of ``n``:
        same date, at most one date apart), ``mean_abs_error_dates``.
    """
    p = np.asarray(pred_date_index).astype(np.int64)
    r = np.asarray(ref_date_index).astype(np.int64)
    c = np.asarray(correct_mask, bool)
    known = c & (p >= 1) & (p < 255) & (r >= 1) & (r < 255)
    d = np.abs(p[known] - r[known])
    n = int(known.sum())
    return {
        "n": n,
        "n_unknown": int(c.sum()) - n,
        "exact": float(np.mean(d == 0)) if n else _NAN,
        "within_one": float(np.mean(d <= 1)) if n else _NAN,
        "mean_abs_error_dates": float(d.mean()) if n else _NAN,
    }


def area_estimates(
    pred: np.ndarray,
    ref: np.ndarray,
    valid: np.ndarray,
    pixel_area_m2: float | np.ndarray,
    mapped: np.ndarray | None = None,
) -> dict[str, Any]:
    """Area-weighted accuracy and stratified area estimates (Olofsson et al. 2014).

    The map classes (change, no change) over the *mapped* pixels are the strata, with area weights
    ``W_i``; the reference pixels inside them (``valid``) are treated as a stratified random sample
    (counts ``n_ij``, map class i, reference class j; no finite-population correction, so a
    reference covering every pixel gives a conservative SE). Estimated area proportions
    ``p_ij = W_i n_ij / n_i·``; user's accuracy ``U_i = p_ii / p_i·``, producer's accuracy
    ``P_j = p_jj / p_·j``, overall accuracy ``O = Σ p_jj``; class area ``A · p_·j`` with
    ``SE(p_·j) = sqrt(Σ_i W_i² (n_ij/n_i·)(1 - n_ij/n_i·)/(n_i· - 1))`` and a 95 % confidence
    interval ``± 1.96 · A · SE``; SEs of U, P, O by Olofsson et al. eqs. 5-7.

    Args:
        pred: (h, w) bool map change.
        ref: (h, w) bool reference change (read where ``valid``).
        valid: (h, w) bool reference sample pixels (labelled and mapped).
        pixel_area_m2: m² per pixel, scalar or (h, w) (geographic grids).
        mapped: (h, w) bool mapped pixels (the strata); default ``valid``.

    Returns:
        Class order ``["change", "no_change"]`` in every matrix and list: ``error_matrix``
        (proportions, rows map, columns reference), ``sample_counts``, ``map_weights``,
        accuracies with ``_se``, ``mapped_area_m2``, ``map_change_area_m2``,
        ``change_area_m2``/``_se_m2``/``_ci95_m2`` and the same for ``no_change``.
    """
    p = np.asarray(pred, bool)
    r = np.asarray(ref, bool)
    v = np.asarray(valid, bool)
    m = v if mapped is None else np.asarray(mapped, bool)
    area = np.broadcast_to(np.asarray(pixel_area_m2, float), p.shape)
    total = float(area[m].sum())
    classes = (True, False)  # change first
    strata_area = np.array([area[m & (p == c)].sum() for c in classes])
    w = strata_area / total if total > 0 else np.full(2, _NAN)
    n = np.array([[np.sum(v & (p == ci) & (r == cj)) for cj in classes] for ci in classes], float)
    ni = n.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = n / ni[:, None]  # n_ij / n_i·
        prop = w[:, None] * frac
        prop = np.where(ni[:, None] > 0, prop, 0.0)  # an empty stratum contributes nothing
        pj = prop.sum(axis=0)  # p_·j
        users = np.diag(frac)
        producers = np.diag(prop) / pj
        overall = float(np.trace(prop))
        var_terms = np.where(
            ni[:, None] > 1, w[:, None] ** 2 * frac * (1 - frac) / (ni[:, None] - 1), 0.0
        )
        se_pj = np.sqrt(var_terms.sum(axis=0))
        users_se = np.sqrt(users * (1 - users) / (ni - 1))
        overall_se = float(
            np.sqrt(np.sum(np.where(ni > 1, w**2 * users * (1 - users) / (ni - 1), 0.0)))
        )
        # Producer's accuracy SE (Olofsson et al. 2014, eq. 7), with N_i = stratum areas.
        producers_se = np.full(2, _NAN)
        for j in range(2):
            nhat_j = np.sum(np.where(ni > 0, strata_area * frac[:, j], 0.0))
            others = sum(
                strata_area[i] ** 2 * frac[i, j] * (1 - frac[i, j]) / (ni[i] - 1)
                for i in range(2)
                if i != j and ni[i] > 1
            )
            first = strata_area[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j])
            first = first / (ni[j] - 1) if ni[j] > 1 else _NAN
            producers_se[j] = math.sqrt((first + producers[j] ** 2 * others) / nhat_j**2)
    names = ("change", "no_change")
    out: dict[str, Any] = {
        "classes": list(names),
        "error_matrix": prop.tolist(),
        "sample_counts": n.astype(int).tolist(),
        "map_weights": w.tolist(),
        "users_accuracy": dict(zip(names, users.tolist())),
        "users_accuracy_se": dict(zip(names, users_se.tolist())),
        "producers_accuracy": dict(zip(names, producers.tolist())),
        "producers_accuracy_se": dict(zip(names, producers_se.tolist())),
        "overall_accuracy": overall,
        "overall_accuracy_se": overall_se,
        "mapped_area_m2": total,
        "map_change_area_m2": float(strata_area[0]),
    }
    for k, name in enumerate(names):
        out[f"{name}_area_m2"] = float(total * pj[k])
        out[f"{name}_area_se_m2"] = float(total * se_pj[k])
        out[f"{name}_area_ci95_m2"] = float(1.96 * total * se_pj[k])
    return out


# --------------------------------------------------------------------------------------------
# Reading and aligning the inputs
# --------------------------------------------------------------------------------------------


@dataclass
class Aligned:
    """Prediction and reference on one grid. All arrays are (h, w) on ``grid``.

    Attributes:
        grid: the evaluation grid (the reference raster's, else the prediction raster's).
        pred: bool predicted change (False where not mapped).
        ref: bool reference change (False where not labelled).
        valid: bool evaluated pixels: mapped and labelled.
        mapped: bool pixels the prediction covers (not nodata).
        labelled: bool pixels the reference labels (not ignore/nodata).
        pred_date: int16 predicted date index (label encoding, -1 unknown) or None.
        ref_date: int16 reference date index or None.
        pixel_area_m2: float64 (h, w) area of each pixel.
        prob: float32 probability (NaN nodata) when the prediction is a probability raster.
        dates: the stack dates used to index ``change_date`` columns, or None.
    """

    grid: GridSpec
    pred: np.ndarray
    ref: np.ndarray
    valid: np.ndarray
    mapped: np.ndarray
    labelled: np.ndarray
    pred_date: np.ndarray | None
    ref_date: np.ndarray | None
    pixel_area_m2: np.ndarray
    prob: np.ndarray | None = None
    dates: list[_dt.date] | None = None


@dataclass
class _Raster:
    path: Path
    data: np.ndarray  # (bands, h, w) as read
    grid: GridSpec | None  # None when not georeferenced
    nodata: float | None
    tags: dict[str, str]


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
                return _Raster(p, data, grid, src.nodata, dict(src.tags()))
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
        if np.issubdtype(band.dtype, np.floating):
            src = band.astype(np.float32)
            if pred_r.nodata is not None and not math.isnan(pred_r.nodata):
                src[band == pred_r.nodata] = np.nan
            prob = _warp(src, pred_r.grid, grid, Resampling.bilinear)
            pred_f = np.where(np.isnan(prob), np.nan, (prob >= threshold).astype(np.float32))
        else:
            mask = _decode_mask(band, pred_r.nodata, 255, f"prediction {pred_p.name}")
            pred_f = _warp(mask, pred_r.grid, grid, Resampling.nearest)
    else:
        pred_f = _burn(pred_gdf, grid, None)
        pred_date = _vector_dates(pred_gdf, grid, stack_dates, "prediction")
    if date_r is not None:
        pred_date = _warp(
            _decode_dates(date_r.data[0], date_r.nodata), date_r.grid, grid, Resampling.nearest
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


# --------------------------------------------------------------------------------------------
# The whole evaluation
# --------------------------------------------------------------------------------------------


def metrics(a: Aligned) -> dict[str, Any]:
    """Pixel, object, date and area metrics of aligned inputs (see :func:`evaluate`)."""
    pixel = pixel_metrics(a.pred, a.ref, a.valid)
    obj = object_metrics(a.pred, a.ref, a.valid, a.pixel_area_m2)
    date = None
    if a.pred_date is not None and a.ref_date is not None:
        date = date_accuracy(a.pred_date, a.ref_date, a.pred & a.ref & a.valid)
    area = area_estimates(a.pred, a.ref, a.valid, a.pixel_area_m2, mapped=a.mapped)
    return {
        "grid": a.grid.describe(),
        "pixels": {
            "evaluated": int(a.valid.sum()),
            "ignored": int((a.mapped & ~a.labelled).sum()),
            "pred_nodata": int((a.labelled & ~a.mapped).sum()),
        },
        "pixel": pixel,
        "object": obj,
        "date": date,
        "area": area,
    }


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


def evaluate_arrays(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    mapped: np.ndarray | None = None,
    pred_date: np.ndarray | None = None,
    ref_date: np.ndarray | None = None,
    pixel_area_m2: float | np.ndarray = 1.0,
    grid: GridSpec | None = None,
) -> dict[str, Any]:
    """The metrics of :func:`evaluate` for arrays already on one grid (e.g. in benchmarks).

    Args:
        pred: (h, w) bool predicted change.
        ref: (h, w) bool reference change.
        valid: (h, w) bool evaluated pixels; default all (within ``mapped``).
        mapped: (h, w) bool pixels the prediction covers; default all.
        pred_date: (h, w) int predicted date index (label encoding), optional.
        ref_date: (h, w) int reference date index, optional.
        pixel_area_m2: m² per pixel, scalar or (h, w).
        grid: the grid, only for the report's description.

    Returns:
        The dict of :func:`metrics`.
    """
    pred = np.asarray(pred, bool)
    shape = pred.shape
    mapped_ = np.ones(shape, bool) if mapped is None else np.asarray(mapped, bool)
    labelled = np.ones(shape, bool) if valid is None else np.asarray(valid, bool)
    a = Aligned(
        grid=grid if grid is not None else GridSpec(None, Affine.identity(), *shape),  # type: ignore[arg-type]
        pred=pred & mapped_,
        ref=np.asarray(ref, bool) & labelled,
        valid=mapped_ & labelled,
        mapped=mapped_,
        labelled=labelled,
        pred_date=None if pred_date is None else np.asarray(pred_date).astype(np.int16),
        ref_date=None if ref_date is None else np.asarray(ref_date).astype(np.int16),
        pixel_area_m2=np.broadcast_to(np.asarray(pixel_area_m2, float), shape),
    )
    return metrics(a)


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, int):
        return f"{v:d}"
    return f"{100 * v:.1f} %" if pct else f"{v:.4g}"


def format_report(result: dict[str, Any]) -> str:
    """A readable multi-line table of :func:`evaluate`'s result."""
    px, ob, ar, n = result["pixel"], result["object"], result["area"], result["pixels"]
    lines = [
        f"prediction: {result['pred']}",
        f"reference:  {result['reference']}",
        f"grid:       {result['grid']}",
        f"pixels:     {n['evaluated']} evaluated, {n['ignored']} ignored (unlabelled), "
        f"{n['pred_nodata']} without prediction",
        "",
        "pixel metrics (change class)",
        f"  TP {px['tp']}  FP {px['fp']}  FN {px['fn']}  TN {px['tn']}",
        f"  precision {_fmt(px['precision'], True)}   recall {_fmt(px['recall'], True)}   "
        f"F1 {_fmt(px['f1'], True)}   IoU {_fmt(px['iou'], True)}",
        f"  kappa {_fmt(px['kappa'])}   overall accuracy {_fmt(px['overall_accuracy'], True)}",
        "",
        "object metrics",
        f"  {'size':<8}{'ref':>6}{'detected':>10}{'recall':>10}{'pred':>6}{'correct':>9}"
        f"{'precision':>11}{'F1':>9}",
    ]
    rows = [("all", ob)] + list(ob["by_size"].items())
    for name, s in rows:
        lines.append(
            f"  {name:<8}{s['n_ref']:>6}{s['detected']:>10}{_fmt(s['recall'], True):>10}"
            f"{s['n_pred']:>6}{s['correct']:>9}{_fmt(s['precision'], True):>11}"
            f"{_fmt(s['f1'], True):>9}"
        )
    lines.append(f"  rule: {ob['rule']}")
    lines.append("")
    if result["date"] is None:
        lines.append("change dates: not scored (no date index on both sides)")
    else:
        d = result["date"]
        lines.append(
            f"change dates on {d['n']} correctly detected pixels: exact {_fmt(d['exact'], True)}, "
            f"within one date {_fmt(d['within_one'], True)} ({d['n_unknown']} unknown)"
        )
    ha = 1e4
    lines += [
        "",
        "area estimates (Olofsson et al. 2014; map classes as strata)",
        f"  user's accuracy change {_fmt(ar['users_accuracy']['change'], True)} "
        f"± {_fmt(1.96 * ar['users_accuracy_se']['change'], True)}, "
        f"producer's {_fmt(ar['producers_accuracy']['change'], True)} "
        f"± {_fmt(1.96 * ar['producers_accuracy_se']['change'], True)}, "
        f"overall {_fmt(ar['overall_accuracy'], True)} ± {_fmt(1.96 * ar['overall_accuracy_se'], True)}",
        f"  mapped change {ar['map_change_area_m2'] / ha:.4g} ha; estimated change "
        f"{ar['change_area_m2'] / ha:.4g} ± {ar['change_area_ci95_m2'] / ha:.4g} ha (95 % CI) "
        f"of {ar['mapped_area_m2'] / ha:.4g} ha mapped",
    ]
    return "\n".join(lines)


def error_map(a: Aligned, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write a PNG map of true positives, false positives and misses on the evaluation grid.

    Colours: true positive green, false positive red, miss (false negative) blue, true negative
    light grey, not evaluated (ignored or unmapped) white. Written under a temporary name, then
    renamed.

    Args:
        a: aligned inputs (:func:`align_inputs`).
        path: .png path.
        overwrite: replace an existing file.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from geochange.io.atomic import atomic_path, check_writable

    path = Path(path)
    check_writable([path], overwrite)
    cls = np.zeros(a.grid.shape, np.uint8)  # 0 not evaluated
    cls[a.valid & ~a.pred & ~a.ref] = 1
    cls[a.valid & a.pred & a.ref] = 2
    cls[a.valid & a.pred & ~a.ref] = 3
    cls[a.valid & ~a.pred & a.ref] = 4
    colours = ["#ffffff", "#d9d9d9", "#1a9850", "#d73027", "#4575b4"]
    labels = ["not evaluated", "true negative", "true positive", "false positive", "miss"]
    counts = [int((cls == i).sum()) for i in range(5)]
    h, w = a.grid.shape
    scale = 6.0 / max(h, w)
    fig = Figure(figsize=(max(w * scale, 3.0) + 2.6, max(h * scale, 3.0)), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.05, 0.62, 0.88))
    ax.imshow(cls, cmap=ListedColormap(colours), vmin=0, vmax=4, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    f1 = pixel_metrics(a.pred, a.ref, a.valid)["f1"]
    ax.set_title(f"change map vs reference (pixel F1 {_fmt(f1, True)})", fontsize=9)
    handles = [
        Patch(facecolor=c, edgecolor="#555555", label=f"{lab} ({n})")
        for c, lab, n in zip(colours, labels, counts)
    ]
    fig.legend(
        handles=handles, loc="center left", bbox_to_anchor=(0.66, 0.5), fontsize=8, frameon=False
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    log.info("wrote %s", path)
    return path
