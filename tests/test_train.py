"""Training: chip sampling, labels from rasters and GeoPackages, Lightning steps, `geochange train`."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from affine import Affine
from click.testing import CliRunner
from helpers import DEFAULT_TRANSFORM, write_geotiff, write_stack
from shapely.geometry import box
from torch.utils.data import DataLoader

from geochange.cli import cli
from geochange.errors import InputError
from geochange.model import load_model
from geochange.model.chips import _subset_labels, sample_batch
from geochange.model.data import ChangeDataModule, ChipBatches
from geochange.model.scenes import load_labelled_stack, scene_from_arrays
from geochange.model.task import ChangeTask, OneCycleByProgress

torch.set_num_threads(1)

# pytorch-lightning 2.6 calls a torch._pytree API that torch 2.13 deprecates (their bug, harmless).
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

DATES = ["2023-01-10", "2023-03-05", "2023-05-20", "2023-08-01"]


def _toy(seed: int, t: int = 4, c: int = 3, size: int = 40):
    """A scene where a bright square appears on date j; returns raw, change, date_index."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(1000, 80, size=(1, c, size, size)).repeat(t, axis=0)
    raw += rng.normal(0, 20, size=raw.shape)
    change = np.zeros((size, size), np.uint8)
    date_index = np.zeros((size, size), np.uint8)
    j = int(rng.integers(1, t))
    y, x = rng.integers(4, size - 14, size=2)
    raw[j:, :, y : y + 10, x : x + 10] += 600
    change[y : y + 10, x : x + 10] = 1
    date_index[y : y + 10, x : x + 10] = j
    return raw.astype(np.uint16), change, date_index


def _toy_scene(seed: int):
    raw, change, date_index = _toy(seed)
    return scene_from_arrays(raw, change, date_index, nodata=0, name=f"toy {seed}")


def test_sample_batch_shapes_balance_and_determinism() -> None:
    scene = _toy_scene(0)
    b1 = sample_batch(scene, np.random.default_rng(1), batch_size=6, chip=24, change_fraction=1.0)
    b2 = sample_batch(scene, np.random.default_rng(1), batch_size=6, chip=24, change_fraction=1.0)
    assert b1["x"].shape == (6, 4, 3, 24, 24) and b1["x"].dtype == torch.float32
    assert b1["valid"].shape == (6, 4, 24, 24) and b1["valid"].dtype == torch.bool
    assert b1["change"].shape == (6, 24, 24) and b1["change"].dtype == torch.uint8
    assert b1["date_index"].dtype == torch.int64
    for k in b1:
        torch.testing.assert_close(b1[k], b2[k], rtol=0, atol=0, equal_nan=True)
    assert b1["wavelengths"].shape == (6, 3) and b1["wavelengths"].isnan().all()  # not given
    # Every chip centred near change holds change pixels (class-balanced sampling).
    assert all((b1["change"][i] == 1).any() for i in range(6))


def test_sample_batch_subsets_and_cloud_masking() -> None:
    raw, change, date_index = _toy(3, t=6, c=5)
    clouds = np.zeros((6, 40, 40), bool)
    clouds[2, :20] = True
    scene = scene_from_arrays(raw, change, date_index, clouds=clouds, nodata=0)
    rng = np.random.default_rng(0)
    shapes = set()
    for _ in range(12):
        b = sample_batch(
            scene, rng, batch_size=2, chip=16, subset_dates=True, subset_bands=True, mask_clouds=1.0
        )
        shapes.add(tuple(b["x"].shape[1:3]))
        assert 2 <= b["x"].shape[1] <= 6 and 1 <= b["x"].shape[2] <= 5
        assert torch.isfinite(b["x"]).all()
        dates = b["date_index"][b["change"] == 1].numpy()
        assert int(dates.max(initial=0)) < b["x"].shape[1]
    assert len(shapes) > 3
    full = sample_batch(
        scene, np.random.default_rng(0), batch_size=4, chip=40, mask_clouds=1.0, augment=False
    )
    assert not full["valid"][:, 2, :20].any() and full["valid"][:, 2, 20:].all()
    # Cloud labels for a cloud head follow the chips (rotations included); none known: 255.
    for aug in (False, True):
        b = sample_batch(scene, np.random.default_rng(4), batch_size=4, chip=40, augment=aug)
        assert b["clouds"].dtype == torch.uint8 and b["clouds"].shape == (4, 6, 40, 40)
        cloudy = b["clouds"][:, 2].bool()
        assert int(cloudy.sum()) == 4 * 20 * 40 and not b["clouds"][:, [0, 1, 3, 4, 5]].any()
    bare = sample_batch(_toy_scene(0), np.random.default_rng(0), batch_size=2, chip=16)
    assert (bare["clouds"] == 255).all()


def test_end_on_change_ends_every_batch_on_a_change_date() -> None:
    """With end_on_change at 1, each batch's last kept date is a date where one of its changes
    is first seen, with earlier looks before it; the later change is not yet a change then."""
    raw, change, date_index = _toy(0, t=8, size=48)
    raw[:], change[:], date_index[:] = raw[0], 0, 0  # no change from _toy: two planted below
    for j, (y, x) in ((2, (4, 4)), (6, (30, 30))):
        raw[j:, :, y : y + 10, x : x + 10] += 600
        change[y : y + 10, x : x + 10], date_index[y : y + 10, x : x + 10] = 1, j
    scene = scene_from_arrays(raw, change, date_index, nodata=0)
    rng = np.random.default_rng(0)
    lengths, ends = set(), set()
    for _ in range(30):
        b = sample_batch(scene, rng, batch_size=3, chip=16, change_fraction=1.0,
                         subset_dates=True, object_balanced=True, end_on_change=1.0)  # fmt: skip
        t = b["x"].shape[1]
        lengths.add(t)
        for i in range(3):  # every change chip holds a change first seen on the last date
            assert (b["date_index"][i][b["change"][i] == 1] == t - 1).any()
        # The object seen last is brighter on the last date than on the one before it.
        last = b["change"] == 1
        step = (b["x"][:, -1] - b["x"][:, -2]).mean(dim=1)
        assert float(step[last].mean()) > 1.0
        ends.add(int(b["date_index"][last].max()) == t - 1)
    assert ends == {True} and len(lengths) >= 4 and max(lengths) >= 6
    # Without the option the same sampling often ends on a date with no new change.
    rng = np.random.default_rng(0)
    plain = [sample_batch(scene, rng, batch_size=3, chip=16, change_fraction=1.0,
                          subset_dates=True, object_balanced=True) for _ in range(30)]  # fmt: skip
    assert any(not (b["date_index"] == b["x"].shape[1] - 1).any() for b in plain)


def test_micro_weight_marks_small_objects_only() -> None:
    change = np.zeros((64, 64), np.uint8)
    change[5:25, 5:25] = 1  # 400 px
    change[40:42, 50:53] = 1  # 6 px
    change[60, 10] = 1  # 1 px
    scene = scene_from_arrays(
        np.full((2, 1, 64, 64), 500, np.uint16), change, change.copy(), nodata=0
    )
    b = sample_batch(
        scene, np.random.default_rng(0), batch_size=1, chip=64, augment=False, micro_weight=4.0
    )
    w = b["weight"][0].numpy()
    assert (w[40:42, 50:53] == 4).all() and w[60, 10] == 4
    assert (w[5:25, 5:25] == 1).all() and w.sum() == 64 * 64 + 3 * 7
    plain = sample_batch(scene, np.random.default_rng(0), batch_size=1, chip=64, augment=False)
    assert (plain["weight"] == 1).all()


def test_band_subsets_keep_their_wavelengths_and_some_batches_withhold_them() -> None:
    raw, change, date_index = _toy(3, t=3, c=5)
    wl = (490.0, 560.0, 665.0, 842.0, 1610.0)
    scene = scene_from_arrays(raw, change, date_index, nodata=0, wavelengths=wl)
    rng = np.random.default_rng(0)
    withheld = 0
    for _ in range(40):
        b = sample_batch(
            scene, rng, batch_size=2, chip=16, subset_bands=True, unknown_wavelengths=0.3
        )
        got = b["wavelengths"].numpy()
        assert got.shape == (2, b["x"].shape[2]) and (got[0] == got[1]).all() | np.isnan(got).all()
        if np.isnan(got).all():
            withheld += 1
            continue
        # The wavelengths of the kept bands, in band order (subsets keep the order).
        assert set(got[0]) <= set(wl) and (np.diff(got[0]) > 0).all()
    assert 4 <= withheld <= 24  # about 30 % of 40 batches


def test_object_balanced_sampling_sees_small_objects() -> None:
    # A 1-pixel object next to a 3600-pixel one gets half the change chips when balanced.
    change = np.zeros((200, 200), np.uint8)
    change[20:80, 20:80] = 1
    change[170, 170] = 1
    big = scene_from_arrays(
        np.full((2, 1, 200, 200), 500, np.uint16), change, change.copy(), nodata=0
    )
    for balanced, lo, hi in ((True, 0.3, 0.7), (False, 0.0, 0.02)):
        b = sample_batch(big, np.random.default_rng(1), batch_size=200, chip=16,
                         change_fraction=1.0, augment=False, object_balanced=balanced)  # fmt: skip
        small = float(b["change"].flatten(1).sum(1).eq(1).float().mean())
        assert lo <= small <= hi, (balanced, small)


def test_hard_negatives_find_the_coherent_look_alike_not_the_noise_or_the_change() -> None:
    # Noise everywhere, a 30x30 "field" that greens up on the last date (unchanged: label 0) and a
    # labelled change that is brighter still: the hard pool lies in the field, never on the change.
    rng = np.random.default_rng(0)
    raw = (1000 + 150 * rng.standard_normal((3, 2, 120, 120))).astype(np.float32)
    raw[2, :, 10:40, 10:40] += 600
    change = np.zeros((120, 120), np.uint8)
    change[80:100, 80:100] = 1
    raw[2, :, 80:100, 80:100] += 1500
    scene = scene_from_arrays(raw, change, change * 2)
    rows, cols = np.divmod(scene.hard, 120)
    assert 0 < scene.hard.size <= round(0.03 * (change == 0).sum())
    assert np.all((rows >= 5) & (rows < 45) & (cols >= 5) & (cols < 45))  # box-average blur
    # Drawing only hard negatives besides the change chips: every chip overlaps the field.
    b = sample_batch(scene, np.random.default_rng(1), batch_size=40, chip=16, change_fraction=0.0,
                     hard_fraction=1.0, augment=False)  # fmt: skip
    assert b["x"].shape == (40, 3, 2, 16, 16)
    assert not b["change"].any()
    rise = (b["x"][:, 2] - b["x"][:, 1]).mean(dim=(1, 2, 3))
    assert bool((rise > 0.3).all()), rise
    with pytest.raises(InputError, match="hard_fraction"):
        ChangeDataModule(sources=[], change_fraction=0.5, hard_fraction=0.6)


def test_subset_labels_remaps_dates() -> None:
    change = np.array([[1, 1, 1, 1, 0, 1]], np.uint8)
    date_index = np.array([[1, 2, 3, 4, 0, 255]], np.uint8)
    # Keep dates 0, 2, 4: change at j=1 or 2 is first seen on kept date 2 (new index 1), at
    # 3 or 4 on date 4 (new index 2); unknown dates stay unknown.
    c, j = _subset_labels(change, date_index, np.array([0, 2, 4]))
    np.testing.assert_array_equal(c, [[1, 1, 1, 1, 0, 1]])
    np.testing.assert_array_equal(j, [[1, 1, 2, 2, 0, 255]])
    # Keep dates 2, 3: the change at j=1 or 2 happened before date 2: not a change any more.
    c, j = _subset_labels(change, date_index, np.array([2, 3]))
    np.testing.assert_array_equal(c, [[0, 0, 1, 0, 0, 1]])
    np.testing.assert_array_equal(j, [[0, 0, 1, 0, 0, 255]])


def test_chip_batches_cycle_scenes_reproducibly() -> None:
    ds = ChipBatches(
        list(range(3)), _toy_scene, length=8, seed=5, batches_per_scene=2, batch_size=2, chip=16
    )
    keys = [ds.scene_key(i) for i in range(8)]
    assert keys[0] == keys[1] and sorted(set(keys[:6])) == [0, 1, 2]
    again = ChipBatches(
        list(range(3)), _toy_scene, length=8, seed=5, batches_per_scene=2, batch_size=2, chip=16
    )
    torch.testing.assert_close(ds[5]["x"], again[5]["x"], rtol=0, atol=0)
    with pytest.raises(IndexError):
        ds[8]


def test_synthetic_source_batches() -> None:
    dm = ChangeDataModule(
        [{"synthetic": {"seeds": [0, 2], "size": 48, "dates": [2, 4], "bands": [1, 4]}}],
        batch_size=2,
        chip=24,
        train_batches=2,
    )
    batch = dm.train_dataset()[0]
    t, c = batch["x"].shape[1:3]
    assert 2 <= t <= 4 and 1 <= c <= 4
    assert set(torch.unique(batch["change"]).tolist()) <= {0, 1, 255}


def test_training_steps_reduce_loss() -> None:
    """Real optimizer steps through a Lightning Trainer lower the loss on a tiny dataset."""
    pl.seed_everything(0)
    scenes = {i: _toy_scene(i) for i in range(4)}
    ds = ChipBatches(
        list(scenes),
        scenes.__getitem__,
        length=30,
        seed=0,
        batches_per_scene=1,
        batch_size=4,
        chip=24,
        change_fraction=0.5,
    )
    fixed = [ds[i] for i in range(4)]
    task = ChangeTask(features=8, hidden=8, head_hidden=8, lr=1e-2, scheduler="none")

    def loss() -> float:
        task.eval()
        with torch.no_grad():
            return float(np.mean([task.losses(b)[0].item() for b in fixed]))

    before = loss()
    task.train()
    trainer = pl.Trainer(
        max_steps=30,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, DataLoader(ds, batch_size=None), DataLoader(fixed, batch_size=None))
    assert trainer.global_step == 30
    after = loss()
    assert after < 0.8 * before, (before, after)


def test_cloud_head_learns_the_cloud_masks() -> None:
    """Training steps with a cloud head: its loss falls, and it then flags the clouds (bright,
    on one date) and leaves the clear dates alone."""
    pl.seed_everything(0)
    scenes = {}
    for i in range(3):
        raw, change, date_index = _toy(10 + i, t=4, c=3)
        clouds = np.zeros((4, 40, 40), bool)
        clouds[1 + i % 3, 8 + 4 * i : 24 + 4 * i, 10:30] = True
        raw = raw.astype(np.float32)
        raw[clouds[:, None].repeat(3, axis=1)] = 3000.0  # bright, flat: a thick cloud
        scenes[i] = scene_from_arrays(
            raw.astype(np.uint16), change, date_index, clouds=clouds, nodata=0
        )
    ds = ChipBatches(list(scenes), scenes.__getitem__, length=80, seed=0, batches_per_scene=1,
                     batch_size=4, chip=24, change_fraction=0.5)  # fmt: skip
    fixed = [ds[i] for i in range(3)]
    task = ChangeTask(features=8, hidden=8, head_hidden=8, lr=3e-3, scheduler="none", clouds=True)

    def cloud_parts() -> tuple[float, float]:
        task.eval()
        with torch.no_grad():
            parts = [task.losses(b)[1]["cloud"].item() for b in fixed]
            flags = [(task.net(b["x"], b["valid"], return_clouds=True)[2] > 0) for b in fixed]
            truth = [b["clouds"].bool() for b in fixed]
            found = sum(int((f & t).sum()) for f, t in zip(flags, truth)) / sum(
                int(t.sum()) for t in truth
            )
            false = sum(int((f & ~t).sum()) for f, t in zip(flags, truth)) / sum(
                int((~t).sum()) for t in truth
            )
        return float(np.mean(parts)), found, false

    before, found, _ = cloud_parts()
    assert found == 0  # an untrained head masks nothing
    task.train()
    trainer = pl.Trainer(max_steps=80, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(task, DataLoader(ds, batch_size=None), DataLoader(fixed, batch_size=None))
    after, found, false = cloud_parts()
    assert after < 0.6 * before, (before, after)
    # Most cloud pixels flagged (the toy's loss still swings at this learning rate), few others.
    assert found > 0.6 and false < 0.02, (found, false)


@pytest.mark.gpu
def test_training_steps_on_cuda_and_the_checkpoint_loads_on_cpu(tmp_path) -> None:
    """`geochange train` with accelerator auto picks the GPU; its model then runs on CPU."""
    config = _tiny_config(
        tmp_path, [{"synthetic": {"seeds": [0, 2], "size": 32, "dates": [2, 3], "bands": [1, 3]}}]
    )
    out = tmp_path / "gpu.ckpt"
    res = CliRunner().invoke(cli, ["train", config, "-o", str(out), "--set", "trainer.max_steps=3"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "gpu.ckpt.report.json").read_text())
    assert report["steps"] == 3 and report["accelerator"] == "CUDAAccelerator"
    net, _ = load_model(out)
    assert all(p.device.type == "cpu" for p in net.parameters())
    x, valid = torch.rand(1, 3, 2, 24, 24), torch.ones(1, 3, 24, 24, dtype=torch.bool)
    with torch.no_grad():
        change, interval = net(x, valid)
    assert torch.isfinite(change).all() and interval.shape == (1, 2, 24, 24)


def test_one_cycle_by_progress_anneals_by_time() -> None:
    sched = OneCycleByProgress(total_steps=100, time_budget_s=None)
    assert sched(0) < sched(10) == pytest.approx(1.0)
    assert sched(100) == pytest.approx(0.02)
    timed = OneCycleByProgress(total_steps=10**9, time_budget_s=1e-9)
    timed(0)
    assert timed(1) == pytest.approx(0.02)  # time budget spent: fully annealed


# -- user stacks -----------------------------------------------------------------------------


def _user_stack(tmp_path):
    raw, change, date_index = _toy(7, t=4, c=3, size=32)
    paths = write_stack(tmp_path / "stack", raw, DATES, nodata=0)
    return paths, change, date_index


def test_labels_from_raster_and_gpkg(tmp_path) -> None:
    paths, change, date_index = _user_stack(tmp_path)
    label = write_geotiff(tmp_path / "label.tif", np.stack([change, date_index]))
    scene = load_labelled_stack(tmp_path / "stack", label)
    assert scene.raw.shape == (4, 3, 32, 32) and scene.stats.shape == (4, 3, 2)
    np.testing.assert_array_equal(scene.change, change)
    np.testing.assert_array_equal(scene.date_index, date_index)

    # The same change as a polygon with its change date, in another CRS.
    ys, xs = np.nonzero(change)
    t = DEFAULT_TRANSFORM
    poly = box(
        t.c + xs.min() * 10,
        t.f - (ys.max() + 1) * 10,
        t.c + (xs.max() + 1) * 10,
        t.f - ys.min() * 10,
    )
    j = int(date_index[ys[0], xs[0]])
    gdf = gpd.GeoDataFrame({"change_date": [DATES[j]]}, geometry=[poly], crs="EPSG:32633")
    gpkg = tmp_path / "changes.gpkg"
    gdf.to_crs("EPSG:4326").to_file(gpkg, layer="changes")
    scene2 = load_labelled_stack(tmp_path / "stack", gpkg)
    agree = (scene2.change == change).mean()
    assert agree > 0.98  # reprojection may move a boundary pixel
    assert set(np.unique(scene2.date_index[scene2.change == 1])) == {j}


def test_label_errors(tmp_path) -> None:
    paths, change, date_index = _user_stack(tmp_path)
    with pytest.raises(InputError, match=r"labels .*nope\.tif: file not found"):
        load_labelled_stack(tmp_path / "stack", tmp_path / "nope.tif")
    shifted = DEFAULT_TRANSFORM @ Affine.translation(3, 0)
    bad = write_geotiff(tmp_path / "shifted.tif", np.stack([change, date_index]), transform=shifted)
    with pytest.raises(InputError, match="differs from the stack's"):
        load_labelled_stack(tmp_path / "stack", bad)
    gdf = gpd.GeoDataFrame(
        {"change_date": ["2022-01-01"]},
        geometry=[box(500000, 4999700, 500100, 4999800)],
        crs="EPSG:32633",
    )
    gdf.to_file(tmp_path / "early.gpkg")
    with pytest.raises(InputError, match="change_date 2022-01-01 is not after the first"):
        load_labelled_stack(tmp_path / "stack", tmp_path / "early.gpkg")


# -- geochange train -------------------------------------------------------------------------


def _tiny_config(tmp_path, sources) -> str:
    cfg = {
        "seed": 1,
        "name": "tiny-test",
        "trained_on": "test data",
        "model": {"features": 6, "hidden": 6, "head_hidden": 6},
        "task": {"lr": 0.005},
        "data": {
            "batch_size": 2,
            "chip": 24,
            "batches_per_scene": 1,
            "sources": sources,
            "val_sources": sources,
        },
        "trainer": {"max_steps": 3, "val_check_interval": 3, "threads": 1, "progress_bar": False},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_cli_train_writes_loadable_model_and_report(tmp_path) -> None:
    config = _tiny_config(
        tmp_path, [{"synthetic": {"seeds": [0, 2], "size": 32, "dates": [2, 3], "bands": [1, 3]}}]
    )
    out = tmp_path / "out" / "m.ckpt"
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "train",
            config,
            "-o",
            str(out),
            "--set",
            "trainer.max_steps=2",
            "--set",
            "trainer.val_check_interval=2",
            "--set",
            "trainer.max_minutes=5",
            "--set",
            "trainer.anneal_by_time=false",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "val/f1" in res.output
    # Step-bound: the learning rate anneals by steps alone; the time limit only stops the run.
    hp = torch.load(tmp_path / "out" / "m_checkpoints" / "last.ckpt", weights_only=True)
    assert hp["hyper_parameters"]["time_budget_s"] is None
    net, meta = load_model(out)
    assert meta["name"] == "tiny-test" and meta["trained_on"] == "test data"
    assert net.config()["features"] == 6 and net.in_bands is None
    report = json.loads((tmp_path / "out" / "m.ckpt.report.json").read_text())
    assert report["steps"] == 2 and report["config"]["trainer"]["max_steps"] == 2
    assert "val/f1" in report["val_metrics"] and report["data"]["train_scenes"] == 2
    assert (tmp_path / "out" / "m.ckpt.report.md").read_text().startswith("# Training report")
    # The Lightning checkpoint loads too (geochange detect --model accepts both).
    last = tmp_path / "out" / "m_checkpoints" / "last.ckpt"
    lnet, lmeta = load_model(last)
    assert lnet.config() == net.config() and lmeta["name"] == "tiny-test"
    # Never overwrite without --overwrite; resume continues the step count.
    res = runner.invoke(cli, ["train", config, "-o", str(out)])
    assert res.exit_code != 0 and "exists; pass --overwrite" in str(res.exception)
    res = runner.invoke(
        cli,
        [
            "train",
            config,
            "-o",
            str(out),
            "--overwrite",
            "--resume",
            str(last),
            "--set",
            "trainer.max_steps=3",
            "--set",
            "trainer.max_minutes=5",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "m.ckpt.report.json").read_text())["steps"] == 3
    # By default a time limit also drives the schedule (95 % of it, for the final validation).
    hp = torch.load(tmp_path / "out" / "m_checkpoints" / "last.ckpt", weights_only=True)
    assert hp["hyper_parameters"]["time_budget_s"] == pytest.approx(0.95 * 300)


def test_cli_finetune_on_user_stack_from_init(tmp_path) -> None:
    paths, change, date_index = _user_stack(tmp_path)
    write_geotiff(tmp_path / "label.tif", np.stack([change, date_index]))
    config = _tiny_config(tmp_path, [{"stack": "stack", "labels": "label.tif"}])
    first = tmp_path / "first.ckpt"
    runner = CliRunner()
    res = runner.invoke(cli, ["train", config, "-o", str(first), "--set", "model.in_bands=3"])
    assert res.exit_code == 0, res.output
    assert load_model(first)[0].in_bands == 3
    res = runner.invoke(
        cli,
        [
            "train",
            config,
            "-o",
            str(tmp_path / "second.ckpt"),
            "--init",
            str(first),
            "--set",
            "model.features=99",
        ],
    )
    assert res.exit_code == 0, res.output
    second, _ = load_model(tmp_path / "second.ckpt")
    assert second.in_bands == 3 and second.config()["features"] == 6  # init's architecture


def test_cli_config_errors(tmp_path) -> None:
    config = _tiny_config(tmp_path, [{"bogus": 1}])
    runner = CliRunner()
    res = runner.invoke(cli, ["train", config, "-o", str(tmp_path / "m.ckpt")])
    assert "expected `synthetic` or `stack` + `labels`" in str(res.exception)
    res = runner.invoke(cli, ["train", config, "-o", str(tmp_path / "m.ckpt"), "--set", "x=1"])
    assert "unknown section 'x'" in str(res.exception)
    res = runner.invoke(cli, ["train", config, "-o", str(tmp_path / "m.ckpt"), "--set", "novalue"])
    assert "expected KEY=VALUE" in str(res.exception)


def test_change_hidden_by_the_cloud_head_is_not_a_lesson() -> None:
    """Where the cloud head flags every date, no interval can hold the change: those pixels are
    left out of the change losses (not a 1e4 loss from the masked logit)."""
    batch = sample_batch(_toy_scene(1), np.random.default_rng(0), batch_size=2, chip=24)
    task = ChangeTask(features=8, hidden=8, head_hidden=8, clouds=True)
    loss, parts, _, _ = task.losses(batch)
    assert loss < 10
    with torch.no_grad():
        task.net.cloud[-1].bias.fill_(50.0)  # flags everything: nothing can be seen
    loss, parts, _, _ = task.losses(batch)
    assert parts["focal"] == 0 and parts["date_ce"] == 0 and torch.isfinite(loss)
