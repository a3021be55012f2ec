"""Small persistent changes: a per-pixel test for the micro-changes the model's context vetoes.

The CNN-LSTM judges a pixel with a 15-px context decoder over its states. That decoder learned,
rightly, that most "change" on vegetation is not change (a field harvested, a shadow, a crop
greening up), and it vetoes a 2-4 px object there even when the pixel's own interval head sees a
clean step that lasts for the rest of the series (on validation scenes the interval evidence of
missed micro objects reached the level of detected ones; the context term stayed at the
background's). This module finds exactly those objects with a plain, explainable test and adds
them to the model's result (:func:`rescue`); it never removes anything the model found.

A pixel is a *small persistent change* at date ``k`` when, per date and band, its **local
contrast** (the value minus the mean of a ring of 3-9 px around it, which cancels illumination,
haze, phenology and anything else that moves a whole field) makes a step at ``k``:

- the step ``s`` = mean contrast after ``k`` minus mean contrast before it (vector over bands),
- **every** valid date after ``k`` shows at least ``CONSISTENCY`` of the step, along its direction
  (a cloud or a shadow on one date does not last; that date is also read as nodata by the cloud
  screen or the user's masks),
- **every** valid date before ``k`` stays within ``1 - CONSISTENCY`` of the step of the mean
  before (the object was not there, then there; not a one-date speck, not an object that comes
  and goes),
- at least ``MIN_BEFORE`` valid dates before ``k`` and two after it; one is enough only when
  ``k`` is the series' last date (a one-date blip on the last *valid* date, the later ones
  masked, is not a lasting step: on validation scenes these were most of the false objects
  next to clouds).

Means, not medians: an outlying date that no mask caught pulls the mean, and then the
every-date rules reject the pixel rather than accept it; and running sums give all splits in
O(t) (medians were 3x slower and scored the same on validation scenes).

The pixel's score is the step's size, cut down where the consistency is short of the rule (in
the units of the scene statistics: per date and band, median and spread of the scene). Pixels
scoring above ``LOW`` form objects (8-connected); an object is added when it has ``MIN_PIXELS``
to ``MAX_PIXELS`` pixels (the rest is the model's business: fields, roads, buildings) and its
best pixel scores above ``HIGH`` (hysteresis: the object's faint edge pixels come with its
core), and it stands alone: at most ``BUSY_SHARE`` of the ``BUSY_WINDOW``-px square around it
lies in small objects (groups of at most ``MAX_PIXELS`` pixels above ``LOW``, whatever their
core; a large change nearby does not count). Between two acquisitions of a city at 10 m, small
steps are everywhere (texture, shadows cast from another sun angle, cars, a roof retiled):
there the test found 20-40 objects per 10 000 px, of which 1-4 % were labelled change, and on
real pairs made into series the stage cost OSCD cities up to 0.13 F1 (Paris, the change on the
last date); a micro-change in open land or beside a field that changed as a whole is a lone
step. The share was chosen on those real series against the micro-change recall of held-out
synthetic scenes (seeds 5100-5109: 0.619 without the rule, 0.602 with it; counting every pixel
above ``LOW`` instead takes objects beside a large change for texture); the current figures
are in benchmarks/SERIES_REAL.md and benchmarks/DEFAULT_MODEL.md.

An added pixel gets the probability ``sigmoid(best - HIGH)`` (at least 0.5) and, where the model
saw no change, the change date ``k``.

The rescue needs 3 dates (2 before, 1 after); with 2 dates a step is any difference and nothing
tells a small change from noise. All steps look at most :data:`REACH` px away, so a tile read
with that much halo gives exactly the whole-scene result.

``HIGH`` and ``LOW`` were chosen on synthetic validation scenes (seeds 1000-1039, 256², 8
dates, 4 bands, run as ``detect`` runs them) by one rule: the most micro-change recall for at
most 0.01 of pixel F1 at every nuisance level, with :mod:`geochange.stages.emerge` running after
the rescue (it finds some of the same objects, which lets ``HIGH`` be stricter); the figures
are in benchmarks/TUNING.md, held-out ones in benchmarks/DEFAULT_MODEL.md. Cost: about a fifth
of the model's own CPU time on a 512-px chunk of 8 dates and 13 bands.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from geochange.stages import Block, Context, Reach
from geochange.tiling import stitched

__all__ = [
    "BUSY_SHARE",
    "BUSY_WINDOW",
    "HIGH",
    "LOW",
    "MAX_PIXELS",
    "MIN_PIXELS",
    "REACH",
    "Micro",
    "fit",
    "rescue",
    "step_score",
    "usable",
]

#: Inner and outer width (px) of the ring whose mean a pixel's local contrast is taken against.
RING = (3, 9)
#: Share of the step that every date after the change must show (and before it, must not).
CONSISTENCY = 0.5
#: Least valid dates before and after the change, and after a change on the series' last date.
MIN_BEFORE, MIN_AFTER, MIN_AFTER_LAST = 2, 2, 1
#: Object core and edge scores (scene spreads) and the largest object added (pixels).
HIGH, LOW, MAX_PIXELS = 2.5, 1.3, 12
#: Smallest object added (pixels): one pixel alone is left out (residual misregistration, noise).
MIN_PIXELS = 2
#: An object is added only where at most ``BUSY_SHARE`` of the pixels in the ``BUSY_WINDOW``-px
#: square around it (on average over the object) belong to small objects (pixels above ``LOW``
#: in groups of at most ``MAX_PIXELS``): where small steps are everywhere (a city's texture
#: between two acquisitions, shadows cast from another sun angle) one more tells nothing.
BUSY_WINDOW, BUSY_SHARE = 31, 0.03
#: Farthest (px) the test looks: the ring, an object's extent for its size and core, and the
#: square around it that tells whether it is one of many.
REACH = RING[1] // 2 + MAX_PIXELS + 1 + BUSY_WINDOW // 2


def usable(n_dates: int) -> bool:
    """Whether a stack of ``n_dates`` dates can be tested (2 before a change, 1 after)."""
    return n_dates >= MIN_BEFORE + MIN_AFTER_LAST


def _ring_mean(v: np.ndarray) -> np.ndarray:
    """Mean of the ring between the inner and outer square of :data:`RING` around each pixel."""
    inner, outer = RING
    s_out = ndimage.uniform_filter(v, outer, mode="nearest") * outer**2
    s_in = ndimage.uniform_filter(v, inner, mode="nearest") * inner**2
    return (s_out - s_in) / (outer**2 - inner**2)


def local_contrast(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(t, c, h, w) each date and band minus its ring mean; 0 where the date is not valid.

    Invalid pixels take the pixel's mean over its valid dates before the ring means are taken,
    so a cloud mask does not leave holes in its neighbours' rings.
    """
    invalid = np.broadcast_to(~valid[:, None], x.shape)
    y = np.where(invalid, np.float32(0.0), x).astype(np.float32, copy=False)
    fill = y.sum(axis=0) / np.maximum(valid.sum(axis=0), 1)[None]  # (c, h, w) mean valid value
    # Ring means in float64, one date at a time (a whole float64 copy would double memory).
    for i in range(y.shape[0]):
        day = np.where(invalid[i], fill, y[i])
        for j in range(y.shape[1]):
            y[i, j] = day[j] - _ring_mean(day[j])
    y[invalid] = 0.0
    return y


def step_score(x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score of the best persistent local step of every pixel, and its date.

    Args:
        x: (t, c, h, w) float32 normalised bands (:func:`geochange.model.normalize.apply`).
        valid: (t, h, w) bool, False where the date is nodata, masked or screened.

    Returns:
        score (h, w) float32 >= 0 (scene spreads; 0 where no date can hold a step) and date
        (h, w) int16: the first date ``k`` in 1..t-1 that shows the step (0 where score is 0).
    """
    t, _, h, w = x.shape
    loc = local_contrast(x, valid)
    # Means before and after every date from running sums: O(t) for all t - 1 splits, one
    # (c, h, w) sum at a time (memory does not grow with t).
    before = loc[0].copy()  # the sum of the dates before k
    everything = before.copy()
    for i in range(1, t):
        everything += loc[i]
    n = np.cumsum(valid, axis=0).astype(np.float32)  # (t, h, w)
    best = np.zeros((h, w), np.float32)
    when = np.zeros((h, w), np.int16)
    c = CONSISTENCY
    for k in range(1, t):
        if k > 1:
            before += loc[k - 1]
        n_b, n_a = n[k - 1], n[-1] - n[k - 1]
        # One date after the change is enough only on the series' last date: a one-date blip
        # on the last *valid* date (the dates after it masked) must not pass for a lasting step.
        ok = (n_b >= MIN_BEFORE) & (n_a >= (MIN_AFTER_LAST if k == t - 1 else MIN_AFTER))
        if not ok.any():
            continue
        b = before / np.maximum(n_b, 1.0)  # (c, h, w)
        s = (everything - before) / np.maximum(n_a, 1.0) - b
        size = np.sqrt((s * s).sum(axis=0))
        u = s / np.maximum(size, 1e-9)
        # Every date's contrast along the step's direction, from the mean before.
        along = np.einsum("tchw,chw->thw", loc, u) - np.einsum("chw,chw->hw", b, u)[None]
        least_after = np.where(valid[k:], along[k:], np.inf).min(axis=0)
        most_before = np.where(valid[:k], np.abs(along[:k]), 0.0).max(axis=0)
        score = np.minimum(size, np.minimum(least_after / c, (size - most_before) / (1 - c)))
        score = np.where(ok, np.maximum(score, 0.0), 0.0)
        better = score > best
        best[better] = score[better]
        when[better] = k
    return best, when


def rescue(
    x: np.ndarray,
    valid: np.ndarray,
    prob: np.ndarray,
    interval: np.ndarray,
    block: int = 256,
    region: tuple[int, int, int, int] | None = None,
    along: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Add small persistent changes to a model's probability and interval rasters.

    Args:
        x: (t, c, h, w) float32 normalised bands; valid: (t, h, w) bool (as for the model).
        prob: (h, w) change probability (NaN = nodata); interval: (h, w) interval k in 0..t-2.
        block: larger tiles are tested in windows of this many pixels plus :data:`REACH` of
            halo, which bounds memory (a few (t, c) stacks of the window) and gives exactly
            the same result.
        region: (y0, y1, x0, x1): test there only (the rest is left as it is); None: all.
        along: a box inside ``region`` (the chunk's core) its windows are cut along.

    Returns:
        New ``prob`` and ``interval``: an added object's pixels get ``max(prob, sigmoid(best -
        HIGH))`` and, where the model said no change, the test's interval; all else unchanged.
    """
    out_p = np.array(prob, dtype=np.float32)
    out_k = np.array(interval, dtype=np.float32)
    if not usable(x.shape[0]):
        return out_p, out_k
    p_obj, when = stitched(_objects, (x, valid), block, REACH, region, along)
    added = (p_obj > 0) & np.isfinite(out_p)
    new = added & (out_p < 0.5)
    out_k[new] = when[new] - 1
    out_p[added] = np.maximum(out_p[added], p_obj[added])
    return out_p, out_k


def _objects(x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The objects :func:`rescue` adds in one window: each of their pixels' probability
    ``sigmoid(best - HIGH)`` ((h, w) float32, 0 elsewhere) and every pixel's step date."""
    score, when = step_score(x, valid)
    p_obj = np.zeros(score.shape, np.float32)
    objects, n = ndimage.label(score > LOW, structure=np.ones((3, 3), bool))
    if n == 0:
        return p_obj, when
    ids = np.arange(1, n + 1)
    size = ndimage.sum_labels(np.ones_like(score), objects, ids)
    top = ndimage.maximum(score, objects, ids)
    keep = (size >= MIN_PIXELS) & (size <= MAX_PIXELS) & (top > HIGH)
    # A small step where such steps are common around it is texture, not an object: the share
    # of the square around it covered by small objects (a large change nearby does not count).
    small = np.zeros(n + 1, np.float32)
    small[1:] = size <= MAX_PIXELS
    busy = ndimage.uniform_filter(small[objects], BUSY_WINDOW, mode="nearest")
    keep &= ndimage.mean(busy, objects, ids) <= BUSY_SHARE
    by_object = np.zeros(n + 1, np.float32)
    by_object[1:] = np.where(keep, 1.0 / (1.0 + np.exp(-(top - HIGH))), 0.0)
    return by_object[objects], when


class Micro:
    """The ``micro`` stage: :func:`rescue` of small persistent changes."""

    name = "micro"

    def reach(self, n_dates: int) -> Reach:
        # Reads the series REACH px around; the probability at the pixel only.
        return Reach(input=REACH)

    def params(self) -> dict:
        return {
            "low": LOW,
            "high": HIGH,
            "min_pixels": MIN_PIXELS,
            "max_pixels": MAX_PIXELS,
            "busy_window": BUSY_WINDOW,
            "busy_share": BUSY_SHARE,
        }

    def run(self, block: Block) -> None:
        block.prob, block.interval = rescue(
            block.x, block.valid, block.prob, block.interval, region=block.region, along=block.core
        )


def fit(sample: np.ndarray, context: Context, name: str = "micro") -> Micro | None:
    """None when the stack has too few dates (:func:`usable`)."""
    return Micro() if usable(sample.shape[0]) else None
