"""Smooth random fields: the raw material of land cover, texture, haze and clouds."""

from __future__ import annotations

import numpy as np

__all__ = ["fbm", "smooth_noise"]


def _bspline_weights(n: int, scale: float, offset: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Cubic B-spline upsampling from coarse nodes to ``n`` pixels.

    Returns:
        first node index (n,) int, weights (n, 4) float32 of nodes first ... first + 3, and the
        number of coarse nodes needed.
    """
    pos = (np.arange(n) + offset) / scale + 1.0
    base = np.floor(pos).astype(np.int64)
    f = pos - base
    wts = np.stack(
        [
            (1 - f) ** 3 / 6,
            (3 * f**3 - 6 * f**2 + 4) / 6,
            (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6,
            f**3 / 6,
        ],
        axis=1,
    ).astype(np.float32)
    return base - 1, wts, int(base.max()) + 3


def _upsample_rows(coarse: np.ndarray, first: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """(m, k) -> (n, k): each output row is a 4-tap weighted sum of coarse rows (no BLAS)."""
    out = wts[:, 0, None] * coarse[first]
    for k in range(1, 4):
        out += wts[:, k, None] * coarse[first + k]
    return out


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Gaussian-like random field with features of about ``scale`` pixels.

    A coarse grid of white noise (one node per ``scale`` pixels, at a random sub-node offset) is
    upsampled with a separable cubic B-spline (4 taps per axis, so it is fast) and standardised.

    Returns:
        (h, w) float32, mean 0 and standard deviation 1 over the field.
    """
    h, w = shape
    scale = max(float(scale), 1.0)
    oy, ox = rng.uniform(0.0, scale, 2)
    fy, wy, my = _bspline_weights(h, scale, oy)
    fx, wx, mx = _bspline_weights(w, scale, ox)
    coarse = rng.standard_normal((my, mx), dtype=np.float32)
    field = _upsample_rows(coarse, fy, wy)  # (h, mx)
    field = np.ascontiguousarray(_upsample_rows(field.T, fx, wx).T)  # (h, w)
    field -= field.mean()
    sd = field.std()
    return (field / sd if sd > 0 else field).astype(np.float32, copy=False)


def fbm(
    rng: np.random.Generator,
    shape: tuple[int, int],
    scales: tuple[float, ...] = (96.0, 48.0, 24.0, 12.0),
    persistence: float = 0.55,
) -> np.ndarray:
    """Multi-scale ("fractal") noise: a weighted sum of :func:`smooth_noise` octaves.

    Args:
        rng: random generator (consumed).
        shape: (h, w) in pixels.
        scales: feature sizes of the octaves in pixels, coarse to fine.
        persistence: weight ratio between successive octaves.

    Returns:
        (h, w) float32 standardised field.
    """
    total = np.zeros(shape, dtype=np.float32)
    weight = 1.0
    for s in scales:
        total += weight * smooth_noise(rng, shape, s)
        weight *= persistence
    total -= total.mean()
    sd = total.std()
    return total / sd if sd > 0 else total
