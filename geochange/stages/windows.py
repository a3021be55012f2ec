"""A chain run over a long series in overlapping temporal windows (:mod:`geochange.events`).

:class:`WindowedChain` holds one fitted :class:`~geochange.stages.Chain` per window (each fitted
on the window's dates of the scene sample, so the deep model's statistics and the cloud screen
are the window's own) and, called on a tile, runs them one window at a time on that window's
dates only, then merges their reports into per-pixel events. The tile may be any array-like
sliced along dates (``tile[a:b]``), e.g. the lazy tile of ``tiling.window_map(..., lazy=True)``:
then only one window's dates are in memory at a time, whatever the series length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geochange.events import DEFAULT_GAP, merge, owners, plan_windows
from geochange.io.encoding import quantised
from geochange.stages import Chain, Context, build_chain

__all__ = ["WindowedChain", "build_windowed"]


class WindowedChain:
    """Block function ``tile (T, c, h, w) -> (1 + 2S, h, w) float32`` over S windows.

    Output bands: 0 the highest probability below the threshold (NaN = nodata), 1..S each
    slot's event probability (0 = none), S+1..2S each slot's event date index (0 = none), see
    :func:`geochange.events.merge`.

    Args:
        chains: one fitted chain per window, in order.
        windows: the windows ``(start, stop)`` of :func:`geochange.events.plan_windows`.
        n_dates: the series length T.
        threshold: a window's report is a change from this probability.
        gap: reports closer than this many dates are one event.
    """

    def __init__(
        self,
        chains: Sequence[Chain],
        windows: Sequence[tuple[int, int]],
        n_dates: int,
        threshold: float = 0.5,
        gap: int = DEFAULT_GAP,
    ) -> None:
        if len(chains) != len(windows) or not chains:
            raise ValueError(f"got {len(chains)} chains for {len(windows)} windows")
        self.chains = tuple(chains)
        self.windows = tuple((int(a), int(b)) for a, b in windows)
        self.n_dates = int(n_dates)
        self.threshold = float(threshold)
        self.gap = int(gap)
        self.owner = owners(self.n_dates, list(self.windows))
        #: pixels of context each tile needs (the windows' own, which depends on W, not T)
        self.halo = max(int(c.halo) for c in self.chains)

    @property
    def n_slots(self) -> int:
        return len(self.windows)

    @property
    def out_bands(self) -> int:
        return 1 + 2 * self.n_slots

    # What the pipeline reads of a chain.
    @property
    def names(self) -> tuple[str, ...]:
        return self.chains[0].names

    @property
    def detector(self) -> Any:
        """The first window's detector (the model, its file and device are the same in all)."""
        return self.chains[0].detector

    @property
    def method(self) -> str:
        return self.chains[0].method

    @property
    def device(self) -> str:
        return self.chains[0].device

    @property
    def meta(self) -> dict:
        return self.chains[0].meta

    @property
    def num_threads(self) -> int | None:
        return self.chains[0].num_threads

    @num_threads.setter
    def num_threads(self, value: int | None) -> None:
        for chain in self.chains:
            chain.num_threads = value

    def record(self) -> dict[str, Any]:
        out = self.chains[0].record()
        out["windows"] = [list(w) for w in self.windows]
        out["event_gap"] = self.gap
        return out

    def __dask_tokenize__(self) -> tuple:
        from dask.base import tokenize

        return (
            "WindowedChain",
            self.windows,
            self.n_dates,
            self.threshold,
            self.gap,
            tuple(tokenize(c) for c in self.chains),
        )

    def __call__(self, tile: Any) -> np.ndarray:
        probs, dates = [], []
        for (a, b), chain in zip(self.windows, self.chains):
            out = chain(np.asarray(tile[a:b], dtype=np.float32))
            # Judged as stored (steps of 1/254), like a one-window run's probability.
            probs.append(quantised(out[0]))
            dates.append(out[1] + np.float32(1 + a))
        quiet, slot_prob, slot_date = merge(
            probs, dates, self.owner, self.threshold, self.gap, list(self.windows)
        )
        return np.concatenate([quiet[None], slot_prob, slot_date.astype(np.float32)])


def build_windowed(
    sample: np.ndarray,
    method: str,
    skip: Any,
    context: Context,
    stack_stages: Sequence[tuple[str, dict[str, Any]]],
    window: int,
    overlap: int,
) -> WindowedChain:
    """One chain per window of the series, each fitted on its dates of ``sample`` (t, c, n)."""
    n_dates = sample.shape[0]
    wins = plan_windows(n_dates, window, overlap)
    chains = [build_chain(sample[a:b], method, skip, context, stack_stages) for a, b in wins]
    return WindowedChain(chains, wins, n_dates)
