"""Classical baselines on constructed scenes with a known answer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import ndimage, stats

from geochange.errors import InputError
from geochange.stages.baselines import CVA, IRMAD, Diff, irmad, make_baseline, otsu_threshold

H = W = 64
C = 4
#: Spectrum of a planted change: a bright roof with low NIR, far from any land pixel.
_ROOF = np.array([0.7, 0.65, 0.6, 0.05], dtype=np.float32)


def _land(rng: np.random.Generator, c: int = C, h: int = H, w: int = W) -> np.ndarray:
    """Textured, band-correlated 'land' (c, h, w) in reflectance-like units."""
    fields = np.stack([ndimage.gaussian_filter(rng.normal(size=(h, w)), 3) for _ in range(c)])
    fields /= fields.std(axis=(1, 2), keepdims=True)
    mix = rng.uniform(0.2, 1.0, size=(c, c)) + np.eye(c)
    land = 0.2 + 0.05 * np.einsum("ck,khw->chw", mix, fields)
    return (land + rng.normal(0, 0.002, land.shape)).astype(np.float32)


def _illuminate(x: np.ndarray, rng: np.random.Generator, noise: float = 0.002) -> np.ndarray:
    """Gain/offset per band (illumination, haze) plus a little sensor noise."""
    gain = np.array([1.3, 1.2, 0.9, 0.8])[: x.shape[0], None, None]
    offset = np.array([0.05, 0.03, -0.01, 0.02])[: x.shape[0], None, None]
    return (gain * x + offset + rng.normal(0, noise, x.shape)).astype(np.float32)


def _sample(stack: np.ndarray, step: int = 2) -> np.ndarray:
    """A decimated read (t, c, n) as stack.read_sample gives."""
    t, c = stack.shape[:2]
    return stack[:, :, ::step, ::step].reshape(t, c, -1)


def _square() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[20:40, 24:44] = True
    return m


def _f1(pred: np.ndarray, ref: np.ndarray) -> float:
    tp = np.sum(pred & ref)
    return 2 * tp / (pred.sum() + ref.sum())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0, 0.3, 900), rng.normal(5, 0.3, 100)])
    thr = otsu_threshold(v)
    assert 1.0 < thr < 4.0
    assert otsu_threshold(np.full(5, 2.0)) == 2.0
    with pytest.raises(InputError, match="no finite value"):
        otsu_threshold(np.array([np.nan]))


def test_irmad_is_invariant_to_gain_offset(rng):
    x0 = _land(rng).reshape(C, -1).astype(np.float64)
    x1 = _illuminate(x0.reshape(C, H, W), rng).reshape(C, -1)
    fit = irmad(x0, x1)
    assert fit.rho.min() > 0.9
    # Z is chi-square with C dof on unchanged pixels: weights are no-change probabilities.
    assert np.mean(fit.weights < 0.01) < 0.03


@pytest.mark.parametrize("method", ["irmad", "cva"])
def test_pure_illumination_change_is_not_change(method, rng):
    x0 = _land(rng)
    stack = np.stack([x0, _illuminate(x0, rng)])
    det = make_baseline(method, _sample(stack))
    out = det(stack)
    assert out.shape == (2, H, W) and out.dtype == np.float32
    assert np.mean(out[0] >= 0.5) < 0.02


def test_raw_difference_would_call_illumination_change():
    """Control: without standardisation the same pair differs strongly everywhere."""
    rng = np.random.default_rng(7)
    x0 = _land(rng)
    x1 = _illuminate(x0, rng)
    assert np.mean(np.abs(x1 - x0)) > 10 * 0.002


@pytest.mark.parametrize("method", ["cva", "irmad", "diff"])
def test_planted_change_is_found(method, rng):
    x0 = _land(rng)
    x1 = _illuminate(x0, rng)
    sq = _square()
    # A new surface with another spectrum (e.g. a roof on a field).
    x1[:, sq] = _ROOF[:, None] + rng.normal(0, 0.01, (C, sq.sum()))
    stack = np.stack([x0, x1])
    out = make_baseline(method, _sample(stack))(stack)
    pred = out[0] >= 0.5
    f1 = _f1(pred, sq)
    assert f1 > (0.9 if method != "diff" else 0.8), f1
    assert np.all(out[1][np.isfinite(out[0])] == 0)


def test_threshold_maps_to_half(rng):
    x0 = _land(rng)
    stack = np.stack([x0, _illuminate(x0, rng, noise=0.02)])
    det = make_baseline("cva", _sample(stack))
    s, _, _ = det.scores(stack)
    out = det(stack)
    np.testing.assert_allclose(out[0], s[0] / (s[0] + det.threshold), rtol=1e-5)
    assert np.all((out[0] >= 0.5) == (s[0] >= det.threshold * (1 - 1e-6)))


@pytest.mark.parametrize("method", ["cva", "irmad", "diff"])
def test_series_reports_the_interval_of_change(method, rng):
    x0 = _land(rng)
    dates = [x0, _illuminate(x0, rng)]
    dates.append(_illuminate(x0, np.random.default_rng(1)))
    x3 = _illuminate(x0, np.random.default_rng(2))
    sq = _square()
    x3[:, sq] = _ROOF[:, None]
    dates += [x3, x3 + np.random.default_rng(3).normal(0, 0.002, x3.shape).astype(np.float32)]
    stack = np.stack(dates)  # T = 5, change between date 2 and date 3: interval 2
    out = make_baseline(method, _sample(stack))(stack)
    pred = out[0] >= 0.5
    assert _f1(pred, sq) > 0.8
    assert np.all(out[1][sq & pred] == 2)


@pytest.mark.parametrize("method", ["cva", "irmad", "diff"])
def test_nodata_never_becomes_change(method, rng):
    x0 = _land(rng)
    stack = np.stack([x0, _illuminate(x0, rng), _illuminate(x0, np.random.default_rng(5))])
    cloud = np.zeros((H, W), bool)
    cloud[5:30, 5:30] = True
    stack[1][:, cloud] = np.nan  # a cloud on the middle date
    stack[0][:, 40:50, 40:50] = np.nan  # a gap on the first date
    lone = (slice(55, 60), slice(0, 10))
    stack[0][:, lone[0], lone[1]] = np.nan  # only one valid date left here
    stack[1][:, lone[0], lone[1]] = np.nan
    det = make_baseline(method, _sample(stack))
    out = det(stack)
    assert np.all(np.isnan(out[:, lone[0], lone[1]]))
    finite = np.isfinite(out[0])
    assert finite.sum() == H * W - 50
    assert np.all(np.isfinite(out[1][finite]))
    assert np.mean(out[0][cloud] >= 0.5) < 0.03
    assert np.mean(out[0][40:50, 40:50] >= 0.5) < 0.05
    # The interval ending on the cloudy date is never chosen under the cloud when it has no data.
    assert np.all(out[1][cloud][out[0][cloud] > 0] != 0)


@pytest.mark.parametrize("method", ["cva", "irmad", "diff"])
def test_halves_equal_whole_scene(method, rng):
    x0 = _land(rng)
    x1 = _illuminate(x0, rng)
    x1[:, _square()] += 0.1
    x1[:, 0:8, 0:8] = np.nan
    stack = np.stack([x0, x1, _illuminate(x1, np.random.default_rng(9))])
    det = make_baseline(method, _sample(stack))
    assert det.halo == 0
    whole = det(stack)
    halves = np.concatenate([det(stack[..., :, :27]), det(stack[..., :, 27:])], axis=-1)
    quads = np.concatenate([det(stack[..., :33, :]), det(stack[..., 33:, :])], axis=-2)
    np.testing.assert_array_equal(whole, halves)
    np.testing.assert_array_equal(whole, quads)


@pytest.mark.parametrize("cls", [CVA, IRMAD, Diff])
def test_detectors_pickle(cls, rng):
    x0 = _land(rng)
    stack = np.stack([x0, _illuminate(x0, rng)])
    method = {CVA: "cva", IRMAD: "irmad", Diff: "diff"}[cls]
    det = make_baseline(method, _sample(stack))
    again = pickle.loads(pickle.dumps(det))
    out = det(stack)
    # A result worth comparing: finite everywhere (no nodata here) and not one constant.
    assert np.isfinite(out).all() and float(out[0].std()) > 0
    np.testing.assert_array_equal(again(stack), out)
    assert type(again) is cls and again.name == method


def test_irmad_threshold_is_chi_square(rng):
    x0 = _land(rng)
    det = make_baseline("irmad", _sample(np.stack([x0, _illuminate(x0, rng)])))
    assert det.threshold == pytest.approx(stats.chi2.ppf(0.99, C))


def test_errors_name_the_culprit(rng):
    x0 = _land(rng)
    stack = np.stack([x0, x0])
    with pytest.raises(InputError, match="method: found 'bfast'.*fix"):
        make_baseline("bfast", _sample(stack))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="expected \\(t >= 2"):
        make_baseline("cva", _sample(stack)[:1])
    det = make_baseline("cva", _sample(stack))
    with pytest.raises(InputError, match="CVA detector: found a tile of shape"):
        det(stack[:, :3])
    with pytest.raises(InputError, match="no valid pixel on any date"):
        make_baseline("cva", np.full((2, C, 10), np.nan, np.float32))


def test_identical_dates_give_no_change(rng):
    x0 = _land(rng)
    stack = np.stack([x0, x0])
    for method in ("cva", "irmad", "diff"):
        out = make_baseline(method, _sample(stack))(stack)  # type: ignore[arg-type]
        assert np.all(out[0] < 0.5), method


@pytest.mark.parametrize("method", ["cva", "irmad", "diff"])
def test_chunked_run_through_tiling_equals_whole_scene(method, rng):
    import dask
    import dask.array as da

    from geochange.tiling import overlap_map

    x0 = _land(rng)
    x1 = _illuminate(x0, rng)
    x1[:, _square()] = _ROOF[:, None]
    x1[:, 50:60, 3:9] = np.nan
    stack = np.stack([x0, x1, _illuminate(x0, np.random.default_rng(4))])
    det = make_baseline(method, _sample(stack))
    lazy = overlap_map(da.from_array(stack, chunks=(-1, -1, 20, 24)), det, det.halo, out_bands=2)
    with dask.config.set(scheduler="synchronous"):
        chunked = lazy.compute()
    np.testing.assert_array_equal(chunked, det(stack))
