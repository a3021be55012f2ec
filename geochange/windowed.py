"""A long series run in overlapping temporal windows: the graph around a
:class:`~geochange.stages.windows.WindowedChain` (block work in :mod:`geochange.events`).

A windowed chain's tiles give, per pixel, the quiet probability and each slot's event; here they
become the reported probability and date (first or latest event, events after a date), the
events raster (:data:`geochange.io.results.EVENT_BANDS`) and one polygon per event.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import dask.array as da
import geopandas as gpd
import numpy as np

from geochange.config import DetectConfig, RuntimeConfig
from geochange.events import DEFAULT_WINDOW
from geochange.io import encoding
from geochange.io.read import read_sample
from geochange.io.results import DATE_NODATA, EVENT_BANDS
from geochange.io.stack import Stack
from geochange.stages import Context
from geochange.stages.windows import WindowedChain

__all__ = [
    "drop_before",
    "event_polygons",
    "events_raster",
    "is_long",
    "report_rasters",
    "since_index",
    "windowed_chain",
]


def is_long(n_dates: int, config: DetectConfig) -> bool:
    """Whether the series runs as a long one: in temporal windows with its change events
    (:mod:`geochange.stages.windows`): longer than 16 dates, or than the window given. A
    shorter series runs exactly as a plain chain."""
    short = DEFAULT_WINDOW if config.window is None else min(config.window, DEFAULT_WINDOW)
    return n_dates > short


def windowed_chain(
    stack: Stack,
    config: DetectConfig,
    runtime: RuntimeConfig,
    context: Context,
    stack_stages: Sequence[tuple[str, dict]],
) -> WindowedChain:
    """The chain of ``config`` fitted per temporal window (:mod:`geochange.stages.windows`).

    The window is ``config.window`` when given. Otherwise the deep model runs the whole series
    as one window when it fits the memory budget, else the fewest windows that fit
    (:func:`geochange.plan.choose_window`); a classical baseline runs windows of 16 dates. A
    series run whole by the deep model reports each pixel's first event, and its next one when
    ``config.events`` is "latest" or "all" or ``config.since`` is set.
    """
    from geochange.plan import choose_window
    from geochange.stages.windows import NEXT_EVENTS, build_windowed

    sample = read_sample(stack)
    # A series run whole looks for each pixel's next event (one more pass of the network)
    # when the run shows more than the first: --events latest or all, or events after --since.
    later = config.events != "first" or config.since is not None

    def build(window: int) -> WindowedChain:
        return build_windowed(
            sample,
            config.method,
            config.skip,
            context,
            stack_stages,
            window,
            config.window_overlap,
            next_events=NEXT_EVENTS if later else 0,
        )

    if config.window is not None:
        return build(config.window)
    if config.method != "cnn-lstm":
        return build(DEFAULT_WINDOW)
    # The stages fitted on the whole series tell the halo of any window length.
    whole = build(stack.T)
    scene = (stack.grid.height, stack.grid.width)
    window = choose_window(
        stack.T, stack.band_count, scene, runtime, whole.chains[0], config.window_overlap
    )
    return whole if window >= stack.T else build(window)


def since_index(dates: Sequence[_dt.date], since: _dt.date | None) -> int:
    """First date index on or after ``since`` (0 = every event; T = none)."""
    if since is None:
        return 0
    # By day: a stack's dates may carry times (datetimes do not compare with dates).
    days = [d.date() if isinstance(d, _dt.datetime) else d for d in dates]
    return next((j for j, d in enumerate(days) if d >= since), len(dates))


def drop_before(prob: da.Array, interval: da.Array, threshold: float, since: int) -> da.Array:
    """One-window run: a change first seen before date ``since`` is no change (probability 0)."""

    def block(p: np.ndarray, k: np.ndarray) -> np.ndarray:
        early = (np.nan_to_num(p, nan=0.0) >= threshold) & (np.nan_to_num(k, nan=0.0) + 1 < since)
        return np.where(early, np.float32(0.0), p).astype(np.float32)

    return da.map_blocks(block, prob, interval, dtype=np.float32)


def report_rasters(
    result: da.Array, n_slots: int, threshold: float, mode: str, since: int
) -> tuple[da.Array, da.Array, tuple[da.Array, da.Array]]:
    """A windowed chain's output (1 + 2S, y, x) as the run reports it: the probability (steps of
    1/254) and interval of each pixel's first or latest event (``mode``) from date ``since`` on,
    and each slot's kept event probability (steps of 1/254) and date index, (S, y, x) each."""
    reported = _report(result, n_slots, threshold, mode, since)
    slots = (reported[2 : 2 + n_slots], reported[2 + n_slots :])
    return reported[0], reported[1], slots


def _report(result: da.Array, n_slots: int, threshold: float, mode: str, since: int) -> da.Array:
    """(2 + 2S, y, x) float32 of a windowed chain's output: the reported probability (steps of
    1/254) and interval, each slot's kept event probability (steps of 1/254) and date."""
    from geochange.events import report

    def block(out: np.ndarray) -> np.ndarray:
        quiet = out[0]
        steps = np.float32(encoding.PROB_STEPS)
        slot_prob = np.round(np.clip(out[1 : 1 + n_slots], 0, 1) * steps) / steps
        slot_date = out[1 + n_slots :].astype(np.uint8)
        # An event is one whose probability, as stored, reaches the threshold.
        slot_date = np.where(slot_prob >= threshold, slot_date, 0).astype(np.uint8)
        # Below the threshold as stored too: a report just short of it (or one two windows
        # did not agree on) must not round up to a change without an event and date.
        quiet = np.round(np.clip(quiet, 0, 1) * steps) / steps  # NaN stays NaN
        quiet = np.where(quiet >= threshold, encoding.step_below(threshold), quiet)
        prob, interval, sp, sd = report(quiet, slot_prob, slot_date, mode, since)  # type: ignore[arg-type]
        return np.concatenate([prob[None], interval[None], sp, sd.astype(np.float32)]).astype(
            np.float32
        )

    chunks = ((2 + 2 * n_slots,),) + result.chunks[1:]
    return da.map_blocks(block, result, dtype=np.float32, chunks=chunks)


def _summary_block(slot_prob: np.ndarray, slot_date: np.ndarray, prob: np.ndarray) -> np.ndarray:
    from geochange.events import summary

    return summary(slot_prob, slot_date.astype(np.uint8), np.isnan(prob))


def events_raster(slots: tuple[da.Array, da.Array], prob: da.Array) -> da.Array:
    """(4, y, x) uint8 events raster (:data:`geochange.io.results.EVENT_BANDS`) of the slots."""
    return da.map_blocks(
        _summary_block,
        slots[0],
        slots[1],
        prob,
        dtype=np.uint8,
        chunks=((len(EVENT_BANDS),),) + prob.chunks,
    )


def event_polygons(
    slots: tuple[da.Array, da.Array], prob: da.Array, stack: Stack, options: dict
) -> gpd.GeoDataFrame:
    """One polygon per connected region of one slot's event: every event of every pixel, with
    ``change_date``, ``date_before`` and ``date_after``; ordered by change date."""
    import pandas as pd

    from geochange import vectorize

    slot_prob, slot_date = slots
    frames = []
    for k in range(slot_prob.shape[0]):
        p = da.where(da.isnan(prob), np.nan, slot_prob[k]).astype(np.float32)
        d = da.where(da.isnan(prob), DATE_NODATA, slot_date[k]).astype(np.uint8)
        frame = vectorize.polygons_from_rasters(p, d, stack.grid, stack.dates, **options)
        if len(frame):
            frames.append(frame)
    if not frames:
        return vectorize.polygons_from_rasters(
            da.zeros_like(prob), da.zeros(prob.shape, np.uint8, chunks=prob.chunks),
            stack.grid, stack.dates, **options,
        )  # fmt: skip
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values(["change_date", "id"], kind="stable").reset_index(drop=True)
    out["id"] = np.arange(1, len(out) + 1, dtype=np.int64)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=stack.grid.crs)
