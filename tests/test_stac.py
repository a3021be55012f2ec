"""STAC items in, offline: local COGs per band and date, a local ItemCollection pointing at them
(relative hrefs, one date split over two same-day items), loaded with odc-stac; the cube gives
the same polygons as the same data as one GeoTIFF per date."""

from __future__ import annotations

import datetime as dt
import json
import re

import geopandas as gpd
import numpy as np
import pystac
import pytest
from affine import Affine
from helpers import DEFAULT_TRANSFORM, run_cli, write_geotiff, write_stack
from rasterio.shutil import copy as copy_raster

from geochange.io.stac import load_stac

DATES = ["2022-03-01", "2022-05-17", "2022-08-02", "2022-10-20"]
ASSETS = {"blue": 0.49, "green": 0.56, "red": 0.665}
PROJ = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"


def _scene(t=4, c=3, h=70, w=90, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(1000, 80, size=(c, h, w)).astype(np.float32)
    data = np.stack([base + rng.normal(0, 10, size=base.shape) for _ in range(t)])
    data[2:, :, 20:45, 30:62] += np.array([600, -400, 900][:c], np.float32)[:, None, None]
    return np.clip(data, 1, 60000).astype(np.uint16)


def _item(folder, data, date, time, cols, name):
    """One STAC item with a COG per band over columns ``cols`` of the scene; hrefs relative."""
    t = DEFAULT_TRANSFORM
    x0, x1 = cols
    transform = Affine(t.a, t.b, t.c + t.a * x0, t.d, t.e, t.f)
    h = data.shape[-2]
    item = pystac.Item(
        id=name,
        geometry=None,
        bbox=None,
        datetime=dt.datetime.fromisoformat(f"{date}T{time}+00:00"),
        properties={
            "proj:epsg": 32633,
            "proj:shape": [h, x1 - x0],
            "proj:transform": list(transform)[:6],
        },
        stac_extensions=[PROJ, EO, RASTER],
    )
    for b, (key, um) in enumerate(ASSETS.items()):
        plain = write_geotiff(
            folder / f"_{name}_{key}.tif", data[b, :, x0:x1], transform=transform, nodata=0
        )
        cog = folder / "cogs" / f"{name}_{key}.tif"
        cog.parent.mkdir(exist_ok=True)
        copy_raster(plain, cog, driver="COG")
        plain.unlink()
        item.add_asset(
            key,
            pystac.Asset(
                href=f"cogs/{cog.name}",
                media_type=pystac.MediaType.COG,
                roles=["data"],
                extra_fields={
                    "eo:bands": [{"name": key, "center_wavelength": um}],
                    "raster:bands": [{"nodata": 0, "data_type": "uint16"}],
                },
            ),
        )
    return item


@pytest.fixture(scope="module")
def items_json(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stac")
    data = _scene()
    w = data.shape[-1]
    items = []
    for i, date in enumerate(DATES):
        if i == 1:  # this date comes as two same-day scenes (halves of the scene, 5 min apart)
            items.append(_item(folder, data[i], date, "10:31:00", (0, 50), f"S2_{date}_a"))
            items.append(_item(folder, data[i], date, "10:36:00", (50, w), f"S2_{date}_b"))
        else:
            items.append(_item(folder, data[i], date, "10:31:00", (0, w), f"S2_{date}"))
    path = folder / "items.json"
    path.write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    write_stack(folder / "tifs", data, DATES, nodata=0, band_names=list(ASSETS))
    return path


def test_items_load_as_one_cube_with_same_day_scenes_grouped(items_json):
    cube, labels = load_stac(items_json, "blue,green,red", chunk_size=32)
    assert cube.dims == ("time", "band", "y", "x")
    assert cube.shape == (4, 3, 70, 90)
    assert cube.rio.crs.to_epsg() == 32633
    assert labels[1].endswith("#S2_2022-05-17_a+S2_2022-05-17_b")
    np.testing.assert_allclose(cube.center_wavelength.values, list(ASSETS.values()))
    np.testing.assert_array_equal(cube.values, _scene())  # halves fused into the whole date


def test_stac_detect_gives_the_polygons_of_the_geotiffs(items_json, tmp_path):
    tifs = items_json.parent / "tifs"
    code, _, err = run_cli("detect", tifs, "-o", tmp_path / "tif.gpkg", "--no-quicklook")
    assert code == 0, err
    code, out, err = run_cli(
        "detect", "--stac", items_json, "--assets", "blue,green,red", "-o", tmp_path / "stac.gpkg",
        "--no-quicklook", "--chunk-size", "32",
    )  # fmt: skip
    assert code == 0, err
    assert "over 4 dates (2022-03-01 .. 2022-10-20)" in out
    a = gpd.read_file(tmp_path / "tif.gpkg", layer="changes")
    b = gpd.read_file(tmp_path / "stac.gpkg", layer="changes")
    assert len(a) == len(b) >= 1
    for col in ("change_date", "date_before", "n_pixels", "area_m2"):
        assert list(a[col]) == list(b[col]), col
    assert all(ga.equals_exact(gb, 1e-6) for ga, gb in zip(a.geometry, b.geometry))
    runs = gpd.read_file(tmp_path / "stac.gpkg", layer="runs")
    assert "S2_2022-05-17_a+S2_2022-05-17_b" in runs.loc[0, "inputs"]
    assert "[490.0, 560.0, 665.0]" in runs.loc[0, "wavelengths_nm"]


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["--assets", "blue,swir16"],
            r"--assets: item 'S2_2022-03-01' has no asset 'swir16'; it has blue, green, red",
        ),
        (["--assets", "blue", "--bbox", "1,2,3"], r"--bbox: found '1,2,3'; expected west,south"),
        ([], r"--stac given without --assets"),
        (["--assets", "red", "--align"], r"--align: given with --stac"),
    ],
)
def test_bad_stac_options_are_one_line_and_write_nothing(items_json, tmp_path, args, match):
    out = tmp_path / "o" / "c.gpkg"
    code, _, err = run_cli("detect", "--stac", items_json, *args, "-o", out)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and re.search(match, err), err
    assert not out.parent.exists()


def test_stac_options_without_stac_are_refused(tmp_path):
    code, _, err = run_cli("detect", "x.tif", "--assets", "red", "-o", tmp_path / "c.gpkg")
    assert code == 2 and "--assets: given without --stac" in err
    code, _, err = run_cli("detect", "-o", tmp_path / "c.gpkg")
    assert code == 2 and "no INPUTS given" in err
