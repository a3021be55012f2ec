"""Examples of what the user calls change: polygons in any vector file, rasterised on a stack's grid.

An *examples file* is anything OGR reads (a GeoPackage first; a shapefile, GeoJSON, FlatGeobuf...).
Its layers say, polygon by polygon, what is change and what is not:

- every layer except ``labelled`` holds polygons with a column ``change``: ``1`` / ``true`` /
  ``yes`` = change, ``0`` / ``false`` / ``no`` = no change. A layer without the column is all
  change.
- a layer named ``labelled`` holds areas the user reviewed completely: inside them every pixel
  not covered by a change polygon is no change.
- a layer with a column ``verdict`` (the ``changes`` layer of an earlier ``geochange detect``
  run, once the user filled the column in QGIS's attribute table) counts only its filled rows:
  ``1`` / ``yes`` = the polygon is change, ``0`` / ``no`` = it is not; empty rows are unchecked
  and ignored. The ``changes`` layer of a geochange output without that column is refused: it
  holds what the model found, not what the user checked.

Any CRS is reprojected to the stack's; invalid geometries are repaired (``shapely.make_valid``).
:func:`read_examples` rasterises them on the stack's grid (a pixel belongs to a polygon when its
centre lies inside; a polygon smaller than two pixels takes every pixel it touches):
``1`` change, ``0`` no change, ``255`` unknown. A pixel that a change and a no-change polygon
both cover is unknown.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geochange.errors import InputError
from geochange.grid import GridSpec

__all__ = ["UNKNOWN", "Examples", "parse_flag", "read_examples"]

logger = logging.getLogger(__name__)

#: Label of a pixel no example says anything about.
UNKNOWN = 255
#: Name of the layer of completely reviewed areas.
LABELLED_LAYER = "labelled"
_TRUE = {"1", "true", "yes", "y", "t", "1.0"}
_FALSE = {"0", "false", "no", "n", "f", "0.0"}


@dataclass(frozen=True)
class Examples:
    """The user's examples on a stack's grid.

    Attributes:
        label: (h, w) uint8 on the stack's grid: 1 change, 0 no change, 255 unknown.
        path: the examples file.
        sha256: hex digest of the file's bytes.
        n_change: change polygons used.
        n_no_change: no-change polygons used (verdict 0 included).
        n_labelled: completely reviewed areas used.
        n_unchecked: ``verdict`` rows left empty (ignored).
        layers: the layers read.
    """

    label: np.ndarray
    path: Path
    sha256: str
    n_change: int
    n_no_change: int
    n_labelled: int
    n_unchecked: int
    layers: tuple[str, ...]

    @property
    def change_pixels(self) -> int:
        """Pixels labelled change."""
        return int((self.label == 1).sum())

    @property
    def no_change_pixels(self) -> int:
        """Pixels labelled no change."""
        return int((self.label == 0).sum())

    def summary(self) -> dict[str, Any]:
        """Counts and hash for the ``runs`` layer."""
        return {
            "examples": str(self.path),
            "examples_sha256": self.sha256,
            "examples_change_polygons": self.n_change,
            "examples_no_change_polygons": self.n_no_change,
            "examples_labelled_areas": self.n_labelled,
            "examples_change_px": self.change_pixels,
            "examples_no_change_px": self.no_change_pixels,
        }


def parse_flag(value: Any) -> bool | None:
    """``True`` for 1/true/yes, ``False`` for 0/false/no (any case), ``None`` for empty/NaN.

    Raises:
        ValueError: any other value.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return None
    text = str(value).strip().lower()
    if text == "":
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(value)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _layers(path: Path) -> list[tuple[str, str | None]]:
    import pyogrio

    try:
        found = pyogrio.list_layers(path)
    except Exception as exc:  # noqa: BLE001 - OGR raises many kinds for a non-vector file
        raise InputError(
            f"--examples {path}: not vector data OGR can read ({str(exc).splitlines()[0][:160]}); "
            "expected a GeoPackage (or another OGR format) of polygons"
        ) from exc
    return [(str(name), None if gtype is None else str(gtype)) for name, gtype in found]


def _column(frame: Any, name: str) -> str | None:
    return next((c for c in frame.columns if str(c).lower() == name), None)


def _flags(values: Any, where: str, column: str, allow_empty: bool) -> np.ndarray:
    """Column values as an int8 array: 1 change, 0 no change, -1 empty (unchecked)."""
    out = np.empty(len(values), np.int8)
    for i, v in enumerate(values):
        try:
            flag = parse_flag(v)
        except ValueError:
            raise InputError(
                f"--examples {where}: column {column!r} of feature {i + 1} holds {v!r}, expected "
                "1/true/yes (change) or 0/false/no (no change); correct that value"
            ) from None
        if flag is None and not allow_empty:
            raise InputError(
                f"--examples {where}: column {column!r} of feature {i + 1} is empty, expected "
                "1/true/yes (change) or 0/false/no (no change); fill it or delete the feature"
            )
        out[i] = -1 if flag is None else int(flag)
    return out


def _polygons(frame: Any, where: str) -> list[Any]:
    """The polygonal part of each geometry, repaired where invalid (None where empty)."""
    import shapely

    out = []
    for i, geom in enumerate(frame.geometry):
        if geom is None or geom.is_empty:
            out.append(None)
            continue
        kind = geom.geom_type
        if kind not in ("Polygon", "MultiPolygon", "GeometryCollection"):
            raise InputError(
                f"--examples {where}: feature {i + 1} is a {kind}, expected polygons; draw areas "
                "(polygons), not points or lines"
            )
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        parts = shapely.get_parts(geom)
        polys = [p for p in parts if p.geom_type in ("Polygon", "MultiPolygon") and p.area > 0]
        if not polys:
            raise InputError(
                f"--examples {where}: feature {i + 1} is an invalid polygon that cannot be repaired "
                f"into an area ({shapely.is_valid_reason(frame.geometry.iloc[i])}); redraw it"
            )
        out.append(shapely.unary_union(polys) if len(polys) > 1 else polys[0])
    return out


def _rasterize(geoms: list[Any], grid: GridSpec) -> np.ndarray:
    """(h, w) bool: pixel centres inside any geometry; a geometry under two pixels in area takes
    every pixel it touches, so a small example is never lost."""
    from rasterio.features import rasterize

    out = np.zeros(grid.shape, bool)
    if not geoms:
        return out
    px = grid.res[0] * grid.res[1]
    big = [g for g in geoms if g.area >= 2 * px]
    small = [g for g in geoms if g.area < 2 * px]
    for shapes, touched in ((big, False), (small, True)):
        if shapes:
            out |= rasterize(
                [(g, 1) for g in shapes],
                out_shape=grid.shape,
                transform=grid.transform,
                fill=0,
                all_touched=touched,
                dtype="uint8",
            ).astype(bool)
    return out


def read_examples(path: str | os.PathLike, grid: GridSpec) -> Examples:
    """Read an examples file and rasterise it on ``grid`` (see the module docstring).

    Args:
        path: vector file OGR reads.
        grid: the stack's grid.

    Returns:
        The :class:`Examples`.

    Raises:
        InputError: a missing file, not vector data, a layer without CRS, points or lines,
            a ``change``/``verdict`` value other than 1/0/true/false/yes/no, an unrepairable
            polygon, examples that all lie outside the stack, or no change example at all.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.exists():
        raise InputError(f"--examples {path}: file not found; pass the vector file of examples")
    if grid.crs is None:
        raise InputError(
            "stack: has no CRS, so examples cannot be placed on it; give the GeoTIFFs a CRS"
        )
    layers = _layers(path)
    names = {n.lower() for n, _ in layers}
    geochange_output = "runs" in names and "changes" in names
    change_geoms: list[Any] = []
    nochange_geoms: list[Any] = []
    labelled_geoms: list[Any] = []
    n_unchecked = 0
    used: list[str] = []
    for name, gtype in layers:
        if gtype is None:  # an attribute table (e.g. geochange's `runs`): no examples there
            continue
        where = f"{path} layer {name!r}"
        try:
            frame = gpd.read_file(path, layer=name, engine="pyogrio")
        except Exception as exc:  # noqa: BLE001 - OGR raises many kinds
            raise InputError(
                f"--examples {where}: cannot be read ({str(exc).splitlines()[0][:160]}); "
                "expected a layer of polygons"
            ) from exc
        if len(frame) == 0:
            continue
        if frame.crs is None:
            raise InputError(
                f"--examples {where}: has no CRS, expected one; set the layer's CRS in QGIS "
                "(Layer Properties > Source) or save it again with one"
            )
        verdict = _column(frame, "verdict")
        change = _column(frame, "change")
        is_labelled = name.lower() == LABELLED_LAYER
        if geochange_output and name.lower() == "changes" and verdict is None:
            raise InputError(
                f"--examples {where}: a geochange result without a 'verdict' column; add the "
                "column in QGIS's attribute table and fill 1/yes (change) or 0/no (not change) "
                "for the polygons you checked"
            )
        if is_labelled:
            flags = np.zeros(len(frame), np.int8)
        elif verdict is not None:
            flags = _flags(frame[verdict], where, verdict, allow_empty=True)
        elif change is not None:
            flags = _flags(frame[change], where, change, allow_empty=False)
        else:
            flags = np.ones(len(frame), np.int8)
        frame = frame.to_crs(grid.crs)
        geoms = _polygons(frame, where)
        used.append(name)
        for g, f in zip(geoms, flags):
            if g is None:
                continue
            if f < 0:
                n_unchecked += 1
            elif is_labelled:
                labelled_geoms.append(g)
            elif f == 1:
                change_geoms.append(g)
            else:
                nochange_geoms.append(g)
    if not used:
        raise InputError(
            f"--examples {path}: holds no polygon layer with features; expected polygons of "
            "change (and of no change)"
        )
    if not change_geoms:
        raise InputError(
            f"--examples {path}: no change example (every polygon is no change, unchecked or a "
            "reviewed area); draw at least one change polygon (change = 1)"
        )
    chg = _rasterize(change_geoms, grid)
    nochg = _rasterize(nochange_geoms, grid)
    area = _rasterize(labelled_geoms, grid)
    label = np.full(grid.shape, UNKNOWN, np.uint8)
    label[area | nochg] = 0
    label[chg] = 1
    label[chg & nochg] = UNKNOWN  # the user said both: trust neither
    if not (label == 1).any():
        import shapely

        lo = shapely.unary_union(change_geoms).bounds
        raise InputError(
            f"--examples {path}: no change polygon lies on the stack (change examples span "
            f"{tuple(round(v, 2) for v in lo)}, the stack {tuple(round(v, 2) for v in grid.bounds)} "
            f"in {grid.crs.to_string()}); draw the examples inside the stack's extent"
        )
    ex = Examples(
        label=label,
        path=path,
        sha256=_sha256(path),
        n_change=len(change_geoms),
        n_no_change=len(nochange_geoms),
        n_labelled=len(labelled_geoms),
        n_unchecked=n_unchecked,
        layers=tuple(used),
    )
    logger.info(
        "examples %s: %d change, %d no-change polygons, %d reviewed areas (%d unchecked); "
        "%d change px, %d no-change px",
        path,
        ex.n_change,
        ex.n_no_change,
        ex.n_labelled,
        n_unchecked,
        ex.change_pixels,
        ex.no_change_pixels,
    )
    return ex
