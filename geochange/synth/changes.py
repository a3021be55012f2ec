"""Planting real changes: new buildings and roads, clearings, shoreline shifts, small objects.

Every change has a date index j (1 ... T-1): the first date it is visible; it stays changed
afterwards. A change replaces the pixel's spectrum by an *alternative* spectrum with no green
vegetation (``alt_spec``, ``alt_g``); a moved object shows its alternative spectrum *before* its
date at its old place (``pre``) and after it at its new place. Objects never touch each other,
so each is one label polygon.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from geochange.synth.land import CROP, FOREST, GRASS, ROAD, URBAN, WATER, Land, draw_polyline
from geochange.synth.spectra import signature

__all__ = ["Planted", "Change", "plant_changes", "MICRO_MAX_PX"]

MICRO_MAX_PX = 9
_ROOF_MATERIALS = ("concrete", "red_tile", "bright_roof", "dark_roof", "blue_roof")
_MICRO_MATERIALS = (*_ROOF_MATERIALS, "asphalt", "soil", "water")
# Smallest spectral difference (reflectance, largest over bands) a change keeps on every date
# from its date on; low-contrast micro objects sit just above it.
MIN_CONTRAST = 0.03


@dataclass
class Change:
    """One planted change: pixels (bool mask on the reference grid, given by its bbox)."""

    kind: str
    date_index: int
    rows: slice
    cols: slice
    mask: np.ndarray  # (h', w') bool inside the bbox, all pixels labelled changed

    @property
    def area_px(self) -> int:
        return int(self.mask.sum())


@dataclass
class Planted:
    """All changes of a scene.

    Attributes:
        post: (h, w) uint8 j where the alternative spectrum shows from date j on (0: never).
        pre: (h, w) uint8 j where the alternative spectrum shows only before date j (0: never).
        alt_spec: (c, h, w) float32 alternative background reflectance; alt_g: (h, w) float32
            alternative green fraction.
        changes: the planted objects.
    """

    post: np.ndarray
    pre: np.ndarray
    alt_spec: np.ndarray
    alt_g: np.ndarray
    changes: list[Change] = field(default_factory=list)

    def date_index(self) -> np.ndarray:
        """(h, w) uint8 change date index (0 = no change)."""
        return np.maximum(self.post, self.pre)


class _Planter:
    def __init__(
        self,
        rng: np.random.Generator,
        land: Land,
        bg: np.ndarray,
        veg: np.ndarray,
        green: np.ndarray,
        wavelengths: tuple[float, ...],
        cloud_mask: np.ndarray,
    ) -> None:
        self.rng, self.land, self.bg, self.veg, self.green = rng, land, bg, veg, green
        self.wl = wavelengths
        self.cloud_mask = cloud_mask
        self.T, self.h, self.w = green.shape
        c = bg.shape[0]
        self.used = np.zeros((self.h, self.w), dtype=bool)
        self.out = Planted(
            np.zeros((self.h, self.w), np.uint8),
            np.zeros((self.h, self.w), np.uint8),
            np.zeros((c, self.h, self.w), np.float32),
            np.zeros((self.h, self.w), np.float32),
        )
        self.mats = {
            m: signature(m, wavelengths)
            for m in (*_MICRO_MATERIALS, "dark_soil", "turbid_water", "dry_veg")
        }

    # -- helpers ---------------------------------------------------------------------------
    def _before(self, rows: slice, cols: slice, mask: np.ndarray) -> np.ndarray:
        """(t, c) mean reflectance of the undisturbed land under ``mask`` on every date."""
        b = self.bg[:, rows, cols][:, mask]  # (c, n)
        vig = self.land.vigour[rows, cols][mask]
        g = self.green[:, rows, cols][:, mask]  # (t, n)
        v = self.veg[:, None] * vig[None]  # (c, n)
        return (
            np.einsum("tn,cn->tc", 1.0 - g, b) / mask.sum()
            + np.einsum("tn,cn->tc", g, v) / mask.sum()
        )

    def _pick_date(self, rows: slice, cols: slice, mask: np.ndarray) -> int:
        cloudy = self.cloud_mask[:, rows, cols][:, mask].mean(axis=1)
        ok = [j for j in range(1, self.T) if cloudy[j] < 0.2]
        return int(self.rng.choice(ok if ok else list(range(1, self.T))))

    def _free(self, rows: slice, cols: slice, mask: np.ndarray) -> bool:
        r0, r1 = max(rows.start - 2, 0), min(rows.stop + 2, self.h)
        c0, c1 = max(cols.start - 2, 0), min(cols.stop + 2, self.w)
        pad = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        pad[rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0] = mask
        grown = ndimage.binary_dilation(pad, np.ones((3, 3), bool), iterations=2)
        return not (grown & self.used[r0:r1, c0:c1]).any()

    def _commit(
        self,
        kind: str,
        j: int,
        rows: slice,
        cols: slice,
        mask: np.ndarray,
        spec: np.ndarray,
        g: float = 0.0,
        pre: bool = False,
    ) -> None:
        """Record a change whose alternative spectrum ``spec`` is (c,) or (c, n)."""
        o = self.out
        sub = o.alt_spec[:, rows, cols]
        sub[:, mask] = spec if spec.ndim == 2 else spec[:, None]
        o.alt_g[rows, cols][mask] = g
        target = o.pre if pre else o.post
        target[rows, cols][mask] = j
        self.used[rows, cols] |= mask

    def _contrast_ok(self, before: np.ndarray, after: np.ndarray, j: int, lo: float) -> bool:
        """True when ``after`` (c,) differs from ``before`` (t, c) by >= lo on every date >= j."""
        return bool(np.abs(after[None] - before[j:]).max(axis=1).min() >= lo)

    def _texture(self, rows: slice, cols: slice, mask: np.ndarray, amp: float) -> np.ndarray:
        n = int(mask.sum())
        return (1.0 + amp * self.rng.standard_normal(n)).astype(np.float32)

    def _box(self, r: int, c: int, mask: np.ndarray) -> tuple[slice, slice, np.ndarray] | None:
        """Place ``mask`` with its upper-left at (r, c), clipped to the scene."""
        mh, mw = mask.shape
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + mh, self.h), min(c + mw, self.w)
        if r1 <= r0 or c1 <= c0:
            return None
        m = mask[r0 - r : r1 - r, c0 - c : c1 - c]
        if not m.any():
            return None
        return slice(r0, r1), slice(c0, c1), m

    def _random_pixel(self, allowed: np.ndarray) -> tuple[int, int] | None:
        idx = np.flatnonzero(allowed.ravel())
        if idx.size == 0:
            return None
        k = int(idx[self.rng.integers(0, idx.size)])
        return k // self.w, k % self.w

    # -- change kinds ------------------------------------------------------------------------
    def building(self, scale: float) -> bool:
        rng = self.rng
        a = max(4, int(rng.uniform(6, 28) * scale))
        b = max(4, int(rng.uniform(6, 28) * scale))
        mask = np.ones((a, b), dtype=bool)
        if rng.random() < 0.4 and min(a, b) >= 6:  # L-shape
            ca, cb = int(a * rng.uniform(0.35, 0.65)), int(b * rng.uniform(0.35, 0.65))
            corner = int(rng.integers(0, 4))
            rs = slice(0, ca) if corner < 2 else slice(a - ca, a)
            cs = slice(0, cb) if corner % 2 == 0 else slice(b - cb, b)
            mask[rs, cs] = False
        allowed = np.isin(self.land.cls, (GRASS, CROP, FOREST, URBAN, 4)) & ~self.used
        return self._place_material("building", mask, allowed, _ROOF_MATERIALS, MIN_CONTRAST * 1.5)

    def _place_material(
        self,
        kind: str,
        mask: np.ndarray,
        allowed: np.ndarray,
        materials: tuple[str, ...],
        lo: float,
        low_contrast: bool = False,
    ) -> bool:
        p = self._random_pixel(allowed)
        if p is None:
            return False
        box = self._box(p[0] - mask.shape[0] // 2, p[1] - mask.shape[1] // 2, mask)
        if box is None:
            return False
        rows, cols, m = box
        if (self.land.cls[rows, cols][m] == WATER).any() or not self._free(rows, cols, m):
            return False
        j = self._pick_date(rows, cols, m)
        before = self._before(rows, cols, m)
        for name in self.rng.permutation(materials):
            spec = self.mats[str(name)] * np.float32(self.rng.uniform(0.85, 1.15))
            if low_contrast:
                # Blend towards the land as seen on date j, keeping a small but real contrast.
                for s in (0.25, 0.4, 0.6, 0.8):
                    cand = before[j] + s * (spec - before[j])
                    if self._contrast_ok(before, cand, j, lo):
                        spec = cand.astype(np.float32)
                        break
            if self._contrast_ok(before, spec, j, lo):
                tex = self._texture(rows, cols, m, 0.03)
                self._commit(kind, j, rows, cols, m, spec[:, None] * tex[None])
                self.out.changes.append(Change(kind, j, rows, cols, m))
                return True
        return False

    def road(self, scale: float) -> bool:
        rng = self.rng
        allowed = np.isin(self.land.cls, (GRASS, CROP, FOREST, 4)) & ~self.used
        p = self._random_pixel(allowed)
        if p is None:
            return False
        length = rng.uniform(40, 160) * scale
        line = draw_polyline(
            rng, (self.h, self.w), (p[0] + 0.5, p[1] + 0.5), rng.uniform(0, 2 * np.pi), length, 0.03
        )
        if rng.random() < 0.5:
            line = ndimage.binary_dilation(line)
        line &= self.land.cls != WATER
        ys, xs = np.nonzero(line)
        if ys.size < 20:
            return False
        rows, cols = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
        m = line[rows, cols]
        # Keep only the largest connected piece (a road may cross water and be cut).
        lab, n = ndimage.label(m)
        if n > 1:
            m = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        if not self._free(rows, cols, m):
            return False
        j = self._pick_date(rows, cols, m)
        before = self._before(rows, cols, m)
        for name in rng.permutation(("asphalt", "concrete", "soil")):
            spec = self.mats[str(name)]
            if self._contrast_ok(before, spec, j, MIN_CONTRAST):
                self._commit(
                    "road",
                    j,
                    rows,
                    cols,
                    m,
                    spec[:, None] * self._texture(rows, cols, m, 0.03)[None],
                )
                self.out.changes.append(Change("road", j, rows, cols, m))
                return True
        return False

    def clearing(self, scale: float) -> bool:
        rng = self.rng
        forest = self.land.cls == FOREST
        p = self._random_pixel(forest & ~self.used)
        if p is None:
            return False
        ry, rx = rng.uniform(6, 22, 2) * scale + 2
        hy, hx = int(ry * 1.5) + 1, int(rx * 1.5) + 1
        yy, xx = np.mgrid[-hy : hy + 1, -hx : hx + 1]
        wobble = ndimage.zoom(
            rng.normal(0, 0.25, (6, 6)), ((2 * hy + 1) / 6, (2 * hx + 1) / 6), order=1
        )
        blob = (yy / ry) ** 2 + (xx / rx) ** 2 < 1.0 + wobble[: 2 * hy + 1, : 2 * hx + 1]
        box = self._box(p[0] - hy, p[1] - hx, blob)
        if box is None:
            return False
        rows, cols, m = box
        m = m & forest[rows, cols]
        lab, n = ndimage.label(m)
        if n == 0:
            return False
        m = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        if m.sum() < 30 or not self._free(rows, cols, m):
            return False
        j = self._pick_date(rows, cols, m)
        mix = rng.uniform(0.3, 0.7)
        spec = mix * self.mats["soil"] + (1 - mix) * self.mats["dry_veg"]
        self._commit(
            "clearing",
            j,
            rows,
            cols,
            m,
            spec[:, None] * self._texture(rows, cols, m, 0.06)[None],
            g=0.03,
        )
        self.out.changes.append(Change("clearing", j, rows, cols, m))
        return True

    def water(self, scale: float) -> bool:
        rng = self.rng
        water = self.land.cls == WATER
        shore = water & ~ndimage.binary_erosion(water)
        p = self._random_pixel(shore & ~self.used)
        if p is None:
            return False
        rad = rng.uniform(10, 26) * scale + 3
        k = int(rng.integers(2, 6))
        hr = int(rad) + k + 1
        r0, r1 = max(p[0] - hr, 0), min(p[0] + hr + 1, self.h)
        c0, c1 = max(p[1] - hr, 0), min(p[1] + hr + 1, self.w)
        rows, cols = slice(r0, r1), slice(c0, c1)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        disk = (yy - p[0]) ** 2 + (xx - p[1]) ** 2 <= rad**2
        wloc = water[rows, cols]
        rise = rng.random() < 0.5
        if rise:
            m = ndimage.binary_dilation(wloc, iterations=k) & ~wloc & disk
            m &= np.isin(self.land.cls[rows, cols], (GRASS, CROP, FOREST, 4))
        else:
            m = wloc & ~ndimage.binary_erosion(wloc, iterations=k, border_value=1) & disk
        lab, n = ndimage.label(m)
        if n == 0:
            return False
        m = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        if m.sum() < 20 or not self._free(rows, cols, m):
            return False
        j = self._pick_date(rows, cols, m)
        spec = (
            self.mats["turbid_water"]
            if rise
            else 0.5 * (self.mats["dark_soil"] + self.mats["soil"])
        )
        before = self._before(rows, cols, m)
        if not self._contrast_ok(before, spec, j, MIN_CONTRAST):
            return False
        self._commit(
            "water_rise" if rise else "water_fall",
            j,
            rows,
            cols,
            m,
            spec[:, None] * self._texture(rows, cols, m, 0.03)[None],
        )
        self.out.changes.append(Change("water_rise" if rise else "water_fall", j, rows, cols, m))
        return True

    def _micro_shape(self, n: int) -> np.ndarray:
        """A 4-connected random shape of ``n`` pixels (grown pixel by pixel; n <= 9)."""
        pts = {(0, 0)}
        while len(pts) < n:
            y, x = list(pts)[int(self.rng.integers(0, len(pts)))]
            dy, dx = ((0, 1), (1, 0), (0, -1), (-1, 0))[int(self.rng.integers(0, 4))]
            if abs(y + dy) <= 1 and abs(x + dx) <= 1:
                pts.add((y + dy, x + dx))
        m = np.zeros((3, 3), dtype=bool)
        for y, x in pts:
            m[y + 1, x + 1] = True
        ys, xs = np.nonzero(m)
        return m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]

    def micro(self) -> bool:
        n = int(self.rng.integers(2, MICRO_MAX_PX + 1))
        low = self.rng.random() < 0.35
        allowed = np.isin(self.land.cls, (GRASS, CROP, FOREST, URBAN, ROAD, 4)) & ~self.used
        return self._place_material(
            "small_object",
            self._micro_shape(n),
            allowed,
            _MICRO_MATERIALS,
            MIN_CONTRAST,
            low_contrast=low,
        )

    def moved(self) -> bool:
        """A small object (2-4 px) that moves 4-12 px: both places change on the same date."""
        rng = self.rng
        shape = self._micro_shape(int(rng.integers(2, 5)))
        allowed = np.isin(self.land.cls, (GRASS, CROP, 4, URBAN)) & ~self.used
        p = self._random_pixel(allowed)
        if p is None:
            return False
        d = rng.uniform(4, 12)
        th = rng.uniform(0, 2 * np.pi)
        q = (int(round(p[0] + d * np.sin(th))), int(round(p[1] + d * np.cos(th))))
        boxes = [self._box(p[0], p[1], shape), self._box(q[0], q[1], shape)]
        if any(b is None or b[2].shape != shape.shape for b in boxes):
            return False
        r0 = min(b[0].start for b in boxes)
        r1 = max(b[0].stop for b in boxes)
        c0 = min(b[1].start for b in boxes)
        c1 = max(b[1].stop for b in boxes)
        rows, cols = slice(r0, r1), slice(c0, c1)
        ma = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        mb = np.zeros_like(ma)
        ma[
            boxes[0][0].start - r0 : boxes[0][0].stop - r0,
            boxes[0][1].start - c0 : boxes[0][1].stop - c0,
        ] = shape
        mb[
            boxes[1][0].start - r0 : boxes[1][0].stop - r0,
            boxes[1][1].start - c0 : boxes[1][1].stop - c0,
        ] = shape
        if (ma & mb).any() or (self.land.cls[rows, cols][ma | mb] == WATER).any():
            return False
        if not self._free(rows, cols, ma | mb):
            return False
        j = self._pick_date(rows, cols, ma | mb)
        ba, bb = self._before(rows, cols, ma), self._before(rows, cols, mb)
        for name in rng.permutation(_ROOF_MATERIALS):
            spec = self.mats[str(name)]
            # Visible at A before j (against A's land) and at B from j on (against B's land).
            if self._contrast_ok(ba[:j][::-1], spec, 0, MIN_CONTRAST) and self._contrast_ok(
                bb, spec, j, MIN_CONTRAST
            ):
                self._commit("moved_object", j, rows, cols, ma, spec, pre=True)
                self._commit("moved_object", j, rows, cols, mb, spec)
                self.out.changes.append(Change("moved_object", j, rows, cols, ma | mb))
                return True
        return False


def plant_changes(
    rng: np.random.Generator,
    land: Land,
    bg: np.ndarray,
    veg: np.ndarray,
    green: np.ndarray,
    wavelengths: tuple[float, ...],
    cloud_mask: np.ndarray,
) -> Planted:
    """Plant large and micro changes covering about 2.5-6 % of the scene, >= 40 % of them micro.

    Args:
        land: the land model; bg: (c, h, w) background reflectance; veg: (c,) green vegetation
            reflectance; green: (t, h, w) green fraction per date; cloud_mask: (t, h, w) bool,
            used to date each change on a date it is visible.
    """
    pl = _Planter(rng, land, bg, veg, green, wavelengths, cloud_mask)
    t, h, w = green.shape
    # Object sizes are in pixels and do not shrink with the scene: a building is as large in a
    # 128-px training scene as in a 4096-px one (only tiny test scenes get smaller objects).
    scale = float(np.clip(np.sqrt(h * w) / 128.0, 0.3, 1.0))
    target = rng.uniform(0.03, 0.06) * h * w
    has_water = bool((land.cls == WATER).any())
    kinds = (
        ("building", "road", "clearing", "water") if has_water else ("building", "road", "clearing")
    )
    weights = np.array([0.4, 0.2, 0.25, 0.15][: len(kinds)])
    weights /= weights.sum()
    area, n_large, tries = 0, 0, 0
    while area < target * 0.85 and tries < 200:
        tries += 1
        kind = str(rng.choice(kinds, p=weights))
        before = len(pl.out.changes)
        if kind == "building":
            pl.building(scale)
        elif kind == "road":
            pl.road(scale)
        elif kind == "clearing":
            pl.clearing(scale)
        else:
            pl.water(scale)
        if len(pl.out.changes) > before:
            n_large += 1
            area += pl.out.changes[-1].area_px
    n_micro = max(2, int(np.ceil(n_large * rng.uniform(0.7, 1.2))))
    made, tries = 0, 0
    while made < n_micro and tries < 20 * n_micro:
        tries += 1
        if pl.moved() if rng.random() < 0.2 else pl.micro():
            made += 1
    return pl.out
