"""A chain run over a long series in overlapping temporal windows (:mod:`geochange.events`).

:class:`WindowedChain` holds one fitted :class:`~geochange.stages.Chain` per window (each fitted
on the window's dates of the scene sample, so the deep model's statistics and the cloud screen
are the window's own) and, called on a tile, runs them one window at a time on that window's
dates only, then merges their reports into per-pixel events. The tile may be any array-like
sliced along dates (``tile[a:b]``), e.g. the lazy tile of ``tiling.window_map(..., lazy=True)``:
then only one window's dates are in memory at a time, whatever the series length.

A series run whole (one window over all its dates) gets its events from the network detector
instead: the chain's result is each pixel's first event, and, when the run asks for more than
the first, the detector judges the series again from each event on for the next one
(``next_events``, :mod:`geochange.stages.network`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geochange.events import DEFAULT_GAP, DEFAULT_WINDOW, merge, owners, plan_windows
from geochange.io.encoding import quantised, step_below
from geochange.stages import Chain, Context, build_chain

__all__ = ["NEXT_EVENTS", "WindowedChain", "build_windowed"]

#: Events looked for after each pixel's first in a long series run whole when the run shows
#: more than the first event (each one more pass of the network).
NEXT_EVENTS = 1


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
        next_events: one window over the whole series only: its chain also reports this many
            events after each pixel's first (its detector's ``next_events``); the slots are
            then the first event and each next one, in time order.

    Attributes:
        overwrite_input: the tiles it is given are read for it alone (see
            :attr:`geochange.stages.Chain.overwrite_input`): each window's dates as read go to
            its chain to overwrite. False (the default): a tile given stays as it was.
    """

    overwrite_input: bool = False
    #: Tiling tells it the core of each tile (see :data:`geochange.tiling.BlockFunction`).
    takes_core = True

    def __init__(
        self,
        chains: Sequence[Chain],
        windows: Sequence[tuple[int, int]],
        n_dates: int,
        threshold: float = 0.5,
        gap: int = DEFAULT_GAP,
        next_events: int = 0,
    ) -> None:
        if len(chains) != len(windows) or not chains:
            raise ValueError(f"got {len(chains)} chains for {len(windows)} windows")
        if next_events and len(chains) != 1:
            raise ValueError(f"next events need one window over the series, got {len(chains)}")
        self.next_events = int(next_events)
        self.chains = tuple(chains)
        self.windows = tuple((int(a), int(b)) for a, b in windows)
        self.n_dates = int(n_dates)
        self.threshold = threshold
        self.gap = int(gap)
        self.owner = owners(self.n_dates, list(self.windows))
        #: pixels of context each tile needs (the windows' own, which depends on W, not T)
        self.halo = max(int(c.halo) for c in self.chains)

    @property
    def threshold(self) -> float:
        """A report is a change from this probability (the run's threshold)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = float(value)
        if self.next_events:  # the detector follows the events that count
            self.chains[0].detector.next_from = self._threshold

    @property
    def n_slots(self) -> int:
        return len(self.windows) + self.next_events

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
        out["next_events"] = self.next_events
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
            self.next_events,
            tuple(tokenize(c) for c in self.chains),
        )

    def __call__(self, tile: Any, core: tuple[int, int, int, int] | None = None) -> np.ndarray:
        if self.next_events:
            return self._whole(tile, core)
        probs, dates = [], []
        for (a, b), chain in zip(self.windows, self.chains):
            out = chain(np.asarray(tile[a:b], dtype=np.float32), self.overwrite_input, core)
            # Judged as stored (steps of 1/254), like a one-window run's probability.
            probs.append(quantised(out[0]))
            dates.append(out[1] + np.float32(1 + a))
        quiet, slot_prob, slot_date = merge(
            probs, dates, self.owner, self.threshold, self.gap, list(self.windows)
        )
        return np.concatenate([quiet[None], slot_prob, slot_date.astype(np.float32)])

    def _whole(self, tile: Any, core: tuple[int, int, int, int] | None) -> np.ndarray:
        """One window over the series: the first event and the next ones, slot by slot."""
        out = self.chains[0](np.asarray(tile, dtype=np.float32), self.overwrite_input, core)
        n = 1 + self.next_events
        probs = quantised(np.concatenate([out[:1], out[2 : 1 + n]]))  # judged as stored
        dates = np.concatenate([out[1:2] + np.float32(1), out[1 + n :]])
        nodata = np.isnan(probs[0])
        below = np.float32(step_below(self.threshold))
        slot_prob = np.zeros(probs.shape, np.float32)
        slot_date = np.zeros(probs.shape, np.uint8)
        quiet = np.where(nodata, np.nan, 0.0).astype(np.float32)
        # An event counts after an event, at least ``gap`` dates later (a later report of the
        # same change is none).
        hit = ~nodata
        previous = np.zeros(probs.shape[1:], np.float32)
        for s in range(n):
            p = np.nan_to_num(probs[s], nan=0.0)
            date = np.nan_to_num(dates[s], nan=0.0)
            reached = hit & (p >= self.threshold)
            if s:
                reached &= date - previous >= self.gap
            quiet = np.where(hit & ~reached, np.fmax(quiet, np.minimum(p, below)), quiet)
            slot_prob[s] = np.where(reached, p, 0.0)
            slot_date[s] = np.where(reached, date, 0)
            hit, previous = reached, date
        return np.concatenate([quiet[None], slot_prob, slot_date.astype(np.float32)])


def build_windowed(
    sample: np.ndarray,
    method: str,
    skip: Any,
    context: Context,
    stack_stages: Sequence[tuple[str, dict[str, Any]]],
    window: int,
    overlap: int,
    next_events: int = 0,
) -> WindowedChain:
    """One chain per window of the series, each fitted on its dates of ``sample`` (t, c, n).

    A series longer than 16 dates run as one window by a detector that can look for the next
    events gets ``next_events`` of them (e.g. :data:`NEXT_EVENTS`)."""
    n_dates = sample.shape[0]
    wins = plan_windows(n_dates, window, overlap)
    chains = [build_chain(sample[a:b], method, skip, context, stack_stages) for a, b in wins]
    detector = chains[0].detector
    whole = len(wins) == 1 and n_dates > DEFAULT_WINDOW
    if not (next_events and whole and hasattr(detector, "next_events")):
        return WindowedChain(chains, wins, n_dates)
    detector.next_events = int(next_events)
    return WindowedChain(chains, wins, n_dates, next_events=next_events)
