"""Probability calibration: the Platt fit, the detector applying it, `geochange calibrate`,
and `geochange train` with a calibration section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from geochange.cli import cli
from geochange.errors import InputError, OutputExistsError
from geochange.model import load_model
from geochange.model.calibrate import calibrate_checkpoint, fit_platt
from geochange.model.checkpoint import calibration_of
from geochange.stages.network import ModelDetector

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

SCENES = {"seeds": [1000, 1003], "sizes": [64]}


def test_fit_platt_recovers_a_known_logistic_law():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 200_000)
    y = rng.random(z.size) < 1 / (1 + np.exp(-(0.5 * z - 2.0)))
    a, b = fit_platt(z, y)
    assert a == pytest.approx(0.5, abs=0.02) and b == pytest.approx(-2.0, abs=0.05)
    with pytest.raises(ValueError, match="both changed and unchanged"):
        fit_platt(z, np.zeros_like(y))


def test_detector_applies_the_checkpoint_calibration(tiny_model):
    net, meta = load_model(tiny_model)
    rng = np.random.default_rng(1)
    tile = rng.normal(1000, 50, size=(3, 2, 24, 24)).astype(np.float32)
    stats = np.stack([np.full((3, 2), 1000.0), np.full((3, 2), 50.0)], axis=-1)
    # The series' own probability (the last-date check then combines calibrated probabilities).
    off = {"last_date_check": False}
    raw = ModelDetector(net, stats, meta=meta, **off)(tile)[0]
    assert calibration_of(meta) == (1.0, 0.0)
    flat = {"calibration": {"scale": 0.0, "bias": 0.0}}
    np.testing.assert_allclose(ModelDetector(net, stats, meta=flat, **off)(tile)[0], 0.5)
    cal = {"calibration": {"scale": 0.5, "bias": -1.0}}
    got = ModelDetector(net, stats, meta=cal, **off)(tile)[0].astype(np.float64)
    logit = np.log(raw) - np.log1p(-raw.astype(np.float64))
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-(0.5 * logit - 1.0))), atol=1e-5)


def test_calibrate_checkpoint_writes_the_fit_and_keeps_the_weights(tiny_model, tmp_path):
    out = tmp_path / "cal.ckpt"
    cal = calibrate_checkpoint(tiny_model, out, **SCENES)
    net, meta = load_model(out)
    base, _ = load_model(tiny_model)
    for k, v in base.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v)
    assert meta["calibration"] == cal and meta["name"] == "tiny-test"
    assert cal["scenes"]["seeds"] == [1000, 1003] and cal["pixels"] == 3 * 64 * 64
    assert 0 < cal["change_share"] < 1 and cal["scale"] != 1.0
    # The fit is what the detector then applies.
    assert calibration_of(meta) == (cal["scale"], cal["bias"])
    with pytest.raises(OutputExistsError, match="--overwrite"):
        calibrate_checkpoint(tiny_model, out, **SCENES)
    with pytest.raises(InputError, match="unknown setting"):
        calibrate_checkpoint(tiny_model, tmp_path / "x.ckpt", colour="red")
    with pytest.raises(InputError, match="first < last"):
        calibrate_checkpoint(tiny_model, tmp_path / "x.ckpt", seeds=[5, 5])
    assert not (tmp_path / "x.ckpt").exists()


def test_cli_calibrate(tiny_model, tmp_path):
    out = tmp_path / "cal.ckpt"
    runner = CliRunner()
    args = ["calibrate", str(tiny_model), "-o", str(out), "--seeds", "1000-1002", "--size", "64"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "scale" in res.output and "calibrated" in res.output
    assert load_model(out)[1]["calibration"]["scenes"]["seeds"] == [1000, 1002]
    res = runner.invoke(cli, args)
    assert res.exit_code != 0 and "--overwrite" in str(res.exception)
    res = runner.invoke(cli, ["calibrate", str(tiny_model), "-o", str(out), "--seeds", "x"])
    assert res.exit_code != 0 and "expected FIRST-LAST" in res.output


def _config(tmp_path, calibration) -> str:
    cfg = {
        "seed": 1,
        "name": "tiny-cal",
        "model": {"features": 4, "hidden": 4, "head_hidden": 4},
        "task": {"lr": 0.01, "scheduler": "none"},
        "data": {
            "batch_size": 2,
            "chip": 24,
            "num_workers": 0,
            "sources": [
                {"synthetic": {"seeds": [0, 2], "size": 32, "dates": [2, 3], "bands": [2, 2]}}
            ],
        },
        "trainer": {"max_steps": 2, "threads": 1, "progress_bar": False},
        "calibration": calibration,
    }
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_train_with_a_calibration_section(tmp_path):
    config = _config(tmp_path, SCENES)
    out = tmp_path / "m.ckpt"
    res = CliRunner().invoke(cli, ["train", config, "-o", str(out)])
    assert res.exit_code == 0, res.output
    cal = load_model(out)[1]["calibration"]
    assert cal["method"] == "platt" and cal["scenes"]["sizes"] == [64]
    report = json.loads((tmp_path / "m.ckpt.report.json").read_text())
    assert report["calibration"] == cal
    assert "Probability calibration" in (tmp_path / "m.ckpt.report.md").read_text()

    bad = _config(tmp_path, {"seeds": [0, 1], "colour": 1})
    res = CliRunner().invoke(cli, ["train", bad, "-o", str(tmp_path / "b.ckpt")])
    assert res.exit_code != 0 and "unknown keys ['colour']" in str(res.exception)
    assert not (tmp_path / "b_checkpoints").exists()  # refused before any training
