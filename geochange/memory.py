"""Memory per task, and the chunk and batch that keep a worker within its budget.

A worker process holds its libraries and the model once (:data:`PROCESS_BYTES`) and, per task
in flight, one tile and the model's activations. With temporal windows
(:mod:`geochange.events`) a task holds one window's dates at a time, so its memory depends on
the window length ``W``, the band count ``c`` and the pixels, not on the series length:

- the tile's arrays, per tile pixel: the window's dates as read, normalised and screened
  (``W x c`` values, a few copies) and the windows' reports (two values per window);
- the network's activations, per pixel of the sub-tiles it runs at once (``batch`` sub-tiles of
  ``tile_size`` px plus the detector's halo): the sub-tiles' input and outputs for every date,
  and the features and states kept for the backward pass for the dates held at once
  (:func:`held_dates`: every date up to a segment's length, then a segment's dates and a state
  per segment, see :meth:`geochange.model.CNNLSTM.forward`).

On a GPU the network's activations live on the device: the worker holds the tile's arrays, and
:func:`device_plan` sizes the network's sub-tiles and batch to the device's free memory (the
larger and fewer the passes, the faster a GPU runs them).

The per-pixel figures are measured (peak resident memory of one task on synthetic stacks, 1
torch thread; benchmarks/LONG_SERIES.md), not derived, and rounded up. The network's part per
date of the series (its input and interval outputs) was measured on the network alone (192² px,
16-150 dates, 4 and 13 bands); the part per date held is the rest of the per-date figure
measured with every date held, so up to one segment of dates the estimate is unchanged.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass

from geochange.tiling import region_windows
from geochange.tiling import windows as _subtiles

__all__ = [
    "DEFAULT_LIMIT",
    "DEVICE_SHARE",
    "PROCESS_BYTES",
    "SEGMENT_DATES",
    "TaskShape",
    "device_plan",
    "held_dates",
    "model_bytes",
    "parse_bytes",
    "plan",
    "release_freed",
    "segment_length",
    "task_bytes",
]

#: Default budget of one worker process.
DEFAULT_LIMIT = 2 * 1024**3
#: A worker's resident memory before its first task: Python, numpy, GDAL, torch, the model.
PROCESS_BYTES = 480 * 1024**2
#: Network activations per sub-tile pixel and date held (features and states; bytes): fixed
#: part and per band.
MODEL_PER_DATE = 225
MODEL_PER_DATE_BAND = 37
#: The same for every date of the series (input, interval logits and masks; bytes).
MODEL_PER_SERIES_DATE = 35
MODEL_PER_SERIES_DATE_BAND = 8
#: Dates per segment of the network's inference pass, at least (:func:`segment_length`).
SEGMENT_DATES = 16
#: Tile arrays per tile pixel and date-band (the tile as read, normalised and screened in
#: place, and the stages' temporaries; bytes). With the network's part it keeps the plan above
#: every measured peak (benchmarks/MEMORY_PLAN.md).
TILE_PER_DATE_BAND = 24
#: The tile on a GPU per pixel and date-band: sent and normalised in place (float32; bytes).
DEVICE_PER_DATE_BAND = 4
#: Share of a GPU's free memory that the tasks sharing it fill: the rest is left to CUDA's
#: workspaces and the caching allocator's slack.
DEVICE_SHARE = 0.6
#: Sub-tiles of one shape per pass on a GPU, at most.
DEVICE_BATCH = 16
#: Per tile pixel and window (reports and merged events; bytes).
TILE_PER_WINDOW = 16

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "t": 1e12, "tb": 1e12}  # fmt: skip


def parse_bytes(value: str | float | int) -> int:
    """``"2GB"``, ``"1.5 GiB"``, ``"800MB"`` or a number of bytes -> bytes.

    Raises:
        ValueError: not a size (the message says what is expected).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"found {value!r}, expected a size such as 2GB, 1.5GiB or 800MB")
        number, unit = float(m.group(1)), m.group(2).lower()
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size <= 0:
        raise ValueError(f"found {value!r}, expected a size > 0 such as 2GB")
    return int(size)


@dataclass(frozen=True)
class TaskShape:
    """What one task's memory depends on, besides its chunk size and batch.

    Attributes:
        halo: pixels of context around the chunk (the chain's halo).
        detector_halo: context around each sub-tile the network runs on.
        dates: dates held at a time (the window length, or the series when not windowed).
        bands: bands per date.
        windows: temporal windows of the series (their reports are kept per tile pixel).
        tile_size: edge of the network's sub-tiles in pixels.
        scene: (height, width) clips the tile (no halo beyond the scene's edge); None: no clip.
        model_on_host: the network's activations are in the worker's memory (False: on a GPU,
            planned by :func:`device_plan`; the worker then holds the tile's arrays only).
        result_margin: pixels around the chunk's core where the network runs too (the reach
            of the stages after it): its sub-tiles are cut along the core and the outer ones
            reach this much further (:func:`geochange.tiling.region_windows`).
    """

    halo: int
    detector_halo: int
    dates: int
    bands: int
    windows: int = 1
    tile_size: int = 256
    scene: tuple[int, int] | None = None
    model_on_host: bool = True
    result_margin: int = 0


def segment_length(dates: int) -> int:
    """Dates per segment of the network's inference pass over ``dates`` dates
    (:meth:`geochange.model.CNNLSTM.forward`): :data:`SEGMENT_DATES`, or about √dates for
    longer series."""
    return max(SEGMENT_DATES, math.isqrt(max(dates, 1) - 1) + 1)


def held_dates(dates: int) -> int:
    """Dates whose features and states the network holds at once, for a series of ``dates``:
    all of them up to one segment, then one segment and the state where each begins."""
    seg = segment_length(dates)
    return dates if dates <= seg else seg + math.ceil(dates / seg)


def _tile_edges(chunk: int, shape: TaskShape) -> tuple[int, int]:
    """(height, width) of a ``chunk`` px chunk's tile: the chunk and its halo, clipped to the
    scene."""
    ey = ex = chunk + 2 * shape.halo
    if shape.scene is not None:
        ey, ex = min(ey, int(shape.scene[0])), min(ex, int(shape.scene[1]))
    return ey, ex


def _shapes(edges: tuple[int, int], shape: TaskShape, tile_size: int) -> Counter:
    """How many sub-tiles of each (height, width) a tile of ``edges`` px runs as: the larger
    of the whole tile cut into sub-tiles (a detector not told its core) and the chunk's core
    with the result margin around it, cut along the core (as a chain runs it)."""
    whole = Counter(
        (r.stop - r.start, c.stop - c.start)
        for (r, c), _, _ in _subtiles(*edges, tile_size, shape.detector_halo)
    )
    ey, ex = edges
    cy, cx = (e - 2 * shape.halo if e > 2 * shape.halo else e for e in edges)
    y0, x0 = (ey - cy) // 2, (ex - cx) // 2
    m = shape.result_margin
    region = (max(0, y0 - m), min(ey, y0 + cy + m), max(0, x0 - m), min(ex, x0 + cx + m))
    core = Counter(
        (r.stop - r.start, c.stop - c.start)
        for (r, c), _, _ in region_windows(
            ey, ex, region, tile_size, shape.detector_halo, along=(y0, y0 + cy, x0, x0 + cx)
        )
    )
    return max(whole, core, key=lambda n: max(h * w for h, w in n))


def model_bytes(edges: tuple[int, int], shape: TaskShape, tile_size: int, batch: int) -> int:
    """The network's activations for a tile of ``edges`` px run in sub-tiles of ``tile_size``
    px, ``batch`` of one shape at a time: the largest batch it holds."""
    shapes = _shapes(edges, shape, tile_size)
    held = max(min(batch, n) * h * w for (h, w), n in shapes.items())
    dates, bands = shape.dates, shape.bands
    return int(
        held
        * (
            held_dates(dates) * (MODEL_PER_DATE + MODEL_PER_DATE_BAND * bands)
            + dates * (MODEL_PER_SERIES_DATE + MODEL_PER_SERIES_DATE_BAND * bands)
        )
    )


def task_bytes(chunk: int, shape: TaskShape, batch: int = 4) -> int:
    """Peak bytes one task adds to its worker: a ``chunk`` px chunk of ``shape``, the network
    run on ``batch`` sub-tiles at a time (its activations counted when on the host)."""
    ey, ex = _tile_edges(chunk, shape)
    model = model_bytes((ey, ex), shape, shape.tile_size, batch) if shape.model_on_host else 0
    tile = (
        ey * ex * (shape.dates * shape.bands * TILE_PER_DATE_BAND + shape.windows * TILE_PER_WINDOW)
    )
    return int(model + tile)


def device_plan(
    free: int, chunk: int, shape: TaskShape, tasks: int = 1, batch: int = DEVICE_BATCH
) -> tuple[int, int, int]:
    """The chunk, sub-tile size and batch of the network on a GPU with ``free`` bytes shared
    by ``tasks`` tasks at a time.

    Each task sends its tile once (:data:`DEVICE_PER_DATE_BAND` per pixel and date-band) and
    runs the network on sub-tiles of it. On a GPU the fewer and larger its passes the better
    (each date step is a few kernel launches, whatever the pixels), and a sub-tile as large as
    the tile repeats no halo: the largest sub-tile (the whole tile first, then halved), then
    the largest batch (at most ``batch``), whose activations fit beside the tile in
    :data:`DEVICE_SHARE` of ``free`` per task; the chunk (at most ``chunk``, halved) only
    when no sub-tile of at least 64 px and the network's halo fits.

    Returns:
        ``(chunk, tile_size, batch)``; ``(0, 0, 0)`` when nothing fits.
    """
    budget = free * DEVICE_SHARE / max(1, tasks)
    c = int(chunk)
    while c >= 16:
        edges = _tile_edges(c, shape)
        tile = edges[0] * edges[1] * shape.dates * (shape.bands * DEVICE_PER_DATE_BAND + 1)
        # Sub-tiles smaller than their halo would mostly compute halo: a smaller chunk first.
        size, smallest = max(edges), max(64, shape.detector_halo)
        while size == max(edges) or size >= smallest:
            most = max(_shapes(edges, shape, size).values())  # a larger batch holds no more
            for b in range(min(max(1, batch), most), 0, -1):
                if tile + model_bytes(edges, shape, size, b) <= budget:
                    return c, size, b
            size //= 2
        c = c // 2 if c > 64 else c - 16
    return 0, 0, 0


def plan(
    limit: int, chunk: int, shape: TaskShape, tasks: int = 1, batch: int = 4
) -> tuple[int, int]:
    """The largest chunk (at most ``chunk``, halved, then in steps of 16 px) and then the
    largest batch (at most ``batch``) whose tasks in flight (``tasks``, at most the scene's
    chunks) fit ``limit`` bytes beside the worker's own memory.

    Returns:
        ``(chunk, batch)``; ``(0, 0)`` when not even a 16 px chunk fits.
    """
    scene = shape.scene
    c = int(chunk)
    while c >= 16:
        n_chunks = 1 if scene is None else math.ceil(scene[0] / c) * math.ceil(scene[1] / c)
        budget = (limit - PROCESS_BYTES) / max(1, min(tasks, n_chunks) if scene else tasks)
        for b in range(max(1, batch), 0, -1):
            if task_bytes(c, shape, b) <= budget:
                return c, b
        c = c // 2 if c > 64 else c - 16
    return 0, 0


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed() -> None:
    """Hand the memory freed so far back to the operating system.

    glibc keeps freed blocks of its heap for reuse and, once a large array has been freed, serves
    arrays of up to 32 MB from the heap too; a process then stays as large as its largest
    moment. A tile's stages each free arrays of the tile's size, so without this a worker's
    resident memory holds each stage's temporaries on top of those the stages before it left
    behind (benchmarks/LONG_SERIES.md). The call takes milliseconds and does nothing where the
    C library is not glibc; dask.distributed's nanny starts workers with a low
    ``MALLOC_TRIM_THRESHOLD_`` for the same reason.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
