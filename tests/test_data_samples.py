"""The shipped default model on the shipped data_samples: issue 2's acceptance figures.

Runs the README's first command the API way (default model, default threshold, no masks) and
scores the ``changes`` polygons rasterised on the label grid, as ``geochange evaluate`` does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import geochange
from geochange.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"


@pytest.mark.skipif(
    not (SAMPLES / "truth" / "label.tif").is_file(), reason="data_samples not generated"
)
def test_default_model_on_data_samples_meets_the_issue_targets(tmp_path) -> None:
    out = tmp_path / "changes.gpkg"
    result = geochange.detect(SAMPLES / "stack", out, quicklook=False, progress=False)
    assert len(result.changes) > 10
    scores = evaluate(
        out, SAMPLES / "truth" / "label.tif", pred_dates=tmp_path / "changes_date.tif"
    )
    # Measured 2026-11-27 (session-9 default, cloud screen on): F1 0.852, dates exact 99.1 %.
    assert scores["pixel"]["f1"] >= 0.80, scores["pixel"]
    assert scores["date"]["exact"] >= 0.80, scores["date"]
