"""Land cover of a synthetic scene: classes, background spectra, texture and phenology.

Each pixel is a linear mix of a static *background* spectrum (soil, litter, water, roof...) and a
green-vegetation spectrum whose fraction ``g`` follows the season (natural vegetation) or a
field-specific sowing/harvest calendar (crops). Neither is change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from geochange.synth._noise import fbm, smooth_noise
from geochange.synth.spectra import signature

__all__ = ["CLASSES", "Land", "make_land", "draw_polyline"]

# Land-cover class codes of Land.cls.
CLASSES = {"water": 0, "forest": 1, "grass": 2, "crop": 3, "bare": 4, "urban": 5, "road": 6}
WATER, FOREST, GRASS, CROP, BARE, URBAN, ROAD = range(7)

# Background materials: the non-green part of each pixel. Mixes are pre-defined entries.
_BACKGROUNDS: tuple[tuple[str, dict[str, float]], ...] = (
    ("water", {"water": 1.0}),
    ("turbid_water", {"turbid_water": 1.0}),
    ("forest_floor", {"dark_soil": 0.55, "dry_veg": 0.45}),
    ("litter", {"dry_veg": 0.7, "soil": 0.3}),
    ("soil", {"soil": 1.0}),
    ("dark_soil", {"dark_soil": 1.0}),
    ("concrete", {"concrete": 1.0}),
    ("asphalt", {"asphalt": 1.0}),
    ("red_tile", {"red_tile": 1.0}),
    ("bright_roof", {"bright_roof": 1.0}),
    ("dark_roof", {"dark_roof": 1.0}),
    ("blue_roof", {"blue_roof": 1.0}),
)
BG = {name: i for i, (name, _) in enumerate(_BACKGROUNDS)}
_ROOFS = ("concrete", "red_tile", "bright_roof", "dark_roof", "blue_roof")


def background_table(wavelengths: tuple[float, ...]) -> np.ndarray:
    """(c, k) float32 reflectance of the k background materials at ``wavelengths``."""
    cols = []
    for _, mix in _BACKGROUNDS:
        cols.append(sum(w * signature(m, wavelengths) for m, w in mix.items()))
    return np.stack(cols, axis=1).astype(np.float32)


def season(doy: np.ndarray | float) -> np.ndarray:
    """Seasonal greenness in [0, 1], peaking mid-July (day of year 200)."""
    return 0.5 * (1.0 + np.cos(2.0 * np.pi * (np.asarray(doy, dtype=np.float64) - 200.0) / 365.0))


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Land:
    """Static land model of a scene (all arrays on the reference grid).

    Attributes:
        cls: (h, w) uint8 land-cover class (see ``CLASSES``).
        bg: (h, w) int16 background material index into ``background_table``.
        bright: (h, w) float32 brightness factor of the background (object variability x texture).
        vigour: (h, w) float32 factor on the green-vegetation spectrum.
        g_base, g_amp: (h, w) float32 natural green fraction = g_base + g_amp * season(doy).
        field: (h, w) int32 crop field id, -1 outside fields.
        field_params: (n_fields, 4) float64: kind (0 summer, 1 winter, 2 meadow), emerge doy,
            harvest doy, peak green fraction.
    """

    cls: np.ndarray
    bg: np.ndarray
    bright: np.ndarray
    vigour: np.ndarray
    g_base: np.ndarray
    g_amp: np.ndarray
    field: np.ndarray
    field_params: np.ndarray

    def green(self, date: dt.date) -> np.ndarray:
        """(h, w) float32 green-vegetation fraction on ``date`` (phenology, crop calendar)."""
        doy = float(date.timetuple().tm_yday)
        g = self.g_base + self.g_amp * np.float32(season(doy))
        kind, emerge, harvest, gmax = self.field_params.T
        summer = gmax * _sig((doy - emerge) / 8.0) * (1.0 - _sig((doy - harvest) / 4.0))
        winter = gmax * (
            (0.25 + 0.75 * _sig((doy - emerge) / 10.0)) * (1.0 - _sig((doy - harvest) / 4.0))
            + 0.25 * _sig((doy - 300.0) / 8.0)
        )
        meadow = gmax * (0.35 + 0.65 * season(doy))
        per_field = np.where(kind == 0, summer, np.where(kind == 1, winter, meadow))
        per_field = np.append(per_field, 0.0).astype(np.float32)  # index -1 -> unused
        infield = self.field >= 0
        return np.where(infield, per_field[self.field], g).astype(np.float32)

    def background(self, table: np.ndarray) -> np.ndarray:
        """(c, h, w) float32 background reflectance given ``table`` (c, k)."""
        return table[:, self.bg] * self.bright[None]


def _cuts(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    """Increasing cut positions 0 < c < n with spacings drawn from [lo, hi]."""
    steps = rng.integers(lo, hi + 1, size=n // lo + 2)
    cuts = np.cumsum(steps) - int(rng.integers(0, hi))
    return cuts[(cuts > 0) & (cuts < n)]


def _parcels(
    rng: np.random.Generator, shape: tuple[int, int], row: tuple[int, int], col: tuple[int, int]
) -> np.ndarray:
    """(h, w) int32 ids of rectangular parcels: row bands, each with its own column cuts."""
    h, w = shape
    rcuts = _cuts(rng, h, *row)
    rband = np.searchsorted(rcuts, np.arange(h), side="right")
    ids = np.empty(shape, dtype=np.int32)
    offset = 0
    x = np.arange(w)
    for b in range(len(rcuts) + 1):
        ccuts = _cuts(rng, w, *col)
        rows = rband == b
        ids[rows] = offset + np.searchsorted(ccuts, x, side="right")[None]
        offset += len(ccuts) + 1
    return ids


def _edges(ids: np.ndarray) -> np.ndarray:
    """(h, w) bool: pixels whose right or lower neighbour has another id."""
    e = np.zeros(ids.shape, dtype=bool)
    e[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    e[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return e


def draw_polyline(
    rng: np.random.Generator,
    shape: tuple[int, int],
    start: tuple[float, float],
    heading: float,
    length: float,
    curvature: float = 0.02,
) -> np.ndarray:
    """(h, w) bool 4-connected 1-pixel line: a gently curving random walk from ``start``.

    Args:
        start: (row, col) in pixels; heading: radians; length: pixels; curvature: sd of the
            heading change per half-pixel step (radians).
    """
    n = max(2, int(length * 2))
    ang = heading + np.cumsum(rng.normal(0.0, curvature, n))
    ys = start[0] + np.cumsum(0.5 * np.sin(ang))
    xs = start[1] + np.cumsum(0.5 * np.cos(ang))
    yi, xi = np.floor(ys).astype(int), np.floor(xs).astype(int)
    # Make the line 4-connected: where both coordinates change, also fill the corner pixel.
    yi = np.concatenate([yi, yi[1:]])
    xi = np.concatenate([xi, xi[:-1]])
    ok = (yi >= 0) & (yi < shape[0]) & (xi >= 0) & (xi < shape[1])
    mask = np.zeros(shape, dtype=bool)
    mask[yi[ok], xi[ok]] = True
    return mask


def make_land(rng: np.random.Generator, shape: tuple[int, int]) -> Land:
    """Draw a land model: water, forest, grass, crop fields, bare soil, urban blocks and roads."""
    h, w = shape
    big = max(h, w)
    s = np.clip(big / 512.0, 0.35, 4.0)  # keep feature sizes sensible for small scenes
    elev = fbm(rng, shape, tuple(float(v) for v in (160 * s, 80 * s, 40 * s, 20 * s, 10)))
    moist = fbm(rng, shape, (120 * s, 60 * s, 30 * s, 12))
    urban_z = fbm(rng, shape, (140 * s, 70 * s, 35 * s), persistence=0.5)
    agri_z = fbm(rng, shape, (200 * s, 100 * s), persistence=0.4)

    cls = np.full(shape, GRASS, dtype=np.uint8)
    water = elev < np.quantile(elev, rng.uniform(0.03, 0.10))
    urban = (urban_z > np.quantile(urban_z, 1 - rng.uniform(0.06, 0.18))) & ~water
    agri = (agri_z > np.quantile(agri_z, 1 - rng.uniform(0.3, 0.5))) & ~water & ~urban
    natural = ~water & ~urban & ~agri
    forest = natural & (moist > np.quantile(moist, 0.45))
    bare = natural & ~forest & (moist < np.quantile(moist, 0.08))
    cls[forest] = FOREST
    cls[bare] = BARE
    cls[agri] = CROP
    cls[urban] = URBAN
    cls[water] = WATER

    bg = np.full(shape, BG["litter"], dtype=np.int16)
    bright = np.ones(shape, dtype=np.float32)
    vigour = np.ones(shape, dtype=np.float32)
    g_base = np.zeros(shape, dtype=np.float32)
    g_amp = np.zeros(shape, dtype=np.float32)
    field = np.full(shape, -1, dtype=np.int32)

    # Natural vegetation: smooth spatial variation of density and deciduousness.
    dens = 0.5 + 0.5 * np.tanh(smooth_noise(rng, shape, 24 * s))
    bg[forest] = BG["forest_floor"]
    bright[forest] = 0.7
    g_base[forest] = (0.55 + 0.2 * dens)[forest]
    g_amp[forest] = (0.08 + 0.2 * (1 - dens))[forest]
    vigour[forest] = 0.75
    g_base[cls == GRASS] = (0.12 + 0.15 * dens)[cls == GRASS]
    g_amp[cls == GRASS] = (0.3 + 0.2 * dens)[cls == GRASS]
    bg[bare] = np.where(moist[bare] < np.quantile(moist, 0.03), BG["dark_soil"], BG["soil"])
    g_base[bare] = 0.02
    g_amp[bare] = 0.04

    # Water: clear to turbid.
    turb = smooth_noise(rng, shape, 40 * s) > 0.8
    bg[water] = np.where(turb[water], BG["turbid_water"], BG["water"])

    # Crop fields: rectangular parcels with their own calendar and soil.
    fields = _parcels(rng, shape, (12, 40), (15, 60))
    nf = int(fields.max()) + 1
    kind = rng.choice(3, size=nf, p=[0.45, 0.35, 0.2]).astype(np.float64)
    emerge = np.where(kind == 1, rng.uniform(70, 110, nf), rng.uniform(100, 150, nf))
    harvest = np.where(kind == 1, rng.uniform(175, 215, nf), rng.uniform(235, 290, nf))
    gmax = np.where(kind == 2, rng.uniform(0.4, 0.6, nf), rng.uniform(0.7, 0.95, nf))
    params = np.stack([kind, emerge, harvest, gmax], axis=1)
    fsoil = np.where(rng.random(nf) < 0.35, BG["dark_soil"], BG["soil"]).astype(np.int16)
    fbright = rng.uniform(0.8, 1.2, nf).astype(np.float32)
    margins = _edges(fields)
    infield = agri & ~margins
    field[infield] = fields[infield]
    bg[infield] = fsoil[fields[infield]]
    bright[infield] = fbright[fields[infield]]
    vigour[infield] = rng.uniform(0.9, 1.1, nf).astype(np.float32)[fields[infield]]
    g_base[agri & margins] = 0.3
    g_amp[agri & margins] = 0.3

    # Urban: street grid, lots with roofs, paved areas and gardens.
    blocks = _parcels(rng, shape, (9, 18), (9, 18))
    streets = _edges(blocks) & urban
    lots = _parcels(rng, shape, (3, 7), (3, 7))
    nl = int(lots.max()) + 1
    roof_ids = np.array([BG[r] for r in (*_ROOFS, "concrete", "asphalt")], dtype=np.int16)
    lot_mat = roof_ids[rng.integers(0, len(roof_ids), nl)]
    lot_garden = rng.random(nl) < 0.2
    lot_bright = rng.uniform(0.8, 1.2, nl).astype(np.float32)
    u = urban & ~streets
    bg[u] = lot_mat[lots[u]]
    bright[u] = lot_bright[lots[u]]
    garden = u & lot_garden[lots]
    bg[garden] = BG["litter"]
    g_base[garden] = 0.45
    g_amp[garden] = 0.25
    bg[streets] = BG["asphalt"]
    cls[streets] = ROAD

    # A few long roads crossing the scene.
    roads = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(2, 5))):
        side = rng.integers(0, 4)
        pos = rng.uniform(0.1, 0.9)
        start, head = {
            0: ((0.0, pos * w), np.pi / 2),
            1: ((h - 1.0, pos * w), -np.pi / 2),
            2: ((pos * h, 0.0), 0.0),
            3: ((pos * h, w - 1.0), np.pi),
        }[int(side)]
        line = draw_polyline(rng, shape, start, head + rng.uniform(-0.5, 0.5), 2 * big, 0.01)
        if rng.random() < 0.5:
            line = ndimage.binary_dilation(line)
        roads |= line
    roads &= ~water
    bg[roads] = np.where(rng.random() < 0.7, BG["asphalt"], BG["concrete"])
    cls[roads] = ROAD
    for a in (g_base, g_amp):
        a[roads | streets | (u & ~garden)] = 0.0
    field[roads] = -1

    # Texture: fine multiplicative noise, stronger in forest and towns. Kept small: it is what
    # makes GeoTIFFs incompressible (data_samples/ must stay small), and objects already vary.
    amp = np.choose(cls, [0.01, 0.035, 0.02, 0.012, 0.02, 0.025, 0.012]).astype(np.float32)
    tex = 0.6 * smooth_noise(rng, shape, 3.0) + 0.4 * smooth_noise(rng, shape, 8.0)
    bright *= 1.0 + amp * tex
    vigour *= 1.0 + 0.5 * amp * tex
    return Land(cls, bg, bright, vigour, g_base, g_amp, field, params)
