"""GridSpec: the one truth of georeferencing.

A frozen value object holding the CRS, the affine transform, the raster shape and the nodata value
of a stack. Every output is written on the GridSpec of its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

__all__ = ["GridSpec"]


@dataclass(frozen=True)
class GridSpec:
    """Georeferencing of a raster grid.

    Attributes:
        crs: coordinate reference system of the grid.
        transform: affine pixel-to-CRS transform of the upper-left corner of pixel (0, 0).
        height: number of rows (y).
        width: number of columns (x).
        nodata: nodata value of the source files, or None.
    """

    crs: CRS
    transform: Affine
    height: int
    width: int
    nodata: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.height, self.width)

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        t = self.transform
        xs = [t.c, t.c + t.a * self.width]
        ys = [t.f, t.f + t.e * self.height]
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    def window_transform(self, window: Window) -> Affine:
        """Transform of a window of this grid."""
        return window_transform(window, self.transform)

    def same_grid(self, other: GridSpec, rtol: float = 1e-9) -> bool:
        """True when CRS, shape and transform agree (transform to ``rtol`` of a pixel)."""
        if self.crs != other.crs or self.shape != other.shape:
            return False
        a = np.array(self.transform[:6], dtype=float)
        b = np.array(other.transform[:6], dtype=float)
        # Compare offsets in pixels so the tolerance does not depend on CRS units.
        tol = rtol * max(self.res) + 1e-12
        return bool(np.all(np.abs(a - b) <= max(tol, 1e-9 * np.abs(a).max())))

    def describe(self) -> str:
        """One-line human description, e.g. for `geochange info`."""
        crs = self.crs.to_string() if self.crs else "no CRS"
        return (
            f"{self.width}x{self.height} px, {crs}, pixel {self.res[0]:g} x {self.res[1]:g}, "
            f"bounds {tuple(round(b, 6) for b in self.bounds)}"
        )

    def profile(self, **kwargs) -> dict:
        """A rasterio profile on this grid (GTiff); keyword arguments override entries."""
        profile = {
            "driver": "GTiff",
            "crs": self.crs,
            "transform": self.transform,
            "height": self.height,
            "width": self.width,
        }
        profile.update(kwargs)
        return profile
