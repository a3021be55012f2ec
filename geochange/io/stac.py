"""STAC items in: an ItemCollection (or a saved STAC API search) as a lazy cube, via odc-stac.

:func:`load_stac` reads the items from a JSON file (a ``FeatureCollection`` of STAC Items, as
``pystac.ItemCollection.save_object`` or a STAC API ``/search`` response saved to disk write it),
makes relative asset hrefs absolute against the file's folder, checks that every item has the
asked assets, and loads them with ``odc.stac.load``: one band per asset, items of the same solar
day grouped into one date (the first valid pixel wins), dask chunks of ``chunk_size``, on the
items' own grid unless ``crs``/``resolution``/``bbox`` say otherwise. Band centres come from the
assets' ``eo:bands`` (``center_wavelength`` in µm or ``common_name``), else from the asset keys
(``red``, ``nir08``, ``rededge1``: :mod:`geochange.bands`).

The cube goes to :func:`geochange.io.cube.stack_from_xarray`; nothing is read before the tasks
read their tiles. Needs the ``[stac]`` extra (odc-stac, pystac).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geochange.bands import wavelength_from_name, wavelength_from_um
from geochange.errors import InputError

__all__ = ["load_stac", "parse_assets", "parse_bbox"]

_INSTALL = "pip install 'geochange[stac]'"


def parse_assets(value: str | Sequence[str]) -> list[str]:
    """``"blue,green,red,nir"`` or a sequence -> asset keys, in order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    keys = [k.strip() for k in items if k and k.strip()]
    if not keys:
        raise InputError(
            "--assets: no asset given; expected the asset keys to load as bands, e.g. "
            "blue,green,red,nir"
        )
    return keys


def parse_bbox(value: str | Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """``"minx,miny,maxx,maxy"`` (longitude/latitude, EPSG:4326) -> a tuple, or None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        box = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
        raise InputError(
            f"--bbox: found {value!r}; expected west,south,east,north in degrees (EPSG:4326) "
            "with west < east and south < north, e.g. 11.0,46.0,11.2,46.1"
        )
    return box  # type: ignore[return-value]


def _read_items(path: Path) -> Any:
    import pystac

    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"--stac {path}: no such file; expected an ItemCollection JSON file. Fix: check the "
            "path"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"--stac {path}: not JSON ({exc}); expected a STAC ItemCollection / FeatureCollection "
            "JSON file (e.g. a saved STAC API search). Fix: save the search result as JSON"
        ) from None
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        doc = {"type": "FeatureCollection", "features": [doc]}
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        found = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(
            f"--stac {path}: found a {found!r} document; expected a FeatureCollection of STAC "
            "Items (pystac ItemCollection.save_object, or a STAC API /search response). Fix: "
            "save the items, not the collection"
        )
    try:
        items = list(pystac.ItemCollection.from_dict(doc))
    except Exception as exc:
        raise InputError(
            f"--stac {path}: not valid STAC items ({exc}); expected a FeatureCollection of STAC "
            "Items"
        ) from None
    if not items:
        raise InputError(f"--stac {path}: holds no items; expected at least 2 dates of items")
    return items


def _absolute_hrefs(items: list[Any], base: Path) -> None:
    """Relative asset hrefs are relative to the JSON file's folder, not to where we run."""
    for item in items:
        for asset in item.assets.values():
            href = asset.href
            if "://" in href or href.startswith("/vsi") or os.path.isabs(href):
                continue
            asset.href = str((base / href).resolve())


def _asset_wavelength(asset: Any, key: str) -> float | None:
    for band in asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []:
        if not isinstance(band, dict):
            continue
        nm = wavelength_from_um(band.get("center_wavelength") or band.get("eo:center_wavelength"))
        nm = nm or wavelength_from_name(band.get("common_name") or band.get("eo:common_name"))
        if nm:
            return nm
    return wavelength_from_name(key)


def load_stac(
    source: str | os.PathLike | Sequence[Any],
    assets: str | Sequence[str],
    *,
    bbox: str | Sequence[float] | None = None,
    crs: str | None = None,
    resolution: float | None = None,
    chunk_size: int = 512,
) -> tuple[Any, list[str]]:
    """STAC items as a lazy (time, band, y, x) cube and one label per date.

    Args:
        source: an ItemCollection JSON file, or pystac Items.
        assets: asset keys loaded as bands, in order (``"blue,green,red,nir"``).
        bbox: west,south,east,north in degrees to load (default: all the items cover).
        crs: output CRS (default: the items' own, from their ``proj:`` fields).
        resolution: output pixel size in ``crs`` units (default: the items' own).
        chunk_size: dask chunk edge in pixels.

    Returns:
        The cube (an ``xarray.DataArray`` with ``center_wavelength`` per band, CRS written) and,
        per date, ``FILE#id+id`` naming the items grouped into it (the ``runs`` record).

    Raises:
        InputError: missing extra, unreadable file, no items, an asset missing from an item,
            items without georeferencing.
    """
    try:
        import odc.stac
    except ImportError:
        raise InputError(f"--stac: odc-stac is not installed. Fix: {_INSTALL}") from None
    from geochange.io.cube import _require_rio

    _require_rio()
    keys = parse_assets(assets)
    box = parse_bbox(bbox)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        items = _read_items(path)
        _absolute_hrefs(items, path.resolve().parent)
        where = str(path.resolve())
    else:
        items, where = list(source), "items"
    for item in items:
        missing = [k for k in keys if k not in item.assets]
        if missing:
            raise InputError(
                f"--assets: item {item.id!r} has no asset {', '.join(map(repr, missing))}; "
                f"it has {', '.join(sorted(item.assets))}. Fix: pick asset keys every item has"
            )
    if resolution is not None and not resolution > 0:
        raise InputError(f"--resolution: found {resolution!r}; expected a positive pixel size")
    kwargs: dict[str, Any] = {}
    if crs is not None:
        kwargs["crs"] = crs
    if resolution is not None:
        kwargs["resolution"] = float(resolution)
    if box is not None:
        kwargs["bbox"] = box
    try:
        ds = odc.stac.load(
            items,
            bands=keys,
            groupby="solar_day",
            chunks={"x": int(chunk_size), "y": int(chunk_size)},
            **kwargs,
        )
    except ValueError as exc:
        raise InputError(
            f"--stac {where}: cannot place the items on a grid ({exc}); expected items with "
            "proj:epsg/proj:code, proj:transform and proj:shape, or --crs and --resolution. "
            "Fix: pass --crs EPSG:32633 --resolution 10 (or the items' own)"
        ) from None
    nodata = [ds[k].attrs.get("nodata") for k in keys]
    cube = ds.to_dataarray(dim="band").transpose("time", "band", ...)
    if nodata[0] is not None and all(n == nodata[0] for n in nodata):
        cube = cube.rio.write_nodata(nodata[0])
    first = items[0]
    cube = cube.assign_coords(
        center_wavelength=(
            "band",
            [
                np.nan if (w := _asset_wavelength(first.assets[k], k)) is None else w / 1000
                for k in keys
            ],
        )
    )
    return cube, _labels(items, cube, where)


def _labels(items: list[Any], cube: Any, where: str) -> list[str]:
    """Per date of the cube, the ids of the items of that day (UTC date or the day after /
    before: odc-stac groups by solar day)."""
    labels = []
    for t in cube.coords["time"].values:
        day = dt.date.fromisoformat(str(np.datetime_as_string(t, unit="D")))
        ids = [i.id for i in items if i.datetime is not None and i.datetime.date() == day]
        labels.append(f"{where}#{'+'.join(ids) or day.isoformat()}")
    return labels
