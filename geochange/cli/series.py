"""`geochange series`: plot every band over the dates at a place and write a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from geochange.cli import options
from geochange.errors import InputError


@click.command("series")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--at",
    "at",
    nargs=2,
    type=float,
    default=None,
    metavar="X Y",
    help="The point, in the stack's CRS unless --crs is given.",
)
@click.option(
    "--crs",
    default=None,
    metavar="CRS",
    help="CRS of --at, e.g. EPSG:4326 for longitude latitude (default: the stack's CRS).",
)
@click.option(
    "--window",
    type=int,
    default=1,
    show_default=True,
    help="Odd window edge in pixels around the point; the mean (± std) is plotted.",
)
@click.option(
    "--polygon",
    "polygon_id",
    type=int,
    default=None,
    metavar="ID",
    help="Plot the mean over the change polygon with this id (needs --changes).",
)
@click.option(
    "--changes",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="OUT.gpkg",
    help="GeoPackage written by 'geochange detect'; its polygons give the change date to mark.",
)
@click.option(
    "--date-raster",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="OUT_date.tif",
    help="Change-date raster written by detect (default: the one beside --changes, if any).",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="PNG to write."
)
@options.dates_option
@options.align_option
@options.overwrite_option
def command(
    inputs, at, crs, window, polygon_id, changes, date_raster, output, dates, align, overwrite
):
    """Plot every band of a stack over its dates at a point, a window or a change polygon.

    INPUTS are GeoTIFF files (one per date), a directory or a glob. The detected change date is
    marked when --changes (or --date-raster) is given.

    \b
    Examples:
      geochange series data_samples/stack --at 500125 4999875 -o series.png
      geochange series data_samples/stack --at 15.0012 45.1 --crs EPSG:4326 --window 3 -o s.png
      geochange series data_samples/stack --at 500125 4999875 --changes changes.gpkg -o s.png
      geochange series data_samples/stack --polygon 3 --changes changes.gpkg -o polygon3.png
    """
    from geochange.io.stack import open_stack
    from geochange.pipeline import output_paths
    from geochange.plots import series

    if at is None and polygon_id is None:
        raise InputError(
            "no place given: add --at X Y (a point) or --polygon ID --changes OUT.gpkg "
            "(a change polygon)"
        )
    if polygon_id is not None and changes is None:
        raise InputError(
            f"--polygon {polygon_id}: needs --changes OUT.gpkg, the GeoPackage written by "
            "geochange detect"
        )
    if date_raster is None and changes is not None and str(changes).lower().endswith(".gpkg"):
        beside = output_paths(changes)["date"]
        date_raster = str(beside) if beside.exists() else None

    stack = open_stack(list(inputs), dates=dates, align=align)
    x, y = at if at is not None else (None, None)
    path = series(
        stack,
        x,
        y,
        path=Path(output),
        crs=crs,
        window=window,
        changes=changes,
        polygon_id=polygon_id,
        date_index=date_raster,
        overwrite=overwrite,
    )
    click.echo(f"wrote {path}")
