"""Robust statistics of a scene: medians and spreads that clouds and changes do not move (numpy only).

- :data:`MAD_TO_SIGMA`, :data:`IQR_TO_SIGMA`: factors that turn the median absolute deviation
  and the interquartile range of a normal distribution into its standard deviation.
- :func:`mad_sigma`: ``MAD_TO_SIGMA · median(|deviations|)``.
- :func:`scene_stats`: median and robust scale per date and band of a decimated scene sample,
  computed ONCE per scene and never per chunk (per-chunk statistics would change with the chunk
  size and break seam-free tiling).
"""

from __future__ import annotations

import numpy as np

__all__ = ["IQR_TO_SIGMA", "MAD_TO_SIGMA", "mad_sigma", "scene_stats"]

#: Standard deviation of a normal distribution per unit of its median absolute deviation.
MAD_TO_SIGMA = 1.4826
#: Standard deviation of a normal distribution per unit of its interquartile range.
IQR_TO_SIGMA = 1.349


def mad_sigma(deviations: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``MAD_TO_SIGMA · median(|deviations|)`` along ``axis`` (all values when None).

    Args:
        deviations: values minus their centre (e.g. their median), float.

    Returns:
        The robust standard deviation: a numpy scalar for ``axis=None``, else an array.
    """
    return MAD_TO_SIGMA * np.median(np.abs(deviations), axis=axis)


def _robust_scale(v: np.ndarray, median: float) -> float:
    q25, q75 = np.percentile(v, [25.0, 75.0])
    scale = (q75 - q25) / IQR_TO_SIGMA
    floor = 1e-6 * max(abs(median), 1e-3)
    if scale > floor:
        return float(scale)
    scale = float(mad_sigma(v - median))
    if scale > floor:
        return scale
    scale = float(np.std(v))
    return scale if scale > floor else 1.0


def scene_stats(sample: np.ndarray) -> np.ndarray:
    """Robust location and scale per date and band.

    Args:
        sample: (t, c, n) pixels of the scene (any numeric dtype), NaN = nodata.

    Returns:
        (t, c, 2) float32: ``[..., 0]`` median, ``[..., 1]`` scale (IQR / 1.349, falling back to
        MAD, then std, then 1 for constant bands, always > 0). A date with no valid pixel gets
        (0, 1).
    """
    sample = np.asarray(sample, dtype=np.float64)
    if sample.ndim != 3:
        raise ValueError(f"scene_stats: sample must be (t, c, n), got shape {sample.shape}")
    t, c, _ = sample.shape
    stats = np.zeros((t, c, 2), dtype=np.float32)
    stats[..., 1] = 1.0
    for i in range(t):
        for b in range(c):
            v = sample[i, b]
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            med = float(np.median(v))
            stats[i, b] = (med, _robust_scale(v, med))
    return stats
