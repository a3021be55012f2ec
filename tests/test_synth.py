"""Synthetic scenes: contents, determinism, GeoTIFF/GeoPackage output, semi-synthetic series, CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.features import rasterize
from scipy import ndimage

from geochange.cli import cli
from geochange.errors import InputError, OutputExistsError
from geochange.synth import (
    Scene,
    default_wavelengths,
    load_pair,
    make_scene,
    semi_synthetic,
    write_scene,
)
from geochange.synth.nuisances import shift_bilinear

#: Folder of real labelled pairs (research licences, not in the repository), if one is given.
_REAL = os.environ.get("GEOCHANGE_REAL_SAMPLES")
REAL = Path(_REAL) if _REAL else None
SIZE = 96


@pytest.fixture(scope="module")
def scene() -> Scene:
    return make_scene(SIZE, dates=6, bands=4, seed=11, nuisance="high")


@pytest.fixture(scope="module")
def written(scene: Scene, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_scene(scene, tmp_path_factory.mktemp("scene"))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_scene_contract(scene: Scene) -> None:
    t, c, h, w = scene.images.shape
    assert (t, c, h, w) == (6, 4, SIZE, SIZE)
    assert scene.images.dtype == np.uint16 and scene.images.min() >= 1  # 0 = nodata only
    assert len(scene.dates) == t and all(a < b for a, b in zip(scene.dates, scene.dates[1:]))
    assert len({(b - a).days for a, b in zip(scene.dates, scene.dates[1:])}) > 1  # irregular
    assert scene.change.dtype == np.uint8 and scene.date_index.dtype == np.uint8
    np.testing.assert_array_equal(scene.change, (scene.date_index > 0).astype(np.uint8))
    assert set(np.unique(scene.date_index)) <= set(range(t))
    assert scene.clouds.shape == (t, h, w) and scene.clouds.dtype == bool
    assert scene.grid.crs.to_epsg() == 32633 and scene.grid.res == (10.0, 10.0)
    assert scene.grid.nodata == 0
    assert scene.band_wavelengths == (490.0, 560.0, 665.0, 842.0)
    assert 0.015 <= scene.change.mean() <= 0.07
    assert scene.changes["micro"].mean() >= 0.3
    assert list(scene.changes.columns) == [
        "geometry", "change_date", "date_index", "kind", "micro", "area_px",
    ]  # fmt: skip
    for _, row in scene.changes.iterrows():
        assert row.change_date == scene.dates[row.date_index].isoformat()
        assert row.micro == (row.area_px <= 9)
        assert (scene.date_index == row.date_index).sum() >= row.area_px


def test_same_seed_same_arrays_other_seed_differs() -> None:
    a = make_scene(64, dates=4, seed=3)
    b = make_scene(64, dates=4, seed=3)
    c = make_scene(64, dates=4, seed=4)
    for name in ("images", "change", "date_index", "clouds"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.dates == b.dates
    assert not np.array_equal(a.images, c.images)


def test_geotiffs_are_georeferenced_and_dated(scene: Scene, written: dict) -> None:
    assert len(written["images"]) == len(scene.dates)
    for path, date in zip(written["images"], scene.dates):
        assert path.name == f"S2_{date:%Y%m%d}.tif"
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32633
            assert src.transform == scene.grid.transform
            assert (src.width, src.height, src.count) == (SIZE, SIZE, 4)
            assert src.dtypes[0] == "uint16" and src.nodata == 0
            assert src.tags()["ACQUISITION_DATE"] == date.isoformat()
            assert src.descriptions[0].startswith("B02") and src.descriptions[3].startswith("B08")
            assert src.compression.name.lower() == "deflate"
            assert src.block_shapes[0] == (SIZE, SIZE)  # one 96 x 96 tile (256 x 256 when larger)
    with rasterio.open(written["label"]) as src:
        assert src.count == 2 and src.dtypes == ("uint8", "uint8") and src.nodata == 255
        assert src.transform == scene.grid.transform and src.crs == scene.grid.crs
        np.testing.assert_array_equal(src.read(1), scene.change)
        np.testing.assert_array_equal(src.read(2), scene.date_index)
    with rasterio.open(written["clouds"]) as src:
        assert src.count == len(scene.dates)
        np.testing.assert_array_equal(src.read().astype(bool), scene.clouds)


def test_changes_gpkg_agrees_with_label(scene: Scene, written: dict) -> None:
    gdf = gpd.read_file(written["changes"], layer="changes")
    assert gdf.crs == scene.grid.crs and len(gdf) == len(scene.changes) > 0
    burnt = rasterize(
        ((geom, int(j)) for geom, j in zip(gdf.geometry, gdf["date_index"])),
        out_shape=scene.grid.shape,
        transform=scene.grid.transform,
        fill=0,
        dtype="uint8",
    )
    with rasterio.open(written["label"]) as src:
        change, dates = src.read(1), src.read(2)
    inter = ((burnt > 0) & (change == 1)).sum()
    union = ((burnt > 0) | (change == 1)).sum()
    assert inter / union > 0.99
    both = (burnt > 0) & (change == 1)
    np.testing.assert_array_equal(burnt[both], dates[both])
    expected = [scene.dates[j].isoformat() for j in gdf["date_index"]]
    assert gdf["change_date"].tolist() == expected


def test_same_seed_same_files_other_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_scene(make_scene(64, dates=3, seed=seed), tmp_path / name)
    a, b, c = (_digests(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() != c.keys() or a != c


def test_cloud_masks_cover_the_clouds() -> None:
    # The first seed whose scene has clouds (deterministic).
    for seed in range(20):
        cloudy = make_scene(SIZE, dates=5, seed=seed, nuisance="high")
        if cloudy.clouds.mean() > 0.02:
            break
    clear = make_scene(SIZE, dates=5, seed=seed, nuisance="high", _apply_clouds=False)
    np.testing.assert_array_equal(cloudy.change, clear.change)
    blue = cloudy.images[:, 0].astype(np.int32) - clear.images[:, 0].astype(np.int32)
    brighter = blue > 300  # 0.03 reflectance brighter than the cloud-free render
    darker = blue < -300  # cloud shadow
    assert brighter.sum() > 100
    assert (brighter & cloudy.clouds).sum() >= 0.99 * brighter.sum()
    assert (darker & cloudy.clouds).sum() >= 0.99 * darker.sum()
    # Unmasked pixels are untouched by clouds; masked ones are on average much brighter in blue.
    np.testing.assert_array_equal(blue[~cloudy.clouds], 0)
    assert blue[cloudy.clouds].mean() > 500


@pytest.mark.parametrize("bands", range(1, 17))
def test_any_band_count(bands: int) -> None:
    s = make_scene(48, dates=3, bands=bands, seed=bands)
    assert s.images.shape == (3, bands, 48, 48)
    assert len(s.band_wavelengths) == bands == len(default_wavelengths(bands))
    assert all(440 <= w <= 2200 for w in s.band_wavelengths)
    assert s.change.any()


def test_phenology_and_changes_visible() -> None:
    s = make_scene(128, dates=6, seed=21, nuisance="low", start="2023-03-01")
    red, nir = s.images[:, 2].astype(float), s.images[:, 3].astype(float)
    ndvi = ((nir - red) / (nir + red)).mean(axis=(1, 2))
    assert ndvi.max() - ndvi.min() > 0.05  # seasonal cycle across the dates
    # A change differs from its last pre-change date more than unchanged land does.
    j = int(s.date_index[s.change == 1][0])
    diff = np.abs(s.images[j].astype(float) - s.images[j - 1].astype(float)).max(axis=0)
    clear = ~s.clouds[j] & ~s.clouds[j - 1]
    on = (s.date_index == j) & clear
    off = (s.change == 0) & clear
    assert np.median(diff[on]) > np.median(diff[off])


def test_shift_matches_ndimage() -> None:
    img = np.random.default_rng(0).random((2, 20, 30)).astype(np.float32)
    for dy, dx in ((0.3, -1.7), (-2.0, 0.5), (1.0, 0.0)):
        ref = ndimage.shift(img, (0, dy, dx), order=1, mode="nearest")
        np.testing.assert_allclose(shift_bilinear(img, dy, dx), ref, atol=1e-6)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InputError, match=r"bands=17: expected an integer from 1 to 16"):
        make_scene(32, bands=17)
    with pytest.raises(InputError, match=r"nuisance='extreme': expected one of low, medium, high"):
        make_scene(32, nuisance="extreme")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"dates=1"):
        make_scene(32, dates=1)
    with pytest.raises(InputError, match=r"geographic CRS"):
        make_scene(32, crs="EPSG:4326")
    t0 = np.ones((3, 8, 8), np.uint8)
    with pytest.raises(InputError, match=r"label: found values \[7\]"):
        semi_synthetic(t0, t0, np.full((8, 8), 7, np.uint8))
    with pytest.raises(InputError, match=r"change_date_index=5"):
        semi_synthetic(t0, t0, np.zeros((8, 8), np.uint8), dates=4, change_date_index=5)


def test_load_pair_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"not a folder"):
        load_pair(tmp_path / "nope")
    with pytest.raises(InputError, match=r"no t0.tif or t0.png"):
        load_pair(tmp_path)


@pytest.mark.skipif(
    REAL is None or not REAL.is_dir(),
    reason="set GEOCHANGE_REAL_SAMPLES to a folder of real labelled pairs",
)
@pytest.mark.parametrize("name", ["landsat_taizhou", "dsifn_0_2"])
def test_semi_synthetic_from_real_pair(name: str, tmp_path: Path) -> None:
    sample = REAL / name
    if not sample.is_dir():
        pytest.skip(f"{sample} missing")
    t0, t1, label, grid = load_pair(sample)
    assert set(np.unique(label)) <= {0, 1, 255}
    s = semi_synthetic(t0, t1, label, dates=5, seed=2, grid=grid, change_date_index=3)
    assert s.images.shape == (5, *t0.shape) and s.images.dtype == np.uint16
    assert len(s.dates) == 5 and all(a < b for a, b in zip(s.dates, s.dates[1:]))
    np.testing.assert_array_equal(s.change, label)
    assert (s.date_index[label == 1] == 3).all()
    assert (s.date_index[label == 255] == 255).all() and (s.date_index[label == 0] == 0).all()
    assert not s.clouds[3].any()  # the change date is never clouded
    # Dates before k show t0, from k on t1: compare on the changed pixels.
    scale = 255.0 if t0.dtype == np.uint8 else 10000.0
    ch = label == 1
    a0, a1 = t0[:, ch] / scale, t1[:, ch] / scale
    for t in range(5):
        img = s.images[t][:, ch] / 10000.0
        ok = ~s.clouds[t][ch]
        d0 = np.abs(img - a0)[:, ok].mean()
        d1 = np.abs(img - a1)[:, ok].mean()
        assert (d0 < d1) == (t < 3)
    if grid is None:
        assert s.grid.crs.to_epsg() == 32633  # local stand-in grid for PNG pairs
    else:
        assert s.grid == grid
    paths = write_scene(s, tmp_path / "out")
    gdf = gpd.read_file(paths["changes"], layer="changes")
    burnt = rasterize(gdf.geometry, out_shape=s.grid.shape, transform=s.grid.transform)
    np.testing.assert_array_equal(burnt.astype(bool), label == 1)
    assert set(gdf["change_date"]) == {s.dates[3].isoformat()}


def test_semi_synthetic_random_date_is_seeded() -> None:
    t0 = np.full((4, 16, 16), 1000, np.uint16)
    label = np.zeros((16, 16), np.uint8)
    label[4:8, 4:8] = 1
    ks = {
        int(semi_synthetic(t0, t0 + 500, label, dates=6, seed=s).date_index.max()) for s in range(8)
    }
    assert ks <= set(range(1, 6)) and len(ks) > 1
    a = semi_synthetic(t0, t0 + 500, label, dates=6, seed=3)
    b = semi_synthetic(t0, t0 + 500, label, dates=6, seed=3)
    np.testing.assert_array_equal(a.images, b.images)


def test_cli_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "scene"
    runner = CliRunner()
    args = ["synth", str(out), "--size", "48", "--dates", "3", "--seed", "7"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "Wrote 3 dates" in res.output
    assert len(list((out / "stack").glob("S2_*.tif"))) == 3
    assert (out / "truth" / "changes.gpkg").exists()
    before = _digests(out)
    res = runner.invoke(cli, args)
    assert isinstance(res.exception, OutputExistsError)
    assert str(out) in str(res.exception) and "--overwrite" in str(res.exception)
    assert _digests(out) == before
    res = runner.invoke(cli, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert _digests(out) == before  # same seed, same files


def test_cli_help_has_examples() -> None:
    res = CliRunner().invoke(cli, ["synth", "--help"])
    assert res.exit_code == 0 and "geochange synth" in res.output and "--nuisance" in res.output


def test_dates_start() -> None:
    s = make_scene(32, dates=3, seed=1, start="2020-06-01")
    assert s.dates[0] == dt.date(2020, 6, 1)


@pytest.mark.slow
def test_data_samples_are_reproducible(tmp_path: Path) -> None:
    """data_samples/ is exactly what its documented command makes (run with -m slow)."""
    committed = Path(__file__).resolve().parents[1] / "data_samples"
    if not (committed / "stack").is_dir():
        pytest.skip("data_samples/ missing")
    scene = make_scene(448, dates=6, bands=4, seed=2024, nuisance="medium")
    write_scene(scene, tmp_path / "ds")
    expected = {k: v for k, v in _digests(committed).items() if not k.endswith(".md")}
    assert _digests(tmp_path / "ds") == expected
