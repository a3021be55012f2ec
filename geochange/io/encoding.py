"""How the change probability is stored: steps of 1/254, written as a scaled uint8 COG.

A probability is kept to 1/254 (largest error 1/508 = 0.002): finer than any calibration of a
change detector, and the written raster is 20x smaller than float32 (benchmarks/OUTPUTS.md). The
in-memory probability (``DetectResult.prob``) is the same quantised value, so polygons, the date
raster and a re-read of the file agree bit for bit whether or not outputs are written.

On disk: ``uint8`` value k = round(p x 254), 255 = nodata, with GDAL scale 1/254 and offset 0 so
GDAL (``gdalinfo -stats``, ``rasterio``'s ``scales``) and QGIS show probabilities.
"""

from __future__ import annotations

import os

import dask.array as da
import numpy as np

__all__ = [
    "PROB_NODATA",
    "PROB_SCALE",
    "PROB_STEPS",
    "decode",
    "encode",
    "quantise",
    "quantised",
    "read_prob",
    "step_below",
]

#: Steps of the stored probability (0 … PROB_STEPS).
PROB_STEPS = 254
#: uint8 value of a nodata pixel in the written probability raster.
PROB_NODATA = 255
#: GDAL scale of the written raster: probability = value x PROB_SCALE.
PROB_SCALE = 1.0 / PROB_STEPS

_STEPS = np.float32(PROB_STEPS)


def _quantise_block(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float32)
    return np.round(np.clip(p, 0, 1) * _STEPS) / _STEPS  # NaN stays NaN


def _encode_block(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float32)
    out = np.full(p.shape, PROB_NODATA, np.uint8)
    valid = ~np.isnan(p)
    out[valid] = np.round(np.clip(p[valid], 0, 1) * _STEPS).astype(np.uint8)
    return out


def _decode_block(k: np.ndarray) -> np.ndarray:
    out = k.astype(np.float32) / _STEPS
    out[k == PROB_NODATA] = np.nan
    return out


def quantised(p: np.ndarray) -> np.ndarray:
    """(…) float32 probability as stored: in steps of 1/254, NaN kept (numpy, one block)."""
    return _quantise_block(p)


def step_below(threshold: float) -> np.float32:
    """The largest stored probability (a step of 1/254) below ``threshold``: what a
    probability that must not reach the threshold is stored as at most."""
    t = np.float32(threshold)
    k = int(np.ceil(t * _STEPS)) - 1
    while k > 0 and np.float32(k) / _STEPS >= t:
        k -= 1
    while np.float32(k + 1) / _STEPS < t:
        k += 1
    return np.float32(max(k, 0)) / _STEPS


def quantise(prob: da.Array) -> da.Array:
    """(y, x) float32 probability in steps of 1/254, NaN kept (lazy)."""
    return da.map_blocks(_quantise_block, prob, dtype=np.float32)


def encode(prob: da.Array) -> da.Array:
    """(y, x) uint8 as written: round(p x 254), 255 where NaN (lazy)."""
    return da.map_blocks(_encode_block, prob, dtype=np.uint8)


def decode(values: da.Array) -> da.Array:
    """The written uint8 back as float32 probability, NaN where 255; equals :func:`quantise`."""
    return da.map_blocks(_decode_block, values, dtype=np.float32)


def read_prob(path: str | os.PathLike, chunks: int) -> da.Array:
    """A written probability raster as lazy float32 (uint8 scaled files decoded)."""
    from geochange.io.rasters import read_raster_lazy

    raw = read_raster_lazy(path, chunks=chunks)
    return decode(raw) if raw.dtype == np.uint8 else raw
