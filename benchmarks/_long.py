"""Long semi-synthetic series from a real labelled pair, for ``long_series.py``.

Separate from the training generator (``geochange.synth``) like ``_series.py``: the network
never saw series made this way. A series of ``T`` dates over several years:

- dates 10-60 days apart (irregular revisits with gaps), from 2019-01-10,
- the pair's first image up to the change date ``k``, its second image from ``k`` on (one
  change event per changed pixel, dated ``k``),
- a seasonal cycle per band (a sine over the day of year: near-infrared up by up to 15 % in
  summer, the visible bands down by up to 8 %, drawn per series), so years of phenology pass
  over the unchanged land,
- each date's ordinary differences of ``_series.make_series`` (gain, offset, light haze,
  sub-pixel shift),
- on about a fifth of the dates a bright cloud veil over a random blob (up to a quarter of the
  scene; not masked: the run's own cloud screen has to deal with it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import _series as S
import numpy as np
from scipy import ndimage

START = dt.date(2019, 1, 10)
CLOUDY_SHARE = 0.2
#: A pixel counts as veiled at this opacity of its date's veil or more (the report's column).
VEILED_OPACITY = 0.3


def long_dates(rng: np.random.Generator, n: int) -> list[dt.date]:
    """``n`` dates 10-60 days apart from :data:`START`."""
    gaps = np.concatenate([[0], np.cumsum(rng.integers(10, 61, n - 1))])
    return [START + dt.timedelta(days=int(g)) for g in gaps]


def _season_gain(wavelengths: Sequence[float] | None, c: int, rng: np.random.Generator):
    """(c,) amplitude of the seasonal gain per band: + for near-infrared, - for visible."""
    if wavelengths is None or len(wavelengths) != c:
        return np.full(c, 0.05, np.float32) * rng.uniform(0.5, 1.0)
    wl = np.asarray(wavelengths, np.float32)
    amp = np.where(wl > 700, rng.uniform(0.08, 0.15), -rng.uniform(0.03, 0.08))
    return amp.astype(np.float32)


def _blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A soft blob in [0, 1] covering up to a quarter of the scene."""
    field = ndimage.gaussian_filter(rng.random((h, w)), sigma=max(h, w) / 10)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    cut = rng.uniform(0.7, 0.85)
    return np.clip((field - cut) / (1 - cut), 0, 1).astype(np.float32)


def make_long_series(
    t0: np.ndarray,
    t1: np.ndarray,
    *,
    n_dates: int,
    seed: int,
    wavelengths: Sequence[float] | None = None,
) -> tuple[list[np.ndarray], list[dt.date], int, list[float]]:
    """``n_dates`` images (c, h, w) in the source dtype, their dates, the change date ``k`` and
    each date's veiled share of the scene (opacity at least :data:`VEILED_OPACITY`)."""
    rng = np.random.default_rng(seed)
    dates = long_dates(rng, n_dates)
    k = int(rng.integers(max(1, n_dates // 5), n_dates - max(1, n_dates // 5)))
    base = S.make_series(t0, t1, dates=n_dates, change_at=k, seed=seed + 1, wavelengths=wavelengths)
    c, h, w = t0.shape
    amp = _season_gain(wavelengths, c, rng)
    phase = rng.uniform(-20, 20)
    info = np.iinfo(t0.dtype) if np.issubdtype(t0.dtype, np.integer) else None
    bright = float(np.percentile(np.asarray(t1, np.float32), 99))
    out, veiled = [], []
    for img, d in zip(base, dates):
        doy = d.timetuple().tm_yday
        season = np.sin(2 * np.pi * (doy - 110 + phase) / 365.25)  # peaks in late summer
        y = img.astype(np.float32) * (1 + amp * season)[:, None, None]
        if rng.random() < CLOUDY_SHARE:
            a = _blob(rng, h, w) * rng.uniform(0.6, 0.95)
            y = y * (1 - a) + a * bright * rng.uniform(0.9, 1.2)
            veiled.append(float((a >= VEILED_OPACITY).mean()))
        else:
            veiled.append(0.0)
        if info is not None:
            y = np.clip(np.rint(y), max(info.min, 1), info.max)
        out.append(y.astype(t0.dtype))
    return out, dates, k, veiled
