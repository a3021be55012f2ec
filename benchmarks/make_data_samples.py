"""Regenerate data_samples/: the committed synthetic scene (seed 2024, nuisance medium).

Same result as::

    geochange synth data_samples --size 448 --dates 6 --bands 4 --seed 2024 --nuisance medium --overwrite

Run from the repository root: ``python benchmarks/make_data_samples.py``. It prints what the
scene holds (the numbers quoted in data_samples/README.md). Seed 2024 is reserved for this
sample: training uses seeds 0-999 and held-out benchmarks 5000 and up.
"""

from __future__ import annotations

import time
from pathlib import Path

from geochange.synth import make_scene, write_scene

OUT = Path(__file__).resolve().parents[1] / "data_samples"
ARGS = {"size": 448, "dates": 6, "bands": 4, "seed": 2024, "nuisance": "medium"}


def main() -> None:
    start = time.perf_counter()
    scene = make_scene(**ARGS)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    paths = write_scene(scene, OUT, overwrite=True)
    files = [*paths["images"], paths["label"], paths["changes"], paths["clouds"]]
    total = sum(p.stat().st_size for p in files)
    ch = scene.changes
    print(f"scene {ARGS} made in {elapsed:.2f} s, written to {OUT} ({total / 1e6:.2f} MB)")
    print("dates:", ", ".join(d.isoformat() for d in scene.dates))
    print(
        f"changed pixels: {100 * scene.change.mean():.2f} %; changes: {len(ch)}, micro: {int(ch.micro.sum())}"
    )
    print("kinds:", ch["kind"].value_counts().to_dict())
    print("changes per date index:", ch["date_index"].value_counts().sort_index().to_dict())
    print(
        "cloud/shadow fraction per date:",
        [round(float(v), 3) for v in scene.clouds.mean(axis=(1, 2))],
    )


if __name__ == "__main__":
    main()
