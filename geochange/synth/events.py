"""Later change events on already changed ground: several dated events per pixel.

For ``make_scene(..., events=K)`` with K > 1: after the first changes are planted, some of them
change again later, each at least :data:`MIN_GAP` dates after the pixel's previous event, up to
K events per pixel. A later event either builds on the changed ground (a roof on a clearing, a
new surface on a road: a material of clear contrast) or gives the ground back to what it would
be without any change (regrowth of a clearing, a demolished building grown over). Drawn from its
own random stream, so the scene with one event per pixel is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geochange.synth.changes import MICRO_MAX_PX, Planted
from geochange.synth.spectra import signature

__all__ = ["MIN_GAP", "LaterEvents", "plan_later_events"]

#: Fewest dates between two events of one pixel.
MIN_GAP = 4
#: Share of the eligible changed objects that change once more.
SHARE = 0.6
#: Share of later events that give the ground back (regrowth) rather than build on it.
REVERT_SHARE = 0.4
_MATERIALS = ("concrete", "red_tile", "bright_roof", "dark_roof", "blue_roof", "asphalt", "soil")


@dataclass
class LaterEvents:
    """Events after the first, per pixel.

    Attributes:
        dates: (K-1, h, w) uint8 date index of the 2nd ... K-th event (0 = none).
        spec: (K-1, c, h, w) float32 ground reflectance from that event on (unused where
            ``revert``).
        revert: (K-1, h, w) bool: the event gives the ground back to the unchanged land.
    """

    dates: np.ndarray
    spec: np.ndarray
    revert: np.ndarray

    def ground(self, t: int, ground: np.ndarray, natural: np.ndarray) -> np.ndarray:
        """Date ``t``'s ground (c, h, w) with the events seen by then painted in; ``natural``
        is the ground without any change."""
        out = ground
        for k in range(self.dates.shape[0]):
            on = (self.dates[k] > 0) & (self.dates[k] <= t)
            if not on.any():
                continue
            new = np.where(self.revert[k][None], natural, self.spec[k])
            out = np.where(on[None], new, out)
        return out

    def truth(self, first: np.ndarray) -> np.ndarray:
        """(K, h, w) uint8 event date indices of each pixel in time order (0 = none)."""
        return np.concatenate([first[None], self.dates]).astype(np.uint8)


def plan_later_events(
    rng: np.random.Generator,
    planted: Planted,
    n_dates: int,
    events: int,
    wavelengths: tuple[float, ...],
    cloud_mask: np.ndarray,
) -> LaterEvents:
    """Draw the 2nd ... ``events``-th events on the planted changes (see the module notes).

    Micro objects and moved objects stay single events (a later event on them would be too small
    to judge). Each event is dated on a date mostly free of clouds over the object.
    """
    h, w = planted.post.shape
    c = planted.alt_spec.shape[0]
    k_more = max(0, int(events) - 1)
    dates = np.zeros((k_more, h, w), np.uint8)
    spec = np.zeros((k_more, c, h, w), np.float32)
    revert = np.zeros((k_more, h, w), bool)
    mats = {m: signature(m, wavelengths) for m in _MATERIALS}
    for ch in planted.changes:
        if ch.kind == "moved_object" or ch.area_px <= MICRO_MAX_PX:
            continue
        last = int(ch.date_index)
        for k in range(k_more):
            if rng.random() >= SHARE:
                break
            lo = last + MIN_GAP
            if lo > n_dates - 1:
                break
            cloudy = cloud_mask[lo:, ch.rows, ch.cols][:, ch.mask].mean(axis=1)
            ok = [lo + i for i in range(cloudy.size) if cloudy[i] < 0.2]
            if not ok:
                break
            j = int(rng.choice(ok))
            d = dates[k, ch.rows, ch.cols]
            d[ch.mask] = j
            if rng.random() < REVERT_SHARE:
                revert[k, ch.rows, ch.cols][ch.mask] = True
            else:
                # A material unlike the one the first event put there.
                was = planted.alt_spec[:, ch.rows, ch.cols][:, ch.mask].mean(axis=1)
                names = [str(n) for n in rng.permutation(_MATERIALS)]
                name = max(names, key=lambda n: float(np.abs(mats[n] - was).max()))
                tex = 1.0 + 0.03 * rng.standard_normal(int(ch.mask.sum()))
                sub = spec[k, :, ch.rows, ch.cols]
                sub[:, ch.mask] = (mats[name] * rng.uniform(0.9, 1.1))[:, None] * tex[None]
            last = j
    return LaterEvents(dates, spec, revert)
