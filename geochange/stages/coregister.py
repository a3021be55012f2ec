"""Co-registration: find and undo whole-date shifts of a stack (camera shake, orbit jitter).

Dates of a stack are rarely aligned to the pixel: Sentinel-2's multi-temporal co-registration
target is 0.3 px and older archives drift by a pixel or two. A change model that must forgive a
misregistered edge also forgives a 2-pixel building. Estimating each date's global shift and
resampling it away lets the model look at aligned pixels.

How it works:

1. Read one window of every date (the centre of the grid, at most :data:`WINDOW` px square),
   one date at a time: memory does not grow with the number of dates.
2. Phase correlation of each date against a reference date (the one with most valid pixels):
   bands standardised per date (gain and offset do not matter), Hann-windowed, the normalised
   cross-power spectrum summed over bands and smoothed by a Gaussian of :data:`PEAK_SIGMA` px,
   whose peak is located to sub-pixel by a Gaussian (log-parabola) fit. On the project's
   synthetic scenes (nuisance high, shifts up to 2 px, clouds, haze, changes) the error is
   0.06 px median and 0.15 px at most (128 and 256 px windows, 10 scenes x 8 dates).
3. Shifts are taken relative to the dates' mean position, so the stack keeps its grid (no date
   is privileged) and each date moves by the least amount. A date whose correlation peak is weak
   (clouds everywhere, mostly nodata) or lies beyond :data:`MAX_SHIFT` is left where it is.
4. Reads of the stack apply the shifts with bilinear resampling (:class:`geochange.io.stack.Stack`
   ``shifts``): every tile reads a margin of ``ceil(shift) + 1`` px, so tiles stay seam-free.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable

import numpy as np

from geochange.robust import mad_sigma

log = logging.getLogger(__name__)

#: Largest shift (pixels, per axis) that is searched and corrected.
MAX_SHIFT = 4.0
#: Edge of the square window read from the grid's centre for estimation, in pixels.
WINDOW = 1024
#: Smoothing of the correlation surface (pixels, Gaussian sd): noise-robust sub-pixel peaks.
PEAK_SIGMA = 1.0
#: A date is shifted only when its correlation peak stands this many robust sd above the
#: surface; aligned land scores 35-450 (synthetic, 128-512 px; OSCD, Landsat), unrelated
#: scenes up to about 15.
MIN_PEAK_SCORE = 20.0
#: Dates with fewer valid pixels than this share of the window are not estimated.
MIN_VALID = 0.2


@dataclasses.dataclass(frozen=True)
class Registration:
    """Estimated whole-date shifts of a stack.

    Attributes:
        shifts: (t, 2) float (dy, dx) in pixels to apply to each date: output pixel (y, x) takes
            the date's pixel (y - dy, x - dx). Zero for dates not estimated.
        scores: (t,) correlation peak score of each date against the reference (inf for the
            reference, 0 for dates not estimated).
        reference: index of the reference date.
    """

    shifts: np.ndarray
    scores: np.ndarray
    reference: int


def _valid_share(img: np.ndarray) -> float:
    """Share of the pixels of one date (c, h, w) valid in every band."""
    valid = np.isfinite(img).all(axis=0)
    return float(valid.mean()) if valid.size else 0.0


def _spectrum(img: np.ndarray) -> np.ndarray:
    """Standardised, Hann-windowed FFT of one date (c, h, w)."""
    img = np.asarray(img, dtype=np.float64)
    valid = np.isfinite(img).all(axis=0)
    out = np.zeros(img.shape)
    if valid.any():
        for b in range(img.shape[0]):
            v = img[b][valid]
            sd = float(np.std(v))
            if sd > 0:
                out[b] = np.where(valid, (img[b] - np.median(v)) / sd, 0.0)
    return np.fft.fft2(out * _hann(*valid.shape))


@functools.lru_cache(maxsize=4)
def _hann(h: int, w: int) -> np.ndarray:
    """2-D Hann window (the same for every date of a window)."""
    return np.outer(np.hanning(h), np.hanning(w))


@functools.lru_cache(maxsize=4)
def _peak_smoothing(h: int, w: int) -> np.ndarray:
    """Fourier transfer function of a Gaussian of :data:`PEAK_SIGMA` px."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    return np.exp(-2.0 * (math.pi * PEAK_SIGMA) ** 2 * (fy**2 + fx**2))


def _log_peak(a: float, b: float, c: float) -> float:
    """Sub-pixel offset of the peak of a Gaussian through three samples (centre ``b``)."""
    a, b, c = (math.log(max(v, 1e-12)) for v in (a, b, c))
    d = a - 2.0 * b + c
    return 0.0 if d >= 0 else float(np.clip(0.5 * (a - c) / d, -0.5, 0.5))


def phase_correlation(
    ref: np.ndarray, img: np.ndarray, max_shift: float = MAX_SHIFT
) -> tuple[float, float, float]:
    """Shift that aligns ``img`` to ``ref`` (both FFTs from :func:`_spectrum`).

    Returns:
        (dy, dx, score): apply (dy, dx) to ``img`` (output (y, x) takes ``img`` at
        (y - dy, x - dx)); ``score`` is the peak height in robust sd of the surface.
    """
    cross = (ref * np.conj(img)).sum(axis=0)
    mag = np.abs(cross)
    cross = cross / (mag + 1e-12 * (mag.max() or 1.0))
    h, w = cross.shape
    surface = np.fft.fftshift(np.fft.ifft2(cross * _peak_smoothing(h, w)).real)
    r = int(math.ceil(max_shift)) + 1
    cy, cx = h // 2, w // 2
    sub = surface[cy - r : cy + r + 1, cx - r : cx + r + 1]
    iy, ix = np.unravel_index(int(np.argmax(sub)), sub.shape)
    med = float(np.median(surface))
    spread = float(mad_sigma(surface - med)) or 1e-12
    score = (float(sub[iy, ix]) - med) / spread
    if not (0 < iy < sub.shape[0] - 1 and 0 < ix < sub.shape[1] - 1):
        return 0.0, 0.0, 0.0  # peak on the search border: beyond max_shift
    dy = iy - r + _log_peak(sub[iy - 1, ix], sub[iy, ix], sub[iy + 1, ix])
    dx = ix - r + _log_peak(sub[iy, ix - 1], sub[iy, ix], sub[iy, ix + 1])
    if max(abs(dy), abs(dx)) > max_shift:
        return 0.0, 0.0, 0.0
    return float(dy), float(dx), float(score)


def estimate_shifts(
    x: np.ndarray | Callable[[int], np.ndarray],
    max_shift: float = MAX_SHIFT,
    *,
    t: int | None = None,
) -> Registration:
    """Whole-date shifts of a (t, c, h, w) array (NaN = nodata), relative to the dates' mean.

    ``x`` may also be a function that returns date ``i``'s (c, h, w) window, with ``t`` the
    number of dates: the dates are then read one at a time (twice: once for their valid share,
    once for their spectrum), so memory holds two dates' spectra whatever the number of dates.
    Windows smaller than 32 px, dates with less than :data:`MIN_VALID` valid pixels and dates
    whose peak scores below :data:`MIN_PEAK_SCORE` get no shift.
    """
    if callable(x):
        if t is None:
            raise ValueError("estimate_shifts: t (the number of dates) is needed with a reader")
        read = x
    else:
        arr = np.asarray(x)
        t, read = arr.shape[0], arr.__getitem__
    shifts = np.zeros((t, 2))
    scores = np.zeros(t)
    if t < 2:
        return Registration(shifts, scores, 0)
    first = read(0)
    if min(first.shape[-2:]) < 32:
        return Registration(shifts, scores, 0)
    shares = np.array([_valid_share(first)] + [_valid_share(read(i)) for i in range(1, t)])
    ref = int(np.argmax(shares))
    ref_spectrum = _spectrum(read(ref))
    ok = np.zeros(t, bool)
    for i in range(t):
        if i == ref:
            ok[i], scores[i] = True, np.inf
        elif shares[i] >= MIN_VALID:
            dy, dx, score = phase_correlation(ref_spectrum, _spectrum(read(i)), max_shift)
            scores[i] = score
            if score >= MIN_PEAK_SCORE:
                shifts[i], ok[i] = (dy, dx), True
    # Relative to the mean position of the estimated dates: the grid stays where it is (with
    # the reference alone estimated, every shift stays 0).
    shifts[ok] -= shifts[ok].mean(axis=0)
    return Registration(shifts, scores, ref)


def coregister(stack, window: int = WINDOW, max_shift: float = MAX_SHIFT):
    """The stack with its dates' whole shifts estimated and undone on every read.

    Reads one window (the grid's centre, at most ``window`` px square) of every date. A stack
    whose ``shifts`` are set already is returned as it is.

    Returns:
        A copy of ``stack`` whose ``shifts`` are set (see :class:`geochange.io.stack.Stack`).
    """
    if stack.shifts:
        return stack
    h, w = stack.grid.shape
    wy, wx = min(window, h), min(window, w)
    y0, x0 = (h - wy) // 2, (w - wx) // 2
    reader = stack.reader()

    def read(i: int) -> np.ndarray:
        return reader[i : i + 1, :, y0 : y0 + wy, x0 : x0 + wx][0]

    reg = estimate_shifts(read, max_shift, t=stack.T)
    for i, score in enumerate(reg.scores):
        if i != reg.reference and score < MIN_PEAK_SCORE:
            log.warning(
                "co-registration: date %d (%s) left as it is (no reliable match with date %s; "
                "peak score %.1f < %.1f: clouds, nodata or a shift beyond %.0f px)",
                i + 1, stack.dates[i], stack.dates[reg.reference], score, MIN_PEAK_SCORE,
                max_shift,
            )  # fmt: skip
    shifts = tuple((round(float(dy), 3), round(float(dx), 3)) for dy, dx in reg.shifts)
    log.info("co-registration shifts (dy, dx px): %s", shifts)
    return dataclasses.replace(stack, shifts=shifts)


def fit_stack(stack):
    """The ``coregister`` stage: the stack with its shifts estimated (:func:`coregister`) and the
    parameters for the ``runs`` record."""
    stack = coregister(stack)
    return stack, {"shifts_px": [list(s) for s in stack.shifts]}
