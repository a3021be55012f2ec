"""Writers: Cloud-Optimized GeoTIFFs written block by block, and the GeoPackage.

Every output appears whole or not at all (:mod:`geochange.io.atomic`): it is written under a
temporary name in the same folder and renamed once complete; on any error the temporary files are
removed.

Rasters are written from the dask graph chunk by chunk (``dask.array.store``): each task opens
the file created up front, writes its window and closes it, under a lock per file (a
``threading.Lock`` on the local scheduler, a ``distributed.Lock`` on a cluster). No process holds
more than its chunks. On a cluster, the workers must see the output folder at the same path as
the client (a shared file system); the file is created and renamed by the client.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from geochange.errors import InputError
from geochange.grid import GridSpec
from geochange.io.atomic import atomic_path, check_writable, remove_temp, temp_path, write_text

__all__ = [
    "RasterOutput",
    "rat_xml",
    "read_raster_lazy",
    "write_gpkg",
    "write_raster",
    "write_rasters",
]

logger = logging.getLogger(__name__)

#: Chunk edge used when a numpy array is written (it is wrapped in a dask array).
_NUMPY_CHUNK = 512


# ----------------------------------------------------------------------------- rasters


@dataclass
class RasterOutput:
    """One raster to write.

    Attributes:
        array: (y, x) or (b, y, x) values on the grid, dask or numpy.
        path: final file path (.tif).
        dtype: on-disk dtype, e.g. "float32", "uint8".
        nodata: nodata value (NaN allowed for floats), or None.
        cog: write a Cloud-Optimized GeoTIFF (overviews, COG layout) instead of a tiled GeoTIFF.
        tags: dataset metadata tags.
        band_descriptions: one description per band.
        resampling: overview resampling for COGs; None = "average" for floats, "nearest"
            otherwise (categorical rasters such as the change date must not be averaged).
        scale: GDAL scale of every band (value x scale = quantity; offset 0), or None.
        colormap: colour table of band 1, value -> (r, g, b, a) 0-255 (integer rasters only).
        creation: GDAL creation options of the final copy (COG or GTiff), overriding ours, e.g.
            ``{"COMPRESS": "LERC", "MAX_Z_ERROR": "0.001"}``.
        rat: raster attribute table of band 1, one dict per class (same keys in each, a
            ``value`` key first), written as GDAL's side-car ``PATH.aux.xml`` (GDAL keeps a
            GeoTIFF's attribute table there; QGIS and ArcGIS read it).
    """

    array: da.Array | np.ndarray
    path: str | os.PathLike
    dtype: str | np.dtype = "float32"
    nodata: float | None = None
    cog: bool = False
    tags: Mapping[str, Any] | None = None
    band_descriptions: Sequence[str] | None = None
    resampling: str | None = None
    scale: float | None = None
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None
    creation: Mapping[str, Any] | None = None
    rat: Sequence[Mapping[str, Any]] | None = None


# GDAL's field usages (GDALRATFieldUsage) by column name; other columns are generic (0).
_RAT_USAGE = {"value": 5, "label": 2, "red": 6, "green": 7, "blue": 8, "alpha": 9}


def rat_xml(rows: Sequence[Mapping[str, Any]]) -> str:
    """GDAL's PAM XML (``.aux.xml``) holding ``rows`` as band 1's thematic attribute table.

    Column types follow the first row: int -> GFT_Integer (0), float -> GFT_Real (1),
    anything else -> GFT_String (2).
    """
    import xml.etree.ElementTree as ET

    names = list(rows[0])
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    table = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for i, name in enumerate(names):
        first = rows[0][name]
        kind = 0 if isinstance(first, (int, np.integer)) else 1 if isinstance(first, float) else 2
        field = ET.SubElement(table, "FieldDefn", index=str(i))
        ET.SubElement(field, "Name").text = name
        ET.SubElement(field, "Type").text = str(kind)
        ET.SubElement(field, "Usage").text = str(_RAT_USAGE.get(name.lower(), 0))
    for r, row in enumerate(rows):
        element = ET.SubElement(table, "Row", index=str(r))
        for name in names:
            ET.SubElement(element, "F").text = "" if row[name] is None else str(row[name])
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


class _WindowWriter:
    """A picklable ``da.store`` target: each assignment opens the file, writes, closes."""

    def __init__(self, path: Path, shape: tuple[int, int, int], dtype: np.dtype):
        self.path = str(path)
        self.shape = shape
        self.dtype = dtype
        self.ndim = 3

    def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
        _, ys, xs = key
        window = Window.from_slices(ys, xs, height=self.shape[1], width=self.shape[2])
        with rasterio.open(self.path, "r+") as dst:
            dst.write(np.asarray(value, dtype=self.dtype), window=window)


def _block_size(grid: GridSpec) -> int:
    return 512 if min(grid.height, grid.width) >= 1024 else 256


def _predictor(dtype: np.dtype) -> int:
    if dtype.kind == "f":
        return 3
    return 2 if dtype.itemsize > 1 else 1


def _new_lock(name: str) -> Any:
    """A write lock valid for the active scheduler (distributed when a client is active)."""
    try:
        from distributed import Lock, default_client

        default_client()
    except (ImportError, ValueError):
        return threading.Lock()
    return Lock(name)


def _as_bands(array: da.Array | np.ndarray, grid: GridSpec, path: Path) -> da.Array:
    if not isinstance(array, da.Array):
        array = da.from_array(np.asarray(array), chunks=_NUMPY_CHUNK)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != grid.shape:
        raise ValueError(
            f"raster {str(path)!r}: array shape {array.shape} does not fit the grid "
            f"{grid.shape}; expected (y, x) or (bands, y, x) with (y, x) = {grid.shape}."
        )
    return array.rechunk({0: -1})


def _aligned(chunks: tuple[tuple[int, ...], ...], block: int) -> bool:
    return all(c % block == 0 for axis in chunks[1:] for c in np.cumsum(axis)[:-1])


def write_rasters(
    outputs: Sequence[RasterOutput | Mapping[str, Any]],
    grid: GridSpec,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write several rasters on ``grid`` in one pass over the dask graph.

    Arrays sharing upstream work (e.g. probability and date from one detector run) are computed
    together, each chunk once. Each file is created up front with its final profile (tiled,
    DEFLATE, predictor, BIGTIFF=IF_SAFER) under a temporary name, filled chunk by chunk, then
    copied into COG layout with overviews when ``cog`` is set, and renamed.

    Args:
        outputs: what to write (``RasterOutput`` or dicts of its fields).
        grid: CRS, transform and shape of every output.
        overwrite: replace existing files.

    Returns:
        The final paths, in order.

    Raises:
        OutputExistsError: a file exists and ``overwrite`` is False.
        ValueError: an array does not fit the grid.
    """
    outs = [o if isinstance(o, RasterOutput) else RasterOutput(**o) for o in outputs]
    finals = [Path(o.path) for o in outs]
    check_writable(finals + [Path(f"{o.path}.aux.xml") for o in outs if o.rat], overwrite)
    arrays = [_as_bands(o.array, grid, p) for o, p in zip(outs, finals)]
    block = _block_size(grid)

    with contextlib.ExitStack() as stack:
        finals_tmp = [stack.enter_context(atomic_path(p)) for p in finals]
        works = [temp_path(p, "work") for p in finals]
        stack.callback(lambda: [remove_temp(w) for w in works])

        stores = []
        for o, arr, work in zip(outs, arrays, works):
            dtype = np.dtype(o.dtype)
            profile = grid.profile(
                count=arr.shape[0],
                dtype=dtype.name,
                nodata=o.nodata,
                tiled=True,
                blockxsize=block,
                blockysize=block,
                compress="DEFLATE",
                predictor=_predictor(dtype),
                BIGTIFF="IF_SAFER",
                SPARSE_OK=True,
            )
            with rasterio.open(work, "w", **profile) as dst:
                if o.tags:
                    dst.update_tags(**{k: str(v) for k, v in o.tags.items()})
                for i, desc in enumerate(o.band_descriptions or [], start=1):
                    dst.set_band_description(i, desc)
                if o.colormap:
                    dst.write_colormap(1, dict(o.colormap))
                if o.scale is not None:
                    dst.scales = (o.scale,) * dst.count
                    dst.offsets = (0.0,) * dst.count
            target = _WindowWriter(work, arr.shape, dtype)
            lock = _new_lock(f"geochange-write-{work.name}")
            stores.append(da.store(arr, target, lock=lock, compute=False))
        dask.compute(*stores)

        for o, arr, work, tmp in zip(outs, arrays, works, finals_tmp):
            dtype = np.dtype(o.dtype)
            if o.cog:
                _copy_cog(work, tmp, grid, dtype, o.resampling, block, o.creation)
            elif _aligned(arr.chunks, block):
                os.replace(work, tmp)
            else:
                # Chunks across tile borders rewrote some tiles; a copy drops the dead space.
                rasterio.shutil.copy(
                    work,
                    tmp,
                    driver="GTiff",
                    TILED="YES",
                    BLOCKXSIZE=block,
                    BLOCKYSIZE=block,
                    COMPRESS="DEFLATE",
                    PREDICTOR=_predictor(dtype),
                    BIGTIFF="IF_SAFER",
                    **dict(o.creation or {}),
                )
            logger.info("wrote %s", o.path)
    for o in outs:
        if o.rat:
            write_text(f"{o.path}.aux.xml", rat_xml(o.rat))
    return finals


def _copy_cog(
    src: Path,
    dst: Path,
    grid: GridSpec,
    dtype: np.dtype,
    resampling: str | None,
    block: int,
    creation: Mapping[str, Any] | None = None,
) -> None:
    resampling = resampling or ("average" if dtype.kind == "f" else "nearest")
    options: dict[str, Any] = {
        "COMPRESS": "DEFLATE",
        "PREDICTOR": "YES" if _predictor(dtype) > 1 else "NO",
        "BLOCKSIZE": block,
        "OVERVIEWS": "AUTO",
        "RESAMPLING": resampling.upper(),
        "BIGTIFF": "IF_SAFER",
    }
    if max(grid.height, grid.width) <= block:
        # GDAL's AUTO stops once a level fits one block; give small rasters one level anyway so
        # every output has overviews.
        options["OVERVIEW_COUNT"] = 1
    options.update({k.upper(): v for k, v in (creation or {}).items()})
    rasterio.shutil.copy(src, dst, driver="COG", **options)


def write_raster(
    array: da.Array | np.ndarray,
    grid: GridSpec,
    path: str | os.PathLike,
    *,
    dtype: str | np.dtype,
    nodata: float | None,
    cog: bool = False,
    tags: Mapping[str, Any] | None = None,
    band_descriptions: Sequence[str] | None = None,
    overwrite: bool = False,
    resampling: str | None = None,
) -> Path:
    """Write one (y, x) or (b, y, x) raster on ``grid``; see :func:`write_rasters`."""
    out = RasterOutput(array, path, dtype, nodata, cog, tags, band_descriptions, resampling)
    return write_rasters([out], grid, overwrite=overwrite)[0]


class _WindowReader:
    """A picklable array-like for ``da.from_array``: each slice opens the file and reads it."""

    def __init__(self, path: Path, band: int | None):
        self.path = str(path)
        self.band = band
        with rasterio.open(self.path) as src:
            count, h, w = src.count, src.height, src.width
            self.dtype = np.dtype(src.dtypes[0])
            self.mtime = os.stat(self.path).st_mtime_ns
            if band is not None and not 1 <= band <= count:
                raise InputError(
                    f"raster {self.path!r}: band {band} requested, the file has {count} band(s); "
                    f"pick a band from 1 to {count}."
                )
        self.shape = (h, w) if band is not None else (count, h, w)
        self.ndim = len(self.shape)

    def __dask_tokenize__(self) -> tuple:
        return (self.path, self.mtime, self.band)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        ys, xs = key[-2:]
        window = Window.from_slices(ys, xs, height=self.shape[-2], width=self.shape[-1])
        with rasterio.open(self.path) as src:
            if self.band is not None:
                return src.read(self.band, window=window)
            return src.read(window=window)[key[0]]


def read_raster_lazy(
    path: str | os.PathLike, *, band: int | None = 1, chunks: int | tuple = 512
) -> da.Array:
    """A written raster as a lazy dask array, read window by window (thread- and cluster-safe).

    Args:
        path: GeoTIFF path.
        band: 1-based band to read as (y, x); None reads all bands as (b, y, x).
        chunks: spatial chunk edge in pixels (or dask chunks).

    Returns:
        Lazy (y, x) or (b, y, x) array in the file's dtype.
    """
    reader = _WindowReader(Path(path), band)
    if band is None and isinstance(chunks, int):
        chunks = (-1, chunks, chunks)
    return da.from_array(reader, chunks=chunks, lock=False, asarray=True, fancy=False)


# ----------------------------------------------------------------------------- GeoPackage


def _runs_value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (_dt.date, _dt.datetime)):
        return v.isoformat()
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return json.dumps(v, default=str)


def _geometry_type(frame: gpd.GeoDataFrame) -> str:
    kinds = set(frame.geom_type.dropna()) if len(frame) else set()
    return "Polygon" if kinds <= {"Polygon"} else "MultiPolygon"


def write_gpkg(
    changes: gpd.GeoDataFrame,
    path: str | os.PathLike,
    *,
    runs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    layers: Mapping[str, gpd.GeoDataFrame] | None = None,
) -> Path:
    """Write the change polygons and the run's provenance to a GeoPackage.

    Layers: ``changes`` (the polygons, in their CRS; Polygon, or MultiPolygon when mixed;
    ``change_date``, ``date_before``, ``date_after`` as DATE fields) and ``runs`` (an attribute
    table, one row; lists and dicts JSON-encoded, ``created`` a UTC DATETIME). With a ``runs``
    record holding ``dates``, the ``layer_styles`` table gets the ``changes`` layer's default
    QGIS style (:mod:`geochange.io.gpkg`).

    Args:
        changes: change polygons (may be empty).
        path: .gpkg path.
        runs: provenance record, one value per column.
        overwrite: replace an existing file.
        layers: further polygon layers by name, written like ``changes`` (with its default
            style), e.g. ``events``: one polygon per change event of a long series.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise InputError(
            f"output {str(path)!r}: found suffix {path.suffix or '(none)'!r}, expected '.gpkg'; "
            "name the GeoPackage like 'changes.gpkg'."
        )
    check_writable([path], overwrite)
    from geochange.io import gpkg

    layers = {"changes": changes, **(layers or {})}
    with atomic_path(path) as tmp:
        for name, frame in layers.items():
            gpkg.write_changes(frame, tmp, name, _geometry_type(frame))
        if runs is not None:
            record = {k: _runs_value(v) for k, v in runs.items()}
            if "created" in runs:
                record["created"] = gpkg.as_utc(runs["created"])
            row = pd.DataFrame([record])
            import pyogrio

            pyogrio.write_dataframe(row, tmp, layer="runs", driver="GPKG", append=False)
            if runs.get("dates"):
                gpkg.write_style(tmp, list(layers), list(runs["dates"]), "geom")
    logger.info("wrote %s (%d polygons)", path, len(changes))
    return path
