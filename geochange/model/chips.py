"""Training chips cut from a labelled scene (:func:`sample_batch`).

A batch is ``n`` chips (t, c, s, s) from one scene, so it shares (t, c); for the band-agnostic
model a batch may use a random subset of the scene's dates and bands, which varies T and the band
count further. Batch dict: ``x`` (b, t, c, s, s) float32 normalised (``normalize.apply``),
``valid`` (b, t, s, s) bool, ``change`` (b, s, s) uint8 (255 = ignore), ``date_index`` (b, s, s)
long (j in 1..t-1 = change first seen on date j, 0 none, 255 unknown).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import ndimage

from geochange.model.losses import IGNORE
from geochange.model.normalize import apply
from geochange.model.scenes import LabelledScene
from geochange.synth.changes import MICRO_MAX_PX

__all__ = ["rot_flip", "sample_batch"]

logger = logging.getLogger(__name__)


def _subset_labels(
    change: np.ndarray, date_index: np.ndarray, keep_dates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of a date subset: a change first seen on original date j is first seen on the
    first kept date >= j; changes before the first or after the last kept date are no change."""
    j = date_index.astype(np.int64)
    known = (j >= 1) & (j < IGNORE) & (change == 1)
    pos = np.searchsorted(keep_dates, j)  # index of the first kept date >= j
    new_j = np.where(known, pos, 0)
    inside = known & (pos >= 1) & (pos < len(keep_dates))
    new_change = change.copy()
    new_change[known & ~inside] = 0
    new_j = np.where(inside, new_j, np.where(change == 1, IGNORE, 0))
    new_j[known & ~inside] = 0
    return new_change, new_j.astype(np.uint8)


def _dates_ending_on_change(
    scene: LabelledScene, rng: np.random.Generator, max_dates: int | None
) -> np.ndarray | None:
    """Sorted date indices that end on a date k where a change is first seen (k drawn among the
    scene's change dates), with 1 to k earlier dates before it (repeated looks of the state
    before the change); None when the scene has no dated change."""
    j = scene.date_index[scene.change == 1]
    dates = np.unique(j[(j >= 1) & (j < IGNORE)])
    if not dates.size:
        return None
    k = int(rng.choice(dates))
    most = min(k, (max_dates or scene.raw.shape[0]) - 1)
    before = np.sort(rng.choice(k, size=int(rng.integers(1, most + 1)), replace=False))
    return np.append(before, k)


def sample_batch(
    scene: LabelledScene,
    rng: np.random.Generator,
    batch_size: int = 8,
    chip: int = 48,
    change_fraction: float = 0.5,
    max_dates: int | None = None,
    subset_dates: bool = False,
    subset_bands: bool = False,
    mask_clouds: float = 0.0,
    augment: bool = True,
    object_balanced: bool = False,
    hard_fraction: float = 0.0,
    unknown_wavelengths: float = 0.0,
    micro_weight: float = 1.0,
    end_on_change: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Sample one batch of chips from a scene.

    Args:
        scene: the scene.
        rng: random generator (all randomness comes from it).
        batch_size: chips per batch.
        chip: chip edge in pixels (clamped to the scene size).
        change_fraction: share of chips centred on a change pixel (class-balanced sampling).
        max_dates: at most this many dates per batch (a random subset keeping order).
        subset_dates: use a random subset (>= 2) of the dates.
        subset_bands: use a random non-empty subset of the bands (band-agnostic training).
        mask_clouds: probability that the scene's cloud masks are applied as nodata.
        augment: random flips and 90° rotations per chip.
        object_balanced: centre change chips on a random change *object* (8-connected region)
            rather than a random change pixel, so 3-pixel objects are seen as often as fields.
        hard_fraction: share of chips centred on a hard negative (``scene.hard``: unchanged
            pixels that look most changed, e.g. crop green-up, clouds), drawn after the change
            chips; the rest are placed at random.
        unknown_wavelengths: probability that the batch's band wavelengths are withheld (all
            NaN), so a wavelength-aware model also learns to work without them.
        micro_weight: focal-loss weight of the pixels of change objects of at most
            ``MICRO_MAX_PX`` pixels (8-connected), so that 2-9 px changes count.
        end_on_change: probability that the batch's dates end on a date k where a change is
            first seen: dates <= k, with k last and 1 to k earlier looks before it; its change
            chips are then centred on the changes first seen on k. Without it a lone anomaly on
            the last date of a long series is far more often a one-date cloud or shadow than a
            change, and the network learns to doubt last-date changes.

    The batch holds ``x`` (b, t, c, h, w), ``valid`` (b, t, h, w), ``change`` and ``date_index``
    (b, h, w), ``wavelengths`` (b, c) in nm (NaN = unknown), ``clouds`` (b, t, h, w) uint8 (1
    cloud or shadow, 0 clear, 255 unknown: the scene has no cloud masks) and ``weight`` (b, h, w)
    float32.
    """
    t, c, h, w = scene.raw.shape
    keep_t = np.arange(t)
    ending = None
    if end_on_change > 0 and rng.random() < end_on_change:
        ending = _dates_ending_on_change(scene, rng, max_dates)
    if ending is not None:
        keep_t = ending
    elif subset_dates or (max_dates is not None and t > max_dates):
        hi = min(t, max_dates or t)
        n = int(rng.integers(2, hi + 1)) if subset_dates else hi
        keep_t = np.sort(rng.choice(t, size=n, replace=False))
    keep_c = np.arange(c)
    if subset_bands and c > 1:
        n = int(rng.integers(1, c + 1))
        keep_c = np.sort(rng.choice(c, size=n, replace=False))
    change, date_index = scene.change, scene.date_index
    if len(keep_t) != t:
        change, date_index = _subset_labels(change, date_index, keep_t)
    stats = scene.stats[np.ix_(keep_t, keep_c)]
    use_clouds = scene.clouds is not None and rng.random() < mask_clouds
    wl = np.full(len(keep_c), np.nan, np.float32)
    withheld = unknown_wavelengths > 0 and rng.random() < unknown_wavelengths
    if scene.wavelengths is not None and not withheld:
        wl = scene.wavelengths[keep_c].astype(np.float32)

    ch, cw = min(chip, h), min(chip, w)
    pos = np.flatnonzero(change.ravel() == 1)
    hard = scene.hard if hard_fraction > 0 else pos[:0]
    n_objects = 0
    weight = np.ones((h, w), np.float32)
    if (object_balanced or micro_weight != 1.0) and pos.size:
        ids, n_objects = ndimage.label(change == 1, structure=np.ones((3, 3), bool))
        pos_ids = ids.ravel()[pos]  # object id (1..n) of each change pixel
        small = np.bincount(ids.ravel(), minlength=n_objects + 1) <= MICRO_MAX_PX
        small[0] = False  # background
        weight[small[ids]] = micro_weight
    if ending is not None:  # change chips on the changes first seen on the last kept date
        last = date_index.ravel()[pos] == len(keep_t) - 1
        pos = pos[last]
        if n_objects:
            pos_ids = pos_ids[last]
            objects = np.unique(pos_ids)
    xs, vs, cs, ds, cl, ws = [], [], [], [], [], []
    for _ in range(batch_size):
        pool = None  # pixels to centre the chip on (then jittered by up to a quarter chip)
        if pos.size and rng.random() < change_fraction:
            balanced = object_balanced and n_objects
            if balanced and ending is not None:
                pool = pos[pos_ids == objects[rng.integers(objects.size)]]
            elif balanced:
                pool = pos[pos_ids == 1 + int(rng.integers(n_objects))]
            else:
                pool = pos
        elif hard.size and rng.random() < hard_fraction / max(1e-9, 1.0 - change_fraction):
            pool = hard
        if pool is None:
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        else:
            cy, cx = divmod(int(pool[rng.integers(pool.size)]), w)
            y0 = int(np.clip(cy - ch // 2 + rng.integers(-ch // 4, ch // 4 + 1), 0, h - ch))
            x0 = int(np.clip(cx - cw // 2 + rng.integers(-cw // 4, cw // 4 + 1), 0, w - cw))
        win = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        raw = scene.raw[:, :, win[0], win[1]][np.ix_(keep_t, keep_c)]  # a copy
        if use_clouds:
            raw[np.broadcast_to(scene.clouds[keep_t][:, None, win[0], win[1]], raw.shape)] = np.nan
        x, valid = apply(raw, stats)
        lab_c = change[win].copy()
        lab_d = date_index[win].astype(np.int64)
        lab_c[valid.sum(axis=0) < 2] = IGNORE
        if scene.clouds is not None:
            lab_k = scene.clouds[keep_t][:, win[0], win[1]].astype(np.uint8)
        else:
            lab_k = np.full((len(keep_t), ch, cw), IGNORE, np.uint8)
        wt = weight[win]
        if augment:
            k = int(rng.integers(4))
            flip = bool(rng.integers(2))
            x, valid, lab_c, lab_d, lab_k, wt = (
                rot_flip(a, k, flip) for a in (x, valid, lab_c, lab_d, lab_k, wt)
            )
        xs.append(x)
        vs.append(valid)
        cs.append(lab_c)
        ds.append(lab_d)
        cl.append(lab_k)
        ws.append(wt)
    return {
        "x": torch.from_numpy(np.ascontiguousarray(np.stack(xs))),
        "valid": torch.from_numpy(np.ascontiguousarray(np.stack(vs))),
        "change": torch.from_numpy(np.ascontiguousarray(np.stack(cs))),
        "date_index": torch.from_numpy(np.ascontiguousarray(np.stack(ds))),
        "wavelengths": torch.from_numpy(np.ascontiguousarray(np.tile(wl, (batch_size, 1)))),
        "clouds": torch.from_numpy(np.ascontiguousarray(np.stack(cl))),
        "weight": torch.from_numpy(np.ascontiguousarray(np.stack(ws))),
    }


def rot_flip(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """``a`` (..., h, w) turned ``k`` quarter turns, then mirrored left-right when ``flip``."""
    a = np.rot90(a, k, axes=(-2, -1))
    return a[..., ::-1] if flip else a
