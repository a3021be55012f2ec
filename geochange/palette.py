"""The change-date palette shared by the quicklook, the date raster's colour table and the
GeoPackage's default style: one colour per date index j = 1 … T-1, early = dark blue … late =
red (matplotlib's ``turbo``, its dark ends left out)."""

from __future__ import annotations

__all__ = ["date_colours", "date_colours_rgb255"]


def date_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct RGBA colours (0–1) ordered in time."""
    from matplotlib import colormaps

    cmap = colormaps["turbo"]
    if n == 1:
        return [cmap(0.8)]
    return [cmap(0.08 + 0.84 * i / (n - 1)) for i in range(n)]


def date_colours_rgb255(n: int) -> list[tuple[int, int, int]]:
    """``n`` colours as 0–255 RGB (colour tables, QGIS styles)."""
    return [tuple(int(round(255 * c)) for c in rgba[:3]) for rgba in date_colours(n)]  # type: ignore[misc]
