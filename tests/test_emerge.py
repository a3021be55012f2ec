"""Objects that emerge from their surroundings (geochange.stages.emerge)."""

from __future__ import annotations

import dask
import numpy as np

from geochange import tiling
from geochange.stages import Context, build_chain, emerge


def _fields(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised series (8 dates, 3 bands) of two noisy fields.

    The left field is harvested on date 2 (the whole field changes), a 10x12 roof is built
    inside the right field on date 5 and stays, and a 12x12 cloud the screen missed covers
    part of the right field on date 6 only.
    """
    rng = np.random.default_rng(seed)
    t, c = 8, 3
    x = rng.normal(0.0, 0.08, (t, c, size, size)).astype(np.float32)
    x[:, :, :, size // 2 :] += np.array([0.5, -0.3, 0.2], np.float32)[None, :, None, None]
    x[2:, :, :, : size // 2] += np.array([1.2, 0.9, -1.5], np.float32)[None, :, None, None]
    x[5:, :, 20:30, 40:52] += np.array([1.5, -1.0, 2.0], np.float32)[None, :, None, None]
    x[6, :, 44:56, 36:48] += 3.0
    return x, np.ones((t, size, size), bool)


def test_a_roof_in_a_field_emerges_a_harvest_and_a_passing_cloud_do_not() -> None:
    x, valid = _fields()
    share, date = emerge.emergence(x, valid)
    roof = np.zeros(share.shape, bool)
    roof[20:30, 40:52] = True
    assert (share[roof] >= emerge.SHARE).all() and (date[roof] == 5).all()
    # Everything else stays below the share: the harvested field, the field's edge, the cloud.
    assert (share[~roof] < emerge.SHARE).all()
    prob = np.full(share.shape, 0.1, np.float32)
    interval = np.zeros(share.shape, np.float32)
    prob[0, 0] = np.nan
    prob[2:4, 2:4] = 0.9  # what the model found stays
    p, k = emerge.add(x, valid, prob, interval)
    assert (p[roof] == emerge.PROBABILITY).all() and (k[roof] == 4).all()
    assert (p[~roof & np.isfinite(prob)] == prob[~roof & np.isfinite(prob)]).all()
    assert np.isnan(p[0, 0])
    # The cloud masked on its date changes nothing; one date after the change is too few.
    valid2 = valid.copy()
    valid2[6, 44:56, 36:48] = False
    assert (emerge.emergence(x, valid2)[0][~roof] < emerge.SHARE).all()
    valid2[6:, 20:30, 40:52] = False
    assert (emerge.emergence(x, valid2)[0][roof] < emerge.SHARE).all()


def test_emergence_is_the_same_whole_or_in_windows_and_needs_four_dates() -> None:
    x, valid = _fields(size=80, seed=1)
    valid[3, 10:30, 5:25] = False
    prob = np.full((80, 80), 0.2, np.float32)
    interval = np.zeros((80, 80), np.float32)
    whole = emerge.add(x, valid, prob, interval, block=1024)
    for part, full in zip(emerge.add(x, valid, prob, interval, block=24), whole):
        np.testing.assert_array_equal(part, full)
    assert (whole[0] == emerge.PROBABILITY).sum() >= 100
    p3, _ = emerge.add(x[:3], valid[:3], prob, interval)
    np.testing.assert_array_equal(p3, prob)


def test_model_detector_adds_emerged_objects_seam_free(tiny_model) -> None:
    x, _ = _fields(size=72, seed=2)
    x = (x * 300 + 2000).astype(np.float32)  # DN-like source units
    sample = x.reshape(8, 3, -1)
    context = Context(model=str(tiny_model), device="cpu")
    on = build_chain(sample, skip={"micro", "refine"}, context=context)
    off = build_chain(sample, skip={"micro", "refine", "emerge"}, context=context)
    assert "emerge" in on.names and "emerge" not in off.names and on.halo >= emerge.REACH
    assert dask.base.tokenize(on) != dask.base.tokenize(off)
    p_on, p_off = on(x)[0], off(x)[0]
    assert (p_on >= p_off).all() and (p_on[20:30, 40:52] >= 0.5).all()
    tiled = tiling.overlap_map(
        dask.array.from_array(x, chunks=(8, 3, 40, 28)), on, on.halo, out_bands=2
    )
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_allclose(np.asarray(tiled.compute()), on(x), atol=1e-5)
    three = build_chain(sample[:3], context=context)
    assert "emerge" not in three.names
