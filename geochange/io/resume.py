"""Finished chunks kept on disk, so that a killed run can be continued (``detect --resume``).

While a run computes, each finished chunk of the chain's output (``(2, h, w)`` float32:
probability and change interval, before any threshold) is saved as ``IY-IX.npy`` in the
``chunks/`` folder of the run's work folder (:class:`geochange.io.outputs.OutputSet`), beside a
``manifest.json`` that ties the chunks to what made them: the input files (path, size,
modification time), the options that change the result, the model file's sha256, the geochange
version and the dask token of the chunk computation (fitted stages, reader, chunk plan).

A run with ``--resume`` adopts the kept chunks of a killed run on the same target when the
manifests agree, loads them instead of computing them, and computes the rest: its outputs are
bit-identical to those of a run that was never stopped. When they disagree it refuses with one
line naming the first difference (:func:`difference`).

Workers of a dask cluster save and load the chunks themselves (they see the output folder, as
they do to write the rasters). Each chunk is written under a temporary name and renamed, so a
chunk file is whole or absent; one that cannot be read is computed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CHUNKS", "MANIFEST", "ChunkStore", "difference", "file_sha256", "read_manifest"]

#: Folder of kept chunks inside a run's work folder.
CHUNKS = "chunks"
#: What the chunks were made from, inside :data:`CHUNKS`.
MANIFEST = "manifest.json"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ChunkStore:
    """Chunks of one run in a folder, by chunk location ``(iy, ix)``; picklable (a path).

    Args:
        folder: the :data:`CHUNKS` folder of a work folder.
        total: number of chunks in the run (for messages).
    """

    def __init__(self, folder: str | os.PathLike, total: int = 0) -> None:
        self.folder = str(folder)
        self.total = int(total)

    def _path(self, loc: tuple[int, int]) -> str:
        return os.path.join(self.folder, f"{int(loc[0])}-{int(loc[1])}.npy")

    def get(self, loc: tuple[int, int], shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """The kept chunk at ``loc`` if it is whole and of ``shape`` and ``dtype``, else None."""
        try:
            array = np.load(self._path(loc), allow_pickle=False)
        except (OSError, ValueError, EOFError):  # absent, or cut short by a crash of the machine
            return None
        if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
            return None
        return array

    def put(self, loc: tuple[int, int], array: np.ndarray) -> None:
        """Keep a finished chunk (written aside, then renamed: whole or absent)."""
        final = self._path(loc)
        tmp = f"{final}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def count(self) -> int:
        """Chunks kept so far."""
        return count_chunks(self.folder)

    def __dask_tokenize__(self) -> tuple:
        # Loading a kept chunk gives what computing it gives: the store is no part of the result.
        return ("ChunkStore",)


def count_chunks(folder: str | os.PathLike) -> int:
    """Whole chunk files in a :data:`CHUNKS` folder."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    return sum(1 for n in names if n.endswith(".npy"))


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a :data:`CHUNKS` folder, None if absent or unreadable."""
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def write_manifest(folder: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    """Write the manifest of a :data:`CHUNKS` folder (aside, then renamed)."""
    path = Path(folder) / MANIFEST
    tmp = path.with_name(f"{MANIFEST}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def difference(kept: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """What differs between a killed run's manifest and this run's, in words; None if nothing.

    The first difference is named, in this order: the input files, an option, the model, the
    geochange version, the fitted stages.
    """
    if kept.get("format") != now.get("format"):
        return "its kept chunks are of another format"
    old_in = {p: tuple(v) for p, *v in kept.get("inputs", [])}
    new_in = {p: tuple(v) for p, *v in now.get("inputs", [])}
    if list(old_in) != list(new_in):
        gone = [p for p in old_in if p not in new_in] or [p for p in new_in if p not in old_in]
        if gone:
            return f"its inputs were other files ({gone[0]!r} is in one run only)"
        return "its inputs were the same files in another order"
    for path, (size, mtime) in old_in.items():
        if new_in[path] != (size, mtime):
            return f"input {path!r} changed since (size or modification time)"
    old_opt, new_opt = kept.get("options", {}), now.get("options", {})
    for name in sorted(set(old_opt) | set(new_opt)):
        if old_opt.get(name) != new_opt.get(name):
            was, now_ = _show(old_opt.get(name)), _show(new_opt.get(name))
            if name == "torch_threads":
                return (
                    f"it ran the model with {was} torch thread(s) per task, this run with {now_} "
                    "(set by the cores, --workers and --threads-per-worker)"
                )
            return f"it ran with {_flag(name)} {was}, this run with {now_}"
    if kept.get("model_sha256") != now.get("model_sha256"):
        return (
            f"its model file had sha256 {str(kept.get('model_sha256'))[:12]}..., this one "
            f"{str(now.get('model_sha256'))[:12]}..."
        )
    if kept.get("geochange_version") != now.get("geochange_version"):
        return (
            f"it ran with geochange {kept.get('geochange_version')}, this is "
            f"{now.get('geochange_version')}"
        )
    if kept.get("graph") != now.get("graph"):
        return "the stages fitted on the scene differ (another version of a library?)"
    return None


def _show(value: Any) -> str:
    if value is None:
        return "(not given)"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    return str(value)
