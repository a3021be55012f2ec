"""`geochange evaluate`: measure a change map against reference data."""

from __future__ import annotations

import json
import math
from typing import Any

import click

from geochange.cli.options import overwrite_option

__all__ = ["command"]


def _json_ready(v: Any) -> Any:
    """NaN → None (JSON has no NaN), recursively."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_ready(x) for x in v]
    return v


def _split_dates(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]):
    parts = [p.strip() for item in value for p in item.split(",") if p.strip()]
    return parts or None


@click.command(name="evaluate")
@click.argument("pred", metavar="PRED")
@click.argument("reference", metavar="REFERENCE")
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Probability at or above which a pixel of a probability raster is change.",
)
@click.option(
    "--ignore-value",
    type=click.IntRange(0, 255),
    default=255,
    show_default=True,
    help="Reference value of unlabelled pixels (left out of every metric).",
)
@click.option(
    "--pred-dates",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="DATE.tif",
    help="Change-date raster of the prediction (from detect: *_date.tif) to score change dates.",
)
@click.option(
    "--dates",
    multiple=True,
    callback=_split_dates,
    metavar="DATES",
    help="The stack's dates, YYYY-MM-DD, comma-separated, to index `change_date` columns of "
    "GeoPackages. Default: the prediction GeoPackage's `runs` layer or a raster's `dates` tag.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--map",
    "map_path",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="MAP.png",
    help="Write a PNG map of true positives, false positives and misses.",
)
@overwrite_option
def command(
    pred: str,
    reference: str,
    threshold: float,
    ignore_value: int,
    pred_dates: str | None,
    dates: list[str] | None,
    as_json: bool,
    map_path: str | None,
    overwrite: bool,
) -> None:
    """Compare a change map PRED with reference data REFERENCE.

    PRED is a change GeoPackage (layer `changes`), a probability raster (thresholded at
    --threshold) or a 0/1 raster. REFERENCE is a label raster (band 1: 0 no change, 1 change,
    --ignore-value unlabelled; optional band 2: change date index) or a GeoPackage of change
    polygons. Both are matched by location on the reference grid (warped if their CRSs differ).

    Reports pixel metrics (precision, recall, F1, IoU, kappa, overall accuracy), object metrics
    by size, change-date accuracy and area estimates with 95 % confidence intervals
    (Olofsson et al. 2014).

    \b
    Examples:
      geochange evaluate changes.gpkg truth/label.tif
      geochange evaluate changes_prob.tif truth/label.tif --pred-dates changes_date.tif
      geochange evaluate changes_prob.tif truth.gpkg --threshold 0.4 --json --map errors.png
    """
    from geochange import evaluate as ev
    from geochange.io.atomic import check_writable

    if map_path is not None:
        check_writable([map_path], overwrite)  # fail before the work
    aligned = ev.align_inputs(
        pred,
        reference,
        threshold=threshold,
        ignore_value=ignore_value,
        dates=dates,
        pred_dates=pred_dates,
    )
    result = {
        "pred": pred,
        "reference": reference,
        "threshold": threshold,
        "ignore_value": ignore_value,
    }
    result.update(ev.metrics(aligned))
    if map_path is not None:
        ev.error_map(aligned, map_path, overwrite=overwrite)
        result["map"] = map_path
    if as_json:
        click.echo(json.dumps(_json_ready(result), indent=2))
    else:
        click.echo(ev.format_report(result))
        if map_path is not None:
            click.echo(f"\nmap: {map_path}")
