"""Long series in temporal windows: the window plan, the merging of the windows' reports into
per-pixel events, what the rasters report of them, and a whole run with two events per pixel."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyogrio
import pytest
import rasterio
from helpers import run_cli, write_stack

from geochange.config import ConfigError, DetectConfig
from geochange.events import merge, owners, plan_windows, report, summary
from geochange.pipeline import detect

QUIET = ("coregister", "clouds", "refine", "micro", "emerge")


def test_windows_cover_the_series_with_the_overlap_asked():
    assert plan_windows(8, 10, 3) == [(0, 8)]
    assert plan_windows(10, 10, 3) == [(0, 10)]
    wins = plan_windows(30, 10, 3)
    assert wins[0] == (0, 10) and wins[-1] == (20, 30)
    assert all(b - a == 10 for a, b in wins)
    assert all(a2 - a1 <= 7 and b1 - a2 >= 3 for (a1, b1), (a2, _) in zip(wins, wins[1:]))
    for t in range(11, 160, 7):  # windows, not dates, grow with T: linear time
        assert len(plan_windows(t, 10, 3)) == -(-(t - 10) // 7) + 1
    with pytest.raises(ValueError, match="window_overlap"):
        plan_windows(30, 10, 9)


def test_every_change_date_has_one_owner_that_can_see_it():
    wins = plan_windows(40, 10, 3)
    own = owners(40, wins)
    assert own[0] == -1
    for j in range(1, 40):
        a, b = wins[own[j]]
        assert a + 1 <= j <= b - 1  # dates j-1 and j are both in the owner
    # A date in an overlap belongs to the window where it has the most dates around it.
    assert own[9] == 1 and own[2] == 0


def _reports(values, shape=(1, 1)):
    """Windows' (prob, date) reports, each a constant (h, w) raster."""
    probs = [np.full(shape, p, np.float32) for p, _ in values]
    dates = [np.full(shape, d, np.float32) for _, d in values]
    return probs, dates


def test_one_change_seen_by_two_windows_is_one_event():
    wins = plan_windows(24, 10, 3)  # (0,10) (7,17) (14,24)
    own = owners(24, wins)
    probs, dates = _reports([(0.9, 9), (0.8, 9), (0.1, 15)])
    quiet, sp, sd = merge(probs, dates, own, 0.5)
    assert (sd > 0).sum() == 1 and sd.max() == 9 and sp.max() == pytest.approx(0.9)
    assert quiet[0, 0] == pytest.approx(0.1)
    # The same change dated a date apart by the two windows: still one event.
    probs, dates = _reports([(0.9, 9), (0.95, 10), (0.1, 15)])
    _, sp, sd = merge(probs, dates, own, 0.5)
    assert (sd > 0).sum() == 1 and sd.max() == 10


def test_a_report_two_windows_do_not_agree_on_stays_below_the_threshold_as_stored():
    import dask.array as da

    from geochange.windowed import report_rasters

    wins = plan_windows(24, 10, 3)  # (0,10) (7,17) (14,24)
    own = owners(24, wins)
    # Window 0 reports a change on date 8; window 1 holds only date 7 before it, maybe just the
    # after-state of a change on date 7 or 8: its silence is no denial.
    probs, dates = _reports([(0.9, 8), (0.1, 12), (0.1, 15)])
    _, sp, sd = merge(probs, dates, own, 0.5, windows=wins)
    assert sd.max() == 8 and sp.max() == pytest.approx(0.9)
    # On date 9, window 1 holds dates 7 and 8 before it, judges it and does not report it.
    probs, dates = _reports([(0.9, 9), (0.1, 12), (0.1, 15)])
    quiet, sp, sd = merge(probs, dates, own, 0.5, windows=wins)
    assert (sd == 0).all() and quiet[0, 0] < 0.5
    out = np.concatenate([quiet[None], sp, sd.astype(np.float32)])
    prob, interval, _ = report_rasters(da.from_array(out), len(wins), 0.5, "first", 0)
    # Stored in steps of 1/254, it must not round up to the threshold: no change, no date.
    assert prob.compute()[0, 0] == pytest.approx(126 / 254) and interval.compute()[0, 0] == 0


def test_two_changes_far_apart_are_two_events_and_report_picks_first_latest_since():
    wins = plan_windows(24, 10, 3)
    own = owners(24, wins)
    probs, dates = _reports([(0.9, 4), (0.2, 12), (0.7, 19)])
    quiet, sp, sd = merge(probs, dates, own, 0.5)
    assert sorted(sd[sd > 0].tolist()) == [4, 19]
    prob, interval, _, _ = report(quiet, sp, sd, "first")
    assert interval[0, 0] + 1 == 4 and prob[0, 0] == pytest.approx(0.9)
    prob, interval, _, _ = report(quiet, sp, sd, "latest")
    assert interval[0, 0] + 1 == 19 and prob[0, 0] == pytest.approx(0.7)
    prob, interval, sp2, sd2 = report(quiet, sp, sd, "first", since=10)
    assert interval[0, 0] + 1 == 19 and (sd2 > 0).sum() == 1
    prob, interval, _, sd3 = report(quiet, sp, sd, "first", since=20)
    assert (sd3 > 0).sum() == 0 and prob[0, 0] == pytest.approx(0.2)  # below the threshold
    ev = summary(sp, sd, np.zeros((1, 1), bool))
    assert ev[:, 0, 0].tolist() == [2, 4, 19, round(0.7 * 254)]


def test_nodata_stays_nodata():
    own = owners(24, plan_windows(24, 10, 3))
    probs, dates = _reports([(np.nan, 0)] * 3)
    quiet, sp, sd = merge(probs, dates, own, 0.5)
    prob, _, _, _ = report(quiet, sp, sd)
    assert np.isnan(prob[0, 0]) and summary(sp, sd, np.isnan(prob))[0, 0, 0] == 255


def test_config_checks_window_events_and_since():
    with pytest.raises(ConfigError, match="window_overlap"):
        DetectConfig(window=6, window_overlap=5)
    with pytest.raises(ConfigError, match="events"):
        DetectConfig(events="last")
    with pytest.raises(ConfigError, match="since: found '2024-13-01'"):
        DetectConfig(since="2024-13-01")
    assert DetectConfig(since="2024-03-01").since == dt.date(2024, 3, 1)


# -- a whole run: a field cleared, then built on --------------------------------------------

T = 20
DATES = [(dt.date(2021, 1, 1) + dt.timedelta(days=30 * i)).isoformat() for i in range(T)]
SQUARE = (slice(12, 30), slice(12, 30))


@pytest.fixture(scope="module")
def two_events(tmp_path_factory):
    """48² px, 20 monthly dates: vegetation cleared to soil on date 6, a roof on date 15."""
    rng = np.random.default_rng(0)
    veg = np.array([500, 800, 600, 3500.0])
    soil = np.array([1400, 1700, 2100, 2600.0])
    roof = np.array([2600, 2500, 2400, 2800.0])
    base = veg[:, None, None] + rng.normal(0, 30, (4, 48, 48))
    data = np.stack([base + rng.normal(0, 15, base.shape) for _ in range(T)])
    data[6:, :, SQUARE[0], SQUARE[1]] = soil[:, None, None] + rng.normal(0, 15, (4, 18, 18))
    data[15:, :, SQUARE[0], SQUARE[1]] = roof[:, None, None] + rng.normal(0, 15, (4, 18, 18))
    folder = tmp_path_factory.mktemp("two_events") / "stack"
    write_stack(folder, np.clip(data, 1, 60000).astype(np.uint16), DATES)
    return folder


def test_two_events_per_pixel_in_rasters_and_polygons(two_events, tmp_path):
    out = tmp_path / "c.gpkg"
    res = detect(
        two_events, out, method="cva", skip=QUIET, window=8, window_overlap=3, quicklook=False
    )
    with rasterio.open(res.paths["events"]) as src:
        ev = src.read()
        assert src.descriptions[0] == "event_count"
    inside = ev[:, SQUARE[0], SQUARE[1]]
    assert (inside[0] == 2).all() and (inside[1] == 6).all() and (inside[2] == 15).all()
    assert (ev[0, :10, :] == 0).all()
    layers = dict(pyogrio.list_layers(out))
    assert "events" in layers
    events = pyogrio.read_dataframe(out, layer="events")
    assert sorted(events["change_date"].astype(str)) == [DATES[6], DATES[15]]
    assert sorted(events["date_before"].astype(str)) == [DATES[5], DATES[14]]
    changes = pyogrio.read_dataframe(out, layer="changes")
    assert changes["change_date"].astype(str).tolist() == [DATES[6]]  # first event


def test_latest_and_since_report_the_monitoring_view(two_events, tmp_path):
    late = detect(two_events, None, method="cva", skip=QUIET, window=8, events="latest")
    date = late.date_index.compute()
    assert (date[SQUARE] == 15).all()
    since = detect(two_events, None, method="cva", skip=QUIET, window=8, since=DATES[10])
    assert (since.date_index.compute()[SQUARE] == 15).all()
    assert (since.events.compute()[0][SQUARE] == 1).all()
    every = detect(two_events, None, method="cva", skip=QUIET, window=8, events="all")
    assert sorted(every.changes["change_date"]) == [DATES[6], DATES[15]]


def test_a_long_series_in_one_window_keeps_its_events_outputs_a_short_one_has_none(
    two_events, tmp_path
):
    res = detect(two_events, tmp_path / "c.gpkg", method="cva", skip=QUIET, window=20)
    assert res.run["windows"] == [[0, T]]
    assert "events" in res.paths and "events" in dict(pyogrio.list_layers(res.paths["gpkg"]))
    assert (res.events.compute()[0][SQUARE] == 1).all()  # one window: one event per pixel
    short = sorted(two_events.glob("*.tif"))[:16]
    assert len(short) == 16
    res = detect(short, tmp_path / "d.gpkg", method="cva", skip=QUIET)
    assert res.events is None and "events" not in res.paths
    assert "events" not in dict(pyogrio.list_layers(res.paths["gpkg"]))


def test_the_deep_model_run_whole_finds_the_next_event_of_a_pixel(tmp_path):
    """24 dates run whole with every event asked for: the network judges each changed pixel's
    series again from its first event on, so ground changed twice shows two events, dated,
    and ground changed once keeps one. Asked for the first event only, it does not look."""
    from geochange.synth import make_scene, write_scene

    scene = make_scene(64, dates=24, bands=4, seed=24, events=2)
    write_scene(scene, tmp_path / "s")
    first_only = detect(tmp_path / "s" / "stack", None, window=24)
    assert first_only.run["next_events"] == 0 and first_only.events.compute()[0].max() == 1
    res = detect(tmp_path / "s" / "stack", None, window=24, events="all")
    assert res.run["windows"] == [[0, 24]] and res.run["next_events"] == 1
    count, first, last, _ = res.events.compute()
    changed = np.nan_to_num(res.prob.compute()) >= 0.5
    ref = scene.events
    twice, once = changed & (ref[1] > 0), changed & (ref[0] > 0) & (ref[1] == 0)
    assert twice.sum() > 50 and once.sum() > 50
    assert (count[twice] == 2).mean() > 0.8
    assert (last[twice & (count == 2)] == ref[1][twice & (count == 2)]).mean() > 0.9
    assert (first[twice] == ref[0][twice]).mean() > 0.9
    assert (count[once] == 1).mean() > 0.9
    # Events after a date: the next event too, so a pixel first changed before it keeps its next.
    since = detect(tmp_path / "s" / "stack", None, window=24, since=scene.dates[12])
    assert since.run["next_events"] == 1
    late = twice & (count == 2) & (ref[0] < 12) & (ref[1] >= 12)
    assert late.sum() > 10 and (since.events.compute()[0][late] == 1).all()


def test_cli_events_and_since(two_events, tmp_path):
    out = tmp_path / "c.gpkg"
    code, stdout, _ = run_cli(
        "detect", two_events, "-o", out, "--method", "cva", "--skip", ",".join(QUIET),
        "--window", "8", "--events", "latest", "--since", DATES[3], "--no-quicklook",
    )  # fmt: skip
    assert code == 0, stdout
    assert "2 change events" in stdout
    code, _, err = run_cli("detect", two_events, "-o", tmp_path / "d.gpkg", "--since", "soon")
    assert code == 2 and "--since: found 'soon'" in err
    assert not (tmp_path / "d.gpkg").exists()


def test_long_series_get_a_continuous_date_ramp_and_few_style_classes():
    from geochange.io.gpkg import default_style_qml
    from geochange.palette import MAX_CLASSES, date_classes, date_colours, date_ramp

    short = DATES[:8]
    assert date_ramp(short) == date_colours(7)  # few dates: one listed colour each, as before
    start = dt.date(2020, 1, 1)
    days = [start + dt.timedelta(days=d) for d in (0, 10, 20, 30, 400, 410, 420)]
    days += [start + dt.timedelta(days=430 + 12 * i) for i in range(40)]
    ramp = date_ramp(days)
    # Coloured by time: the 370-day gap is a jump in colour, consecutive 10-day steps are close.
    step = np.abs(np.subtract(ramp[1], ramp[0])).sum()
    jump = np.abs(np.subtract(ramp[3], ramp[2])).sum()
    assert jump > 5 * step
    classes = date_classes(days)
    assert len(classes) <= MAX_CLASSES
    assert classes[0][0] == days[1] and classes[-1][1] == days[-1]
    qml = default_style_qml(days)
    assert qml.count("<range ") == len(classes) and " – " in qml


def test_synthetic_scene_with_later_events(tmp_path):
    from geochange.synth import make_scene, write_scene
    from geochange.synth.events import MIN_GAP

    one = make_scene(96, dates=30, bands=4, seed=11)
    two = make_scene(96, dates=30, bands=4, seed=11, events=2)
    assert one.events is None and two.events.shape == (2, 96, 96)
    first, second = two.events.astype(int)
    assert (first == two.date_index).all()
    multi = second > 0
    assert multi.sum() > 20 and (second[multi] - first[multi] >= MIN_GAP).all()
    # Ground that changes again shows it: the images differ after the second date.
    y, x = np.argwhere(multi)[0]
    j = second[y, x]
    assert np.abs(two.images[j:, :, y, x].astype(int) - one.images[j:, :, y, x]).max() > 300
    paths = write_scene(two, tmp_path / "s")
    with rasterio.open(paths["events"]) as src:
        assert (src.read() == two.events).all()
