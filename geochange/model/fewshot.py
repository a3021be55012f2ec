"""Teach the change model what the user calls change, from a few example polygons.

``teach(stack, examples, "taught.ckpt")`` fine-tunes the default (or a given) CNN-LSTM on the
user's own scene and writes a checkpoint that ``geochange detect --model`` loads like any other,
with the decision threshold chosen from the examples in its meta (``detect`` uses it).

How it learns (:func:`teach_network`):

- **What it changes**: a spectral term added to the network (below); the encoder and the
  ConvLSTM stay as shipped, and so do the two heads (the interval head and the context decoder)
  unless ``steps`` > 0 asks to fine-tune them first. The backbone's output around the examples
  is computed once (:func:`_backbone`) and every fit runs on it: ten polygons cannot erase what
  the backbone learned, and a fit and a cross-validation take seconds. On the real pairs,
  fine-tuning the heads as well helped some scenes and hurt others more, so it is off by
  default.
- **What the heads learn from** when fine-tuned, each step, on every region around the examples
  (whole, not chips, so the 15-px context decoder sees what it sees at inference):
  the user's labels (1 change, 0 no change, classes weighted equally); the scene's own
  self-supervised "no change" of :mod:`geochange.model.pseudo` (unlabelled pixels with a low CVA-like
  magnitude that the starting model does not call change, at a lower weight); and rehearsal of
  a few synthetic training scenes (:func:`geochange.model.scenes.synthetic_scene`, seeds of the shipped
  model's training range) with their true labels and dates. An L2 pull towards the starting
  weights keeps the heads near what they were.
- **What the user calls change in this scene's spectra**: a *spectral term* added to the change
  logit (``CNNLSTM(spectral_bands=c)``, :func:`with_spectral`): a per-pixel network over the
  first and last dates' normalised bands, their difference and the final states. The shipped
  model knows change in general but not this labeller's (new roofs only? ploughed fields too?);
  a random forest on the band values alone already learns much of that from the examples, and
  this term lets the network do the same on top of what it sees. Being per pixel, it is fitted
  on the labelled pixels themselves after the heads (:meth:`_Teacher.fit_spectral`: full-batch;
  change and no change weighted by their real share where a completely reviewed area gives it,
  alike otherwise; the quiet pixels at the self-supervised weight), in seconds. The taught model then takes this sensor's band count only.
- **The threshold** is chosen on *held-out* examples: the out-of-fold probabilities of the
  cross-validation below, after the same refinement ``detect`` applies, by F1 (or, without a
  completely reviewed area, a positive-unlabelled criterion: :func:`threshold_curve`), the one
  closest to 0.5 within one standard error over folds of the best (:func:`pick_threshold`).
  Without a cross-validation it is chosen on the training examples (said so in the meta).
- **How much of the spectral term** (:func:`mixed`): without a completely reviewed area the
  term's fit weighs change and no change alike, not as the scene has them, so its weight
  (:data:`~geochange.model.heldout.MIXES`, 0 = the starting model) is chosen with the threshold
  on the same held-out examples (:func:`~geochange.model.heldout.pick_mix`): where polygons do
  not carry over to other polygons, the taught model leans back towards the shipped one.
  The folds, thresholds and weights are chosen in :mod:`geochange.model.heldout`.
- **An honest estimate**: spatially blocked k-fold (:func:`blocked_folds`): the examples are cut
  into units (whole polygons; a large reviewed area cut into square blocks), units are dealt to
  k folds so that each holds change, and each fold's units plus a buffer around them are left
  out of its fit. For each fold the threshold is chosen on the other folds' out-of-fold
  probabilities, then recall and the false-alarm rate are measured on the fold, and precision
  follows from them and the share of the scene outside the examples that the fold's model
  flags (:func:`~geochange.model.heldout.scene_estimate`): where the user looked, reviewed or
  drew, holds more change than the scene. That share (as the positive-unlabelled criterion's)
  is measured on the pixels around the examples and on :data:`SCENE_WINDOWS` windows of the
  rest of the scene (fewer on a long series, :data:`SCENE_BYTES`), each in proportion to the
  pixels it stands for: a spectral term that raises false alarms away from the examples shows
  there. The mean and spread over folds are the expected figures. With fewer change units than
  folds it says so.

Deterministic for a seed: a fixed number of steps per fit (the budget only cuts a fit short on a
slow machine, which the meta then records).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from geochange.bands import wavelength_array
from geochange.errors import InputError, ModelError, OutputExistsError
from geochange.io.examples import UNKNOWN, Examples
from geochange.io.read import read_sample
from geochange.io.stack import Stack
from geochange.model import heldout, load_model, save_model
from geochange.model.cnn_lstm import CNNLSTM, MASKED_LOGIT, shift_min_distance, spectral_input
from geochange.model.heldout import (
    best_threshold,
    blocked_folds,
    f1_precision_recall,
    pick_mix,
    pick_threshold,
    scene_estimate,
    threshold_curve,
)
from geochange.model.normalize import apply
from geochange.model.pseudo import change_magnitude, ignore_threshold
from geochange.robust import scene_stats
from geochange.stages import REGISTRY, Block, Context

__all__ = [
    "TaughtResult",
    "blocked_folds",
    "best_threshold",
    "default_minutes",
    "low_estimate",
    "pick_threshold",
    "teach",
    "teach_network",
    "threshold_curve",
]

logger = logging.getLogger(__name__)

#: Seeds of the synthetic training scenes rehearsed (the shipped model trained on 0-999).
REHEARSAL_SEEDS = (0, 1, 2)
#: Pixels around a fold's held-out units left out of its fit.
CV_BUFFER = 8
#: Weight of the scene's self-supervised "no change" pixels against the user's labels.
SELF_WEIGHT = 0.2
#: Weight of the rehearsed synthetic scenes' loss.
REHEARSAL_WEIGHT = 0.5
#: Crops of the cached backbone output per step, and their edge in pixels.
BATCH = 8
CROP = 48
#: Rehearsal crops per step.
REHEARSAL_BATCH = 2
#: Share of the no-change crops centred on a self-supervised quiet pixel.
SELF_SHARE = 0.3
#: Weight of the L2 pull of the heads towards their starting weights.
ANCHOR = 1e-3
#: Full-batch steps, learning rate, L2 weight and most pixels of each kind (change, no change,
#: quiet) of the spectral term's fit.
SPECTRAL_STEPS = 300
SPECTRAL_LR = 1e-2
SPECTRAL_L2 = 1e-4
SPECTRAL_PIXELS = 8_000
#: Windows of the rest of the scene (placed at random for the seed, away from the examples) and
#: their edge in pixels: with the pixels around the examples, they stand for the scene outside
#: the examples in the estimate and in the positive-unlabelled threshold.
SCENE_WINDOWS = 8
SCENE_WINDOW = 128
#: Most bytes the scene's windows keep (the frozen backbone's output on each): a long series
#: gets fewer windows, at least one.
SCENE_BYTES = 256 * 2**20
#: Fewest pixels outside the examples (around them and in the scene's windows) for the estimate
#: to take the scene's share of change from how many of them the taught model flags (fewer: a
#: review of nearly the whole scene, scored on the held-out examples alone).
SCENE_PIXELS = 2_000
#: Cross-validated F1 below which the examples are said not to carry over to the rest of the
#: scene (the taught model may then do worse than the shipped one outside them).
LOW_CV_F1 = 0.1


def low_estimate(cv: dict) -> str | None:
    """A warning when the blocked cross-validation expects the taught model to fail away from
    the examples (F1 below :data:`LOW_CV_F1`), else None."""
    f1 = cv.get("f1") if cv.get("k") else None
    if f1 is None or not f1 < LOW_CV_F1:
        return None
    return (
        f"teach: the examples do not carry over to held-out parts of the scene (expected F1 "
        f"{f1:.2f} ± {cv.get('f1_sd', 0.0):.2f} by {cv['k']}-fold blocked cross-validation): "
        "outside them the taught model may do worse than the shipped one; give examples spread "
        "over the scene, or compare with a run without --examples"
    )


def default_minutes(shape: Sequence[int]) -> float:
    """Budget sized to the scene: 5 minutes for 2 dates of 512² on 2 CPU cores, linear in
    dates × pixels, between 1 and 30 minutes. ``shape`` = (t, c, h, w)."""
    t, _, h, w = shape
    return float(np.clip(5.0 * t * h * w / (2 * 512 * 512), 1.0, 30.0))


# ----------------------------------------------------------------------------------------------
# The network split in two: backbone (frozen, run once) and heads (taught)


def _backbone(net: CNNLSTM, x: torch.Tensor, valid: torch.Tensor, wl: torch.Tensor | None):
    """Everything ``CNNLSTM.forward`` computes before its heads (same operations, same order).

    Returns:
        ``z`` (b, t-1, C, h, w): the interval head's inputs; ``final`` (b, 2H, h, w): the
        context decoder's input; ``possible`` (b, t-1, h, w) bool.
    """
    b, t, c, h, w = x.shape
    valid = valid.to(torch.bool)
    wl = (
        wl.to(device=x.device, dtype=x.dtype) if (net.uses_wavelengths and wl is not None) else None
    )
    feats = [net.encoder(net.stem(x[:, i], wl)) for i in range(t)]
    if net.cloud is not None and t >= 3:
        cl = net._cloud_logits(feats, valid)
        from geochange.model.cnn_lstm import CLOUD_GATE

        valid = valid & (torch.sigmoid(cl) < CLOUD_GATE)
    vmask = [valid[:, i, None] for i in range(t)]
    for i in range(1, t):
        feats[i] = torch.where(vmask[i], feats[i], feats[i - 1])
    dists: list[torch.Tensor] = []
    if net.match is not None:
        m, r = [net.match(f) for f in feats], net.shift_radius
        dists = [x.new_zeros(b, 2, h, w)] + [
            torch.cat(
                [shift_min_distance(m[i], m[i - 1], r), shift_min_distance(m[i - 1], m[i], r)], 1
            )
            for i in range(1, t)
        ]

    def step_input(i: int) -> torch.Tensor:
        from geochange.model.cnn_lstm import local_contrast

        diff = feats[i] - feats[i - 1] if i > 0 else torch.zeros_like(feats[0])
        local = [local_contrast(diff, net.local_contrast)] if net.local_contrast else []
        return torch.cat([feats[i], diff, *local, *dists[i : i + 1]], dim=1)

    zeros = x.new_zeros(b, net.hidden, h, w)
    hf, cf = zeros, zeros
    h_fwd = []
    for i in range(t):
        hf, cf = net.fwd.step(step_input(i), hf, cf, vmask[i])
        h_fwd.append(hf)
    seen = torch.cumsum(valid.to(torch.int32), dim=1) > 0
    possible = valid[:, 1:] & seen[:, :-1]
    hb, cb = zeros, zeros
    z: list[torch.Tensor] = [x.new_empty(0)] * (t - 1)
    for i in range(t - 1, -1, -1):
        inp = step_input(i)
        hb, cb = net.bwd.step(inp, hb, cb, vmask[i])
        if i >= 1:
            z[i - 1] = torch.cat([h_fwd[i - 1], hb, inp[:, net.features :]], dim=1)
    return torch.stack(z, dim=1), torch.cat([h_fwd[-1], hb], dim=1), possible


def _heads(
    net: CNNLSTM,
    z: torch.Tensor,
    final: torch.Tensor,
    possible: torch.Tensor,
    bands: torch.Tensor | None = None,
):
    """The rest of ``CNNLSTM.forward``: (change_logit (b, h, w), interval_logits (b, t-1, h, w)).

    ``bands`` (b, 3c, h, w): :func:`~geochange.model.cnn_lstm.spectral_input` for a network with
    a spectral term; None leaves that term out (the rehearsed scenes of other band counts)."""
    b, n, ch, h, w = z.shape
    interval = net.interval_head(z.reshape(b * n, ch, h, w))[:, 0].reshape(b, n, h, w)
    interval = torch.where(possible, interval, interval.new_tensor(MASKED_LOGIT))
    context = net.decoder(final)[:, 0]
    if net.skip is not None:
        context = context + net.skip(final)[:, 0]
    change = net.interval_evidence(interval) + context
    if net.spectral is not None and bands is not None:
        change = change + net.spectral(torch.cat([bands, final], dim=1))[:, 0]
    return change, interval


def _head_parameters(net: CNNLSTM) -> list[torch.nn.Parameter]:
    mods = [net.interval_head, net.decoder] + ([net.skip] if net.skip is not None else [])
    return [p for m in mods for p in m.parameters()]


# ----------------------------------------------------------------------------------------------
# Regions around the examples


@dataclass
class _Region:
    """A window of the scene around examples, with the frozen backbone's output cached."""

    y0: int
    x0: int
    x: np.ndarray  # (t, c, h, w) normalised
    valid: np.ndarray  # (t, h, w)
    label: np.ndarray  # (h, w) user's labels 1/0/255
    selfneg: np.ndarray  # (h, w) bool: self-supervised "no change"
    z: torch.Tensor
    final: torch.Tensor
    possible: torch.Tensor
    bands: torch.Tensor


def _regions(label: np.ndarray, pad: int, cell: int = 32) -> list[tuple[int, int, int, int]]:
    """Boxes (y0, x0, y1, x1) covering the labelled pixels with ``pad`` around them; nearby
    examples share a box (found on a ``cell``-px grid)."""
    h, w = label.shape
    lab = label != UNKNOWN
    gh, gw = -(-h // cell), -(-w // cell)
    coarse = np.zeros((gh, gw), bool)
    ys, xs = np.nonzero(lab)
    coarse[ys // cell, xs // cell] = True
    grown = ndimage.binary_dilation(coarse, iterations=max(1, -(-2 * pad // cell)))
    ids, n = ndimage.label(grown)
    boxes = []
    for sl in ndimage.find_objects(ids):
        inside = lab[sl[0].start * cell : sl[0].stop * cell, sl[1].start * cell : sl[1].stop * cell]
        yy, xx = np.nonzero(inside)
        if yy.size == 0:
            continue
        y0 = sl[0].start * cell + int(yy.min())
        y1 = sl[0].start * cell + int(yy.max()) + 1
        x0 = sl[1].start * cell + int(xx.min())
        x1 = sl[1].start * cell + int(xx.max()) + 1
        boxes.append((max(0, y0 - pad), max(0, x0 - pad), min(h, y1 + pad), min(w, x1 + pad)))
    return boxes


def _run_backbone(net, x, valid, wl, device):
    """``(z, final, possible, bands)`` of one window (batch of 1); see :func:`_backbone`."""
    with torch.inference_mode():
        xt = torch.from_numpy(x[None]).to(device)
        vt = torch.from_numpy(valid[None]).to(device)
        z, final, possible = _backbone(net, xt, vt, wl)
        bands = torch.cat(spectral_input(xt, vt), dim=1)
    return z.clone(), final.clone(), possible.clone(), bands.clone()


def _on_pixels(seq: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``seq`` (1 × 1 convolutions and activations) on a set of pixels ``x`` (d, n): (n,),
    each pixel's output as the network gives it on a window."""
    for m in seq:
        if isinstance(m, torch.nn.Conv2d):
            x = m.weight.flatten(1) @ x + m.bias[:, None]
        else:
            x = m(x)
    return x[0]


def with_spectral(net: CNNLSTM, bands: int, seed: int = 0) -> CNNLSTM:
    """A copy of ``net`` with a spectral term for ``bands`` bands (zero at start, so it gives
    the same output; its hidden layer drawn with ``seed``); ``net`` itself when it has one."""
    if net.spectral is not None:
        return net
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        out = CNNLSTM(**{**net.config(), "spectral_bands": int(bands)})
    missing, unexpected = out.load_state_dict(net.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("spectral.") for k in missing)
    return out.to(next(net.parameters()).device).eval()


def mixed(net: CNNLSTM, weight: float) -> CNNLSTM:
    """``net`` with its spectral term scaled by ``weight`` (0 = the starting model's output,
    1 = as fitted); ``net`` itself at 1 or without a spectral term."""
    if net.spectral is None or weight == 1.0:
        return net
    out = copy.deepcopy(net)
    with torch.no_grad():
        out.spectral[-1].weight.mul_(float(weight))
        out.spectral[-1].bias.mul_(float(weight))
    return out


# ----------------------------------------------------------------------------------------------
# Teaching


@dataclass
class TaughtResult:
    """What :func:`teach_network` returns.

    Attributes:
        net: the taught network (eval mode, CPU).
        base_meta: the starting model's meta.
        threshold: the decision threshold chosen from the examples.
        info: provenance for the checkpoint's meta and the ``runs`` layer: steps, seconds,
            the cross-validation (``cv``), the threshold's source.
    """

    net: CNNLSTM
    base_meta: dict
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=8)
def _rehearsal_scene(seed: int, t: int):
    """A synthetic training scene of ``t`` dates (96 px, 1-16 bands drawn by the seed)."""
    from geochange.model.scenes import synthetic_scene

    return synthetic_scene(seed, size=96, dates=(t, t), bands=(1, 16))


class _Teacher:
    """Holds the cached regions, the scene's windows and the rehearsal scenes; fits heads from
    the starting weights."""

    def __init__(self, base, stack, examples, device, seed, rehearsal, self_supervised):
        self.base = base
        #: A completely reviewed area gives the real share of change; polygons alone do not.
        self.reviewed = examples.n_labelled > 0
        self.device = device
        self.t = stack.T
        sample = read_sample(stack)
        self.stats = scene_stats(sample)
        sx, sv = apply(sample[:, :, None, :], self.stats)
        thr = ignore_threshold(change_magnitude(sx, sv)[0])
        wl = wavelength_array(stack.wavelengths, stack.band_count)
        self.wl = torch.from_numpy(wl[None]).to(device)
        # The deep model's result stages, as detect's chain runs them after the network.
        fitted = (
            spec.load().fit(sample, Context(), spec.name)
            for spec in REGISTRY
            if spec.role == "result" and "cnn-lstm" in spec.after
        )
        self.post = [stage for stage in fitted if stage is not None]
        # Context each region needs, walked back from the output as the chain's halo is.
        margin, need = 0, 0
        for stage in reversed(self.post):
            reach = stage.reach(self.t)
            need = max(need, margin + reach.input)
            margin += reach.result
        pad = max(need, margin + int(base.halo(self.t)), CV_BUFFER + 16)
        self.regions: list[_Region] = []
        label = examples.label
        for y0, x0, y1, x1 in _regions(label, pad):
            x, valid, z, final, possible, bands = self._window(stack, y0, x0, y1, x1)
            lab = label[y0:y1, x0:x1].copy()
            lab[valid.sum(axis=0) < 2] = UNKNOWN
            selfneg = np.zeros(lab.shape, bool)
            if self_supervised:
                mag = change_magnitude(x, valid)
                quiet = ~ndimage.binary_dilation(mag > thr, iterations=2)
                with torch.inference_mode():
                    logit0 = _heads(base, z, final, possible, bands)[0]
                    p0 = torch.sigmoid(logit0)[0].cpu().numpy()
                selfneg = quiet & (p0 < 0.5) & (lab == UNKNOWN) & (valid.sum(axis=0) >= 2)
            self.regions.append(_Region(y0, x0, x, valid, lab, selfneg, z, final, possible, bands))
        covered = np.zeros(label.shape, bool)
        for r in self.regions:
            covered[r.y0 : r.y0 + r.label.shape[0], r.x0 : r.x0 + r.label.shape[1]] = True
        #: Pixels of the scene no teaching window covers, and windows that stand for them: each
        #: a region (read with the same context) and the pixels of its core it counts.
        self.outside = int((~covered).sum())
        self.samples: list[tuple[_Region, np.ndarray]] = []
        for y0, x0, y1, x1 in _scene_windows(covered, seed):
            # As many as SCENE_BYTES holds, each the first window's size.
            if self.samples and (len(self.samples) + 1) * _bytes(self.samples[0][0]) > SCENE_BYTES:
                break
            wy0, wx0 = max(0, y0 - pad), max(0, x0 - pad)
            wy1, wx1 = min(label.shape[0], y1 + pad), min(label.shape[1], x1 + pad)
            x, valid, z, final, possible, bands = self._window(stack, wy0, wx0, wy1, wx1)
            count = np.zeros(valid.shape[1:], bool)
            count[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = True
            count &= ~covered[wy0:wy1, wx0:wx1] & (valid.sum(axis=0) >= 2)
            lab = np.full(count.shape, UNKNOWN, np.uint8)
            none = np.zeros(count.shape, bool)
            region = _Region(wy0, wx0, x, valid, lab, none, z, final, possible, bands)
            self.samples.append((region, count))
        self.rehearsal = []
        if rehearsal:
            tt = min(max(2, self.t), 10)
            for s in REHEARSAL_SEEDS[: int(rehearsal)]:
                sc = _rehearsal_scene(int(s), tt)
                x, valid = apply(sc.raw, sc.stats)
                swl = torch.from_numpy(
                    wavelength_array(
                        list(sc.wavelengths) if sc.wavelengths is not None else None, x.shape[1]
                    )[None]
                ).to(device)
                z, final, possible, _ = _run_backbone(base, x, valid, swl, device)
                ch = torch.from_numpy(sc.change[None].astype(np.int64)).to(device)
                di = torch.from_numpy(sc.date_index[None].astype(np.int64)).to(device)
                self.rehearsal.append((z, final, possible, ch, di))
        logger.info(
            "teach: %d region(s) around the examples, %d rehearsal scene(s)",
            len(self.regions),
            len(self.rehearsal),
        )

    def _window(self, stack: Stack, y0: int, x0: int, y1: int, x1: int) -> tuple:
        """A window of the scene normalised, and the frozen backbone's output on it:
        ``(x, valid, z, final, possible, bands)``."""
        x, valid = apply(stack.window(y0, x0, y1 - y0, x1 - x0), self.stats)
        return (x, valid, *_run_backbone(self.base, x, valid, self.wl, self.device))

    # -- one fit -----------------------------------------------------------------------------
    def fit(self, keep: list[np.ndarray] | None, steps: int, lr: float, seed: int, deadline: float):
        """Heads fitted from the starting weights for ``steps`` steps (``keep``: per region, a
        bool mask of the labels used; None = all).

        Each step: :data:`BATCH` crops of :data:`CROP` px of the cached backbone output, centred
        half on a change example, the rest on a no-change example or (a share
        :data:`SELF_SHARE`) on a self-supervised quiet pixel; plus :data:`REHEARSAL_BATCH` crops
        of the rehearsed synthetic scenes. Weighted cross-entropy on the user's labels (weight
        1) and the quiet pixels (:data:`SELF_WEIGHT`); the rehearsal's loss is ``adapt_loss``
        on the scenes' true change and dates; an L2 pull towards the starting heads.
        """
        from geochange.model.adapt import adapt_loss

        rng = np.random.default_rng([int(seed), 977])
        torch.manual_seed(int(seed))
        net = copy.deepcopy(self.base).to(self.device)
        for p in net.parameters():
            p.requires_grad_(False)
        params = _head_parameters(net)
        for p in params:
            p.requires_grad_(True)
        anchor = [p.detach().clone() for p in params]
        opt = torch.optim.Adam(params, lr=lr)
        labs, weights, pools = [], [], {"pos": [], "neg": [], "self": []}
        for i, r in enumerate(self.regions):
            lab = r.label if keep is None else np.where(keep[i], r.label, UNKNOWN)
            selfneg = r.selfneg if keep is None else r.selfneg & keep[i]
            wgt = np.where(lab != UNKNOWN, 1.0, np.where(selfneg, SELF_WEIGHT, 0.0))
            labs.append(torch.from_numpy((lab == 1).astype(np.float32)).to(self.device))
            weights.append(torch.from_numpy(wgt.astype(np.float32)).to(self.device))
            for key, m in (("pos", lab == 1), ("neg", lab == 0), ("self", selfneg)):
                idx = np.flatnonzero(m.ravel())
                if idx.size:
                    pools[key].append((i, idx))
        if not pools["pos"]:
            raise InputError("examples: no change example left to learn from")

        def draw(key: str) -> tuple[int, int, int]:
            i, idx = pools[key][int(rng.integers(len(pools[key])))]
            y, x = divmod(int(idx[int(rng.integers(idx.size))]), self.regions[i].label.shape[1])
            return i, y, x

        def crop(i: int, y: int, x: int) -> tuple[slice, slice]:
            h, w = self.regions[i].label.shape
            ch, cw = min(CROP, h), min(CROP, w)
            y0 = int(np.clip(y - ch // 2 + rng.integers(-ch // 4, ch // 4 + 1), 0, h - ch))
            x0 = int(np.clip(x - cw // 2 + rng.integers(-cw // 4, cw // 4 + 1), 0, w - cw))
            return slice(y0, y0 + ch), slice(x0, x0 + cw)

        done = 0
        for _step in range(int(steps)):
            if time.monotonic() > deadline:
                break
            items = []
            for b in range(BATCH):
                if b < BATCH // 2:
                    key = "pos"
                elif pools["self"] and (not pools["neg"] or rng.random() < SELF_SHARE):
                    key = "self"
                else:
                    key = "neg" if pools["neg"] else "pos"
                i, y, x = draw(key)
                items.append((i, *crop(i, y, x)))
            shapes = {(ys.stop - ys.start, xs.stop - xs.start) for _, ys, xs in items}
            loss = 0.0
            for shape in shapes:
                group = [
                    it
                    for it in items
                    if (it[1].stop - it[1].start, it[2].stop - it[2].start) == shape
                ]
                reg = [self.regions[i] for i, _, _ in group]
                z = torch.cat([r.z[..., ys, xs] for r, (_, ys, xs) in zip(reg, group)])
                fin = torch.cat([r.final[..., ys, xs] for r, (_, ys, xs) in zip(reg, group)])
                pos = torch.cat([r.possible[..., ys, xs] for r, (_, ys, xs) in zip(reg, group)])
                y = torch.stack([labs[i][ys, xs] for i, ys, xs in group])
                wgt = torch.stack([weights[i][ys, xs] for i, ys, xs in group])
                bnd = torch.cat([r.bands[..., ys, xs] for r, (_, ys, xs) in zip(reg, group)])
                logit, _ = _heads(net, z, fin, pos, bnd)
                bce = F.binary_cross_entropy_with_logits(logit, y, reduction="none")
                loss = loss + (bce * wgt).sum() / wgt.sum().clamp_min(1.0) * len(group) / BATCH
            if self.rehearsal:
                zs, fs, ps, cs, ds = [], [], [], [], []
                for _ in range(REHEARSAL_BATCH):
                    z, fin, pos, ch, di = self.rehearsal[int(rng.integers(len(self.rehearsal)))]
                    h, w = ch.shape[-2:]
                    c = min(CROP, h, w)
                    y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
                    ys, xs = slice(y0, y0 + c), slice(x0, x0 + c)
                    zs.append(z[..., ys, xs])
                    fs.append(fin[..., ys, xs])
                    ps.append(pos[..., ys, xs])
                    cs.append(ch[..., ys, xs])
                    ds.append(di[..., ys, xs])
                logit, interval = _heads(net, torch.cat(zs), torch.cat(fs), torch.cat(ps))
                loss = loss + REHEARSAL_WEIGHT * adapt_loss(
                    logit, interval, torch.cat(cs), torch.cat(ds)
                )
            pull = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
            loss = loss + ANCHOR * pull
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
        net = net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        if net.spectral is not None and SPECTRAL_STEPS:
            self.fit_spectral(net, keep, seed)
        return net, done

    def fit_spectral(self, net: CNNLSTM, keep: list[np.ndarray] | None, seed: int) -> None:
        """Fit the spectral term in place, pixel by pixel, on top of the fitted heads.

        The term is a per-pixel (1×1) network, so it is fitted on the labelled pixels
        themselves (not crops): the heads' change logit is a fixed offset, the term's inputs
        the pixel's bands (first, last, difference) and final states. Change and no-change
        pixels weigh as many as they are where the examples include a completely reviewed area,
        the same in all otherwise; the scene's quiet pixels :data:`SELF_WEIGHT` of that.
        :data:`SPECTRAL_STEPS` full-batch Adam steps with an L2 pull to zero.
        """
        rng = np.random.default_rng([int(seed), 451])
        torch.manual_seed(int(seed))
        assert net.spectral is not None
        feats, offs, ys, keys = [], [], [], []
        for i, r in enumerate(self.regions):
            lab = r.label if keep is None else np.where(keep[i], r.label, UNKNOWN)
            selfneg = r.selfneg if keep is None else r.selfneg & keep[i]
            with torch.inference_mode():
                off = _heads(net, r.z, r.final, r.possible)[0][0]
            f = torch.cat([r.bands, r.final], dim=1)[0].flatten(1)  # (d, h·w)
            for key, m in ((1, lab == 1), (0, lab == 0), (2, selfneg)):
                idx = torch.from_numpy(np.flatnonzero(m.ravel())).to(self.device)
                if idx.numel():
                    feats.append(f[:, idx])
                    offs.append(off.reshape(-1)[idx])
                    ys.append(torch.full((idx.numel(),), float(key == 1), device=self.device))
                    keys.append(torch.full((idx.numel(),), key, device=self.device))
        if not feats:
            return
        x = torch.cat(feats, dim=1).clone()
        off, y, key = torch.cat(offs).clone(), torch.cat(ys), torch.cat(keys)
        # Each kind's share of the loss: as many as they are where the examples include a
        # completely reviewed area (the scene's real share of change), else change and no change
        # alike (polygons drawn are no sample of the scene); the quiet pixels SELF_WEIGHT.
        kinds = key.cpu().numpy()
        n_pos, n_neg = float((kinds == 1).sum()), float((kinds == 0).sum())
        shares = {1: 1.0, 0: 1.0, 2: SELF_WEIGHT}
        if self.reviewed and n_pos + n_neg:
            shares = {
                1: n_pos / (n_pos + n_neg),
                0: n_neg / (n_pos + n_neg),
                2: SELF_WEIGHT,
            }
        pick = []
        for kind in (1, 0, 2):
            idx = np.flatnonzero(kinds == kind)
            if idx.size > SPECTRAL_PIXELS:
                idx = np.sort(rng.choice(idx, SPECTRAL_PIXELS, replace=False))
            pick.append(idx)
        sel = torch.from_numpy(np.concatenate(pick)).to(self.device)
        x, off, y, key = x[:, sel], off[sel], y[sel], key[sel]
        w = torch.zeros_like(y)
        for kind, share in shares.items():
            m = key == kind
            if m.any():
                w[m] = share / m.sum()
        w = w / w.sum()
        params = list(net.spectral.parameters())
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=SPECTRAL_LR)
        for _ in range(int(SPECTRAL_STEPS)):
            logit = off + _on_pixels(net.spectral, x)
            loss = (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * w).sum()
            loss = loss + SPECTRAL_L2 * sum((p**2).sum() for p in params)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for p in params:
            p.requires_grad_(False)

    # -- predictions as detect makes them ----------------------------------------------------
    def predict(self, net: CNNLSTM, regions: list[_Region] | None = None) -> list[np.ndarray]:
        """Per region (the teaching windows by default), the change probability ``detect``
        writes (refined, micro and emerge as the stack allows), (h, w) float32."""
        out = []
        for r in self.regions if regions is None else regions:
            with torch.inference_mode():
                logit, interval = _heads(net, r.z, r.final, r.possible, r.bands)
                prob = torch.sigmoid(logit)[0].cpu().numpy().astype(np.float32)
                k = interval.argmax(dim=1)[0].cpu().numpy().astype(np.float32)
            # Result stages read the normalised series, not the raw tile.
            block = Block(r.x, x=r.x, valid=r.valid, prob=prob, interval=k)
            for stage in self.post:
                stage.run(block)
            out.append(block.prob)
        return out

    def unlabelled(self, net: CNNLSTM, probs: list[np.ndarray]) -> np.ndarray:
        """A sample (at most about 200 000) of ``net``'s probabilities on the scene outside the
        examples: the pixels around them no example covers (``probs``, this teacher's regions)
        and the scene's windows, each part in proportion to the pixels it stands for."""
        near = np.concatenate([pr[r.label == UNKNOWN] for pr, r in zip(probs, self.regions)])
        far = [r for r, _ in self.samples]
        rest = np.concatenate(
            [pr[count] for pr, (_, count) in zip(self.predict(net, far), self.samples)]
            or [np.zeros(0, np.float32)]
        )
        parts = [(near, near.size), (rest, self.outside if rest.size else 0)]
        total = sum(n for _, n in parts)
        if total == 0:
            return near
        # As many as the scarcer part allows at its share, at most about 200 000.
        size = min([200_000] + [u.size * total / n for u, n in parts if n])
        out = []
        for u, n in parts:
            k = int(round(size * n / total))
            if k:
                out.append(u[np.linspace(0, u.size - 1, k).astype(np.int64)])
        return np.concatenate(out)


def _bytes(r: _Region) -> int:
    """Memory a cached region keeps."""
    arrays = (r.x, r.valid, r.label, r.selfneg)
    tensors = (r.z, r.final, r.possible, r.bands)
    return sum(a.nbytes for a in arrays) + sum(
        t.numel() * t.element_size() for t in tensors if t is not None
    )


def _scene_windows(covered: np.ndarray, seed: int) -> list[tuple[int, int, int, int]]:
    """Up to :data:`SCENE_WINDOWS` boxes (y0, x0, y1, x1) of :data:`SCENE_WINDOW` px (less on a
    smaller scene), at random for ``seed``, apart from each other, each mostly on pixels that
    ``covered`` (the teaching windows) leaves out; none where it leaves out nothing."""
    h, w = covered.shape
    eh, ew = min(SCENE_WINDOW, h), min(SCENE_WINDOW, w)
    if covered.all():
        return []
    rng = np.random.default_rng([int(seed), 977])
    boxes: list[tuple[int, int, int, int]] = []
    used = np.zeros_like(covered)
    for _ in range(SCENE_WINDOWS * 32):
        if len(boxes) == SCENE_WINDOWS:
            break
        y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
        box = (slice(y0, y0 + eh), slice(x0, x0 + ew))
        if covered[box].mean() > 0.5 or used[box].any():
            continue
        boxes.append((y0, x0, y0 + eh, x0 + ew))
        used[box] = True
    return boxes


def _fold_maps(teacher: _Teacher, examples: Examples, folds: int, seed: int):
    """Per region, the blocked fold of each labelled pixel (:func:`blocked_folds` over the whole
    scene's examples, cut per region); None without cross-validation or with too few examples."""
    if not folds or folds < 2:
        return None
    full = np.full(examples.label.shape, UNKNOWN, np.uint8)
    for r in teacher.regions:
        sl = (slice(r.y0, r.y0 + r.label.shape[0]), slice(r.x0, r.x0 + r.label.shape[1]))
        full[sl] = np.where(r.label != UNKNOWN, r.label, full[sl])
    got = blocked_folds(full, int(folds), seed)
    if got is None:
        return None
    return [
        got[0][r.y0 : r.y0 + r.label.shape[0], r.x0 : r.x0 + r.label.shape[1]]
        for r in teacher.regions
    ]


def _cross_validate(teacher, fold_maps, folds, mixes, pu, steps, lr, seed, deadline):
    """The blocked cross-validation: each fold's fit without its held-out examples (and a
    buffer), their out-of-fold probabilities at each weight of the spectral term, then the
    weight and threshold (:func:`pick_mix`, :func:`pick_threshold`) and the expected F1 /
    precision / recall: for each fold, weight and threshold chosen on the other folds, scored on
    it.

    Returns:
        ``(cv, threshold, weight, steps_done)``.
    """
    labels = [r.label for r in teacher.regions]
    # oof[m][i]: out-of-fold probabilities of region i with the spectral term weighted mixes[m].
    oof = [[np.full(lab.shape, np.nan, np.float32) for lab in labels] for _ in mixes]
    unl: list[list[np.ndarray]] = [[] for _ in mixes]
    steps_done = []
    for f in range(folds):
        keep = []
        for fm in fold_maps:
            test = fm == f
            near = ndimage.binary_dilation(test, iterations=CV_BUFFER) if test.any() else test
            keep.append(~near)
        share = (deadline - time.monotonic()) / (folds + 1 - f)  # the final fit's share too
        net_f, done = teacher.fit(keep, steps, lr, seed * 100 + f + 1, time.monotonic() + share)
        logger.info("teach: fold %d of %d, %d steps", f + 1, folds, done)
        steps_done.append(done)
        for m, weight in enumerate(mixes):
            net_m = mixed(net_f, weight)
            probs_f = teacher.predict(net_m)
            unl[m].append(teacher.unlabelled(net_m, probs_f))
            for i, prob in enumerate(probs_f):
                test = fold_maps[i] == f
                oof[m][i][test] = prob[test]
    # One criterion curve per weight and fold, on the fold's held-out examples (and,
    # positive-unlabelled, the pixels no example covers, from that fold's model).
    truth = [
        np.concatenate([lab[fm == f] == 1 for lab, fm in zip(labels, fold_maps)])
        for f in range(folds)
    ]
    held = [
        [np.concatenate([o[fm == f] for o, fm in zip(oof[m], fold_maps)]) for f in range(folds)]
        for m in range(len(mixes))
    ]
    curves = np.array(
        [
            [threshold_curve(held[m][f], truth[f], unl[m][f] if pu else None) for f in range(folds)]
            for m in range(len(mixes))
        ]
    )  # (weights, folds, thresholds)
    # Precision from the share of the scene outside the examples flagged, wherever there are
    # enough such pixels: the examples hold the share of change of the places the user looked at
    # (a reviewed area is put where change is), not the scene's.
    scene = pu or min(u.size for u in unl[0]) >= SCENE_PIXELS
    per = []
    for f in range(folds):
        rest = np.delete(curves, f, axis=1)  # weight and threshold chosen without fold f
        m_f = pick_mix(rest)
        t_f = pick_threshold(rest[m_f])
        pred = held[m_f][f] >= t_f
        y = truth[f]
        if scene:
            u = unl[m_f][f]
            per.append(scene_estimate(pred, y, float((u >= t_f).mean()) if u.size else 0.0))
            continue
        per.append(
            f1_precision_recall(
                float((pred & y).sum()), float((pred & ~y).sum()), float((~pred & y).sum())
            )
        )
    arr = np.array(per, np.float64)
    cv = {
        "k": folds,
        "f1": round(float(np.nanmean(arr[:, 0])), 3),
        "f1_sd": round(float(np.nanstd(arr[:, 0])), 3),
        "precision": round(float(np.nanmean(arr[:, 1])), 3),
        "precision_sd": round(float(np.nanstd(arr[:, 1])), 3),
        "recall": round(float(np.nanmean(arr[:, 2])), 3),
        "recall_sd": round(float(np.nanstd(arr[:, 2])), 3),
        "f1_folds": [round(float(v), 3) for v in arr[:, 0]],
        "scored_on": (
            "held-out examples (whole polygons or blocks, 8-px buffer); precision from the "
            "share of the scene outside the examples flagged"
            if scene
            else "held-out examples (whole polygons or blocks, 8-px buffer)"
        ),
    }
    best = pick_mix(curves)
    return cv, pick_threshold(curves[best]), float(mixes[best]), steps_done


def teach_network(
    stack: Stack,
    examples: Examples,
    *,
    model: str | os.PathLike | None = None,
    minutes: float | None = None,
    steps: int = 0,
    seed: int = 0,
    folds: int = 3,
    lr: float = 3e-3,
    rehearsal: int = len(REHEARSAL_SEEDS),
    self_supervised: bool = True,
    spectral: bool = True,
    device: str = "auto",
    start_time: float | None = None,
) -> TaughtResult:
    """Teach a model from the user's examples on ``stack`` (see the module docstring).

    Args:
        stack: the user's stack.
        examples: :func:`geochange.io.examples.read_examples` on the stack's grid.
        model: starting checkpoint; None = the shipped default model.
        minutes: wall-clock budget of the whole call (None = :func:`default_minutes`); it cuts
            fits short only on a machine too slow for ``steps``.
        steps: head steps per fit (each fold's and the final one) before the spectral term's
            fit; 0 = the heads stay as shipped (the default: on the real pairs, fitting them
            helped some scenes and hurt others more, see the module notes).
        seed: seeds the folds and torch.
        folds: k of the blocked cross-validation (0 or 1 = none).
        lr: Adam learning rate of the heads.
        rehearsal: synthetic scenes rehearsed while the heads are fitted (0 = none).
        self_supervised: also teach the scene's quiet unlabelled pixels as no change.
        spectral: add the per-pixel spectral term (``CNNLSTM(spectral_bands=...)``) and teach it
            with the heads; the taught model then takes this stack's band count only.
        device: "auto", "cpu" or "cuda".
        start_time: ``time.monotonic()`` at which the budget started (default: now).

    Raises:
        ModelError: unreadable model or a band count it does not take.
        InputError: fewer than two dates, or examples on another grid.
    """
    from geochange.stages.network import resolve_device

    t0 = time.monotonic() if start_time is None else start_time
    if stack.T < 2:
        raise InputError(f"stack: {stack.T} date(s), at least 2 are needed to teach a change model")
    if examples.label.shape != stack.grid.shape:
        raise InputError(
            f"examples: rasterised on a {examples.label.shape} grid, the stack is "
            f"{stack.grid.shape}; read them with the stack's grid"
        )
    minutes = default_minutes(stack.shape) if minutes is None else float(minutes)
    if not minutes > 0:
        raise InputError(f"--adapt-minutes: got {minutes}, expected a positive number of minutes")
    deadline = t0 + 60.0 * minutes
    dev = resolve_device(device)
    base, base_meta = load_model(model, map_location=dev)
    if base.band_count is not None and base.band_count != stack.band_count:
        raise ModelError(
            f"model {base_meta.get('path')}: trained on {base.band_count} bands but the stack has "
            f"{stack.band_count}; teach the default band-agnostic model or one with this band count"
        )
    if spectral:
        base = with_spectral(base, stack.band_count, seed)
    rehearsal = int(rehearsal) if steps > 0 else 0  # only the heads' fit rehearses
    teacher = _Teacher(base, stack, examples, dev, seed, rehearsal, self_supervised)

    # Cross-validation.
    fold_maps = _fold_maps(teacher, examples, folds, seed)
    # Examples without a completely reviewed area: the threshold by the positive-unlabelled
    # criterion of threshold_curve, on the pixels no example covers; and the spectral term's
    # weight chosen as well, since its fit weighed change and no change alike, not as the scene
    # has them (a completely reviewed area gives their real share: the term is kept whole).
    pu = examples.n_labelled == 0
    mixes = tuple(heldout.MIXES) if (spectral and pu) else (1.0,)
    mix, steps_done = 1.0, []
    if fold_maps is not None:
        cv, threshold, mix, steps_done = _cross_validate(
            teacher, fold_maps, int(folds), mixes, pu, steps, lr, seed, deadline
        )
        source = "held-out examples (cross-validation)" + (", positive-unlabelled" if pu else "")
    else:
        cv = {
            "k": 0,
            "note": f"too few examples to estimate: fewer than {max(2, int(folds))} separate "
            "change examples, or no no-change example",
        }
    net, done = teacher.fit(None, steps, lr, seed * 100, deadline)
    net = mixed(net, mix)
    steps_done.append(done)
    if fold_maps is None:
        labels = [r.label for r in teacher.regions]
        probs = teacher.predict(net)
        p = np.concatenate([pr[lab != UNKNOWN] for pr, lab in zip(probs, labels)])
        y = np.concatenate([lab[lab != UNKNOWN] == 1 for lab in labels])
        threshold = best_threshold(p, y, teacher.unlabelled(net, probs) if pu else None)
        source = "training examples (no held-out estimate)" + (
            ", positive-unlabelled" if pu else ""
        )
    info = {
        "steps": int(steps),
        "steps_done": steps_done,
        "cut_short": any(d < steps for d in steps_done),
        "seconds": round(time.monotonic() - t0, 1),
        "lr": float(lr),
        "rehearsal": int(rehearsal),
        "self_supervised": bool(self_supervised),
        "spectral": bool(net.spectral is not None),
        "threshold_source": source,
        "spectral_weight": mix,
        "cv": cv,
        "device": dev,
        "regions": len(teacher.regions),
    }
    if info["cut_short"]:
        logger.warning(
            "teach: the %.1f-minute budget cut fits short (%s of %d steps): not reproducible step "
            "for step; give more --adapt-minutes",
            minutes,
            steps_done,
            steps,
        )
    warning = low_estimate(cv)
    if warning:
        logger.warning(warning)
    logger.info("teach: threshold %.2f from %s; cv %s", threshold, source, cv)
    return TaughtResult(net.cpu().eval(), base_meta, float(threshold), info)


def teach(
    stack: Stack,
    examples: Examples,
    output_ckpt: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    overwrite: bool = False,
    seed: int = 0,
    **kwargs: Any,
) -> tuple[Path, dict]:
    """Teach a model from examples and write it (loads with ``geochange detect --model``).

    Args:
        stack: the user's stack (co-registered as ``detect`` reads it).
        examples: the examples on the stack's grid.
        output_ckpt: checkpoint to write.
        model: starting checkpoint; None = the shipped default model.
        overwrite: replace an existing ``output_ckpt``.
        seed: random seed.
        **kwargs: further options of :func:`teach_network`.

    Returns:
        ``(path, meta)``; the meta holds ``taught: True``, ``threshold``, ``cv`` and the
        examples' hash and counts.
    """
    output_ckpt = Path(output_ckpt)
    if output_ckpt.exists() and not overwrite:
        raise OutputExistsError(f"output {output_ckpt}: exists; pass --overwrite to replace it")
    res = teach_network(stack, examples, model=model, seed=seed, **kwargs)
    bm = res.base_meta
    meta = {
        "name": f"{bm.get('name', 'cnn-lstm')}-taught",
        "trained_on": f"{bm.get('trained_on', 'unknown')}; taught from examples on {stack.T} dates",
        "taught": True,
        "threshold": res.threshold,
        "base_model": str(model) if model is not None else "default",
        "base_model_name": bm.get("name"),
        "seed": int(seed),
        "taught_on": {
            "inputs": [str(p) for p in stack.paths],
            "dates": [d.isoformat() for d in stack.dates],
            "shape": list(stack.shape),
        },
        **examples.summary(),
        **res.info,
    }
    save_model(res.net, output_ckpt, meta)
    logger.info("teach: wrote %s (threshold %.2f)", output_ckpt, res.threshold)
    return output_ckpt, meta
