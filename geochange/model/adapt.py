"""Self-supervised adaptation of the CNN-LSTM to the user's own scene, without labels.

``adapt(stack, "scene_model.ckpt")`` fine-tunes the default (or a given) model for a few minutes
on chips cut from the stack itself, then writes a checkpoint that ``geochange detect --model``
loads like any other. Two kinds of examples teach the scene:

- **no change, with the scene's real nuisance**: real chips of the stack. Pixels whose CVA-like
  change magnitude (RMS over bands of the difference of consecutive valid dates, scene-normalised,
  counting only what lasts one date longer: :func:`change_magnitude`) is high are *unknown*
  (label 255, ignored by the loss): above the scene's ``1 - ignore_top``
  quantile **or** above its Otsu split, whichever is lower, dilated by ``ignore_dilate`` pixels.
  Taking the lower of the two guards the scene with a lot of real change: with a bimodal
  magnitude the Otsu split ignores the whole changed mode, not just the top few percent. Pixels
  the starting model calls change (probability ``>= keep_confident``, 0.5) are ignored too, so
  the model is not taught to unlearn its detections (on a scene where a third of the pixels
  changed, real change lies far below the top few percent of magnitude). With 3 dates or more,
  unknown pixels it rejects with probability ``<= keep_rejected`` are no change after all (it
  keeps rejecting a cloud on the first date or a field greening up instead of drifting towards
  them); on a 2-date pair that rule would teach the real changes the start model misses as no
  change, so it is off there. Everything else is no change. A piece pasted over an unknown pixel
  is unknown too.
- **change, pasted**: into a real chip, pieces of the same scene taken from elsewhere (real roofs,
  fields, water, soil of this scene, with their own appearance on every date) are pasted from a
  random date on, with footprints like buildings (rectangles), L-shapes, roads (thin polylines)
  and blobs, 2 to ~32 pixels across, some blended at low contrast; labelled change with the first
  date on which they are seen (:func:`paste_changes`). With T > 2 dates the date is random, so
  the change-date head learns the scene's own series. Nodata dates stay nodata (``valid`` False),
  never learned as change. When the stack's red and NIR wavelengths are known, no piece that
  turns its footprint greener is pasted: a field greening up is phenology, not change.

Chips are normalised exactly as at inference (``robust.scene_stats`` of ``read_sample``, then
``normalize.apply``), and cut from windowed reads: a small scene is read once, a large one
through a pool of random windows that is refreshed while training, never in full.

The adapted weights are finally interpolated with the starting weights, ``alpha * adapted +
(1 - alpha) * base`` (a weight-space ensemble; fine-tuning from the same start stays in one
basin, so the interpolation behaves like averaging the two models, at no cost at inference).
``alpha`` is stored in the checkpoint's meta with the provenance: stack paths and dates, base
model, seed, budget, steps, ``adapted: True`` (which ``detect`` copies to the ``runs`` layer).

The CNN-LSTM has no BatchNorm (inputs are standardised scene-wide); should a network carry one,
its statistics are frozen (kept in eval mode) during adaptation.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from geochange.bands import wavelength_array
from geochange.errors import InputError, ModelError, OutputExistsError
from geochange.io.read import read_sample
from geochange.io.stack import Stack, open_stack
from geochange.model import load_model, save_model
from geochange.model.cnn_lstm import CNNLSTM
from geochange.model.losses import IGNORE, dice_loss, focal_loss, interval_loss
from geochange.model.normalize import apply
from geochange.model.task import OneCycleByProgress
from geochange.robust import scene_stats
from geochange.stages import prepare_stack

__all__ = [
    "AdaptResult",
    "adapt",
    "adapt_loss",
    "adapt_network",
    "change_magnitude",
    "footprint",
    "ignore_threshold",
    "interpolate",
    "paste_changes",
    "red_nir_bands",
]

logger = logging.getLogger(__name__)

#: Footprint kinds of pasted changes.
FOOTPRINTS = ("rectangle", "L", "road", "blob")
#: A scene at most this large (bytes as float32, all dates and bands) is read once in full.
WHOLE_SCENE_BYTES = 256 * 2**20
#: A pasted piece that raises the NDVI of the pixels it covers by more than this (median) is a
#: field greening up, not a change the default model reports: drawn again (see paste_changes).
GREENING_NDVI = 0.15
#: Band centre ranges (nm) taken as red and near infrared for the NDVI.
_RED_NM, _NIR_NM = (620.0, 700.0), (760.0, 900.0)
#: Seconds kept from the budget for writing the checkpoint (at most 5 % of the budget).
_SAVE_RESERVE_S = 3.0


# ----------------------------------------------------------------------------------------------
# Change magnitude and the ignore mask of "no change" examples


def change_magnitude(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """CVA-like magnitude of *lasting* change: largest RMS over bands of the differences of
    consecutive valid dates, each capped by how much of it is still there one date later.

    Interval k (date k-1 to date k) counts ``min(|x_k - x_{k-1}|, |x_{k+1} - x_{k-1}|)`` (RMS over
    bands); the last interval, which has no later date to confirm it, counts in full. A cloud,
    its shadow or a haze patch on one date comes and goes, so it scores low and its pixels stay
    "no change" in :func:`adapt_network`'s real chips — the model is reminded that a passing
    cloud is not change — while a lasting change scores high and is left unknown. Measured on
    data_samples (6 dates, no cloud masks given): without the cap, adaptation taught clouds as
    change (F1 0.78 after adaptation vs 0.84 before).

    Args:
        x: (t, c, ...) normalised, nodata filled along time (``normalize.apply``).
        valid: (t, ...) bool.

    Returns:
        (...) float32, 0 where fewer than two dates are valid. An interval counts where its later
        date is valid and some earlier date is (filled values make it the last valid one, and a
        nodata date k+1 repeats date k, so it confirms the change).
    """
    d = np.sqrt(np.mean((x[1:] - x[:-1]) ** 2, axis=1))  # (t-1, ...)
    if len(d) > 1:
        later = np.sqrt(np.mean((x[2:] - x[:-2]) ** 2, axis=1))  # date k-1 to date k+1
        d = np.concatenate([np.minimum(d[:-1], later), d[-1:]], axis=0)
    seen = np.cumsum(valid, axis=0) > 0
    observed = valid[1:] & seen[:-1]
    return np.where(observed, d, 0.0).max(axis=0).astype(np.float32)


def ignore_threshold(magnitude: np.ndarray, top: float = 0.08) -> float:
    """Magnitude above which a real pixel is "unknown" rather than "no change".

    The lower of the ``1 - top`` quantile and Otsu's split of the magnitudes: with a unimodal
    magnitude (little change) the quantile rules; with a bimodal one (a lot of change) Otsu puts
    the whole changed mode above the threshold.

    Args:
        magnitude: per-pixel magnitudes (any shape; zeros = pixels without two valid dates are
            dropped).
        top: share of the pixels always ignored (0..1).
    """
    from geochange.stages.baselines import otsu_threshold

    m = np.asarray(magnitude, np.float64).ravel()
    m = m[np.isfinite(m) & (m > 0)]
    if m.size == 0:
        return float("inf")
    q = float(np.quantile(m, 1.0 - top))
    return min(q, otsu_threshold(m))


# ----------------------------------------------------------------------------------------------
# Pasted changes


def footprint(
    rng: np.random.Generator, shape: tuple[int, int], kind: str | None = None
) -> np.ndarray:
    """A random change footprint inside a chip.

    Args:
        rng: random generator.
        shape: (h, w) of the chip.
        kind: "rectangle" (a building), "L" (an L-shaped building), "road" (a thin polyline 1-3
            px wide) or "blob" (a smooth irregular patch); None = random.

    Returns:
        (h, w) bool, at least one pixel; sizes from 2 pixels up to about half the chip (log-
        uniform, so small changes are common).
    """
    h, w = shape
    kind = kind or FOOTPRINTS[int(rng.integers(len(FOOTPRINTS)))]
    big = max(2, min(32, min(h, w) // 2))
    mask = np.zeros((h, w), bool)

    def size() -> int:
        return int(round(np.exp(rng.uniform(np.log(2), np.log(big + 0.99)))))

    if kind in ("rectangle", "L"):
        sy, sx = min(size(), h), min(size(), w)
        y0, x0 = int(rng.integers(0, h - sy + 1)), int(rng.integers(0, w - sx + 1))
        mask[y0 : y0 + sy, x0 : x0 + sx] = True
        if kind == "L" and sy >= 3 and sx >= 3:
            # Cut away one corner quadrant.
            cy, cx = int(rng.integers(1, sy - 1)), int(rng.integers(1, sx - 1))
            ys = slice(y0, y0 + cy) if rng.random() < 0.5 else slice(y0 + cy, y0 + sy)
            xs = slice(x0, x0 + cx) if rng.random() < 0.5 else slice(x0 + cx, x0 + sx)
            mask[ys, xs] = False
    elif kind == "road":
        width = int(rng.integers(1, 4))
        n = int(rng.integers(2, 4))
        pts = np.stack([rng.uniform(0, h - 1, n), rng.uniform(0, w - 1, n)], axis=1)
        length = size() * 2
        for a, b in zip(pts[:-1], pts[1:]):
            seg = np.linalg.norm(b - a)
            if seg > length:
                b = a + (b - a) * length / seg
            for s in np.linspace(0.0, 1.0, int(np.linalg.norm(b - a) * 2) + 2):
                y, x = np.rint(a + s * (b - a)).astype(int)
                mask[
                    max(0, y - width // 2) : y + (width + 1) // 2,
                    max(0, x - width // 2) : x + (width + 1) // 2,
                ] = True
    elif kind == "blob":
        r = size() / 2.0
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        yy, xx = np.mgrid[0:h, 0:w]
        ang = np.arctan2(yy - cy, xx - cx)
        # A wobbly radius: low-order harmonics with random phases.
        rad = r * (
            1.0
            + sum(rng.uniform(0, 0.3) * np.cos(k * ang + rng.uniform(0, 2 * np.pi)) for k in (2, 3))
        )
        mask = np.hypot(yy - cy, xx - cx) <= np.maximum(rad, 0.8)
    else:
        raise InputError(f"footprint kind: got {kind!r}, expected one of {FOOTPRINTS}")
    if not mask.any():
        mask[int(rng.integers(h)), int(rng.integers(w))] = True
    return mask


def paste_changes(
    raw: np.ndarray,
    source: np.ndarray,
    rng: np.random.Generator,
    n: int = 1,
    dates: Sequence[int] | None = None,
    low_contrast: float = 0.25,
    scale: np.ndarray | None = None,
    min_contrast: float = 0.0,
    red_nir: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste ``n`` pieces of ``source`` into ``raw`` from a random date on, with their labels.

    For each change: a footprint ``M`` (:func:`footprint`) and a date ``j`` (1..t-1); on every
    date ``t >= j`` the pixels of ``M`` take ``(1 - a) * raw + a * source`` of that same date
    (``a`` = 1, or 0.35-0.8 for a share ``low_contrast`` of the changes). A later change over an
    earlier one keeps the earlier date (the pixel changed first then).

    Args:
        raw: (t, c, h, w) float32 source units, NaN = nodata (the chip).
        source: (t, c, h, w) float32 from elsewhere in the scene (same dates and bands).
        rng: random generator.
        n: number of changes.
        dates: candidate dates j (default 1..t-1).
        low_contrast: share of changes blended at low contrast.
        scale: (t, c) scale per date and band (``scene_stats(...)[..., 1]``) in which contrast
            is measured; None = source units.
        min_contrast: a piece whose median contrast at its date (RMS over bands of the scaled
            difference it makes, blending included) is below this is drawn again (up to 4
            times, then left out): an invisible piece labelled change would teach false alarms.
        red_nir: indices of the red and NIR bands when known (:func:`red_nir_bands`): a piece
            that turns its footprint greener (median NDVI gain above :data:`GREENING_NDVI` at
            its date) is drawn again too. Pasting a crop field over bare soil would teach that
            a field greening up is change — the largest false alarm the default model has
            learnt to avoid (measured on data_samples: F1 0.84 before adaptation, 0.75 after,
            without this rule).

    Returns:
        ``out`` (t, c, h, w) float32 (differs from ``raw`` only inside the change mask, on dates
        >= its date; NaN where either input is NaN there), ``change`` (h, w) uint8 1 inside the
        pasted pieces, 0 elsewhere, 255 where a piece is never seen (no valid date at or after
        its date, or none before it), ``date_index`` (h, w) uint8: j = first date the change is
        seen (the first valid date >= the pasted date), 0 no change, 255 unknown.
    """
    t, _, h, w = raw.shape
    if t < 2:
        raise InputError(f"raw: got {t} date(s), expected at least 2 to paste a dated change")
    cands = list(range(1, t)) if dates is None else [int(j) for j in dates if 1 <= j < t]
    out = raw.copy()
    pasted = np.zeros((h, w), np.int64)  # 0 = none, else the pasted date
    sc = np.ones((t, raw.shape[1]), np.float32) if scale is None else np.asarray(scale)
    for _ in range(n):
        for _attempt in range(4):
            mask = footprint(rng, (h, w))
            j = int(cands[int(rng.integers(len(cands)))])
            a = float(rng.uniform(0.35, 0.8)) if rng.random() < low_contrast else 1.0
            visible = (
                min_contrast <= 0 or _contrast(out[j], source[j], mask, sc[j], a) >= min_contrast
            )
            if visible and (red_nir is None or not _greening(out[j], source[j], mask, a, red_nir)):
                break
        else:
            continue
        new = mask & ((pasted == 0) | (pasted > j))
        for ti in range(j, t):
            sl = out[ti][:, mask]
            out[ti][:, mask] = (1.0 - a) * sl + a * source[ti][:, mask]
        pasted[new] = j
    valid = np.isfinite(out).all(axis=1)  # (t, h, w)
    seen = np.cumsum(valid, axis=0) > 0
    shows = np.zeros((t, h, w), bool)
    shows[1:] = valid[1:] & seen[:-1]
    ti = np.arange(t)[:, None, None]
    ok = shows & (ti >= pasted[None]) & (pasted[None] > 0)
    first = np.where(ok.any(axis=0), np.argmax(ok, axis=0), 0)
    change = np.zeros((h, w), np.uint8)
    date_index = np.zeros((h, w), np.uint8)
    hit = pasted > 0
    change[hit] = 1
    date_index[hit] = first[hit]
    unseen = hit & (first == 0)
    change[unseen] = IGNORE
    date_index[unseen] = IGNORE
    return out, change, date_index


def red_nir_bands(wavelengths: Sequence[float | None]) -> tuple[int, int] | None:
    """Indices of a red (620-700 nm) and a NIR (760-900 nm) band, or None if either is unknown."""

    def first(lo: float, hi: float) -> int | None:
        return next((i for i, w in enumerate(wavelengths) if w is not None and lo <= w <= hi), None)

    red, nir = first(*_RED_NM), first(*_NIR_NM)
    return None if red is None or nir is None else (red, nir)


def _greening(
    before: np.ndarray, piece: np.ndarray, mask: np.ndarray, a: float, red_nir: tuple[int, int]
) -> bool:
    """Whether pasting ``piece`` (blend ``a``) raises the median NDVI over ``mask`` by more than
    :data:`GREENING_NDVI`."""
    r, n = red_nir

    def ndvi(img: np.ndarray) -> np.ndarray:
        red, nir = img[r][mask], img[n][mask]
        return (nir - red) / np.maximum(nir + red, 1e-6)

    gain = a * (ndvi(piece) - ndvi(before))
    gain = gain[np.isfinite(gain)]
    return bool(gain.size) and float(np.median(gain)) > GREENING_NDVI


def _contrast(
    before: np.ndarray, piece: np.ndarray, mask: np.ndarray, scale: np.ndarray, a: float
) -> float:
    """Median over ``mask`` of the RMS over bands of ``a * (piece - before) / scale``."""
    d = (piece[:, mask] - before[:, mask]) / scale[:, None]
    mag = a * np.sqrt(np.mean(d * d, axis=0))
    mag = mag[np.isfinite(mag)]
    return float(np.median(mag)) if mag.size else 0.0


# ----------------------------------------------------------------------------------------------
# Chips from the scene


class _ScenePool:
    """Windows of the stack held in memory: the whole scene when small, else a refreshed pool of
    random windows (windowed reads only)."""

    def __init__(self, stack: Stack, rng: np.random.Generator, window: int, n_windows: int) -> None:
        self.stack = stack
        t, c, h, w = stack.shape
        self.whole = t * c * h * w * 4 <= WHOLE_SCENE_BYTES
        self.win = (min(window, h), min(window, w))
        if self.whole:
            self.arrays = [stack.window(0, 0, h, w)]
        else:
            # At most WHOLE_SCENE_BYTES in memory, at least 4 windows.
            per = t * c * self.win[0] * self.win[1] * 4
            n_windows = int(np.clip(WHOLE_SCENE_BYTES // per, 4, n_windows))
            self.arrays = [self._read(rng) for _ in range(n_windows)]
        logger.info(
            "adapt: %s",
            "scene read in full" if self.whole else f"{n_windows} windows of {self.win}",
        )

    def _read(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.stack.grid.shape
        wy, wx = self.win
        y0, x0 = int(rng.integers(0, h - wy + 1)), int(rng.integers(0, w - wx + 1))
        return self.stack.window(y0, x0, wy, wx)

    def refresh(self, rng: np.random.Generator) -> None:
        """Replace one random window by a new read (no-op for a scene held in full)."""
        if not self.whole:
            self.arrays[int(rng.integers(len(self.arrays)))] = self._read(rng)

    def chip(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        """A random (t, c, sy, sx) copy from the pool."""
        a = self.arrays[int(rng.integers(len(self.arrays)))]
        sy, sx = min(size[0], a.shape[2]), min(size[1], a.shape[3])
        y0, x0 = (
            int(rng.integers(0, a.shape[2] - sy + 1)),
            int(rng.integers(0, a.shape[3] - sx + 1)),
        )
        return a[:, :, y0 : y0 + sy, x0 : x0 + sx].copy()


@dataclass
class _Setup:
    stats: np.ndarray  # (t, c, 2)
    threshold: float  # ignore threshold of the change magnitude
    chip: tuple[int, int]
    max_dates: int
    red_nir: tuple[int, int] | None = None  # band indices for the greening rule


def _batch(
    pool: _ScenePool,
    setup: _Setup,
    rng: np.random.Generator,
    batch_size: int,
    paste_prob: float,
    ignore_dilate: int,
    min_contrast: float = 0.5,
) -> dict[str, np.ndarray]:
    """One batch: real chips (high magnitude ignored) with pasted changes in most of them."""
    t = setup.stats.shape[0]
    keep = np.arange(t)
    if t > setup.max_dates:
        keep = np.sort(rng.choice(t, size=setup.max_dates, replace=False))
    stats = setup.stats[keep]
    xs, vs, cs, ds, us = [], [], [], [], []
    for _ in range(batch_size):
        raw = pool.chip(rng, setup.chip)[keep]
        x0, v0 = apply(raw, stats)
        ignore = change_magnitude(x0, v0) > setup.threshold
        if ignore_dilate > 0 and ignore.any():
            ignore = ndimage.binary_dilation(ignore, iterations=ignore_dilate)
        change = np.where(ignore, IGNORE, 0).astype(np.uint8)
        date_index = np.zeros_like(change)
        unsure = ignore.copy()  # real pixels unknown for their high magnitude alone
        if rng.random() < paste_prob:
            src = pool.chip(rng, raw.shape[2:])[keep]
            if src.shape == raw.shape:
                n = int(rng.integers(1, 5))
                raw, pc, pd = paste_changes(
                    raw,
                    src,
                    rng,
                    n=n,
                    scale=setup.stats[keep, :, 1],
                    min_contrast=min_contrast * setup.threshold,
                    red_nir=setup.red_nir,
                )
                # A piece pasted over a pixel that may have changed already (or holds a
                # cloud) is left unknown, never taught either way.
                hit = (pc != 0) & ~ignore
                change[hit] = pc[hit]
                date_index[hit] = pd[hit]
                change[(pc != 0) & ignore] = IGNORE
                unsure &= pc == 0
        x, valid = apply(raw, stats)
        change[valid.sum(axis=0) < 2] = IGNORE
        unsure &= valid.sum(axis=0) >= 2
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        x, valid, change, date_index, unsure = (
            _aug(a, k, flip) for a in (x, valid, change, date_index, unsure)
        )
        xs.append(x)
        vs.append(valid)
        cs.append(change)
        ds.append(date_index)
        us.append(unsure)
    return {
        "x": np.ascontiguousarray(np.stack(xs)),
        "valid": np.ascontiguousarray(np.stack(vs)),
        "change": np.ascontiguousarray(np.stack(cs)),
        "date_index": np.ascontiguousarray(np.stack(ds)),
        "unsure": np.ascontiguousarray(np.stack(us)),
    }


def _aug(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, k, axes=(-2, -1))
    return a[..., ::-1] if flip else a


# ----------------------------------------------------------------------------------------------
# The adaptation loop


@dataclass
class AdaptResult:
    """What :func:`adapt_network` returns.

    Attributes:
        base: the starting network (unchanged, eval mode, CPU).
        adapted: the fine-tuned network (eval mode, CPU), before interpolation.
        base_meta: the starting model's meta.
        info: steps, seconds, thresholds, losses: the provenance written to the checkpoint.
    """

    base: CNNLSTM
    adapted: CNNLSTM
    base_meta: dict
    info: dict[str, Any] = field(default_factory=dict)


def adapt_loss(
    change_logit: torch.Tensor,
    interval_logits: torch.Tensor,
    change: torch.Tensor,
    date_index: torch.Tensor,
    date_weight: float = 0.5,
) -> torch.Tensor:
    """Focal + 0.5 Dice on the change mask + ``date_weight`` × date cross-entropy.

    The losses of :mod:`geochange.model.losses` (the default model's weights): pixels labelled
    :data:`IGNORE` in ``change`` contribute nothing, nor do dates labelled :data:`IGNORE`.

    Args:
        change_logit: (b, h, w). interval_logits: (b, t-1, h, w).
        change: (b, h, w) 0/1/255. date_index: (b, h, w) long, 1..t-1, 0 or 255.
    """
    return (
        focal_loss(change_logit, change)
        + 0.5 * dice_loss(change_logit, change)
        + date_weight * interval_loss(interval_logits, change, date_index)
    )


def _freeze_norm(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def adapt_network(
    stack: Stack,
    *,
    model: str | os.PathLike | None = None,
    minutes: float = 3.0,
    seed: int = 0,
    chip: int = 64,
    device: str = "auto",
    progress: bool = False,
    batch_size: int = 8,
    lr: float = 1e-3,
    max_steps: int | None = None,
    max_dates: int = 8,
    paste_prob: float = 0.7,
    ignore_top: float = 0.08,
    ignore_dilate: int = 2,
    keep_confident: float | None = 0.5,
    keep_rejected: float | None = 0.05,
    min_contrast: float = 0.5,
    date_weight: float = 0.5,
    avoid_greening: bool = True,
    start_time: float | None = None,
) -> AdaptResult:
    """Fine-tune a model on self-labelled chips of ``stack`` (see the module docstring).

    Args:
        stack: the user's stack.
        model: starting checkpoint; None = the shipped default model.
        minutes: wall-clock budget of the whole call, reading included.
        seed: seeds chips, pasted changes and torch.
        chip: chip edge in pixels.
        device: "auto", "cpu" or "cuda".
        progress: a tqdm bar over the budget.
        batch_size: chips per step.
        lr: peak AdamW learning rate (warm-up, then cosine decay by time or steps).
        max_steps: stop after this many steps too (None = by time only; with a step limit and a
            generous budget the run is reproducible step for step).
        max_dates: at most this many dates per batch (a random ordered subset of longer series).
        paste_prob: share of chips that get pasted changes.
        ignore_top: share of real pixels with the highest change magnitude always ignored.
        ignore_dilate: dilation (pixels) of the ignored area.
        keep_rejected: real pixels left unknown for their high magnitude that the starting
            model calls change with at most this probability are taught as no change after all
            (None = off; always off on a 2-date stack): what it already rejects — a cloud on
            the first date, a field greening up — it keeps rejecting instead of drifting
            towards calling it change.
        keep_confident: also ignore real pixels the starting model calls change with at least
            this probability (None = off).
        min_contrast: pasted pieces make at least this contrast, as a share of the ignore
            threshold of the change magnitude (see :func:`paste_changes`).
        date_weight: weight of the change-date loss.
        avoid_greening: with red and NIR wavelengths known, paste no piece that turns its
            footprint greener (see :func:`paste_changes`).
        start_time: ``time.monotonic()`` at which the budget started (default: now).

    Raises:
        ModelError: unreadable model, or a band count the model does not take.
        InputError: fewer than two dates, or a non-positive budget.
    """
    from geochange.stages.network import resolve_device

    t0 = time.monotonic() if start_time is None else start_time
    budget = 60.0 * float(minutes)
    if not budget > 0:
        raise InputError(f"--minutes: got {minutes}, expected a positive number of minutes")
    if stack.T < 2:
        raise InputError(f"stack: {stack.T} date(s), at least 2 are needed to adapt a change model")
    dev = resolve_device(device)
    base, base_meta = load_model(model, map_location="cpu")
    if base.in_bands is not None and base.in_bands != stack.band_count:
        raise ModelError(
            f"model {base_meta.get('path')}: trained on {base.in_bands} bands but the stack has "
            f"{stack.band_count}; adapt the default band-agnostic model or one with this band count"
        )
    rng = np.random.default_rng([int(seed), 20240611])
    torch.manual_seed(int(seed))
    if stack.T < 3:
        keep_rejected = None  # a pair: what the start model misses is not taught as no change

    sample = read_sample(stack)
    stats = scene_stats(sample)
    sx, sv = apply(sample[:, :, None, :], stats)
    thr = ignore_threshold(change_magnitude(sx, sv)[0], ignore_top)
    h, w = stack.grid.shape
    side = min(chip, h, w)  # square chips: rotations keep the shape
    red_nir = red_nir_bands(stack.wavelengths) if avoid_greening else None
    setup = _Setup(stats, thr, (side, side), max(2, int(max_dates)), red_nir)
    pool = _ScenePool(stack, rng, window=4 * chip, n_windows=16)
    wavelengths = torch.from_numpy(wavelength_array(stack.wavelengths, stack.band_count)).to(dev)

    net = copy.deepcopy(base).to(dev).train()
    _freeze_norm(net)
    use_ref = keep_confident is not None or keep_rejected is not None
    ref = base.to(dev).eval() if use_ref else None
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    planned = int(max_steps) if max_steps else 10**9
    reserve = min(_SAVE_RESERVE_S, 0.05 * budget)
    remaining = budget - (time.monotonic() - t0) - reserve
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, OneCycleByProgress(planned, max(remaining, 1e-3), warmup=0.05)
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=round(budget), unit="s", desc="adapt", leave=False)
    steps, losses = 0, []
    deadline = t0 + budget - reserve
    last = 0.0  # duration of the last step
    try:
        while steps < planned:
            tick = time.monotonic()
            if tick + last > deadline:  # the next step would overrun the budget
                break
            b = _batch(pool, setup, rng, batch_size, paste_prob, ignore_dilate, min_contrast)
            x = torch.from_numpy(b["x"]).to(dev)
            valid = torch.from_numpy(b["valid"]).to(dev)
            change = torch.from_numpy(b["change"]).to(dev)
            date_index = torch.from_numpy(b["date_index"].astype(np.int64)).to(dev)
            wl = wavelengths.expand(x.shape[0], -1)
            if ref is not None:
                with torch.no_grad():
                    p_ref = torch.sigmoid(ref(x, valid, wl)[0])
                if keep_confident is not None:
                    # Real pixels the start model is sure about: do not teach "no change" there.
                    change = torch.where(
                        (change == 0) & (p_ref >= keep_confident), change.new_tensor(IGNORE), change
                    )
                if keep_rejected is not None:
                    unsure = torch.from_numpy(b["unsure"]).to(dev)
                    change = torch.where(
                        unsure & (p_ref <= keep_rejected), change.new_tensor(0), change
                    )
            change_logit, interval_logits = net(x, valid, wl)
            loss = adapt_loss(change_logit, interval_logits, change, date_index, date_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            losses.append(float(loss.detach()))
            if steps % 10 == 0:
                pool.refresh(rng)
            last = time.monotonic() - tick
            if bar is not None:
                bar.n = min(round(budget), round(time.monotonic() - t0))
                bar.set_postfix(step=steps, loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    net = net.cpu().eval()
    base = base.cpu().eval()
    info = {
        "steps": steps,
        "seconds": round(time.monotonic() - t0, 1),
        "chip": int(chip),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "ignore_threshold": round(float(thr), 4),
        "ignore_top": float(ignore_top),
        "keep_confident": keep_confident,
        "keep_rejected": keep_rejected,
        "min_contrast": float(min_contrast),
        "greening_rule": None if red_nir is None else list(red_nir),
        "loss_first": round(float(np.mean(losses[:20])), 4) if losses else None,
        "loss_last": round(float(np.mean(losses[-20:])), 4) if losses else None,
        "device": dev,
    }
    logger.info(
        "adapt: %d steps in %.1f s (loss %s -> %s)",
        steps,
        info["seconds"],
        info["loss_first"],
        info["loss_last"],
    )
    return AdaptResult(base, net, base_meta, info)


def interpolate(base: CNNLSTM, adapted: CNNLSTM, alpha: float) -> CNNLSTM:
    """``alpha * adapted + (1 - alpha) * base``, parameter by parameter (a new network)."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha: got {alpha}, expected a weight in [0, 1]")
    out = copy.deepcopy(adapted)
    sb, sa = base.state_dict(), adapted.state_dict()
    out.load_state_dict(
        {k: (alpha * sa[k].float() + (1.0 - alpha) * sb[k].float()).to(sa[k].dtype) for k in sa}
    )
    return out.eval()


def adapt(
    inputs: str | os.PathLike | Sequence[str | os.PathLike] | Stack,
    output_ckpt: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    minutes: float = 3.0,
    seed: int = 0,
    chip: int = 64,
    device: str = "auto",
    progress: bool = False,
    dates: Sequence[str | dt.date] | None = None,
    align: bool = False,
    alpha: float = 0.5,
    overwrite: bool = False,
    start_time: float | None = None,
    masks: Any = None,
    mask_values: Any = None,
    wavelengths: Any = None,
    skip: frozenset[str] | Sequence[str] = frozenset(),
    **kwargs: Any,
) -> Path:
    """Adapt a change model to a stack without labels and write the adapted checkpoint.

    Args:
        inputs: GeoTIFFs (one per date), a folder, a glob, or an opened ``Stack``.
        output_ckpt: checkpoint to write (loads with ``geochange detect --model``).
        model: starting checkpoint; None = the shipped default model.
        minutes: wall-clock budget of the whole call (default 3: a 512×512 scene on 2 CPU
            cores); more minutes, more steps.
        seed: random seed.
        chip: chip edge in pixels.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        progress: a tqdm progress bar.
        dates: one date per file, as ``open_stack``.
        align: resample every date onto the first date's grid.
        alpha: weight of the adapted parameters against the starting ones (1 = adapted only).
        overwrite: replace an existing ``output_ckpt``.
        start_time: ``time.monotonic()`` at which the budget started (default: now; the CLI
            starts it before importing torch).
        masks, mask_values: cloud / validity masks read as nodata (see ``open_stack``): masked
            dates are left out of the adaptation, never learnt as change.
        wavelengths: band centres in nm (see ``open_stack``).
        skip: stack stages left out (``{"coregister"}`` reads the dates as they are; by default
            whole-date shifts are undone first, as ``detect`` does; a ``Stack`` whose ``shifts``
            are set is used as it is).
        **kwargs: further options of :func:`adapt_network` (batch_size, lr, max_steps, ...).

    Returns:
        The checkpoint path. Its meta holds ``adapted: True``, ``adapted_on`` (stack paths,
        dates and masks), ``base_model``, ``seed``, ``minutes``, ``steps``, ``alpha`` and the settings.

    Raises:
        OutputExistsError: ``output_ckpt`` exists and ``overwrite`` is False.
    """
    t0 = time.monotonic() if start_time is None else start_time
    output_ckpt = Path(output_ckpt)
    if output_ckpt.exists() and not overwrite:
        raise OutputExistsError(f"output {output_ckpt}: exists; pass --overwrite to replace it")
    stack = (
        inputs
        if isinstance(inputs, Stack)
        else open_stack(
            inputs,
            dates=dates,
            align=align,
            masks=masks,
            mask_values=mask_values,
            wavelengths=wavelengths,
        )
    )
    stack, _ = prepare_stack(stack, skip)
    res = adapt_network(
        stack,
        model=model,
        minutes=minutes,
        seed=seed,
        chip=chip,
        device=device,
        progress=progress,
        start_time=t0,
        **kwargs,
    )
    net = interpolate(res.base, res.adapted, alpha)
    bm = res.base_meta
    meta = {
        "name": f"{bm.get('name', 'cnn-lstm')}-adapted",
        "trained_on": f"{bm.get('trained_on', 'unknown')}; adapted without labels on {len(stack.paths)} dates",
        "adapted": True,
        "adapted_on": {
            "inputs": [str(p) for p in stack.paths],
            "dates": [d.isoformat() for d in stack.dates],
            "shape": list(stack.shape),
            "masks": stack.mask_names,
            "wavelengths_nm": list(stack.wavelengths),
            "shifts_px": [list(s) for s in stack.shifts],
        },
        "base_model": str(model) if model is not None else "default",
        "base_model_path": bm.get("path"),
        "base_model_name": bm.get("name"),
        "seed": int(seed),
        "minutes": float(minutes),
        "alpha": float(alpha),
        **res.info,
    }
    save_model(net, output_ckpt, meta)
    logger.info("adapt: wrote %s", output_ckpt)
    return output_ckpt
