"""Spectral signatures as curves over wavelength, sampled at any set of band centres.

Each material is a reflectance curve (0-1) given at anchor wavelengths from 400 to 2200 nm and
linearly interpolated in between, so scenes can have any band count. The shapes follow textbook
signatures: the green peak, red absorption and red-edge/NIR plateau of green vegetation; the
rising curve of bare soil; water absorbing everything beyond the green; flat urban materials.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MATERIALS", "default_wavelengths", "band_names", "signature", "signatures"]

# Anchor wavelengths (nm) of the curves below.
_WL = np.array(
    [400, 490, 560, 665, 705, 750, 842, 1000, 1200, 1450, 1650, 1940, 2200], dtype=np.float64
)

# fmt: off
MATERIALS: dict[str, tuple[float, ...]] = {
    #               400   490   560   665   705   750   842   1000  1200  1450  1650  1940  2200
    "green_veg":   (.030, .040, .090, .040, .120, .380, .450, .440, .400, .200, .280, .080, .140),
    "dry_veg":     (.060, .080, .120, .160, .190, .220, .260, .300, .330, .250, .360, .220, .300),
    "soil":        (.050, .080, .120, .170, .190, .210, .240, .280, .310, .290, .360, .300, .320),
    "dark_soil":   (.030, .045, .065, .090, .100, .110, .130, .150, .170, .130, .180, .100, .150),
    "water":       (.070, .065, .050, .025, .020, .012, .008, .004, .002, .001, .001, .001, .001),
    "turbid_water": (.080, .090, .110, .080, .060, .035, .020, .010, .005, .002, .002, .001, .001),
    "concrete":    (.150, .190, .220, .240, .250, .260, .270, .290, .300, .280, .310, .270, .280),
    "asphalt":     (.040, .050, .060, .070, .075, .080, .085, .090, .100, .090, .110, .100, .110),
    "red_tile":    (.060, .070, .090, .250, .300, .330, .350, .370, .380, .360, .400, .350, .370),
    "bright_roof": (.350, .380, .400, .410, .410, .410, .420, .420, .420, .400, .400, .350, .350),
    "dark_roof":   (.070, .080, .090, .095, .100, .105, .110, .120, .130, .120, .140, .120, .130),
    "blue_roof":   (.150, .220, .110, .060, .060, .070, .080, .090, .100, .100, .110, .100, .100),
    "cloud":       (.600, .620, .620, .610, .600, .600, .590, .560, .520, .300, .400, .150, .250),
}
# fmt: on

# Sentinel-2-like band centres (nm) for common band counts; 4 bands = B2, B3, B4, B8.
_PRESETS: dict[int, tuple[float, ...]] = {
    1: (665.0,),
    2: (665.0, 842.0),
    3: (490.0, 560.0, 665.0),
    4: (490.0, 560.0, 665.0, 842.0),
    6: (490.0, 560.0, 665.0, 842.0, 1610.0, 2190.0),
    10: (490.0, 560.0, 665.0, 705.0, 740.0, 783.0, 842.0, 865.0, 1610.0, 2190.0),
    13: (
        443.0,
        490.0,
        560.0,
        665.0,
        705.0,
        740.0,
        783.0,
        842.0,
        865.0,
        945.0,
        1375.0,
        1610.0,
        2190.0,
    ),
}
_S2_NAMES = {
    443.0: "B01", 490.0: "B02", 560.0: "B03", 665.0: "B04", 705.0: "B05", 740.0: "B06",
    783.0: "B07", 842.0: "B08", 865.0: "B8A", 945.0: "B09", 1375.0: "B10", 1610.0: "B11",
    2190.0: "B12",
}  # fmt: skip


def default_wavelengths(bands: int) -> tuple[float, ...]:
    """Band centre wavelengths (nm) for ``bands`` bands, spread over 440-2200 nm.

    Common counts use Sentinel-2 band centres (4 bands: B2, B3, B4, B8 = blue, green, red, NIR);
    other counts are evenly spaced from 440 to 2200 nm.
    """
    if bands in _PRESETS:
        return _PRESETS[bands]
    return tuple(float(round(v, 1)) for v in np.linspace(440.0, 2200.0, bands))


def band_names(wavelengths: tuple[float, ...]) -> tuple[str, ...]:
    """Band descriptions such as ``"B02 490 nm"`` (Sentinel-2 name where one matches)."""
    return tuple(
        f"{_S2_NAMES[w]} {w:g} nm" if w in _S2_NAMES else f"band {i + 1} {w:g} nm"
        for i, w in enumerate(wavelengths)
    )


def signature(material: str, wavelengths: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """Reflectance (0-1) of ``material`` at each wavelength (nm): (c,) float32."""
    return np.interp(np.asarray(wavelengths, dtype=np.float64), _WL, MATERIALS[material]).astype(
        np.float32
    )


def signatures(wavelengths: tuple[float, ...] | np.ndarray) -> dict[str, np.ndarray]:
    """All material signatures at ``wavelengths``: name -> (c,) float32."""
    return {name: signature(name, wavelengths) for name in MATERIALS}
