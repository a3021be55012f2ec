"""Teaching the model what the user calls change, from example polygons in its own scene."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import torch
from rasterio.features import rasterize
from scipy import ndimage

from geochange.io.examples import read_examples
from geochange.io.stack import open_stack
from geochange.model import heldout, load_model
from geochange.model.fewshot import (
    best_threshold,
    blocked_folds,
    low_estimate,
    mixed,
    pick_mix,
    teach,
    with_spectral,
)
from geochange.pipeline import detect
from geochange.stages.coregister import coregister
from geochange.synth import make_scene, write_scene

#: New construction is change; fields cleared and water are not (as OSCD labels it).
CONSTRUCTION = ("building", "small_object", "moved_object", "road")
NOT_CHANGE = ("clearing", "water_rise", "water_fall")


@pytest.fixture(scope="module")
def two_kinds(tmp_path_factory):
    """A 192 px two-date scene with a building, 2 roads, 4 small objects, 2 moved objects and 2
    cleared fields (the default model finds all of the fields and the building and roads);
    every other construction and every other clearing become examples."""
    tmp = tmp_path_factory.mktemp("two_kinds")
    scene = make_scene(size=192, dates=2, bands=4, seed=5010, nuisance="low")
    images = write_scene(scene, tmp / "scene")["images"]
    ch = scene.changes
    build = ch[ch.kind.isin(CONSTRUCTION)]
    clear = ch[ch.kind.isin(NOT_CHANGE)]
    assert len(build) >= 8 and len(clear) >= 2
    ex = gpd.GeoDataFrame(
        {"change": ["yes"] * len(build.iloc[::2]) + ["no"] * len(clear.iloc[::2])},
        geometry=list(build.geometry.iloc[::2]) + list(clear.geometry.iloc[::2]),
        crs=ch.crs,
    ).to_crs("EPSG:4326")  # any CRS: reprojected to the stack's
    path = tmp / "examples.gpkg"
    ex.to_file(path, layer="my_examples", driver="GPKG")
    grid = scene.grid
    ref = rasterize(
        [(g, 1) for g in build.geometry], out_shape=grid.shape, transform=grid.transform
    ).astype(bool)
    return tmp, images, path, ref, scene.change != 255


def _f1(pred, ref, mask):
    q, y = pred[mask], ref[mask]
    tp, fp, fn = (q & y).sum(), (q & ~y).sum(), (~q & y).sum()
    return 2 * tp / max(1, 2 * tp + fp + fn)


def test_examples_teach_the_users_definition(two_kinds):
    tmp, images, path, ref, labelled = two_kinds
    stack = coregister(open_stack(images))
    ex = read_examples(path, stack.grid)
    assert ex.n_change >= 4 and ex.n_no_change >= 1
    ckpt, meta = teach(stack, ex, tmp / "taught.ckpt", folds=0, seed=0, device="cpu")
    assert meta["taught"] and 0.05 <= meta["threshold"] <= 0.95
    assert meta["examples_sha256"] == ex.sha256 and meta["cv"]["k"] == 0
    assert "too few" in meta["cv"]["note"]
    assert load_model(ckpt)[1]["threshold"] == meta["threshold"]

    mask = labelled & ~ndimage.binary_dilation(ex.label != 255, iterations=3)
    zero = np.asarray(detect(stack, None, quicklook=False).prob) >= 0.5
    res = detect(stack, None, model=ckpt, threshold=meta["threshold"], quicklook=False)
    taught = np.asarray(res.prob) >= meta["threshold"]
    f_zero, f_taught = _f1(zero, ref, mask), _f1(taught, ref, mask)
    assert f_taught >= f_zero + 0.2, (f_zero, f_taught)


def test_taught_spectral_term_is_seam_free_and_fitted_as_the_network_runs(two_kinds, tmp_path):
    import torch

    from geochange.model.fewshot import _Teacher, teach_network

    tmp, images, path, _, _ = two_kinds
    stack = coregister(open_stack(images))
    ex = read_examples(path, stack.grid)
    res = teach_network(stack, ex, steps=0, folds=0, seed=0, device="cpu")
    net = res.net
    assert net.spectral is not None and net.config()["spectral_bands"] == 4
    assert any(float(p.abs().sum()) > 0 for p in net.spectral[-1].parameters())
    ckpt = tmp_path / "taught.ckpt"
    from geochange.model import save_model

    save_model(net, ckpt, {"threshold": res.threshold})
    whole = np.asarray(detect(stack, None, model=ckpt, chunk_size=256, quicklook=False).prob)
    tiled = np.asarray(detect(stack, None, model=ckpt, chunk_size=64, quicklook=False).prob)
    assert np.array_equal(whole, tiled)
    # The pixel-wise fit sees the term as the network computes it on a window.
    teacher = _Teacher(net, stack, ex, "cpu", 0, 0, False)
    r = teacher.regions[0]
    from geochange.model.fewshot import _heads, _on_pixels

    with torch.inference_mode():
        term = (_heads(net, r.z, r.final, r.possible, r.bands)[0] - _heads(net, r.z, r.final,
                r.possible)[0])[0].reshape(-1)  # fmt: skip
        pixels = torch.cat([r.bands, r.final], 1)[0].flatten(1)
        assert torch.allclose(_on_pixels(net.spectral, pixels), term, atol=1e-4)
    assert float(term.abs().max()) > 1e-3
    with pytest.raises(Exception, match="taught on a scene of 4 bands"):
        net(torch.zeros(1, 2, 3, 8, 8), torch.ones(1, 2, 8, 8, dtype=torch.bool))


def test_teaching_is_deterministic_for_a_seed(two_kinds, tmp_path):
    tmp, images, path, _, _ = two_kinds
    stack = coregister(open_stack(images))
    ex = read_examples(path, stack.grid)
    a = teach(stack, ex, tmp_path / "a.ckpt", steps=3, folds=0, seed=1, device="cpu")[0]
    b = teach(stack, ex, tmp_path / "b.ckpt", steps=3, folds=0, seed=1, device="cpu")[0]
    sa, sb = load_model(a)[0].state_dict(), load_model(b)[0].state_dict()
    assert all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)


def test_blocked_folds_keep_polygons_whole_and_say_when_too_few():
    label = np.full((96, 96), 255, np.uint8)
    for i in range(4):
        label[10 + 20 * i : 16 + 20 * i, 10:16] = 1  # four change polygons
        label[10 + 20 * i : 18 + 20 * i, 60:68] = 0  # four no-change squares
    fold, k = blocked_folds(label, k=3, seed=0)
    assert k == 3 and set(np.unique(fold[label != 255])) == {0, 1, 2}
    for i in range(4):  # a polygon lies in one fold
        assert len(np.unique(fold[10 + 20 * i : 16 + 20 * i, 10:16])) == 1
    for f in range(3):
        assert (label[fold == f] == 1).any()
    label[50:76, 10:16] = 255  # two change polygons left: fewer than k
    assert blocked_folds(label, k=3) is None
    big = np.zeros((96, 96), np.uint8)  # one reviewed block is cut into 32-px blocks
    big[:40, :40] = 1
    fold, _ = blocked_folds(big, k=3)
    assert len(np.unique(fold)) == 3


def test_best_threshold():
    prob = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    truth = np.array([0, 0, 0, 1, 1, 1], bool)
    t = best_threshold(prob, truth)
    assert 0.3 < t <= 0.6
    assert best_threshold(prob, np.ones(6, bool)) == 0.5


def test_low_estimate_warns_only_when_the_examples_do_not_carry_over():
    assert low_estimate({"k": 3, "f1": 0.45, "f1_sd": 0.1}) is None
    assert low_estimate({"k": 0, "note": "too few examples to estimate"}) is None
    msg = low_estimate({"k": 3, "f1": 0.04, "f1_sd": 0.02})
    assert msg is not None and "0.04 ± 0.02" in msg and "3-fold" in msg


def test_spectral_weight_scales_the_term_and_zero_gives_the_starting_model():
    base, _ = load_model()
    net = with_spectral(base, 3, seed=0)
    with torch.no_grad():
        net.spectral[-1].weight.normal_(0.0, 0.5)
        net.spectral[-1].bias.fill_(0.3)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(1, 2, 3, 24, 24)).astype(np.float32))
    valid = torch.ones(1, 2, 24, 24, dtype=torch.bool)
    with torch.inference_mode():
        start = base(x, valid)[0]
        full = net(x, valid)[0]
        none = mixed(net, 0.0)(x, valid)[0]
        half = mixed(net, 0.5)(x, valid)[0]
    assert mixed(net, 1.0) is net
    assert torch.allclose(none, start, atol=1e-5)
    assert not torch.allclose(full, start, atol=1e-3)
    assert torch.allclose(half - start, 0.5 * (full - start), atol=1e-4)
    assert net.spectral[-1].bias.item() == pytest.approx(0.3)  # the fitted net is untouched


def test_pick_mix_follows_the_held_out_examples(monkeypatch):
    monkeypatch.setattr(heldout, "MIXES", (0.0, 0.5, 1.0))
    flat = np.full((3, heldout.THRESHOLDS.size), 0.30)
    curves = np.stack([flat, flat + 0.05, flat + 0.20])  # (weights, folds, thresholds)
    assert pick_mix(curves) == 2
    assert pick_mix(curves[::-1]) == 0  # the examples do not carry over: the starting model
    peak = curves.copy()
    peak[1, :, 40] = 0.9  # one threshold of the middle weight serves every fold best
    assert pick_mix(peak) == 1


# ----------------------------------------------------------------------------------------------
# The command line: --examples, the verdict correction loop, --save-model, bad examples


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    """A 96 px two-date scene on disk and its truth."""
    tmp = tmp_path_factory.mktemp("small")
    scene = make_scene(size=96, dates=2, bands=4, seed=5010, nuisance="low")
    out = write_scene(scene, tmp / "scene")
    return tmp, out["images"], scene


def test_verdict_correction_loop_end_to_end(small_scene, tmp_path):
    from helpers import run_cli

    _, images, scene = small_scene
    first = tmp_path / "first.gpkg"
    code, _, err = run_cli("-q", "detect", *images, "-o", first, "--no-quicklook", "--no-progress")
    assert code == 0, err
    found = gpd.read_file(first, layer="changes")
    assert len(found) >= 3
    # The user checks a few polygons in QGIS: fills `verdict`, leaves the others empty.
    truth = scene.change == 1
    rows = [int(r) for r in np.asarray(found.bounds.miny.argsort())[:6]]
    verdict = [None] * len(found)
    grid = scene.grid
    for i in rows:
        m = rasterize([(found.geometry.iloc[i], 1)], out_shape=grid.shape,
                      transform=grid.transform).astype(bool)  # fmt: skip
        verdict[i] = "yes" if truth[m].mean() > 0.5 else "no"
    if "yes" not in verdict:
        verdict[rows[0]] = "yes"
    found["verdict"] = verdict
    found.to_file(first, layer="changes", driver="GPKG")  # the runs layer stays
    assert set(gpd.list_layers(first).name) >= {"changes", "runs"}

    second, keep = tmp_path / "second.gpkg", tmp_path / "mine.ckpt"
    code, out, err = run_cli("detect", *images, "-o", second, "--examples", first,
                             "--save-model", keep, "--adapt-minutes", "0.1", "--no-quicklook",
                             "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "taught from" in out and "threshold" in out
    run = gpd.read_file(second, layer="runs").iloc[0]
    meta = load_model(keep)[1]
    import hashlib

    assert (
        bool(run["taught"])
        and run["examples_sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    )
    n_checked = sum(v is not None for v in verdict)
    assert run["examples_change_polygons"] + run["examples_no_change_polygons"] == n_checked
    assert run["threshold"] == pytest.approx(meta["threshold"])
    # The kept model detects with its own threshold on the next run.
    third = tmp_path / "third.gpkg"
    code, _, err = run_cli("-q", "detect", *images, "-o", third, "--model", keep,
                           "--no-quicklook", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert gpd.read_file(third, layer="runs").iloc[0]["threshold"] == pytest.approx(
        meta["threshold"]
    )


@pytest.mark.parametrize(
    "case, match",
    [
        ("outside", "no change polygon lies on the stack"),
        ("no_change_example", "no change example"),
        ("not_vector", "not vector data"),
        ("points", "expected polygons"),
        ("no_crs", "has no CRS"),
        ("bad_value", "holds 'sometimes'"),
        ("no_verdict", "without a 'verdict' column"),
    ],
)
def test_bad_examples_exit_2_and_write_nothing(small_scene, tmp_path, case, match):
    import pandas as pd
    import pyogrio
    from helpers import run_cli
    from shapely.geometry import Point, box

    _, images, scene = small_scene
    x0, y0, x1, y1 = scene.grid.bounds
    inside = box(x0 + 100, y1 - 200, x0 + 200, y1 - 100)
    path = tmp_path / "ex.gpkg"

    def write(geoms, crs="EPSG:32633", layer="examples", **cols):
        gpd.GeoDataFrame(cols, geometry=geoms, crs=crs).to_file(path, layer=layer)

    if case == "outside":
        write([box(0, 0, 100, 100)], change=[1])
    elif case == "no_change_example":
        write([inside], change=["no"])
    elif case == "not_vector":
        path = images[0]  # a GeoTIFF
    elif case == "points":
        write([Point(x0 + 50, y1 - 50)], change=[1])
    elif case == "no_crs":
        with pytest.warns(UserWarning, match="crs"):
            gpd.GeoDataFrame({"change": [1]}, geometry=[inside]).to_file(path)
    elif case == "bad_value":
        write([inside], change=["sometimes"])
    elif case == "no_verdict":
        write([inside], layer="changes", mean_prob=[0.9])
        pyogrio.write_dataframe(pd.DataFrame({"method": ["cnn-lstm"]}), path, layer="runs")
    out, keep = tmp_path / "out" / "changes.gpkg", tmp_path / "taught.ckpt"
    code, _, err = run_cli("detect", *images, "-o", out, "--examples", path, "--save-model",
                           keep, "--no-progress")  # fmt: skip
    assert code == 2, err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not out.parent.exists() and not keep.exists()
    code, _, err = run_cli("adapt", *images, "-o", keep, "--examples", path, "--no-progress")
    assert code == 2 and match in err and not keep.exists()


def test_training_source_with_examples(two_kinds):
    from geochange.model.data import ChangeDataModule

    _, images, path, _, _ = two_kinds
    sources = [{"stack": [str(p) for p in images], "examples": str(path)}]
    assert ChangeDataModule.scene_keys(sources) == [(0, 0)]
    scene = ChangeDataModule.load(sources, (0, 0))
    stack = open_stack(images)
    label = read_examples(path, stack.grid).label
    assert np.array_equal(scene.change, label)
    assert set(np.unique(scene.date_index[label == 1])) == {1}  # a pair: the second date
    assert (scene.date_index[label == 255] == 255).all() and scene.raw.shape[0] == 2


def test_the_estimate_from_a_few_examples_takes_the_scene_share_of_change_into_account():
    """Held-out examples half change, half not, in a scene with 5 % change: the examples alone
    would say precision 0.98; the share flagged outside them gives the scene's 0.68."""
    from geochange.model.heldout import f1_precision_recall, scene_estimate

    truth = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    pred = np.r_[np.arange(100) < 80, np.arange(100) < 2]  # recall 0.8, false alarms 2 %
    # Outside: 500 changed pixels (400 flagged), 9500 unchanged (190 flagged).
    flagged = (400 + 190) / 10_000
    f1, precision, recall = scene_estimate(pred, truth, flagged)
    assert recall == pytest.approx(0.8)
    assert precision == pytest.approx(400 / 590)
    assert f1 == pytest.approx(2 * (400 / 590) * 0.8 / (400 / 590 + 0.8))
    naive = f1_precision_recall(80, 2, 20)
    assert naive[1] > 0.97
    # Examples that cannot tell change from no change say nothing.
    assert np.isnan(scene_estimate(np.ones(200, bool), truth, 0.5)[0])


def test_a_reviewed_area_is_estimated_for_the_scene_around_it(two_kinds, tmp_path):
    """A reviewed area is put where the user looked: with enough pixels around it, its estimate
    takes precision from how many of them the taught model flags; a review of the whole scene
    is scored on the held-out examples alone."""
    from shapely.geometry import box

    import geochange.model.fewshot as fewshot

    _, images, _, ref, _ = two_kinds
    stack = coregister(open_stack(images))
    grid = stack.grid

    def bounds(rows, cols):
        (x0, y0), (x1, y1) = (grid.transform @ (c, r) for c, r in ((cols.start, rows.start),
                                                                     (cols.stop, rows.stop)))  # fmt: skip
        return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def estimate(edge):
        shapes = ndimage.find_objects(ndimage.label(ref[:edge, :edge])[0])
        polys = [bounds(s[0], s[1]) for s in shapes]
        assert len(polys) >= 3
        path = tmp_path / f"reviewed_{edge}.gpkg"
        changes = gpd.GeoDataFrame({"change": [1] * len(polys)}, geometry=polys, crs=grid.crs)
        changes.to_file(path, layer="changes", driver="GPKG")
        area = gpd.GeoDataFrame(geometry=[bounds(slice(0, edge), slice(0, edge))], crs=grid.crs)
        area.to_file(path, layer="labelled", driver="GPKG")
        ex = read_examples(path, stack.grid)
        assert ex.n_labelled == 1
        cv = fewshot.teach_network(stack, ex, steps=0, folds=3, seed=0, device="cpu").info["cv"]
        assert cv["k"] == 3 and np.isfinite(cv["f1"]) and np.isfinite(cv["precision"])
        return "share of the scene outside the examples flagged" in cv["scored_on"]

    assert estimate(96)
    assert not estimate(192)  # nothing around a review of the whole scene


def test_scene_windows_stand_for_the_scene_away_from_the_examples():
    from geochange.model.fewshot import SCENE_WINDOW, SCENE_WINDOWS, _scene_windows

    covered = np.zeros((1024, 1024), bool)
    covered[:512, :512] = True  # the teaching windows
    boxes = _scene_windows(covered, seed=0)
    assert len(boxes) == SCENE_WINDOWS and boxes == _scene_windows(covered, seed=0)
    assert boxes != _scene_windows(covered, seed=1)
    seen = np.zeros_like(covered, dtype=int)
    for y0, x0, y1, x1 in boxes:
        assert (y1 - y0, x1 - x0) == (SCENE_WINDOW, SCENE_WINDOW)
        assert covered[y0:y1, x0:x1].mean() <= 0.5
        seen[y0:y1, x0:x1] += 1
    assert seen.max() == 1  # no pixel counted twice
    assert _scene_windows(np.ones((1024, 1024), bool), seed=0) == []
    assert [(b[2] - b[0], b[3] - b[1]) for b in _scene_windows(np.zeros((40, 50), bool), 0)] == [
        (40, 50)
    ]
