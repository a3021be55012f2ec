"""Losses for rare, small change: focal + Dice on the change mask, cross-entropy on the date.

Label encodings (docs/DESIGN.md): change 0/1, 255 = ignore; date index j in 1..T-1 = change first
seen on date j (interval j-1), 0 = no change, 255 = unknown.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IGNORE", "cloud_loss", "dice_loss", "focal_loss", "interval_loss", "showing_change"]

#: Ignore value of the change mask and the date index.
IGNORE = 255


def focal_loss(
    logit: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    alpha: float = 0.5,
    weight: Tensor | None = None,
) -> Tensor:
    """Binary focal loss (Lin et al. 2017), mean over labelled pixels.

    Args:
        logit: (b, h, w) change logits.
        target: (b, h, w) uint8/long: 0, 1, or :data:`IGNORE`.
        gamma: focusing exponent (0 gives weighted cross-entropy).
        alpha: weight of the change class (1 - alpha for no change).
        weight: optional (b, h, w) per-pixel weights (e.g. more for micro-objects).
    """
    keep = target != IGNORE
    if not keep.any():
        return logit.sum() * 0.0
    z = logit[keep]
    y = target[keep].to(z.dtype)
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    p_t = torch.exp(-ce)
    w = alpha * y + (1.0 - alpha) * (1.0 - y)
    if weight is not None:
        w = w * weight[keep].to(z.dtype)
    return (w * (1.0 - p_t) ** gamma * ce).mean()


def cloud_loss(
    logits: Tensor, clouds: Tensor, valid: Tensor, weight: Tensor | None = None
) -> Tensor:
    """Binary cross-entropy of the cloud head over valid pixels with a cloud label.

    Args:
        logits: (b, t, h, w) cloud logits.
        clouds: (b, t, h, w) uint8: 1 cloud or shadow, 0 clear, :data:`IGNORE` unknown.
        valid: (b, t, h, w) bool input validity (nodata and masked dates are not judged).
        weight: optional (b, t, h, w) per-pixel weights.
    """
    keep = (clouds != IGNORE) & valid.to(torch.bool)
    if not keep.any():
        return logits.sum() * 0.0
    ce = F.binary_cross_entropy_with_logits(
        logits[keep], clouds[keep].to(logits.dtype), reduction="none"
    )
    if weight is not None:
        ce = ce * weight[keep].to(ce.dtype)
    return ce.mean()


def showing_change(change: Tensor, date_index: Tensor, t: int) -> Tensor:
    """(b, t, h, w) bool: the pixel is labelled change and date ``i`` shows it (i >= its date)."""
    j = date_index.long()
    known = (change == 1) & (j >= 1) & (j < IGNORE)
    dates = torch.arange(t, device=change.device).view(1, t, 1, 1)
    return known[:, None] & (dates >= j[:, None])


def dice_loss(logit: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss of the change class over the whole batch, ignoring :data:`IGNORE`."""
    keep = target != IGNORE
    p = torch.sigmoid(logit) * keep
    y = (target == 1).to(p.dtype)
    inter = (p * y).sum()
    return 1.0 - (2.0 * inter + eps) / (p.sum() + y.sum() + eps)


def interval_loss(interval_logits: Tensor, change: Tensor, date_index: Tensor) -> Tensor:
    """Cross-entropy of the change interval where change is present and its date is known.

    Args:
        interval_logits: (b, t-1, h, w); masked intervals carry a very negative logit.
        change: (b, h, w) change mask (1 = change).
        date_index: (b, h, w) j in 1..t-1 (first date the change is seen), 0 or 255 otherwise.
    """
    n = interval_logits.shape[1]
    j = date_index.long()
    keep = (change == 1) & (j >= 1) & (j <= n)
    if not keep.any():
        return interval_logits.sum() * 0.0
    logits = interval_logits.permute(0, 2, 3, 1)[keep]  # (m, t-1)
    target = j[keep] - 1
    # A labelled date can be masked (e.g. cloud on the first date the change shows): drop those,
    # the model can only put the change on a valid date.
    ok = logits.gather(1, target[:, None])[:, 0] > -1e3
    if not ok.any():
        return interval_logits.sum() * 0.0
    return F.cross_entropy(logits[ok], target[ok])
