"""Which GDAL drivers may open a user's input: the GeoTIFF driver unless more are named.

GDAL opens a file by its content, not its name: a VRT (XML) named ``scene.tif`` makes GDAL read
whatever it points to (other local files as pixels, ``/vsicurl/`` URLs). Inputs are therefore
opened with GDAL's ``GTiff`` driver only; a user who trusts another format names it
(``--allow-driver VRT``). Checked once per file when the stack is opened, before any compute.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import rasterio
from rasterio.errors import RasterioError

from geochange.errors import InputError

__all__ = ["DEFAULT_DRIVERS", "allowed_drivers", "check_drivers"]

#: Drivers every input may be read with.
DEFAULT_DRIVERS: tuple[str, ...] = ("GTiff",)


def allowed_drivers(extra: Sequence[str] | str | None = ()) -> tuple[str, ...]:
    """The default drivers plus ``extra`` (GDAL short names, e.g. "VRT"; comma-separated ok).

    Raises:
        InputError: a name GDAL does not know.
    """
    if isinstance(extra, str):
        extra = [extra]
    names = [n.strip() for item in (extra or ()) for n in str(item).split(",") if n.strip()]
    with rasterio.Env() as env:
        known = env.drivers()
    lower = {k.lower(): k for k in known}
    out = list(DEFAULT_DRIVERS)
    for name in names:
        if name.lower() not in lower:
            raise InputError(
                f"--allow-driver: found {name!r}, expected a GDAL raster driver short name such "
                "as VRT, COG or JP2OpenJPEG (`gdalinfo --formats` lists them)"
            )
        if lower[name.lower()] not in out:
            out.append(lower[name.lower()])
    return tuple(out)


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _head(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(64)
    except OSError:
        return None


def _kind(head: bytes) -> str:
    if head.lstrip().startswith(b"<VRTDataset"):
        return "a GDAL VRT (XML that makes GDAL read other files or URLs)"
    return "a file that is not a TIFF"


def _opens(path: str, driver: str, env: dict) -> str | None:
    """None when ``path`` opens with ``driver``, else GDAL's reason."""
    try:
        with rasterio.Env(**env), rasterio.open(path, driver=driver):
            return None
    except RasterioError as exc:
        return str(exc) or type(exc).__name__


# GDAL's words for a failure to reach a remote file (network, server or credentials).
_NETWORK_WORDS = ("CURL", "HTTP", "credentials", "Access Denied", "AccessDenied", "403", "401")


def _check_vrt(path: str) -> None:
    """A VRT with a raw band reads any file's bytes as pixels: never read, even when VRTs are
    allowed. (GDAL_VRT_ENABLE_RAWRASTERBAND=NO in the GDAL settings says the same, but GDAL 3.10
    honours it only when GDAL is built, not at run time.)"""
    with open(path, "rb") as f:
        text = f.read(_VRT_MAX)
    if b"VRTRawRasterBand" in text or len(text) == _VRT_MAX:
        why = "a raw band (VRTRawRasterBand)" if len(text) < _VRT_MAX else "over 16 MB of XML"
        raise InputError(
            f"{path}: a GDAL VRT with {why}, which reads any file's bytes as pixels; such VRTs "
            "are never read. Fix: point the VRT at GeoTIFF sources (SimpleSource) or convert "
            "the data (gdal_translate -of GTiff)"
        )


_VRT_MAX = 16 << 20


def check_drivers(
    paths: Sequence[str | os.PathLike], drivers: Sequence[str], env: Mapping[str, Any] | None = None
) -> None:
    """Each path must open with one of ``drivers`` (under the GDAL settings ``env``).

    A local file that starts like a TIFF passes here (a damaged one is told apart later, when
    its metadata and last block are read); any other file must open with one of the drivers.

    Raises:
        InputError: naming the first file that does not, what it is, and the flag to allow it.
    """
    from geochange.io.inputs import NETWORK_HELP, is_url

    env = dict(env or {})
    for path in map(str, paths):
        remote = is_url(path)
        head = None if remote else _head(path)
        if head is None and not remote:
            continue  # missing or unreadable files are told by the stack's own checks
        if head is not None and head.startswith(_TIFF_MAGIC) and "GTiff" in drivers:
            continue
        if head is not None and head.lstrip().startswith(b"<VRTDataset"):
            _check_vrt(path)
        errors: list[str | None] = []
        for driver in drivers:
            errors.append(_opens(path, driver, env))
            if errors[-1] is None:
                break
        if errors[-1] is None:
            if remote and drivers[len(errors) - 1] == "VRT":
                raise InputError(
                    f"{path}: a GDAL VRT on a virtual or remote path; VRTs are read only from "
                    "local files, whose XML is checked for raw bands first (a raw band reads "
                    "any file's bytes as pixels). Fix: copy the VRT to a local file (its "
                    "sources may stay remote)"
                )
            continue
        network = next((e for e in errors if e and any(w in e for w in _NETWORK_WORDS)), None)
        if remote and network is not None:
            raise InputError(
                f"{path}: cannot reach it: {network}; expected a reachable GeoTIFF. {NETWORK_HELP}"
            )
        if remote and all("does not exist" in str(e) for e in errors):
            raise InputError(
                f"{path}: no such file (GDAL: {errors[0]}); expected a GeoTIFF. Fix: check the "
                "path or URL"
            )
        found = _kind(head) if head is not None else "a dataset GDAL does not read as GeoTIFF"
        raise InputError(
            f"{path}: cannot read it as a raster with {', '.join(drivers)}: found {found}; "
            "expected a GeoTIFF. Fix: convert it (gdal_translate -of GTiff) or, if you trust "
            "it, pass --allow-driver with its GDAL driver name (e.g. --allow-driver VRT)"
        )
