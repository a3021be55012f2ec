"""CNN-LSTM network, normalisation and checkpoints (tiny tensors, 1 thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geochange.errors import ModelError
from geochange.model import CNNLSTM, DEFAULT_MODEL_PATH, load_model, normalize, save_model
from geochange.model.cnn_lstm import (
    MASKED_LOGIT,
    local_contrast,
    shift_min_distance,
    window_logsumexp,
)
from geochange.model.losses import cloud_loss, dice_loss, focal_loss, interval_loss
from geochange.robust import scene_stats

torch.set_num_threads(1)


def _net(
    in_bands: int | None = None,
    seed: int = 0,
    dilations=(1,),
    shift: int = 0,
    clouds=False,
    local: int = 0,
) -> CNNLSTM:
    torch.manual_seed(seed)
    return CNNLSTM(
        in_bands=in_bands,
        features=6,
        hidden=6,
        head_hidden=6,
        context_dilations=dilations,
        shift_radius=shift,
        clouds=clouds,
        local_contrast=local,
    ).eval()


@pytest.mark.parametrize("t", [2, 3, 4, 6])
@pytest.mark.parametrize("c", [1, 4, 13])
def test_shapes_band_agnostic(t: int, c: int) -> None:
    net = _net()
    x = torch.randn(2, t, c, 12, 10)
    valid = torch.ones(2, t, 12, 10, dtype=torch.bool)
    with torch.no_grad():
        change, interval = net(x, valid)
    assert change.shape == (2, 12, 10)
    assert interval.shape == (2, t - 1, 12, 10)
    assert torch.isfinite(change).all()


def test_band_specific_mismatch_names_both_counts() -> None:
    net = _net(in_bands=4)
    net(torch.randn(1, 3, 4, 8, 8), torch.ones(1, 3, 8, 8, dtype=torch.bool))
    with pytest.raises(ModelError, match="trained on 4 bands but the input has 3"):
        net(torch.randn(1, 3, 3, 8, 8), torch.ones(1, 3, 8, 8, dtype=torch.bool))


def test_bad_shapes_are_model_errors() -> None:
    net = _net()
    with pytest.raises(ModelError, match="at least 2"):
        net(torch.randn(1, 1, 2, 8, 8), torch.ones(1, 1, 8, 8, dtype=torch.bool))
    with pytest.raises(ModelError, match="valid: got shape"):
        net(torch.randn(1, 3, 2, 8, 8), torch.ones(1, 2, 8, 8, dtype=torch.bool))


def test_band_agnostic_is_invariant_to_band_order() -> None:
    net = _net()
    x = torch.randn(1, 3, 5, 9, 9)
    v = torch.ones(1, 3, 9, 9, dtype=torch.bool)
    with torch.no_grad():
        a = net(x, v)[0]
        b = net(x[:, :, [3, 1, 4, 0, 2]], v)[0]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("t", "dilations", "shift", "local"),
    [
        (2, (1,), 0, 0),
        (3, (1,), 0, 0),
        (5, (1,), 0, 0),
        (3, (1, 2, 4), 0, 0),
        (2, (1,), 2, 0),
        (4, (1, 2), 1, 0),
        (3, (1, 2), 1, 3),
    ],
)
def test_halo_bounds_receptive_field(
    t: int, dilations: tuple[int, ...], shift: int, local: int
) -> None:
    """d output[centre] / d input is zero beyond halo(t) and non-zero at exactly halo(t)."""
    net = _net(seed=t, dilations=dilations, shift=shift, local=local)
    _check_reach(net, t)


def test_context_skip_starts_as_identity_and_keeps_the_halo() -> None:
    torch.manual_seed(0)
    kw = dict(features=6, hidden=6, head_hidden=6, context_dilations=(1, 2))
    plain = CNNLSTM(**kw).eval()
    torch.manual_seed(0)
    skip = CNNLSTM(**kw, context_skip=True).eval()
    assert skip.halo(4) == plain.halo(4) and skip.config()["context_skip"]
    x, v = torch.randn(1, 4, 3, 16, 16), torch.ones(1, 4, 16, 16, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(skip(x, v)[0], plain(x, v)[0])  # zero-initialised path
        skip.skip.weight.fill_(0.5)
        assert not torch.allclose(skip(x, v)[0], plain(x, v)[0])
    _check_reach(skip, 3)


def test_local_contrast_tiles_exactly_and_ignores_uniform_change() -> None:
    """A chunk with the halo gives the whole-scene output; a change spread evenly over a wide
    area has no local contrast inside it, a 2-px change does."""
    net = _net(seed=3, shift=1, local=3)
    t, size = 3, 40
    x = torch.randn(1, t, 2, size, size)
    v = torch.ones(1, t, size, size, dtype=torch.bool)
    halo = net.halo(t)
    with torch.no_grad():
        whole = net(x, v)[0]
        part = net(x[..., : 8 + halo, :], v[..., : 8 + halo, :])[0]
    torch.testing.assert_close(part[:, :8], whole[:, :8])
    d = torch.zeros(1, 1, 30, 30)
    d[..., :, :20] = 1.0  # a field changed as a whole
    d[..., 10, 25:27] = 1.0  # a 2-px object
    lc = local_contrast(d, 3)
    assert lc[0, 0, 10:20, 5:12].abs().max() < 1e-6
    assert lc[0, 0, 10, 25] > 0.9


def _check_reach(net: CNNLSTM, t: int) -> None:
    size = 2 * (net.halo(t) + 3) + 1
    centre = size // 2
    x = torch.randn(1, t, 2, size, size, requires_grad=True)
    valid = torch.ones(1, t, size, size, dtype=torch.bool)
    change, interval = net(x, valid)
    (change[0, centre, centre] + interval[0, :, centre, centre].sum()).backward()
    g = x.grad.abs().sum(dim=(0, 1, 2))
    ys, xs = torch.nonzero(g > 0, as_tuple=True)
    reach = int(torch.maximum((ys - centre).abs(), (xs - centre).abs()).max())
    assert reach == net.halo(t)


def test_cloud_gate_widens_the_halo_by_its_head_and_tiles_exactly() -> None:
    """The gate of a date depends on the cloud head's neighbourhood: the halo counts it, and a
    chunk cut with that halo gives the whole-scene output where the gate masks some pixels."""
    net = _net(seed=3, shift=1, clouds=True)
    assert net.halo(4) == _net(shift=1).halo(4) + 2  # one 3x3 conv, dilation 2
    t, size = 4, 48
    torch.manual_seed(1)
    x = torch.randn(1, t, 3, size, size)
    x[0, 2, :, 10:30, 5:25] += 4.0  # a bright passing blob on date 2
    valid = torch.ones(1, t, size, size, dtype=torch.bool)
    with torch.no_grad():
        net.cloud[-1].bias.fill_(0.0)  # untrained head: gate some pixels, not all
        gated = (
            torch.sigmoid(
                net._cloud_logits([net.encoder(net.stem(x[:, i])) for i in range(t)], valid)
            )
            >= 0.5
        )
        assert 0.05 < gated.float().mean() < 0.95
        whole = net(x, valid)[0]
        h = net.halo(t)
        y0, y1, x0, x1 = 16, 32, 14, 30  # a core chunk, cut with its halo
        part = net(
            x[..., y0 - h : y1 + h, x0 - h : x1 + h], valid[..., y0 - h : y1 + h, x0 - h : x1 + h]
        )[0]
    torch.testing.assert_close(part[0, h:-h, h:-h], whole[0, y0:y1, x0:x1], rtol=1e-4, atol=1e-4)


def test_cloud_gate_acts_as_a_cloud_mask() -> None:
    """A pixel the cloud head flags on a date gives what the same network gives when that date
    is masked there; a head that flags nothing changes nothing."""
    net = _net(seed=2, clouds=True)
    plain = _net(seed=5)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("cloud.")})
    t = 4
    x = torch.randn(1, t, 3, 12, 12)
    valid = torch.ones(1, t, 12, 12, dtype=torch.bool)
    with torch.no_grad():
        net.cloud[-1].bias.fill_(-50.0)  # flags nothing
        for a, b in zip(net(x, valid), plain(x, valid)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        flags = torch.zeros(1, t, 12, 12, dtype=torch.bool)
        flags[0, 2, :6] = True
        flags[0, 3, 4:] = True
        net._cloud_logits = lambda feats, v: torch.where(flags, 50.0, -50.0)  # noqa: ARG005
        change, interval, logits = net(x, valid, return_clouds=True)
        ref_change, ref_interval = plain(x, valid & ~flags)
    assert logits.shape == (1, t, 12, 12)
    torch.testing.assert_close(change, ref_change, rtol=0, atol=0)
    torch.testing.assert_close(interval, ref_interval, rtol=0, atol=0)
    assert (interval[0, 1, :6] == MASKED_LOGIT).all()


def test_halo_grows_with_dates() -> None:
    net = _net()
    halos = [net.halo(t) for t in (2, 3, 8, 24)]
    assert halos == sorted(halos) and halos[0] < halos[1] < halos[2] < halos[3]
    assert net.halo(24) - net.halo(8) == 16  # one pixel per extra date (3x3 recurrent kernel)


@pytest.mark.parametrize("t", [17, 40])
def test_long_series_inference_in_segments_equals_the_whole_pass(t: int) -> None:
    """Inference recomputes all but the last segment of dates in the backward pass; training
    keeps every date. Both give the same numbers, invalid dates included."""
    net, _ = load_model(DEFAULT_MODEL_PATH)
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(2, t, 3, 20, 20, generator=gen)
    valid = torch.rand(2, t, 20, 20, generator=gen) > 0.2
    valid[:, 5] = False  # a whole date invalid
    with torch.no_grad():
        segmented = net(x, valid)
    whole = net(x, valid)  # gradients on: one segment
    for a, b in zip(segmented, whole):
        assert torch.equal(a, b.detach())


def test_window_logsumexp_takes_the_most_telling_run() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 30, 4, 4, generator=gen)
    runs = torch.stack([torch.logsumexp(logits[:, s : s + 9], 1) for s in range(22)])
    torch.testing.assert_close(window_logsumexp(logits, 9), runs.amax(0), rtol=0, atol=0)
    # A short series, or window 0: every interval, exactly as torch.logsumexp.
    assert torch.equal(window_logsumexp(logits[:, :9], 9), torch.logsumexp(logits[:, :9], 1))
    assert torch.equal(window_logsumexp(logits, 0), torch.logsumexp(logits, 1))
    # A stable pixel's even background: the same evidence at 95 intervals as at 9 ...
    flat = torch.full((1, 95, 1, 1), -4.0)
    torch.testing.assert_close(window_logsumexp(flat, 9), window_logsumexp(flat[:, :9], 9))
    # ... while one change stands out whatever the series' length.
    flat[0, 60] = 3.0
    assert float(window_logsumexp(flat, 9)) > 3.0


def test_change_window_bounds_a_long_series_evidence() -> None:
    """Up to ``change_window`` dates the change logit sums every interval; a longer series
    sums those of its best run of that many dates, and the date distribution is unchanged."""
    net, _ = load_model(DEFAULT_MODEL_PATH)
    assert net.change_window == 10 and net.config()["change_window"] == 10
    whole = CNNLSTM(**{**net.config(), "change_window": 0})
    whole.load_state_dict(net.state_dict())
    gen = torch.Generator().manual_seed(3)
    for t, same in ((10, True), (24, False)):
        x = torch.randn(1, t, 4, 12, 12, generator=gen)
        valid = torch.ones(1, t, 12, 12, dtype=torch.bool)
        with torch.no_grad():
            (c1, i1), (c0, i0) = net(x, valid), whole(x, valid)
        assert torch.equal(i1, i0)
        assert torch.equal(c1, c0) is same
        assert (c1 <= c0).all()
    with pytest.raises(ModelError, match="change_window"):
        CNNLSTM(change_window=1)


def test_invalid_date_masks_its_interval_and_keeps_state() -> None:
    net = _net()
    t = 4
    x = torch.randn(1, t, 3, 10, 10)
    valid = torch.ones(1, t, 10, 10, dtype=torch.bool)
    valid[0, 2] = False
    with torch.no_grad():
        change, interval = net(x, valid)
    # Interval 1 = change first seen on date 2, which is invalid everywhere.
    assert (interval[0, 1] == MASKED_LOGIT).all()
    assert (interval[0, 0] > MASKED_LOGIT).all()
    # Input on an invalid date does not matter at all: features carried, state not updated.
    x2 = x.clone()
    x2[0, 2] = torch.randn(3, 10, 10) * 5
    with torch.no_grad():
        change2, interval2 = net(x2, valid)
    torch.testing.assert_close(interval2, interval, rtol=0, atol=0)
    torch.testing.assert_close(change2, change, rtol=0, atol=0)


def test_context_dilations_widen_the_halo_and_are_checked() -> None:
    assert _net(dilations=(1, 2, 4, 8)).halo(8) == _net().halo(8) + 2 + 4 + 8
    with pytest.raises(ModelError, match="context_dilations"):
        CNNLSTM(context_dilations=(0,))


def test_shift_min_distance_forgives_whole_date_shifts_not_new_objects() -> None:
    torch.manual_seed(0)
    a = torch.rand(1, 3, 24, 24)
    b = torch.roll(a, shifts=(2, -1), dims=(2, 3))  # a whole date moved by (2, -1) px
    inner = (..., slice(4, -4), slice(4, -4))
    assert shift_min_distance(b, a, 2)[inner].max() == 0  # within the radius: no change
    assert shift_min_distance(b, a, 1)[inner].min() > 0  # beyond it: differences remain
    # On a plain background a new bright 2x2 object stands out one way only: the other
    # direction (what vanished) is what the second distance of the network is for.
    before = torch.full((1, 3, 24, 24), 0.2)
    after = before.clone()
    after[..., 10:12, 10:12] = 5.0
    appeared = shift_min_distance(after, before, 2)[0, 0]
    assert appeared[10:12, 10:12].min() > 4.0 and appeared.sum() == appeared[10:12, 10:12].sum()
    assert shift_min_distance(before, after, 2).max() == 0


def test_config_roundtrip_and_save_load(tmp_path) -> None:
    net = _net(in_bands=5, dilations=(1, 3), shift=2)
    path = save_model(net, tmp_path / "m.ckpt", {"name": "test-net", "trained_on": "noise"})
    loaded, meta = load_model(path)
    assert loaded.config() == net.config()
    assert meta["name"] == "test-net" and meta["in_bands"] == 5 and meta["trained_on"] == "noise"
    assert "created" in meta and "version" in meta
    assert not loaded.training
    x = torch.randn(1, 3, 5, 8, 8)
    v = torch.ones(1, 3, 8, 8, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, v)[0], net(x, v)[0])
    assert not list(tmp_path.glob(".*tmp*"))


def test_load_model_errors(tmp_path) -> None:
    with pytest.raises(ModelError, match=r"nothere\.ckpt: file not found"):
        load_model(tmp_path / "nothere.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError, match=r"bad\.ckpt: cannot be read as a torch checkpoint"):
        load_model(bad)
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ModelError, match="not a geochange checkpoint"):
        load_model(other)
    truncated = tmp_path / "trunc.ckpt"
    good = save_model(_net(), tmp_path / "good.ckpt")
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ModelError, match="trunc.ckpt"):
        load_model(truncated)


def test_default_model_ships_small() -> None:
    if not DEFAULT_MODEL_PATH.exists():
        pytest.skip("default weights not trained yet")
    assert DEFAULT_MODEL_PATH.stat().st_size < 2_000_000
    net, meta = load_model()
    assert net.in_bands is None
    assert meta["name"]


# -- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_normalize_any_dtype(dtype) -> None:
    rng = np.random.default_rng(0)
    scale = {np.uint8: 60, np.uint16: 3000, np.float32: 0.1}[dtype]
    base = rng.gamma(4.0, scale / 4.0, size=(1, 2, 20, 20))
    gain = np.array([1.0, 1.3, 0.7])[:, None, None, None]  # per-date illumination
    raw = (base * gain).astype(dtype)
    tile = raw.astype(np.float32)
    stats = scene_stats(tile.reshape(3, 2, -1))
    assert stats.shape == (3, 2, 2) and stats.dtype == np.float32
    assert (stats[..., 1] > 0).all()
    x, valid = normalize.apply(tile, stats)
    assert x.dtype == np.float32 and valid.all()
    assert np.abs(np.median(x.reshape(3, 2, -1), axis=2)).max() < 0.05
    assert np.abs(x).max() <= normalize.CLIP
    # Per-date standardisation removes a per-date gain.
    np.testing.assert_allclose(x[0], x[1], atol=0.35)


def test_normalize_in_place_gives_the_same_values() -> None:
    rng = np.random.default_rng(3)
    tile = rng.gamma(4.0, 300.0, size=(5, 3, 16, 16)).astype(np.float32)
    tile[1, 2, 4:6, 4:6] = np.nan
    tile[0, :, 9, 9] = np.nan
    stats = scene_stats(tile.reshape(5, 3, -1))
    x, valid = normalize.apply(tile.copy(), stats)
    work = tile.copy()
    x2, valid2 = normalize.apply(work, stats, in_place=True)
    assert np.shares_memory(x2, work)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(valid2, valid)
    # Not float32: a copy, the input untouched.
    as_int = np.nan_to_num(tile).astype(np.uint16)
    x3, _ = normalize.apply(as_int, stats, in_place=True)
    assert not np.shares_memory(x3, as_int)
    # In torch (what a GPU runs), on the tensor given: the same values bit for bit.
    tile[2, 0, 1, 1] = np.inf
    tile[:, :, 12, 3] = np.nan  # never valid
    x, valid = normalize.apply(tile.copy(), stats)
    data = torch.from_numpy(tile.copy())
    xt, vt = normalize.apply_tensor(data, torch.from_numpy(stats))
    assert xt.data_ptr() == data.data_ptr()
    np.testing.assert_array_equal(xt.numpy(), x)
    np.testing.assert_array_equal(vt.numpy(), valid)


def test_normalize_constant_band_and_empty_date() -> None:
    sample = np.full((2, 2, 50), 7.0, np.float32)
    sample[1] = np.nan
    stats = scene_stats(sample)
    assert np.isfinite(stats).all() and (stats[..., 1] > 0).all()
    np.testing.assert_array_equal(stats[1, :, 0], 0.0)


def test_normalize_fills_nodata_along_time() -> None:
    tile = np.arange(4 * 1 * 2 * 3, dtype=np.float32).reshape(4, 1, 2, 3)
    tile[0, :, 0, 0] = np.nan  # leading gap: backward fill from date 1
    tile[2, :, 1, 1] = np.nan  # inner gap: forward fill from date 1
    tile[:, :, 1, 2] = np.nan  # never valid: 0
    stats = np.zeros((4, 1, 2), np.float32)
    stats[..., 1] = 1.0
    x, valid = normalize.apply(tile, stats, clip=1e9)
    assert np.isfinite(x).all()
    assert x[0, 0, 0, 0] == x[1, 0, 0, 0]
    assert x[2, 0, 1, 1] == x[1, 0, 1, 1]
    assert (x[:, 0, 1, 2] == 0).all()
    assert not valid[0, 0, 0] and not valid[2, 1, 1] and not valid[:, 1, 2].any()
    assert valid.sum() == 4 * 6 - 1 - 1 - 4


def test_normalize_any_band_nodata_invalidates_the_date() -> None:
    tile = np.ones((2, 3, 2, 2), np.float32)
    tile[1, 2, 0, 0] = np.nan
    stats = scene_stats(tile.reshape(2, 3, -1))
    x, valid = normalize.apply(tile, stats)
    assert not valid[1, 0, 0] and valid[1, 1, 1]
    np.testing.assert_array_equal(x[1, :, 0, 0], x[0, :, 0, 0])


def test_normalize_rejects_mismatched_stats() -> None:
    with pytest.raises(ValueError, match="do not fit a tile"):
        normalize.apply(np.zeros((3, 2, 4, 4), np.float32), np.ones((2, 2, 2), np.float32))


# -- losses ----------------------------------------------------------------------------------


def test_losses_ignore_and_interval_target() -> None:
    logit = torch.zeros(1, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 1], [255, 255]]], dtype=torch.uint8)
    f = focal_loss(logit, target)
    d = dice_loss(logit, target)
    assert f > 0 and 0 < d < 1
    (f + d).backward()
    assert (logit.grad[0, 1] == 0).all()  # ignored pixels get no gradient
    intervals = torch.tensor([[[[5.0]], [[-5.0]], [[MASKED_LOGIT]]]])  # (1, 3, 1, 1)
    change = torch.ones(1, 1, 1, dtype=torch.uint8)
    good = interval_loss(intervals, change, torch.tensor([[[1]]]))
    bad = interval_loss(intervals, change, torch.tensor([[[2]]]))
    assert good < 0.01 < bad
    # A labelled date that is masked is dropped, not a 1e4 loss.
    assert interval_loss(intervals, change, torch.tensor([[[3]]])) == 0
    assert interval_loss(intervals, change * 0, torch.tensor([[[1]]])) == 0


def test_focal_weights_and_cloud_loss_honour_ignore_and_validity() -> None:
    logit = torch.zeros(1, 2, 2)
    target = torch.tensor([[[0, 1], [1, 255]]], dtype=torch.uint8)
    weight = torch.tensor([[[1.0, 1.0], [3.0, 100.0]]])
    # Pixel (1, 0) counts three times, the ignored pixel not at all: (1 + 1 + 3) / 3 of a pixel.
    torch.testing.assert_close(
        focal_loss(logit, target, weight=weight), focal_loss(logit, target) * 5 / 3
    )
    logits = torch.tensor([[[[4.0, -4.0]], [[4.0, 4.0]]]])  # (1, t=2, 1, 2)
    clouds = torch.tensor([[[[1, 0]], [[0, 255]]]], dtype=torch.uint8)
    valid = torch.tensor([[[[True, True]], [[False, True]]]])
    # Only date 0 is judged: (1, 1) labelled and valid, both right: a small loss.
    assert cloud_loss(logits, clouds, valid) < 0.02
    assert cloud_loss(logits, clouds, torch.ones_like(valid)) > 1.0  # date 1, pixel 0 wrong
    assert cloud_loss(logits, torch.full_like(clouds, 255), valid) == 0


def test_two_dates_are_never_gated() -> None:
    """Masking one of two dates leaves nothing to compare: a 2-date stack is judged whole."""
    net = _net(seed=4, clouds=True)
    plain = _net(seed=5)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("cloud.")})
    x = torch.randn(1, 2, 3, 10, 10)
    valid = torch.ones(1, 2, 10, 10, dtype=torch.bool)
    with torch.no_grad():
        net.cloud[-1].bias.fill_(50.0)  # flags everything
        for a, b in zip(net(x, valid), plain(x, valid)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        x3, v3 = torch.randn(1, 3, 3, 10, 10), torch.ones(1, 3, 10, 10, dtype=torch.bool)
        assert (net(x3, v3)[1] == MASKED_LOGIT).all()  # three dates: all gated
