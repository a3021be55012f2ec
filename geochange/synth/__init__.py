"""Synthetic and semi-synthetic multi-date scenes with known, dated changes.

:func:`make_scene` draws land (forest, grass, crop fields, bare soil, water, towns, roads) with
spectral signatures at any band count, a seasonal vegetation cycle and crop calendars, plants
dated changes (buildings, roads, clearings, shoreline shifts, small and moving objects) and adds
nuisances (illumination, haze, clouds with shadows, noise, misregistration). It is seeded and
deterministic. :func:`write_scene` writes it as dated GeoTIFFs plus the truth;
:func:`semi_synthetic` builds a series from a real labelled pair (:func:`load_pair`).
"""

from __future__ import annotations

from geochange.synth.io import load_pair, write_scene
from geochange.synth.nuisances import LEVELS
from geochange.synth.scene import DN_SCALE, Scene, make_scene
from geochange.synth.semi import semi_synthetic
from geochange.synth.spectra import default_wavelengths

__all__ = [
    "DN_SCALE",
    "LEVELS",
    "Scene",
    "default_wavelengths",
    "load_pair",
    "make_scene",
    "semi_synthetic",
    "write_scene",
]
