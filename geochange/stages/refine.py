"""Edge-aware refinement of the change probability, guided by each pixel's own time series.

The CNN-LSTM judges a pixel from its neighbourhood, so its probability is smooth across an
object's outline: most of its errors on synthetic scenes are rims, one pixel inside or outside
the true outline (validation seeds 1000-1019, masks given: 10 077 of 18 028 wrong pixels lie
within 1 px of it), and isolated specks whose series looks like their neighbours'.
The stack itself knows where an object ends: the pixels of one new roof share one series
(bands over dates), and it differs from the field around it.

:func:`refine` therefore replaces each pixel's probability by the mean over its
``(2 RADIUS + 1)²`` neighbourhood, weighted by how alike the two pixels' series are
(``exp(-d² / 2 SIGMA²)``, ``d²`` the mean over dates and bands of the squared difference of the
normalised values, :func:`geochange.model.normalize.apply`) and by distance (a Gaussian of
width ``RADIUS``), repeated ``ITERATIONS`` times: a joint bilateral filter with the series as
guide, like a mean-field step of a dense CRF. A pixel unlike all its neighbours (a
2-px object of its own) keeps its probability; a speck whose series matches the surrounding
field takes theirs; an outline moves to where the series changes. Pixels with fewer than two
valid dates carry no weight.

``RADIUS``, ``SIGMA`` and ``ITERATIONS`` were chosen on synthetic validation scenes (seeds
1000-1019, nuisance high, 256², 8 dates, 4 bands, run as ``detect`` runs them) by one rule: the
most F1 that keeps micro-change recall (objects <= 9 px) at 0.6. It runs before
:func:`geochange.stages.micro.rescue`, so that the rescued small objects are not smoothed away.
The figures are in benchmarks/TUNING.md, held-out and real-pair ones in benchmarks/README.md.

Every step looks at most :data:`REACH` px away, so a tile read with that much more halo gives
exactly the whole-scene result.
"""

from __future__ import annotations

import numpy as np

from geochange.stages import Block, Context, Reach
from geochange.tiling import stitched

__all__ = ["ITERATIONS", "RADIUS", "REACH", "SIGMA", "Refine", "fit", "refine"]

#: Neighbourhood radius (px): a (2 RADIUS + 1)² window, distance weights a Gaussian this wide.
RADIUS = 2
#: Width of the series-likeness weight, in scene spreads (RMS over dates and bands).
SIGMA = 0.25
#: Passes of the filter.
ITERATIONS = 1
#: Farthest (px) the refinement looks: the halo it adds to a tile.
REACH = RADIUS * ITERATIONS
#: Bands of the series (dates x bands) the pairs' likeness is summed over at a time.
GUIDE_CHUNK = 64


def refine(
    prob: np.ndarray,
    x: np.ndarray,
    valid: np.ndarray,
    *,
    radius: int = RADIUS,
    sigma: float = SIGMA,
    iterations: int = ITERATIONS,
    block: int = 256,
) -> np.ndarray:
    """The change probability smoothed within regions of alike series, sharp across them.

    Args:
        prob: (h, w) change probability (NaN is read as 0 and stays NaN).
        x: (t, c, h, w) float32 normalised bands, nodata filled along time
            (:func:`geochange.model.normalize.apply`).
        valid: (t, h, w) bool, False where the date is nodata, masked or screened.
        radius, sigma, iterations: see :data:`RADIUS`, :data:`SIGMA`, :data:`ITERATIONS`.
        block: larger rasters are refined in windows of this many pixels plus the reach
            (``radius * iterations``) as halo: bounded memory, the same result.

    Returns:
        (h, w) float32 refined probability.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if radius < 1 or iterations < 1:
        return prob.copy()
    return stitched(
        lambda *win: (_refine(*win, radius, sigma, iterations),),
        (prob, x, valid),
        block,
        radius * iterations,
    )[0]


def _refine(
    prob: np.ndarray, x: np.ndarray, valid: np.ndarray, radius: int, sigma: float, iterations: int
) -> np.ndarray:
    """:func:`refine` of one window."""
    h, w = prob.shape
    r = radius
    guide = np.asarray(x, dtype=np.float32).reshape(-1, h, w)
    usable = (valid.sum(axis=0) >= 2).astype(np.float32)
    p = np.where(np.isfinite(prob), prob, 0.0).astype(np.float32)
    # Edge padding: outside the window a pixel's neighbour is the nearest pixel inside it.
    # Padded by 2r, so that the likeness of p and p + o, taken over the window grown by r,
    # also gives that of p and p - o: each pair of offsets costs one pass over the bands.
    u_pad = np.pad(usable, r, mode="edge")
    halves = [(dy, dx) for dy in range(0, r + 1) for dx in range(-r, r + 1) if (dy, dx) > (0, 0)]
    # The sum over bands and dates of the squared difference of each pair, a few dates at a
    # time (memory does not grow with t), summed in the same order as one sum over all.
    sums: dict[tuple[int, int], np.ndarray] = {}
    for start in range(0, guide.shape[0], GUIDE_CHUNK):
        g_pad = np.pad(
            guide[start : start + GUIDE_CHUNK], ((0, 0), (2 * r, 2 * r), (2 * r, 2 * r)), "edge"
        )
        grown = g_pad[:, r : r + h + 2 * r, r : r + w + 2 * r]  # the window grown by r
        for dy, dx in halves:
            other = g_pad[:, r + dy : r + dy + h + 2 * r, r + dx : r + dx + w + 2 * r]
            sq = (grown - other) ** 2
            if start:
                sq = np.concatenate([sums[(dy, dx)][None], sq])
            sums[(dy, dx)] = np.add.reduce(sq, axis=0)
    likeness = {(0, 0): np.ones((h, w), np.float32)}
    for dy, dx in halves:
        like = np.exp(-(sums[(dy, dx)] / guide.shape[0]) / (2.0 * sigma * sigma))
        likeness[(dy, dx)] = like[r : r + h, r : r + w]
        likeness[(-dy, -dx)] = like[r - dy : r - dy + h, r - dx : r - dx + w]
    offsets = sorted(likeness)
    weights = np.empty((len(offsets), h, w), np.float32)
    for n, (dy, dx) in enumerate(offsets):
        near = np.exp(-(dy * dy + dx * dx) / (2.0 * r * r))
        weights[n] = likeness[(dy, dx)] * near * u_pad[r + dy : r + dy + h, r + dx : r + dx + w]
    total = weights.sum(axis=0)
    for _ in range(iterations):
        p_pad = np.pad(p, r, mode="edge")
        acc = np.zeros_like(p)
        for n, (dy, dx) in enumerate(offsets):
            acc += weights[n] * p_pad[r + dy : r + dy + h, r + dx : r + dx + w]
        # A pixel without weight (all its neighbours nodata) keeps its own value.
        p = np.where(total > 0, acc / np.maximum(total, 1e-12), p).astype(np.float32)
    return np.where(np.isfinite(prob), p, np.nan).astype(np.float32)


class Refine:
    """The ``refine`` stage: :func:`refine` of the detector's probability."""

    name = "refine"

    def reach(self, n_dates: int) -> Reach:
        # Reads the model's probability and the series REACH px around each pixel.
        return Reach(input=REACH, result=REACH)

    def params(self) -> dict:
        return {"radius": RADIUS, "sigma": SIGMA, "iterations": ITERATIONS}

    def run(self, block: Block) -> None:
        block.prob = refine(block.prob, block.x, block.valid)


def fit(sample: np.ndarray, context: Context, name: str = "refine") -> Refine:
    """The stage has no scene-wide parameters."""
    return Refine()
