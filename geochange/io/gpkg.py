"""GeoPackage conventions GIS users expect: typed date fields and a default QGIS style.

- ``change_date``, ``date_before`` and ``date_after`` are GeoPackage ``DATE`` fields (``DATETIME``,
  UTC, when the stack's dates carry times: two acquisitions of one day) and the ``runs`` layer's
  ``created`` a ``DATETIME`` (UTC), so QGIS's Temporal Controller, filters and pyogrio/GeoPandas
  read them as dates, not text.
- The ``changes`` layer's default style is stored in the ``layer_styles`` table (the table QGIS
  itself writes with "Save as Default" in a GeoPackage): polygon outlines only, graduated by change
  date in the quicklook's palette (:mod:`geochange.palette`), so the layer opens looking like the
  quicklook.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import geopandas as gpd
import numpy as np
import pandas as pd

from geochange.palette import date_classes, date_colours_rgb255, uses_ramp

__all__ = [
    "DATE_COLUMNS",
    "STYLE_NAME",
    "as_utc",
    "default_style_qml",
    "write_changes",
    "write_style",
]

#: Columns of the ``changes`` layer written as GeoPackage DATE fields.
DATE_COLUMNS = ("change_date", "date_before", "date_after")

#: ``styleName`` of the default style row.
STYLE_NAME = "geochange change date"

# The graduated value: the change date as the number yyyymmdd, or yyyymmddhhmmss when the
# dates carry times (QGIS graduates numbers only).
_DATE_NUMBER = "to_int(format_date(\"change_date\", 'yyyyMMdd'))"
_DATETIME_NUMBER = "to_int(format_date(\"change_date\", 'yyyyMMddhhmmss'))"


def _has_times(values: Sequence) -> bool:
    """ISO strings or datetimes with a time of day (``2023-01-15T10:00:00``)."""
    return any(isinstance(v, _dt.datetime) or (isinstance(v, str) and len(v) > 10) for v in values)


def _as_dates(values: pd.Series, times: bool) -> np.ndarray:
    """ISO strings, dates or datetimes -> datetime64[D] (a DATE field), or datetime64[ms] (a
    DATETIME field) with ``times``; NaT where empty."""
    return (
        pd.to_datetime(values, errors="raise")
        .to_numpy()
        .astype("datetime64[ms]" if times else "datetime64[D]")
    )


def write_changes(
    changes: gpd.GeoDataFrame, path: str | os.PathLike, layer: str, geometry_type: str
) -> None:
    """Write the polygons with :data:`DATE_COLUMNS` as DATE fields (a new file at ``path``).

    pyogrio writes a pandas datetime column as DATETIME; a numpy ``datetime64[D]`` array given to
    its raw writer becomes a DATE field, which is what a day is.
    """
    import pyogrio.raw
    import shapely

    columns = [c for c in changes.columns if c != changes.geometry.name]
    times = any(_has_times(list(changes[c])) for c in DATE_COLUMNS if c in changes.columns)
    data = [
        _as_dates(changes[c], times) if c in DATE_COLUMNS else changes[c].to_numpy()
        for c in columns
    ]
    geometry = shapely.to_wkb(np.asarray(changes.geometry.values))
    pyogrio.raw.write(
        str(path),
        geometry,
        data,
        fields=columns,
        layer=layer,
        driver="GPKG",
        geometry_type=geometry_type,
        crs=changes.crs.to_wkt() if changes.crs else None,
        promote_to_multi=geometry_type == "MultiPolygon",
    )


def as_utc(value: str | _dt.datetime) -> pd.Timestamp:
    """A run's ``created`` time as a UTC timestamp (written as a DATETIME field)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")


def _date_number(day: str | _dt.date, times: bool) -> int:
    """2023-01-15 -> 20230115; with ``times`` 2023-01-15T10:00:00 -> 20230115100000."""
    text = day.isoformat() if isinstance(day, _dt.date) else str(day)
    digits = "".join(ch for ch in text[:19] if ch.isdigit())
    return int(digits.ljust(14, "0") if times else digits[:8])


def _label(text: str, times: bool) -> str:
    """A class label: the day, or the day and time to the minute."""
    return text[:19].replace("T", " ")[:16] if times else text[:10]


def _classes(
    dates: Sequence[str | _dt.date], texts: list[str]
) -> list[tuple[int, int, tuple[int, int, int]]]:
    """The style's classes as date index ranges ``(j0, j1, rgb255)``: one per change date, or
    the palette's classes by day on a long series (:func:`geochange.palette.date_classes`)."""
    if not uses_ramp(dates):
        colours = date_colours_rgb255(max(1, len(dates) - 1))
        return [(j, j, colours[j - 1]) for j in range(1, len(dates))]
    out = []
    for first, last, rgb in date_classes(dates):
        on = [j for j in range(1, len(dates)) if first.isoformat() <= texts[j][:10]]
        upto = [j for j in on if texts[j][:10] <= last.isoformat()]
        out.append((upto[0], upto[-1], rgb))
    return out


def default_style_qml(dates: Sequence[str | _dt.date]) -> str:
    """A QGIS QML style for the ``changes`` layer: outlines graduated by change date.

    Args:
        dates: the stack's dates (ISO); class j = 1 … T-1 is the change first seen on date j,
            coloured as in the quicklook; a long series gets a dozen classes of about equal
            time span along the continuous ramp (:func:`geochange.palette.date_classes`).
    """
    times = _has_times(list(dates))
    numbers = [_date_number(d, times) for d in dates]
    texts = [d.isoformat() if isinstance(d, _dt.date) else str(d) for d in dates]
    ranges, symbols = [], []
    # Class k covers the change dates j0..j1: (the date before j0, j1] as numbers.
    for k, (j0, j1, (r, g, b)) in enumerate(_classes(dates, texts)):
        lower = numbers[j0 - 1] if j0 > 1 else numbers[j0] - 1
        first, last = _label(texts[j0], times), _label(texts[j1], times)
        label = first if j0 == j1 else f"{first} – {last}"
        upper = numbers[j1]
        ranges.append(
            f'      <range symbol="{k}" lower="{lower}" upper="{upper}" '
            f'label={quoteattr(label)} render="true"/>'
        )
        symbols.append(_outline_symbol(str(k), f"{r},{g},{b},255"))
    source = _outline_symbol("0", "255,255,255,255")
    return "\n".join(
        [
            "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>",
            '<qgis version="3.28.0" styleCategories="Symbology">',
            f'  <renderer-v2 type="graduatedSymbol" '
            f"attr={quoteattr(_DATETIME_NUMBER if times else _DATE_NUMBER)} "
            'graduatedMethod="GraduatedColor" symbollevels="0" forceraster="0" '
            'enableorderby="0" referencescale="-1">',
            "    <ranges>",
            *ranges,
            "    </ranges>",
            "    <symbols>",
            *symbols,
            "    </symbols>",
            "    <source-symbol>",
            source,
            "    </source-symbol>",
            '    <mode name="manual"/>',
            '    <classificationMethod id="Manual"/>',
            "  </renderer-v2>",
            "  <layerGeometryType>2</layerGeometryType>",
            "</qgis>",
        ]
    )


def _outline_symbol(name: str, colour: str) -> str:
    """A fill symbol with no fill: a 0.6 mm outline of ``colour`` ("r,g,b,a")."""
    options = {
        "color": "0,0,0,0",
        "style": "no",
        "outline_color": colour,
        "outline_style": "solid",
        "outline_width": "0.6",
        "outline_width_unit": "MM",
        "joinstyle": "miter",
    }
    opts = "\n".join(
        f'            <Option type="QString" name="{k}" value="{v}"/>' for k, v in options.items()
    )
    return "\n".join(
        [
            f'      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">',
            '        <layer class="SimpleFill" enabled="1" locked="0" pass="0">',
            '          <Option type="Map">',
            opts,
            "          </Option>",
            "        </layer>",
            "      </symbol>",
        ]
    )


def write_style(
    path: str | os.PathLike,
    layer: str | Sequence[str],
    dates: Sequence[str | _dt.date],
    geometry_column: str,
) -> None:
    """Store :func:`default_style_qml` as the default style of ``layer`` (or of each of
    several layers) in the GeoPackage's ``layer_styles`` table (the columns QGIS reads; created
    here as an attributes table)."""
    import pyogrio

    names = [layer] if isinstance(layer, str) else list(layer)
    qml = default_style_qml(dates)
    row = pd.DataFrame(
        [
            {
                "f_table_catalog": "",
                "f_table_schema": "",
                "f_table_name": name,
                "f_geometry_column": geometry_column,
                "styleName": STYLE_NAME,
                "styleQML": qml,
                "styleSLD": "",
                "useAsDefault": True,
                "description": "Change polygons outlined by the date the change is first seen",
                "owner": "",
                "ui": "",
                "update_time": pd.Timestamp.now(tz="UTC").floor("s"),
            }
            for name in names
        ]
    )
    pyogrio.write_dataframe(
        row,
        Path(path),
        layer="layer_styles",
        driver="GPKG",
        append=False,
        layer_options={"FID": "id"},
    )
