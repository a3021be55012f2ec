"""ModelDetector: seam-free block function, nodata handling, band checks, pickling."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest
import torch

from geochange.errors import ModelError
from geochange.model import CNNLSTM, DEFAULT_MODEL_PATH, save_model
from geochange.robust import scene_stats
from geochange.stages.network import AROUND_DATES, ModelDetector, model_detector
from geochange.synth import make_scene
from geochange.tiling import overlap_map

torch.set_num_threads(1)


def _net(in_bands: int | None = None) -> CNNLSTM:
    torch.manual_seed(0)
    return CNNLSTM(in_bands=in_bands, features=6, hidden=6, head_hidden=6).eval()


def _scene(t: int = 4, c: int = 3, h: int = 70, w: int = 90, seed: int = 0) -> np.ndarray:
    """uint16-like reflectance with a changed square, a nodata patch and a cloud."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(5.0, 300.0, size=(1, c, h, w))
    gain = rng.uniform(0.8, 1.2, size=(t, 1, 1, 1))
    a = (base * gain + rng.normal(0, 30, size=(t, c, h, w))).astype(np.float32)
    a[2:, :, 20:35, 30:50] += 1500.0  # change first seen on date 2
    a[1, :, 50:60, 5:25] = np.nan  # nodata patch on date 1
    a[:, :, 0:3, 80:90] = np.nan  # never valid: prob NaN
    return a


def _detector(a: np.ndarray, **kw) -> ModelDetector:
    return ModelDetector(_net(), scene_stats(a.reshape(*a.shape[:2], -1)), **kw)


def test_output_shape_range_and_nan() -> None:
    a = _scene()
    out = _detector(a)(a)
    assert out.shape == (2, 70, 90) and out.dtype == np.float32
    prob, k = out
    assert np.isnan(prob[0:3, 80:90]).all() and np.isnan(k[0:3, 80:90]).all()
    ok = ~np.isnan(prob)
    assert ok.sum() == 70 * 90 - 30
    assert ((prob[ok] >= 0) & (prob[ok] <= 1)).all()
    assert set(np.unique(k[ok])) <= {0.0, 1.0, 2.0}


def test_seam_free_two_overlapping_windows() -> None:
    """Whole 70x90 scene vs two windows with a halo: equal outputs (<= 1e-5)."""
    a = _scene()
    det = _detector(a)
    whole = det(a)
    h = det.halo
    assert h == det.net.halo(4)
    split = 41
    left = det(a[..., : split + h])[..., :split]
    right = det(a[..., split - h :])[..., h:]
    np.testing.assert_allclose(np.concatenate([left, right], axis=-1), whole, atol=1e-5)


def test_sub_tiles_inside_the_detector_are_exact() -> None:
    a = _scene()
    whole = _detector(a, tile_size=1000)(a)
    tiled = _detector(a, tile_size=16, batch_size=3)(a)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_seam_free_through_overlap_map_uneven_chunks() -> None:
    a = _scene()
    det = _detector(a)
    whole = det(a)
    data = da.from_array(a, chunks=(1, 3, 23, 31))
    out = overlap_map(data, det, det.halo, out_bands=2, dtype=np.float32)
    np.testing.assert_allclose(out.compute(scheduler="sync"), whole, atol=1e-5)


def test_nodata_date_is_no_change() -> None:
    """A date that is all nodata gives exactly the series without that date."""
    a = _scene()
    with_gap = a.copy()
    with_gap[2] = np.nan
    without = np.delete(a, 2, axis=0)
    stats = scene_stats(with_gap.reshape(4, 3, -1))
    p_gap, k_gap = ModelDetector(_net(), stats)(with_gap)
    p_without, k_without = ModelDetector(_net(), np.delete(stats, 2, axis=0))(without)
    np.testing.assert_allclose(p_gap, p_without, atol=1e-5)
    # Interval 1 (first seen on the missing date 2) is never chosen; later ones shift by one.
    ok = ~np.isnan(k_gap)
    assert not (k_gap[ok] == 1).any()
    np.testing.assert_array_equal(np.where(k_gap == 2, 1, k_gap)[ok], k_without[ok])


def test_pickle_roundtrip_from_net_and_from_path(tmp_path) -> None:
    a = _scene()
    det = _detector(a)
    ref = det(a)
    clone = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(clone(a), ref)
    assert clone.__dask_tokenize__() == det.__dask_tokenize__()

    path = save_model(_net(), tmp_path / "m.ckpt", {"name": "pickle-test"})
    from_path = model_detector(a.reshape(4, 3, -1), model_path=path, device="cpu")
    blob = pickle.dumps(from_path)
    assert len(blob) < 20_000  # path + stats, not the weights
    clone = pickle.loads(blob)
    np.testing.assert_allclose(clone(a), ref, atol=1e-6)
    assert clone.meta["name"] == "pickle-test"
    assert clone.halo == det.halo


def test_band_count_mismatch_is_clear(tmp_path) -> None:
    path = save_model(_net(in_bands=4), tmp_path / "four.ckpt")
    sample = np.ones((3, 6, 50), np.float32)
    with pytest.raises(ModelError, match="trained on 4 bands but the stack has 6; use the default"):
        model_detector(sample, model_path=path, device="cpu")
    with pytest.raises(ModelError, match="trained on 4 bands but the stack has 6"):
        ModelDetector(_net(in_bands=4), np.ones((3, 6, 2), np.float32))


def test_missing_model_and_bad_device(tmp_path) -> None:
    sample = np.ones((3, 2, 50), np.float32)
    with pytest.raises(ModelError, match=r"missing\.ckpt: file not found"):
        model_detector(sample, model_path=tmp_path / "missing.ckpt", device="cpu")
    with pytest.raises(ModelError, match="device: got 'tpu'"):
        model_detector(sample, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            model_detector(sample, device="cuda")


def test_tile_of_wrong_shape() -> None:
    det = ModelDetector(_net(), np.ones((3, 2, 2), np.float32))
    with pytest.raises(ModelError, match=r"expected \(t=3, c=2, h, w\)"):
        det(np.zeros((4, 2, 8, 8), np.float32))


def test_default_model_detector() -> None:
    if not DEFAULT_MODEL_PATH.exists():
        pytest.skip("default weights not trained yet")
    a = _scene(t=3, c=4, h=40, w=40)
    det = model_detector(a.reshape(3, 4, -1), device="cpu")
    assert det(a).shape == (2, 40, 40)


def test_told_its_core_the_detector_runs_there_only() -> None:
    a = _scene()
    det = _detector(a, tile_size=32)
    whole = det(a)
    told = det(a, core=(10, 50, 20, 70))
    np.testing.assert_allclose(told[:, 10:50, 20:70], whole[:, 10:50, 20:70], atol=1e-6)
    assert np.isnan(told[:, :10]).all() and np.isnan(told[:, :, 70:]).all()
    # As a block function of the tiling (told each chunk's core): the whole scene's result.
    tiled = overlap_map(da.from_array(a, chunks=(4, 3, 35, 45)), det, det.halo, out_bands=2)
    np.testing.assert_allclose(tiled.compute(scheduler="synchronous"), whole, atol=1e-5)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    a = _scene()
    cpu = _detector(a)(a)
    gpu = _detector(a, device="cuda")(a)
    # cuDNN convolutions use TF32: probabilities agree to ~1e-3; the change interval is an
    # argmax, so a pixel whose two best intervals nearly tie may flip.
    np.testing.assert_allclose(gpu[0], cpu[0], atol=2e-3, equal_nan=True)
    same = (gpu[1] == cpu[1]) | (np.isnan(gpu[1]) & np.isnan(cpu[1]))
    assert same.mean() > 0.99


@pytest.mark.gpu
def test_cuda_normalises_on_the_device_as_the_cpu_does() -> None:
    from geochange.model import normalize

    a = _scene()
    det = _detector(a, device="cuda")
    x, valid = det._prepare(a)
    assert x.device.type == "cuda" and valid.device.type == "cuda"
    x_cpu, valid_cpu = normalize.apply(a, det.stats)
    np.testing.assert_array_equal(x.cpu().numpy(), x_cpu)
    np.testing.assert_array_equal(valid.cpu().numpy(), valid_cpu)
    # Page-locked or not, the same result; whole tile or sub-tiles, the same up to TF32.
    unpinned = _detector(a, device="cuda", pin_memory=False)
    np.testing.assert_array_equal(unpinned(a), det(a))
    whole = _detector(a, device="cuda", tile_size=256)
    small = _detector(a, device="cuda", tile_size=32, batch_size=3)
    np.testing.assert_allclose(small(a)[0], whole(a)[0], atol=2e-3, equal_nan=True)
    assert torch.cuda.mem_get_info()[0] > 0


def _repeats(t: int, change_at: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A pair (2, c, h, w) with a new bright square on date 1, and a ``t``-date series that
    repeats the first image up to ``change_at`` and the second from it on."""
    rng = np.random.default_rng(seed)
    a = rng.gamma(5.0, 300.0, size=(3, 48, 48)).astype(np.float32)
    b = a.copy()
    b[:, 16:28, 18:30] += 900.0
    return np.stack([a, b]), np.stack([a] * change_at + [b] * (t - change_at))


def _prob(det_series: np.ndarray, **kw) -> np.ndarray:
    det = model_detector(det_series.reshape(*det_series.shape[:2], -1), device="cpu", **kw)
    return det(det_series)


def test_last_date_check_never_below_the_pair() -> None:
    """Repeats of the first image, the change on the last date: with the check the series is
    never less sure of the change than the pair, and dates it on the last date; without the
    check the default model is less sure than the pair."""
    if not DEFAULT_MODEL_PATH.exists():
        pytest.skip("default weights not trained yet")
    pair, series = _repeats(6, 5)
    p_pair = _prob(pair)[0]
    p, k = _prob(series)
    assert (p >= p_pair - 1e-5).all()
    square = np.zeros(p.shape, bool)
    square[16:28, 18:30] = True
    assert (k[square & (p >= 0.5)] == 4).all() and (p[square] >= 0.5).mean() > 0.3
    p_off = _prob(series, last_date_check=False)[0]
    assert p_off[square].mean() < p_pair[square].mean() - 0.1  # measured 0.16 vs 0.41


def test_last_date_check_keeps_earlier_changes() -> None:
    """A change in the middle of the series is in the reference already: the check leaves the
    series' probability as it is (to 1e-4) and the dates of its detections."""
    if not DEFAULT_MODEL_PATH.exists():
        pytest.skip("default weights not trained yet")
    _, series = _repeats(6, 3)
    on, off = _prob(series), _prob(series, last_date_check=False)
    np.testing.assert_allclose(on[0], off[0], atol=1e-4)
    found = off[0] >= 0.5
    assert found.sum() > 20
    np.testing.assert_array_equal(on[1][found], off[1][found])


def test_combine_last_date_by_hand() -> None:
    """E = p (1 - q_last) stays; L = p q_last is raised to max(L, p2 (1 - E))."""
    from geochange.stages.network import combine_last_date

    prob = torch.tensor([[[0.4, 0.9, 0.2]]])  # (b=1, h=1, w=3)
    # 3 intervals (rows); pixel 0: sure of the last one, pixel 1: of the first, pixel 2: even.
    logits = torch.log(
        torch.tensor([[[0.1, 0.8, 1 / 3]], [[0.1, 0.1, 1 / 3]], [[0.8, 0.1, 1 / 3]]])
    )
    p2 = torch.tensor([[[0.7, 0.95, 0.05]]])
    out, k = combine_last_date(prob, logits[None], p2)  # logits (1, 3, 1, 3)
    # pixel 0: E = 0.4 * 0.2 = 0.08, L = 0.32 -> 0.7 * 0.92 = 0.644; p = 0.724, last date
    # pixel 1: E = 0.9 * 0.9 = 0.81, L = 0.09 -> 0.95 * 0.19 = 0.1805; p = 0.9905, first date
    # pixel 2: the pair is below the series: unchanged, the series' own date
    np.testing.assert_allclose(out[0, 0].numpy(), [0.724, 0.9905, 0.2], atol=1e-5)
    assert k[0, 0].tolist() == [2.0, 0.0, 0.0]


def test_a_long_series_change_must_show_in_the_dates_around_it() -> None:
    """Over 20 dates the network also judges each pixel on the 20 dates around its change alone
    and keeps the lower probability: false changes of a 48-date synthetic series drop, true ones
    stay; up to 20 dates the check does not run (same values bit for bit)."""
    scene = make_scene(64, dates=48, bands=4, seed=42, nuisance="medium", events=2)
    tile = np.where(scene.images == 0, np.nan, scene.images.astype(np.float32))
    ref = (scene.events > 0).any(axis=0)

    def flagged(t: int, check: bool) -> np.ndarray:
        stats = scene_stats(tile[:t].reshape(t, tile.shape[1], -1))
        det = ModelDetector(None, stats, wavelengths=scene.band_wavelengths, around_check=check)
        return det(tile[:t])[0]

    whole, checked = flagged(48, False), flagged(48, True)
    assert (np.nan_to_num(checked) <= np.nan_to_num(whole)).all()
    fp = [int(((np.nan_to_num(p) >= 0.5) & ~ref).sum()) for p in (whole, checked)]
    tp = [int(((np.nan_to_num(p) >= 0.5) & ref).sum()) for p in (whole, checked)]
    assert tp[0] > 150 and fp[0] > 50
    assert fp[1] <= 0.85 * fp[0], fp
    assert tp[1] >= 0.95 * tp[0], tp
    t = 2 * AROUND_DATES
    np.testing.assert_array_equal(flagged(t, True), flagged(t, False))
