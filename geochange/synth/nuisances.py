"""Nuisances that are not change: illumination, haze, clouds and shadows, noise, misregistration.

Strengths per level are in :data:`LEVELS`. Reflectance units (0-1) throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from geochange.shift import shift_bilinear
from geochange.synth._noise import fbm, smooth_noise

__all__ = [
    "LEVELS",
    "Nuisance",
    "NuisanceLevel",
    "Clouds",
    "make_clouds",
    "draw_atmosphere",
    "apply_date",
]

Nuisance = Literal["low", "medium", "high"]


@dataclass(frozen=True)
class NuisanceLevel:
    """Strength of each nuisance (reflectance units unless said otherwise).

    Attributes:
        gain_sd: sd of the per-date gain (illumination), relative.
        band_gain_sd: sd of the extra per-date per-band gain, relative.
        offset_sd: sd of the per-date per-band additive offset.
        haze_max: largest haze path reflectance at 490 nm (scales as (490 / wavelength)^2).
        noise_sd: sensor noise sd.
        shift_max: largest whole-date misregistration in pixels.
        cloudy_dates: (min, max) fraction of dates with clouds.
        cloud_cover_max: largest fraction of the scene masked (cloud + shadow) on a cloudy date.
    """

    gain_sd: float
    band_gain_sd: float
    offset_sd: float
    haze_max: float
    noise_sd: float
    shift_max: float
    cloudy_dates: tuple[float, float]
    cloud_cover_max: float


LEVELS: dict[str, NuisanceLevel] = {
    # Sensor noise: Sentinel-2 10 m bands have about 0.0005 reflectance of noise; "high" is 6x.
    "low": NuisanceLevel(0.03, 0.01, 0.003, 0.01, 0.0002, 0.3, (0.0, 0.15), 0.05),
    "medium": NuisanceLevel(0.07, 0.02, 0.006, 0.03, 0.0004, 0.8, (0.15, 0.3), 0.15),
    "high": NuisanceLevel(0.12, 0.04, 0.01, 0.06, 0.003, 2.0, (0.3, 0.5), 0.30),
}


@dataclass
class Clouds:
    """Clouds of a scene, in image (not reference-grid) coordinates.

    Attributes:
        alpha: per date None or (h, w) float32 cloud opacity 0-1.
        shadow: per date None or (h, w) float32 shadow strength 0-1.
        mask: (t, h, w) bool cloud or shadow.
    """

    alpha: list[np.ndarray | None]
    shadow: list[np.ndarray | None]
    mask: np.ndarray


def make_clouds(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n_dates: int,
    level: NuisanceLevel,
    exclude: tuple[int, ...] = (),
) -> Clouds:
    """Thick and thin clouds with displaced shadows on a random subset of dates.

    Args:
        exclude: date indices that stay cloud-free.
    """
    h, w = shape
    # Cloud sizes are in pixels: as large in a 128-px training scene as in a 512-px one (growing
    # only for larger scenes), so a model trained on small scenes meets clouds of real size.
    big = max(h, w)
    s = float(np.clip(big / 512.0, 1.0, 4.0)) if big >= 128 else max(big / 128.0, 0.25)
    lo, hi = level.cloudy_dates
    n = int(round(rng.uniform(lo, hi) * n_dates))
    candidates = np.array([t for t in range(n_dates) if t not in exclude], dtype=int)
    n = min(n, len(candidates))
    cloudy = set(rng.choice(candidates, size=n, replace=False).tolist()) if n else set()
    # Sun/cloud geometry: shadows fall in one direction for the whole series.
    ang = rng.uniform(0, 2 * np.pi)
    alpha: list[np.ndarray | None] = [None] * n_dates
    shadow: list[np.ndarray | None] = [None] * n_dates
    mask = np.zeros((n_dates, h, w), dtype=bool)
    for t in range(n_dates):
        if t not in cloudy:
            continue
        cover = rng.uniform(0.3, 1.0) * level.cloud_cover_max  # masked fraction, roughly
        field = fbm(rng, shape, (64 * s, 32 * s, 16 * s, 6.0), persistence=0.6)
        thr = np.quantile(field, 1.0 - 0.5 * cover)
        a = np.clip((field - thr) / 0.4, 0.0, 1.0)
        if rng.random() < 0.6:  # thin, semi-transparent cloud around/apart from the thick one
            thin = fbm(rng, shape, (96 * s, 48 * s, 12.0), persistence=0.5)
            thr2 = np.quantile(thin, 1.0 - 0.4 * cover)
            a = np.maximum(a, rng.uniform(0.2, 0.45) * np.clip((thin - thr2) / 0.8, 0.0, 1.0))
        dist = rng.uniform(6, 20) * s
        dy, dx = int(round(dist * np.sin(ang))), int(round(dist * np.cos(ang)))
        sh = np.zeros_like(a)
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        sh[yd, xd] = np.clip(a[ys, xs] * 1.5, 0.0, 1.0)
        sh *= 1.0 - a  # no shadow visible under the cloud itself
        # Faint fringes are dropped so the mask holds every pixel a cloud or shadow touches.
        a[a < 0.02] = 0.0
        sh[sh < 0.05] = 0.0
        mask[t] = (a > 0) | (sh > 0)
        alpha[t] = a.astype(np.float32)
        shadow[t] = sh.astype(np.float32)
    return Clouds(alpha, shadow, mask)


@dataclass
class Atmosphere:
    """Per-date illumination and haze draws.

    Attributes:
        gain: (t, c) multiplicative gain; offset: (t, c) additive offset;
        haze: per date (h, w) float32 haze reflectance at 490 nm; shift: (t, 2) (dy, dx) pixels.
    """

    gain: np.ndarray
    offset: np.ndarray
    haze: list[np.ndarray]
    shift: np.ndarray


def draw_atmosphere(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n_dates: int,
    n_bands: int,
    level: NuisanceLevel,
    max_shift: float | None = None,
) -> Atmosphere:
    """Draw gains, offsets, haze fields and whole-date shifts for every date."""
    s = float(np.clip(max(shape) / 512.0, 0.25, 4.0))
    gain = (1.0 + rng.normal(0, level.gain_sd, (n_dates, 1))) * (
        1.0 + rng.normal(0, level.band_gain_sd, (n_dates, n_bands))
    )
    offset = rng.normal(0, level.offset_sd, (n_dates, n_bands))
    haze = []
    for _ in range(n_dates):
        amount = rng.uniform(0.0, level.haze_max)
        haze.append(
            (amount * (1.0 + 0.5 * np.tanh(smooth_noise(rng, shape, 120 * s)))).astype(np.float32)
        )
    smax = level.shift_max if max_shift is None else max_shift
    r = smax * np.sqrt(rng.uniform(0, 1, n_dates))
    th = rng.uniform(0, 2 * np.pi, n_dates)
    shift = np.stack([r * np.sin(th), r * np.cos(th)], axis=1)
    return Atmosphere(gain.astype(np.float32), offset.astype(np.float32), haze, shift)


def apply_date(
    ground: np.ndarray,
    t: int,
    wavelengths: np.ndarray,
    atm: Atmosphere,
    clouds: Clouds | None,
    cloud_spec: np.ndarray,
    noise_sd: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Turn the ground reflectance of date ``t`` into what the sensor records.

    Order: whole-date misregistration (bilinear shift of the rendered ground), cloud shadows and
    clouds, gain/offset, haze, sensor noise.

    Args:
        ground: (c, h, w) float32 surface reflectance on the reference grid.
    Returns:
        (c, h, w) float32 top-of-atmosphere-like reflectance.
    """
    img = shift_bilinear(ground, float(atm.shift[t][0]), float(atm.shift[t][1]))
    if clouds is not None and clouds.alpha[t] is not None:
        img *= 1.0 - 0.65 * clouds.shadow[t][None]
        a = clouds.alpha[t][None]
        img = img * (1.0 - a) + a * cloud_spec[:, None, None]
    img = img * atm.gain[t][:, None, None] + atm.offset[t][:, None, None]
    spectral = (490.0 / wavelengths.astype(np.float32)) ** 2
    img += atm.haze[t][None] * spectral[:, None, None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise_sd)
    return img
