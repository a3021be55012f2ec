"""Classical change detectors (CVA, IR-MAD, image differencing) with the detector interface.

Every detector here is per pixel (``halo == 0``) and follows the contract of ``docs/DESIGN.md``:
``detector(tile)`` takes a numpy tile ``(t, c, h, w)`` float32 with NaN = nodata and returns
``(2, h, w)`` float32: ``[change probability in [0, 1], most likely interval k in 0 … T-2]``, both
NaN where the pixel has fewer than two valid dates.

Scene-wide parameters are fitted ONCE by :func:`make_baseline` from a scene sample ``(t, c, n)``
(``io.read.read_sample``) and stored on the detector as numpy arrays, so a chunk sees exactly what
the whole scene sees and the output has no seams.

Common steps, for every method:

1. **Standardise** each date and band with robust scene statistics from the sample:
   ``z = (x - median) / IQR``. A gain/offset change per band and date (illumination, atmosphere)
   is removed exactly when the sample represents the scene.
2. **Fill nodata along time**: a date that is nodata at a pixel takes the standardised values of the
   last valid date before it (the first valid date for leading gaps). An interval ``k`` (date k to
   date k+1) is *observed* at a pixel only when date ``k+1`` is valid there and some date ``≤ k``
   is; the score of an unobserved interval is 0, so a nodata date never creates change. A change
   across a gap is reported at the interval ending on the first valid date that shows it.
3. **Score** each consecutive interval, take the largest score and its interval index.
4. **Probability** ``p = s / (s + threshold)``: the method's own threshold lands exactly on
   ``p = 0.5`` (detect thresholds at 0.5 as for the model).

Methods:

- ``cva``: change vector analysis, ``s = ||z_{k+1} - z_k||_2`` over bands; threshold = Otsu on
  the per-pixel maximum score of the sample, guarded for unimodal histograms: never below
  ``median + 3·1.4826·MAD`` of those scores (with no change in a scene, Otsu alone would split the
  noise and mark a large share of the pixels).
- ``diff``: image differencing, ``s = mean_b |z_{k+1} - z_k|``; threshold = mean + 2σ of the
  per-pixel maximum score of the sample (the classic rule).
- ``irmad``: iteratively reweighted multivariate alteration detection (Nielsen 2007), fitted for
  every consecutive date pair on the sample pixels where that interval is observed (T > 2: one
  transform per interval, since illumination differs between every pair); the score is the
  chi-square statistic of the robustly standardised MAD variates (``c`` degrees of freedom under
  no change, see :func:`irmad`); threshold = the chi-square quantile at ``p = 0.99`` per interval.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from scipy import stats as _stats

from geochange.errors import InputError
from geochange.robust import MAD_TO_SIGMA, mad_sigma
from geochange.stages import Block, Context, Reach

__all__ = [
    "CVA",
    "IRMAD",
    "Diff",
    "IRMADFit",
    "irmad",
    "fit",
    "make_baseline",
    "otsu_threshold",
]

log = logging.getLogger(__name__)

Method = Literal["cva", "irmad", "diff"]

#: Smallest threshold in standardised units (IQR of the scene): below it nothing is change.
_MIN_THRESHOLD = 1e-3
#: Pixels valid on all dates needed to standardise every date on the same pixels.
_MIN_COMMON = 1000
#: Chi-square quantile used as the IR-MAD threshold.
IRMAD_P = 0.99


# --------------------------------------------------------------------------------------------
# Thresholds and IR-MAD
# --------------------------------------------------------------------------------------------


def otsu_threshold(values: np.ndarray, bins: int = 1024) -> float:
    """Otsu's threshold of a set of values (non-finite values are ignored).

    Args:
        values: any shape, any real dtype.
        bins: histogram bins over ``[min, max]``.

    Returns:
        The value ``thr`` that maximises the between-class variance of ``values <= thr`` and
        ``values > thr`` (the middle of the maximising range when empty bins make it flat);
        the single value when all values are equal.

    Raises:
        InputError: when there is no finite value.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InputError(
            "otsu_threshold: found no finite value; expected at least one; "
            "fix: check that the sample has pixels with two valid dates."
        )
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    between[w1 == 0] = -1.0  # the split must leave something above the threshold
    # Empty bins between two modes make a plateau of equal variance: take its middle.
    top = np.flatnonzero(between >= between.max() * (1 - 1e-12))
    return float(0.5 * (edges[top[0] + 1] + edges[top[-1] + 1]))


class IRMADFit(NamedTuple):
    """Result of :func:`irmad` for one date pair; ``c`` bands, ``n`` pixels.

    Attributes:
        weights: (n,) no-change probability of each pixel at the last iteration.
        a: (c, c) canonical transform of the first date; column i gives canonical variate i.
        b: (c, c) canonical transform of the second date.
        rho: (c,) canonical correlations, descending.
        mean0: (c,) weighted mean of the first date.
        mean1: (c,) weighted mean of the second date.
        center: (c,) median of each MAD variate.
        sigma: (c,) robust standard deviation of each MAD variate (1.4826 · median absolute
            deviation).
        iterations: iterations run.
    """

    weights: np.ndarray | None
    a: np.ndarray
    b: np.ndarray
    rho: np.ndarray | None
    mean0: np.ndarray
    mean1: np.ndarray
    center: np.ndarray
    sigma: np.ndarray
    iterations: int


def _inv_sqrt(m: np.ndarray) -> np.ndarray:
    """Inverse square root of a symmetric positive (semi-)definite matrix, ridge-regularised."""
    vals, vecs = np.linalg.eigh(m)
    floor = 1e-8 * max(float(vals.max()), 1e-12)
    return (vecs / np.sqrt(np.maximum(vals, floor))) @ vecs.T


def _mad_chi2(x0: np.ndarray, x1: np.ndarray, fit: IRMADFit) -> np.ndarray:
    """Chi-square statistic of the standardised MAD variates; x0, x1 (c, ...) → (...)."""
    c = x0.shape[0]
    d0 = x0.reshape(c, -1) - fit.mean0[:, None]
    d1 = x1.reshape(c, -1) - fit.mean1[:, None]
    mad = fit.a.T @ d0 - fit.b.T @ d1 - fit.center[:, None]
    z = np.sum((mad / fit.sigma[:, None]) ** 2, axis=0)
    return z.reshape(x0.shape[1:])


def irmad(x0: np.ndarray, x1: np.ndarray, max_iter: int = 30, tol: float = 1e-4) -> IRMADFit:
    """Iteratively reweighted MAD transformation of one date pair (Nielsen 2007).

    Canonical correlation analysis of the two dates, computed as the SVD of the whitened cross
    covariance; the MAD variates ``a_iᵀx0 - b_iᵀx1`` are standardised and their sum of squares
    ``Z`` is chi-square with ``c`` degrees of freedom on unchanged pixels. Each iteration weights
    every pixel by its no-change probability ``P(χ²_c > Z)`` and refits the weighted CCA, until
    the canonical correlations move less than ``tol``.

    One deviation from Nielsen (2007): each MAD variate is standardised by its robust scale
    (median, 1.4826 · median absolute deviation) rather than by the weighted standard deviation
    ``sqrt(2(1-ρ))``. With chi-square weights the weighted variance underestimates the variance
    of unchanged pixels (to 62.5 % for c = 4), so ``Z`` drifts above its χ² law from one iteration
    to the next and the χ² threshold would flag a large share of unchanged pixels (about half of
    them on a scene without change). The robust scale is unbiased for unchanged Gaussian pixels
    and resists up to half of the pixels being change.

    The result is invariant to any affine transform of either date per band (gain/offset).

    Args:
        x0: (c, n) first date, finite values.
        x1: (c, n) second date, finite values.
        max_iter: maximum number of reweighting iterations.
        tol: convergence tolerance on the canonical correlations.

    Returns:
        An :class:`IRMADFit`.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    x1 = np.asarray(x1, dtype=np.float64)
    c, n = x0.shape
    if x1.shape != (c, n):
        raise InputError(
            f"irmad: found x0 {x0.shape} and x1 {x1.shape}; expected equal (c, n) shapes; "
            "fix: pass the same bands and pixels of both dates."
        )
    if n < 2 * c + 2:
        raise InputError(
            f"irmad: found {n} pixels for {c} bands; expected at least {2 * c + 2}; "
            "fix: use a larger sample."
        )
    w = np.ones(n)
    rho_old = np.full(c, np.inf)
    fit: IRMADFit | None = None
    for it in range(1, max_iter + 1):
        ws = w.sum()
        m0 = x0 @ w / ws
        m1 = x1 @ w / ws
        d0 = x0 - m0[:, None]
        d1 = x1 - m1[:, None]
        s00 = (d0 * w) @ d0.T / ws
        s11 = (d1 * w) @ d1.T / ws
        s01 = (d0 * w) @ d1.T / ws
        i0 = _inv_sqrt(s00)
        i1 = _inv_sqrt(s11)
        u, rho, vt = np.linalg.svd(i0 @ s01 @ i1)
        a = i0 @ u
        b = i1 @ vt.T
        mad = a.T @ d0 - b.T @ d1
        center = np.median(mad, axis=1)
        dev = mad - center[:, None]
        # Identical dates (rho = 1) give zero spread: floor it (values are standardised).
        sigma = np.maximum(mad_sigma(dev, axis=1), 1e-3)
        fit = IRMADFit(w, a, b, np.clip(rho, 0.0, 1.0), m0, m1, center, sigma, it)
        z = np.sum((dev / sigma[:, None]) ** 2, axis=0)
        w = _stats.chi2.sf(z, c)
        if np.max(np.abs(rho - rho_old)) < tol:
            break
        rho_old = rho
    assert fit is not None
    log.debug("irmad: %d iterations, rho=%s", fit.iterations, np.round(fit.rho, 4))
    return fit


# --------------------------------------------------------------------------------------------
# Shared per-pixel machinery
# --------------------------------------------------------------------------------------------


def _robust_stats(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-date, per-band median and IQR of a sample (t, c, n) → two (t, c) float64 arrays.

    The statistics of every date come from the same pixels, those valid on all dates, when
    there are enough of them (``_MIN_COMMON``): a cloud on one date would otherwise change that
    date's population, shift its median and create change on every unchanged pixel. Otherwise
    each date uses its own valid pixels.
    """
    t, c, n = sample.shape
    valid = np.all(np.isfinite(sample), axis=1)  # (t, n)
    common = np.all(valid, axis=0)
    if common.sum() >= min(_MIN_COMMON, max(n // 10, 1)):
        valid = np.broadcast_to(common, valid.shape)
    else:
        log.warning(
            "only %d sample pixels are valid on all %d dates; standardising each date on its "
            "own valid pixels",
            int(common.sum()),
            t,
        )
    center = np.zeros((t, c))
    scale = np.ones((t, c))
    for i in range(t):
        v = sample[i][:, valid[i]].astype(np.float64)
        if v.shape[1] == 0:
            log.warning("date %d has no valid pixel in the scene sample; using pooled stats", i)
            v = sample.transpose(1, 0, 2).reshape(c, -1).astype(np.float64)
            v = v[:, np.all(np.isfinite(v), axis=0)]
            if v.shape[1] == 0:
                raise InputError(
                    "sample: found no valid pixel on any date; expected a scene sample with data; "
                    "fix: check the nodata value and the input files."
                )
        q25, q50, q75 = np.percentile(v, [25, 50, 75], axis=1)
        iqr = q75 - q25
        std = v.std(axis=1)
        # A band with a zero IQR (mostly constant) falls back to its std, then to 1.
        iqr = np.where(iqr > 0, iqr, np.where(std > 0, std, 1.0))
        center[i], scale[i] = q50, iqr
    return center, scale


def _prepare(
    block: np.ndarray, center: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise and fill a block (t, c, ...) along time.

    Returns:
        z: (t, c, ...) float32 standardised values, nodata dates filled from the last valid date
            (leading gaps from the first valid date); pixels with no valid date stay NaN.
        observed: (t-1, ...) bool, interval k observed (date k+1 valid, a valid date ≤ k).
        n_valid: (...) int, number of valid dates.
    """
    t, c = block.shape[:2]
    extra = (1,) * (block.ndim - 2)
    # float32 keeps a tile's working copies small (values are O(1) once standardised).
    ctr = center.reshape(t, c, *extra).astype(np.float32)
    scl = scale.reshape(t, c, *extra).astype(np.float32)
    z = (block.astype(np.float32, copy=False) - ctr) / scl
    valid = np.all(np.isfinite(z), axis=1)  # (t, ...)
    # Forward fill: index of the last valid date at or before each date.
    idx = np.where(valid, np.arange(t).reshape(t, *extra), -1)
    last = np.maximum.accumulate(idx, axis=0)
    first = np.argmax(valid, axis=0)  # first valid date (0 when none)
    src = np.where(last >= 0, last, first[None])
    z = np.take_along_axis(z, np.broadcast_to(src[:, None], z.shape), axis=0)
    observed = valid[1:] & (last[:-1] >= 0)
    return z, observed, valid.sum(axis=0)


def _check_tile(tile: np.ndarray, center: np.ndarray, name: str) -> None:
    t, c = center.shape
    if tile.ndim != 4 or tile.shape[:2] != (t, c):
        raise InputError(
            f"{name} detector: found a tile of shape {tile.shape}; expected (t={t}, c={c}, h, w) "
            "as in the scene sample it was fitted on; fix: fit the detector on a sample of the "
            "same stack (make_baseline(method, read_sample(stack)))."
        )


def _finish(
    scores: np.ndarray, observed: np.ndarray, n_valid: np.ndarray, thr: float
) -> np.ndarray:
    """(T-1, ...) interval scores → (2, ...) float32 [prob, interval]."""
    s = np.where(observed, np.nan_to_num(scores, nan=0.0), -1.0)
    k = np.argmax(s, axis=0)
    best = np.maximum(np.take_along_axis(s, k[None], axis=0)[0], 0.0)
    prob = np.clip(best / (best + thr), 0.0, 1.0)
    bad = n_valid < 2
    out = np.stack([np.where(bad, np.nan, prob), np.where(bad, np.nan, k)]).astype(np.float32)
    return out


def _sample_block(sample: np.ndarray) -> np.ndarray:
    if sample.ndim != 3 or sample.shape[0] < 2:
        raise InputError(
            f"sample: found shape {sample.shape}; expected (t >= 2, c, n) with at least two "
            "dates; fix: pass read_sample(stack) of a stack with two or more dates."
        )
    return sample


# --------------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------------


@dataclass
class _Standardised:
    """Base of the per-pixel detectors: robust per-date, per-band scene statistics."""

    center: np.ndarray  # (t, c) median per date and band, source units
    scale: np.ndarray  # (t, c) IQR per date and band, source units
    threshold: float  # score at which p = 0.5

    halo = 0  # per-pixel methods read no neighbours
    name = ""  # the detector's registry name, set by each method

    def reach(self, n_dates: int) -> Reach:
        return Reach(input=0)

    def params(self) -> dict:
        return {"threshold": round(float(self.threshold), 6)}

    def run(self, block: Block) -> None:
        block.prob, block.interval = self(block.tile)

    def _scores(self, z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def scores(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interval scores of a block (t, c, ...) → (scores (T-1, ...), observed, n_valid)."""
        z, observed, n_valid = _prepare(block, self.center, self.scale)
        return self._scores(z), observed, n_valid

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """Tile (t, c, h, w) float32 NaN-nodata → (2, h, w) float32 [prob, interval]."""
        _check_tile(tile, self.center, type(self).__name__)
        s, observed, n_valid = self.scores(tile)
        return _finish(s, observed, n_valid, self.threshold)


@dataclass
class CVA(_Standardised):
    """Change vector analysis: magnitude of the standardised difference vector, Otsu threshold."""

    name = "cva"

    def _scores(self, z: np.ndarray) -> np.ndarray:
        return np.sqrt(np.sum((z[1:] - z[:-1]) ** 2, axis=1))


@dataclass
class Diff(_Standardised):
    """Image differencing: mean absolute standardised difference, threshold mean + 2σ."""

    name = "diff"

    def _scores(self, z: np.ndarray) -> np.ndarray:
        return np.mean(np.abs(z[1:] - z[:-1]), axis=1)


@dataclass
class IRMAD(_Standardised):
    """IR-MAD chi-square statistic per consecutive date pair, chi-square threshold (p = 0.99).

    Extra attributes, one entry per interval k (date k → k+1), all on standardised values:
    ``a``, ``b`` (T-1, c, c) canonical transforms, ``mean0``, ``mean1``, ``mad_center``,
    ``sigma`` (T-1, c) (see :class:`IRMADFit`).
    """

    a: np.ndarray | None = None
    b: np.ndarray | None = None
    mean0: np.ndarray | None = None
    mean1: np.ndarray | None = None
    mad_center: np.ndarray | None = None
    sigma: np.ndarray | None = None

    name = "irmad"

    def _scores(self, z: np.ndarray) -> np.ndarray:
        out = np.empty((z.shape[0] - 1, *z.shape[2:]))
        for k in range(z.shape[0] - 1):
            fit = IRMADFit(None, self.a[k], self.b[k], None, self.mean0[k], self.mean1[k],
                           self.mad_center[k], self.sigma[k], 0)  # fmt: skip
            x0 = np.nan_to_num(z[k])
            x1 = np.nan_to_num(z[k + 1])
            out[k] = _mad_chi2(x0, x1, fit)
        return out


def _per_pixel_max(det: _Standardised, sample: np.ndarray) -> np.ndarray:
    """Per-pixel maximum observed score of the sample (pixels with ≥ 2 valid dates)."""
    s, observed, n_valid = det.scores(sample)
    s = np.where(observed, s, 0.0).max(axis=0)
    return s[n_valid >= 2]


def make_baseline(method: Method, sample: np.ndarray) -> CVA | IRMAD | Diff:
    """Fit a classical detector's scene-wide parameters once, from a scene sample.

    Args:
        method: ``"cva"``, ``"irmad"`` or ``"diff"`` (see the module docstring).
        sample: (t, c, n) float32 decimated read of the whole scene, NaN = nodata
            (``io.read.read_sample``).

    Returns:
        A picklable detector with ``.halo == 0`` and ``__call__(tile (t, c, h, w)) -> (2, h, w)``.
    """
    sample = _sample_block(np.asarray(sample))
    center, scale = _robust_stats(sample)
    t, c, _ = sample.shape
    if method == "cva":
        det: _Standardised = CVA(center, scale, 1.0)
        scores = _per_pixel_max(det, sample)
        _require(scores, method)
        otsu = otsu_threshold(scores)
        med = float(np.median(scores))
        floor = med + 3 * MAD_TO_SIGMA * float(np.median(np.abs(scores - med)))
        det.threshold = max(otsu, floor, _MIN_THRESHOLD)
        log.info("cva: Otsu %.4g, unimodal guard %.4g → threshold %.4g", otsu, floor, det.threshold)
        return det
    if method == "diff":
        det = Diff(center, scale, 1.0)
        scores = _per_pixel_max(det, sample)
        _require(scores, method)
        det.threshold = max(float(scores.mean() + 2 * scores.std()), _MIN_THRESHOLD)
        log.info("diff: threshold mean+2σ = %.4g", det.threshold)
        return det
    if method == "irmad":
        z, observed, _ = _prepare(sample, center, scale)
        a = np.empty((t - 1, c, c))
        b = np.empty((t - 1, c, c))
        m0 = np.empty((t - 1, c))
        m1 = np.empty((t - 1, c))
        sig = np.empty((t - 1, c))
        mc = np.zeros((t - 1, c))
        for k in range(t - 1):
            ok = observed[k]
            if ok.sum() < max(10, 4 * c):
                log.warning(
                    "irmad: interval %d has %d observed sample pixels; using the identity "
                    "transform (standardised difference) for it",
                    k,
                    int(ok.sum()),
                )
                a[k] = b[k] = np.eye(c)
                m0[k] = m1[k] = 0.0
                sig[k] = np.sqrt(2.0)
                continue
            fit = irmad(z[k][:, ok], z[k + 1][:, ok])
            a[k], b[k], m0[k], m1[k] = fit.a, fit.b, fit.mean0, fit.mean1
            mc[k], sig[k] = fit.center, fit.sigma
        thr = float(_stats.chi2.ppf(IRMAD_P, c))
        log.info("irmad: chi-square threshold (c=%d, p=%.2f) = %.4g", c, IRMAD_P, thr)
        return IRMAD(center, scale, thr, a, b, m0, m1, mc, sig)
    raise InputError(
        f"method: found {method!r}; expected one of 'cva', 'irmad', 'diff'; "
        "fix: pass --method cva, irmad or diff."
    )


def _require(scores: np.ndarray, method: str) -> None:
    if scores.size == 0:
        raise InputError(
            f"{method}: found no sample pixel with two valid dates; expected some to fit the "
            "threshold; fix: check nodata/cloud masks or sample more pixels."
        )


def fit(sample: np.ndarray, context: Context, name: str) -> CVA | IRMAD | Diff:
    """The baseline ``name`` fitted on the scene sample (:func:`make_baseline`)."""
    return make_baseline(name, sample)  # type: ignore[arg-type]
