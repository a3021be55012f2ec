"""The result files of a detect run: their names, the probability and date COGs, the events
raster, and the date raster's colours and attribute table.

``changes.gpkg`` names the run; the rasters are written beside it (:func:`output_paths`) from one
pass over the graph (:func:`write_rasters`) and read back lazily. The GeoPackage itself is
written by :func:`geochange.io.rasters.write_gpkg`; :class:`geochange.io.outputs.OutputSet`
publishes the whole set together.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dask.array as da

from geochange._version import __version__
from geochange.errors import InputError
from geochange.io import encoding

__all__ = [
    "DATE_NODATA",
    "EVENT_BANDS",
    "date_colormap",
    "date_table",
    "output_paths",
    "slots_path",
    "write_result_rasters",
]

#: Value of the change-date raster where the pixel is nodata (see DESIGN.md encodings).
DATE_NODATA = 255

#: Bands of the events raster (OUT_events.tif).
EVENT_BANDS = ("event_count", "first_event_date_index", "last_event_date_index", "last_event_prob")


def output_paths(
    output: str | os.PathLike, *, quicklook: bool = False, events: bool = False
) -> dict[str, Path]:
    """Output files of a detect run named after ``output`` (the GeoPackage).

    ``changes.gpkg`` gives ``changes.gpkg``, ``changes_prob.tif`` (COG), ``changes_date.tif``,
    with ``events`` (a series run in temporal windows) ``changes_events.tif`` and, with
    ``quicklook``, ``changes_quicklook.png``.
    """
    gpkg = Path(output)
    if gpkg.suffix.lower() != ".gpkg":
        raise InputError(
            f"output {str(gpkg)!r}: found suffix {gpkg.suffix or '(none)'!r}, expected '.gpkg'; "
            "name the output like 'changes.gpkg' (the rasters are written beside it)"
        )
    stem = gpkg.with_suffix("")
    paths = {
        "gpkg": gpkg,
        "prob": stem.parent / f"{stem.name}_prob.tif",
        "date": stem.parent / f"{stem.name}_date.tif",
        # The date raster's attribute table (GDAL keeps a GeoTIFF's table in this side-car).
        "date_rat": stem.parent / f"{stem.name}_date.tif.aux.xml",
    }
    if events:
        paths["events"] = stem.parent / f"{stem.name}_events.tif"
    if quicklook:
        paths["quicklook"] = stem.parent / f"{stem.name}_quicklook.png"
    return paths


def write_result_rasters(
    prob, date_index, stack, paths, threshold, dates_iso, co=None, events=None, slots=None
):
    """Write the rasters from one pass over the graph; return them re-read lazily from disk.

    ``co``: GDAL creation options of the COGs (``--co``), over ours. A windowed run also writes
    its events raster and, into the work folder, each slot's event probability and date (read
    back for the event polygons, then removed).
    """
    from geochange.io import rasters as out_io

    tags = {
        "geochange_version": __version__,
        "threshold": str(threshold),
        "dates": ",".join(dates_iso),
    }
    date_tags = dict(tags)
    date_tags.update({f"DATE_{j}": d for j, d in enumerate(dates_iso) if j > 0})
    date_tags["encoding"] = (
        "0 = no change; j = 1..T-1: change first seen on date j (DATE_j), after date j-1; 255 = nodata"
    )
    out_io.write_rasters(
        [
            dict(
                array=encoding.encode(prob),
                path=paths["prob"],
                dtype="uint8",
                nodata=encoding.PROB_NODATA,
                cog=True,
                tags={**tags, "encoding": "probability = value / 254 (GDAL scale); 255 = nodata"},
                band_descriptions=["change_probability"],
                resampling="average",
                scale=encoding.PROB_SCALE,
                creation=dict(co or ()),
            ),
            dict(
                array=date_index,
                path=paths["date"],
                dtype="uint8",
                nodata=DATE_NODATA,
                cog=True,  # overviews by nearest neighbour: date indices are never averaged
                tags=date_tags,
                band_descriptions=["change_date_index"],
                colormap=date_colormap(dates_iso),
                creation=dict(co or ()),
                rat=date_table(dates_iso),
            ),
        ]
        + _event_outputs(events, slots, paths, tags, dates_iso, co),
        stack.grid,
        overwrite=True,
    )
    chunks = stack.chunk_size
    if slots is not None:
        both = out_io.read_raster_lazy(slots_path(paths), band=None, chunks=chunks)
        n = slots[0].shape[0]
        slots = (encoding.decode(both[:n]), both[n:])
        events = out_io.read_raster_lazy(paths["events"], band=None, chunks=chunks)
    return (
        encoding.read_prob(paths["prob"], chunks=chunks),
        out_io.read_raster_lazy(paths["date"], chunks=chunks),
        events,
        slots,
    )


def date_table(dates_iso: list[str]) -> list[dict]:
    """The date raster's attribute table: per value its change date, the date before it, a
    label and the colour of :func:`date_colormap`."""
    colours = date_colormap(dates_iso)
    rows = []
    for value in [0, *range(1, len(dates_iso)), DATE_NODATA]:
        if value == 0:
            after, before, label = "", "", "no change"
        elif value == DATE_NODATA:
            after, before, label = "", "", "nodata"
        else:
            after, before = dates_iso[value], dates_iso[value - 1]
            label = f"change between {before} and {after}"
        r, g, b, a = colours[value]
        rows.append(
            dict(value=value, label=label, change_date=after, date_before=before, red=r, green=g,
                 blue=b, alpha=a)
        )  # fmt: skip
    return rows


def _event_outputs(events, slots, paths, tags, dates_iso, co=None) -> list[dict]:
    """The events raster and the work file of the slots (none for a one-window run)."""
    if events is None or slots is None:
        return []
    date_tags = {**tags, **{f"DATE_{j}": d for j, d in enumerate(dates_iso) if j > 0}}
    date_tags["encoding"] = (
        "band 1: number of change events; bands 2, 3: first and last event's date index j "
        "(change first seen on date j, DATE_j; 0 = none); band 4: last event's probability x "
        "254; 255 = nodata"
    )
    n = slots[0].shape[0]
    return [
        dict(
            array=events,
            path=paths["events"],
            dtype="uint8",
            nodata=DATE_NODATA,
            cog=True,
            tags=date_tags,
            band_descriptions=list(EVENT_BANDS),
            creation=dict(co or ()),
        ),
        dict(
            array=da.concatenate([encoding.encode(slots[0]), slots[1]]),
            path=slots_path(paths),
            dtype="uint8",
            nodata=None,
            band_descriptions=[f"slot_{k}_prob" for k in range(n)]
            + [f"slot_{k}_date" for k in range(n)],
        ),
    ]


def slots_path(paths: dict[str, Path]) -> Path:
    gpkg = Path(paths["gpkg"])
    return gpkg.with_name(gpkg.stem + "_slots.tif")


def date_colormap(dates: Sequence[str]) -> dict[int, tuple[int, int, int, int]]:
    """Colour table of the date raster: the quicklook's colour per date index (the continuous
    ramp for a long series), 0 (no change) white; nodata is transparent through the nodata
    value (TIFF colour tables hold no alpha)."""
    from geochange.palette import date_ramp

    table = {0: (255, 255, 255, 255), DATE_NODATA: (0, 0, 0, 0)}
    for j, rgba in enumerate(date_ramp(dates), start=1):
        table[j] = tuple(int(round(255 * c)) for c in rgba[:3]) + (255,)
    return table
