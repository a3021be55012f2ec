"""Choosing from held-out examples: spatially blocked folds, the threshold, the taught term's weight.

Used by :mod:`geochange.model.fewshot`. Few labelled pixels from one scene are correlated in
space, so a random split of them overstates accuracy: the folds are made of whole example
polygons, or of square blocks of a large reviewed area (:func:`blocked_folds`). On the folds'
held-out examples each candidate threshold gets a criterion (:func:`threshold_curve`: F1, or a
positive-unlabelled criterion without a completely reviewed area); :func:`pick_threshold`
chooses the threshold and :func:`pick_mix` the weight of the taught spectral term, from one
curve per fold.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from geochange.io.examples import UNKNOWN

__all__ = [
    "CV_BLOCK",
    "MIXES",
    "THRESHOLDS",
    "best_threshold",
    "blocked_folds",
    "f1_precision_recall",
    "pick_mix",
    "pick_threshold",
    "scene_estimate",
    "threshold_curve",
]

#: Edge (px) of the blocks a large reviewed area is cut into for cross-validation.
CV_BLOCK = 32
#: Candidate thresholds.
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)
#: Candidate weights of the spectral term (0 = the starting model as it is), for examples without
#: a completely reviewed area (see :func:`pick_mix`).
MIXES = (0.0, 0.25, 0.5, 0.75, 1.0)


def blocked_folds(
    label: np.ndarray, k: int = 3, seed: int = 0, block: int = CV_BLOCK
) -> tuple[np.ndarray, int] | None:
    """Spatially blocked folds of the labelled pixels.

    Units are the 8-connected groups of labelled pixels (whole polygons); a unit larger than a
    ``block`` × ``block`` square is cut along a ``block``-px grid. Units holding change are
    dealt to the folds in turn (shuffled with ``seed``), then the others.

    Returns:
        ``(fold, k)`` with ``fold`` (h, w) int8: the fold (0..k-1) of each labelled pixel, -1
        elsewhere; or None when fewer than ``k`` units hold change or no unit holds no change.
    """
    lab = label != UNKNOWN
    ids, n = ndimage.label(lab, structure=np.ones((3, 3), bool))
    sizes = np.bincount(ids.ravel(), minlength=n + 1)
    h, w = label.shape
    gy, gx = np.mgrid[0:h, 0:w]
    cellid = (gy // block) * (-(-w // block)) + gx // block
    big = sizes[ids] > block * block
    unit = np.where(big, (n + 1) + cellid, ids)
    unit[~lab] = 0
    uniq, inv = np.unique(unit, return_inverse=True)
    inv = inv.reshape(unit.shape)
    has_change = np.bincount(inv.ravel(), weights=(label == 1).ravel(), minlength=len(uniq)) > 0
    has_none = np.bincount(inv.ravel(), weights=(label == 0).ravel(), minlength=len(uniq)) > 0
    real = uniq != 0
    if (has_change & real).sum() < k or not (has_none & real).any():
        return None
    rng = np.random.default_rng([int(seed), 31])
    order = np.concatenate(
        [
            rng.permutation(np.flatnonzero(has_change & real)),
            rng.permutation(np.flatnonzero(~has_change & real)),
        ]
    )
    assign = np.full(len(uniq), -1, np.int8)
    assign[order] = np.arange(len(order)) % k
    fold = assign[inv]
    fold[~lab] = -1
    return fold, k


def f1_precision_recall(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """F1, precision and recall of the change class from pixel counts (NaN where undefined)."""
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return f, p, r


def scene_estimate(
    pred: np.ndarray, truth: np.ndarray, flagged: float
) -> tuple[float, float, float]:
    """F1, precision and recall expected on the pixels no example covers, from held-out examples.

    Their share of change is where the user looked, not the scene's: a few change polygons and a
    few no-change areas are about half change, and an area reviewed completely is put where
    change is. Precision among them says little. The recall ``r`` and false-alarm rate ``a`` on
    the held-out examples and the share ``q`` of the unlabelled pixels flagged give the scene's
    share of change ``π = (q - a) / (r - a)`` (adjusted classify and count; Forman 2008) and
    precision ``r π / q``.

    Args:
        pred: bool, the held-out example pixels flagged.
        truth: bool, the same pixels' labels (True = change).
        flagged: the share of unlabelled pixels flagged at the same threshold.

    Returns:
        ``(f1, precision, recall)``, NaN where the examples cannot tell (no change example, or a
        recall no better than the false-alarm rate).
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not truth.any():
        return float("nan"), float("nan"), float("nan")
    r = float((pred & truth).sum() / truth.sum())
    a = float((pred & ~truth).sum() / (~truth).sum()) if (~truth).any() else 0.0
    if r <= a:
        return float("nan"), float("nan"), r
    if flagged <= 0:
        return 0.0, float("nan"), r
    share = min(max((flagged - a) / (r - a), 0.0), 1.0)
    p = min(r * share / flagged, 1.0)
    f = 2 * p * r / (p + r) if p + r else 0.0
    return f, p, r


def threshold_curve(
    prob: np.ndarray, truth: np.ndarray, unlabelled: np.ndarray | None = None
) -> np.ndarray:
    """How well each threshold of :data:`THRESHOLDS` serves the examples (NaN: no change example).

    With ``unlabelled`` None: the F1 of ``prob >= t`` against ``truth`` (examples that include
    completely reviewed areas, where no change is known as well as change). Given the
    probabilities of the pixels no example covers: ``recall² / P(prob >= t)`` (Lee and Liu
    2003), recall on the change examples and the share flagged among the unlabelled pixels, a
    positive-unlabelled criterion that rises with precision as F1 does, for examples that are a
    few obvious changes and a few easy no-change areas (an F1 on those would reward a threshold
    that flags everything that looks changed).
    """
    p = np.asarray(prob, np.float64).ravel()
    y = np.asarray(truth, bool).ravel()
    if not y.any():
        return np.full(THRESHOLDS.size, np.nan)
    pred = p[None, :] >= THRESHOLDS[:, None]
    tp = (pred & y).sum(axis=1)
    if unlabelled is not None and np.size(unlabelled):
        u = np.asarray(unlabelled, np.float64).ravel()
        flagged = (u[None, :] >= THRESHOLDS[:, None]).mean(axis=1)
        return (tp / y.sum()) ** 2 / np.maximum(flagged, 1.0 / u.size)
    if y.all():
        return np.full(THRESHOLDS.size, np.nan)
    fp = (pred & ~y).sum(axis=1)
    fn = (~pred & y).sum(axis=1)
    return 2 * tp / np.maximum(2 * tp + fp + fn, 1)


def pick_threshold(curves: np.ndarray) -> float:
    """The threshold closest to 0.5 whose mean criterion over ``curves`` (n, thresholds: one
    row per fold) is within one standard error of the best (the one-standard-error rule; with
    one row, within 2 % of the best): the threshold leaves 0.5 only as far as the examples
    clearly ask. 0.5 when no row has a value."""
    c = np.atleast_2d(np.asarray(curves, np.float64))
    c = c[~np.isnan(c).all(axis=1)]
    if c.size == 0:
        return 0.5
    mean = np.nanmean(c, axis=0)
    top = int(np.nanargmax(mean))
    if len(c) >= 2:
        slack = float(np.nanstd(c[:, top]) / np.sqrt(len(c)))
    else:
        slack = 0.02 * abs(float(mean[top]))
    ok = np.flatnonzero(mean >= mean[top] - slack)
    return float(THRESHOLDS[ok[np.argmin(np.abs(THRESHOLDS[ok] - 0.5))]])


def pick_mix(curves: np.ndarray) -> int:
    """Index in :data:`MIXES` of the spectral term's weight with the highest mean criterion over
    folds at its best threshold, from ``curves`` (weights, folds, thresholds). Where the
    examples do not carry over to held-out ones, a smaller weight, down to the starting model
    (0), serves them better and is chosen."""
    c = np.asarray(curves, np.float64)
    score = np.full(c.shape[0], -np.inf)
    for m in range(c.shape[0]):
        if not np.isnan(c[m]).all():
            score[m] = np.nanmax(np.nanmean(c[m], axis=0))
    return int(np.argmax(score)) if np.isfinite(score).any() else c.shape[0] - 1


def best_threshold(
    prob: np.ndarray, truth: np.ndarray, unlabelled: np.ndarray | None = None
) -> float:
    """:func:`pick_threshold` of one :func:`threshold_curve`."""
    return pick_threshold(threshold_curve(prob, truth, unlabelled)[None])
