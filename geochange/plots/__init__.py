"""Pictures of a stack and its changes: the detect quicklook and a time series at one place.

- :mod:`~geochange.plots.overview`: :func:`quicklook`, the picture ``detect`` writes.
- :mod:`~geochange.plots.timeseries`: :func:`series` and :func:`series_values` at one place.
- :mod:`~geochange.plots.maps`: what both share (stretch, decimated reads, map furniture).

Glossary (see docs/DESIGN.md): a change at date index j (1 … T-1) is first seen on ``dates[j]``,
after ``dates[j-1]``; the change-date raster holds j, 0 for no change and 255 for nodata.
"""

from geochange.plots.overview import quicklook
from geochange.plots.timeseries import SeriesValues, series, series_values

__all__ = ["SeriesValues", "quicklook", "series", "series_values"]
