"""Measure a change map against reference data: pixels, objects, dates and areas.

- :mod:`~geochange.evaluate.scoring`: the metrics on arrays on one grid (numpy only).
- :mod:`~geochange.evaluate.align`: reading predictions and references (rasters or GeoPackages)
  and bringing them onto one grid through their georeferencing; :func:`evaluate`.
- :mod:`~geochange.evaluate.report`: the readable report and the PNG error map.

The public names below are imported on first use, so importing the metrics loads no rasterio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geochange._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from geochange.evaluate.align import align_inputs, evaluate
    from geochange.evaluate.report import error_map, format_report
    from geochange.evaluate.scoring import (
        Aligned,
        area_estimates,
        date_accuracy,
        evaluate_arrays,
        metrics,
        object_metrics,
        pixel_metrics,
    )

#: public name -> module that defines it
_EXPORTS = {
    "Aligned": "geochange.evaluate.scoring",
    "align_inputs": "geochange.evaluate.align",
    "area_estimates": "geochange.evaluate.scoring",
    "date_accuracy": "geochange.evaluate.scoring",
    "error_map": "geochange.evaluate.report",
    "evaluate": "geochange.evaluate.align",
    "evaluate_arrays": "geochange.evaluate.scoring",
    "format_report": "geochange.evaluate.report",
    "metrics": "geochange.evaluate.scoring",
    "object_metrics": "geochange.evaluate.scoring",
    "pixel_metrics": "geochange.evaluate.scoring",
}

__all__ = [
    "Aligned",
    "align_inputs",
    "area_estimates",
    "date_accuracy",
    "error_map",
    "evaluate",
    "evaluate_arrays",
    "format_report",
    "metrics",
    "object_metrics",
    "pixel_metrics",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
