"""Where do the default model's false alarms come from? Prints a breakdown, writes nothing.

One command, from the repository root::

    python benchmarks/false_alarms.py                         # held-out seeds 5000-5004, high
    python benchmarks/false_alarms.py --masks                 # the same with cloud masks as nodata
    python benchmarks/false_alarms.py --seeds 2024 --size 448 --dates 6 --nuisance medium  # data_samples

Every false-alarm pixel (probability >= 0.5, no reference change) of each synthetic scene is put in
the first class that holds it: within 2 px of a real change (edge blur); under a cloud or shadow on
the last date only, on the first date only, on one middle date, or on several dates; inside a crop
field; within 2 px of a land-cover or field edge; anything else. The land model comes from the same
seed (``make_scene`` draws the land from the first of its seeded streams). Runs in memory with the
detector on the whole scene (seam-free tiling makes this equal to ``geochange detect``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import ndimage

from geochange.shift import shift_dates
from geochange.stages.coregister import estimate_shifts
from geochange.stages.network import model_detector
from geochange.synth import make_scene
from geochange.synth.land import make_land

CLASSES = (
    "near change (2 px)",
    "cloud: last date only",
    "cloud: first date only",
    "cloud: one middle date",
    "cloud: several dates",
    "crop field",
    "class or field edge (2 px)",
    "other",
)


def breakdown(scene, prob: np.ndarray, seed: int) -> dict[str, int]:
    """False-alarm pixels per class (see the module docstring)."""
    h, w = scene.change.shape
    land = make_land(np.random.default_rng(np.random.SeedSequence(seed).spawn(6)[0]), (h, w))
    ref = scene.change == 1
    left = (np.nan_to_num(prob) >= 0.5) & ~ref
    n_cloudy = scene.clouds.sum(axis=0)
    one = n_cloudy == 1
    edges = np.zeros_like(ref)
    for a in (land.cls, land.field):
        edges |= (np.diff(a, axis=0, prepend=a[:1]) != 0) | (
            np.diff(a, axis=1, prepend=a[:, :1]) != 0
        )
    masks = (
        ndimage.binary_dilation(ref, iterations=2),
        one & scene.clouds[-1],
        one & scene.clouds[0],
        one & ~scene.clouds[0] & ~scene.clouds[-1],
        n_cloudy > 1,
        land.field >= 0,
        ndimage.binary_dilation(edges, iterations=2),
        np.ones_like(ref),
    )
    out = {}
    for name, m in zip(CLASSES, masks):
        out[name] = int((left & m).sum())
        left &= ~m
    out["unchanged pixels"] = int((~ref).sum())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--seeds", default="5000-5004", help="'5000-5004' or '2024'")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--dates", type=int, default=8)
    p.add_argument("--bands", type=int, default=4)
    p.add_argument("--nuisance", default="high", choices=["low", "medium", "high"])
    p.add_argument("--masks", action="store_true", help="cloud masks as nodata (detect --masks)")
    p.add_argument("--no-coregister", action="store_true", help="as detect --no-coregister")
    a = p.parse_args()
    torch.set_num_threads(1)
    lo, _, hi = a.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    total: dict[str, int] = {}
    for seed in seeds:
        scene = make_scene(a.size, a.dates, a.bands, seed, a.nuisance)  # type: ignore[arg-type]
        x = scene.images.astype(np.float32)
        if a.masks:
            x[np.broadcast_to(scene.clouds[:, None], x.shape)] = np.nan
        if not a.no_coregister:  # as detect does by default
            x = shift_dates(x, estimate_shifts(x).shifts)
        det = model_detector(
            x.reshape(a.dates, a.bands, -1),
            model_path=a.model,
            device="cpu",
            wavelengths=scene.band_wavelengths,
        )
        counts = breakdown(scene, det(x)[0], seed)
        fa = sum(v for k, v in counts.items() if k in CLASSES)
        print(f"seed {seed}: {fa} false-alarm px ({100 * fa / counts['unchanged pixels']:.1f} %)")
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    fa = sum(total[k] for k in CLASSES)
    print(f"\nall scenes: {fa} false-alarm px = {100 * fa / total['unchanged pixels']:.2f} % of "
          f"unchanged pixels{' (cloud masks given)' if a.masks else ''}")  # fmt: skip
    for k in CLASSES:
        print(f"  {k:28s} {total[k]:7d}  {100 * total[k] / max(fa, 1):5.1f} %")


if __name__ == "__main__":
    main()
