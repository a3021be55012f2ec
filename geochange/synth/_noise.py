"""Smooth random fields: the raw material of land cover, texture, haze and clouds."""

from __future__ import annotations

import numpy as np

__all__ = ["fbm", "smooth_noise"]


def _bspline_matrix(n: int, scale: float, offset: float) -> np.ndarray:
    """(n, m) weights of a cubic B-spline upsampling from m coarse nodes to n pixels."""
    pos = (np.arange(n) + offset) / scale + 1.0
    base = np.floor(pos).astype(int)
    f = pos - base
    # Uniform cubic B-spline basis for the 4 nodes around each position.
    wts = np.stack(
        [
            (1 - f) ** 3 / 6,
            (3 * f**3 - 6 * f**2 + 4) / 6,
            (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6,
            f**3 / 6,
        ],
        axis=1,
    )
    m = int(base.max()) + 3
    mat = np.zeros((n, m), dtype=np.float32)
    rows = np.repeat(np.arange(n), 4)
    cols = (base[:, None] + np.arange(-1, 3)[None]).ravel()
    mat[rows, cols] = wts.ravel()
    return mat


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Gaussian-like random field with features of about ``scale`` pixels.

    A coarse grid of white noise (one node per ``scale`` pixels, at a random sub-node offset) is
    upsampled with a cubic B-spline (two small matrix products, so it is fast) and standardised.

    Returns:
        (h, w) float32, mean 0 and standard deviation 1 over the field.
    """
    h, w = shape
    scale = max(float(scale), 1.0)
    oy, ox = rng.uniform(0.0, scale, 2)
    my = _bspline_matrix(h, scale, oy)
    mx = _bspline_matrix(w, scale, ox)
    coarse = rng.standard_normal((my.shape[1], mx.shape[1]), dtype=np.float32)
    field = my @ coarse @ mx.T
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
