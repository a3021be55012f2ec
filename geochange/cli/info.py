"""`geochange info`: describe a stack of GeoTIFFs without reading its pixels."""

from __future__ import annotations

import json
import math
from typing import Any

import click

from geochange.io.stack import Stack, open_stack

__all__ = ["command", "describe"]


def describe(stack: Stack) -> dict[str, Any]:
    """A JSON-ready summary of a stack: dates and files, grid, bands, dtype, nodata, size."""
    grid = stack.grid
    nodata = grid.nodata
    if nodata is not None and math.isnan(nodata):
        nodata = "nan"  # JSON has no NaN
    mpx = grid.height * grid.width / 1e6
    return {
        "dates": [{"date": d.isoformat(), "path": p} for d, p in zip(stack.dates, stack.paths)],
        "grid": {
            "width": grid.width,
            "height": grid.height,
            "crs": grid.crs.to_string() if grid.crs else None,
            "res": list(grid.res),
            "bounds": list(grid.bounds),
            "transform": list(grid.transform)[:6],
        },
        "bands": {
            "count": stack.band_count,
            "names": list(stack.band_names),
            "wavelengths_nm": list(stack.wavelengths),
        },
        "dtype": stack.dtype,
        "nodata": nodata,
        "align": stack.align,
        "mpx": mpx,
        "mpx_dates": grid.height * grid.width * stack.T / 1e6,
    }


def _centres(wavelengths: list[float | None]) -> str:
    if not any(w is not None for w in wavelengths):
        return "unknown (set them with --wavelengths on detect)"
    return ", ".join("?" if w is None else f"{w:g}" for w in wavelengths) + " nm"


def _text(info: dict[str, Any]) -> str:
    grid = info["grid"]
    lines = [f"{len(info['dates'])} dates:"]
    lines += [f"  {d['date']}  {d['path']}" for d in info["dates"]]
    names = info["bands"]["names"]
    named = ", ".join(n if n else "-" for n in names) if any(names) else "unnamed"
    bounds = ", ".join(f"{b:.10g}" for b in grid["bounds"])
    lines += [
        f"grid:    {grid['width']} x {grid['height']} px, {grid['crs'] or 'no CRS'}, "
        f"pixel {grid['res'][0]:g} x {grid['res'][1]:g}"
        + (" (dates warped onto this grid)" if info["align"] else ""),
        f"bounds:  ({bounds}) (left, bottom, right, top)",
        f"bands:   {info['bands']['count']} ({named})",
        f"centres: {_centres(info['bands']['wavelengths_nm'])}",
        f"dtype:   {info['dtype']}",
        f"nodata:  {info['nodata']}",
        f"size:    {info['mpx']:.4g} Mpx x {len(info['dates'])} dates = "
        f"{info['mpx_dates']:.4g} Mpx·dates",
    ]
    return "\n".join(lines)


@click.command(name="info")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "--dates",
    multiple=True,
    metavar="DATES",
    help="One date per file, YYYY-MM-DD, comma-separated or repeated, in the order the files "
    "are listed (folders and globs sorted by name). Default: from tags or file names.",
)
@click.option("--align", is_flag=True, help="Report the stack as read with every date warped.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def command(inputs: tuple[str, ...], dates: tuple[str, ...], align: bool, as_json: bool) -> None:
    """Show the dates, grid, bands and size of a stack of GeoTIFFs (one per date).

    INPUT is a GeoTIFF, a folder of GeoTIFFs, a glob pattern or a GDAL URL; give several.
    Checks the stack as `geochange detect` would and stops with the same errors.

    \b
    Examples:
      geochange info data_samples/stack
      geochange info 'scenes/S2_*.tif' --json
      geochange info a.tif b.tif --dates 2023-01-15,2023-02-14
    """
    stack = open_stack(list(inputs), dates=list(dates) or None, align=align)
    info = describe(stack)
    click.echo(json.dumps(info, indent=2) if as_json else _text(info))
