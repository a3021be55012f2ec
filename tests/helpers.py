"""Test helpers: write small real GeoTIFFs and stacks of them with rasterio.

Import in tests as ``from helpers import write_geotiff, write_stack``: ``tests/`` has no
``__init__.py``, so pytest's default (prepend) import mode puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

__all__ = ["DEFAULT_TRANSFORM", "run_cli", "write_geotiff", "write_stack"]

# 10 m pixels somewhere in UTM zone 33N (EPSG:32633).
DEFAULT_TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)


def write_geotiff(
    path: str | Path,
    array: np.ndarray,
    crs: str = "EPSG:32633",
    transform: Affine = DEFAULT_TRANSFORM,
    nodata: float | None = None,
    tags: Mapping[str, str] | None = None,
    band_names: Sequence[str] | None = None,
    blocksize: int | None = None,
    **profile: object,
) -> Path:
    """Write a (c, h, w) array as a GeoTIFF.

    Args:
        path: output file.
        array: (c, h, w) (or (h, w) for one band) of any numeric dtype; written as that dtype.
        crs: CRS of the file, anything ``rasterio.crs.CRS.from_user_input`` reads.
        transform: affine transform of the upper-left pixel corner.
        nodata: nodata value written in the file, or None.
        tags: dataset tags (e.g. ``{"ACQUISITION_DATE": "2023-01-15"}``; ``TIFFTAG_DATETIME``
            is written as the TIFF DateTime tag).
        band_names: band descriptions, one per band.
        blocksize: if given, write a tiled GeoTIFF with square blocks of this size.
        **profile: further creation options (e.g. ``compress="deflate"``).

    Returns:
        The path written.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    count, height, width = arr.shape
    kwargs: dict[str, object] = dict(
        driver="GTiff",
        height=height,
        width=width,
        count=count,
        dtype=arr.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
    )
    if blocksize:
        kwargs.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    kwargs.update(profile)
    with rasterio.open(path, "w", **kwargs) as dst:
        dst.write(arr)
        if tags:
            dst.update_tags(**tags)
        if band_names:
            for i, name in enumerate(band_names, start=1):
                dst.set_band_description(i, name)
    return path


def write_stack(
    directory: str | Path,
    data: np.ndarray,
    dates: Sequence[dt.date | str],
    crs: str = "EPSG:32633",
    transform: Affine = DEFAULT_TRANSFORM,
    nodata: float | None = None,
    name_fmt: str = "S2_{date:%Y%m%d}.tif",
    tag_dates: bool = True,
    band_names: Sequence[str] | None = None,
    **profile: object,
) -> list[Path]:
    """Write a (t, c, h, w) array as one GeoTIFF per date.

    Args:
        directory: folder to write into (created if missing).
        data: (t, c, h, w) array; each date is written with ``data.dtype``.
        dates: T dates (``datetime.date`` or ISO strings), in the order of ``data``.
        crs, transform, nodata: georeferencing and nodata of every file.
        name_fmt: file name pattern, formatted with ``date=`` (a ``datetime.date``) and ``i=``
            (the index in ``data``).
        tag_dates: write the date as the ``ACQUISITION_DATE`` dataset tag.
        band_names: band descriptions.
        **profile: passed to :func:`write_geotiff`.

    Returns:
        The T paths, in the order of ``data``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parsed = [d if isinstance(d, dt.date) else dt.date.fromisoformat(d) for d in dates]
    if len(parsed) != len(data):
        raise ValueError(f"{len(parsed)} dates for {len(data)} images")
    paths = []
    for i, (date, arr) in enumerate(zip(parsed, data)):
        tags = {"ACQUISITION_DATE": date.isoformat()} if tag_dates else None
        path = directory / name_fmt.format(date=date, i=i)
        write_geotiff(
            path,
            arr,
            crs=crs,
            transform=transform,
            nodata=nodata,
            tags=tags,
            band_names=band_names,
            **profile,
        )
        paths.append(path)
    return paths


def run_cli(*args: object) -> tuple[int, str, str]:
    """Run ``geochange ARGS`` in this process through :func:`geochange.cli.main`, the entry point
    a user's shell calls, so exit codes and messages are the user's.

    Returns:
        (exit code, stdout, stderr).
    """
    import contextlib
    import io

    from geochange.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()
