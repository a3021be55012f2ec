"""Self-supervised adaptation: pasted changes, ignore masks, the loop, CLI, provenance."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import run_cli, write_geotiff, write_stack

from geochange.cli import cli
from geochange.errors import InputError, OutputExistsError
from geochange.io.stack import open_stack
from geochange.model import load_model
from geochange.model.adapt import adapt, adapt_loss, adapt_network, interpolate
from geochange.model.losses import IGNORE
from geochange.model.pseudo import (
    FOOTPRINTS,
    ScenePool,
    Setup,
    footprint,
    ignore_threshold,
    make_batch,
    paste_changes,
    red_nir_bands,
)
from geochange.pipeline import detect

torch.set_num_threads(1)

DATES = ["2022-03-01", "2022-05-17", "2022-08-02"]


def _scene(t: int = 3, c: int = 3, h: int = 40, w: int = 44, seed: int = 0) -> np.ndarray:
    """Random land, a little noise per date, and a bright real change on date 2."""
    rng = np.random.default_rng(seed)
    base = rng.normal(1000, 80, size=(c, h, w)).astype(np.float32)
    data = np.stack([base + rng.normal(0, 10, size=base.shape) for _ in range(t)])
    data[2:, :, 5:15, 8:20] += 900
    return np.clip(data, 1, 60000).astype(np.uint16)


@pytest.fixture()
def stack_dir(tmp_path):
    d = tmp_path / "stack"
    write_stack(d, _scene(), DATES)
    return d


# -- pasted changes ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FOOTPRINTS)
def test_footprints_are_inside_the_chip_and_not_empty(kind):
    rng = np.random.default_rng(1)
    sizes = [int(footprint(rng, (48, 40), kind).sum()) for _ in range(40)]
    assert min(sizes) >= 1
    assert max(sizes) < 48 * 40 // 2


def test_pasted_changes_are_exactly_where_the_labels_say():
    rng = np.random.default_rng(3)
    t, c, h, w = 5, 4, 32, 32
    raw = rng.normal(0, 1, size=(t, c, h, w)).astype(np.float32)
    raw[2, :, 0:10, 0:10] = np.nan  # a nodata hole on date 2
    source = rng.normal(5, 1, size=(t, c, h, w)).astype(np.float32)
    for seed in range(20):
        out, change, date_index = paste_changes(raw, source, np.random.default_rng(seed), n=3)
        assert (change == 1).any()
        same = (out == raw) | (np.isnan(out) & np.isnan(raw))  # (t, c, h, w)
        # Outside the labelled pieces every date is untouched.
        assert same[:, :, change == 0].all()
        for j in range(1, t):
            at = (change == 1) & (date_index == j)
            # Before the labelled date, untouched; on it, the piece is visibly there.
            assert same[:j][:, :, at].all()
            assert not same[j][:, at].any()
        # Pixels of a piece are labelled with a date (no unseen piece here: date 4 is valid).
        assert set(np.unique(date_index[change == 1])) <= set(range(1, t))


def test_no_greening_piece_is_pasted_when_red_and_nir_are_known():
    assert red_nir_bands((490.0, 560.0, 665.0, 842.0)) == (2, 3)
    assert red_nir_bands((665.0, 560.0, 490.0)) is None  # RGB: no NIR
    assert red_nir_bands((None, None, None, None)) is None
    t, c, h, w = 3, 4, 32, 32
    soil = np.empty((t, c, h, w), np.float32)
    soil[:] = np.array([800, 1200, 1700, 2400], np.float32)[None, :, None, None]  # NDVI 0.17
    crop = np.empty_like(soil)
    crop[:] = np.array([400, 900, 400, 4500], np.float32)[None, :, None, None]  # NDVI 0.84
    pasted = {}
    for name, raw, src in (("greening", soil, crop), ("clearing", crop, soil)):
        n = 0
        for seed in range(10):
            rng = np.random.default_rng(seed)
            n += int((paste_changes(raw, src, rng, n=2, red_nir=(2, 3))[1] == 1).any())
        pasted[name] = n
    assert pasted == {"greening": 0, "clearing": 10}
    # Without the band roles the same greening pieces are pasted.
    assert (paste_changes(soil, crop, np.random.default_rng(0), n=2)[1] == 1).any()


def test_pasted_change_on_a_nodata_date_is_dated_when_first_seen():
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 1, size=(3, 2, 16, 16)).astype(np.float32)
    raw[1] = np.nan  # date 1 is nodata everywhere
    source = raw.copy() + 10
    source[1] = 0.0
    _, change, date_index = paste_changes(raw, source, rng, n=2, dates=[1])
    assert (change == 1).any()
    assert (date_index[change == 1] == 2).all()  # first seen on date 2, not on nodata date 1


def test_invisible_pieces_are_not_pasted():
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 1, size=(2, 3, 24, 24)).astype(np.float32)
    same = raw + 0.01  # a "piece" that looks like what it replaces
    out, change, _ = paste_changes(raw, same, rng, n=3, min_contrast=0.5)
    assert not change.any()
    np.testing.assert_array_equal(out, raw)
    out, change, _ = paste_changes(raw, raw + 3.0, rng, n=3, min_contrast=0.5)
    assert (change == 1).any()


def test_paste_needs_two_dates():
    with pytest.raises(InputError, match="at least 2"):
        paste_changes(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)), np.random.default_rng(0))


# -- ignore masks --------------------------------------------------------------------------------


def test_ignore_threshold_takes_the_whole_changed_mode_of_a_bimodal_scene():
    rng = np.random.default_rng(0)
    little = np.abs(rng.normal(0, 1, 10_000))
    # 65 % of the pixels changed: the top-8 % rule alone would call most of them no change.
    lots = np.concatenate([np.abs(rng.normal(0, 1, 3500)), rng.normal(8, 1, 6500)])
    thr_lots = ignore_threshold(lots, top=0.08)
    assert (lots > thr_lots).mean() == pytest.approx(0.65, abs=0.02)
    thr_little = ignore_threshold(little, top=0.08)
    assert (little > thr_little).mean() >= 0.08 - 1e-3


def test_batch_ignores_the_real_change_and_labels_pasted_ones(stack_dir):
    stack = open_stack(stack_dir)
    rng = np.random.default_rng(0)
    pool = ScenePool(stack, rng, window=64, n_windows=2)
    assert pool.whole
    stats = np.zeros((3, 3, 2), np.float32)
    stats[..., 0], stats[..., 1] = 1000.0, 80.0
    setup = Setup(stats, threshold=1.0, chip=(40, 40), max_dates=8)
    b = make_batch(pool, setup, rng, batch_size=1, paste_prob=0.0, ignore_dilate=0)
    change = b["change"][0]
    # The chip holds the whole real change: it is the only ignored area.
    assert (change == IGNORE).sum() == 10 * 12
    assert set(np.unique(change)) == {0, IGNORE}
    # The same pixels are "unsure" (keep_rejected may teach them as no change), no others.
    assert np.array_equal(b["unsure"][0], change == IGNORE)
    b = make_batch(
        pool, setup, np.random.default_rng(5), batch_size=4, paste_prob=1.0, ignore_dilate=0
    )
    assert (b["change"] == 1).any()
    assert set(np.unique(b["date_index"][b["change"] == 1])) <= {1, 2, IGNORE}
    # Pasted pieces are never "unsure"; unsure pixels are unknown until the start model rules.
    assert not (b["unsure"] & (b["change"] == 1)).any()
    assert (b["change"][b["unsure"]] == IGNORE).all() and b["unsure"].any()


def test_a_large_scene_is_sampled_through_windows(stack_dir, tiny_model, monkeypatch):
    import geochange.model.pseudo as ps

    monkeypatch.setattr(ps, "WHOLE_SCENE_BYTES", 3 * 3 * 16 * 16 * 4 * 5)
    stack = open_stack(stack_dir)
    pool = ScenePool(stack, np.random.default_rng(0), window=16, n_windows=8)
    assert not pool.whole
    assert len(pool.arrays) == 5  # capped by the memory budget
    assert all(a.shape == (3, 3, 16, 16) for a in pool.arrays)
    pool.refresh(np.random.default_rng(1))
    res = adapt_network(stack, model=tiny_model, max_steps=3, chip=16, device="cpu")
    assert res.info["steps"] == 3


def test_ignored_pixels_do_not_reach_the_loss():
    torch.manual_seed(0)
    b, t, h, w = 2, 4, 8, 8
    change = torch.full((b, h, w), IGNORE, dtype=torch.uint8)
    change[0, 2:4, 2:4] = 1
    change[1, 5, 5] = 0
    date_index = torch.where(change == 1, 2, 0).long()
    keep = change != IGNORE
    logit = torch.randn(b, h, w, requires_grad=True)
    intervals = torch.randn(b, t - 1, h, w, requires_grad=True)
    loss = adapt_loss(logit, intervals, change, date_index)
    loss.backward()
    assert logit.grad[~keep].abs().max() == 0
    assert logit.grad[keep].abs().min() > 0
    assert intervals.grad.permute(0, 2, 3, 1)[~keep].abs().max() == 0
    # Changing only ignored logits leaves the loss as it is.
    other = logit.detach().clone()
    other[~keep] = torch.randn(int((~keep).sum())) * 10
    again = adapt_loss(other, intervals.detach(), change, date_index)
    assert float(again) == pytest.approx(float(loss.detach()))


# -- the loop, checkpoint, CLI and provenance ----------------------------------------------------


def test_adapt_network_runs_steps_and_changes_weights(stack_dir, tiny_model):
    stack = open_stack(stack_dir)
    res = adapt_network(
        stack, model=tiny_model, minutes=1.0, max_steps=6, chip=32, device="cpu", seed=1
    )
    assert res.info["steps"] == 6
    base, adapted = res.base.state_dict(), res.adapted.state_dict()
    assert any(not torch.equal(base[k], adapted[k]) for k in base)
    half = interpolate(res.base, res.adapted, 0.5).state_dict()
    k = "encoder.0.weight"
    torch.testing.assert_close(half[k], 0.5 * (base[k] + adapted[k]))
    # Seeded: the same run gives the same weights.
    again = adapt_network(
        stack, model=tiny_model, minutes=1.0, max_steps=6, chip=32, device="cpu", seed=1
    )
    for key, v in again.adapted.state_dict().items():
        torch.testing.assert_close(v, adapted[key])


def test_keep_rejected_is_off_on_a_pair(stack_dir, tiny_model, tmp_path):
    """On 2 dates, the high-magnitude pixels the start model rejects are real changes it
    misses as often as clouds: they are not taught as no change there."""
    three = adapt_network(
        open_stack(stack_dir), model=tiny_model, minutes=1.0, max_steps=1, chip=32, device="cpu"
    )
    assert three.info["keep_rejected"] == 0.05 and three.info["keep_confident"] == 0.5
    paths = sorted(stack_dir.glob("*.tif"))
    pair = adapt_network(
        open_stack(paths[:2]), model=tiny_model, minutes=1.0, max_steps=1, chip=32, device="cpu"
    )
    assert pair.info["keep_rejected"] is None and pair.info["keep_confident"] == 0.5


@pytest.mark.gpu
def test_adapt_on_cuda_changes_weights(stack_dir, tiny_model):
    stack = open_stack(stack_dir)
    res = adapt_network(stack, model=tiny_model, max_steps=6, chip=32, device="cuda", seed=1)
    assert res.info["steps"] == 6 and res.info["device"] == "cuda"
    base, adapted = res.base.state_dict(), res.adapted.state_dict()
    assert all(v.device.type == "cpu" for v in adapted.values())
    assert any(not torch.equal(base[k], adapted[k]) for k in base)


def test_adapt_respects_the_time_budget(stack_dir, tiny_model):
    stack = open_stack(stack_dir)
    res = adapt_network(stack, model=tiny_model, minutes=0.05, chip=32, device="cpu")
    assert res.info["steps"] >= 1
    assert res.info["seconds"] <= 3.0 + 0.5


def test_cli_adapt_writes_a_checkpoint_that_detect_loads(stack_dir, tiny_model, tmp_path):
    ckpt = tmp_path / "scene.ckpt"
    runner = CliRunner()
    mask = tmp_path / "cloud_2022-05-17.tif"  # a cloud mask for the second date only
    write_geotiff(mask, np.pad(np.ones((5, 5), np.uint8), ((0, 35), (0, 39))))
    args = ["adapt", str(stack_dir), "-o", str(ckpt), "--model", str(tiny_model),
            "--masks", str(mask)]  # fmt: skip
    res = runner.invoke(cli, [*args, "--minutes", "0.05", "--seed", "3", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output
    net, meta = load_model(ckpt)
    assert meta["adapted"] is True
    assert meta["seed"] == 3 and meta["minutes"] == 0.05 and meta["steps"] >= 1
    assert meta["base_model"] == str(tiny_model)
    assert meta["base_model_name"] == "tiny-test"
    assert meta["adapted_on"]["dates"] == DATES
    assert len(meta["adapted_on"]["inputs"]) == 3
    assert meta["adapted_on"]["masks"] == ["", f"{mask}:1", ""]
    assert net.config() == load_model(tiny_model)[0].config()

    out = tmp_path / "changes.gpkg"
    res = runner.invoke(
        cli, ["detect", str(stack_dir), "-o", str(out), "--model", str(ckpt), "--no-quicklook"]
    )
    assert res.exit_code == 0, res.output
    runs = gpd.read_file(out, layer="runs")
    assert bool(runs.loc[0, "adapted"]) is True
    assert runs.loc[0, "model_name"] == "tiny-test-adapted"

    with pytest.raises(OutputExistsError, match="--overwrite"):
        adapt(stack_dir, ckpt, model=tiny_model, minutes=0.05)
    res = runner.invoke(cli, [*args, "--minutes", "0.05"])
    assert res.exit_code != 0


def test_detect_adapt_in_one_run_says_adapted(stack_dir, tiny_model, tmp_path):
    out = tmp_path / "a.gpkg"
    args = ["detect", str(stack_dir), "-o", str(out), "--model", str(tiny_model)]
    res = CliRunner().invoke(cli, [*args, "--adapt", "--adapt-minutes", "0.05", "--no-quicklook"])
    assert res.exit_code == 0, res.output
    runs = gpd.read_file(out, layer="runs")
    assert bool(runs.loc[0, "adapted"]) is True
    plain = detect(stack_dir, tmp_path / "p.gpkg", model=tiny_model, quicklook=False)
    assert plain.run["adapted"] is False
    with pytest.raises(InputError, match="adapt: given but method is 'cva'"):
        detect(stack_dir, method="cva", adapt=True)
    b = tmp_path / "b.gpkg"
    code, _, err = run_cli("detect", stack_dir, "-o", b, "--method", "cva", "--adapt")
    assert code == 2 and err.startswith("Error: --adapt: given but method is 'cva'"), err
    assert not b.exists()


def test_adapt_refuses_a_bad_budget(stack_dir, tiny_model, tmp_path):
    with pytest.raises(InputError, match="--minutes"):
        adapt(stack_dir, tmp_path / "x.ckpt", model=tiny_model, minutes=0)
