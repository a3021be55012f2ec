"""Band centre wavelengths (nm): what the model is told about each band.

The default model shares its stem across bands, so without help it cannot tell a NIR band from a
red one — and a field greening up (NIR up, red down) from a clearing (NIR down, red up) differs
mostly in which band moves which way. When a stack says where its bands sit in the spectrum, the
model is told; otherwise each band is "unknown" (NaN) and the model works as before.

Where wavelengths come from, first match wins (see :func:`band_wavelengths`):

1. the file tag ``WAVELENGTHS_NM`` (``"490,560,665,842"``; written by ``geochange synth``);
2. per band, GDAL's ``CENTRAL_WAVELENGTH_UM`` item (band metadata, ``IMAGERY`` domain);
3. per band, its description: a number with a unit (``"B04 665 nm"``, ``"0.842 um"``), a
   Sentinel-2 band name (``B02``, ``B8A``), a Landsat 8/9 Collection 2 name (``SR_B5``), a STAC
   common name or asset key (``red``, ``nir08``, ``rededge1``, ``swir16``: Earth Search and
   Planetary Computer) or a plain colour name (``swir1``);
4. ``--wavelengths`` / ``open_stack(wavelengths=...)`` overrides all of them.

xarray cubes (:mod:`geochange.io.cube`) and STAC items (:mod:`geochange.io.stac`) give the same
information as ``eo:bands`` ``center_wavelength`` (µm) or band names, read with the same table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from geochange.errors import InputError

__all__ = [
    "GDAL_WAVELENGTH_ITEM",
    "WAVELENGTH_TAG",
    "band_wavelengths",
    "parse_wavelengths",
    "wavelength_array",
    "wavelength_from_name",
    "wavelength_from_um",
]

#: GeoTIFF tag listing the band centres in nm, comma-separated ("" or "nan" = unknown).
WAVELENGTH_TAG = "WAVELENGTHS_NM"

#: Plausible band centres (nm): from the near UV to the thermal infrared.
_RANGE_NM = (300.0, 15000.0)

# Centre wavelengths (nm) by band name. Sentinel-2 names only zero-padded (B04, not B4: Landsat
# 5/7 call NIR "B4"); Landsat 8/9 Collection 2 surface reflectance names; the STAC eo extension's
# common names and the asset keys of Earth Search's Sentinel-2 collections (rededge1..3 = B05..B07,
# nir = B08, nir08 = B8A, nir09 = B09, swir16/swir22 = B11/B12; its `cirrus` is B10); plain names.
_NAMED_NM: dict[str, float] = {
    "b01": 443, "b02": 490, "b03": 560, "b04": 665, "b05": 705, "b06": 740, "b07": 783,
    "b08": 842, "b8a": 865, "b09": 945, "b10": 1375, "b11": 1610, "b12": 2190,
    "sr_b1": 443, "sr_b2": 482, "sr_b3": 561, "sr_b4": 655, "sr_b5": 865, "sr_b6": 1609,
    "sr_b7": 2201,
    "coastal": 443, "blue": 490, "green": 560, "red": 665, "rededge": 705, "red_edge": 705,
    "rededge1": 705, "rededge2": 740, "rededge3": 783, "nir": 842, "nir08": 865, "nir09": 945,
    "cirrus": 1375, "swir1": 1610, "swir16": 1610, "swir2": 2190, "swir22": 2190,
    "lwir": 10900, "lwir11": 10900, "lwir12": 12000,
}  # fmt: skip

#: GDAL's band metadata item (``IMAGERY`` domain) for a band centre in micrometres.
GDAL_WAVELENGTH_ITEM = "CENTRAL_WAVELENGTH_UM"
_NUMBER_UNIT = re.compile(r"(\d+(?:\.\d+)?)\s*(nm|um|µm|μm)\b", re.IGNORECASE)


def _check(value: float, where: str) -> float:
    lo, hi = _RANGE_NM
    if not lo <= value <= hi:
        raise InputError(
            f"{where}: found {value:g} nm, expected a band centre between {lo:g} and {hi:g} nm "
            "(wavelengths are in nanometres, e.g. 665 for red)"
        )
    return float(value)


def wavelength_from_name(name: str | None) -> float | None:
    """Band centre (nm) read from a band description, or None when it does not say."""
    if not name:
        return None
    match = _NUMBER_UNIT.search(name)
    if match:
        value = float(match.group(1)) * (1.0 if match.group(2).lower() == "nm" else 1000.0)
        lo, hi = _RANGE_NM
        return value if lo <= value <= hi else None
    key = name.strip().lower()
    words = key.replace("-", " ").split()
    for candidate in (key, words[0] if words else ""):
        if candidate in _NAMED_NM:
            return float(_NAMED_NM[candidate])
    return None


def parse_wavelengths(
    value: str | Sequence[float | None], count: int, where: str = "--wavelengths"
) -> tuple[float | None, ...]:
    """``"490,560,665,842"`` or a sequence → one centre (nm) or None per band.

    Empty items, ``nan`` and ``?`` mean unknown. Raises InputError naming ``where`` when the
    count differs from ``count`` or a value is not a plausible wavelength in nm.
    """
    items: list[str | float | None] = (
        [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    )
    if len(items) != count:
        raise InputError(
            f"{where}: found {len(items)} wavelength(s), expected {count} (one per band, "
            "comma-separated, in nm; leave an item empty for an unknown band)"
        )
    out: list[float | None] = []
    for item in items:
        if item is None or (isinstance(item, str) and item.lower() in ("", "nan", "?")):
            out.append(None)
            continue
        try:
            number = float(item)
        except ValueError:
            raise InputError(
                f"{where}: found {item!r}, expected a number in nm (e.g. 665) or an empty item"
            ) from None
        out.append(None if math.isnan(number) else _check(number, where))
    return tuple(out)


def wavelength_array(wavelengths: Sequence[float | None] | None, count: int) -> np.ndarray:
    """``(count,)`` float32 band centres in nm, NaN where unknown (None, or no wavelengths at all):
    the form the model takes (``CNNLSTM.forward(..., wavelengths=)``)."""
    out = np.full(count, np.nan, np.float32)
    if wavelengths is not None and len(wavelengths):
        out[:] = [np.nan if v is None else float(v) for v in wavelengths]
    return out


def wavelength_from_um(value: object) -> float | None:
    """A band centre given in micrometres (GDAL ``CENTRAL_WAVELENGTH_UM``, STAC
    ``center_wavelength``) in nm, or None when missing or implausible."""
    try:
        nm = float(value) * 1000.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    lo, hi = _RANGE_NM
    return nm if lo <= nm <= hi else None


def band_wavelengths(
    tags: Mapping[str, str],
    descriptions: Sequence[str | None],
    path: str = "",
    imagery: Sequence[Mapping[str, str]] | None = None,
) -> tuple[float | None, ...]:
    """Band centres of a file from its ``WAVELENGTHS_NM`` tag, else per band from GDAL's
    ``CENTRAL_WAVELENGTH_UM`` item, else from the band's description.

    Args:
        tags: the file's dataset tags.
        descriptions: one description per band (None where unnamed).
        path: the file, for error messages.
        imagery: per band its ``IMAGERY`` metadata domain (``src.tags(i, ns="IMAGERY")``).
    """
    count = len(descriptions)
    tag = tags.get(WAVELENGTH_TAG)
    if tag:
        return parse_wavelengths(tag, count, where=f"{path}: tag {WAVELENGTH_TAG}")
    items = list(imagery) if imagery is not None else [{}] * count
    return tuple(
        wavelength_from_um(item.get(GDAL_WAVELENGTH_ITEM)) or wavelength_from_name(d)
        for item, d in zip(items, descriptions)
    )
