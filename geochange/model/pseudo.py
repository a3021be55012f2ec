"""Examples cut from the user's own scene for self-supervised adaptation (numpy only, no torch).

- **no change, with the scene's real nuisance**: real chips; pixels of high change magnitude
  (:func:`change_magnitude` above :func:`ignore_threshold`) are unknown, not taught.
- **change, pasted**: pieces of the same scene pasted from a random date on, with building-,
  road- and blob-like footprints (:func:`footprint`, :func:`paste_changes`), never a piece that
  turns its footprint greener (:func:`red_nir_bands`).

Chips come from a pool of windowed reads of the stack (the whole scene when small) and are
normalised exactly as at inference. The training loop is :mod:`geochange.model.adapt`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from geochange.errors import InputError
from geochange.io.stack import Stack
from geochange.model.chips import rot_flip
from geochange.model.losses import IGNORE
from geochange.model.normalize import apply

__all__ = [
    "FOOTPRINTS",
    "GREENING_NDVI",
    "WHOLE_SCENE_BYTES",
    "ScenePool",
    "Setup",
    "change_magnitude",
    "footprint",
    "ignore_threshold",
    "make_batch",
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


class ScenePool:
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
class Setup:
    stats: np.ndarray  # (t, c, 2)
    threshold: float  # ignore threshold of the change magnitude
    chip: tuple[int, int]
    max_dates: int
    red_nir: tuple[int, int] | None = None  # band indices for the greening rule


def make_batch(
    pool: ScenePool,
    setup: Setup,
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
            rot_flip(a, k, flip) for a in (x, valid, change, date_index, unsure)
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
