"""Tests of geochange.io.rasters: COG / GeoTIFF writers, GeoPackage, atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from geochange.errors import InputError, OutputExistsError
from geochange.grid import GridSpec
from geochange.io.rasters import (
    read_raster_lazy,
    write_gpkg,
    write_raster,
    write_rasters,
)


@pytest.fixture
def grid() -> GridSpec:
    return GridSpec(
        crs=CRS.from_epsg(32633),
        transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0),
        height=100,
        width=120,
        nodata=0,
    )


@pytest.fixture
def prob() -> np.ndarray:
    rng = np.random.default_rng(0)
    p = rng.random((100, 120), dtype=np.float32)
    p[:5, :7] = np.nan
    return p


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_raster_cog_roundtrip(tmp_path: Path, grid: GridSpec, prob: np.ndarray) -> None:
    arr = da.from_array(prob, chunks=(32, 50))  # uneven, not aligned with 256-px tiles
    out = write_raster(
        arr,
        grid,
        tmp_path / "prob.tif",
        dtype="float32",
        nodata=float("nan"),
        cog=True,
        tags={"threshold": 0.5},
        band_descriptions=["change_probability"],
    )
    assert out == tmp_path / "prob.tif"
    with rasterio.open(out) as src:
        assert src.crs == grid.crs
        assert src.transform == grid.transform
        assert (src.height, src.width, src.count) == grid.shape + (1,)
        assert src.dtypes[0] == "float32"
        assert np.isnan(src.nodata)
        assert src.overviews(1)  # COG with at least one overview level
        assert src.profile["tiled"]
        assert src.compression.name.lower() == "deflate"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.tags()["threshold"] == "0.5"
        assert src.descriptions == ("change_probability",)
        np.testing.assert_array_equal(src.read(1), prob)
    assert _leftovers(tmp_path) == []


def test_write_rasters_shared_pass_and_plain_tiff(
    tmp_path: Path, grid: GridSpec, prob: np.ndarray
) -> None:
    calls = []

    def block(x: np.ndarray) -> np.ndarray:
        if x.size:  # dask probes with an empty array to infer meta
            calls.append(x.shape)
        return x

    arr = da.from_array(prob, chunks=(50, 60)).map_blocks(block, dtype=np.float32)
    date = da.where(da.isnan(arr), 255, da.nan_to_num(arr) * 5).astype(np.uint8)
    two_bands = da.stack([arr, arr * 2])
    p1, p2, p3 = write_rasters(
        [
            {"array": arr, "path": tmp_path / "p.tif", "dtype": "float32", "nodata": np.nan},
            {"array": date, "path": tmp_path / "d.tif", "dtype": "uint8", "nodata": 255},
            {"array": two_bands, "path": tmp_path / "b.tif", "dtype": "float32", "nodata": None},
        ],
        grid,
    )
    assert len(calls) == 4  # each chunk of the shared upstream computed once
    with rasterio.open(p2) as src:
        assert src.nodata == 255 and src.dtypes[0] == "uint8"
        assert src.crs == grid.crs and src.transform == grid.transform
        expected = np.where(np.isnan(prob), 255, np.nan_to_num(prob) * 5).astype(np.uint8)
        np.testing.assert_array_equal(src.read(1), expected)
        assert not src.overviews(1)
    with rasterio.open(p3) as src:
        assert src.count == 2
        np.testing.assert_allclose(src.read(2), prob * 2)
    lazy = read_raster_lazy(p1, chunks=40)
    assert lazy.chunks == ((40, 40, 20), (40, 40, 40))
    np.testing.assert_array_equal(lazy.compute(), prob)
    both = read_raster_lazy(p3, band=None, chunks=64)
    assert both.shape == (2, 100, 120)
    np.testing.assert_allclose(both[1].compute(), prob * 2)
    assert _leftovers(tmp_path) == []


def test_write_raster_numpy_and_shape_mismatch(tmp_path: Path, grid: GridSpec) -> None:
    data = np.arange(100 * 120, dtype=np.uint16).reshape(100, 120)
    out = write_raster(data, grid, tmp_path / "n.tif", dtype="uint16", nodata=0)
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), data)
    with pytest.raises(ValueError, match=r"array shape \(1, 10, 10\) does not fit the grid"):
        write_raster(np.zeros((10, 10)), grid, tmp_path / "bad.tif", dtype="uint8", nodata=0)
    assert not (tmp_path / "bad.tif").exists()


def test_error_mid_write_leaves_nothing(tmp_path: Path, grid: GridSpec, prob: np.ndarray) -> None:
    def boom(x: np.ndarray, block_info=None) -> np.ndarray:
        if block_info[0]["chunk-location"] == (1, 1):
            raise RuntimeError("detector failed on a chunk")
        return x

    arr = da.from_array(prob, chunks=50).map_blocks(boom, dtype=np.float32)
    target = tmp_path / "prob.tif"
    with pytest.raises(RuntimeError, match="detector failed"):
        write_raster(arr, grid, target, dtype="float32", nodata=np.nan, cog=True)
    assert list(tmp_path.iterdir()) == []


def test_overwrite(tmp_path: Path, grid: GridSpec, prob: np.ndarray) -> None:
    target = tmp_path / "prob.tif"
    write_raster(prob, grid, target, dtype="float32", nodata=np.nan)
    with pytest.raises(OutputExistsError, match=r"prob.tif' already exists; pass --overwrite"):
        write_raster(prob, grid, target, dtype="float32", nodata=np.nan)
    write_raster(prob * 0 + 1, grid, target, dtype="float32", nodata=np.nan, overwrite=True)
    with rasterio.open(target) as src:
        assert np.nanmax(src.read(1)) == 1
    assert _leftovers(tmp_path) == []


def _changes(crs: CRS, n: int = 2) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, n + 1),
            "area_m2": np.full(n, 100.0),
            "mean_prob": np.full(n, 0.7),
            "change_date": ["2023-02-01"] * n,
        },
        geometry=[box(500_000 + 20 * i, 4_999_000, 500_010 + 20 * i, 4_999_010) for i in range(n)],
        crs=crs,
    )


def test_write_gpkg_layers_roundtrip(tmp_path: Path, grid: GridSpec) -> None:
    runs = {
        "inputs": [tmp_path / "a.tif", "b.tif"],
        "dates": ["2023-01-01", "2023-02-01"],
        "threshold": np.float32(0.5),
        "align": False,
        "chunk_size": 512,
        "model": None,
        "extra": {"halo": 12},
    }
    out = write_gpkg(_changes(grid.crs), tmp_path / "c.gpkg", runs=runs)
    # runs with dates: the changes layer's default style in layer_styles
    assert sorted(name for name, _ in pyogrio.list_layers(out)) == [
        "changes",
        "layer_styles",
        "runs",
    ]
    back = gpd.read_file(out, layer="changes")
    assert back.crs == grid.crs
    assert list(back.columns) == ["id", "area_m2", "mean_prob", "change_date", "geometry"]
    assert back.geom_type.tolist() == ["Polygon", "Polygon"]
    assert back.geometry.iloc[1].equals(_changes(grid.crs).geometry.iloc[1])
    row = pyogrio.read_dataframe(out, layer="runs").iloc[0]
    assert json.loads(row["dates"]) == ["2023-01-01", "2023-02-01"]
    assert json.loads(row["inputs"])[1] == "b.tif"
    assert row["threshold"] == pytest.approx(0.5)
    assert row["chunk_size"] == 512
    assert json.loads(row["extra"]) == {"halo": 12}
    assert _leftovers(tmp_path) == []


def test_write_gpkg_empty_and_overwrite(tmp_path: Path, grid: GridSpec) -> None:
    empty = _changes(grid.crs, 0)
    out = write_gpkg(empty, tmp_path / "e.gpkg", runs={"threshold": 0.5})
    back = gpd.read_file(out, layer="changes")
    assert len(back) == 0 and back.crs == grid.crs
    assert {"id", "area_m2", "mean_prob", "change_date"} <= set(back.columns)
    with pytest.raises(OutputExistsError, match="e.gpkg' already exists"):
        write_gpkg(empty, out)
    write_gpkg(_changes(grid.crs, 3), out, overwrite=True)
    assert len(gpd.read_file(out, layer="changes")) == 3
    assert [n for n, _ in pyogrio.list_layers(out)] == ["changes"]
    with pytest.raises(InputError, match="expected '.gpkg'"):
        write_gpkg(empty, tmp_path / "e.shp")
    assert _leftovers(tmp_path) == []


def test_write_rasters_on_a_distributed_client(
    tmp_path: Path, grid: GridSpec, prob: np.ndarray
) -> None:
    distributed = pytest.importorskip("distributed")
    arr = da.from_array(prob, chunks=(30, 40))
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        out = write_raster(arr, grid, tmp_path / "p.tif", dtype="float32", nodata=np.nan, cog=True)
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), prob)
        assert src.overviews(1)
    assert _leftovers(tmp_path) == []
