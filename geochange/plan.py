"""The run's plan from its memory budget: the temporal window of a long series, the chunk size
and the deep model's batch (:mod:`geochange.memory`, from measured per-pixel task peaks); on a
GPU, the network's sub-tiles and batch from the device's free memory
(:func:`geochange.memory.device_plan`).

A long series runs best as one window (the model sees every date around a change:
benchmarks/LONG_SERIES.md), but a task then holds every date of its tile and a halo that grows
by a pixel per date. :func:`choose_window` keeps the whole series when the tasks of a worker
fit ``--memory-limit`` at a reasonable chunk size, else splits it into the fewest windows that
do; :func:`plan_memory` then lowers the batch, then the chunk, until the tasks fit.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from geochange.config import ConfigError, DetectConfig, RuntimeConfig
from geochange.events import DEFAULT_WINDOW, plan_windows
from geochange.io.stack import Stack

__all__ = ["REASONABLE_CHUNK", "choose_window", "device_free", "plan_memory"]

log = logging.getLogger(__name__)

#: A chunk edge (px) below which a longer window is not worth it: smaller chunks spend most of
#: their reads and compute on the halo (the chunk asked for, when smaller, or the halo, when
#: larger, take its place).
REASONABLE_CHUNK = 256


def _budget(runtime: RuntimeConfig) -> tuple[int, str]:
    from geochange import memory

    text = runtime.memory_limit
    return (memory.DEFAULT_LIMIT if text is None else memory.parse_bytes(text)), text or "2GiB"


def _tasks(runtime: RuntimeConfig) -> int:
    """Tasks in flight per worker: its threads."""
    from dask.system import CPU_COUNT

    return runtime.threads_per_worker or max(1, CPU_COUNT // (runtime.workers or 1))


def device_free(device: str) -> int | None:
    """Free bytes of the CUDA device ``device`` now; None for the CPU."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    return int(torch.cuda.mem_get_info(torch.device(device))[0])


def _on_gpu(detector: Any) -> bool:
    return str(getattr(detector, "device", "cpu")).startswith("cuda")


def choose_window(
    n_dates: int,
    bands: int,
    scene: tuple[int, int],
    runtime: RuntimeConfig,
    chain: Any,
    overlap: int,
) -> int:
    """Dates per temporal window for the deep model on a series of ``n_dates`` dates.

    The whole series when its tasks fit the memory budget with a chunk of at least
    :data:`REASONABLE_CHUNK` px (or the chunk asked for, if smaller; never below the halo);
    otherwise the fewest windows that do, of equal length (``ceil((T + (n - 1) * overlap) /
    n)`` dates for ``n`` windows), but never shorter than 16 dates: when not even those fit,
    windows of 16 and the smaller chunk :func:`plan_memory` finds (or its clear refusal).

    Args:
        n_dates: the series length T.
        bands: bands per date.
        scene: (height, width) in pixels.
        runtime: budget (``memory_limit``), chunk size asked for, workers and threads.
        chain: a fitted :class:`~geochange.stages.Chain` of the run's stages (fitted on any
            window: only their reach is used, :meth:`~geochange.stages.Chain.halos`).
        overlap: dates shared by consecutive windows.
    """
    from geochange import memory

    limit, _ = _budget(runtime)
    tasks = _tasks(runtime)
    detector = chain.detector
    batch = int(getattr(detector, "batch_size", 1))
    tile_size = int(getattr(detector, "tile_size", 256))
    asked = min(runtime.chunk_size, max(scene))
    on_gpu = _on_gpu(detector)
    free = device_free(detector.device) if on_gpu else None
    n = 1
    while True:
        window = n_dates if n == 1 else math.ceil((n_dates + (n - 1) * overlap) / n)
        if window < DEFAULT_WINDOW:
            return DEFAULT_WINDOW
        halo, detector_halo = chain.halos(window)
        shape = memory.TaskShape(
            halo,
            detector_halo,
            window,
            bands,
            len(plan_windows(n_dates, window, overlap)),
            tile_size,
            (int(scene[0]), int(scene[1])),
            model_on_host=not on_gpu,
            result_margin=int(getattr(chain, "result_margin", 0)),
        )
        chunk, _ = memory.plan(limit, asked, shape, tasks, batch)
        if free is not None:  # the network's activations go to the GPU
            chunk = min(chunk, memory.device_plan(free, chunk, shape, tasks, 1)[0])
        if chunk > 0 and chunk >= min(asked, max(REASONABLE_CHUNK, halo)):
            if n > 1:
                log.info(
                    "%d dates do not fit %.2f GiB per worker as one window at a %d px chunk: "
                    "%d windows of %d dates", n_dates, limit / 2**30, asked, n, window,
                )  # fmt: skip
            return window
        n += 1


def plan_memory(
    stack: Stack, config: DetectConfig, runtime: RuntimeConfig, chain: Any, windowed: bool
) -> int:
    """The chunk size, and the deep model's batch, that keep a worker within
    ``runtime.memory_limit`` (:func:`geochange.memory.plan`); the chunk size asked for when
    it fits, or for a classical baseline."""
    from geochange import memory

    if config.method != "cnn-lstm":
        return runtime.chunk_size
    limit, limit_text = _budget(runtime)
    chains = chain.chains if windowed else (chain,)
    detector = chains[0].detector
    batch = int(getattr(detector, "batch_size", 1))
    tile_size = int(getattr(detector, "tile_size", 256))
    tasks = _tasks(runtime)
    halo = int(chain.halo)
    dates = max(b - a for a, b in chain.windows) if windowed else stack.T
    n_windows = len(chain.windows) if windowed else 1
    size = max(stack.grid.height, stack.grid.width)
    asked = min(runtime.chunk_size, size)
    if asked < halo and asked < size:
        raise ConfigError(
            "chunk_size",
            f"found {asked} px, smaller than the {halo} px of context this run reads around "
            f"each chunk (the model over {dates} dates and the stages after it); use "
            f"--chunk-size {halo} or more",
        )
    on_gpu = _on_gpu(detector)
    shape = memory.TaskShape(
        halo,
        int(chains[0].detector_halo),
        dates,
        stack.band_count,
        n_windows,
        tile_size,
        (stack.grid.height, stack.grid.width),
        model_on_host=not on_gpu,
        result_margin=max(int(getattr(c, "result_margin", 0)) for c in chains),
    )
    chunk, new_batch = memory.plan(limit, asked, shape, tasks, batch)
    if chunk == 0 or (chunk < halo and chunk < size):
        smallest = max(16, min(halo, size))
        one = memory.task_bytes(smallest, shape, 1)
        need = memory.PROCESS_BYTES + tasks * one
        raise ConfigError(
            "memory_limit",
            f"found {limit_text} ({limit / 2**30:.2f} GiB), but {tasks} task(s) of "
            f"this stack ({dates} dates at a time, {stack.band_count} bands, halo {halo} px) "
            f"need about {need / 2**30:.2f} GiB; raise it, run fewer threads per worker "
            "(--threads-per-worker) or shorter windows (--window)",
        )
    if on_gpu:
        free = device_free(detector.device)
        assert free is not None
        cap = batch if runtime.batch_size is not None else memory.DEVICE_BATCH
        chunk, tile_size, new_batch = memory.device_plan(free, chunk, shape, tasks, cap)
        if chunk == 0 or (chunk < halo and chunk < size):
            raise ConfigError(
                "device",
                f"found {free / 2**30:.2f} GiB free on {detector.device}, but {tasks} task(s) "
                f"of this stack ({dates} dates at a time, {stack.band_count} bands, halo "
                f"{halo} px) do not fit {memory.DEVICE_SHARE:.0%} of it; free the GPU, run "
                "fewer threads per worker (--threads-per-worker), shorter windows (--window) "
                "or --device cpu",
            )
        for ch in chains:
            ch.detector.tile_size = tile_size
        log.info(
            "%s: %.2f GiB free, %d task(s) in flight: chunk %d px, sub-tiles of %d px, %d at "
            "a time", detector.device, free / 2**30, tasks, chunk, tile_size, new_batch,
        )  # fmt: skip
    elif chunk < asked or new_batch < batch:
        log.info(
            "memory limit %.2f GiB per worker, %d task(s) in flight: chunk %d px (asked %d), "
            "batch %d (asked %d)", limit / 2**30, tasks, chunk, asked, new_batch, batch,
        )  # fmt: skip
    if new_batch != batch:
        for ch in chains:
            ch.detector.batch_size = new_batch
    return chunk if chunk < asked else runtime.chunk_size
