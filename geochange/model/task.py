"""LightningModule for the CNN-LSTM: losses, metrics, optimizer (the network lives apart).

Batches are dicts from :mod:`geochange.model.data`: ``x`` (b, t, c, h, w) float32 normalised,
``valid`` (b, t, h, w) bool, ``change`` (b, h, w) uint8 (255 = ignore), ``date_index`` (b, h, w)
long (j in 1..t-1 = change first seen on date j; 0 none; 255 unknown); optionally ``clouds``
(b, t, h, w) uint8 (1 cloud or shadow, 0 clear, 255 unknown) for a cloud head and ``weight``
(b, h, w) float32 per-pixel weights of the focal loss.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex

from geochange.model.cnn_lstm import CHANGE_WINDOW, CNNLSTM, MASKED_LOGIT
from geochange.model.losses import (
    IGNORE,
    cloud_loss,
    dice_loss,
    focal_loss,
    interval_loss,
    showing_change,
)

__all__ = ["ChangeTask", "OneCycleByProgress"]

Stage = Literal["train", "val", "test"]

#: Weight in the cloud loss of a date that shows a labelled change (see ``ChangeTask.losses``).
CLOUD_CHANGE_WEIGHT = 4.0


class OneCycleByProgress:
    """LR factor of a one-cycle schedule (linear warm-up, cosine decay to ``final``) driven by
    progress = max(step / total_steps, elapsed / time_budget_s).

    With a wall-clock budget (``max_time``), training that is slower than planned still anneals
    the learning rate before the time limit stops it, instead of ending at a high LR.
    """

    def __init__(
        self,
        total_steps: int,
        time_budget_s: float | None = None,
        warmup: float = 0.1,
        final: float = 0.02,
    ) -> None:
        self.total_steps = max(1, int(total_steps))
        self.time_budget_s = time_budget_s
        self.warmup = warmup
        self.final = final
        self.start: float | None = None

    def progress(self, step: int) -> float:
        p = step / self.total_steps
        if self.time_budget_s:
            if self.start is None:
                self.start = time.monotonic()
            p = max(p, (time.monotonic() - self.start) / self.time_budget_s)
        return min(1.0, p)

    def __call__(self, step: int) -> float:
        p = self.progress(step)
        if p < self.warmup:
            return self.final + (1.0 - self.final) * p / self.warmup
        q = (p - self.warmup) / max(1e-9, 1.0 - self.warmup)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * q))


class ChangeTask(pl.LightningModule):
    """Train a :class:`CNNLSTM` on change masks and change dates.

    Args:
        in_bands, features, hidden, encoder_layers, recurrent_kernel, head_hidden,
            context_dilations, shift_radius, wavelengths, clouds, local_contrast,
            context_skip, spectral_bands, change_window: the network (see :class:`CNNLSTM`).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        scheduler: "onecycle" (warm-up + cosine decay over the trainer's ``max_steps`` or
            ``time_budget_s``, whichever ends first), "cosine" or "none".
        time_budget_s: wall-clock budget of the run in seconds (the trainer's ``max_time``), so
            the one-cycle schedule ends in time; None = by steps only.
        focal_weight, dice_weight, date_weight: loss weights.
        cloud_weight: weight of the cloud head's loss (batches with cloud labels, ``clouds``
            models only).
        focal_gamma, focal_alpha: focal loss parameters.
        name: model name stored in checkpoints.
        trained_on: short description of the training data, stored in checkpoints.
    """

    def __init__(
        self,
        in_bands: int | None = None,
        features: int = 16,
        hidden: int = 16,
        encoder_layers: int = 2,
        recurrent_kernel: int = 3,
        head_hidden: int = 16,
        context_dilations: tuple[int, ...] | list[int] = (1,),
        shift_radius: int = 0,
        wavelengths: bool = False,
        clouds: bool = False,
        local_contrast: int = 0,
        context_skip: bool = False,
        spectral_bands: int = 0,
        change_window: int = CHANGE_WINDOW,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        scheduler: Literal["onecycle", "cosine", "none"] = "onecycle",
        time_budget_s: float | None = None,
        focal_weight: float = 1.0,
        dice_weight: float = 0.5,
        date_weight: float = 0.5,
        cloud_weight: float = 0.5,
        focal_gamma: float = 2.0,
        focal_alpha: float = 0.5,
        name: str = "cnn-lstm",
        trained_on: str = "unknown",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = CNNLSTM(
            in_bands=in_bands,
            features=features,
            hidden=hidden,
            encoder_layers=encoder_layers,
            recurrent_kernel=recurrent_kernel,
            head_hidden=head_hidden,
            context_dilations=context_dilations,
            shift_radius=shift_radius,
            wavelengths=wavelengths,
            clouds=clouds,
            local_contrast=local_contrast,
            context_skip=context_skip,
            spectral_bands=spectral_bands,
            change_window=change_window,
        )
        self.val_f1 = BinaryF1Score(ignore_index=IGNORE)
        self.val_iou = BinaryJaccardIndex(ignore_index=IGNORE)
        self.test_f1 = BinaryF1Score(ignore_index=IGNORE)
        self.test_iou = BinaryJaccardIndex(ignore_index=IGNORE)

    def forward(
        self, x: Tensor, valid: Tensor, wavelengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self.net(x, valid, wavelengths)

    def losses(self, batch: dict) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
        """Weighted total loss, its parts, and the network's (change, interval) logits."""
        change_logit, interval_logits, cloud_logits = self.net(
            batch["x"], batch["valid"], batch.get("wavelengths"), return_clouds=True
        )
        change = batch["change"]
        if cloud_logits is not None:
            # Where the cloud head leaves no interval that can hold a change (all dates after the
            # first valid one flagged), the change cannot be seen: not a lesson for the change
            # head (its logit is MASKED_LOGIT there, a loss of ~1e4 per pixel).
            blind = interval_logits.amax(dim=1) <= 0.5 * MASKED_LOGIT
            change = torch.where(blind, torch.full_like(change, IGNORE), change)
        hp = self.hparams
        parts = {
            "focal": focal_loss(
                change_logit, change, hp.focal_gamma, hp.focal_alpha, batch.get("weight")
            ),
            "dice": dice_loss(change_logit, change),
            "date_ce": interval_loss(interval_logits, change, batch["date_index"]),
        }
        loss = (
            hp.focal_weight * parts["focal"]
            + hp.dice_weight * parts["dice"]
            + hp.date_weight * parts["date_ce"]
        )
        if cloud_logits is not None and "clouds" in batch:
            # Flagging a real change hides it for good; a missed cloud the change head can still
            # reject: dates that show a change weigh CLOUD_CHANGE_WEIGHT times.
            shows = showing_change(batch["change"], batch["date_index"], cloud_logits.shape[1])
            weight = 1.0 + (CLOUD_CHANGE_WEIGHT - 1.0) * shows.to(cloud_logits.dtype)
            parts["cloud"] = cloud_loss(cloud_logits, batch["clouds"], batch["valid"], weight)
            loss = loss + hp.cloud_weight * parts["cloud"]
        return loss, parts, change_logit, interval_logits

    def _shared_step(self, batch: dict, stage: Stage) -> Tensor:
        loss, parts, change_logit, interval_logits = self.losses(batch)
        change = batch["change"]
        b = change.shape[0]
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=b, on_step=on_step, on_epoch=True)
        for k, v in parts.items():
            self.log(f"{stage}/{k}", v, batch_size=b, on_step=False, on_epoch=True)
        if stage != "train":
            prob = torch.sigmoid(change_logit)
            target = change.long()
            f1, iou = (
                (self.val_f1, self.val_iou) if stage == "val" else (self.test_f1, self.test_iou)
            )
            f1.update(prob, target)
            iou.update(prob, target)
            self.log(f"{stage}/f1", f1, prog_bar=True, batch_size=b, on_step=False, on_epoch=True)
            self.log(f"{stage}/iou", iou, batch_size=b, on_step=False, on_epoch=True)
            # Date accuracy on detected, truly changed pixels with a known date.
            j = batch["date_index"].long()
            hit = (prob > 0.5) & (change == 1) & (j >= 1) & (j < IGNORE)
            if hit.any():
                k = interval_logits.argmax(dim=1)
                acc = (k[hit] == j[hit] - 1).float().mean()
                self.log(
                    f"{stage}/date_acc",
                    acc,
                    batch_size=int(hit.sum()),
                    on_step=False,
                    on_epoch=True,
                )
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Probabilities: ``change`` (b, h, w) and ``interval`` (b, t-1, h, w) (softmax)."""
        change_logit, interval_logits = self.net(
            batch["x"], batch["valid"], batch.get("wavelengths")
        )
        return {
            "change": torch.sigmoid(change_logit),
            "interval": torch.softmax(interval_logits, dim=1),
        }

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = int(self.trainer.max_steps) if self.trainer is not None else -1
        if hp.scheduler == "none" or total <= 0:
            return {"optimizer": opt}
        if hp.scheduler == "onecycle":
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, OneCycleByProgress(total, hp.time_budget_s)
            )
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=hp.lr / 50)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from geochange._version import __version__

        checkpoint["geochange_meta"] = {
            "name": self.hparams.name,
            "version": __version__,
            "in_bands": self.hparams.in_bands,
            "trained_on": self.hparams.trained_on,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
