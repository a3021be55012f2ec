"""Long series in temporal windows, and the change events merged from them.

A network trained on short series (a dozen dates) runs over a long one in overlapping windows of
``W`` dates: memory per task then depends on ``W``, not on the series length ``T``, time grows
linearly in ``T``, and the network only ever sees series as long as those it learned from. Each
window reports at most one change per pixel (its most likely date and probability); the windows'
reports are merged here into per-pixel *events*.

Glossary:

- *window*: dates ``[start, stop)`` of the series run as one short series (:func:`plan_windows`).
- *slot*: the window that *owns* a change date, the one in which that date sits furthest from
  both ends (most context before and after it, :func:`owners`). A pixel has at most one event
  per slot, so the event rasters have one band per slot.
- *event*: a change date index ``j`` (1..T-1, change first seen on date ``j``) with its
  probability. Two reports closer than ``gap`` dates are one event (the more probable one).

Everything here is numpy on (h, w) arrays, one chunk at a time.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = [
    "DEFAULT_GAP",
    "DEFAULT_OVERLAP",
    "DEFAULT_WINDOW",
    "EventMode",
    "merge",
    "owners",
    "plan_windows",
    "report",
    "summary",
]

#: Dates per window (measured: benchmarks/LONG_SERIES.md).
DEFAULT_WINDOW = 16
#: Dates shared by consecutive windows (context either side of a window's core).
DEFAULT_OVERLAP = 3
#: Reports of one pixel closer than this many dates are one event.
DEFAULT_GAP = 2

EventMode = Literal["first", "latest", "all"]


def plan_windows(n_dates: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Windows ``(start, stop)`` of ``window`` dates covering ``n_dates``, consecutive ones
    sharing ``overlap`` dates; the last one ends at the last date. One window when the series
    is no longer than ``window``.

    Raises:
        ValueError: ``window`` < 3 or ``overlap`` outside 1 .. window - 2.
    """
    if window < 3:
        raise ValueError(f"window: got {window} dates, expected at least 3")
    if not 1 <= overlap <= window - 2:
        raise ValueError(f"window_overlap: got {overlap}, expected 1 .. {window - 2} dates")
    if n_dates <= window:
        return [(0, n_dates)]
    stride = window - overlap
    n = math.ceil((n_dates - window) / stride) + 1
    starts = [min(k * stride, n_dates - window) for k in range(n)]
    return [(s, s + window) for s in starts]


def owners(n_dates: int, windows: list[tuple[int, int]]) -> np.ndarray:
    """(n_dates,) int: the slot (window index) that owns a change first seen on date ``j``.

    A change on date ``j`` is visible in a window that holds dates ``j - 1`` and ``j``; of
    those, the owner is the one where ``j`` has the most dates around it (ties: the earlier).
    Entry 0 (no change date) is -1.
    """
    out = np.full(n_dates, -1, np.int64)
    for j in range(1, n_dates):
        best, score = -1, -1
        for k, (a, b) in enumerate(windows):
            if a + 1 <= j <= b - 1:
                s = min(j - a, b - j)
                if s > score:
                    best, score = k, s
        out[j] = best
    return out


def merge(
    probs: list[np.ndarray],
    dates: list[np.ndarray],
    owner: np.ndarray,
    threshold: float,
    gap: int = DEFAULT_GAP,
    windows: list[tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The windows' reports merged into events.

    Args:
        probs: per window, (h, w) float32 change probability (NaN = nodata in that window).
        dates: per window, (h, w) float32 global date index of its change (1..T-1; any value
            where the probability is NaN).
        owner: :func:`owners` of the series.
        threshold: a report is a change from this probability.
        gap: reports closer than this many dates are one event.
        windows: the windows (see :func:`plan_windows`); given, a change on a date that two
            windows both judge (a date of their overlap, near the end of one and the start of
            the other, where either has little context on one side; the later window must
            also hold the ``gap`` dates before it) counts only when both report it (within
            ``gap`` dates): a change lasts when later dates agree.

    Returns:
        ``quiet`` (h, w) float32: the highest probability below ``threshold`` (NaN where every
        window is nodata; 0 where every report is a change); ``slot_prob`` (S, h, w) float32 and
        ``slot_date`` (S, h, w) uint8: per slot the event's probability and date index (0 = no
        event in that slot).
    """
    n_slots = len(probs)
    h, w = probs[0].shape
    slot_prob = np.zeros((n_slots, h, w), np.float32)
    slot_date = np.zeros((n_slots, h, w), np.uint8)
    quiet = np.full((h, w), np.nan, np.float32)
    n_dates = len(owner)
    hits, js = [], []
    for p, d in zip(probs, dates):
        p = np.asarray(p, np.float32)
        seen = ~np.isnan(p)
        hits.append(seen & (p >= threshold))
        j = np.clip(np.nan_to_num(np.asarray(d, np.float64), nan=0.0), 0, n_dates - 1)
        js.append(j.astype(np.int64))
    if windows is not None:
        hits = _confirmed(hits, js, windows, gap)
    for p, hit, j in zip(probs, hits, js):
        p = np.asarray(p, np.float32)
        seen = ~np.isnan(p)
        # Unconfirmed reports count as what they are: a probability short of a change.
        below = seen & ~hit
        quiet = np.where(below, np.fmax(quiet, np.minimum(p, _BELOW(threshold))), quiet)
        quiet = np.where(seen & np.isnan(quiet), 0.0, quiet)  # seen, nothing below yet
        if not hit.any():
            continue
        slot = owner[j]
        hit &= slot >= 0
        for s in np.unique(slot[hit]):
            here = hit & (slot == s) & (p > slot_prob[s])
            slot_prob[s][here] = p[here]
            slot_date[s][here] = j[here]
    if n_slots > 1 and gap > 1:
        _merge_close(slot_prob, slot_date, gap)
    return quiet, slot_prob, slot_date


def _BELOW(threshold: float) -> np.float32:
    """The largest float32 below ``threshold``."""
    return np.nextafter(np.float32(threshold), np.float32(0))


def _confirmed(
    hits: list[np.ndarray], js: list[np.ndarray], windows: list[tuple[int, int]], gap: int
) -> list[np.ndarray]:
    """Reports kept: on a date another window also judges, that window must report it too.

    A window judges a change on date ``j`` when it holds ``j`` and the ``gap`` dates before it:
    the state before any report that counts as the same event. A window that starts within
    ``gap`` dates of ``j`` may hold only the after-state of a change reported a date late by
    the window before it (whose last dates leave little to date it by); its silence is no
    denial.
    """
    span = max(gap, 1)
    out = []
    for k, (hit, j) in enumerate(zip(hits, js)):
        keep = hit.copy()
        for m, (a, b) in enumerate(windows):
            if m == k:
                continue
            sees = hit & (j >= a + span) & (j <= b - 1)
            if not sees.any():
                continue
            agree = hits[m] & (np.abs(js[m] - j) < max(gap, 1))
            keep &= ~sees | agree
        out.append(keep)
    return out


def _merge_close(slot_prob: np.ndarray, slot_date: np.ndarray, gap: int) -> None:
    """In place: of two consecutive events of a pixel less than ``gap`` dates apart, keep the
    more probable one (the same change reported by two windows a date or so apart)."""
    n_slots = slot_prob.shape[0]
    last = np.zeros(slot_prob.shape[1:], np.int64)  # slot + 1 of the pixel's previous event
    for s in range(n_slots):
        has = slot_date[s] > 0
        prev = last - 1
        close = has & (last > 0)
        if close.any():
            pd = np.take_along_axis(slot_date, np.maximum(prev, 0)[None], 0)[0].astype(np.int64)
            pp = np.take_along_axis(slot_prob, np.maximum(prev, 0)[None], 0)[0]
            close &= slot_date[s].astype(np.int64) - pd < gap
            keep_new = close & (slot_prob[s] > pp)
            drop_new = close & ~keep_new
            # Drop the previous event where the new one wins.
            for q in np.unique(prev[keep_new]):
                m = keep_new & (prev == q)
                slot_prob[q][m] = 0.0
                slot_date[q][m] = 0
            slot_prob[s][drop_new] = 0.0
            slot_date[s][drop_new] = 0
            has = slot_date[s] > 0
        last = np.where(has, s + 1, last)


def report(
    quiet: np.ndarray,
    slot_prob: np.ndarray,
    slot_date: np.ndarray,
    mode: EventMode = "first",
    since: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the probability and date rasters show of the events.

    Args:
        quiet, slot_prob, slot_date: from :func:`merge`.
        mode: "first" or "all": each pixel's first event; "latest": its last event (a
            monitoring product's latest disturbance and its confidence).
        since: events first seen before date index ``since`` are left out (0 = none).

    Returns:
        ``prob`` (h, w) float32: the reported event's probability, else ``quiet`` (the highest
        probability below the threshold, or 0 where only left-out events were seen; NaN =
        nodata); ``interval`` (h, w) float32: its date index - 1 (0 without event); the kept
        ``slot_prob`` and ``slot_date`` (events before ``since`` removed).
    """
    keep = slot_date.astype(np.int64) >= max(int(since), 1)
    slot_prob = np.where(keep, slot_prob, np.float32(0.0)).astype(np.float32)
    slot_date = np.where(keep, slot_date, 0).astype(np.uint8)
    has = keep.any(axis=0)
    n = keep.shape[0]
    if mode == "latest":
        pick = n - 1 - np.argmax(keep[::-1], axis=0)
    else:
        pick = np.argmax(keep, axis=0)
    p = np.take_along_axis(slot_prob, pick[None], 0)[0]
    d = np.take_along_axis(slot_date, pick[None], 0)[0].astype(np.float32)
    prob = np.where(has, p, np.nan_to_num(quiet, nan=0.0)).astype(np.float32)
    prob[np.isnan(quiet) & ~has] = np.nan
    interval = np.where(has, d - 1.0, 0.0).astype(np.float32)
    return prob, interval, slot_prob, slot_date


def summary(slot_prob: np.ndarray, slot_date: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """(4, h, w) uint8 events raster: number of events, first and last event's date index
    (0 = none), last event's probability in steps of 1/254; 255 where ``nodata``."""
    has = slot_date > 0
    count = has.sum(axis=0)
    n = has.shape[0]
    first = np.take_along_axis(slot_date, np.argmax(has, axis=0)[None], 0)[0]
    last_k = n - 1 - np.argmax(has[::-1], axis=0)
    last = np.take_along_axis(slot_date, last_k[None], 0)[0]
    last_p = np.take_along_axis(slot_prob, last_k[None], 0)[0]
    out = np.stack(
        [
            np.minimum(count, 254),
            np.where(count > 0, first, 0),
            np.where(count > 0, last, 0),
            np.where(count > 0, np.rint(np.clip(last_p, 0, 1) * 254), 0),
        ]
    ).astype(np.uint8)
    out[:, nodata] = 255
    return out
