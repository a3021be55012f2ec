"""Memory planning: sizes, memory per task bounded in the series length, chunk and batch plans,
and the run refused clearly when the budget cannot hold a task."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import run_cli, write_stack

from geochange import memory
from geochange.config import ConfigError, RuntimeConfig
from geochange.events import plan_windows
from geochange.plan import choose_window
from geochange.stages import build_chain


@pytest.mark.parametrize(
    "text, expected",
    [("2GB", 2_000_000_000), ("1.5GiB", int(1.5 * 2**30)), ("800 MB", 800_000_000), (4096, 4096)],
)
def test_sizes_are_read_with_their_units(text, expected):
    assert memory.parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["lots", "2 parsecs", "-1GB", 0])
def test_bad_sizes_are_refused_by_the_config(bad):
    with pytest.raises(ConfigError, match="memory_limit: found"):
        RuntimeConfig(memory_limit=bad)


def test_a_task_holds_one_window_whatever_the_series_length():
    halo, det = 75, 45
    short = memory.task_bytes(512, memory.TaskShape(halo, det, dates=10, bands=4, windows=1))
    for t in (48, 96, 150):
        n = len(plan_windows(t, 10, 3))
        long = memory.task_bytes(512, memory.TaskShape(halo, det, dates=10, bands=4, windows=n))
        assert long <= 1.2 * short  # only the windows' reports grow, a few values per window
    whole = memory.task_bytes(512, memory.TaskShape(4 + 150, det + 150, dates=150, bands=4))
    assert whole > 10 * short  # the whole series at once, as before windows


def test_plan_lowers_batch_then_chunk_and_says_when_nothing_fits():
    shape = memory.TaskShape(75, 45, 10, 4, 1)
    assert memory.plan(64 * 2**30, 1024, shape, tasks=2) == (1024, 4)
    # A 1024 px chunk runs four interior sub-tiles of one shape in one batch: fewer first.
    need_full = memory.PROCESS_BYTES + 2 * memory.task_bytes(1024, shape, batch=4)
    assert memory.plan(need_full, 1024, shape, tasks=2) == (1024, 4)
    assert memory.plan(need_full - 1, 1024, shape, tasks=2) == (1024, 3)
    chunk, batch = memory.plan(memory.PROCESS_BYTES + 2 * 300e6, 1024, shape, tasks=2)
    assert chunk < 1024 and batch >= 1
    assert 2 * memory.task_bytes(chunk, shape, batch=batch) <= 2 * 300e6
    assert memory.plan(memory.PROCESS_BYTES + 1000, 512, shape, tasks=2) == (0, 0)


def test_on_a_gpu_the_network_runs_the_largest_sub_tiles_its_free_memory_holds():
    shape = memory.TaskShape(40, 30, 12, 4, 1, 256, model_on_host=False)
    # The worker holds the tile's arrays only: a larger chunk fits its budget.
    on_host = memory.TaskShape(40, 30, 12, 4, 1, 256)
    assert memory.task_bytes(1024, shape) < memory.task_bytes(1024, on_host) / 2
    # Plenty of device memory: the whole tile in one pass (no sub-tile repeats a halo).
    assert memory.device_plan(80 * 2**30, 1024, shape, tasks=1) == (1024, 1104, 1)
    # Shared by 16 tasks: smaller sub-tiles, several at a time, all within the share.
    chunk, size, batch = memory.device_plan(80 * 2**30, 1024, shape, tasks=16)
    assert chunk == 1024 and 64 <= size < 1104 and batch >= 1
    tile = 1104**2 * 12 * (4 * memory.DEVICE_PER_DATE_BAND + 1)
    model = memory.model_bytes((1104, 1104), shape, size, batch)
    assert tile + model <= 80 * 2**30 * memory.DEVICE_SHARE / 16
    assert tile + memory.model_bytes((1104, 1104), shape, 2 * size, 1) > 80 * 2**30 * 0.6 / 16
    # A small GPU: a smaller chunk; nothing at all: zeros.
    assert memory.device_plan(2**28, 1024, shape)[0] < 1024
    assert memory.device_plan(2**16, 1024, shape) == (0, 0, 0)


def test_a_gpu_run_plans_the_networks_sub_tiles_from_the_free_device_memory(tmp_path, monkeypatch):
    from geochange import plan
    from geochange.config import DetectConfig
    from geochange.io.read import read_sample
    from geochange.io.stack import open_stack

    rng = np.random.default_rng(0)
    data = rng.integers(500, 3000, size=(4, 3, 300, 300)).astype(np.uint16)
    write_stack(tmp_path / "stack", data, ["2022-01-01", "2022-03-01", "2022-05-01", "2022-07-01"])
    stack = open_stack(tmp_path / "stack")
    chain = build_chain(read_sample(stack))
    assert chain.detector.tile_size == 256 and chain.detector.batch_size == 1
    # What a CUDA detector says; no GPU here, so only the plan runs (its free memory given).
    chain.detector.device = "cuda"
    runtime = RuntimeConfig(threads_per_worker=2, chunk_size=512)
    monkeypatch.setattr(plan, "device_free", lambda device: 40 * 2**30)
    assert plan.plan_memory(stack, DetectConfig(), runtime, chain, False) == 512
    # The whole 300 px scene in one pass of the network.
    assert chain.detector.tile_size == 300 and chain.detector.batch_size == 1
    monkeypatch.setattr(plan, "device_free", lambda device: 2**16)
    with pytest.raises(ConfigError, match="GiB free on cuda.*--device cpu"):
        plan.plan_memory(stack, DetectConfig(), runtime, chain, False)


@pytest.mark.gpu
def test_a_gpu_run_is_planned_from_the_gpus_own_free_memory(tmp_path):
    from geochange.pipeline import detect

    rng = np.random.default_rng(0)
    data = rng.integers(500, 3000, size=(4, 3, 300, 300)).astype(np.uint16)
    write_stack(tmp_path / "stack", data, ["2022-01-01", "2022-03-01", "2022-05-01", "2022-07-01"])
    res = detect(tmp_path / "stack", tmp_path / "c.gpkg", device="cuda", progress=False)
    cpu = detect(tmp_path / "stack", None, device="cpu", progress=False)
    np.testing.assert_allclose(res.prob.compute(), cpu.prob.compute(), atol=5e-3, equal_nan=True)


def test_a_budget_below_one_task_is_one_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(500, 3000, size=(4, 3, 40, 40)).astype(np.uint16)
    write_stack(tmp_path / "stack", data, ["2022-01-01", "2022-03-01", "2022-05-01", "2022-07-01"])
    out = tmp_path / "c.gpkg"
    code, _, err = run_cli("detect", tmp_path / "stack", "-o", out, "--memory-limit", "300MB")
    assert code == 2
    assert "--memory-limit: found 300MB" in err and "raise it" in err
    assert not out.exists()


def test_a_small_scene_is_planned_as_it_is_read():
    # 128 px, 48 dates at once: the halo of 113 px lies beyond the scene and one chunk is one
    # task, so the whole series at once fits 2 GiB.
    clipped = memory.TaskShape(113, 80, 48, 4, 1, scene=(128, 128))
    assert memory.plan(memory.DEFAULT_LIMIT, 128, clipped, tasks=2)[0] == 128
    unclipped = memory.TaskShape(113, 80, 48, 4, 1)
    assert memory.plan(memory.DEFAULT_LIMIT, 128, unclipped, tasks=2) == (0, 0)


@pytest.fixture(scope="module")
def chain():
    """The default stages, fitted on a 20-date sample (their reach is what the plan uses)."""
    sample = np.random.default_rng(0).uniform(500, 3000, (20, 4, 400)).astype(np.float32)
    return build_chain(sample)


def test_the_window_is_the_whole_series_where_it_fits_else_the_fewest_windows_that_fit(chain):
    two = RuntimeConfig(threads_per_worker=2)
    assert choose_window(150, 4, (128, 128), two, chain, 3) == 150  # a small scene: whole
    tile = (10980, 10980)  # a Sentinel-2 tile: 2 GiB holds no longer window at a 256 px chunk
    assert choose_window(96, 4, tile, two, chain, 3) == 16
    big = RuntimeConfig(threads_per_worker=2, memory_limit="8GiB")
    window = choose_window(96, 4, tile, big, chain, 3)
    n = len(plan_windows(96, window, 3))
    assert 16 < window < 96 and window == math.ceil((96 + (n - 1) * 3) / n)  # equal windows
    # One window fewer (longer ones) needs a chunk below 256 px in 8 GiB.
    longer = math.ceil((96 + (n - 2) * 3) / (n - 1))
    halo, det = chain.halos(longer)
    shape = memory.TaskShape(halo, det, longer, 4, n - 1, 256, tile)
    assert memory.plan(8 * 2**30, 512, shape, tasks=2, batch=4)[0] < 256
    assert chain.halos(20) == (chain.halo, chain.detector_halo)


def test_long_series_hold_a_segment_of_dates_not_every_date():
    assert [memory.held_dates(t) for t in (2, 16, 17, 48, 150)] == [2, 16, 18, 19, 26]
    # Up to a segment every date is held: the estimate per date is the measured one.
    short = memory.TaskShape(40, 30, 16, 4, 1, scene=(256, 256))
    per_date = (memory.MODEL_PER_DATE + memory.MODEL_PER_SERIES_DATE) + 4 * (
        memory.MODEL_PER_DATE_BAND + memory.MODEL_PER_SERIES_DATE_BAND
    )
    assert per_date == 260 + 45 * 4
    # Beyond it the network's part grows by the series' inputs and outputs only.
    held = memory.TaskShape(40, 30, 150, 4, 1, scene=(256, 256))
    ratio = memory.task_bytes(256, held) / memory.task_bytes(256, short)
    assert ratio < 150 / 16 / 2
