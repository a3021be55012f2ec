"""Change-detection metrics on arrays already on one grid: pixels, objects, dates and areas.

Numpy (and scipy's labelling) only: :func:`pixel_metrics`, :func:`object_metrics`,
:func:`date_accuracy`, :func:`area_estimates`; :class:`Aligned` holds a prediction and a reference
brought onto one grid (:func:`geochange.evaluate.align.align_inputs` reads them from files) and
:func:`metrics` scores it; :func:`evaluate_arrays` does the same for plain arrays.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from geochange.grid import GridSpec

__all__ = [
    "OBJECT_RULE",
    "SIZE_CLASSES",
    "Aligned",
    "area_estimates",
    "date_accuracy",
    "evaluate_arrays",
    "metrics",
    "object_metrics",
    "pixel_metrics",
]

#: Size classes of objects in pixels of the evaluation grid: (name, min, max) inclusive.
SIZE_CLASSES = (("micro", 1, 9), ("small", 10, 100), ("large", 101, None))
OBJECT_RULE = (
    "a reference object (8-connected change pixels) is detected when predicted change covers "
    ">= 50 % of its pixels or a predicted object overlaps it with IoU >= 0.25; a predicted object "
    "is correct when it overlaps any reference object"
)
_NAN = float("nan")


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
    if grid is None:  # a pixel grid for the report's description only
        from affine import Affine

        from geochange.grid import GridSpec

        grid = GridSpec(None, Affine.identity(), *np.shape(pred))  # type: ignore[arg-type]
    pred = np.asarray(pred, bool)
    shape = pred.shape
    mapped_ = np.ones(shape, bool) if mapped is None else np.asarray(mapped, bool)
    labelled = np.ones(shape, bool) if valid is None else np.asarray(valid, bool)
    a = Aligned(
        grid=grid,
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
