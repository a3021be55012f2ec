"""The change-date palette shared by the quicklook, the date raster's colour table and the
GeoPackage's default style: early = dark blue … late = red (matplotlib's ``turbo``, its dark ends
left out).

Up to :data:`MAX_LISTED` change dates each date index j = 1 … T-1 gets its own colour, spread
evenly over the ramp, and legends list them. A longer series gets a *continuous* ramp instead:
each date is coloured by where it falls in time between the second and the last date
(:func:`date_ramp`), so irregular gaps show as gaps in colour, and legends show a colour bar
with a few date ticks (:func:`date_classes` gives the classes of the GeoPackage style).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

__all__ = [
    "MAX_LISTED",
    "date_classes",
    "date_colours",
    "date_colours_rgb255",
    "date_ramp",
    "ramp_colour",
    "uses_ramp",
]

#: Most change dates given one listed colour each; more get the continuous ramp.
MAX_LISTED = 16
#: Most classes of the default GeoPackage style for a long series.
MAX_CLASSES = 12

_LO, _SPAN = 0.08, 0.84  # part of turbo used


def date_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct RGBA colours (0–1) ordered in time."""
    from matplotlib import colormaps

    cmap = colormaps["turbo"]
    if n == 1:
        return [cmap(0.8)]
    return [cmap(_LO + _SPAN * i / (n - 1)) for i in range(n)]


def date_colours_rgb255(n: int) -> list[tuple[int, int, int]]:
    """``n`` colours as 0–255 RGB (colour tables, QGIS styles)."""
    return [_rgb255(c) for c in date_colours(n)]


def uses_ramp(dates: Sequence[_dt.date | str]) -> bool:
    """Whether a series of these dates gets the continuous ramp (more than
    :data:`MAX_LISTED` change dates)."""
    return len(dates) - 1 > MAX_LISTED


def _ordinal(d: _dt.date | str) -> int:
    return _dt.date.fromisoformat(str(d)[:10]).toordinal()


def ramp_colour(
    position: float,
) -> tuple[float, float, float, float]:
    """RGBA (0–1) of a position in [0, 1] along the ramp (0 = second date, 1 = last)."""
    from matplotlib import colormaps

    return colormaps["turbo"](_LO + _SPAN * min(1.0, max(0.0, float(position))))


def date_ramp(dates: Sequence[_dt.date | str]) -> list[tuple[float, float, float, float]]:
    """RGBA (0–1) of each change date j = 1 … T-1: listed colours up to :data:`MAX_LISTED`
    dates, else coloured by its place in time on the continuous ramp."""
    if not uses_ramp(dates):
        return date_colours(max(1, len(dates) - 1))
    days = [_ordinal(d) for d in dates[1:]]
    span = max(1, days[-1] - days[0])
    return [ramp_colour((d - days[0]) / span) for d in days]


def date_classes(
    dates: Sequence[_dt.date | str],
) -> list[tuple[_dt.date, _dt.date, tuple[int, int, int]]]:
    """Classes of the default style: ``(first, last, rgb255)``, in time order, covering the
    change dates j = 1 … T-1.

    One class per change date up to :data:`MAX_LISTED` dates; else at most
    :data:`MAX_CLASSES` classes of about equal time span, each holding whole dates, coloured
    by the ramp at its middle.
    """
    days = [_dt.date.fromisoformat(str(d)[:10]) for d in dates]
    if not uses_ramp(dates):
        colours = date_colours_rgb255(max(1, len(days) - 1))
        return [(days[j], days[j], colours[j - 1]) for j in range(1, len(days))]
    change = days[1:]
    lo, hi = change[0].toordinal(), change[-1].toordinal()
    span = max(1, hi - lo)
    n = min(MAX_CLASSES, len(change))
    groups: list[list[_dt.date]] = [[] for _ in range(n)]
    for d in change:
        groups[min(n - 1, int((d.toordinal() - lo) * n / (span + 1)))].append(d)
    out = []
    for g in groups:
        if not g:
            continue
        mid = (g[0].toordinal() + g[-1].toordinal()) / 2
        out.append((g[0], g[-1], _rgb255(ramp_colour((mid - lo) / span))))
    return out


def _rgb255(rgba: Sequence[float]) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in rgba[:3])  # type: ignore[return-value]
