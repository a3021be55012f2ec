"""geochange: change detection for satellite image time series.

A stack of co-registered GeoTIFFs, one per date, goes in; dated change polygons in a GeoPackage,
a change-probability Cloud-Optimized GeoTIFF and a change-date raster come out.

    >>> import geochange
    >>> stack = geochange.open_stack("data_samples/stack")
    >>> result = geochange.detect(stack, "changes.gpkg")

The public names below are imported on first use, so ``import geochange`` stays light (no torch,
rasterio or dask until a function that needs them is called).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geochange._lazy import lazy_exports
from geochange._version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from geochange.errors import GeochangeError
    from geochange.grid import GridSpec
    from geochange.io.read import read_sample
    from geochange.io.stack import Stack, open_stack
    from geochange.pipeline import DetectResult, detect

#: public name -> module that defines it
_EXPORTS = {
    "DetectResult": "geochange.pipeline",
    "GeochangeError": "geochange.errors",
    "GridSpec": "geochange.grid",
    "Stack": "geochange.io.stack",
    "detect": "geochange.pipeline",
    "open_stack": "geochange.io.stack",
    "read_sample": "geochange.io.read",
}

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
