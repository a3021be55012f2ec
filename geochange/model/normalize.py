"""Scene-wide input normalisation of the CNN-LSTM (numpy only).

Statistics are robust (median and IQR / 1.349) per date and band, computed ONCE for the scene
from a decimated sample (``stack.read_sample``), never per chunk: per-chunk statistics would
change with the chunk size and break seam-free tiling. Standardising every date separately
removes per-date illumination gain and offset, and makes uint8, uint16 and float reflectance
look alike to the network.

Nodata (NaN) is filled by carrying the previous valid date forward (then the first valid date
backward for leading gaps), so a nodata date looks exactly like "no change"; the network also
gets the validity mask and does not update its state there.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLIP", "apply", "scene_stats"]

#: Standardised values are clipped to [-CLIP, CLIP] (clouds, saturated pixels).
CLIP = 6.0
_IQR_TO_SIGMA = 1.349
_MAD_TO_SIGMA = 1.4826


def _robust_scale(v: np.ndarray, median: float) -> float:
    q25, q75 = np.percentile(v, [25.0, 75.0])
    scale = (q75 - q25) / _IQR_TO_SIGMA
    floor = 1e-6 * max(abs(median), 1e-3)
    if scale > floor:
        return float(scale)
    scale = float(np.median(np.abs(v - median))) * _MAD_TO_SIGMA
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


def apply(tile: np.ndarray, stats: np.ndarray, clip: float = CLIP) -> tuple[np.ndarray, np.ndarray]:
    """Standardise a tile with scene statistics and fill nodata along time.

    Args:
        tile: (t, c, h, w) bands in source units (any dtype), NaN = nodata; a pixel is invalid
            on a date when any of its bands is not finite.
        stats: (t, c, 2) from :func:`scene_stats` for the same dates and bands.
        clip: standardised values are clipped to [-clip, clip].

    Returns:
        ``x`` (t, c, h, w) float32, standardised, clipped and NaN-free (nodata carried forward
        from the previous valid date, leading nodata backward from the first valid date, 0 where
        no date is valid) and ``valid`` (t, h, w) bool.
    """
    tile = np.asarray(tile, dtype=np.float32)
    stats = np.asarray(stats, dtype=np.float32)
    if tile.ndim != 4:
        raise ValueError(f"apply: tile must be (t, c, h, w), got shape {tile.shape}")
    if stats.shape != (*tile.shape[:2], 2):
        raise ValueError(
            f"apply: stats of shape {stats.shape} do not fit a tile of {tile.shape[:2]} "
            "(dates, bands); compute them with scene_stats on a sample of the same stack"
        )
    valid = np.isfinite(tile).all(axis=1)
    x = (tile - stats[..., 0, None, None]) / stats[..., 1, None, None]
    np.clip(x, -clip, clip, out=x)
    t = x.shape[0]
    inv = ~valid[:, None]  # (t, 1, h, w)
    # Forward fill: an invalid date takes the last valid date's values.
    for i in range(1, t):
        x[i] = np.where(inv[i], x[i - 1], x[i])
    # Backward fill for the leading gap: positions never valid so far take the next date.
    seen = np.cumsum(valid, axis=0) > 0
    for i in range(t - 2, -1, -1):
        x[i] = np.where(~seen[i][None], x[i + 1], x[i])
    np.nan_to_num(x, copy=False, nan=0.0)
    return x, valid
