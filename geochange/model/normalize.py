"""Scene-wide input normalisation of the CNN-LSTM, in numpy (:func:`apply`) or in torch on
the tensor's device (:func:`apply_tensor`: the same values, bit for bit).

Statistics are robust (median and IQR / 1.349, :func:`geochange.robust.scene_stats`) per date
and band, computed ONCE for the scene from a decimated sample (``io.read.read_sample``), never per
chunk: per-chunk statistics would change with the chunk size and break seam-free tiling.
Standardising every date separately
removes per-date illumination gain and offset, and makes uint8, uint16 and float reflectance
look alike to the network.

Nodata (NaN) is filled by carrying the previous valid date forward (then the first valid date
backward for leading gaps), so a nodata date looks exactly like "no change"; the network also
gets the validity mask and does not update its state there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads only with the function that needs it
    import torch

__all__ = ["CLIP", "apply", "apply_tensor"]

#: Standardised values are clipped to [-CLIP, CLIP] (clouds, saturated pixels).
CLIP = 6.0


def apply(
    tile: np.ndarray, stats: np.ndarray, clip: float = CLIP, in_place: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Standardise a tile with scene statistics and fill nodata along time.

    Args:
        tile: (t, c, h, w) bands in source units (any dtype), NaN = nodata; a pixel is invalid
            on a date when any of its bands is not finite.
        stats: (t, c, 2) from :func:`geochange.robust.scene_stats` for the same dates and bands.
        clip: standardised values are clipped to [-clip, clip].
        in_place: a float32 ``tile`` becomes ``x`` (no copy of the series; the same values).

    Returns:
        ``x`` (t, c, h, w) float32, standardised, clipped and NaN-free (nodata carried forward
        from the previous valid date, leading nodata backward from the first valid date, 0 where
        no date is valid) and ``valid`` (t, h, w) bool.
    """
    source = tile
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
    if in_place and tile is source:
        x = np.subtract(tile, stats[..., 0, None, None], out=tile)
        np.divide(x, stats[..., 1, None, None], out=x)
    else:
        x = (tile - stats[..., 0, None, None]) / stats[..., 1, None, None]
    del source, tile
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


def apply_tensor(
    tile: torch.Tensor, stats: torch.Tensor, clip: float = CLIP
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`apply` in torch, on the device of ``tile``, overwriting ``tile`` (float32,
    (t, c, h, w)) with ``x``: the same operations in the same order, so the same values as
    :func:`apply` bit for bit. A GPU then normalises the tile it was sent, not the CPU.

    Returns:
        ``x`` (``tile`` itself) and ``valid`` (t, h, w) bool, on the same device.
    """
    import torch

    if tile.dtype != torch.float32 or tile.ndim != 4:
        raise ValueError(f"apply_tensor: tile must be float32 (t, c, h, w), got {tile.dtype} "
                         f"{tuple(tile.shape)}")  # fmt: skip
    stats = stats.to(device=tile.device, dtype=torch.float32)
    if tuple(stats.shape) != (*tile.shape[:2], 2):
        raise ValueError(
            f"apply_tensor: stats of shape {tuple(stats.shape)} do not fit a tile of "
            f"{tuple(tile.shape[:2])} (dates, bands)"
        )
    if tile.device.type == "cpu":  # numpy's test is several times faster on the CPU
        valid = torch.from_numpy(np.isfinite(tile.numpy()).all(axis=1))
    else:
        valid = torch.isfinite(tile).all(dim=1)
    x = tile.sub_(stats[..., 0, None, None]).div_(stats[..., 1, None, None])
    x.clamp_(-clip, clip)
    t = x.shape[0]
    inv = ~valid[:, None]
    for i in range(1, t):
        torch.where(inv[i], x[i - 1], x[i], out=x[i])
    seen = valid.clone()  # seen[i]: valid on some date up to i
    for i in range(1, t):
        torch.logical_or(seen[i - 1], valid[i], out=seen[i])
    for i in range(t - 2, -1, -1):
        torch.where(~seen[i][None], x[i + 1], x[i], out=x[i])
    torch.nan_to_num_(x, nan=0.0)
    return x, valid
