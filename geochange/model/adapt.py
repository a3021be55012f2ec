"""Self-supervised adaptation of the CNN-LSTM to the user's own scene, without labels.

``adapt(stack, "scene_model.ckpt")`` fine-tunes the default (or a given) model for a few minutes
on chips cut from the stack itself, then writes a checkpoint that ``geochange detect --model``
loads like any other. Two kinds of examples teach the scene:

- **no change, with the scene's real nuisance**: real chips of the stack. Pixels whose CVA-like
  change magnitude (RMS over bands of the difference of consecutive valid dates, scene-normalised,
  counting only what lasts one date longer: :func:`geochange.model.pseudo.change_magnitude`) is high are *unknown*
  (label 255, ignored by the loss): above the scene's ``1 - ignore_top``
  quantile **or** above its Otsu split, whichever is lower, dilated by ``ignore_dilate`` pixels.
  Taking the lower of the two guards the scene with a lot of real change: with a bimodal
  magnitude the Otsu split ignores the whole changed mode, not just the top few percent. Pixels
  the starting model calls change (probability ``>= keep_confident``, 0.5) are ignored too, so
  the model is not taught to unlearn its detections (on a scene where a third of the pixels
  changed, real change lies far below the top few percent of magnitude). With 3 dates or more,
  unknown pixels it rejects with probability ``<= keep_rejected`` are no change after all (it
  keeps rejecting a cloud on the first date or a field greening up instead of drifting towards
  them); on a 2-date pair that rule would teach the real changes the start model misses as no
  change, so it is off there. Everything else is no change. A piece pasted over an unknown pixel
  is unknown too.
- **change, pasted**: into a real chip, pieces of the same scene taken from elsewhere (real roofs,
  fields, water, soil of this scene, with their own appearance on every date) are pasted from a
  random date on, with footprints like buildings (rectangles), L-shapes, roads (thin polylines)
  and blobs, 2 to ~32 pixels across, some blended at low contrast; labelled change with the first
  date on which they are seen (:func:`geochange.model.pseudo.paste_changes`). With T > 2 dates the date is random, so
  the change-date head learns the scene's own series. Nodata dates stay nodata (``valid`` False),
  never learned as change. When the stack's red and NIR wavelengths are known, no piece that
  turns its footprint greener is pasted: a field greening up is phenology, not change.

Chips are normalised exactly as at inference (``robust.scene_stats`` of ``read_sample``, then
``normalize.apply``), and cut from windowed reads: a small scene is read once, a large one
through a pool of random windows that is refreshed while training, never in full.

The adapted weights are finally interpolated with the starting weights, ``alpha * adapted +
(1 - alpha) * base`` (a weight-space ensemble; fine-tuning from the same start stays in one
basin, so the interpolation behaves like averaging the two models, at no cost at inference).
``alpha`` is stored in the checkpoint's meta with the provenance: stack paths and dates, base
model, seed, budget, steps, ``adapted: True`` (which ``detect`` copies to the ``runs`` layer).

The CNN-LSTM has no BatchNorm (inputs are standardised scene-wide); should a network carry one,
its statistics are frozen (kept in eval mode) during adaptation.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geochange.bands import wavelength_array
from geochange.errors import InputError, ModelError, OutputExistsError
from geochange.io.read import read_sample
from geochange.io.stack import Stack, open_stack
from geochange.model import load_model, save_model
from geochange.model.cnn_lstm import CNNLSTM
from geochange.model.losses import IGNORE, dice_loss, focal_loss, interval_loss
from geochange.model.normalize import apply
from geochange.model.pseudo import (
    ScenePool,
    Setup,
    change_magnitude,
    ignore_threshold,
    make_batch,
    red_nir_bands,
)
from geochange.model.task import OneCycleByProgress
from geochange.robust import scene_stats
from geochange.stages import prepare_stack

__all__ = [
    "AdaptResult",
    "adapt",
    "adapt_loss",
    "adapt_network",
    "interpolate",
]

logger = logging.getLogger(__name__)

#: Seconds kept from the budget for writing the checkpoint (at most 5 % of the budget).
_SAVE_RESERVE_S = 3.0


# ----------------------------------------------------------------------------------------------
# The adaptation loop


@dataclass
class AdaptResult:
    """What :func:`adapt_network` returns.

    Attributes:
        base: the starting network (unchanged, eval mode, CPU).
        adapted: the fine-tuned network (eval mode, CPU), before interpolation.
        base_meta: the starting model's meta.
        info: steps, seconds, thresholds, losses: the provenance written to the checkpoint.
    """

    base: CNNLSTM
    adapted: CNNLSTM
    base_meta: dict
    info: dict[str, Any] = field(default_factory=dict)


def adapt_loss(
    change_logit: torch.Tensor,
    interval_logits: torch.Tensor,
    change: torch.Tensor,
    date_index: torch.Tensor,
    date_weight: float = 0.5,
) -> torch.Tensor:
    """Focal + 0.5 Dice on the change mask + ``date_weight`` × date cross-entropy.

    The losses of :mod:`geochange.model.losses` (the default model's weights): pixels labelled
    :data:`IGNORE` in ``change`` contribute nothing, nor do dates labelled :data:`IGNORE`.

    Args:
        change_logit: (b, h, w). interval_logits: (b, t-1, h, w).
        change: (b, h, w) 0/1/255. date_index: (b, h, w) long, 1..t-1, 0 or 255.
    """
    return (
        focal_loss(change_logit, change)
        + 0.5 * dice_loss(change_logit, change)
        + date_weight * interval_loss(interval_logits, change, date_index)
    )


def _freeze_norm(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def adapt_network(
    stack: Stack,
    *,
    model: str | os.PathLike | None = None,
    minutes: float = 3.0,
    seed: int = 0,
    chip: int = 64,
    device: str = "auto",
    progress: bool = False,
    batch_size: int = 8,
    lr: float = 1e-3,
    max_steps: int | None = None,
    max_dates: int = 8,
    paste_prob: float = 0.7,
    ignore_top: float = 0.08,
    ignore_dilate: int = 2,
    keep_confident: float | None = 0.5,
    keep_rejected: float | None = 0.05,
    min_contrast: float = 0.5,
    date_weight: float = 0.5,
    avoid_greening: bool = True,
    start_time: float | None = None,
) -> AdaptResult:
    """Fine-tune a model on self-labelled chips of ``stack`` (see the module docstring).

    Args:
        stack: the user's stack.
        model: starting checkpoint; None = the shipped default model.
        minutes: wall-clock budget of the whole call, reading included.
        seed: seeds chips, pasted changes and torch.
        chip: chip edge in pixels.
        device: "auto", "cpu" or "cuda".
        progress: a tqdm bar over the budget.
        batch_size: chips per step.
        lr: peak AdamW learning rate (warm-up, then cosine decay by time or steps).
        max_steps: stop after this many steps too (None = by time only; with a step limit and a
            generous budget the run is reproducible step for step).
        max_dates: at most this many dates per batch (a random ordered subset of longer series).
        paste_prob: share of chips that get pasted changes.
        ignore_top: share of real pixels with the highest change magnitude always ignored.
        ignore_dilate: dilation (pixels) of the ignored area.
        keep_rejected: real pixels left unknown for their high magnitude that the starting
            model calls change with at most this probability are taught as no change after all
            (None = off; always off on a 2-date stack): what it already rejects — a cloud on
            the first date, a field greening up — it keeps rejecting instead of drifting
            towards calling it change.
        keep_confident: also ignore real pixels the starting model calls change with at least
            this probability (None = off).
        min_contrast: pasted pieces make at least this contrast, as a share of the ignore
            threshold of the change magnitude (see :func:`geochange.model.pseudo.paste_changes`).
        date_weight: weight of the change-date loss.
        avoid_greening: with red and NIR wavelengths known, paste no piece that turns its
            footprint greener (see :func:`geochange.model.pseudo.paste_changes`).
        start_time: ``time.monotonic()`` at which the budget started (default: now).

    Raises:
        ModelError: unreadable model, or a band count the model does not take.
        InputError: fewer than two dates, or a non-positive budget.
    """
    from geochange.stages.network import resolve_device

    t0 = time.monotonic() if start_time is None else start_time
    budget = 60.0 * float(minutes)
    if not budget > 0:
        raise InputError(f"--minutes: got {minutes}, expected a positive number of minutes")
    if stack.T < 2:
        raise InputError(f"stack: {stack.T} date(s), at least 2 are needed to adapt a change model")
    dev = resolve_device(device)
    base, base_meta = load_model(model, map_location="cpu")
    if base.in_bands is not None and base.in_bands != stack.band_count:
        raise ModelError(
            f"model {base_meta.get('path')}: trained on {base.in_bands} bands but the stack has "
            f"{stack.band_count}; adapt the default band-agnostic model or one with this band count"
        )
    rng = np.random.default_rng([int(seed), 20240611])
    torch.manual_seed(int(seed))
    if stack.T < 3:
        keep_rejected = None  # a pair: what the start model misses is not taught as no change

    sample = read_sample(stack)
    stats = scene_stats(sample)
    sx, sv = apply(sample[:, :, None, :], stats)
    thr = ignore_threshold(change_magnitude(sx, sv)[0], ignore_top)
    h, w = stack.grid.shape
    side = min(chip, h, w)  # square chips: rotations keep the shape
    red_nir = red_nir_bands(stack.wavelengths) if avoid_greening else None
    setup = Setup(stats, thr, (side, side), max(2, int(max_dates)), red_nir)
    pool = ScenePool(stack, rng, window=4 * chip, n_windows=16)
    wavelengths = torch.from_numpy(wavelength_array(stack.wavelengths, stack.band_count)).to(dev)

    net = copy.deepcopy(base).to(dev).train()
    _freeze_norm(net)
    use_ref = keep_confident is not None or keep_rejected is not None
    ref = base.to(dev).eval() if use_ref else None
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    planned = int(max_steps) if max_steps else 10**9
    reserve = min(_SAVE_RESERVE_S, 0.05 * budget)
    remaining = budget - (time.monotonic() - t0) - reserve
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, OneCycleByProgress(planned, max(remaining, 1e-3), warmup=0.05)
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=round(budget), unit="s", desc="adapt", leave=False)
    steps, losses = 0, []
    deadline = t0 + budget - reserve
    last = 0.0  # duration of the last step
    try:
        while steps < planned:
            tick = time.monotonic()
            if tick + last > deadline:  # the next step would overrun the budget
                break
            b = make_batch(pool, setup, rng, batch_size, paste_prob, ignore_dilate, min_contrast)
            x = torch.from_numpy(b["x"]).to(dev)
            valid = torch.from_numpy(b["valid"]).to(dev)
            change = torch.from_numpy(b["change"]).to(dev)
            date_index = torch.from_numpy(b["date_index"].astype(np.int64)).to(dev)
            wl = wavelengths.expand(x.shape[0], -1)
            if ref is not None:
                with torch.no_grad():
                    p_ref = torch.sigmoid(ref(x, valid, wl)[0])
                if keep_confident is not None:
                    # Real pixels the start model is sure about: do not teach "no change" there.
                    change = torch.where(
                        (change == 0) & (p_ref >= keep_confident), change.new_tensor(IGNORE), change
                    )
                if keep_rejected is not None:
                    unsure = torch.from_numpy(b["unsure"]).to(dev)
                    change = torch.where(
                        unsure & (p_ref <= keep_rejected), change.new_tensor(0), change
                    )
            change_logit, interval_logits = net(x, valid, wl)
            loss = adapt_loss(change_logit, interval_logits, change, date_index, date_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            losses.append(float(loss.detach()))
            if steps % 10 == 0:
                pool.refresh(rng)
            last = time.monotonic() - tick
            if bar is not None:
                bar.n = min(round(budget), round(time.monotonic() - t0))
                bar.set_postfix(step=steps, loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    net = net.cpu().eval()
    base = base.cpu().eval()
    info = {
        "steps": steps,
        "seconds": round(time.monotonic() - t0, 1),
        "chip": int(chip),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "ignore_threshold": round(float(thr), 4),
        "ignore_top": float(ignore_top),
        "keep_confident": keep_confident,
        "keep_rejected": keep_rejected,
        "min_contrast": float(min_contrast),
        "greening_rule": None if red_nir is None else list(red_nir),
        "loss_first": round(float(np.mean(losses[:20])), 4) if losses else None,
        "loss_last": round(float(np.mean(losses[-20:])), 4) if losses else None,
        "device": dev,
    }
    logger.info(
        "adapt: %d steps in %.1f s (loss %s -> %s)",
        steps,
        info["seconds"],
        info["loss_first"],
        info["loss_last"],
    )
    return AdaptResult(base, net, base_meta, info)


def interpolate(base: CNNLSTM, adapted: CNNLSTM, alpha: float) -> CNNLSTM:
    """``alpha * adapted + (1 - alpha) * base``, parameter by parameter (a new network)."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha: got {alpha}, expected a weight in [0, 1]")
    out = copy.deepcopy(adapted)
    sb, sa = base.state_dict(), adapted.state_dict()
    out.load_state_dict(
        {k: (alpha * sa[k].float() + (1.0 - alpha) * sb[k].float()).to(sa[k].dtype) for k in sa}
    )
    return out.eval()


def adapt(
    inputs: str | os.PathLike | Sequence[str | os.PathLike] | Stack,
    output_ckpt: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    minutes: float = 3.0,
    seed: int = 0,
    chip: int = 64,
    device: str = "auto",
    progress: bool = False,
    dates: Sequence[str | dt.date] | None = None,
    align: bool = False,
    alpha: float = 0.5,
    overwrite: bool = False,
    start_time: float | None = None,
    masks: Any = None,
    mask_values: Any = None,
    wavelengths: Any = None,
    skip: frozenset[str] | Sequence[str] = frozenset(),
    **kwargs: Any,
) -> Path:
    """Adapt a change model to a stack without labels and write the adapted checkpoint.

    Args:
        inputs: GeoTIFFs (one per date), a folder, a glob, or an opened ``Stack``.
        output_ckpt: checkpoint to write (loads with ``geochange detect --model``).
        model: starting checkpoint; None = the shipped default model.
        minutes: wall-clock budget of the whole call (default 3: a 512×512 scene on 2 CPU
            cores); more minutes, more steps.
        seed: random seed.
        chip: chip edge in pixels.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        progress: a tqdm progress bar.
        dates: one date per file, as ``open_stack``.
        align: resample every date onto the first date's grid.
        alpha: weight of the adapted parameters against the starting ones (1 = adapted only).
        overwrite: replace an existing ``output_ckpt``.
        start_time: ``time.monotonic()`` at which the budget started (default: now; the CLI
            starts it before importing torch).
        masks, mask_values: cloud / validity masks read as nodata (see ``open_stack``): masked
            dates are left out of the adaptation, never learnt as change.
        wavelengths: band centres in nm (see ``open_stack``).
        skip: stack stages left out (``{"coregister"}`` reads the dates as they are; by default
            whole-date shifts are undone first, as ``detect`` does; a ``Stack`` whose ``shifts``
            are set is used as it is).
        **kwargs: further options of :func:`adapt_network` (batch_size, lr, max_steps, ...).

    Returns:
        The checkpoint path. Its meta holds ``adapted: True``, ``adapted_on`` (stack paths,
        dates and masks), ``base_model``, ``seed``, ``minutes``, ``steps``, ``alpha`` and the settings.

    Raises:
        OutputExistsError: ``output_ckpt`` exists and ``overwrite`` is False.
    """
    t0 = time.monotonic() if start_time is None else start_time
    output_ckpt = Path(output_ckpt)
    if output_ckpt.exists() and not overwrite:
        raise OutputExistsError(f"output {output_ckpt}: exists; pass --overwrite to replace it")
    stack = (
        inputs
        if isinstance(inputs, Stack)
        else open_stack(
            inputs,
            dates=dates,
            align=align,
            masks=masks,
            mask_values=mask_values,
            wavelengths=wavelengths,
        )
    )
    stack, _ = prepare_stack(stack, skip)
    res = adapt_network(
        stack,
        model=model,
        minutes=minutes,
        seed=seed,
        chip=chip,
        device=device,
        progress=progress,
        start_time=t0,
        **kwargs,
    )
    net = interpolate(res.base, res.adapted, alpha)
    bm = res.base_meta
    meta = {
        "name": f"{bm.get('name', 'cnn-lstm')}-adapted",
        "trained_on": f"{bm.get('trained_on', 'unknown')}; adapted without labels on {len(stack.paths)} dates",
        "adapted": True,
        "adapted_on": {
            "inputs": [str(p) for p in stack.paths],
            "dates": [d.isoformat() for d in stack.dates],
            "shape": list(stack.shape),
            "masks": stack.mask_names,
            "wavelengths_nm": list(stack.wavelengths),
            "shifts_px": [list(s) for s in stack.shifts],
        },
        "base_model": str(model) if model is not None else "default",
        "base_model_path": bm.get("path"),
        "base_model_name": bm.get("name"),
        "seed": int(seed),
        "minutes": float(minutes),
        "alpha": float(alpha),
        **res.info,
    }
    save_model(net, output_ckpt, meta)
    logger.info("adapt: wrote %s", output_ckpt)
    return output_ckpt
