"""What a detect run records: the provenance of its ``runs`` layer and the manifest of its kept
chunks (:mod:`geochange.io.resume`), which a resumed run must match."""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any

from geochange._version import __version__
from geochange.config import DetectConfig, RuntimeConfig
from geochange.dates import iso
from geochange.io.stack import Stack
from geochange.stages import Chain

__all__ = ["manifest", "provenance"]


def _absolute(path: str) -> str:
    """A local input path as an absolute path for the ``runs`` record (URLs as they are)."""
    if path.startswith("/vsi") or "://" in path or ":" in path.split(os.sep)[0]:
        return path
    return os.path.abspath(path)


def provenance(stack: Stack, config: DetectConfig, chunk_size: int, chain: Chain) -> dict:
    meta = chain.meta
    method = config.method
    model = config.model
    run = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "geochange_version": __version__,
        "inputs": [_absolute(str(p)) for p in stack.paths],
        "dates": [iso(d) for d in stack.dates],
        "crs": stack.grid.crs.to_string() if stack.grid.crs else "",
        "method": method,
        "model": _absolute(str(model))
        if model is not None
        else ("default" if method == "cnn-lstm" else ""),
        "model_name": str(meta.get("name", method)),
        "model_version": str(meta.get("version", __version__)),
        "adapted": bool(meta.get("adapted", False)),
        "device": chain.device,
        "threshold": float(config.threshold),
        "min_area_m2": float(config.min_area),
        "simplify": float(config.simplify),
        "chunk_size": int(chunk_size),
        "halo": int(chain.halo),
        "align": bool(stack.align),
        "masks": [f"{_absolute(m[0])}:{m[1]}" if m else "" for m in stack.masks],
        "mask_values": list(stack.mask_values) if stack.mask_values else [],
        "wavelengths_nm": list(stack.wavelengths),
        "shifts_px": [list(s) for s in stack.shifts],
        "creation_options": [f"{k}={v}" for k, v in config.co],
    }
    run.update(chain.record())
    if meta.get("taught"):
        cv = meta.get("cv") or {}
        run.update({k: meta.get(k) for k in _TAUGHT_RUN_KEYS})
        run["taught_threshold"] = meta.get("threshold")
        run["threshold_source"] = meta.get("threshold_source")
        run.update({f"cv_{k}": cv.get(k) for k in _CV_RUN_KEYS})
    return run


#: Fields of a taught model's meta copied to the ``runs`` record.
_TAUGHT_RUN_KEYS = (
    "taught",
    "examples",
    "examples_sha256",
    "examples_change_polygons",
    "examples_no_change_polygons",
    "examples_labelled_areas",
    "examples_change_px",
    "examples_no_change_px",
)
_CV_RUN_KEYS = ("k", "f1", "f1_sd", "precision", "precision_sd", "recall", "recall_sd", "note")


def manifest(
    stack: Stack,
    config: DetectConfig,
    runtime: RuntimeConfig,
    chain: Chain,
    chunks: tuple[tuple[int, ...], tuple[int, ...]],
    layout: Any,
) -> dict[str, Any]:
    """What the chunks of a run are made from (see :mod:`geochange.io.resume`): input files
    with size and modification time, every option that shapes the outputs, the model file's
    sha256, the version and the dask token of the chunk computation."""
    from dask.base import tokenize

    from geochange.io.resume import file_sha256

    inputs = []
    for name in [str(p) for p in stack.paths] + [str(m[0]) for m in stack.masks or [] if m]:
        try:
            st = os.stat(name)
            inputs.append([_absolute(name), st.st_size, st.st_mtime_ns])
        except OSError:  # a GDAL URL
            inputs.append([name, None, None])
    model = getattr(chain.detector, "model_path", None)
    if model is None and config.method == "cnn-lstm":
        from geochange.model import DEFAULT_MODEL_PATH

        model = DEFAULT_MODEL_PATH
    options: dict[str, Any] = {
        "method": config.method,
        "model": None if config.model is None else _absolute(str(config.model)),
        "skip": sorted(config.skip),
        "threshold": float(config.threshold),
        "min_area": float(config.min_area),
        "simplify": float(config.simplify),
        "quicklook": bool(config.quicklook),
        "rgb_bands": None if config.rgb_bands is None else list(config.rgb_bands),
        "allow_empty": bool(config.allow_empty),
        "co": [f"{k}={v}" for k, v in config.co],
        "dates": [d.isoformat() for d in stack.dates],
        "align": bool(stack.align),
        "masks": stack.mask_names,
        "mask_values": list(stack.mask_values) if stack.mask_values else [],
        "wavelengths": [None if w is None or w != w else float(w) for w in stack.wavelengths],
        "chunk_size": int(runtime.chunk_size),
        "device": chain.device,
        "batch_size": runtime.batch_size,
        "amp": bool(runtime.amp),
        "window": None if config.window is None else int(config.window),
        "window_overlap": int(config.window_overlap),
        "events": config.events,
        "since": None if config.since is None else config.since.isoformat(),
        "memory_limit": None if runtime.memory_limit is None else str(runtime.memory_limit),
    }
    if config.method == "cnn-lstm":
        # The deep model's float sums depend on how many threads split them.
        options["torch_threads"] = int(layout.torch_threads)
    ychunks, xchunks = chunks
    return {
        "format": 1,
        "geochange_version": __version__,
        "inputs": inputs,
        "options": options,
        "model_sha256": file_sha256(model) if model is not None else None,
        "chunks": len(ychunks) * len(xchunks),
        "graph": tokenize(stack.reader(), ychunks, xchunks, int(chain.halo), chain),
    }
