"""Calibrated change probabilities: Platt scaling fitted on whole synthetic validation scenes.

Training samples chips so that half of them hold change (class-balanced sampling, focal loss),
which teaches the network to find rare change but leaves its raw probabilities far too high on
whole scenes, where a few percent of the pixels change. For the shipped model on 24 whole
validation scenes: a raw 0.5 gave F1 0.59, the best threshold was 0.90, and pixels with a raw
probability near 0.5 had changed 9 % of the time.

A logistic fit of the truth on the raw logit, ``p = sigmoid(scale * logit + bias)`` (Platt
scaling), over whole scenes with their natural change prior, repairs both: the calibrated
probability means what it says (pixels near 0.5 changed about half of the time) and the default
threshold 0.5 lands near the F1 optimum. The two numbers live in the checkpoint's metadata
(``meta["calibration"]``) and :class:`geochange.stages.network.ModelDetector` applies them; a
checkpoint without them gives raw probabilities.

The scenes come from :func:`geochange.model.scenes.synthetic_scene` with validation seeds (the
training seeds never), whole, at the sizes a user's chunks have.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from geochange.model.cnn_lstm import CNNLSTM

__all__ = [
    "DEFAULTS",
    "calibrate_checkpoint",
    "fit_model_calibration",
    "fit_platt",
]

logger = logging.getLogger(__name__)

#: Scenes used by default: validation seeds of pipelines/default_model.yaml, whole scenes of
#: 256 and 512 px, the training ranges of dates, bands and nuisance.
DEFAULTS: dict[str, Any] = {
    "seeds": [1000, 1024],
    "sizes": [256, 512],
    "dates": [2, 10],
    "bands": [1, 16],
    "nuisance": ["low", "medium", "high", "high"],
}

_EPS = 1e-7


def fit_platt(logits: np.ndarray, truth: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """Logistic regression of ``truth`` on ``logits`` (Newton's method): (scale, bias).

    Raises:
        ValueError: empty input, or truth without both classes.
    """
    z = np.asarray(logits, np.float64).ravel()
    y = np.asarray(truth, np.float64).ravel()
    if z.size == 0 or z.shape != y.shape:
        raise ValueError(f"fit_platt: got {z.size} logits and {y.size} labels")
    if not 0 < y.mean() < 1:
        raise ValueError("fit_platt: the truth needs both changed and unchanged pixels")

    def loss(a: float, b: float) -> float:  # mean log-loss, overflow-free
        u = a * z + b
        return float(np.mean(np.logaddexp(0.0, u) - y * u))

    # Newton's method from the constant model, with step halving: converges on any data.
    a, b = 0.0, float(np.log(y.mean() / (1 - y.mean())))
    current = loss(a, b)
    for _ in range(iters):
        q = expit(a * z + b)
        g, w = q - y, q * (1 - q) + 1e-12
        hess = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]])
        step = np.linalg.solve(hess, np.array([np.sum(g * z), np.sum(g)]))
        t = 1.0
        while t > 1e-4 and loss(a - t * step[0], b - t * step[1]) > current:
            t /= 2
        a, b = a - t * step[0], b - t * step[1]
        new = loss(a, b)
        if current - new < 1e-12:
            break
        current = new
    return float(a), float(b)


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float(np.sum(pred & truth))
    return 2 * tp / max(float(pred.sum() + truth.sum()), 1.0)


def _scene_logits(net: CNNLSTM, seed: int, size: int, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Raw change logits and truth on the labelled, valid pixels of one whole scene."""
    from geochange.model.scenes import synthetic_scene
    from geochange.stages.network import ModelDetector

    scene = synthetic_scene(seed, size, cfg["dates"], cfg["bands"], cfg["nuisance"])
    det = ModelDetector(net, scene.stats, device="cpu", meta={}, wavelengths=scene.wavelengths)
    prob = det(scene.raw)[0].astype(np.float64)
    ok = ~np.isnan(prob) & (scene.change != 255)
    p = np.clip(prob[ok], _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p), scene.change[ok] == 1


def fit_model_calibration(
    net: CNNLSTM,
    *,
    seeds: Sequence[int] = DEFAULTS["seeds"],
    sizes: Sequence[int] = DEFAULTS["sizes"],
    dates: Sequence[int] = DEFAULTS["dates"],
    bands: Sequence[int] = DEFAULTS["bands"],
    nuisance: Sequence[str] = DEFAULTS["nuisance"],
) -> dict[str, Any]:
    """Fit Platt scaling for ``net`` on whole synthetic scenes; the ``meta["calibration"]`` dict.

    Args:
        net: the network (band-agnostic, or with a band count in ``bands``).
        seeds: [first, last) scene seeds; keep them apart from the training seeds.
        sizes: scene edges in pixels, used in turn.
        dates, bands: inclusive ranges of T and of the band count (drawn per seed).
        nuisance: levels drawn per seed.

    Returns:
        scale, bias, the scenes used, and F1 at 0.5 before and after on those scenes.
    """
    lo, hi = int(seeds[0]), int(seeds[1])
    if hi <= lo:
        raise ValueError(f"calibration seeds: got [{lo}, {hi}), expected first < last")
    if net.in_bands is not None:
        bands = (net.in_bands, net.in_bands)
    cfg = {"dates": tuple(dates), "bands": tuple(bands), "nuisance": tuple(nuisance)}
    was_training = net.training
    net.eval()
    zs, ys = [], []
    try:
        for i, seed in enumerate(range(lo, hi)):
            z, y = _scene_logits(net, seed, int(sizes[i % len(sizes)]), cfg)
            zs.append(z)
            ys.append(y)
    finally:
        net.train(was_training)
    z, y = np.concatenate(zs), np.concatenate(ys)
    scale, bias = fit_platt(z, y)
    raw_best = max(
        (_f1(z >= math.log(t / (1 - t)), y), round(float(t), 2)) for t in np.arange(0.3, 0.99, 0.02)
    )
    out = {
        "method": "platt",
        "scale": round(scale, 6),
        "bias": round(bias, 6),
        "scenes": {
            "seeds": [lo, hi],
            "sizes": [int(s) for s in sizes],
            **{k: list(v) for k, v in cfg.items()},
        },  # fmt: skip
        "pixels": int(y.size),
        "change_share": round(float(y.mean()), 4),
        "f1_at_0.5_raw": round(_f1(z >= 0, y), 4),
        "f1_at_0.5_calibrated": round(_f1(scale * z + bias >= 0, y), 4),
        "best_raw_threshold": raw_best[1],
        "f1_at_best_raw_threshold": round(raw_best[0], 4),
    }
    logger.info(
        "calibration: scale %.3f bias %.3f; F1 at 0.5 %.3f raw -> %.3f calibrated (%d scenes)",
        scale,
        bias,
        out["f1_at_0.5_raw"],
        out["f1_at_0.5_calibrated"],
        hi - lo,
    )
    return out


def calibrate_checkpoint(
    model: str | os.PathLike | None,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    **scenes: Any,
) -> dict[str, Any]:
    """Fit :func:`fit_model_calibration` for a checkpoint and write it with the calibration.

    The weights are copied unchanged; ``output`` may be the input itself with ``overwrite``.

    Args:
        model: checkpoint path; None = the shipped default model.
        output: model file to write.
        overwrite: replace an existing ``output``.
        **scenes: ``seeds``, ``sizes``, ``dates``, ``bands``, ``nuisance`` (see :data:`DEFAULTS`).

    Returns:
        The calibration written (``meta["calibration"]``).

    Raises:
        OutputExistsError: ``output`` exists and ``overwrite`` is False.
        ModelError: unreadable checkpoint.
        InputError: bad scene settings.
    """
    from geochange.errors import InputError, OutputExistsError
    from geochange.model import load_model, save_model

    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputExistsError(f"output {output}: exists; pass --overwrite to replace it")
    unknown = set(scenes) - set(DEFAULTS)
    if unknown:
        raise InputError(f"calibration: unknown setting(s) {sorted(unknown)}; use {list(DEFAULTS)}")
    net, meta = load_model(model)
    try:
        cal = fit_model_calibration(net, **{**DEFAULTS, **scenes})
    except ValueError as exc:
        raise InputError(f"calibration: {exc}") from exc
    meta = {k: v for k, v in meta.items() if k != "path"}
    meta["calibration"] = cal
    save_model(net, output, meta)
    return cal
