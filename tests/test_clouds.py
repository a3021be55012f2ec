"""Cloud screen: finds clouds and shadows from spectra and time, keeps real change, seam-free."""

from __future__ import annotations

import json
import pickle

import dask
import geopandas as gpd
import numpy as np
import pytest
from helpers import write_stack

from geochange import tiling
from geochange.pipeline import detect
from geochange.robust import scene_stats
from geochange.stages import Context, build_chain
from geochange.stages.clouds import (
    GROW,
    REACH,
    Clouds,
    _matched,
    blue_band,
    refit,
    scene_spectra,
    screen,
    usable,
)
from geochange.synth import make_scene

DATES = ["2023-03-01", "2023-05-10", "2023-07-02", "2023-09-15", "2023-10-20"]


#: Band centres (nm) of the 4-band scenes here (``make_scene``: blue, green, red, NIR).
WAVELENGTHS = (490.0, 560.0, 665.0, 842.0)


def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    """The screen's scene-wide parameters, fitted as ``Clouds.from_sample`` fits them, the
    bands' wavelengths known (band 0 is blue)."""
    sample = x.reshape(*x.shape[:2], -1)
    stats = scene_stats(sample)
    fit = refit(sample, stats)
    return stats, scene_spectra(sample, stats, fit), fit, blue_band(WAVELENGTHS)


def _land(t: int = 5, size: int = 96, seed: int = 2, roof_from: int | None = None) -> np.ndarray:
    """A land-like date repeated ``t`` times with per-date gain/offset and noise, (t, 4, h, w);
    with ``roof_from``, a bright roof-like surface covers [50:80, 50:80] from that date on."""
    ground = make_scene(size=size, dates=2, bands=4, seed=seed, nuisance="low").images[0]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(t):
        g = ground.astype(np.float32)
        if roof_from is not None and i >= roof_from:
            g[:, 50:80, 50:80] = np.array([2500, 2600, 2700, 1500], np.float32)[:, None, None]
        g = g * rng.uniform(0.9, 1.1) + rng.uniform(-50, 50)
        out.append(g + rng.normal(0, 10, g.shape))
    return np.stack(out).astype(np.float32)


def test_screen_finds_the_synthetic_clouds_and_little_else():
    scene = make_scene(size=160, dates=8, bands=4, seed=11, nuisance="medium")
    assert scene.clouds.any(), "the seed must give clouds"
    x = scene.images.astype(np.float32)
    flagged = screen(x, *_fit(x))
    truth = scene.clouds
    cloudy = truth.any(axis=(1, 2))
    recall = (flagged & truth)[cloudy].sum() / truth[cloudy].sum()
    false_flags = (flagged & ~truth).sum() / (~truth).sum()
    assert recall > 0.5, recall
    assert false_flags < 0.02, false_flags
    # Clear dates stay (almost) unflagged. Date 4 of this seed is hazy in places, and haze is a
    # thin veil: about 7 % of it goes (0.6 % before faint fringes joined their cloud).
    assert flagged[~cloudy].mean() < 0.015


def test_a_transient_veil_is_flagged_a_lasting_change_is_not():
    # A new bright roof-like surface from date 2 on: a lasting change.
    x = _land(roof_from=2)
    white = np.full((4, 1, 1), np.percentile(x, 99.9), np.float32)
    # A thin cloud (40 % opacity) over a 30x30 block on the last date only.
    x[-1, :, 10:40, 10:40] = 0.6 * x[-1, :, 10:40, 10:40] + 0.4 * white
    flagged = screen(x, *_fit(x))
    assert flagged[-1, 12:38, 12:38].mean() > 0.95
    # The roof keeps its look from date 2 on: never flagged while a next date confirms it; on
    # the last date the veil (a tenth of that date) skews its statistics, so a little may be.
    assert not flagged[:4, 50:80, 50:80].any()
    assert flagged[4, 50:80, 50:80].mean() < 0.2
    assert flagged[:-1, 10:40, 10:40].mean() < 0.02


def test_refit_matches_a_half_cloudy_date_on_its_clear_pixels():
    """A thick cloud over 40 % of a date inflates its spread; the clear-pixel refit brings the
    date's clear pixels back onto the other dates' radiometry, and the screen finds more of a
    thin veil on that date than without it."""
    x = _land(t=6)
    white = np.full((4, 1, 1), np.percentile(x, 99.9), np.float32)
    x[3, :, :40, :] = white  # thick cloud over the top 40 rows (of 96)
    x[3, :, 60:90, 10:40] = 0.85 * x[3, :, 60:90, 10:40] + 0.15 * white  # a faint veil
    sample = x.reshape(*x.shape[:2], -1)
    stats = scene_stats(sample)
    fit = refit(sample, stats)
    y0, _ = _matched(x, stats)
    y1, _ = _matched(x, stats, fit)
    clear = (slice(None), slice(44, 58), slice(None))
    others = np.median(np.delete(y1, 3, axis=0), axis=0)[clear]
    err0 = np.abs(y0[3][clear] - np.median(np.delete(y0, 3, axis=0), axis=0)[clear]).mean()
    err1 = np.abs(y1[3][clear] - others).mean()
    assert err1 < 0.5 * err0, (err0, err1)
    assert np.allclose(fit[[0, 1, 2, 4, 5], :, 0], 1.0, atol=0.1)  # clear dates barely move
    veil = (slice(62, 88), slice(12, 38))
    without = screen(x, stats, scene_spectra(sample, stats))[3][veil].mean()
    with_fit = screen(x, stats, scene_spectra(sample, stats, fit), fit)[3][veil].mean()
    assert with_fit > without + 0.2, (without, with_fit)


def test_shadows_next_to_a_cloud_are_flagged():
    x = _land()
    white = np.full((4, 1, 1), np.percentile(x, 99.9), np.float32)
    x[-1, :, 10:40, 10:40] = white  # thick cloud
    x[-1, :, 44:56, 20:50] *= 0.45  # its shadow (within SHADOW_REACH): every band darker alike
    flagged = screen(x, *_fit(x))
    assert flagged[-1, 44:56, 20:50].mean() > 0.95
    assert not flagged[-1, 80:, 60:].any()


def test_a_shadow_under_haze_is_flagged():
    """Haze adds its own light to every date; a shadow takes away only the sunlight. The blue
    band's ratio then stays high (here above 0.8), yet the shadow is found: the screen looks
    for a move towards the scene's dark spectrum, which carries the haze."""
    haze = np.array([1500, 900, 400, 150], np.float32)[:, None, None]
    x = _land() + haze
    white = np.full((4, 1, 1), np.percentile(x, 99.9), np.float32)
    x[-1, :, 10:40, 10:40] = white
    shade = (slice(None), slice(44, 56), slice(20, 50))
    x[-1][shade] = (x[-1][shade] - haze) * 0.6 + haze
    ratio = x[-1][shade].mean(axis=(1, 2)) / np.median(x[:-1], axis=0)[shade].mean(axis=(1, 2))
    assert ratio.max() > 0.8  # band ratios alone would not call it a shadow
    flagged = screen(x, *_fit(x))
    assert flagged[-1, 44:56, 20:50].mean() > 0.95
    assert not flagged[-1, 80:, 60:].any()


def test_a_cloud_on_two_neighbouring_dates_passes_a_roof_stays():
    """The same thick cloud on dates 1 and 2 looks alike on both, yet it is flagged on both: the
    look neither reaches the start nor the end of the series. A roof from date 3 on stays a
    state, even with a cloud over part of it on the last date."""
    x = _land(t=6, roof_from=3)
    white = np.full((4, 1, 1), np.percentile(x, 99.9) * 1.2, np.float32)
    x[1:3, :, 10:40, 10:40] = white
    x[-1, :, 60:90, 60:90] = white
    flagged = screen(x, *_fit(x))
    assert flagged[1, 12:38, 12:38].mean() > 0.95 and flagged[2, 12:38, 12:38].mean() > 0.95
    assert not flagged[3:5, 50:80, 50:80].any()
    assert flagged[-1, 62:88, 62:88].mean() > 0.95


def test_a_faint_fringe_joins_its_cloud_an_isolated_faint_veil_does_not():
    x = _land()
    white = np.full((4, 1, 1), np.percentile(x, 99.9), np.float32)
    yy, xx = np.mgrid[:96, :96]
    dist = np.maximum(np.abs(yy - 30) - 8, np.abs(xx - 30) - 8)  # a 17-px square core
    opacity = np.where(dist <= 0, 0.6, np.where(dist <= 9, 0.05, 0.0)).astype(np.float32)
    opacity[70:90, 70:90] = 0.05  # faint too, but nowhere near a cloud
    x[-1] = x[-1] * (1 - opacity) + opacity * white
    flagged = screen(x, *_fit(x))[-1]
    fringe_beyond_grow = (dist > GROW + 1) & (dist <= 9)
    assert flagged[fringe_beyond_grow].mean() > 0.9
    assert not flagged[74:86, 74:86].any()


def test_screened_tiles_are_seam_free_and_pickle():
    scene = make_scene(size=128, dates=6, bands=4, seed=11, nuisance="medium")
    x = scene.images.astype(np.float32)
    det = build_chain(x.reshape(6, 4, -1), "cva", context=Context(wavelengths=WAVELENGTHS))
    assert det.names == ("clouds", "cva") and det.halo == REACH
    assert det.stages[0].mask(x).any()  # the screen flags something on this cloudy scene
    whole = det(x)
    tiled = tiling.overlap_map(
        dask.array.from_array(x, chunks=(6, 4, 48, 40)), det, det.halo, out_bands=2
    )
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(np.asarray(tiled.compute()), whole)
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again(x), whole)


@pytest.mark.parametrize(("dates", "bands"), [(2, 4), (5, 3), (5, 1)])
def test_too_few_dates_or_bands_leave_the_detector_unscreened(dates, bands):
    assert not usable(dates, bands)
    sample = np.random.default_rng(0).uniform(100, 200, (dates, bands, 500)).astype(np.float32)
    assert "clouds" not in build_chain(sample, "cva").names


def test_detect_screens_by_default_without_masks_and_records_it(tmp_path):
    x = _land(size=64)
    white = np.full((4, 1, 1), np.percentile(x, 99.9), np.float32)
    x[-1, :, 10:40, 10:40] = 0.5 * x[-1, :, 10:40, 10:40] + 0.5 * white
    write_stack(tmp_path / "s", np.clip(x, 1, 65535).astype(np.uint16), DATES, nodata=0)
    wl = ",".join(f"{w:g}" for w in WAVELENGTHS)
    on = detect(tmp_path / "s", tmp_path / "on.gpkg", method="cva", quicklook=False,
                wavelengths=wl)  # fmt: skip
    off = detect(tmp_path / "s", tmp_path / "off.gpkg", method="cva", quicklook=False,
                 wavelengths=wl, skip=["clouds"])  # fmt: skip
    assert "clouds" in json.loads(gpd.read_file(on.paths["gpkg"], layer="runs").stages[0])
    assert "clouds" not in json.loads(gpd.read_file(off.paths["gpkg"], layer="runs").stages[0])
    # The veil is a change to CVA without the screen, and nothing with it.
    assert off.prob.compute()[15:35, 15:35].mean() > 0.4
    assert on.prob.compute()[15:35, 15:35].mean() < 0.2


@pytest.mark.parametrize("t", [2, 3, 4, 7, 8])
def test_reference_is_the_median_of_the_other_dates(t):
    from geochange.stages.clouds import _medians_of_others

    y = np.random.default_rng(t).normal(size=(t, 3, 9, 9)).astype(np.float32)
    y[:, 0, :4] = 1.0  # ties
    expected = np.stack([np.median(np.delete(y, i, axis=0), axis=0) for i in range(t)])
    np.testing.assert_allclose(_medians_of_others(y), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("t", [2, 3, 4, 7, 12])
def test_refit_reference_is_the_nan_median_of_the_other_dates(t):
    """The refit's per-date reference skips nodata: NaN only where no other date has a value."""
    import warnings

    from geochange.stages.clouds import _medians_of_others

    rng = np.random.default_rng(t)
    y = rng.normal(size=(t, 3, 400)).astype(np.float32)
    y[rng.random(y.shape) < 0.3] = np.nan
    y[:, 0, :5] = np.nan  # no date at all
    y[1:, 0, 5:10] = np.nan  # one date only: the others' median is NaN for it, its value else
    y[:, 1] = np.round(y[:, 1])  # ties
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.stack([np.nanmedian(np.delete(y, i, axis=0), axis=0) for i in range(t)])
    np.testing.assert_array_equal(_medians_of_others(y), expected)


def test_new_roofs_on_the_last_date_of_a_brighter_acquisition_are_kept(tmp_path):
    """Lasting changes seen on the last date only, that date 10 % brighter than the others: no
    later date can show that they stay, and bright roofs move towards the scene's bright end as
    a veil of cloud would. New buildings (7-8 px across at 10 m) are narrower than a cloud's
    core: they are kept and reported as resting on the last date alone; a white veil on the
    same date is screened."""
    rng = np.random.default_rng(5)
    ground = make_scene(size=96, dates=2, bands=4, seed=2, nuisance="low").images[0]
    gains = (1.0, 0.98, 1.02, 0.99, 1.01, 1.10)
    x = np.stack([ground * g + rng.normal(0, 10, ground.shape) for g in gains]).astype(np.float32)
    roof = np.array([2500, 2600, 2700, 1500], np.float32)[:, None, None]
    roofs = [(slice(50, 58), slice(50, 57)), (slice(62, 69), slice(70, 78)),
             (slice(76, 84), slice(52, 60))]  # fmt: skip
    for r in roofs:
        x[(-1, slice(None), *r)] = roof * gains[-1] + rng.normal(0, 10, (4, 1, 1))
    white = np.full((4, 1, 1), np.percentile(x, 99.9), np.float32)
    x[-1, :, 10:40, 10:40] = 0.6 * x[-1, :, 10:40, 10:40] + 0.4 * white
    dates = [*DATES, "2023-12-01"]
    write_stack(tmp_path / "s", np.clip(x, 1, 65535).astype(np.uint16), dates, nodata=0)
    wl = ",".join(f"{w:g}" for w in WAVELENGTHS)
    res = detect(tmp_path / "s", tmp_path / "c.gpkg", method="cva", quicklook=False,
                 wavelengths=wl)  # fmt: skip
    prob = res.prob.compute()
    for r in roofs:
        assert prob[r].mean() > 0.5  # each roof: found
    assert prob[15:35, 15:35].mean() < 0.2  # the veil: screened
    changes = gpd.read_file(res.paths["gpkg"], layer="changes")
    for r in roofs:
        on_roof = changes[changes.intersects(_pixel_box(res, r[0].start + 3, r[1].start + 3))]
        assert len(on_roof) == 1 and on_roof.later_dates.iloc[0] == 0
        assert str(on_roof.change_date.iloc[0])[:10] == dates[-1]
    # Without the bands' wavelengths nothing says which band is blue: the last date is kept
    # whole (the veil too), never masked on a guess.
    assert not Clouds.from_sample(x.reshape(6, 4, -1)).mask(x)[-1].any()


def _pixel_box(res, row: int, col: int):
    """A small box around pixel (row, col) of the result's grid, in its CRS."""
    from shapely.geometry import Point

    xw, yw = res.stack.grid.transform @ (col + 0.5, row + 0.5)
    return Point(xw, yw).buffer(1.0)
