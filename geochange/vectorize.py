"""Change polygons from the probability and change-date rasters, merged across chunk borders.

Per chunk (one numpy block at a time, never the whole scene): pixels with probability >=
threshold and valid data form a mask; its connected components (4-connectivity, the same as
``rasterio.features.shapes(connectivity=4)``, so each component is exactly one polygon and a
diagonal touch never joins two regions) are labelled and polygonised in *global pixel
coordinates* (integers, exact in floating point), with per-piece sums: pixel count, sum and
max of the probability, histogram of change-date indices.

Pieces of one region cut by a chunk border are then found exactly from the labels on both
sides of each border (4-adjacent pixels both in a piece), grouped (connected components of that
graph, i.e. union-find) and unioned with ``shapely.union_all``, holes kept. Because the union
happens on exact integer coordinates and every polygon is canonicalised the same way, the
result does not depend on ``chunk_size``. Only then are polygons mapped to the grid's CRS,
simplified (optional), measured geodesically and filtered by ``min_area``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import shape

from geochange.dates import iso, to_when
from geochange.errors import InputError
from geochange.grid import GridSpec

__all__ = ["COLUMNS", "DATE_NODATA", "geodesic_area", "polygons_from_rasters"]

logger = logging.getLogger(__name__)

# rasterio.features.shapes warns "not georeferenced" for its in-memory dataset (always in rasterio
# 1.4, whatever the transform): a spurious warning per chunk. warnings.catch_warnings is not
# thread-safe, so the filter is installed once, narrowly (this message, via rasterio.features).
warnings.filterwarnings("ignore", message="Dataset has no geotransform", module="rasterio.features")

#: Value of the change-date raster where the pixel is nodata (docs/DESIGN.md encodings).
DATE_NODATA = 255
#: Attribute columns of the ``changes`` layer, in order (then ``geometry``).
COLUMNS = (
    "id",
    "area_m2",
    "mean_prob",
    "max_prob",
    "change_date",
    "date_before",
    "date_after",
    "later_dates",
    "n_pixels",
)
_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


@dataclass
class _Pieces:
    """Polygons of one chunk, in global pixel coordinates, with per-piece sums.

    ``edges`` holds the piece label (1-based within the chunk, 0 = none) of every pixel on the
    chunk's top, bottom, left and right edges.
    """

    geoms: np.ndarray  # (n,) shapely Polygons
    count: np.ndarray  # (n,) int64
    psum: np.ndarray  # (n,) float64
    pmax: np.ndarray  # (n,) float64
    hist: np.ndarray  # (n, T) int64; column j = pixels with date index j (0 = undated)
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _chunk_pieces(
    prob: np.ndarray, date: np.ndarray, row0: int, col0: int, threshold: float, n_dates: int
) -> _Pieces:
    """Label and polygonise one chunk. prob: (h, w) float, NaN nodata; date: (h, w) uint8."""
    prob = np.asarray(prob, dtype=np.float64)
    date = np.asarray(date)
    valid = ~np.isnan(prob) & (date != DATE_NODATA)
    mask = valid & (np.nan_to_num(prob, nan=0.0) >= threshold)
    labels, n = ndimage.label(mask, structure=_CROSS)
    labels = labels.astype(np.int32, copy=False)
    edges = (labels[0].copy(), labels[-1].copy(), labels[:, 0].copy(), labels[:, -1].copy())
    geoms = np.empty(n, dtype=object)
    if n == 0:
        empty = np.zeros(0)
        hist0 = np.zeros((0, n_dates), np.int64)
        return _Pieces(geoms, empty.astype(np.int64), empty, empty, hist0, edges)

    parts: list[list] = [[] for _ in range(n)]
    # Pieces are built in global pixel coordinates (moved into the CRS at the end); rasterio's
    # "not georeferenced" warning is filtered at import (see the top of this module).
    pixel = Affine.translation(col0, row0)
    for geom, value in rasterio.features.shapes(labels, mask=mask, connectivity=4, transform=pixel):
        parts[int(value) - 1].append(shape(geom))
    for i, ps in enumerate(parts):
        geoms[i] = ps[0] if len(ps) == 1 else shapely.union_all(ps)

    flat = labels.ravel()
    p = np.where(mask, prob, 0.0).ravel()
    count = np.bincount(flat, minlength=n + 1)[1:].astype(np.int64)
    psum = np.bincount(flat, weights=p, minlength=n + 1)[1:]
    pmax = np.asarray(ndimage.maximum(p.reshape(labels.shape), labels, np.arange(1, n + 1)))
    d = date.astype(np.int64).ravel()
    d = np.where((d >= 1) & (d < n_dates), d, 0)
    hist = np.bincount(flat * n_dates + d, minlength=(n + 1) * n_dates).reshape(n + 1, n_dates)
    return _Pieces(geoms, count, psum, pmax.astype(np.float64), hist[1:].astype(np.int64), edges)


def _offsets(extent: int, chunk_size: int) -> list[int]:
    return list(range(0, extent, chunk_size))


def _merge_groups(
    pieces: dict[tuple[int, int], _Pieces], offsets: dict[tuple[int, int], int], n_total: int
) -> np.ndarray:
    """Group id per global piece: pieces 4-adjacent across a chunk border share a group."""
    rows, cols = [], []
    for (i, j), pc in pieces.items():
        for nb, mine, theirs in (((i + 1, j), 1, 0), ((i, j + 1), 3, 2)):
            if nb not in pieces:
                continue
            a, b = pc.edges[mine], pieces[nb].edges[theirs]
            both = (a > 0) & (b > 0)
            if both.any():
                rows.append(a[both] - 1 + offsets[(i, j)])
                cols.append(b[both] - 1 + offsets[nb])
    if not rows:
        return np.arange(n_total)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(n_total, n_total))
    _, group = connected_components(graph, directed=False)
    return group


def _canonical(geom: shapely.Geometry) -> shapely.Geometry:
    # Drop collinear vertices left on former chunk borders (tolerance 0 removes only those),
    # and fix ring order and start points, so every chunking gives the very same geometry.
    return shapely.normalize(shapely.simplify(geom, 0.0, preserve_topology=True))


def _to_crs_coords(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    a, b, c, d, e, f = transform[:6]

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    return shapely.transform(geoms, apply)


def _ring_area(geod: pyproj.Geod, ring: shapely.LinearRing) -> float:
    xy = np.asarray(ring.coords)
    return abs(geod.polygon_area_perimeter(xy[:, 0], xy[:, 1])[0])


def geodesic_area(
    geoms: Sequence[shapely.Geometry] | np.ndarray | gpd.GeoSeries,
    crs: pyproj.CRS | str | int | object,
) -> np.ndarray:
    """True areas of polygons in m², on the ellipsoid of ``crs``, for any CRS.

    Vertices are transformed to the CRS's own geographic CRS (lon/lat, no datum shift) and the
    area is computed with ``pyproj.Geod`` (edges taken as geodesics between vertices; for
    pixel-sized edges the difference from straight grid lines is negligible). Holes are
    subtracted, parts of a MultiPolygon added, independent of ring orientation.

    Args:
        geoms: Polygons / MultiPolygons in ``crs`` (None or empty gives 0).
        crs: any CRS pyproj understands (a rasterio CRS too), geographic or projected.

    Returns:
        (n,) float64 areas in m². For a CRS without an ellipsoid (engineering CRS), the planar
        area in CRS units², with a warning in the log.
    """
    geoms = np.asarray(list(geoms), dtype=object)
    out = np.zeros(len(geoms), dtype=np.float64)
    if len(geoms) == 0:
        return out
    pcrs = pyproj.CRS.from_user_input(crs)
    geod = pcrs.get_geod()
    if geod is None or pcrs.geodetic_crs is None:
        logger.warning("CRS %s has no ellipsoid: areas are planar, in CRS units²", pcrs.name)
        return shapely.area(geoms).astype(np.float64)
    to_lonlat = pyproj.Transformer.from_crs(pcrs, pcrs.geodetic_crs, always_xy=True)

    def apply(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))

    lonlat = shapely.transform(geoms, apply)
    for k, g in enumerate(lonlat):
        if g is None or g.is_empty:
            continue
        polys = g.geoms if hasattr(g, "geoms") else [g]
        total = 0.0
        for poly in polys:
            if poly.geom_type != "Polygon":
                continue
            total += _ring_area(geod, poly.exterior)
            total -= sum(_ring_area(geod, r) for r in poly.interiors)
        out[k] = total
    return out


def _empty_frame(crs: object) -> gpd.GeoDataFrame:
    data = {
        "id": pd.Series([], dtype="int64"),
        "area_m2": pd.Series([], dtype="float64"),
        "mean_prob": pd.Series([], dtype="float64"),
        "max_prob": pd.Series([], dtype="float64"),
        "change_date": pd.Series([], dtype="object"),
        "date_before": pd.Series([], dtype="object"),
        "date_after": pd.Series([], dtype="object"),
        "later_dates": pd.Series([], dtype="int64"),
        "n_pixels": pd.Series([], dtype="int64"),
    }
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def _check(prob, date_index, grid, dates, threshold, min_area, simplify, chunk_size) -> None:
    for name, arr in (("prob", prob), ("date_index", date_index)):
        if tuple(arr.shape) != grid.shape:
            raise InputError(
                f"{name}: found shape {tuple(arr.shape)}, expected the grid shape {grid.shape} "
                "(y, x); pass the rasters written on the stack's grid."
            )
    if len(dates) < 2:
        raise InputError(f"dates: found {len(dates)}, expected at least 2 (one per stack date).")
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold: found {threshold}, expected a probability in (0, 1].")
    if min_area < 0:
        raise InputError(f"min_area: found {min_area}, expected an area in m² >= 0.")
    if simplify < 0:
        raise InputError(f"simplify: found {simplify}, expected a tolerance in CRS units >= 0.")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise InputError(f"chunk_size: found {chunk_size!r}, expected a positive whole number.")


def polygons_from_rasters(
    prob: np.ndarray | da.Array,
    date_index: np.ndarray | da.Array,
    grid: GridSpec,
    dates: Sequence[_dt.date | str],
    *,
    threshold: float = 0.5,
    min_area: float = 0.0,
    simplify: float = 0.0,
    chunk_size: int = 1024,
) -> gpd.GeoDataFrame:
    """One polygon per connected change region (4-connectivity), merged across chunks.

    Args:
        prob: (y, x) change probability in [0, 1], NaN = nodata (numpy or dask).
        date_index: (y, x) uint8: 0 no change, j = 1..T-1 change first seen on date j, 255 nodata.
        grid: grid of both rasters; polygons come out in ``grid.crs``.
        dates: the T stack dates (``datetime.date`` or ISO strings), ascending.
        threshold: a pixel is change where prob >= threshold (and valid).
        min_area: regions smaller than this (m², geodesic, after merging) are dropped.
        simplify: Douglas-Peucker tolerance in CRS units (topology preserved); 0 = off.
        chunk_size: edge in pixels of the blocks processed one at a time (dask arrays are
            rechunked to it, and chunks are computed as separate tasks).

    Returns:
        GeoDataFrame in ``grid.crs`` with columns ``id`` (1..n, ordered by top-left pixel),
        ``area_m2``, ``mean_prob``, ``max_prob``, ``change_date`` (ISO, = ``date_after``),
        ``date_before``, ``date_after``, ``later_dates``, ``n_pixels`` and ``geometry``
        (Polygon, holes kept). The change date of a region is the date index with most of its
        pixels (ties: earliest). ``later_dates`` is the number of dates after the change date:
        0 = the change rests on the last date alone, nothing yet shows it lasts (a cloud there
        and a new surface can look alike), so a later acquisition should confirm it; -1 =
        undated.
    """
    dates = [to_when(d, "dates") for d in dates]
    _check(prob, date_index, grid, dates, threshold, min_area, simplify, chunk_size)
    n_dates = len(dates)
    ys, xs = _offsets(grid.height, chunk_size), _offsets(grid.width, chunk_size)
    keys = [(i, j) for i in range(len(ys)) for j in range(len(xs))]

    lazy = isinstance(prob, da.Array) or isinstance(date_index, da.Array)
    if lazy:
        chunks = (
            tuple(min(chunk_size, grid.height - y) for y in ys),
            tuple(min(chunk_size, grid.width - x) for x in xs),
        )
        pblocks = da.asarray(prob).rechunk(chunks).to_delayed()
        dblocks = da.asarray(date_index).rechunk(chunks).to_delayed()
        tasks = [
            dask.delayed(_chunk_pieces, pure=True)(
                pblocks[i, j], dblocks[i, j], ys[i], xs[j], threshold, n_dates
            )
            for i, j in keys
        ]
        results = dask.compute(*tasks)
    else:
        prob, date_index = np.asarray(prob), np.asarray(date_index)
        results = [
            _chunk_pieces(
                prob[ys[i] : ys[i] + chunk_size, xs[j] : xs[j] + chunk_size],
                date_index[ys[i] : ys[i] + chunk_size, xs[j] : xs[j] + chunk_size],
                ys[i],
                xs[j],
                threshold,
                n_dates,
            )
            for i, j in keys
        ]
    pieces = dict(zip(keys, results))
    offsets, total = {}, 0
    for k in keys:
        offsets[k] = total
        total += len(pieces[k].geoms)
    if total == 0:
        return _empty_frame(grid.crs)

    geoms = np.concatenate([pieces[k].geoms for k in keys])
    count = np.concatenate([pieces[k].count for k in keys])
    psum = np.concatenate([pieces[k].psum for k in keys])
    pmax = np.concatenate([pieces[k].pmax for k in keys])
    hist = np.concatenate([pieces[k].hist for k in keys])
    group = _merge_groups(pieces, offsets, total)
    n = int(group.max()) + 1

    g_count = np.bincount(group, weights=count, minlength=n).astype(np.int64)
    g_sum = np.bincount(group, weights=psum, minlength=n)
    g_max = np.full(n, -np.inf)
    np.maximum.at(g_max, group, pmax)
    g_hist = np.zeros((n, n_dates), np.int64)
    np.add.at(g_hist, group, hist)
    order = np.argsort(group, kind="stable")
    splits = np.flatnonzero(np.diff(group[order])) + 1
    members = np.split(order, splits)
    g_geoms = np.empty(n, dtype=object)
    for idx in members:
        g = group[idx[0]]
        g_geoms[g] = geoms[idx[0]] if len(idx) == 1 else shapely.union_all(geoms[idx])
    g_geoms = np.array([_canonical(g) for g in g_geoms], dtype=object)
    logger.debug("%d pieces in %d chunks merged into %d regions", total, len(keys), n)

    # Deterministic order: by the top-left pixel of each region (row, then column).
    bounds = shapely.bounds(g_geoms)
    rank = np.lexsort((bounds[:, 0], bounds[:, 1]))
    g_geoms, g_count, g_sum, g_max, g_hist = (
        g_geoms[rank],
        g_count[rank],
        g_sum[rank],
        g_max[rank],
        g_hist[rank],
    )

    crs_geoms = _to_crs_coords(g_geoms, grid.transform)
    if simplify > 0:
        crs_geoms = shapely.simplify(crs_geoms, simplify, preserve_topology=True)
    area = geodesic_area(crs_geoms, grid.crs) if grid.crs else shapely.area(crs_geoms)
    keep = area >= min_area
    if not keep.any():
        return _empty_frame(grid.crs)

    dated = g_hist[:, 1:].sum(axis=1) > 0
    j = np.where(dated, np.argmax(g_hist[:, 1:], axis=1) + 1, 0)
    after = [iso(dates[k]) if k else None for k in j]
    before = [iso(dates[k - 1]) if k else None for k in j]
    frame = gpd.GeoDataFrame(
        {
            "id": np.zeros(int(keep.sum()), np.int64),
            "area_m2": area[keep],
            "mean_prob": (g_sum / g_count)[keep],
            "max_prob": g_max[keep],
            "change_date": np.array(after, dtype=object)[keep],
            "date_before": np.array(before, dtype=object)[keep],
            "date_after": np.array(after, dtype=object)[keep],
            "later_dates": np.where(j > 0, n_dates - 1 - j, -1).astype(np.int64)[keep],
            "n_pixels": g_count[keep],
        },
        geometry=gpd.GeoSeries(crs_geoms[keep], crs=grid.crs),
        crs=grid.crs,
    )
    frame["id"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame.reset_index(drop=True)
