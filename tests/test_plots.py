"""Tests of geochange.plots (quicklook, series) and `geochange series`, on small real GeoTIFFs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dask.array as da
import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner
from helpers import DEFAULT_TRANSFORM, write_geotiff, write_stack
from matplotlib.image import imread
from shapely.geometry import box

from geochange import plots
from geochange.cli import cli, main
from geochange.errors import InputError, OutputExistsError
from geochange.io.stack import open_stack
from geochange.plots import maps, overview

DATES = ["2022-03-01", "2022-05-10", "2022-07-02", "2022-09-20"]
H, W = 48, 64
# Changed block (rows, cols) first seen on date index 2.
ROWS, COLS, J = slice(10, 22), slice(20, 40), 2


def _data() -> np.ndarray:
    rng = np.random.default_rng(1)
    data = rng.integers(500, 1500, (len(DATES), 4, H, W)).astype("uint16")
    data[J:, :, ROWS, COLS] += 2000
    return data


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    data = _data()
    data[:, :, 0, 0] = 0  # one nodata pixel
    write_stack(tmp_path / "stack", data, DATES, band_names=["B", "G", "R", "NIR"], nodata=0)
    return tmp_path / "stack"


def _outputs(stack) -> tuple[np.ndarray, np.ndarray, gpd.GeoDataFrame]:
    prob = np.full((H, W), 0.05, np.float32)
    prob[ROWS, COLS] = 0.9
    prob[0, 0] = np.nan
    date_index = np.zeros((H, W), np.uint8)
    date_index[ROWS, COLS] = J
    date_index[0, 0] = 255
    t = stack.grid.transform
    geom = box(t.c + 20 * t.a, t.f + 22 * t.e, t.c + 40 * t.a, t.f + 10 * t.e)
    changes = gpd.GeoDataFrame(
        {
            "id": [7],
            "change_date": [DATES[J]],
            "date_before": [DATES[J - 1]],
            "date_after": [DATES[J]],
        },
        geometry=[geom],
        crs=stack.grid.crs,
    )
    return prob, date_index, changes


def _assert_picture(path: Path) -> np.ndarray:
    """A written PNG, larger than 200 px each way, not blank."""
    assert path.is_file()
    img = imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200, img.shape
    assert float(img[..., :3].std()) > 0.05
    return img


def _pixel_xy(grid, row: float, col: float) -> tuple[float, float]:
    x, y = grid.transform @ (col + 0.5, row + 0.5)
    return float(x), float(y)


# --------------------------------------------------------------------------------------------
# quicklook


def test_default_rgb_bands() -> None:
    assert maps.default_rgb_bands(4, ("B", "G", "R", "NIR")) == (3, 2, 1)
    assert maps.default_rgb_bands(4, (None,) * 4) == (3, 2, 1)
    assert maps.default_rgb_bands(3, (None,) * 3) == (1, 2, 3)
    assert maps.default_rgb_bands(13, [f"B{i:02d}" for i in range(1, 13)] + ["B8A"]) == (4, 3, 2)
    assert maps.default_rgb_bands(3, ("red", "green", "blue")) == (1, 2, 3)
    assert maps.default_rgb_bands(2, ("VV", "VH")) == (1,)
    assert maps.default_rgb_bands(1) == (1,)
    names = ("B08 842 nm", "B04 665 nm", "B03 560 nm", "B02 490 nm")
    assert maps.default_rgb_bands(4, names) == (2, 3, 4)
    assert maps.default_rgb_bands(4, ("nir", "665 nm", "560nm", "band 490 nm")) == (2, 3, 4)


def test_date_legend_labels() -> None:
    dates = [dt.date.fromisoformat(d) for d in DATES]
    assert maps.date_legend_labels(dates) == DATES[1:]


def test_quicklook_writes_picture(stack_dir: Path, tmp_path: Path) -> None:
    stack = open_stack(stack_dir)
    prob, date_index, changes = _outputs(stack)
    out = plots.quicklook(stack, prob, date_index, changes, tmp_path / "quick.png")
    assert out == tmp_path / "quick.png"
    img = _assert_picture(out)
    assert img.shape[1] > img.shape[0]
    assert not list(tmp_path.glob(".*part"))  # temporary file renamed away


def test_quicklook_legend_covers_dates(stack_dir: Path) -> None:
    stack = open_stack(stack_dir)
    prob, date_index, changes = _outputs(stack)
    fig = overview._quicklook_figure(stack, prob, date_index, changes)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    texts = [t.get_text() for t in legends[0].get_texts()]
    assert texts == [d.isoformat() for d in stack.dates[1:]]
    # The first date (no change can be first seen on it) is named in the legend title.
    assert DATES[0] in legends[0].get_title().get_text()
    assert "EPSG:32633" in fig.get_suptitle() and "UTM zone 33N" in fig.get_suptitle()
    # Map axes are in CRS units, north up.
    left, bottom, right, top = stack.grid.bounds
    ax = fig.axes[0]
    assert ax.get_xlim() == (left, right) and ax.get_ylim() == (bottom, top)
    # A scale bar on each map: 640 m wide scene -> 100 m bar.
    bars = [t.get_text() for a in fig.axes for c in a.artists for t in c.findobj(_is_text)]
    assert "100 m" in bars


def _is_text(artist) -> bool:
    from matplotlib.text import Text

    return isinstance(artist, Text)


def test_quicklook_decimated_dask_and_aligned(stack_dir: Path, tmp_path: Path) -> None:
    stack = open_stack(stack_dir, align=True, chunk_size=16)
    prob, date_index, changes = _outputs(stack)
    out = plots.quicklook(
        stack,
        da.from_array(prob, chunks=16),
        da.from_array(date_index, chunks=16),
        changes,
        tmp_path / "small.png",
        max_size=20,
        rgb_bands=(1,),
    )
    _assert_picture(out)


def test_decimated_reads_agree(tmp_path: Path) -> None:
    # The GDAL out_shape read (files on the grid) and the strided dask read (align=True) give
    # the same pixels at full resolution, NaN where any band is nodata.
    data = _data()
    data[:, 1, :8, :8] = 0
    write_stack(tmp_path, data, DATES, nodata=0)
    plain, aligned = open_stack(tmp_path), open_stack(tmp_path, align=True)
    a = maps.read_dates_decimated(plain, [0, 3], (3, 2, 1), 1)
    b = maps.read_dates_decimated(aligned, [0, 3], (3, 2, 1), 1)
    np.testing.assert_array_equal(a, b)
    assert np.isnan(a[1][:, :8, :8]).all() and np.isfinite(a[1][:, 8:, 8:]).all()
    for stack in (plain, aligned):
        c = maps.read_dates_decimated(stack, [0, 3], (3, 2, 1), 4)
        assert len(c) == 2 and c[0].shape == (3, H // 4, W // 4)
        assert np.isnan(c[0][:, :2, :2]).all() and np.isfinite(c[0][:, 2:, 2:]).all()


def test_quicklook_geographic_crs(tmp_path: Path) -> None:
    # 0.001° pixels at 60° N: the scale bar converts degrees to metres with the latitude.
    transform = Affine(0.001, 0.0, 10.0, 0.0, -0.001, 60.0)
    write_stack(tmp_path / "geo", _data(), DATES, crs="EPSG:4326", transform=transform)
    stack = open_stack(tmp_path / "geo")
    prob, date_index, changes = _outputs(stack)
    changes = changes.to_crs("EPSG:3035")  # reprojected back to the stack CRS when drawn
    fig = overview._quicklook_figure(stack, prob, date_index, changes)
    texts = [t.get_text() for a in fig.axes for c in a.artists for t in c.findobj(_is_text)]
    # 64 px * 0.001° * ~55.8 km/° = ~3.57 km wide -> a 500 m bar (not one in degrees).
    assert "500 m" in texts
    assert "EPSG:4326" in fig.get_suptitle()
    _assert_picture(plots.quicklook(stack, prob, date_index, changes, tmp_path / "geo.png"))


def test_quicklook_errors(stack_dir: Path, tmp_path: Path) -> None:
    stack = open_stack(stack_dir)
    prob, date_index, changes = _outputs(stack)
    with pytest.raises(InputError, match=r"--rgb-bands: found \(5, 2, 1\).*between 1 and 4"):
        plots.quicklook(stack, prob, date_index, changes, tmp_path / "q.png", rgb_bands=(5, 2, 1))
    with pytest.raises(InputError, match=r"prob: found shape \(10, 10\), expected \(48, 64\)"):
        plots.quicklook(stack, prob[:10, :10], date_index, changes, tmp_path / "q.png")
    with pytest.raises(InputError, match=r"expected '\.png'"):
        plots.quicklook(stack, prob, date_index, changes, tmp_path / "q.jpg")
    (tmp_path / "old.png").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="old.png: exists"):
        plots.quicklook(stack, prob, date_index, None, tmp_path / "old.png", overwrite=False)


# --------------------------------------------------------------------------------------------
# series


def test_series_values_pixel_window_polygon(stack_dir: Path) -> None:
    stack = open_stack(stack_dir)
    data = _data().astype(np.float32)
    prob, date_index, changes = _outputs(stack)
    x, y = _pixel_xy(stack.grid, 15, 30)

    sv = plots.series_values(stack, x, y)
    np.testing.assert_array_equal(sv.values, data[:, :, 15, 30])
    assert sv.n_pixels == 1 and sv.change_date is None
    assert sv.band_labels == ("B", "G", "R", "NIR")

    sv = plots.series_values(stack, x, y, window=3, date_index=date_index)
    np.testing.assert_allclose(sv.values, data[:, :, 14:17, 29:32].mean(axis=(2, 3)), rtol=1e-6)
    assert sv.n_pixels == 9
    assert sv.change_date == dt.date.fromisoformat(DATES[J])
    assert sv.date_before == dt.date.fromisoformat(DATES[J - 1])

    sv = plots.series_values(stack, changes=changes, polygon_id=7)
    np.testing.assert_allclose(sv.values, data[:, :, ROWS, COLS].mean(axis=(2, 3)), rtol=1e-6)
    assert sv.n_pixels == 12 * 20 and "polygon 7" in sv.description
    assert sv.change_date == dt.date.fromisoformat(DATES[J])

    # Window at the corner: the nodata pixel (0, 0) and the outside are left out of the mean.
    x0, y0 = _pixel_xy(stack.grid, 0, 0)
    sv = plots.series_values(stack, x0, y0, window=3, change_date="2022-09-20")
    np.testing.assert_allclose(
        sv.values, (data[:, :, :2, :2].sum(axis=(2, 3)) - data[:, :, 0, 0]) / 3, rtol=1e-6
    )
    assert sv.change_date == dt.date(2022, 9, 20)


def test_series_writes_picture(stack_dir: Path, tmp_path: Path) -> None:
    stack = open_stack(stack_dir)
    _, _, changes = _outputs(stack)
    x, y = _pixel_xy(stack.grid, 15, 30)
    _assert_picture(plots.series(stack, x, y, window=3, changes=changes, path=tmp_path / "a.png"))
    out = plots.series(stack, changes=changes, polygon_id=7, path=tmp_path / "b.png")
    _assert_picture(out)


def test_series_outside_scene(stack_dir: Path, tmp_path: Path) -> None:
    stack = open_stack(stack_dir)
    with pytest.raises(
        InputError,
        match=r"point \(13, 45\) in EPSG:32633 is outside the scene.*"
        r"\(500000\.00, 4999520\.00, 500640\.00, 5000000\.00\) in EPSG:32633.*--crs EPSG:4326",
    ):
        plots.series(stack, 13.0, 45.0, path=tmp_path / "s.png")
    with pytest.raises(
        InputError,
        match=r"point \(13, 45\) in EPSG:4326 = \(342369\.\d+, 4984896\.\d+\) in EPSG:32633 is "
        r"outside the scene",
    ):
        plots.series(stack, 13.0, 45.0, crs="EPSG:4326", path=tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()


def test_series_point_in_lonlat(stack_dir: Path) -> None:
    from pyproj import Transformer

    stack = open_stack(stack_dir)
    x, y = _pixel_xy(stack.grid, 5, 6)
    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)
    sv = plots.series_values(stack, lon, lat, crs="EPSG:4326")
    np.testing.assert_array_equal(sv.values, _data()[:, :, 5, 6].astype(np.float32))


def test_series_errors(stack_dir: Path, tmp_path: Path) -> None:
    stack = open_stack(stack_dir)
    _, _, changes = _outputs(stack)
    x, y = _pixel_xy(stack.grid, 15, 30)
    with pytest.raises(InputError, match=r"--window: found 2, expected an odd number"):
        plots.series_values(stack, x, y, window=2)
    with pytest.raises(InputError, match=r"--polygon 3: no change polygon with that id.*ids 7"):
        plots.series_values(stack, changes=changes, polygon_id=3)
    with pytest.raises(InputError, match=r"--polygon 7: no change polygons given"):
        plots.series_values(stack, polygon_id=7)
    with pytest.raises(InputError, match="no place given"):
        plots.series_values(stack)
    with pytest.raises(InputError, match=r"--changes '.*nope.gpkg': file not found"):
        plots.series_values(stack, x, y, changes=tmp_path / "nope.gpkg")


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_series(stack_dir: Path, tmp_path: Path) -> None:
    stack = open_stack(stack_dir)
    prob, date_index, changes = _outputs(stack)
    gpkg = tmp_path / "changes.gpkg"
    changes.to_file(gpkg, layer="changes")
    write_geotiff(tmp_path / "changes_date.tif", date_index, transform=DEFAULT_TRANSFORM)
    x, y = _pixel_xy(stack.grid, 15, 30)
    runner = CliRunner()

    out = tmp_path / "point.png"
    args = ["series", str(stack_dir), "--at", str(x), str(y), "--window", "3", "-o", str(out)]
    result = runner.invoke(cli, [*args, "--changes", str(gpkg)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    _assert_picture(out)

    # Exists: refused without --overwrite.
    result = runner.invoke(cli, args)
    assert isinstance(result.exception, OutputExistsError)
    out.write_bytes(b"stale")
    assert runner.invoke(cli, [*args, "--overwrite"]).exit_code == 0
    _assert_picture(out)  # replaced by a real picture

    out = tmp_path / "poly.png"
    result = runner.invoke(
        cli, ["series", str(stack_dir), "--polygon", "7", "--changes", str(gpkg), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    _assert_picture(out)


def test_cli_series_errors(stack_dir: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "s.png")
    with pytest.raises(SystemExit) as exc:
        main(["series", str(stack_dir), "--at", "13", "45", "-o", out])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Error: point (13, 45) in EPSG:32633 is outside the scene" in err
    with pytest.raises(SystemExit):
        main(["series", str(stack_dir), "--polygon", "1", "-o", out])
    assert "--polygon 1: needs --changes OUT.gpkg" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["series", str(stack_dir), "-o", out])
    assert "no place given" in capsys.readouterr().err


def test_cli_series_help() -> None:
    result = CliRunner().invoke(cli, ["series", "--help"])
    assert result.exit_code == 0
    assert "geochange series data_samples/stack --at" in result.output
    assert "--polygon 3 --changes changes.gpkg" in result.output


def test_quicklook_one_band_two_dates(tmp_path: Path) -> None:
    # Greyscale, NaN nodata, a single possible change date, no polygons.
    data = np.random.default_rng(2).normal(0.2, 0.05, (2, 1, 40, 30)).astype(np.float32)
    data[:, :, :5, :5] = np.nan
    write_stack(tmp_path / "grey", data, DATES[:2], nodata=np.nan)
    stack = open_stack(tmp_path / "grey")
    prob = np.where(np.isnan(data[0, 0]), np.nan, 0.1).astype(np.float32)
    date_index = np.where(np.isnan(data[0, 0]), 255, 0).astype(np.uint8)
    date_index[20:30, 10:20] = 1
    fig = overview._quicklook_figure(stack, prob, date_index, None)
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert [t.get_text() for t in legend.get_texts()] == [DATES[1]]
    assert "greyscale band 1" in fig.axes[0].get_title()
    _assert_picture(plots.quicklook(stack, prob, date_index, None, tmp_path / "grey.png"))
