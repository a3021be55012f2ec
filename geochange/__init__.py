"""geochange: change detection for satellite image time series.

A stack of co-registered GeoTIFFs, one per date, goes in; dated change polygons in a GeoPackage,
a change-probability Cloud-Optimized GeoTIFF and a change-date raster come out.

    >>> import geochange
    >>> stack = geochange.open_stack("data_samples/stack")
    >>> result = geochange.detect(stack, "changes.gpkg")
"""

from __future__ import annotations

__version__ = "0.1.0"

from geochange.errors import GeochangeError  # noqa: E402
from geochange.grid import GridSpec  # noqa: E402
from geochange.pipeline import DetectResult, detect  # noqa: E402
from geochange.stack import Stack, open_stack, read_sample  # noqa: E402

__all__ = [
    "DetectResult",
    "GeochangeError",
    "GridSpec",
    "Stack",
    "__version__",
    "detect",
    "open_stack",
    "read_sample",
]
