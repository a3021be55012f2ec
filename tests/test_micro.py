"""Small persistent changes: found where a local step lasts, not where a date blips or a field
changes as a whole; seam-free; added to the model's result, never taken from it."""

from __future__ import annotations

import json

import dask
import geopandas as gpd
import numpy as np
import pytest
from helpers import write_stack
from scipy import ndimage

from geochange import tiling
from geochange.pipeline import detect
from geochange.stages import Context, build_chain
from geochange.stages.micro import (
    BUSY_SHARE,
    HIGH,
    LOW,
    MAX_PIXELS,
    REACH,
    rescue,
    step_score,
    usable,
)

DATES = ["2023-03-01", "2023-05-10", "2023-07-02", "2023-09-15", "2023-10-20", "2023-12-01"]


def _series(t: int = 6, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-like (t, 4, h, w) textured ground, the same every date plus noise and a
    per-date gain and offset (illumination); all dates valid."""
    rng = np.random.default_rng(seed)
    ground = np.stack([ndimage.gaussian_filter(rng.normal(size=(size, size)), 2) for _ in range(4)])
    ground = (ground / ground.std()).astype(np.float32)
    gain = rng.uniform(0.8, 1.2, (t, 1, 1, 1))
    offset = rng.normal(0, 0.3, (t, 4, 1, 1))
    x = gain * ground[None] + offset + rng.normal(0, 0.05, (t, 4, size, size))
    return x.astype(np.float32), np.ones((t, size, size), bool)


def test_a_small_object_that_appears_and_stays_is_found_with_its_date():
    x, valid = _series()
    x[3:, :2, 30:32, 40:42] += 2.5  # a 2x2 roof from date 3 on, two bands (3.5 spreads)
    score, when = step_score(x, valid)
    assert score[30:32, 40:42].min() > HIGH
    assert (when[30:32, 40:42] == 3).all()
    far = np.ones_like(valid[0])
    far[26:36, 36:46] = False
    assert np.percentile(score[far], 99) < HIGH / 2, np.percentile(score[far], 99)

    prob = np.full(x.shape[2:], 0.01, np.float32)
    interval = np.zeros(x.shape[2:], np.float32)
    p, k = rescue(x, valid, prob, interval)
    assert (p[30:32, 40:42] >= 0.5).all() and (k[30:32, 40:42] == 2).all()  # interval = date - 1
    assert (p >= 0.5).sum() == 4  # the object, nothing else
    assert np.array_equal(p[far], prob[far]) and not np.shares_memory(p, prob)


def test_a_step_on_the_last_date_counts_but_a_one_date_blip_does_not():
    x, valid = _series()
    x[-1, :, 10:12, 10:13] += 2.5  # appears on the last date: the later dates cannot say more
    x[2, :, 50:53, 20:22] += 2.5  # a speck on one date only, gone after
    score, when = step_score(x, valid)
    assert score[10:12, 10:13].min() > HIGH and (when[10:12, 10:13] == 5).all()
    assert score[50:53, 20:22].max() < 1.0


def test_a_blip_on_the_last_valid_date_is_not_a_lasting_step():
    x, valid = _series()
    x[4, :, 20:22, 20:23] += 2.5  # date 4 only; date 5, the last, is masked there
    valid[5, 16:26, 16:27] = False
    x[5, :, 40:42, 40:43] += 2.5  # on the series' last date itself: may be a new object
    score, when = step_score(x, valid)
    assert score[20:22, 20:23].max() < 1.0
    assert score[40:42, 40:43].min() > HIGH and (when[40:42, 40:43] == 5).all()


def test_a_masked_date_neither_makes_nor_breaks_a_step():
    x, valid = _series()
    x[2, :, 50:53, 20:22] += 3.0  # a cloud on date 2 ...
    valid[2, 48:56, 18:26] = False  # ... that the screen or the user's mask flagged
    x[3:, :2, 30:32, 40:42] += 2.5
    valid[4, 28:34, 38:44] = False  # a masked date after a real change does not hide it
    score, _ = step_score(x, valid)
    assert score[50:53, 20:22].max() < 1.0
    assert score[30:32, 40:42].min() > HIGH


def test_a_field_changing_as_a_whole_is_left_to_the_model():
    x, valid = _series()
    x[3:, 3, 10:40, 10:40] -= 5.0  # a 30x30 field harvested: NIR down from date 3
    prob = np.zeros(x.shape[2:], np.float32)
    p, _ = rescue(x, valid, prob, np.zeros_like(prob))
    # Its inside has no local contrast; its outline is one long object, far above MAX_PIXELS.
    assert (p >= 0.5).sum() == 0
    score, _ = step_score(x, valid)
    assert score[14:36, 14:36].max() < 1.0
    outline, n = ndimage.label(score > LOW, np.ones((3, 3), bool))
    assert score.max() > HIGH and n == 1 and (outline > 0).sum() > 10 * MAX_PIXELS


def test_the_model_result_is_only_ever_raised():
    x, valid = _series()
    x[3:, :2, 30:32, 40:42] += 2.5
    rng = np.random.default_rng(1)
    prob = rng.uniform(0, 1, x.shape[2:]).astype(np.float32)
    prob[0, 0] = np.nan
    interval = rng.integers(0, 5, x.shape[2:]).astype(np.float32)
    p, k = rescue(x, valid, prob, interval)
    assert np.isnan(p[0, 0])
    finite = np.isfinite(prob)
    assert (p[finite] >= prob[finite]).all()
    kept = prob >= 0.5  # where the model said change, its date stands
    assert np.array_equal(k[kept], interval[kept])


@pytest.mark.parametrize("t", [1, 2])
def test_two_dates_are_left_alone(t):
    assert not usable(t)
    x, valid = _series(t=t)
    x[-1, :, 10:12, 10:12] += 3.0
    prob = np.zeros(x.shape[2:], np.float32)
    p, _ = rescue(x, valid, prob, np.zeros_like(prob))
    assert not p.any()


def test_rescue_is_seam_free():
    x, valid = _series(size=96, seed=3)
    rng = np.random.default_rng(3)
    for y0, x0 in rng.integers(2, 92, (30, 2)):
        x[int(rng.integers(2, 6)) :, :, y0 : y0 + 2, x0 : x0 + 3] += rng.uniform(1, 3)
    prob = np.zeros(x.shape[2:], np.float32)
    whole, _ = rescue(x, valid, prob, prob)
    assert (whole >= 0.5).sum() > 30  # the test below compares something
    core = 24
    for y0 in range(0, 96, core):
        for x0 in range(0, 96, core):
            ya, xa = max(0, y0 - REACH), max(0, x0 - REACH)
            yb, xb = min(96, y0 + core + REACH), min(96, x0 + core + REACH)
            win = (slice(ya, yb), slice(xa, xb))
            part, _ = rescue(x[:, :, ya:yb, xa:xb], valid[:, ya:yb, xa:xb], prob[win], prob[win])
            np.testing.assert_array_equal(
                part[y0 - ya : y0 - ya + core, x0 - xa : x0 - xa + core],
                whole[y0 : y0 + core, x0 : x0 + core],
            )
    assert MAX_PIXELS < REACH
    # The same in windows of 24 px (the memory bound of large tiles).
    np.testing.assert_array_equal(rescue(x, valid, prob, prob, block=24)[0], whole)


def test_model_detector_with_micro_is_seam_free_and_adds_halo(tiny_model):
    x, _ = _series(size=80, seed=4)
    x = (x * 300 + 2000).astype(np.float32)  # DN-like source units
    x[3:, :2, 30:32, 40:42] += 900
    sample = x.reshape(6, 4, -1)
    context = Context(model=str(tiny_model), device="cpu")
    off = build_chain(sample, skip={"micro"}, context=context)
    on = build_chain(sample, context=context)
    assert "micro" in on.names and "micro" not in off.names and on.halo >= REACH
    assert dask.base.tokenize(on) != dask.base.tokenize(off)
    p_on, p_off = on(x)[0], off(x)[0]
    assert (p_on >= p_off).all() and (p_on[30:32, 40:42] >= 0.5).all()
    tiled = tiling.overlap_map(
        dask.array.from_array(x, chunks=(6, 4, 40, 32)), on, on.halo, out_bands=2
    )
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_allclose(np.asarray(tiled.compute()), on(x), atol=1e-5)
    assert "micro" not in build_chain(sample[:2], context=context).names


@pytest.mark.parametrize("flag", ["micro", "refine", "emerge"])
def test_detect_records_micro_refine_and_emerge_in_the_runs_layer(tmp_path, tiny_model, flag):
    x, _ = _series(size=48, seed=5)
    x = np.clip(x * 300 + 2000, 1, 65535).astype(np.uint16)
    write_stack(tmp_path / "s", x, DATES, nodata=0)
    kw = {"model": tiny_model, "device": "cpu", "quicklook": False}
    on = detect(tmp_path / "s", tmp_path / "on.gpkg", **kw)
    off = detect(tmp_path / "s", tmp_path / "off.gpkg", skip=[flag], **kw)
    cva = detect(tmp_path / "s", tmp_path / "cva.gpkg", method="cva", quicklook=False)

    def stages(result) -> list[str]:
        return json.loads(gpd.read_file(result.paths["gpkg"], layer="runs").stages[0])

    assert flag in stages(on) and flag not in stages(off) and flag not in stages(cva)


def test_a_small_step_among_many_is_texture_not_an_object():
    """Two alike 2x2 roofs: one in quiet ground is added; the other in a block where small
    steps are everywhere at the same date (a city's texture between two acquisitions) is not."""
    x, valid = _series(size=96, seed=5)
    rng = np.random.default_rng(5)
    busy = np.zeros(x.shape[2:], bool)
    busy[40:90, 40:90] = True
    texture = rng.normal(0, 1.2, (4, 96, 96)) * busy  # per-pixel steps, bands independent
    x[3:] += texture.astype(np.float32)
    x[3:, :2, 10:12, 10:12] += 2.5  # the lone roof
    x[3:, :2, 64:66, 64:66] += 2.5 - texture[:2, 64:66, 64:66]  # the same roof in the busy block
    score, _ = step_score(x, valid)
    assert score[10:12, 10:12].min() > HIGH and score[64:66, 64:66].min() > HIGH
    assert (score[busy] > LOW).mean() > BUSY_SHARE  # the block is busy
    prob = np.full(x.shape[2:], 0.01, np.float32)
    p, _ = rescue(x, valid, prob, prob)
    assert (p[10:12, 10:12] >= 0.5).all()
    assert (p[64:66, 64:66] < 0.5).all() and (p[busy] < 0.5).all()
