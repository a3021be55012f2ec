"""The edge-aware refinement of the change probability (geochange.stages.refine)."""

from __future__ import annotations

import dask
import numpy as np
from scipy import ndimage

from geochange import tiling
from geochange.stages import Context, build_chain
from geochange.stages.refine import REACH, refine


def _scene(size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised series (6 dates, 3 bands) of a noisy field with a 10x12 roof built on date 3
    and a 2-px object built on date 2, and the reference change mask."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.1, (6, 3, size, size)).astype(np.float32)
    ref = np.zeros((size, size), bool)
    ref[10:20, 14:26] = True
    x[3:, :, 10:20, 14:26] += np.array([1.5, -1.0, 2.0], np.float32)[None, :, None, None]
    ref[33, 30:32] = True
    x[2:, :, 33, 30:32] += np.array([-1.2, 1.4, 0.8], np.float32)[None, :, None]
    return x, np.ones((6, size, size), bool), ref


def _blurred(ref: np.ndarray) -> np.ndarray:
    """A model-like probability: the outline smeared and one px too far out, and a speck."""
    prob = ndimage.gaussian_filter(ndimage.binary_dilation(ref).astype(np.float32), 1.2)
    prob = np.clip(prob * 1.3, 0.0, 0.95)
    prob[40, 8:10] = 0.8  # a speck on plain field: nothing changed in its series
    return prob.astype(np.float32)


def test_outlines_follow_the_series_and_specks_like_their_field_go() -> None:
    x, valid, ref = _scene()
    prob = _blurred(ref)
    before = prob >= 0.5
    after = refine(prob, x, valid) >= 0.5
    wrong_before, wrong_after = (before != ref).sum(), (after != ref).sum()
    assert wrong_after < 0.7 * wrong_before, (wrong_before, wrong_after)
    assert not after[40, 8:10].any()  # the speck took its field's probability
    assert after[33, 30:32].all()  # the 2-px object has a series of its own: kept
    assert after[10:20, 14:26].all()


def test_refine_is_the_same_whole_or_in_windows_and_keeps_nodata() -> None:
    x, valid, ref = _scene(size=64, seed=1)
    prob = _blurred(ref)
    prob[0:3, 50:60] = np.nan
    whole = refine(prob, x, valid, block=1024)
    np.testing.assert_array_equal(refine(prob, x, valid, block=20), whole)
    assert np.isnan(whole[0:3, 50:60]).all() and np.isfinite(whole[3:]).all()
    # A pixel with fewer than two valid dates carries no weight for its neighbours: what the
    # model said there does not matter outside it.
    valid2 = valid.copy()
    valid2[1:, 30:40, 40:50] = False
    x2 = x.copy()
    x2[:, :, 30:40, 40:50] = x[:, :, 30:40, 39:40]  # series like the pixels next to them
    high, low = prob.copy(), prob.copy()
    high[30:40, 40:50], low[30:40, 40:50] = 1.0, 0.0
    a, b = refine(high, x2, valid2), refine(low, x2, valid2)
    outside = np.ones(a.shape, bool)
    outside[30:40, 40:50] = False
    np.testing.assert_array_equal(a[outside & np.isfinite(a)], b[outside & np.isfinite(b)])


def test_model_detector_refines_seam_free_with_its_halo(tiny_model) -> None:
    x, _, _ = _scene(size=72, seed=2)
    x = (x * 300 + 2000).astype(np.float32)  # DN-like source units
    sample = x.reshape(6, 3, -1)
    context = Context(model=str(tiny_model), device="cpu")
    on = build_chain(sample, skip={"micro", "emerge"}, context=context)
    off = build_chain(sample, skip={"micro", "emerge", "refine"}, context=context)
    assert "refine" in on.names and "refine" not in off.names
    assert on.halo == off.halo + REACH
    assert dask.base.tokenize(on) != dask.base.tokenize(off)
    assert np.abs(on(x)[0] - off(x)[0]).max() > 1e-4
    tiled = tiling.overlap_map(
        dask.array.from_array(x, chunks=(6, 3, 36, 24)), on, on.halo, out_bands=2
    )
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_allclose(np.asarray(tiled.compute()), on(x), atol=1e-5)
