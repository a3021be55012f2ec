"""The CNN-LSTM change model and what surrounds it: network, normalisation, model files,
training, calibration, scene adaptation.

``load_model()`` gives the default band-agnostic model shipped in ``weights/default.ckpt``;
``load_model(path)`` also reads a checkpoint written by ``geochange train``. Names are imported
on first use, so the pure-numpy parts (``geochange.model.normalize``) load no torch.
"""

from __future__ import annotations

from geochange._lazy import lazy_exports

_EXPORTS = {
    "CNNLSTM": "geochange.model.cnn_lstm",
    "DEFAULT_MODEL_PATH": "geochange.model.checkpoint",
    "FORMAT": "geochange.model.checkpoint",
    "NET_KEYS": "geochange.model.checkpoint",
    "calibration_of": "geochange.model.checkpoint",
    "load_model": "geochange.model.checkpoint",
    "save_model": "geochange.model.checkpoint",
}

__all__ = [
    "CNNLSTM",
    "DEFAULT_MODEL_PATH",
    "FORMAT",
    "NET_KEYS",
    "calibration_of",
    "load_model",
    "save_model",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
