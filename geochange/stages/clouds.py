"""Cloud and shadow screen: find clouds in a multi-date stack without a mask, from time and spectra.

A cloud on the last date of a series looks like a change to any detector: nothing after it shows
that it went away. Users of Sentinel-2 or Landsat pass their SCL / QA masks (``detect --masks``);
everyone else (PlanetScope, aerial, a product without a usable mask) gets this screen. Pixels it
flags on a date are read as nodata on that date, exactly like a user's mask: that date then
neither creates nor hides a change there.

How it works, per date ``t`` and pixel, in the scene's own radiometry:

1. Dates are matched to one radiometry with the scene statistics the model uses
   (:func:`geochange.robust.scene_stats`: per date and band median and spread), then
   refitted on each date's clear pixels (:func:`refit`), so per-date illumination gain and
   offset do not count, even on a date that a cloud covers by a third.
2. The reference is the median of the *other* dates at that pixel; ``d`` is the date minus it.
3. **Cloud**: the date moved towards the scene's cloud spectrum ``c`` (the bright end of every
   band, :func:`scene_spectra`) as a cloud of opacity ``a`` would: ``d ≈ a (c - reference)``
   with ``a >= MIN_OPACITY`` and a relative residual below ``MAX_RESIDUAL`` (a new roof on
   vegetation changes the spectrum's shape; a thin cloud only veils it); or every band is
   brighter by at least ``BRIGHT_SPREADS`` scene spreads.
4. **Shadow**: the date moved at least ``SHADOW_DEPTH`` of the way towards the scene's dark
   spectrum (the dark end of every band), with a small residual: a shadow takes sunlight away
   from every band alike but leaves the haze's own light, which keeps plain band ratios near 1
   in a hazy blue band. Or every band darker by the same factor (all ratios below
   ``1 - SHADOW_DEPTH``, within ``SHADOW_FLAT`` of each other): where a scene has no dark
   object in some band, its dark spectrum is no black point (measured on a Landsat scene, the
   ratio test found shadows the dark one missed). Only within ``SHADOW_REACH`` px of a cloud
   of the same date.
5. **Not a cloud after all**: the look is a state (:func:`_state`): the dates that share it
   (within ``PERSIST`` of the change's size) reach the start or the end of the series, or are
   ``STATE_DATES`` many. A change stays to the end; the state before it goes back to the
   start; a cloud passes, even one seen on two neighbouring dates. Dates that look different
   but are themselves cloud- or shadow-like do not break a run.
6. **The first and the last date**: no later date can show that a look on the last date
   passes, and no earlier date that a look on the first date came and went, so time cannot
   tell a cloud there from a lasting change (the new state on the last date, the old one on
   the first date of a change seen from the second date on); and the scene's bright end (the
   cloud spectrum of step 3) is often the very roofs and bare soil a change turns into or away
   from. On these two dates a cloud needs a wide core (an opening of radius
   ``END_OPEN_RADIUS``: buildings are narrower than a cloud) of pixels with a veil's spectral
   shape: a veil of opacity ``a`` moves every band about the same share ``a`` of its way to
   the cloud spectrum (the least share at least ``VEIL_AGREE`` of the largest; a roof on
   vegetation brightens the visible bands, not NIR), most strongly in blue (in scene spreads,
   the bluest band's change at least ``BLUE_SHARE`` of the largest). The rest of the cloud
   joins the core as a fringe does (step 7). Only when the bands' wavelengths say which band
   is blue (one below ``BLUE_NM``); otherwise these two dates are not screened at all. On four
   bands a grey roof and a thin cloud can share a spectral shape: the core's width is what
   separates them best. A change kept on the last date rests on that date alone:
   ``geochange detect`` reports how many dates follow each change (``later_dates``), 0 meaning
   that a later acquisition should confirm it.
7. Specks are removed by an opening of radius ``OPEN_RADIUS`` (a cloud is not 3 pixels wide,
   a micro-change may be); faint fringes (opacity ``FRINGE_OPACITY``) join the cloud they touch,
   up to ``FRINGE_REACH`` px out; the result is grown by ``GROW`` px.

All parameters are scene-wide (statistics and spectra come from the decimated scene sample) and
every step looks at most :data:`REACH` px away, so a tile read with that much more halo gives
exactly the whole-scene result: tiles stay seam-free.

``geochange detect`` runs the screen unless the user gives masks or skips it (``--skip
clouds``). It needs 3 dates and 4 bands: with 2 dates there is no temporal evidence (a cloud and
a new bright roof on the second date are the same thing), and with RGB alone a thin cloud and a
grey roof have the same spectral shape (on semi-synthetic series from RGB pairs it removed real
change), so it does not apply there. The thresholds were chosen on synthetic validation scenes
(seeds 1000-1019, nuisance high); what the screen adds on held-out scenes and real pairs is in
benchmarks/README.md and benchmarks/DEFAULT_MODEL.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from geochange.robust import scene_stats
from geochange.stages import Block, Context, Reach

__all__ = ["REACH", "Clouds", "blue_band", "fit", "refit", "scene_spectra", "screen", "usable"]

#: A cloud's least opacity, as a fraction of the way from the ground to the cloud spectrum.
MIN_OPACITY = 0.07
#: Largest residual of the cloud mixing fit, relative to the size of the change.
MAX_RESIDUAL = 0.35
#: Every band brighter by this many scene spreads (IQR / 1.349) also counts as cloud.
BRIGHT_SPREADS = 1.5
#: Faint fringe of a cloud: least opacity and largest residual of pixels that join a cloud
#: found with the stricter tests above, up to ``FRINGE_REACH`` px from it (hysteresis).
FRINGE_OPACITY = 0.05
FRINGE_RESIDUAL = 0.45
FRINGE_REACH = 16
#: Two looks of a pixel are "the same" when closer than this share of the change's size.
PERSIST = 0.5
#: A look shared by this many dates is a state even when it neither starts nor ends the series.
STATE_DATES = 3
#: Shadow: the date moved at least this share of the way to the dark spectrum, with a residual
#: of that fit below ``SHADOW_RESIDUAL`` (relative to the size of the change); or every band's
#: ratio to the reference is below ``1 - SHADOW_DEPTH``, the ratios within ``SHADOW_FLAT``.
SHADOW_DEPTH = 0.2
SHADOW_RESIDUAL = 0.35
SHADOW_FLAT = 0.3
#: Shadows are looked for this close (px) to a cloud of the same date.
SHADOW_REACH = 16
#: Radius (px) of the opening that removes specks.
OPEN_RADIUS = 2
#: The screen is grown by this many pixels (faint fringes, residual misregistration).
GROW = 5
#: The first and the last date (step 6): a cloud's core is opened with a disk of this radius
#: (px) ...
END_OPEN_RADIUS = 4
#: ... of pixels whose bands moved alike shares of their way to the cloud spectrum (the least
#: share at least this fraction of the largest) ...
VEIL_AGREE = 0.4
#: ... most in blue (the bluest band's change, in scene spreads, at least this fraction of the
#: largest band's) ...
BLUE_SHARE = 0.5
#: ... where a band centred below this wavelength (nm) is known to be blue.
BLUE_NM = 520.0
#: Farthest (px) any step looks: the halo the screen adds to a tile.
REACH = 2 * max(OPEN_RADIUS, END_OPEN_RADIUS) + SHADOW_REACH + FRINGE_REACH + GROW
#: Quantiles (percent) of each band, over all dates, taken as the cloud and the dark spectrum.
SPECTRUM_QUANTILES = (99.5, 0.5)
#: :func:`refit`: pixels of the sample it uses, lines it tries, the tolerance of agreement (a
#: share of the reference's IQR), the least share of pixels that must agree, the share of least
#: changed pixels it then refines on, and the largest gain (a cloud over half a date can
#: inflate its spread tenfold).
REFIT_PIXELS = 4000
REFIT_TRIALS = 200
REFIT_TOLERANCE = 0.1
REFIT_MIN_SHARE = 0.3
REFIT_SHARE = 0.5
REFIT_MAX_GAIN = 30.0
#: The screen needs at least this many dates and bands.
MIN_DATES = 3
MIN_BANDS = 4


def usable(n_dates: int, n_bands: int) -> bool:
    """True when a stack has enough dates and bands for the screen to mean anything."""
    return n_dates >= MIN_DATES and n_bands >= MIN_BANDS


def blue_band(wavelengths: Sequence[float | None] | None) -> int | None:
    """Index of the bluest band when one is known to be blue (centre below ``BLUE_NM``)."""
    if wavelengths is None:
        return None
    known = [(float(w), i) for i, w in enumerate(wavelengths) if w is not None and np.isfinite(w)]
    if not known:
        return None
    nm, i = min(known)
    return i if nm < BLUE_NM else None


def _matched(
    x: np.ndarray, stats: np.ndarray, fit: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (t, c, ...) in one radiometry (the dates' median statistics, then each date and
    band's ``fit`` gain and offset from :func:`refit` where given) and the band spreads."""
    stats = np.asarray(stats, dtype=np.float32)
    loc, scale = stats[..., 0], stats[..., 1]
    common_loc, common_scale = np.median(loc, axis=0), np.median(scale, axis=0)
    extra = (None,) * (x.ndim - 2)
    y = x - loc[(..., *extra)]  # then in place: one array of the tile's size
    y /= scale[(..., *extra)]
    y *= common_scale[(slice(None), *extra)]
    y += common_loc[(slice(None), *extra)]
    if fit is not None:
        y *= fit[..., 0][(..., *extra)]
        y += fit[..., 1][(..., *extra)]
    return y.astype(np.float32, copy=False), common_scale.astype(np.float32)


def refit(sample: np.ndarray, stats: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Per date and band, a gain and offset that match the date to the others on clear pixels.

    The scene statistics match dates by their median and spread, and a cloud over a third of
    a date inflates its spread: its clouds then look fainter than they are. Here each date's
    band is regressed on the median of the other dates at the same pixels: first by a consensus
    fit (:func:`_line_fit`, the line most pixels agree with, so clouds, shadows and real changes,
    even over nearly half the date, do not pull it), then ``rounds`` times by least squares on
    the ``REFIT_SHARE`` of pixels that changed least over all bands.

    Args:
        sample: (t, c, n) decimated read of the scene, NaN = nodata.
        stats: (t, c, 2) scene statistics of the same sample.

    Returns:
        (t, c, 2) float32 gain and offset, applied after the statistics' matching (identity
        where too few pixels agree on a line).
    """
    sample = np.asarray(sample, dtype=np.float32)
    t, c, n = sample.shape
    fit = np.zeros((t, c, 2), dtype=np.float32)
    fit[..., 0] = 1.0
    if t < 3:
        return fit
    pick = np.linspace(0, n - 1, min(n, REFIT_PIXELS)).astype(int)
    sample = sample[:, :, pick]
    y0, _ = _matched(sample, stats)  # the fits are gains and offsets of these values
    rng = np.random.default_rng(0)
    for round_ in range(1 + rounds):
        y, _ = _matched(sample, stats, fit)
        refs = _medians_of_others(y)
        for i in range(t):
            ref = refs[i]  # (c, n)
            if round_ == 0:  # consensus lines: robust however far off the first matching is
                for b in range(c):
                    line = _line_fit(y0[i, b], ref[b], rng)
                    if line is not None:
                        fit[i, b] = line
                continue
            # Then least squares on the pixels that changed least over all bands together.
            size = np.sqrt(((y[i] - ref) ** 2).sum(axis=0))
            ok = np.isfinite(size) & np.isfinite(y0[i]).all(axis=0)
            if ok.sum() < 50:
                continue
            ok &= size <= np.quantile(size[ok], REFIT_SHARE)
            for b in range(c):
                line = _least_squares(y0[i, b, ok], ref[b, ok])
                if line is not None:
                    fit[i, b] = line
    return fit


def _least_squares(x: np.ndarray, r: np.ndarray) -> tuple[float, float] | None:
    """``r ≈ gain * x + offset`` by least squares; None if degenerate or implausible."""
    x, r = x.astype(np.float64), r.astype(np.float64)
    var = float(x.var())
    if var <= 0:
        return None
    g = float(((x - x.mean()) * (r - r.mean())).mean() / var)
    if not 1 / REFIT_MAX_GAIN <= g <= REFIT_MAX_GAIN:
        return None
    return g, float(r.mean() - g * x.mean())


def _line_fit(x: np.ndarray, r: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    """``r ≈ gain * x + offset`` agreed on by the most pairs (x, r): lines through random pairs
    of points, the one with most points within a tolerance wins, then a least-squares fit on
    those points. None when fewer than ``REFIT_MIN_SHARE`` of the points agree or the gain is
    beyond a factor ``REFIT_MAX_GAIN``."""
    ok = np.isfinite(x) & np.isfinite(r)
    x, r = x[ok].astype(np.float64), r[ok].astype(np.float64)
    if x.size < 50:
        return None
    q25, q75 = np.percentile(r, [25, 75])
    tol = REFIT_TOLERANCE * max(q75 - q25, 1e-6)
    a, b = rng.integers(0, x.size, size=(2, REFIT_TRIALS))
    dx = x[b] - x[a]
    distinct = np.abs(dx) > 1e-9
    a, b, dx = a[distinct], b[distinct], dx[distinct]
    gain = (r[b] - r[a]) / dx
    plausible = (gain >= 1 / REFIT_MAX_GAIN) & (gain <= REFIT_MAX_GAIN)
    if not plausible.any():
        return None
    gain, a = gain[plausible], a[plausible]
    offset = r[a] - gain * x[a]
    agree = np.abs(r[None] - (gain[:, None] * x[None] + offset[:, None])) < tol
    best = int(agree.sum(axis=1).argmax())
    inl = agree[best]
    if inl.mean() < REFIT_MIN_SHARE:
        return None
    return _least_squares(x[inl], r[inl])


def scene_spectra(
    sample: np.ndarray, stats: np.ndarray, fit: np.ndarray | None = None
) -> np.ndarray:
    """The scene's cloud and dark spectra: the bright and the dark end of every band.

    A cloud of opacity ``a`` moves a pixel the share ``a`` of the way to the cloud spectrum; a
    shadow moves it towards the dark spectrum (sunlight taken away, the haze's own light kept:
    the dark end of a hazy date is the haze, not 0).

    Args:
        sample: (t, c, n) decimated read of the scene (``io.read.read_sample``), NaN = nodata.
        stats: (t, c, 2) scene statistics of the same sample.
        fit: (t, c, 2) from :func:`refit`, or None.

    Returns:
        (2, c) float32, cloud then dark spectrum, in the matched radiometry of :func:`screen`.
    """
    y, _ = _matched(np.asarray(sample, dtype=np.float32), stats, fit)
    flat = np.moveaxis(y, 1, 0).reshape(y.shape[1], -1)
    out = np.zeros((2, y.shape[1]), dtype=np.float32)
    for b, v in enumerate(flat):
        v = v[np.isfinite(v)]
        if v.size:
            out[:, b] = np.percentile(v, SPECTRUM_QUANTILES)
    return out


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy**2 + xx**2 <= radius * radius + 0.5


def _within(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels at most ``radius`` px (Euclidean) from a True pixel of ``mask``."""
    if not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask) <= radius


def screen(
    tile: np.ndarray,
    stats: np.ndarray,
    spectra: np.ndarray,
    fit: np.ndarray | None = None,
    blue: int | None = None,
) -> np.ndarray:
    """Cloud and shadow mask of every date of a tile.

    Args:
        tile: (t, c, h, w) source units, NaN = nodata (t >= 2).
        stats: (t, c, 2) scene statistics (:func:`geochange.robust.scene_stats`).
        spectra: (2, c) from :func:`scene_spectra` (with the same ``fit``).
        fit: (t, c, 2) from :func:`refit`, or None (the statistics' matching alone).
        blue: index of the blue band (:func:`blue_band`), or None when no band is known to be
            blue: then the last date is not screened.

    Returns:
        (t, h, w) bool, True = cloud or shadow on that date.
    """
    cloudy, fringe, dim, nodata = _looks(tile, stats, spectra, fit, blue)
    disk = _disk(OPEN_RADIUS)
    eight = np.ones((3, 3), dtype=bool)
    out = np.zeros(cloudy.shape, dtype=bool)
    for i in range(out.shape[0]):
        end = i in (0, out.shape[0] - 1)
        cloud = ndimage.binary_opening(cloudy[i], _disk(END_OPEN_RADIUS) if end else disk)
        if cloud.any():
            shadow = ndimage.binary_opening(dim[i], disk)
            cloud |= shadow & _within(cloud, SHADOW_REACH)
            # Faint fringes join the cloud they touch (at most FRINGE_REACH px: seam-free).
            cloud = ndimage.binary_dilation(
                cloud, eight, iterations=FRINGE_REACH, mask=cloud | fringe[i]
            )
        out[i] = _within(cloud, GROW) & ~nodata[i]
    return out


def _looks(
    tile: np.ndarray,
    stats: np.ndarray,
    spectra: np.ndarray,
    fit: np.ndarray | None,
    blue: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The per-pixel tests of :func:`screen`: (t, h, w) bool each, a passing cloud, a passing
    faint cloud (fringe), a passing shadow, and nodata."""
    y, spread = _matched(np.asarray(tile, dtype=np.float32), stats, fit)
    t = y.shape[0]
    nodata = ~np.isfinite(y).all(axis=1)  # (t, h, w)
    if nodata.any():
        # A nodata date takes the pixel's median of the valid dates: it then looks unchanged.
        with warnings.catch_warnings():  # "All-NaN slice": pixels with no valid date
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nanmedian(y, axis=0)
        np.copyto(y, np.nan_to_num(fill, nan=0.0)[None], where=~np.isfinite(y))
    cloud_spec, dark_spec = np.asarray(spectra, dtype=np.float32)[:, :, None, None]
    spread = spread[:, None, None]
    refs = _medians_of_others(y)
    cloudy = np.zeros(nodata.shape, dtype=bool)
    fringe, dim = np.zeros_like(cloudy), np.zeros_like(cloudy)
    sizes = np.zeros(cloudy.shape, dtype=np.float32)
    for i in range(t):
        d = y[i] - refs[i]
        sizes[i] = size = np.sqrt((d * d).sum(axis=0))
        opacity, residual = _along(d, cloud_spec - refs[i], size)
        cloudy[i] = (opacity >= MIN_OPACITY) & (residual < MAX_RESIDUAL)
        cloudy[i] |= (d / spread).min(axis=0) > BRIGHT_SPREADS
        fringe[i] = (opacity >= FRINGE_OPACITY) & (residual < FRINGE_RESIDUAL)
        if i in (0, t - 1):  # an end date: spectral shape and width alone (step 6)
            if blue is None:
                cloudy[i] = fringe[i] = False
            else:
                # A cloud needs a core of veil-shaped pixels (opened wide in screen); what else
                # looks cloudy joins it as a fringe (at most FRINGE_REACH px away).
                fringe[i] |= cloudy[i]
                cloudy[i] &= _veil(d, cloud_spec - refs[i], spread, blue)
        depth, residual = _along(d, dark_spec - refs[i], size)
        dim[i] = (depth >= SHADOW_DEPTH) & (residual < SHADOW_RESIDUAL)
        ratio = y[i] / np.maximum(refs[i], 1e-6 * np.abs(refs[i]).max() + 1e-12)
        top, bottom = ratio.max(axis=0), ratio.min(axis=0)
        dim[i] |= (top < 1 - SHADOW_DEPTH) & (top - bottom < SHADOW_FLAT)
    odd = cloudy | fringe | dim
    for i in range(t):
        where = odd[i]  # elsewhere nothing is flagged: no need to ask
        if where.any():
            state = _state(y, where, i, sizes[i][where], ~nodata[:, where], odd[:, where])
            for flags in (cloudy, fringe, dim):
                flags[i][where] &= ~state
    return cloudy, fringe, dim, nodata


def _veil(d: np.ndarray, towards: np.ndarray, spread: np.ndarray, blue: int) -> np.ndarray:
    """Where the change ``d`` (c, h, w) has a veil's spectral shape: the bluest band ``blue``
    moved at least ``BLUE_SHARE`` of the most any band moved (in scene spreads ``spread``
    (c, 1, 1)), and every band moved a like share of its way ``towards`` the cloud spectrum (at
    least ``VEIL_AGREE`` of the largest share); bands whose way is under one spread (the ground
    is as bright as the cloud there) say nothing."""
    z = d / spread
    bluest = z[blue] >= BLUE_SHARE * z.max(axis=0)
    far = towards > spread
    share = np.where(far, d / np.where(far, towards, 1.0), np.nan)
    with warnings.catch_warnings():  # pixels where no band has far to go
        warnings.simplefilter("ignore", RuntimeWarning)
        top, low = np.nanmax(share, axis=0), np.nanmin(share, axis=0)
    alike = np.nan_to_num(low, nan=0.0) >= VEIL_AGREE * np.nan_to_num(top, nan=np.inf)
    return bluest & alike


def _along(d: np.ndarray, towards: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far the change ``d`` (c, h, w) goes along ``towards`` (c, h, w), as a share of it,
    and the residual off that line relative to ``size`` = |d| (h, w)."""
    amount = (d * towards).sum(axis=0) / np.maximum((towards * towards).sum(axis=0), 1e-12)
    residual = np.sqrt(((d - amount * towards) ** 2).sum(axis=0)) / (size + 1e-12)
    return amount, residual


def _state(
    y: np.ndarray, where: np.ndarray, i: int, size: np.ndarray, valid: np.ndarray, odd: np.ndarray
) -> np.ndarray:
    """True where date ``i``'s look is a state of the ground, not a passing cloud, at the
    pixels ``where`` (h, w) of ``y`` (t, c, h, w); ``size``, ``valid`` (t, n), ``odd`` (t, n)
    and the result (n,) are of those pixels.

    A state is shared by other valid dates (within ``PERSIST`` of the change's size): the dates
    of the same look, walking away from ``i``, reach the start or the end of the series, or
    number ``STATE_DATES``. The walk steps over a date that looks different and is itself odd
    (``odd``: cloud- or shadow-like there), so a new roof stays a state when a cloud covers it
    on the last date, while one cloud seen on two neighbouring dates does not become one. A
    pixel's walk stops once it is decided (``STATE_DATES`` looks found), so a walk costs the
    dates it needs, not the series.
    """
    tol = PERSIST * size
    look = y[i][:, where]
    count = np.ones(look.shape[1:], dtype=np.int16)
    ends = np.zeros(look.shape[1:], dtype=bool)
    for order in (range(i - 1, -1, -1), range(i + 1, y.shape[0])):
        unbroken = count < STATE_DATES
        for u in order:
            if not unbroken.any():
                break
            same = np.sqrt(((y[u][:, where] - look) ** 2).sum(axis=0)) < tol
            count += unbroken & valid[u] & same
            unbroken &= (~valid[u] | same | odd[u]) & (count < STATE_DATES)
        ends |= unbroken
    return (count >= 2) & (ends | (count >= STATE_DATES))


def _medians_of_others(y: np.ndarray) -> np.ndarray:
    """(t, ...) per date, the median over the other dates' finite values of ``y`` (t, ...), NaN
    where no other date is finite; from one sort, so O(t log t) per pixel, not O(t²)."""
    t = y.shape[0]
    ranked = np.sort(y, axis=0)  # NaN last
    finite = np.isfinite(y)
    count = finite.sum(axis=0) if not finite.all() else None
    out = np.empty_like(y)
    for i in range(t):
        if count is None:  # no NaN: the same positions everywhere
            others = t - 1
            at = [ranked[(others - 1) // 2], ranked[others // 2]]
            nxt = [ranked[(others - 1) // 2 + 1], ranked[others // 2 + 1]]
        else:
            others = count - finite[i]
            at, nxt = [], []
            for p in (np.maximum((others - 1) // 2, 0), np.maximum(others // 2, 0)):
                at.append(np.take_along_axis(ranked, p[None], axis=0)[0])
                nxt.append(np.take_along_axis(ranked, np.minimum(p + 1, t - 1)[None], axis=0)[0])
        # Without date i, position p holds ranked[p] where date i ranks above p (or is NaN:
        # then nothing is removed), else ranked[p + 1] (ties give equal values anyway).
        lo, hi = (np.where(~finite[i] | (y[i] > a), a, n) for a, n in zip(at, nxt))
        out[i] = np.where(others > 0, 0.5 * (lo + hi), np.nan)
    return out


class Clouds:
    """The ``clouds`` stage: flagged pixels of each tile become nodata on their date.

    Args:
        stats: (t, c, 2) scene statistics of the stack's sample.
        spectra: (2, c) cloud and dark spectra of the same sample (:func:`scene_spectra`).
        fit: (t, c, 2) clear-pixel matching of the same sample (:func:`refit`), or None.
        blue: index of the blue band (:func:`blue_band`), or None (last date not screened).
    """

    name = "clouds"

    def __init__(
        self,
        stats: np.ndarray,
        spectra: np.ndarray,
        fit: np.ndarray | None = None,
        blue: int | None = None,
    ) -> None:
        self.stats = np.asarray(stats, dtype=np.float32)
        self.spectra = np.asarray(spectra, dtype=np.float32)
        self.fit = None if fit is None else np.asarray(fit, dtype=np.float32)
        self.blue = None if blue is None else int(blue)

    @classmethod
    def from_sample(
        cls, sample: np.ndarray, wavelengths: Sequence[float | None] | None = None
    ) -> Clouds:
        """Fit the scene-wide parameters on a decimated scene sample (t, c, n); ``wavelengths``
        (nm per band, None = unknown) say which band is blue."""
        stats = scene_stats(sample)
        fit = refit(sample, stats)
        return cls(stats, scene_spectra(sample, stats, fit), fit, blue_band(wavelengths))

    def reach(self, n_dates: int) -> Reach:
        return Reach(input=REACH)

    def params(self) -> dict:
        return {"refit": self.fit is not None, "blue_band": self.blue}

    def __dask_tokenize__(self) -> tuple:
        fit = b"" if self.fit is None else self.fit.tobytes()
        return ("Clouds", self.stats.tobytes(), self.spectra.tobytes(), fit, self.blue)

    def mask(self, tile: np.ndarray) -> np.ndarray:
        """(t, h, w) bool cloud/shadow mask of a tile (see :func:`screen`)."""
        return screen(tile, self.stats, self.spectra, self.fit, self.blue)

    def run(self, block: Block) -> None:
        flagged = self.mask(block.tile)
        if not block.owned:  # a copy: the tile as given stays
            block.tile, block.owned = np.array(block.tile, dtype=np.float32), True
        block.tile[np.broadcast_to(flagged[:, None], block.tile.shape)] = np.nan


def fit(sample: np.ndarray, context: Context, name: str = "clouds") -> Clouds | None:
    """The screen fitted on the scene sample; None when the user gave cloud masks (trusted as
    they are) or the stack has too few dates or bands (:func:`usable`)."""
    if context.masks or not usable(*sample.shape[:2]):
        return None
    return Clouds.from_sample(sample, context.wavelengths)
