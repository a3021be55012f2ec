"""Outputs are pinned bit for bit: a stored digest of the rasters and polygons of each method.

Any change that alters a result, on purpose or not, fails here. When a change is meant to alter
results, regenerate the digests with ``python tests/test_digest.py --write`` and say why in the
commit; a refactoring must leave them as they are.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DIGESTS = Path(__file__).with_name("data") / "digests.json"

#: name -> (stack source, detect options). "synthetic" is a seeded 192² scene, 6 dates, 4 bands.
CASES: dict[str, tuple[str, dict]] = {
    "data_samples-cnn-lstm": ("data_samples", {"chunk_size": 256}),
    "synthetic-cnn-lstm": ("synthetic", {"chunk_size": 96}),
    "synthetic-cnn-lstm-bare": (
        "synthetic",
        {"chunk_size": 96, "skip": ("coregister", "clouds", "refine", "micro", "emerge")},
    ),
    "synthetic-cva": ("synthetic", {"method": "cva", "chunk_size": 96}),
    "synthetic-irmad": ("synthetic", {"method": "irmad", "chunk_size": 96}),
    "synthetic-diff": ("synthetic", {"method": "diff", "chunk_size": 96}),
}


def _stack(source: str, tmp: Path):
    import geochange
    from geochange.synth import make_scene, write_scene

    if source == "data_samples":
        return geochange.open_stack(ROOT / "data_samples" / "stack")
    folder = tmp / "synthetic"
    if not folder.exists():
        write_scene(make_scene(192, dates=6, bands=4, seed=4242, nuisance="high"), folder)
    return geochange.open_stack(folder / "stack")


def digest(source: str, options: dict, tmp: Path) -> dict[str, str]:
    """sha256 of the probability and date rasters and of the polygons' geometry and attributes."""
    import geochange

    result = geochange.detect(_stack(source, tmp), None, **options)
    prob = np.ascontiguousarray(result.prob.compute(), dtype=np.float32)
    date = np.ascontiguousarray(result.date_index.compute(), dtype=np.uint8)
    changes = result.changes
    table = changes.drop(columns="geometry").to_csv(index=False, float_format="%.9g")
    return {
        "prob": hashlib.sha256(prob.tobytes()).hexdigest(),
        "date": hashlib.sha256(date.tobytes()).hexdigest(),
        "geometry": hashlib.sha256(b"".join(changes.geometry.to_wkb())).hexdigest(),
        "attributes": hashlib.sha256(table.encode()).hexdigest(),
        "polygons": str(len(changes)),
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_match_stored_digest(name, tmp_path_factory):
    stored = json.loads(DIGESTS.read_text())[name]
    source, options = CASES[name]
    tmp = tmp_path_factory.getbasetemp() / "digest"
    tmp.mkdir(exist_ok=True)
    assert digest(source, options, tmp) == stored


if __name__ == "__main__":  # python tests/test_digest.py --write
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_digest.py --write")
    with tempfile.TemporaryDirectory() as tmp:
        out = {name: digest(*CASES[name], Path(tmp)) for name in sorted(CASES)}
    DIGESTS.parent.mkdir(exist_ok=True)
    DIGESTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
