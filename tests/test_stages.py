"""The stage contract, checked for every registered stage.

Each stage alone (with the detector it follows) must give, chunk by chunk with the chain's halo,
what it gives on the whole scene; never turn nodata into change; and pickle for dask workers.
A new stage gets these checks by being registered.
"""

from __future__ import annotations

import json
import pickle

import dask
import dask.array
import geopandas as gpd
import numpy as np
import pytest
from helpers import run_cli, write_geotiff, write_stack

from geochange import open_stack, tiling
from geochange.pipeline import detect
from geochange.stages import (
    DETECTORS,
    OPTIONAL,
    REGISTRY,
    Context,
    build_chain,
    parse_skip,
)
from geochange.synth import make_scene

STAGES = [s for s in REGISTRY if s.role != "stack"]
DATES = ["2023-01-15", "2023-03-02", "2023-05-20", "2023-07-11", "2023-09-03", "2023-11-08"]


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """(6, 4, 96, 96) float32 DN with a block of nodata and pixels valid on one date only."""
    x = make_scene(size=96, dates=6, bands=4, seed=21, nuisance="medium").images
    x = x.astype(np.float32)
    x[:, :, 40:52, 10:30] = np.nan  # nodata on every date
    x[1:, :, 70:74, 60:64] = np.nan  # valid on the first date only
    return x


def _chain(spec, scene, tiny_model):
    """A chain where ``spec`` is the only optional stage (with the detector it needs)."""
    method = spec.name if spec.role == "detector" else (spec.after or ("cva",))[0]
    skip = set(OPTIONAL) - {spec.name}
    context = Context(model=str(tiny_model), device="cpu")
    return build_chain(scene.reshape(*scene.shape[:2], -1), method, skip, context)


@pytest.mark.parametrize("spec", STAGES, ids=[s.name for s in STAGES])
def test_stage_contract(spec, scene, tiny_model) -> None:
    chain = _chain(spec, scene, tiny_model)
    assert spec.name in chain.names
    stage = next(s for s in chain.stages if s.name == spec.name)
    assert stage.reach(scene.shape[0]).input >= 0
    json.dumps(chain.record())  # the runs record can hold it

    whole = chain(scene)
    # Halo honoured: chunk by chunk equals the whole scene.
    tiled = tiling.overlap_map(
        dask.array.from_array(scene, chunks=(6, 4, 40, 36)), chain, chain.halo, out_bands=2
    )
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_allclose(np.asarray(tiled.compute()), whole, atol=1e-5)
    # Nodata never becomes change.
    assert np.isnan(whole[0, 40:52, 10:30]).all()
    assert np.isnan(whole[0, 70:74, 60:64]).all()
    assert np.isfinite(whole[0]).mean() > 0.9
    # Pickles for dask: the same result and the same token.
    again = pickle.loads(pickle.dumps(chain))
    np.testing.assert_array_equal(again(scene), whole)
    assert dask.base.tokenize(again) == dask.base.tokenize(chain)


def test_a_tile_given_stays_unless_handed_over(scene, tiny_model) -> None:
    # The cloud screen and the network's normalisation would otherwise rewrite it in place.
    context = Context(model=str(tiny_model), device="cpu")
    chain = build_chain(scene.reshape(*scene.shape[:2], -1), "cnn-lstm", set(), context)
    assert {"clouds", "cnn-lstm"} <= set(chain.names)
    cloudy = scene.copy()
    cloudy[2, :, 5:25, 50:80] = np.nanmax(scene) * 1.5  # a bright veil the screen masks
    given = cloudy.copy()
    kept = chain(given)
    np.testing.assert_array_equal(given, cloudy)
    assert not pickle.loads(pickle.dumps(chain)).overwrite_input
    # Handed over (as a run's tasks do with the tile each reads), the same result, no copies.
    handed = cloudy.copy()
    np.testing.assert_array_equal(chain(handed, overwrite=True), kept)
    assert not np.array_equal(handed, cloudy, equal_nan=True)
    chain.overwrite_input = True
    handed = cloudy.copy()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(chain))(handed), kept)
    assert not np.array_equal(handed, cloudy, equal_nan=True)


def test_told_its_core_the_network_runs_there_only_and_gives_the_same_core(
    scene, tiny_model
) -> None:
    context = Context(model=str(tiny_model), device="cpu")
    chain = build_chain(scene.reshape(*scene.shape[:2], -1), "cnn-lstm", set(), context)
    assert chain.takes_core and chain.result_margin >= 0
    whole = chain(scene)
    core = (30, 70, 20, 60)
    told = chain(scene, core=core)
    y0, y1, x0, x1 = core
    np.testing.assert_allclose(told[:, y0:y1, x0:x1], whole[:, y0:y1, x0:x1], atol=1e-6)
    # Outside the core and the result stages' reach the network did not run.
    m = chain.result_margin
    assert np.isnan(told[0, : y0 - m - 1]).all() and np.isnan(told[0, :, x1 + m + 1 :]).all()


PASSES = [s for s in STAGES if s.role != "detector"]


@pytest.mark.parametrize("spec", PASSES, ids=[s.name for s in PASSES])
def test_each_stage_changes_the_chains_token(spec, scene, tiny_model) -> None:
    chain = _chain(spec, scene, tiny_model)
    without = build_chain(
        scene.reshape(6, 4, -1),
        chain.method,
        OPTIONAL,
        Context(model=str(tiny_model), device="cpu"),
    )
    assert spec.name not in without.names
    assert dask.base.tokenize(chain) != dask.base.tokenize(without)


def test_coregister_is_a_stack_stage_tiled_like_the_whole(tmp_path) -> None:
    scene = make_scene(size=80, dates=4, bands=4, seed=5, nuisance="high")
    write_stack(tmp_path / "s", scene.images, DATES[:4], nodata=0)
    small = detect(tmp_path / "s", None, method="cva", chunk_size=32, skip=["clouds"])
    large = detect(tmp_path / "s", None, method="cva", chunk_size=512, skip=["clouds"])
    assert small.run["stages"] == ["coregister", "cva"]
    assert np.any(np.abs(small.stack.shifts) > 0.05)
    np.testing.assert_array_equal(small.prob.compute(), large.prob.compute())


def test_registry_entries_build_what_they_name() -> None:
    assert DETECTORS == ("cnn-lstm", "cva", "irmad", "diff")
    assert OPTIONAL == ("coregister", "clouds", "refine", "micro", "emerge")
    for spec in REGISTRY:
        module = spec.load()
        assert hasattr(module, "fit_stack" if spec.role == "stack" else "fit"), spec.name


def test_skip_names_are_checked() -> None:
    assert parse_skip("clouds, micro") == {"clouds", "micro"}
    with pytest.raises(ValueError, match="--skip: found 'cloud', expected stage names among"):
        parse_skip("cloud")


def test_cli_skip_reaches_the_chain_and_the_runs_record(tmp_path) -> None:
    scene = make_scene(size=64, dates=4, bands=4, seed=3, nuisance="low")
    write_stack(tmp_path / "s", scene.images, DATES[:4], nodata=0)
    out = tmp_path / "c.gpkg"
    code, _, err = run_cli(
        "detect", tmp_path / "s", "-o", out, "--method", "cva", "--skip", "clouds,coregister",
        "--no-quicklook", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    runs = gpd.read_file(out, layer="runs")
    assert json.loads(runs.stages[0]) == ["cva"]
    assert set(json.loads(runs.stage_params[0])) == {"cva"}
    code, _, err = run_cli("detect", tmp_path / "s", "-o", tmp_path / "d.gpkg", "--skip", "cloud")
    assert code == 2 and "--skip: found 'cloud'" in err and err.count("\n") == 1
    assert not (tmp_path / "d.gpkg").exists()


def test_masks_keep_the_cloud_screen_off(tmp_path) -> None:
    scene = make_scene(size=64, dates=4, bands=4, seed=3, nuisance="low")
    write_stack(tmp_path / "s", scene.images, DATES[:4], nodata=0)
    masks = np.zeros((4, 64, 64), np.uint8)
    write_geotiff(tmp_path / "m.tif", masks)
    stack = open_stack(tmp_path / "s", masks=tmp_path / "m.tif")
    result = detect(stack, None, method="cva")
    assert "clouds" not in result.run["stages"]
    assert "clouds" in detect(tmp_path / "s", None, method="cva").run["stages"]
