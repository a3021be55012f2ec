"""Co-registration: whole-date shifts found to sub-pixel, undone on every read, seam-free."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from helpers import write_stack

from geochange import open_stack
from geochange.model.scenes import scene_from_arrays
from geochange.pipeline import detect
from geochange.shift import shift_bilinear, shift_dates
from geochange.stages.coregister import MIN_PEAK_SCORE, coregister, estimate_shifts
from geochange.synth import make_scene

DATES = ["2023-03-01", "2023-05-10", "2023-07-02", "2023-09-15"]


def _shifted_series(shifts: np.ndarray, size: int = 96, seed: int = 3) -> np.ndarray:
    """One land-like date seen with the given (dy, dx) whole-date shifts, (t, 4, size, size)."""
    ground = make_scene(size=size + 16, dates=2, bands=4, seed=seed, nuisance="low").images[0]
    ground = ground.astype(np.float32)
    out = [shift_bilinear(ground, float(dy), float(dx))[:, 8:-8, 8:-8] for dy, dx in shifts]
    return np.stack(out)


def test_estimate_shifts_recovers_subpixel_shifts_relative_to_the_mean():
    truth = np.array([[0.0, 0.0], [1.3, -0.4], [-2.2, 0.7], [0.45, 1.9]])
    x = _shifted_series(truth)
    # Illumination differs by date: gain and offset must not matter.
    x = x * np.array([1.0, 0.8, 1.25, 0.9])[:, None, None, None] + 150.0
    reg = estimate_shifts(x)
    # Applying -truth aligns every date; relative to the dates' mean position.
    want = -(truth - truth.mean(axis=0))
    np.testing.assert_allclose(reg.shifts, want, atol=0.1)
    assert np.all(reg.scores >= MIN_PEAK_SCORE)
    aligned = shift_dates(x / x.mean(axis=(2, 3), keepdims=True), reg.shifts)[:, :, 6:-6, 6:-6]
    before = np.abs(np.diff(x / x.mean(axis=(2, 3), keepdims=True), axis=0))[:, :, 6:-6, 6:-6]
    assert np.abs(np.diff(aligned, axis=0)).mean() < 0.3 * before.mean()


def test_unrelated_dates_and_noise_are_left_alone():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(3, 2, 64, 64)).astype(np.float32)
    reg = estimate_shifts(noise)
    assert np.all(reg.shifts == 0)
    assert np.all(reg.scores[np.isfinite(reg.scores)] < MIN_PEAK_SCORE)
    # A date that is mostly nodata is not estimated either.
    x = _shifted_series(np.array([[0.0, 0.0], [1.0, 1.0], [0.0, -1.0]]))
    x[2, :, :80] = np.nan
    reg = estimate_shifts(x)
    assert reg.scores[2] == 0 and np.all(reg.shifts[2] == 0)
    np.testing.assert_allclose(reg.shifts[1] - reg.shifts[0], [-1.0, -1.0], atol=0.1)


def test_coregistered_stack_reads_are_seam_free_and_aligned(tmp_path):
    truth = np.array([[0.0, 0.0], [2.0, -1.0], [-1.0, 0.5], [0.5, 1.5]])
    x = np.clip(_shifted_series(truth, size=80), 1, 65535).astype(np.uint16)
    write_stack(tmp_path / "s", x, DATES, nodata=0)
    stack = open_stack(tmp_path / "s")
    assert stack.shifts == ()
    reg = coregister(stack)
    np.testing.assert_allclose(reg.shifts, -(truth - truth.mean(axis=0)), atol=0.1)
    whole = reg.window(0, 0, 80, 80)
    # Any window reads exactly the pixels of the whole read: tiles have no seams.
    np.testing.assert_array_equal(reg.window(17, 30, 25, 33), whole[:, :, 17:42, 30:63])
    np.testing.assert_array_equal(reg.data[:, :, 40:, :50].compute(), whole[:, :, 40:, :50])
    # The dates now agree inside the frame (only noise-free interpolation differences left).
    inner = whole[:, :, 4:-4, 4:-4]
    raw = stack.window(0, 0, 80, 80)[:, :, 4:-4, 4:-4]
    assert np.abs(np.diff(inner, axis=0)).mean() < 0.3 * np.abs(np.diff(raw, axis=0)).mean()


def test_detect_records_the_shifts_and_can_skip_them(tmp_path):
    truth = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, -1.0], [0.0, 0.0]])
    x = np.clip(_shifted_series(truth, size=64), 1, 65535).astype(np.uint16)
    write_stack(tmp_path / "s", x, DATES, nodata=0)
    out = tmp_path / "on.gpkg"
    result = detect(tmp_path / "s", out, method="cva", quicklook=False)
    shifts = json.loads(gpd.read_file(out, layer="runs").shifts_px[0])
    np.testing.assert_allclose(shifts, result.stack.shifts)
    np.testing.assert_allclose(np.array(shifts), -(truth - truth.mean(axis=0)), atol=0.1)
    off = detect(tmp_path / "s", tmp_path / "off.gpkg", method="cva", quicklook=False,
                 skip=["coregister"])  # fmt: skip
    assert json.loads(gpd.read_file(off.paths["gpkg"], layer="runs").shifts_px[0]) == []
    # Aligned dates: CVA sees (almost) no change; misregistered it fires along edges.
    assert off.prob.compute().mean() > 5 * result.prob.compute().mean()


@pytest.mark.parametrize("coreg", [False, True])
def test_training_scenes_move_cloud_masks_with_their_dates(coreg):
    truth = np.array([[0.0, 0.0], [0.0, 2.0]])
    x = _shifted_series(truth, size=64)
    clouds = np.zeros((2, 64, 64), bool)
    clouds[1, 20:30, 20:30] = True
    scene = scene_from_arrays(x, np.zeros((64, 64)), np.zeros((64, 64)), clouds=clouds,
                              coregister=coreg)  # fmt: skip
    cols = np.flatnonzero(scene.clouds[1].any(axis=0))
    if coreg:  # date 2 moved 1 px left (half of the 2 px, relative to the mean)
        assert (cols.min(), cols.max()) == (19, 28)
        np.testing.assert_allclose(scene.raw[0, :, 8:-8, 8:-8], scene.raw[1, :, 8:-8, 8:-8],
                                   rtol=0.05)  # fmt: skip
    else:
        assert (cols.min(), cols.max()) == (20, 29)


def test_coregistration_memory_does_not_grow_with_the_number_of_dates(tmp_path):
    """The window of every date is read and correlated one date at a time: holding every
    date's spectrum (16 bytes a value) would take the whole series several times over."""
    import tracemalloc

    t, size = 40, 128
    truth = np.zeros((t, 2))
    truth[::3] = (1.0, -0.5)
    x = np.clip(_shifted_series(truth, size=size), 1, 65535).astype(np.uint16)
    dates = [f"{2020 + i // 12}-{i % 12 + 1:02d}-15" for i in range(t)]
    write_stack(tmp_path / "s", x, dates, nodata=0)
    stack = open_stack(tmp_path / "s")
    one_date = 4 * size * size * 16  # one date's spectrum, complex128
    tracemalloc.start()
    try:
        reg = coregister(stack)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(reg.shifts, -(truth - truth.mean(axis=0)), atol=0.1)
    assert peak < 8 * one_date, f"peak {peak / 1e6:.1f} MB for {t} dates"
