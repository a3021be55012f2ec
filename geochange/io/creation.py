"""GDAL creation options a user passes through to the output rasters (``--co KEY=VALUE``).

The options go to the final copy of each raster (GDAL's COG driver) and override the package's
own (DEFLATE, predictor, block size, overviews). They are checked once, before any work, by
GDAL itself: a tiny raster is copied to memory with them in a child process, and every
complaint GDAL makes (an unknown key, a value outside the key's choices) refuses them. The child
process matters: GDAL 3.10 aborts the whole process on some malformed values (``BLOCKSIZE=abc``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping

from geochange.errors import InputError

__all__ = ["check_creation_options", "parse_creation_options"]

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

# Copies a 16x16 uint8 raster with a colour table (like the date raster) to a COG in memory
# with the options given as JSON in argv[1]; prints GDAL's complaints as a JSON list.
_PROBE = r"""
import json, logging, sys
import numpy as np, rasterio, rasterio.shutil
from rasterio.transform import from_origin
said = []
class H(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())
log = logging.getLogger("rasterio._env")
log.addHandler(H()); log.setLevel(logging.WARNING); log.propagate = False
profile = dict(driver="GTiff", width=16, height=16, count=1, dtype="uint8", nodata=255,
               transform=from_origin(0, 16, 1, 1), crs="EPSG:32633")
with rasterio.open("/vsimem/probe.tif", "w", **profile) as dst:
    dst.write(np.zeros((1, 16, 16), "uint8"))
    dst.write_colormap(1, {0: (255, 255, 255, 255)})
options = {"COMPRESS": "DEFLATE", "OVERVIEWS": "AUTO", "OVERVIEW_COUNT": 1}
options.update(json.loads(sys.argv[1]))
try:
    rasterio.shutil.copy("/vsimem/probe.tif", "/vsimem/probe_cog.tif", driver="COG", **options)
except Exception as exc:
    said.append(str(exc))
print(json.dumps(said))
"""

# GDAL's words for a creation option it will not honour.
_REFUSALS = ("creation option", "unexpected value", "not recognised", "not supported", "invalid")


def parse_creation_options(values: Iterable[str] | Mapping[str, object] | None) -> dict[str, str]:
    """``["COMPRESS=LERC", "MAX_Z_ERROR=0.01"]`` (or a mapping) -> ``{"COMPRESS": "LERC", ...}``.

    Keys are upper-cased (GDAL's option names are case-insensitive).

    Raises:
        InputError: an item is not ``KEY=VALUE`` with a GDAL-style key.
    """
    if not values:
        return {}
    if isinstance(values, Mapping):
        items = [(str(k), str(v)) for k, v in values.items()]
    else:
        items = []
        for text in values:
            if isinstance(text, (tuple, list)) and len(text) == 2:  # (key, value) pairs
                items.append((str(text[0]).strip(), str(text[1]).strip()))
                continue
            key, sep, value = str(text).partition("=")
            if not sep:
                raise InputError(
                    f"--co: found {text!r}, expected KEY=VALUE, a GDAL creation option of the "
                    "COG driver such as COMPRESS=ZSTD. Fix: write it as KEY=VALUE"
                )
            items.append((key.strip(), value.strip()))
    out: dict[str, str] = {}
    for key, value in items:
        if not _KEY.fullmatch(key) or not value:
            raise InputError(
                f"--co: found {key}={value!r}, expected KEY=VALUE with a name like COMPRESS and "
                "a value, e.g. COMPRESS=ZSTD. Fix: correct the option"
            )
        out[key.upper()] = value
    return out


def check_creation_options(options: Mapping[str, str]) -> None:
    """Refuse options GDAL's COG driver does not accept (see the module docstring).

    Raises:
        InputError: naming the first option GDAL complained about, and what GDAL said.
    """
    if not options:
        return
    given = " ".join(f"{k}={v}" for k, v in options.items())
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps(dict(options))],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        raise InputError(
            f"--co: found {given}; GDAL did not finish a 16x16 test copy with these options in 120 s; "
            "expected creation options of the COG driver. Fix: drop or correct them"
        ) from None
    if done.returncode != 0:
        raise InputError(
            f"--co: found {given}; GDAL aborted on a 16x16 test copy with these options (a malformed "
            "value, e.g. text where a number is expected); expected creation options of the COG "
            "driver (https://gdal.org/drivers/raster/cog.html). Fix: correct the values"
        )
    said = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else []
    refused = [
        re.sub(r"^CPLE_\w+ in ", "", m).strip().rstrip(".")
        for m in said
        if any(word in m for word in _REFUSALS)
    ]
    if refused:
        raise InputError(
            f"--co: found {given}; GDAL refused them: {refused[0]}; expected creation options "
            "of the COG driver (https://gdal.org/drivers/raster/cog.html). Fix: correct or drop "
            "that option"
        )
