"""What a GIS user opens: typed date fields and a default style in the GeoPackage, the date raster
as a paletted COG with overviews, the probability as a compact scaled COG that decodes to exactly
what detect returns, absolute input paths in ``runs``."""

from __future__ import annotations

import re
import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.shutil
from helpers import write_stack

from geochange.evaluate import evaluate
from geochange.io import encoding
from geochange.io.gpkg import STYLE_NAME, default_style_qml
from geochange.palette import date_colours_rgb255
from geochange.pipeline import detect

DATES = ["2022-03-01", "2022-05-17", "2022-08-02", "2022-10-20"]


def _scene(t=4, c=3, h=70, w=90, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(1000, 80, size=(c, h, w)).astype(np.float32)
    data = np.stack([base + rng.normal(0, 10, size=base.shape) for _ in range(t)])
    data[2:, :, 20:45, 30:62] += np.array([600, -400, 900][:c], np.float32)[:, None, None]
    data[1:, :, 50:60, 5:20] += np.array([500, 300, -300][:c], np.float32)[:, None, None]
    data = np.clip(data, 1, 60000).astype(np.uint16)
    data[:, :, 66:, :] = 0  # nodata rows
    return data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """detect from a relative path (the ``runs`` record must make it absolute)."""
    root = tmp_path_factory.mktemp("gis")
    write_stack(root / "stack", _scene(), DATES, nodata=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        out = root / "out" / "c.gpkg"
        result = detect("stack", out, method="cva", chunk_size=32, quicklook=False)
    return root, result


def test_dates_are_date_and_datetime_fields(run):
    root, result = run
    gpkg = result.paths["gpkg"]
    changes = pyogrio.read_dataframe(gpkg, layer="changes")
    assert len(changes) >= 2
    for col in ("change_date", "date_before", "date_after"):
        assert np.issubdtype(changes[col].dtype, np.datetime64), col
        assert [d.date().isoformat() for d in changes[col]] == list(result.changes[col]), col
    with sqlite3.connect(gpkg) as db:
        schema = db.execute("SELECT sql FROM sqlite_master WHERE name = 'changes'").fetchone()[0]
        runs_schema = db.execute("SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    assert '"change_date" DATE' in schema and '"date_before" DATE' in schema
    assert '"created" DATETIME' in runs_schema
    runs = pyogrio.read_dataframe(gpkg, layer="runs")
    assert str(runs["created"].dt.tz) == "UTC"
    inputs = runs["inputs"][0]
    assert str(root / "stack" / "S2_20220301.tif") in inputs  # relative input made absolute


def test_the_changes_layer_has_a_default_qgis_style(run):
    _, result = run
    styles = pyogrio.read_dataframe(result.paths["gpkg"], layer="layer_styles")
    assert len(styles) == 1
    row = styles.iloc[0]
    assert (row.f_table_name, row.f_geometry_column, row.styleName) == (
        "changes",
        "geom",
        STYLE_NAME,
    )
    assert bool(row.useAsDefault)
    qml = ET.fromstring(row.styleQML.split("\n", 1)[1])  # after the DOCTYPE line
    renderer = qml.find("renderer-v2")
    assert renderer.get("type") == "graduatedSymbol" and "change_date" in renderer.get("attr")
    ranges = renderer.findall("ranges/range")
    assert [r.get("label") for r in ranges] == DATES[1:]
    assert [int(r.get("upper")) for r in ranges] == [int(d.replace("-", "")) for d in DATES[1:]]
    # Outlines only, in the quicklook's colours.
    fills = renderer.findall("symbols/symbol/layer")
    options = [
        {o.get("name"): o.get("value") for o in f.iter("Option") if o.get("name")} for f in fills
    ]
    assert all(o["style"] == "no" for o in options)
    assert [o["outline_color"] for o in options] == [
        f"{r},{g},{b},255" for r, g, b in date_colours_rgb255(len(DATES) - 1)
    ]


def test_date_raster_is_a_paletted_cog_with_nearest_overviews(run):
    _, result = run
    with rasterio.open(result.paths["date"]) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1)
        cmap = src.colormap(1)
        tags = src.tags()
        full = src.read(1)
        overview = src.read(1, out_shape=(1, *[s // src.overviews(1)[0] for s in src.shape]))
    colours = date_colours_rgb255(len(DATES) - 1)
    assert [cmap[j][:3] for j in range(1, len(DATES))] == colours
    assert [tags[f"DATE_{j}"] for j in range(1, len(DATES))] == DATES[1:]
    assert set(np.unique(overview)) <= set(np.unique(full))  # nearest: never an averaged index
    np.testing.assert_array_equal(full, np.asarray(result.date_index))


def test_probability_cog_is_scaled_uint8_and_decodes_to_the_result(run, tmp_path):
    root, result = run
    with rasterio.open(result.paths["prob"]) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.overviews(1)
        assert src.dtypes[0] == "uint8" and src.nodata == encoding.PROB_NODATA
        assert src.scales[0] == pytest.approx(1 / 254) and src.offsets[0] == 0
        raw = src.read(1)
    decoded = raw.astype(np.float32) / np.float32(254)
    decoded[raw == 255] = np.nan
    in_memory = detect(root / "stack", None, method="cva", chunk_size=32)
    np.testing.assert_array_equal(decoded, np.asarray(in_memory.prob))
    np.testing.assert_array_equal(np.asarray(result.prob), np.asarray(in_memory.prob))
    assert np.isnan(decoded[66:]).all() and not np.isnan(decoded[:66]).any()
    # the same polygons whether or not the rasters are written
    assert in_memory.changes.drop(columns="geometry").equals(
        result.changes.drop(columns="geometry")
    )


def test_evaluate_reads_the_scaled_probability_as_probability(run, tmp_path):
    """The written probability thresholded by evaluate is exactly the run's change mask."""
    _, result = run
    index = np.asarray(result.date_index)
    label = np.where(index == 255, 255, (index > 0).astype(np.uint8)).astype(np.uint8)
    with rasterio.open(result.paths["date"]) as src:
        profile = src.profile
    profile.update(driver="GTiff", nodata=None)
    profile.pop("photometric", None)
    with rasterio.open(tmp_path / "label.tif", "w", **profile) as dst:
        dst.write(label, 1)
    report = evaluate(result.paths["prob"], tmp_path / "label.tif", threshold=0.5)
    assert report["pixel"]["f1"] == 1.0 and report["pixel"]["tp"] == int((label == 1).sum()) > 0


def test_quantised_probability_keeps_its_steps():
    p = np.array([[0.0, 0.4990, 0.5, 1.0, np.nan, 0.123456]], np.float32)
    q = encoding._quantise_block(p)
    k = encoding._encode_block(q)
    assert k.tolist() == [[0, 127, 127, 254, 255, 31]]
    np.testing.assert_array_equal(encoding._decode_block(k), q)


def test_style_for_two_dates_has_one_class():
    qml = default_style_qml(["2023-01-15", "2023-03-02"])
    assert qml.count("<range ") == 1 and 'lower="20230301" upper="20230302"' in qml


def test_date_raster_carries_its_date_table_as_a_raster_attribute_table(run, tmp_path):
    """GDAL reads the side-car table back: its copy to a VRT carries it (and the palette)."""
    _, result = run
    assert result.paths["date_rat"].name == "c_date.tif.aux.xml"
    rasterio.shutil.copy(result.paths["date"], tmp_path / "date.vrt", driver="VRT")
    band = ET.parse(tmp_path / "date.vrt").find("VRTRasterBand")
    assert band.find("ColorTable") is not None
    table = band.find("GDALRasterAttributeTable")
    assert table is not None and table.get("tableType") == "thematic"
    names = [f.findtext("Name") for f in table.findall("FieldDefn")]
    usages = [f.findtext("Usage") for f in table.findall("FieldDefn")]
    assert names[:4] == ["value", "label", "change_date", "date_before"]
    assert usages[0] == "5" and usages[names.index("red")] == "6"  # MinMax value, red colour
    rows = [[f.text or "" for f in row.findall("F")] for row in table.findall("Row")]
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "255"]
    assert [r[2] for r in rows[1:4]] == DATES[1:] and [r[3] for r in rows[1:4]] == DATES[:-1]
    assert rows[0][1] == "no change" and rows[-1][1] == "nodata"
    red = names.index("red")
    assert [int(r[red]) for r in rows[1:4]] == [c[0] for c in date_colours_rgb255(3)]


@pytest.mark.parametrize(
    ("co", "match"),
    [
        (["FOO=1"], r"--co: found FOO=1; GDAL refused them: driver COG does not support "
         r"creation option FOO"),
        (["COMPRESS=BAR"], r"--co: found COMPRESS=BAR; GDAL refused them: 'BAR' is an "
         r"unexpected value for COMPRESS"),
        (["COMPRESS"], r"--co: found 'COMPRESS', expected KEY=VALUE"),
    ],
)  # fmt: skip
def test_bad_creation_options_are_refused_before_any_work(tmp_path, co, match):
    from helpers import run_cli

    write_stack(tmp_path / "stack", _scene(t=2, h=20, w=20), DATES[:2], nodata=0)
    args = [str(tmp_path / "stack"), "-o", str(tmp_path / "o" / "c.gpkg"), "--method", "cva"]
    for item in co:
        args += ["--co", item]
    code, _, err = run_cli("detect", *args)
    assert code == 2
    assert re.search(match, err) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_creation_options_reach_both_cogs(tmp_path):
    write_stack(tmp_path / "stack", _scene(t=3, h=40, w=40), DATES[:3], nodata=0)
    out = tmp_path / "c.gpkg"
    result = detect(
        tmp_path / "stack", out, method="cva", chunk_size=32, quicklook=False,
        co=["COMPRESS=ZSTD", "level=9"],
    )  # fmt: skip
    for kind in ("prob", "date"):
        with rasterio.open(result.paths[kind]) as src:
            assert src.compression.name == "zstd", kind
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.overviews(1)
    runs = pyogrio.read_dataframe(out, layer="runs")
    assert "COMPRESS=ZSTD" in runs["creation_options"][0]
