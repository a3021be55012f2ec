"""Model files: save and load the CNN-LSTM with its metadata.

``load_model()`` gives the default band-agnostic model shipped in ``weights/default.ckpt``;
``load_model(path)`` also reads a checkpoint written by ``geochange train`` (a compact model
file from ``-o`` or a Lightning checkpoint from its checkpoint folder).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import torch

from geochange.errors import ModelError
from geochange.io.atomic import atomic_path
from geochange.model.cnn_lstm import CNNLSTM

__all__ = [
    "DEFAULT_MODEL_PATH",
    "FORMAT",
    "NET_KEYS",
    "calibration_of",
    "load_model",
    "save_model",
]

logger = logging.getLogger(__name__)

#: The default band-agnostic model shipped with the package.
DEFAULT_MODEL_PATH = Path(__file__).parent / "weights" / "default.ckpt"
#: Key and version of geochange's compact model files.
FORMAT = "geochange-model-1"

#: Constructor arguments of :class:`CNNLSTM` (the ``model`` section of a training config).
NET_KEYS = (
    "in_bands",
    "features",
    "hidden",
    "encoder_layers",
    "recurrent_kernel",
    "head_hidden",
    "context_dilations",
    "shift_radius",
    "wavelengths",
    "clouds",
    "local_contrast",
    "context_skip",
    "spectral_bands",
    "change_window",
)


def calibration_of(meta: dict | None) -> tuple[float, float]:
    """(scale, bias) of the change logit from a model's metadata; (1, 0) = raw probabilities."""
    cal = (meta or {}).get("calibration") or {}
    return float(cal.get("scale", 1.0)), float(cal.get("bias", 0.0))


def save_model(net: CNNLSTM, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write a compact model file (config + float32 weights + meta, no optimizer state).

    Written under a temporary name in the same folder, then renamed.

    Args:
        net: the network.
        path: output file (``.ckpt`` by convention).
        meta: JSON-like description: name, version, trained_on, ...; ``in_bands`` and
            ``created`` are filled in.

    Returns:
        The path written.
    """
    path = Path(path)
    from geochange._version import __version__

    meta = dict(meta or {})
    meta.setdefault("name", "cnn-lstm")
    meta.setdefault("version", __version__)
    meta.setdefault("trained_on", "unknown")
    meta["in_bands"] = net.in_bands
    meta.setdefault("created", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    state = {k: v.detach().cpu().float().clone() for k, v in net.state_dict().items()}
    payload = {"format": FORMAT, "config": net.config(), "state_dict": state, "meta": meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _read(path: Path, map_location: str | torch.device) -> dict:
    if not path.is_file():
        if path == DEFAULT_MODEL_PATH:
            raise ModelError(
                f"default model {path}: file not found; the package was installed without its "
                "weights. Reinstall geochange, or train one with "
                "`geochange train pipelines/default_model.yaml -o model.ckpt` and pass --model."
            )
        raise ModelError(
            f"model {path}: file not found; pass a checkpoint written by `geochange train`, "
            "or leave --model out to use the default model"
        )
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - garbage makes the unpickler raise anything
        raise ModelError(
            f"model {path}: cannot be read as a torch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); expected a file written by `geochange train`"
        ) from exc
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise ModelError(
            f"model {path}: a torch file but not a geochange checkpoint (no state_dict); "
            "expected a file written by `geochange train`"
        )
    return obj


def _from_lightning(obj: dict, path: Path) -> tuple[dict, dict, dict]:
    hp = obj.get("hyper_parameters") or {}
    config = {k: hp[k] for k in NET_KEYS if k in hp}
    state = {k[4:]: v for k, v in obj["state_dict"].items() if k.startswith("net.")}
    if not state:
        raise ModelError(
            f"model {path}: a Lightning checkpoint without `net.` weights; expected one written "
            "by `geochange train`"
        )
    meta = dict(obj.get("geochange_meta") or {})
    meta.setdefault("name", hp.get("name", "cnn-lstm"))
    meta.setdefault("version", obj.get("pytorch-lightning_version", "unknown"))
    meta.setdefault("trained_on", "unknown")
    meta.setdefault("created", "unknown")
    return config, state, meta


def load_model(
    path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu"
) -> tuple[CNNLSTM, dict]:
    """Load a CNN-LSTM in eval mode.

    Args:
        path: a compact model file (``save_model`` / ``geochange train -o``), or a Lightning
            checkpoint from ``geochange train``; None = the shipped default model.
        map_location: device for the weights.

    Returns:
        ``(net, meta)``: the network in eval mode and its description (name, version, in_bands,
        trained_on, created).

    Raises:
        ModelError: the file is missing, unreadable, or not a geochange checkpoint.
    """
    path = DEFAULT_MODEL_PATH if path is None else Path(path)
    obj = _read(path, map_location)
    if obj.get("format") == FORMAT:
        config, state, meta = dict(obj["config"]), obj["state_dict"], dict(obj.get("meta", {}))
    else:
        config, state, meta = _from_lightning(obj, path)
    try:
        net = CNNLSTM(**config)
        net.load_state_dict(state)
    except (TypeError, RuntimeError) as exc:
        raise ModelError(
            f"model {path}: weights do not fit the network described in the file "
            f"({str(exc).splitlines()[0][:200]}); the file is corrupt or from another version"
        ) from exc
    meta["in_bands"] = net.in_bands
    meta["path"] = str(path)
    net.to(map_location).eval()
    logger.debug("loaded model %s (%s)", path, meta.get("name"))
    return net, meta
