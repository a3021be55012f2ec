"""End-to-end tests of `detect` on real GeoTIFFs: seams, georeferencing, nodata, align, errors."""

from __future__ import annotations

import datetime as dt
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import torch
from affine import Affine
from helpers import DEFAULT_TRANSFORM, run_cli, write_geotiff, write_stack

import geochange
from geochange.cli import main
from geochange.errors import InputError
from geochange.model import CNNLSTM, save_model
from geochange.pipeline import detect

DATES = ["2022-03-01", "2022-05-17", "2022-08-02", "2022-10-20"]


def _scene(t=4, c=3, h=70, w=90, seed=0):
    """Smooth random land plus a planted change: a square appearing on date 2."""
    rng = np.random.default_rng(seed)
    base = rng.normal(1000, 80, size=(c, h, w)).astype(np.float32)
    data = np.stack([base + rng.normal(0, 10, size=base.shape) for _ in range(t)])
    data[2:, :, 20:45, 30:62] += np.array([600, -400, 900][:c], np.float32)[:, None, None]
    return np.clip(data, 1, 60000).astype(np.uint16)


@pytest.fixture()
def stack_dir(tmp_path):
    d = tmp_path / "stack"
    write_stack(d, _scene(), DATES)
    return d


@pytest.fixture(scope="module")
def tiny_model_3bands(tmp_path_factory):
    torch.manual_seed(1)
    net = CNNLSTM(in_bands=5, features=4, hidden=4, head_hidden=4)
    path = tmp_path_factory.mktemp("model5") / "five.ckpt"
    save_model(net, path, {"name": "five-band-test"})
    return path


def test_model_run_is_seam_free_with_uneven_chunks(stack_dir, tiny_model):
    whole = detect(stack_dir, model=tiny_model, chunk_size=512, device="cpu", quicklook=False)
    prob_whole = whole.prob.compute()
    for chunk in (32, 37):
        tiled = detect(stack_dir, model=tiny_model, chunk_size=chunk, device="cpu")
        assert np.nanmax(np.abs(tiled.prob.compute() - prob_whole)) <= 1e-4
        np.testing.assert_array_equal(tiled.date_index.compute(), whole.date_index.compute())


def test_a_chunk_smaller_than_the_halo_is_refused_as_such(stack_dir, tiny_model, tmp_path):
    """A chunk the run's context does not fit in names --chunk-size and the halo it needs,
    not the memory limit, and nothing is written."""
    out = tmp_path / "out" / "c.gpkg"
    code, _, err = run_cli(
        "detect", stack_dir, "-o", out, "--model", tiny_model, "--device", "cpu",
        "--chunk-size", "16", "--no-quicklook", "--no-progress",
    )  # fmt: skip
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("Error: --chunk-size: found 16 px")
    assert not out.parent.exists() or not any(out.parent.iterdir())
    with pytest.raises(InputError, match=r"chunk_size: found 16 px, smaller than the 32"):
        detect(stack_dir, model=tiny_model, chunk_size=16, device="cpu", quicklook=False)


def test_outputs_carry_crs_and_grid(stack_dir, tmp_path):
    out = tmp_path / "out" / "changes.gpkg"
    result = detect(stack_dir, out, method="cva", chunk_size=32)
    with rasterio.open(next(iter(sorted(stack_dir.glob("*.tif"))))) as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    for kind in ("prob", "date"):
        with rasterio.open(result.paths[kind]) as dst:
            assert dst.crs == crs
            assert dst.transform.almost_equals(transform)
            assert dst.shape == shape
    with rasterio.open(result.paths["prob"]) as dst:
        assert dst.overviews(1), "the probability COG has overviews"
        assert dst.profile["tiled"]
    changes = gpd.read_file(out, layer="changes")
    assert changes.crs == crs
    assert len(changes) >= 1
    runs = gpd.read_file(out, layer="runs")
    assert runs.loc[0, "method"] == "cva"
    assert runs.loc[0, "geochange_version"] == geochange.__version__
    assert result.paths["quicklook"].stat().st_size > 10_000


def test_change_across_chunk_borders_is_one_polygon_with_right_date(stack_dir, tmp_path):
    result = detect(stack_dir, tmp_path / "c.gpkg", method="cva", chunk_size=16, quicklook=False)
    big = result.changes.sort_values("area_m2").iloc[-1]
    # The planted square: 25 x 32 px of 10 m, appearing on the third date.
    assert big.area_m2 == pytest.approx(25 * 32 * 100, rel=0.1)
    assert big.change_date == DATES[2]
    assert big.date_before == DATES[1]
    minx, miny, maxx, maxy = big.geometry.bounds
    assert (maxx - minx) > 16 * 10 and (maxy - miny) > 16 * 10  # spans several chunks


def test_area_is_true_area_in_epsg4326(tmp_path):
    data = _scene(c=3)
    transform = Affine(1e-4, 0, 10.0, 0, -1e-4, 45.0)
    d = tmp_path / "geo"
    write_stack(d, data, DATES, crs="EPSG:4326", transform=transform)
    result = detect(d, tmp_path / "geo.gpkg", method="cva", quicklook=False)
    big = result.changes.sort_values("area_m2").iloc[-1]
    # A pixel of 1e-4 deg at ~45 deg N is about 11.1 m (N-S) x 7.87 m (E-W).
    pixel_m2 = (1e-4 * 111_132) * (1e-4 * 111_320 * np.cos(np.radians(44.998)))
    assert big.area_m2 == pytest.approx(big.n_pixels * pixel_m2, rel=0.01)


def test_nodata_never_becomes_change(tmp_path):
    data = _scene().astype(np.uint16)
    data[:, :, 50:, :] = 0  # nodata on every date
    data[3, :, 20:45, 30:45] = 0  # the last date is nodata on part of the change
    d = tmp_path / "nd"
    write_stack(d, data, DATES, nodata=0)
    result = detect(d, tmp_path / "nd.gpkg", method="cva", chunk_size=32, quicklook=False)
    prob = result.prob.compute()
    assert np.isnan(prob[50:]).all()
    assert (result.date_index.compute()[50:] == 255).all()
    assert all(g.bounds[1] > DEFAULT_TRANSFORM.f - 50 * 10 for g in result.changes.geometry)


def test_nodata_date_creates_no_change_for_the_model(tmp_path, tiny_model):
    data = _scene()
    clean = tmp_path / "clean"
    write_stack(clean, data, DATES, nodata=0)
    holed = data.copy()
    holed[1, :, 5:15, 5:15] = 0
    hd = tmp_path / "holed"
    write_stack(hd, holed, DATES, nodata=0)
    a = detect(clean, model=tiny_model, device="cpu").prob.compute()
    b = detect(hd, model=tiny_model, device="cpu").prob.compute()
    # A date missing at a pixel must not raise the change probability there.
    assert np.all(b[5:15, 5:15] <= a[5:15, 5:15] + 0.05)


def test_cloud_mask_on_the_last_date_removes_its_false_change(tmp_path):
    data = _scene()
    data[3, :, 52:66, 5:25] = 9000  # a bright cloud on the last date only: looks like change
    d = tmp_path / "cloudy"
    write_stack(d, data, DATES)
    clouds = np.zeros((4, 70, 90), np.uint8)
    clouds[3, 50:68, 3:27] = 1  # the cloud mask, a little wider than the cloud
    mask = write_geotiff(tmp_path / "clouds.tif", clouds)
    cloud_box = shapely.box(
        DEFAULT_TRANSFORM.c + 50, DEFAULT_TRANSFORM.f - 660, DEFAULT_TRANSFORM.c + 250,
        DEFAULT_TRANSFORM.f - 520,
    )  # fmt: skip
    plain = detect(d, tmp_path / "plain.gpkg", method="cva", quicklook=False)
    assert plain.changes.intersects(cloud_box).any()
    out = tmp_path / "masked.gpkg"
    main(["detect", str(d), "-o", str(out), "--method", "cva", "--masks", str(mask),
          "--no-quicklook", "--no-progress"])  # fmt: skip
    changes = gpd.read_file(out, layer="changes")
    assert not changes.intersects(cloud_box).any()
    # the real change (a DATE field, read back as a datetime)
    assert len(changes) >= 1 and set(changes.change_date) == {pd.Timestamp("2022-08-02")}
    runs = gpd.read_file(out, layer="runs")
    assert json.loads(runs.masks[0]) == [f"{mask}:{i}" for i in range(1, 5)]
    with rasterio.open(out.with_name("masked_prob.tif")) as src:
        prob = src.read(1)  # uint8, 255 = nodata
    assert (prob[52:66, 5:25] != src.nodata).all()  # 3 clear dates left: still mapped


def test_align_resamples_shifted_and_reprojected_dates(tmp_path):
    data = _scene()
    d = tmp_path / "mixed"
    write_stack(d, data[:3], DATES[:3])
    shifted = Affine(10.0, 0, DEFAULT_TRANSFORM.c + 5.0, 0, -10.0, DEFAULT_TRANSFORM.f)
    write_geotiff(d / "S2_20221020.tif", data[3], transform=shifted)
    with pytest.raises(geochange.errors.AlignmentError, match="--align"):
        detect(d, method="cva")
    result = detect(d, tmp_path / "al.gpkg", method="cva", align=True, quicklook=False)
    with rasterio.open(result.paths["prob"]) as dst:
        assert dst.transform.almost_equals(DEFAULT_TRANSFORM)
    assert len(result.changes) >= 1


def test_dates_option_orders_the_stack(tmp_path):
    data = _scene()
    d = tmp_path / "nodates"
    paths = write_stack(d, data, DATES, name_fmt="img_{i}.tif", tag_dates=False)
    result = detect([str(p) for p in paths], dates=DATES, method="cva")
    assert [x.isoformat() for x in result.stack.dates] == DATES


# --- the CLI: one-line errors, exit status 2, nothing written --------------------------------


def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_clean_error(code, err, out_dir, match):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize(
    "case, match",
    [
        ("crs", "CRS"),
        ("size", "size"),
        ("bands", "band"),
        ("one_date", "date"),
        ("duplicate", "the same date"),
        ("no_date", "date"),
        ("truncated", "S2_20221020.tif"),
        ("empty_dir", "no .tif"),
    ],
)
def test_bad_input_gives_one_line_error_and_writes_nothing(tmp_path, capsys, case, match):
    data = _scene()
    d = tmp_path / "in"
    d.mkdir()
    if case == "crs":
        write_stack(d, data[:3], DATES[:3])
        write_geotiff(d / "S2_20221020.tif", data[3], crs="EPSG:32632")
    elif case == "size":
        write_stack(d, data[:3], DATES[:3])
        write_geotiff(d / "S2_20221020.tif", data[3][:, :60, :80])
    elif case == "bands":
        write_stack(d, data[:3], DATES[:3])
        write_geotiff(d / "S2_20221020.tif", data[3][:2])
    elif case == "one_date":
        write_stack(d, data[:1], DATES[:1])
    elif case == "duplicate":
        write_stack(d, data[:2], DATES[:2])
        write_geotiff(d / "copy.tif", data[1], tags={"ACQUISITION_DATE": DATES[1]})
    elif case == "no_date":
        write_stack(d, data[:2], DATES[:2], name_fmt="img_{i}.tif", tag_dates=False)
    elif case == "truncated":
        paths = write_stack(d, data, DATES, compress="deflate", blocksize=16)
        raw = paths[-1].read_bytes()
        paths[-1].write_bytes(raw[: len(raw) // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = _run(
        ["detect", str(d), "-o", str(out_dir / "c.gpkg"), "--method", "cva"], capsys
    )
    _assert_clean_error(code, err, out_dir, match)


def test_model_band_mismatch_is_a_clean_error(stack_dir, tmp_path, capsys, tiny_model_3bands):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = _run(
        [
            "detect",
            str(stack_dir),
            "-o",
            str(out_dir / "c.gpkg"),
            "--model",
            str(tiny_model_3bands),
        ],
        capsys,
    )
    _assert_clean_error(code, err, out_dir, "5 bands")


def test_existing_output_needs_overwrite(stack_dir, tmp_path, capsys):
    out = tmp_path / "c.gpkg"
    out.write_bytes(b"precious")
    code, _, err = _run(["detect", str(stack_dir), "-o", str(out), "--method", "cva"], capsys)
    assert code == 2 and "--overwrite" in err and "Traceback" not in err
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.gpkg", "stack"]
    code, out_text, err = _run(
        [
            "detect",
            str(stack_dir),
            "-o",
            str(out),
            "--method",
            "cva",
            "--overwrite",
            "--no-progress",
        ],
        capsys,
    )
    assert code in (0, None), err
    # Replaced by a real GeoPackage of this run, on the stack's CRS, and nothing else left.
    assert not out.read_bytes().startswith(b"precious")
    with rasterio.open(sorted(stack_dir.glob("*.tif"))[0]) as src:
        crs = src.crs
    assert gpd.read_file(out, layer="changes").crs == crs
    assert gpd.read_file(out, layer="runs")["method"].tolist() == ["cva"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["c.gpkg", "c_prob.tif", "c_date.tif", "c_date.tif.aux.xml", "c_quicklook.png", "stack"]
    )


def test_dates_are_parsed_from_tiff_datetime(tmp_path):
    data = _scene()
    d = tmp_path / "dt"
    d.mkdir()
    for i, day in enumerate(DATES):
        date = dt.date.fromisoformat(day)
        write_geotiff(
            d / f"x{i}.tif", data[i], tags={"TIFFTAG_DATETIME": date.strftime("%Y:%m:%d 10:30:00")}
        )
    result = detect(d, method="cva")
    assert [x.isoformat() for x in result.stack.dates] == DATES
