"""Option decorators shared by several commands (rasterio `rio/options.py` manner)."""

from __future__ import annotations

import click


def _split_dates(ctx, param, value):
    if not value:
        return None
    parts: list[str] = []
    for item in value:
        parts.extend(p.strip() for p in item.split(",") if p.strip())
    return parts


dates_option = click.option(
    "--dates",
    multiple=True,
    callback=_split_dates,
    help="One date per input file, in order, e.g. --dates 2023-01-15,2023-03-02 (overrides tags "
    "and file names).",
)

chunk_size_option = click.option(
    "--chunk-size",
    type=click.IntRange(min=16),
    default=512,
    show_default=True,
    help="Chunk edge in pixels; memory per task grows with its square.",
)

masks_option = click.option(
    "--masks",
    multiple=True,
    metavar="PATH",
    help="Cloud/validity masks read as nodata: one single-band raster per date (matched by "
    "the date in its tag or name; a folder or glob works) or one raster with a band per date. "
    "Repeatable.",
)

mask_values_option = click.option(
    "--mask-values",
    default=None,
    metavar="V,V,...",
    help="Mask values that mean masked, e.g. 3,8,9,10 for Sentinel-2 SCL cloud and shadow "
    "classes (default: any non-zero value).",
)

wavelengths_option = click.option(
    "--wavelengths",
    default=None,
    metavar="NM,NM,...",
    help="Band centre wavelengths in nm, one per band, e.g. 490,560,665,842 (leave an item "
    "empty if unknown). Default: the files' WAVELENGTHS_NM tag or band descriptions (B04, "
    "665 nm, red). The default model uses them to tell which band moved which way.",
)

align_option = click.option(
    "--align",
    is_flag=True,
    help="Resample every date onto the first date's grid (CRS, transform, size).",
)


def _split_skip(ctx, param, value):
    from geochange.stages import parse_skip

    return parse_skip(value)


def _skip_help() -> str:
    from geochange.stages import REGISTRY

    lines = "; ".join(f"{s.name}: {s.summary}" for s in REGISTRY if s.role != "detector")
    return f"Stages to leave out, comma-separated. {lines}."


skip_option = click.option(
    "--skip",
    default=None,
    metavar="STAGE,...",
    callback=_split_skip,
    help=_skip_help(),
)


def device_option(help: str = "Where the model runs."):
    """``--device auto|cpu|cuda`` (auto: CUDA when torch sees a GPU)."""
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help=help,
    )


overwrite_option = click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing outputs.",
)


def parse_int_list(value: str | None, name: str) -> tuple[int, ...] | None:
    """'3,2,1' -> (3, 2, 1); None stays None; anything else is a one-line InputError."""
    from geochange.errors import InputError

    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise InputError(
            f"{name}: found {value!r}, expected comma-separated band numbers like 3,2,1"
        ) from None
