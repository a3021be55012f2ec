"""Objects that emerge from their surroundings: a neighbourhood test for the changes the model's
context vetoes, at any size.

The CNN-LSTM's context decoder learned that most change on farmland is not change: a field
harvested, greening up or ploughed changes as a whole. It pays for that with whole new objects
inside such a field: on synthetic validation scenes (seeds 1000-1019, nuisance high, cloud masks
given) it missed 29 % of the pixels of new buildings and 41 % of new roads, among them roofs of 100-400 px with a contrast of 0.1-0.2 in reflectance that the model
gave a probability of 0.02-0.15, while it missed 2 % of clearings.

What tells such an object from a harvest is its neighbourhood. Before the change the object's
pixels look like the field around them; from the change on they differ from it on every date.
A harvest, a green-up or a haze changes the whole field, so a field pixel stays like the rest of
its field. A pixel *emerges* at date ``k`` from its neighbour ``q`` when

- before ``k`` the two are alike: the mean over those dates of the squared difference (mean
  over bands, in scene spreads, :func:`geochange.model.normalize.apply`) is at most ``ALIKE``
  and no date differs by more than ``APART / 2``;
- from ``k`` on they are apart: **every** valid date differs by at least ``APART`` (a cloud,
  a shadow or a wet day that passes does not);
- with at least ``MIN_BEFORE`` valid dates before ``k`` and ``MIN_AFTER`` from ``k`` on (two
  each: with one date after, even on the series' last date, the additions were mostly cloud
  edges).

The neighbours are :data:`DIRECTIONS` directions at each of :data:`RADII` px: far enough that the
middle of a roof up to 20 px across compares with the field around it too (at radii of 3-15 px
the middle of a larger roof has half its neighbours on the roof itself, alike after as before,
and stays below the share). A pixel's **share** at ``k`` is the part of the
neighbours alike before ``k`` that it emerges from, when at least ``MIN_ALIKE`` are alike
(fewer, around clouds or nodata, said too little). A pixel with a share of at least ``SHARE``
is added to the model's result with the probability :data:`PROBABILITY` and, where the model saw
no change, the change date ``k``; nothing the model found is removed. A field pixel stays below
the share: of its alike neighbours, at most the ones across one edge lie in another field.

The constants were chosen on synthetic validation scenes (seeds 1000-1039, nuisance high,
256², 8 dates, 4 bands, as ``detect`` runs them) by the most F1; added pixels are right about
half of the time, hence one modest :data:`PROBABILITY` for all. It runs after
:func:`geochange.stages.micro.rescue` and after :func:`geochange.stages.refine.refine`, which
would smooth its small additions away. The figures are in benchmarks/TUNING.md, held-out ones
in benchmarks/DEFAULT_MODEL.md. Cost: 1.5 s per 512² tile of 8 dates x 4 bands on one core
(about a quarter of the model's), 3 s with 10 dates x 13 bands.

It needs 4 dates (2 before, 2 after). Every step looks at most :data:`REACH` px away, so a tile
read with that much halo gives exactly the whole-scene result.
"""

from __future__ import annotations

import numpy as np

from geochange.stages import Block, Context, Reach
from geochange.tiling import stitched

__all__ = [
    "ALIKE",
    "APART",
    "DIRECTIONS",
    "Emerge",
    "MIN_ALIKE",
    "PROBABILITY",
    "RADII",
    "REACH",
    "SHARE",
    "add",
    "emergence",
    "fit",
    "usable",
]

#: Distances (px) of the neighbours a pixel is compared with, :data:`DIRECTIONS` at each.
RADII = (10, 15, 20)
#: Directions per distance, evenly spread (8: every 45°).
DIRECTIONS = 8
#: Largest mean squared difference (scene spreads², mean over bands) of two alike pixels.
ALIKE = 0.1
#: Smallest squared difference on every date from the change on (and, halved, the largest on
#: any date before it).
APART = 0.4
#: Least valid dates before the change and from it on.
MIN_BEFORE, MIN_AFTER = 2, 2
#: Least neighbours alike before the change for a share to count.
MIN_ALIKE = 8
#: Least share of the alike neighbours a pixel must emerge from to be added.
SHARE = 0.7
#: Probability given to an added pixel (at least the 0.5 threshold; see the module text).
PROBABILITY = 0.55
#: Farthest (px) the test looks.
REACH = max(RADII)
#: Rows of a pair's differences voted on at a time.
VOTE_ROWS = 16


def usable(n_dates: int) -> bool:
    """Whether a stack of ``n_dates`` dates can be tested (2 before a change, 2 from it on)."""
    return n_dates >= MIN_BEFORE + MIN_AFTER


def _offsets() -> list[tuple[int, int]]:
    """Half of the neighbour offsets: the other half are their opposites."""
    out = []
    for r in RADII:
        for a in np.arange(DIRECTIONS // 2) * 2.0 * np.pi / DIRECTIONS:
            out.append((int(round(r * np.sin(a))), int(round(r * np.cos(a)))))
    return out


def emergence(x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's best share of emergence and its date.

    Args:
        x: (t, c, h, w) float32 normalised bands (:func:`geochange.model.normalize.apply`).
        valid: (t, h, w) bool, False where the date is nodata, masked or screened.

    Returns:
        share (h, w) float32 in [0, 1] (0 where no date has ``MIN_ALIKE`` alike neighbours)
        and date (h, w) int16: the first date ``k`` in 1..t-1 from which the pixel differs
        (0 where the share is 0).
    """
    t, _, h, w = x.shape
    if not usable(t):
        return np.zeros((h, w), np.float32), np.zeros((h, w), np.int16)
    r = REACH
    # A pair's difference is known where both pixels lie in the window and are valid; it is
    # NaN elsewhere, as at the edge of the scene.
    emerged = np.zeros((t - 1, h, w), np.float32)
    alike = np.zeros((t - 1, h, w), np.float32)
    c = x.shape[1]
    d = np.empty((t, h + 2 * r, w + 2 * r), np.float32)
    e = np.empty((t - 1, *d.shape[1:]), bool)
    a = np.empty_like(e)
    for dy, dx in _offsets():
        # The window grown by r (rows and columns -r .. h + r): each pixel p against p + o.
        d.fill(np.nan)
        i0, i1, j0, j1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
        known = d[:, r + i0 : r + i1, r + j0 : r + j1]
        known.fill(0.0)
        # The mean over bands of the squared difference, one band at a time (bounded memory).
        for band in range(c):
            sq = x[:, band, i0:i1, j0:j1] - x[:, band, i0 + dy : i1 + dy, j0 + dx : j1 + dx]
            np.square(sq, out=sq)
            known += sq
        known /= c
        known[~(valid[:, i0:i1, j0:j1] & valid[:, i0 + dy : i1 + dy, j0 + dx : j1 + dx])] = np.nan
        # The votes are per pixel: taken a strip of rows at a time (bounded memory).
        for y in range(0, d.shape[1], VOTE_ROWS):
            e[:, y : y + VOTE_ROWS], a[:, y : y + VOTE_ROWS] = _votes(d[:, y : y + VOTE_ROWS])
        # The pair (p, p + o) read from p, and the same pair read from p + o (offset -o).
        emerged += e[:, r : r + h, r : r + w]
        alike += a[:, r : r + h, r : r + w]
        emerged += e[:, r - dy : r - dy + h, r - dx : r - dx + w]
        alike += a[:, r - dy : r - dy + h, r - dx : r - dx + w]
    share = np.where(alike >= MIN_ALIKE, emerged / np.maximum(alike, 1.0), 0.0)
    best = share.argmax(axis=0)
    top = np.take_along_axis(share, best[None], axis=0)[0].astype(np.float32)
    date = np.where(top > 0, best + 1, 0).astype(np.int16)
    return top, date


def _votes(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per split date k = 1..t-1: (emerged, alike before) as bool (t - 1, h, w).

    ``d`` is (t, h, w) squared differences of a pixel pair, NaN where either is not valid.
    """
    ok = np.isfinite(d)
    n = np.cumsum(ok, axis=0, dtype=np.int32)
    n_before, n_after = n[:-1], n[-1:] - n[:-1]
    alike = (n_before >= MIN_BEFORE) & (n_after >= MIN_AFTER)
    del n_after
    total = np.cumsum(np.where(ok, d, np.float32(0.0)), axis=0)
    alike &= total[:-1] / np.maximum(n_before, 1) <= ALIKE
    del total, n, n_before
    alike &= np.maximum.accumulate(np.where(ok, d, np.float32(-np.inf)), axis=0)[:-1] <= APART / 2
    least_after = np.minimum.accumulate(np.where(ok, d, np.float32(np.inf))[::-1], axis=0)[::-1]
    emerged = alike & (least_after[1:] >= APART)
    return emerged, alike


def add(
    x: np.ndarray,
    valid: np.ndarray,
    prob: np.ndarray,
    interval: np.ndarray,
    block: int = 256,
    region: tuple[int, int, int, int] | None = None,
    along: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Add the pixels that emerge from their surroundings to a model's result.

    Args:
        x: (t, c, h, w) float32 normalised bands; valid: (t, h, w) bool (as for the model).
        prob: (h, w) change probability (NaN = nodata); interval: (h, w) interval k in 0..t-2.
        block: larger tiles are tested in windows of this many pixels plus :data:`REACH` of
            halo: bounded memory, the same result.
        region: (y0, y1, x0, x1): test there only (the rest is left as it is); None: all.
        along: a box inside ``region`` (the chunk's core) its windows are cut along.

    Returns:
        New ``prob`` and ``interval``: a pixel with a share of at least :data:`SHARE` that the
        model left below 0.5 gets :data:`PROBABILITY` and the test's interval; all else, NaN
        included, unchanged.
    """
    out_p = np.array(prob, dtype=np.float32)
    out_k = np.array(interval, dtype=np.float32)
    if not usable(x.shape[0]):
        return out_p, out_k
    share, date = stitched(emergence, (x, valid), block, REACH, region, along)
    new = (share >= SHARE) & np.isfinite(out_p) & (out_p < 0.5)
    out_p[new] = PROBABILITY
    out_k[new] = date[new] - 1
    return out_p, out_k


class Emerge:
    """The ``emerge`` stage: :func:`add` of the objects that emerge from their surroundings."""

    name = "emerge"

    def reach(self, n_dates: int) -> Reach:
        # Reads the series REACH px around; the probability at the pixel only.
        return Reach(input=REACH)

    def params(self) -> dict:
        return {"radii": list(RADII), "alike": ALIKE, "apart": APART, "share": SHARE}

    def run(self, block: Block) -> None:
        block.prob, block.interval = add(
            block.x, block.valid, block.prob, block.interval, region=block.region, along=block.core
        )


def fit(sample: np.ndarray, context: Context, name: str = "emerge") -> Emerge | None:
    """None when the stack has too few dates (:func:`usable`)."""
    return Emerge() if usable(sample.shape[0]) else None
