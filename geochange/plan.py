"""The run's plan from its memory budget: chunk size and the deep model's batch
(:func:`geochange.memory.plan`, from measured per-pixel task peaks)."""

from __future__ import annotations

import logging
from typing import Any

from geochange.config import ConfigError, DetectConfig, RuntimeConfig
from geochange.io.stack import Stack

__all__ = ["plan_memory"]

log = logging.getLogger(__name__)


def plan_memory(
    stack: Stack, config: DetectConfig, runtime: RuntimeConfig, chain: Any, windowed: bool
) -> int:
    """The chunk size, and the deep model's batch, that keep a worker within
    ``runtime.memory_limit`` (:func:`geochange.memory.plan`); the chunk size asked for when
    it fits, or for a classical baseline."""
    from dask.system import CPU_COUNT

    from geochange import memory

    if config.method != "cnn-lstm":
        return runtime.chunk_size
    limit_text = runtime.memory_limit
    limit = memory.DEFAULT_LIMIT if limit_text is None else memory.parse_bytes(limit_text)
    chains = chain.chains if windowed else (chain,)
    detector = chains[0].detector
    batch = int(getattr(detector, "batch_size", 1))
    tile_size = int(getattr(detector, "tile_size", 256))
    tasks = runtime.threads_per_worker or max(1, CPU_COUNT // (runtime.workers or 1))
    halo = int(chain.halo)
    dates = config.window if windowed else stack.T
    n_windows = len(chain.windows) if windowed else 1
    size = max(stack.grid.height, stack.grid.width)
    asked = min(runtime.chunk_size, size)
    shape = memory.TaskShape(
        halo,
        int(chains[0].detector_halo),
        dates,
        stack.band_count,
        n_windows,
        tile_size,
        (stack.grid.height, stack.grid.width),
    )
    chunk, new_batch = memory.plan(limit, asked, shape, tasks, batch)
    if chunk == 0 or (chunk < halo and chunk < size):
        smallest = max(16, min(halo, size))
        one = memory.task_bytes(smallest, shape, 1)
        need = memory.PROCESS_BYTES + tasks * one
        raise ConfigError(
            "memory_limit",
            f"found {limit_text or '2GiB'} ({limit / 2**30:.2f} GiB), but {tasks} task(s) of "
            f"this stack ({dates} dates at a time, {stack.band_count} bands, halo {halo} px) "
            f"need about {need / 2**30:.2f} GiB; raise it, run fewer threads per worker "
            "(--threads-per-worker) or shorter windows (--window)",
        )
    if new_batch < batch:
        for ch in chains:
            ch.detector.batch_size = new_batch
    if chunk < asked or new_batch < batch:
        log.info(
            "memory limit %.2f GiB per worker, %d task(s) in flight: chunk %d px (asked %d), "
            "batch %d (asked %d)", limit / 2**30, tasks, chunk, asked, new_batch, batch,
        )  # fmt: skip
    return chunk if chunk < asked else runtime.chunk_size
