"""Chunk plan and halo: run a numpy block function over a lazy stack, seam-free.

A *chunk* is a spatial block of the dask stack; a *tile* is a chunk plus a *halo* of up to
``halo`` pixels on each side, taken from the neighbouring chunks. A block function whose output at
a pixel depends only on inputs within ``halo`` pixels (its receptive radius) therefore gives, on
every chunk, exactly what it gives on the whole scene in one piece. At the scene's outer edge no
halo is added (dask ``boundary="none"``), so the function sees the scene edge there just as a
whole-scene run does (e.g. a CNN's own zero padding).

This module knows nothing of torch or rasterio: block functions are numpy in, numpy out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeAlias

import dask.array as da
import numpy as np
from dask.base import tokenize

from geochange.errors import InputError

__all__ = [
    "BlockFunction",
    "Chunks1D",
    "LazyTile",
    "Window",
    "overlap_map",
    "plan_chunks",
    "region_windows",
    "stitched",
    "window_map",
    "windows",
]

logger = logging.getLogger(__name__)

#: Chunk sizes along one axis, in pixels; they sum to the axis extent.
Chunks1D: TypeAlias = tuple[int, ...]
#: ``fn(tile (t, c, h, w)) -> (out_bands, h, w)``, numpy in, numpy out. A function with a true
#: attribute ``takes_core`` is called ``fn(tile, core=(y0, y1, x0, x1))``: only its output on
#: the core (tile coordinates) is kept, so it may leave the rest of its output unset.
BlockFunction: TypeAlias = Callable[[np.ndarray], np.ndarray]
#: ``(read, crop, write)``: (rows, cols) slices of one window, see :func:`windows`.
Window: TypeAlias = tuple[tuple[slice, slice], tuple[slice, slice], tuple[slice, slice]]


def windows(height: int, width: int, core: int, halo: int) -> list[Window]:
    """Split an in-memory (height, width) tile into cores of at most ``core`` px, each read with
    up to ``halo`` px around it (clipped at the tile's edge, as at the scene's edge).

    A function whose output depends on inputs within ``halo`` px gives, from each window, exactly
    its whole-tile output on the core: bounded memory for large tiles, the same result.

    Returns:
        ``(read, crop, write)`` per window: compute on ``a[..., *read]`` and put the result's
        ``[crop]`` at ``out[write]``.
    """
    return [
        _window(y0, min(height, y0 + core), x0, min(width, x0 + core), height, width, halo)
        for y0 in range(0, max(height, 1), core)
        for x0 in range(0, max(width, 1), core)
    ]


def _window(y0: int, y1: int, x0: int, x1: int, height: int, width: int, halo: int) -> Window:
    """The window of the core rows y0:y1, cols x0:x1, read with up to ``halo`` px around it
    (clipped at the (height, width) tile's edge)."""
    ya, xa = max(0, y0 - halo), max(0, x0 - halo)
    yb, xb = min(height, y1 + halo), min(width, x1 + halo)
    return (
        (slice(ya, yb), slice(xa, xb)),
        (slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa)),
        (slice(y0, y1), slice(x0, x1)),
    )


def region_windows(
    height: int,
    width: int,
    region: tuple[int, int, int, int],
    core: int,
    halo: int,
    along: tuple[int, int, int, int] | None = None,
) -> list[Window]:
    """Like :func:`windows`, but the cores cover only ``region`` = (y0, y1, x0, x1) of the
    (height, width) tile, split evenly into cores of at most ``core`` px (no thin last core);
    each is read with up to ``halo`` px around it, clipped at the tile's edge.

    ``along`` (a box inside ``region``): the split follows it and the outermost cores reach
    out to ``region``'s edges; so a chunk's core of ``core`` px with a few pixels of margin
    around it stays one core, not four."""
    y0, y1, x0, x1 = region
    ay0, ay1, ax0, ax1 = region if along is None else along
    return [
        _window(ya0, ya1, xa0, xa1, height, width, halo)
        for ya0, ya1 in _even(ay0, ay1, core, y0, y1)
        for xa0, xa1 in _even(ax0, ax1, core, x0, x1)
    ]


def _even(
    start: int, stop: int, size: int, first: int | None = None, last: int | None = None
) -> list[tuple[int, int]]:
    """[start, stop) cut into the fewest parts of at most ``size``, of (nearly) equal length;
    the first part then starts at ``first`` and the last ends at ``last`` where given."""
    n = max(1, -(-(stop - start) // max(1, size)))
    edges = [start + round(i * (stop - start) / n) for i in range(n + 1)]
    if first is not None:
        edges[0] = first
    if last is not None:
        edges[-1] = last
    return list(zip(edges[:-1], edges[1:]))


def stitched(
    fn: Callable[..., tuple[np.ndarray, ...]],
    arrays: tuple[np.ndarray, ...],
    core: int,
    halo: int,
    region: tuple[int, int, int, int] | None = None,
    along: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, ...]:
    """``fn`` run on the :func:`windows` of in-memory arrays, its outputs' cores stitched.

    Args:
        fn: ``fn(*windows) -> tuple of (..., h', w') arrays``, given each array's window over its
            last two axes; its output at a pixel must depend on inputs within ``halo`` px.
        arrays: inputs sharing their last two axes (h, w).
        core, halo: as in :func:`windows`.
        region: (y0, y1, x0, x1): ``fn`` runs for the outputs there only
            (:func:`region_windows`, cut ``along`` a box inside it where given); they are 0
            elsewhere. None: everywhere.

    Returns:
        ``fn``'s outputs over the whole (h, w), exactly as from one call on whole arrays.
    """
    h, w = arrays[0].shape[-2:]
    outs: tuple[np.ndarray, ...] = ()
    wins = (
        windows(h, w, core, halo)
        if region is None
        else region_windows(h, w, region, core, halo, along=along)
    )
    for read, crop, write in wins:
        parts = fn(*(a[(..., *read)] for a in arrays))
        if not outs:
            new = np.empty if region is None else np.zeros
            outs = tuple(new(q.shape[:-2] + (h, w), q.dtype) for q in parts)
        for out, part in zip(outs, parts):
            out[(..., *write)] = part[(..., *crop)]
    return outs


def _check_sizes(chunk_size: int, halo: int) -> None:
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise InputError(
            f"chunk_size: got {chunk_size!r}, expected a positive whole number of pixels; "
            "pass e.g. --chunk-size 512."
        )
    if int(halo) != halo or halo < 0:
        raise InputError(
            f"halo: got {halo!r}, expected a whole number of pixels >= 0 "
            "(the receptive radius of the block function)."
        )


def _merge_small(chunks: Chunks1D, halo: int) -> Chunks1D:
    """Merge every chunk smaller than ``halo`` into the next one (the last into the previous).

    The result has the same total; every chunk is >= ``halo`` unless there is only one.
    """
    out: list[int] = []
    carry = 0
    for c in chunks:
        c += carry
        carry = 0
        if c < halo:
            carry = c
            continue
        out.append(c)
    if carry:
        if out:
            out[-1] += carry
        else:
            out.append(carry)
    return tuple(out)


def _plan_axis(extent: int, chunk_size: int, halo: int) -> Chunks1D:
    if extent <= 0:
        return (0,) if extent == 0 else ()
    n_full, rest = divmod(extent, chunk_size)
    chunks = (chunk_size,) * n_full + ((rest,) if rest else ())
    return _merge_small(chunks, halo)


def plan_chunks(height: int, width: int, chunk_size: int, halo: int) -> tuple[Chunks1D, Chunks1D]:
    """Chunk sizes along y and x for a scene, fit for a halo.

    Chunks are ``chunk_size`` pixels square; an edge chunk smaller than ``halo`` is merged into
    its neighbour (so the last chunk may be up to ``chunk_size + halo - 1`` pixels), because a
    tile can only borrow its halo from its immediate neighbours.

    Args:
        height: scene rows (pixels).
        width: scene columns (pixels).
        chunk_size: chunk edge in pixels (>= 1, and >= ``halo`` when the scene needs more than
            one chunk).
        halo: receptive radius of the block function in pixels (>= 0).

    Returns:
        ``(y_chunks, x_chunks)``: chunk sizes summing to ``height`` and ``width``.

    Raises:
        InputError: ``chunk_size`` is smaller than ``halo`` on an axis with several chunks, or
            either is not a valid pixel count.
    """
    _check_sizes(chunk_size, halo)
    for name, extent in (("height", height), ("width", width)):
        if extent > chunk_size and chunk_size < halo:
            raise InputError(
                f"chunk_size {chunk_size} px is smaller than the halo of {halo} px the block "
                f"function needs (scene {name} {extent} px needs several chunks, and a chunk can "
                f"only borrow its halo from its neighbours); use --chunk-size {max(halo, 256)} "
                "or more."
            )
    return _plan_axis(height, chunk_size, halo), _plan_axis(width, chunk_size, halo)


def _fit_chunks(chunks: Chunks1D, halo: int, axis: str) -> Chunks1D:
    """Input chunks along one spatial axis, merged where smaller than the halo."""
    if len(chunks) <= 1 or min(chunks) >= halo:
        return chunks
    merged = _merge_small(chunks, halo)
    if len(merged) > 1 and min(merged) < halo:  # pragma: no cover - _merge_small guarantees it
        raise InputError(
            f"Overlap depth {halo} is larger than the smallest chunk along {axis}: chunks "
            f"{chunks}; rechunk with geochange.tiling.plan_chunks(..., halo={halo})."
        )
    logger.info(
        "halo %d px > smallest chunk along %s %s: merged small chunks into neighbours -> %s",
        halo,
        axis,
        chunks,
        merged,
    )
    return merged


def _fn_token(fn: object) -> object:
    # Tokenising an arbitrary callable may pickle it (a whole torch model); objects can opt in
    # with __dask_tokenize__, otherwise identity is enough within one graph.
    tok = getattr(fn, "__dask_tokenize__", None)
    if callable(tok):
        return tok()
    return (type(fn).__module__, type(fn).__qualname__, id(fn))


def _apply(
    fn: BlockFunction,
    tile: np.ndarray,
    out_bands: int,
    core: tuple[int, int, int, int],
    dtype: np.dtype,
    where: str,
) -> np.ndarray:
    """``fn`` on one tile, its output checked and cut to the chunk ``core`` = (y0, y1, x0, x1),
    in tile coordinates (told to a function that ``takes_core``)."""
    out = np.asarray(fn(tile, core=core) if getattr(fn, "takes_core", False) else fn(tile))
    h, w = tile.shape[2:]
    if out.shape != (out_bands, h, w):
        raise ValueError(
            f"{where}: block function returned shape {out.shape} for a tile of "
            f"{tile.shape}; expected (out_bands={out_bands}, {h}, {w})."
        )
    y0, y1, x0, x1 = core
    return out[:, y0:y1, x0:x1].astype(dtype, copy=False)


#: Event topic on which chunk tasks running on a dask.distributed worker say they are done.
PROGRESS_TOPIC = "geochange-progress"


def tell_done(group: str) -> None:
    """Publish that one chunk of the task group ``group`` is done, when running on a
    dask.distributed worker (through its event log; a client's progress bar subscribes to
    :data:`PROGRESS_TOPIC`). Does nothing elsewhere."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    worker.log_event(PROGRESS_TOPIC, group)


def overlap_map(
    data: da.Array,
    fn: BlockFunction,
    halo: int,
    *,
    out_bands: int,
    dtype: np.typing.DTypeLike = np.float32,
    name: str = "overlap_map",
) -> da.Array:
    """Apply a block function chunk by chunk with a halo, seam-free.

    Args:
        data: lazy stack (t, c, y, x), any chunking; it is rechunked to one chunk along t and c.
            Spatial chunks smaller than ``halo`` are merged into a neighbour (logged).
        fn: ``fn(tile) -> out``: ``tile`` a numpy (t, c, h, w) array, one chunk plus up to
            ``halo`` pixels on each side (none beyond the scene edge); ``out`` (out_bands, h, w)
            for the whole tile. Called once per chunk, possibly in several threads or processes.
        halo: receptive radius of ``fn`` in pixels (>= 0).
        out_bands: number of output bands of ``fn``.
        dtype: output dtype.
        name: prefix of the graph's task names (e.g. for a progress bar counting them).

    Returns:
        Lazy (out_bands, y, x) array with the (possibly merged) spatial chunks of ``data``.

    Raises:
        InputError: ``halo`` is negative or not whole.
        ValueError: ``data`` is not 4-D, or ``fn`` returns an array of the wrong shape (when
            computed).
    """
    if data.ndim != 4:
        raise ValueError(f"overlap_map: data must be (t, c, y, x), got {data.ndim} dims")
    _check_sizes(1, halo)
    halo = int(halo)
    dtype = np.dtype(dtype)
    ychunks = _fit_chunks(data.chunks[2], halo, "y")
    xchunks = _fit_chunks(data.chunks[3], halo, "x")
    t, c = data.shape[:2]
    data = data.rechunk({0: t or 1, 1: c or 1, 2: ychunks, 3: xchunks})

    # No halo on an axis with a single chunk (nothing to borrow; dask would refuse a depth
    # larger than the array).
    depth = {0: 0, 1: 0, 2: halo if len(ychunks) > 1 else 0, 3: halo if len(xchunks) > 1 else 0}
    tiles = da.overlap.overlap(data, depth=depth, boundary="none", allow_rechunk=False)
    ny, nx = len(ychunks), len(xchunks)
    dy, dx = depth[2], depth[3]

    def _run(tile: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        iy, ix = block_info[0]["chunk-location"][2:]
        h, w = tile.shape[2:]
        core = (
            dy if iy > 0 else 0,
            h - (dy if iy < ny - 1 else 0),
            dx if ix > 0 else 0,
            w - (dx if ix < nx - 1 else 0),
        )
        out = _apply(fn, tile, out_bands, core, dtype, "overlap_map")
        tell_done(key)
        return out

    key = f"{name}-" + tokenize(data.name, halo, out_bands, dtype.str, _fn_token(fn))
    return da.map_blocks(
        _run,
        tiles,
        drop_axis=0,
        chunks=((out_bands,), ychunks, xchunks),
        dtype=dtype,
        meta=np.empty((0, 0, 0), dtype=dtype),
        name=key,
    )


class LazyTile:
    """A tile (t, c, h, w) of ``reader`` read only when sliced along dates: ``tile[a:b]`` is
    the numpy array of dates ``a:b`` (what :func:`window_map` gives with ``lazy=True``)."""

    def __init__(self, reader: Any, bounds: tuple[int, int, int, int]) -> None:
        self.reader = reader
        self.bounds = bounds
        ya, yb, xa, xb = bounds
        self.shape = (int(reader.shape[0]), int(reader.shape[1]), yb - ya, xb - xa)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, dates: Any) -> np.ndarray:
        ya, yb, xa, xb = self.bounds
        return np.asarray(self.reader[dates, :, ya:yb, xa:xb])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


def window_map(
    reader: Any,
    chunks: tuple[Chunks1D, Chunks1D],
    fn: BlockFunction,
    halo: int,
    *,
    out_bands: int,
    dtype: np.typing.DTypeLike = np.float32,
    name: str = "window_map",
    store: Any = None,
    lazy: bool = False,
) -> da.Array:
    """Like :func:`overlap_map`, but every task reads its own tile from ``reader``.

    Each task slices ``reader[:, :, y0 - halo : y1 + halo, x0 - halo : x1 + halo]`` (clipped at
    the scene edge, exactly the tile :func:`overlap_map` would build), runs ``fn`` and keeps the
    chunk. Tasks depend on nothing but the reader, so no decoded input outlives its task and no
    input moves between workers: memory is bounded by the tiles in flight, whatever the scene
    size. The halo ring is read twice (by both neighbours), which costs little next to the model.

    Args:
        reader: picklable array-like (t, c, y, x) sliced with ``[...]`` inside the task, e.g.
            :meth:`geochange.io.stack.Stack.reader`.
        chunks: ``(y_chunks, x_chunks)`` of the output, e.g. from :func:`plan_chunks`.
        fn, halo, out_bands, dtype, name: as in :func:`overlap_map`.
        store: where finished chunks are kept (None: nowhere), an object with
            ``get((iy, ix), shape, dtype) -> array | None`` and ``put((iy, ix), array)``, e.g.
            :class:`geochange.io.resume.ChunkStore`. A chunk it holds is loaded instead of
            computed; each computed chunk is put there as soon as it is done.
        lazy: give ``fn`` a :class:`LazyTile` (shape of the tile; ``tile[a:b]`` reads dates
            ``a:b`` of it then) instead of the whole tile read up front, so a block function
            that works through the dates a few at a time holds only those in memory.

    Returns:
        Lazy (out_bands, y, x) array with the given spatial chunks.
    """
    _check_sizes(1, halo)
    halo = int(halo)
    dtype = np.dtype(dtype)
    ychunks, xchunks = (tuple(int(c) for c in cs) for cs in chunks)
    height, width = int(sum(ychunks)), int(sum(xchunks))
    if tuple(reader.shape[2:]) != (height, width):
        raise ValueError(
            f"window_map: chunks sum to {height}x{width} px but the reader is "
            f"{reader.shape[2]}x{reader.shape[3]}"
        )

    def _run(block_info: dict | None = None) -> np.ndarray:
        (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
        loc = tuple(block_info[None]["chunk-location"][1:])
        if store is not None:
            kept = store.get(loc, (out_bands, y1 - y0, x1 - x0), dtype)
            if kept is not None:
                tell_done(key)
                return kept
        ya, yb = max(0, y0 - halo), min(height, y1 + halo)
        xa, xb = max(0, x0 - halo), min(width, x1 + halo)
        if lazy:
            tile: Any = LazyTile(reader, (ya, yb, xa, xb))
        else:
            tile = np.asarray(reader[:, :, ya:yb, xa:xb])
        core = (y0 - ya, y1 - ya, x0 - xa, x1 - xa)
        out = _apply(fn, tile, out_bands, core, dtype, "window_map")
        if store is not None:
            store.put(loc, out)
        tell_done(key)
        return out

    key = f"{name}-" + tokenize(
        reader,
        ychunks,
        xchunks,
        halo,
        out_bands,
        dtype.str,
        _fn_token(fn),
        *([lazy] if lazy else []),
    )
    return da.map_blocks(
        _run,
        chunks=((out_bands,), ychunks, xchunks),
        dtype=dtype,
        meta=np.empty((0, 0, 0), dtype=dtype),
        name=key,
    )
