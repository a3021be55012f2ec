"""Evaluation metrics against hand-computed cases; real GeoTIFFs and GeoPackages in tmp_path."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from helpers import DEFAULT_TRANSFORM, write_geotiff
from rasterio.features import rasterize
from rasterio.warp import transform_bounds, transform_geom
from shapely.geometry import box, mapping, shape

from geochange.cli import cli
from geochange.errors import InputError
from geochange.evaluate import (
    align_inputs,
    area_estimates,
    date_accuracy,
    evaluate,
    evaluate_arrays,
    object_metrics,
    pixel_metrics,
)

UTM = "EPSG:32633"
T10 = DEFAULT_TRANSFORM  # 10 m pixels, upper-left (500000, 5000000)


def _box_px(r0: int, c0: int, r1: int, c1: int, t: Affine = T10):
    """Polygon of pixel rows r0..r1-1, columns c0..c1-1 of grid ``t`` (CRS units)."""
    x0, y0 = t.c + t.a * c0, t.f + t.e * r0
    x1, y1 = t.c + t.a * c1, t.f + t.e * r1
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _write_gpkg(path, geoms, crs=UTM, layer="changes", **columns):
    gdf = gpd.GeoDataFrame(columns, geometry=list(geoms), crs=crs)
    gdf.to_file(path, layer=layer, driver="GPKG", engine="pyogrio")
    return path


# ------------------------------------------------------------------------------ pure metrics


def test_pixel_metrics_by_hand():
    pred = np.array([1, 1, 0, 0, 1, 0], bool)
    ref = np.array([1, 0, 1, 0, 1, 0], bool)
    valid = np.array([1, 1, 1, 1, 1, 0], bool)  # the last pixel is ignored
    m = pixel_metrics(pred, ref, valid)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["iou"] == pytest.approx(2 / 4)
    assert m["overall_accuracy"] == pytest.approx(3 / 5)
    po, pe = 3 / 5, (3 * 3 + 2 * 2) / 25  # observed, chance agreement
    assert m["kappa"] == pytest.approx((po - pe) / (1 - pe))


def test_pixel_metrics_undefined_ratios_are_nan():
    z = np.zeros(4, bool)
    m = pixel_metrics(z, z, ~z)
    assert m["tn"] == 4 and m["overall_accuracy"] == 1.0
    assert math.isnan(m["precision"]) and math.isnan(m["f1"]) and math.isnan(m["kappa"])


def test_object_metrics_rule_and_sizes():
    ref = np.zeros((30, 30), bool)
    pred = np.zeros((30, 30), bool)
    ref[1:3, 1:3] = True  # A: micro (4 px), fully covered → detected
    pred[1:3, 1:3] = True
    ref[5:9, 5:10] = True  # B: small (20 px), 8 px covered by a 8-px object: IoU 0.4 → detected
    pred[5:7, 5:9] = True
    ref[12:16, 1:6] = True  # C: small (20 px), 4 px covered by a 24-px object: missed
    pred[12:14, 4:16] = True  # one 24-px object: 4 px inside C, 20 px outside
    ref[18:29, 18:29] = True  # D: large (121 px), nothing predicted → missed
    pred[25:27, 1:3] = True  # E: a false object (4 px)
    ref[20, 1] = ref[21, 2] = True  # F: diagonal neighbours = one micro object (8-connected)
    valid = np.ones_like(ref)
    m = object_metrics(pred, ref, valid, pixel_area=100.0)
    assert m["n_ref"] == 5 and m["n_pred"] == 4
    assert m["detected"] == 2  # A, B
    assert m["correct"] == 3  # A's, B's and C's predicted objects overlap a reference object
    assert m["recall"] == pytest.approx(2 / 5)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.75 * 0.4 / 1.15)
    bs = m["by_size"]
    assert (bs["micro"]["n_ref"], bs["micro"]["detected"]) == (2, 1)  # A, F
    assert (bs["small"]["n_ref"], bs["small"]["detected"]) == (2, 1)  # B, C
    assert (bs["large"]["n_ref"], bs["large"]["detected"]) == (1, 0)  # D
    assert (bs["micro"]["n_pred"], bs["micro"]["correct"]) == (3, 2)  # A, B (8 px), E
    assert (bs["small"]["n_pred"], bs["small"]["correct"]) == (1, 1)  # C's 24 px
    assert m["mean_ref_area_m2"] == pytest.approx(100 * (4 + 20 + 20 + 121 + 2) / 5)
    assert "IoU >= 0.25" in m["rule"]


def test_object_metrics_respect_valid():
    ref = np.zeros((5, 5), bool)
    ref[0:2, 0:2] = True
    valid = np.ones_like(ref)
    valid[0:2, 0:2] = False  # the object is unlabelled
    m = object_metrics(np.zeros_like(ref), ref, valid)
    assert m["n_ref"] == 0 and math.isnan(m["recall"])


def test_date_accuracy_by_hand():
    pred = np.array([1, 2, 3, 1, 255, 2, 0])
    ref = np.array([1, 3, 1, 1, 2, 255, 1])
    correct = np.array([1, 1, 1, 1, 1, 1, 0], bool)
    d = date_accuracy(pred, ref, correct)
    assert d["n"] == 4 and d["n_unknown"] == 2
    assert d["exact"] == pytest.approx(2 / 4)
    assert d["within_one"] == pytest.approx(3 / 4)
    assert d["mean_abs_error_dates"] == pytest.approx((0 + 1 + 2 + 0) / 4)


def test_olofsson_estimates_by_hand():
    # 100 mapped pixels of 400 m²: 20 mapped change, 80 mapped no change.
    pred = np.zeros(100, bool)
    pred[:20] = True
    # Reference sample: 10 pixels in the change stratum (8 change), 20 in no change (2 change).
    valid = np.zeros(100, bool)
    valid[:10] = True
    valid[20:40] = True
    ref = np.zeros(100, bool)
    ref[:8] = True
    ref[20:22] = True
    a = area_estimates(pred, ref, valid, 400.0, mapped=np.ones(100, bool))
    w = np.array([0.2, 0.8])
    assert a["sample_counts"] == [[8, 2], [2, 18]]
    p = np.array([[0.2 * 0.8, 0.2 * 0.2], [0.8 * 0.1, 0.8 * 0.9]])
    np.testing.assert_allclose(a["error_matrix"], p)
    np.testing.assert_allclose(a["map_weights"], w)
    assert a["overall_accuracy"] == pytest.approx(0.16 + 0.72)
    assert a["users_accuracy"]["change"] == pytest.approx(0.8)
    assert a["producers_accuracy"]["change"] == pytest.approx(0.16 / 0.24)
    assert a["mapped_area_m2"] == pytest.approx(40000.0)
    assert a["map_change_area_m2"] == pytest.approx(8000.0)
    assert a["change_area_m2"] == pytest.approx(0.24 * 40000)
    se = math.sqrt(0.2**2 * 0.8 * 0.2 / 9 + 0.8**2 * 0.1 * 0.9 / 19)
    assert a["change_area_se_m2"] == pytest.approx(se * 40000)
    assert a["change_area_ci95_m2"] == pytest.approx(1.96 * se * 40000)
    assert a["users_accuracy_se"]["change"] == pytest.approx(math.sqrt(0.8 * 0.2 / 9))
    se_o = math.sqrt(0.2**2 * 0.8 * 0.2 / 9 + 0.8**2 * 0.9 * 0.1 / 19)
    assert a["overall_accuracy_se"] == pytest.approx(se_o)
    # Producer's accuracy SE, Olofsson et al. 2014 eq. 7 (N_i in pixels × 400 m²).
    n1, n2 = 20 * 400, 80 * 400
    nhat = n1 * 0.8 + n2 * 0.1
    pa = 0.16 / 0.24
    v = (n1**2 * (1 - pa) ** 2 * 0.8 * 0.2 / 9 + pa**2 * n2**2 * 0.1 * 0.9 / 19) / nhat**2
    assert a["producers_accuracy_se"]["change"] == pytest.approx(math.sqrt(v))


# ------------------------------------------------------------------------------ files


def test_rasters_with_ignore_value(tmp_path):
    ref = np.array([[1, 1, 0, 0], [1, 255, 0, 0], [0, 0, 255, 255], [0, 0, 0, 1]], np.uint8)
    pred = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]], np.uint8)
    write_geotiff(tmp_path / "ref.tif", ref)
    write_geotiff(tmp_path / "pred.tif", pred)
    r = evaluate(tmp_path / "pred.tif", tmp_path / "ref.tif")
    # Labelled: 13 px. TP (0,0),(1,0); FP (0,2); FN (0,1),(3,3); TN the other 8.
    px = r["pixel"]
    assert (px["tp"], px["fp"], px["fn"], px["tn"]) == (2, 1, 2, 8)
    assert r["pixels"] == {"evaluated": 13, "ignored": 3, "pred_nodata": 0}
    po, pe = 10 / 13, (3 * 4 + 10 * 9) / 13**2
    assert px["kappa"] == pytest.approx((po - pe) / (1 - pe))
    # Another ignore value: 255 becomes an unexpected value, 0 pixels ignored instead.
    with pytest.raises(InputError, match=r"found values \[255\] in band 1.*--ignore-value"):
        evaluate(tmp_path / "pred.tif", tmp_path / "ref.tif", ignore_value=7)


def test_probability_raster_threshold_and_nodata(tmp_path):
    prob = np.array([[0.9, 0.5, 0.49, np.nan], [0.1, 0.7, 0.2, 0.3]], np.float32)
    ref = np.array([[1, 1, 1, 1], [0, 0, 0, 1]], np.uint8)
    write_geotiff(tmp_path / "prob.tif", prob, nodata=float("nan"))
    write_geotiff(tmp_path / "ref.tif", ref)
    r = evaluate(tmp_path / "prob.tif", tmp_path / "ref.tif")
    px = r["pixel"]
    assert (px["tp"], px["fp"], px["fn"], px["tn"]) == (2, 1, 2, 2)
    assert r["pixels"]["pred_nodata"] == 1
    r = evaluate(tmp_path / "prob.tif", tmp_path / "ref.tif", threshold=0.8)
    assert (r["pixel"]["tp"], r["pixel"]["fp"]) == (1, 0)


def test_png_style_reference_mask(tmp_path):
    ref = np.zeros((8, 8), np.uint8)
    ref[2:4, 2:4] = 255  # 0/255 mask: 255 = change
    pred = (ref == 255).astype(np.uint8)
    write_geotiff(tmp_path / "ref.tif", ref)
    write_geotiff(tmp_path / "pred.tif", pred)
    r = evaluate(tmp_path / "pred.tif", tmp_path / "ref.tif")
    assert r["pixel"]["tp"] == 4 and r["pixel"]["f1"] == 1.0
    # With nodata=255 declared, 255 is unlabelled, not change.
    write_geotiff(tmp_path / "ref_nd.tif", ref, nodata=255)
    r = evaluate(tmp_path / "pred.tif", tmp_path / "ref_nd.tif")
    assert r["pixels"]["evaluated"] == 60 and r["pixel"]["tp"] == 0


def test_polygon_prediction_against_raster_reference(tmp_path):
    ref = np.zeros((20, 20), np.uint8)
    ref[4:10, 4:10] = 1  # 36 px
    ref[15:17, 15:17] = 1  # 4 px, missed
    ref[0, :] = 255
    write_geotiff(tmp_path / "ref.tif", ref)
    # Predicted polygon: the square shifted one pixel right (30 px overlap, 6 px too many).
    _write_gpkg(tmp_path / "pred.gpkg", [_box_px(4, 5, 10, 11)], change_date=["2021-06-01"])
    r = evaluate(tmp_path / "pred.gpkg", tmp_path / "ref.tif")
    px = r["pixel"]
    assert (px["tp"], px["fp"], px["fn"]) == (30, 6, 10)
    assert px["tn"] == 380 - 46
    assert r["object"]["detected"] == 1 and r["object"]["n_ref"] == 2
    assert r["date"] is None  # the reference has no date band


def test_raster_prediction_against_polygon_reference(tmp_path):
    pred = np.zeros((20, 20), np.float32)
    pred[4:10, 4:10] = 0.8
    write_geotiff(tmp_path / "prob.tif", pred)
    _write_gpkg(tmp_path / "ref.gpkg", [_box_px(6, 4, 12, 10)], layer="truth")
    r = evaluate(tmp_path / "prob.tif", tmp_path / "ref.gpkg")
    px = r["pixel"]
    assert (px["tp"], px["fp"], px["fn"], px["tn"]) == (24, 12, 12, 352)


def test_polygon_pair_needs_a_raster(tmp_path):
    _write_gpkg(tmp_path / "a.gpkg", [_box_px(0, 0, 2, 2)])
    _write_gpkg(tmp_path / "b.gpkg", [_box_px(0, 0, 2, 2)])
    with pytest.raises(InputError, match="found two GeoPackages.*fix"):
        evaluate(tmp_path / "a.gpkg", tmp_path / "b.gpkg")


def _geographic_reference(tmp_path, square_utm, pad_deg=0.0004):
    """A label raster in EPSG:4326 covering the UTM scene, with ``square_utm`` burnt as change."""
    left, bottom, right, top = transform_bounds(UTM, "EPSG:4326", 500000, 4999360, 500640, 5000000)
    res = (0.00011, 0.00008)  # ~8.6 m x 8.9 m near 45° N
    t = Affine(res[0], 0, left - pad_deg, 0, -res[1], top + pad_deg)
    w = int(math.ceil((right - left + 2 * pad_deg) / res[0]))
    h = int(math.ceil((top - bottom + 2 * pad_deg) / res[1]))
    geom = transform_geom(UTM, "EPSG:4326", mapping(square_utm))
    lab = rasterize([(geom, 1)], out_shape=(h, w), transform=t, fill=0, dtype="uint8")
    write_geotiff(tmp_path / "ref4326.tif", lab, crs="EPSG:4326", transform=t)
    return tmp_path / "ref4326.tif", lab, shape(geom)


def test_reference_in_another_crs(tmp_path):
    prob = np.zeros((64, 64), np.float32)
    prob[20:40, 24:44] = 0.9  # change, in UTM pixels
    write_geotiff(tmp_path / "prob.tif", prob)
    square = _box_px(20, 24, 40, 44)
    ref_path, lab, _ = _geographic_reference(tmp_path, square)
    # Matching by pixel index would fail: the change sits elsewhere in the reference's array.
    assert lab.shape != prob.shape
    assert lab[20:40, 24:44].mean() < 0.5
    r = evaluate(tmp_path / "prob.tif", ref_path)
    assert "EPSG:4326" in r["grid"]
    assert r["pixel"]["precision"] > 0.9 and r["pixel"]["recall"] > 0.9
    # Reference pixels beyond the UTM scene are not mapped: left out.
    assert r["pixels"]["pred_nodata"] > 0
    assert r["pixels"]["evaluated"] + r["pixels"]["pred_nodata"] == lab.size
    # Areas on a geographic grid are geodesic: the change is about 200 m x 200 m.
    assert r["area"]["map_change_area_m2"] == pytest.approx(40000, rel=0.1)
    # The same with the prediction as UTM polygons.
    _write_gpkg(tmp_path / "pred.gpkg", [square])
    r2 = evaluate(tmp_path / "pred.gpkg", ref_path)
    assert r2["pixel"]["f1"] > 0.95


def test_no_overlap_is_an_error(tmp_path):
    write_geotiff(tmp_path / "pred.tif", np.ones((8, 8), np.uint8))
    far = Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_000_000.0)
    write_geotiff(tmp_path / "ref.tif", np.ones((8, 8), np.uint8), transform=far)
    with pytest.raises(InputError, match="do not overlap.*fix: check"):
        evaluate(tmp_path / "pred.tif", tmp_path / "ref.tif")


def test_missing_and_unknown_files(tmp_path):
    write_geotiff(tmp_path / "ref.tif", np.ones((4, 4), np.uint8))
    with pytest.raises(InputError, match=r"prediction '.*nope.tif': file not found"):
        evaluate(tmp_path / "nope.tif", tmp_path / "ref.tif")
    (tmp_path / "notes.txt").write_text("not a raster")
    with pytest.raises(InputError, match="prediction .*notes.txt.*unknown format.*fix"):
        evaluate(tmp_path / "notes.txt", tmp_path / "ref.tif")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_ungeoreferenced_raster_is_refused(tmp_path):
    write_geotiff(tmp_path / "ref.tif", np.ones((4, 4), np.uint8))
    with rasterio.open(
        tmp_path / "pred.png", "w", driver="PNG", width=6, height=4, count=1, dtype="uint8"
    ) as dst:
        dst.write(np.zeros((1, 4, 6), np.uint8))
    with pytest.raises(InputError, match="no georeferencing.*never by pixel index"):
        evaluate(tmp_path / "pred.png", tmp_path / "ref.tif")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_two_ungeoreferenced_pngs_compare_pixel_by_pixel(tmp_path):
    """Public PNG datasets (DSIFN, LEVIR) have no georeferencing on either side."""
    lab = np.zeros((1, 8, 8), np.uint8)
    lab[0, 2:5, 2:5] = 255
    pred = np.zeros((1, 8, 8), np.uint8)
    pred[0, 2:5, 2:6] = 255
    for name, arr in (("label.png", lab), ("pred.png", pred)):
        with rasterio.open(
            tmp_path / name, "w", driver="PNG", width=8, height=8, count=1, dtype="uint8"
        ) as dst:
            dst.write(arr)
    r = evaluate(tmp_path / "pred.png", tmp_path / "label.png")
    assert (r["pixel"]["tp"], r["pixel"]["fp"], r["pixel"]["fn"]) == (9, 3, 0)
    assert "no CRS" in r["grid"]


def test_change_dates_from_rasters(tmp_path):
    lab = np.zeros((2, 6, 6), np.uint8)
    lab[0, :3, :] = 1
    lab[1, :3, :] = 2  # first seen on date 2
    lab[1, 0, :] = 255  # unknown date
    write_geotiff(tmp_path / "label.tif", lab)
    prob = np.zeros((6, 6), np.float32)
    prob[:2, :] = 0.9  # rows 0-1 detected
    dates = np.zeros((6, 6), np.uint8)
    dates[0, :] = 2
    dates[1, :3] = 2  # exact
    dates[1, 3:] = 3  # one date late
    write_geotiff(tmp_path / "prob.tif", prob)
    write_geotiff(tmp_path / "date.tif", dates, nodata=255)
    r = evaluate(tmp_path / "prob.tif", tmp_path / "label.tif", pred_dates=tmp_path / "date.tif")
    d = r["date"]
    assert d == {
        "n": 6,
        "n_unknown": 6,
        "exact": 0.5,
        "within_one": 1.0,
        "mean_abs_error_dates": 0.5,
    }


def test_change_dates_from_polygons(tmp_path):
    lab = np.zeros((2, 10, 10), np.uint8)
    lab[0, 0:4, 0:4] = 1
    lab[1, 0:4, 0:4] = 1  # first seen on date 1
    lab[0, 6:9, 6:9] = 1
    lab[1, 6:9, 6:9] = 3
    write_geotiff(tmp_path / "label.tif", lab)
    _write_gpkg(
        tmp_path / "pred.gpkg",
        [_box_px(0, 0, 4, 4), _box_px(6, 6, 9, 9)],
        change_date=["2020-03-01", "2020-05-01"],  # dates 1 and 2: exact, one date early
    )
    stack_dates = ["2020-01-01", "2020-03-01", "2020-05-01", "2020-07-01"]
    r = evaluate(tmp_path / "pred.gpkg", tmp_path / "label.tif", dates=stack_dates)
    assert r["date"]["n"] == 16 + 9
    assert r["date"]["exact"] == pytest.approx(16 / 25)
    assert r["date"]["within_one"] == 1.0
    # Without stack dates a change_date cannot be indexed: dates are not scored.
    assert evaluate(tmp_path / "pred.gpkg", tmp_path / "label.tif")["date"] is None


def test_align_inputs_arrays(tmp_path):
    write_geotiff(tmp_path / "ref.tif", np.array([[0, 1], [255, 1]], np.uint8))
    write_geotiff(tmp_path / "pred.tif", np.array([[1, 1], [0, 0]], np.uint8))
    a = align_inputs(tmp_path / "pred.tif", tmp_path / "ref.tif")
    np.testing.assert_array_equal(a.valid, [[True, True], [False, True]])
    np.testing.assert_array_equal(a.pred & a.valid, [[True, True], [False, False]])
    np.testing.assert_allclose(a.pixel_area_m2, 100.0)


# ------------------------------------------------------------------------------ CLI


@pytest.fixture
def pair(tmp_path):
    ref = np.zeros((16, 16), np.uint8)
    ref[2:8, 2:8] = 1
    ref[15, :] = 255
    pred = np.zeros((16, 16), np.float32)
    pred[3:8, 2:9] = 0.75
    write_geotiff(tmp_path / "ref.tif", ref)
    write_geotiff(tmp_path / "prob.tif", pred)
    return tmp_path / "prob.tif", tmp_path / "ref.tif"


def test_cli_table(pair):
    result = CliRunner().invoke(cli, ["evaluate", str(pair[0]), str(pair[1])])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "TP 30  FP 5  FN 6" in out
    assert "precision" in out and "kappa" in out and "IoU" in out
    assert "object metrics" in out and "micro" in out and "large" in out
    assert "95 % CI" in out
    assert "240 evaluated, 16 ignored" in out


def test_cli_json_and_map(pair, tmp_path):
    png = tmp_path / "map.png"
    args = ["evaluate", str(pair[0]), str(pair[1]), "--json", "--map", str(png)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["pixel"]["tp"] == 30 and data["pixel"]["fp"] == 5
    assert data["date"] is None
    assert set(data["area"]) >= {"change_area_m2", "change_area_ci95_m2", "error_matrix"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".map.*"))  # no temporary file left
    # Never overwrite without --overwrite.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code != 0 and "already exists" in str(again.exception)
    png.write_bytes(b"stale")
    assert CliRunner().invoke(cli, [*args, "--overwrite"]).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # replaced by the map


def test_cli_threshold_and_errors(pair, tmp_path):
    result = CliRunner().invoke(
        cli, ["evaluate", str(pair[0]), str(pair[1]), "--threshold", "0.8", "--json"]
    )
    assert result.exit_code == 0
    assert json.loads(result.output)["pixel"]["tp"] == 0
    missing = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "x.gpkg"), str(pair[1])])
    assert missing.exit_code != 0
    assert isinstance(missing.exception, InputError)
    assert "x.gpkg': file not found" in str(missing.exception)


def test_evaluate_arrays_matches_files(tmp_path):
    ref = np.array([[1, 1, 0, 0], [1, 255, 0, 0], [0, 0, 255, 255], [0, 0, 0, 1]], np.uint8)
    pred = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]], np.uint8)
    write_geotiff(tmp_path / "ref.tif", ref)
    write_geotiff(tmp_path / "pred.tif", pred)
    from_files = evaluate(tmp_path / "pred.tif", tmp_path / "ref.tif")
    from_arrays = evaluate_arrays(pred == 1, ref == 1, valid=ref != 255, pixel_area_m2=100.0)
    assert from_arrays["pixel"] == from_files["pixel"]
    assert from_arrays["object"] == from_files["object"]
    assert from_arrays["area"] == from_files["area"]


def test_detect_geopackage_dates_from_runs_layer(tmp_path):
    """A GeoPackage written like detect's (layers changes + runs) carries the stack dates."""
    from geochange.io.rasters import write_gpkg

    lab = np.zeros((2, 10, 10), np.uint8)
    lab[0, 2:6, 2:6] = 1
    lab[1, 2:6, 2:6] = 2
    write_geotiff(tmp_path / "label.tif", lab)
    changes = gpd.GeoDataFrame(
        {"id": [1], "change_date": ["2020-05-01"]}, geometry=[_box_px(2, 2, 6, 6)], crs=UTM
    )
    runs = {"dates": ["2020-01-01", "2020-03-01", "2020-05-01"], "method": "cva"}
    write_gpkg(changes, tmp_path / "pred.gpkg", runs=runs)
    r = evaluate(tmp_path / "pred.gpkg", tmp_path / "label.tif")
    assert r["pixel"]["f1"] == 1.0
    assert r["date"]["n"] == 16 and r["date"]["exact"] == 1.0
    result = CliRunner().invoke(
        cli,
        ["evaluate", str(tmp_path / "pred.gpkg"), str(tmp_path / "label.tif"), "--json",
         "--dates", "2020-01-01,2020-05-01,2020-07-01"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["date"]["exact"] == 0.0  # now date 1, one date early
