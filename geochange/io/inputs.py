"""Which files a user's inputs name: files, folders, glob patterns, list files and GDAL URLs.

- A **folder** gives its files whose extension belongs to an allowed driver (GeoTIFF's
  ``.tif``/``.tiff``; ``.vrt`` too once ``--allow-driver VRT`` is given: a folder is never taken
  as an ask for VRTs by itself, since a VRT makes GDAL read whatever files or URLs it names).
- A **glob** (``scenes/S2_*.tif``) is expanded locally, or through GDAL's virtual file systems
  for GDAL paths and object-store URLs: ``/vsizip/archive.zip/*.tif``,
  ``/vsis3/bucket/tiles/*/B04.tif`` and ``s3://bucket/tiles/*.tif`` (read as ``/vsis3/``;
  ``gs://`` and ``az://`` likewise). ``*`` and ``?`` stay within one path component.
- A **list file** ``@paths.txt``: one input per line (any of the above; blank lines and lines
  starting with ``#`` skipped); relative paths are relative to the list file's folder.

Listing a remote folder goes through the GDAL of pyogrio (a core dependency); a network or
credential failure is reported with what GDAL said when it tried to reach the path.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from geochange.errors import InputError

__all__ = ["NETWORK_HELP", "expand_inputs", "is_url", "suffixes_for"]

logger = logging.getLogger(__name__)

_GLOB_CHARS = re.compile(r"[*?\[]")

#: Object-store URL schemes and the GDAL virtual file system that reads them.
_SCHEMES = {"s3://": "/vsis3/", "gs://": "/vsigs/", "az://": "/vsiaz/"}

#: File extensions listed from a folder, per GDAL driver (lower case, with the dot).
_SUFFIXES = {"GTiff": (".tif", ".tiff"), "VRT": (".vrt",), "COG": (".tif", ".tiff")}

#: How to fix a network or credential failure (the end of such an error line).
NETWORK_HELP = (
    "Fix: check the URL, the network, and the credentials (AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or AWS_NO_SIGN_REQUEST=YES for a public bucket; "
    "GDAL's GOOGLE_APPLICATION_CREDENTIALS or AZURE_STORAGE_* alike)"
)


def is_url(path: str) -> bool:
    """A GDAL virtual path or a URL (read by GDAL, not from the local disk)."""
    return path.startswith("/vsi") or "://" in path


def suffixes_for(drivers: Sequence[str]) -> tuple[str, ...]:
    """Extensions a folder is listed for, given the allowed GDAL drivers."""
    from rasterio.drivers import raster_driver_extensions

    known = raster_driver_extensions()  # extension -> driver
    out: list[str] = []
    for driver in drivers:
        names = _SUFFIXES.get(driver) or tuple(f".{e}" for e, d in known.items() if d == driver)
        out.extend(n for n in names if n not in out)
    return tuple(out)


def _gdal_path(path: str) -> str:
    for scheme, prefix in _SCHEMES.items():
        if path.startswith(scheme):
            return prefix + path[len(scheme) :]
    return path


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex: ``*`` and ``?`` within one component, ``**`` across them."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[" and "]" in pattern[i + 1 :]:
            j = pattern.index("]", i + 1)
            body = pattern[i + 1 : j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out))


def _why_unreachable(path: str) -> str | None:
    """What GDAL says when it tries to open ``path`` (a network or credential error), or None
    when it says the path simply is not there."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path):
            return None
    except RasterioError as exc:
        text = str(exc)
    if any(w in text for w in ("CURL", "HTTP", "credentials", "Access Denied", "403", "401")):
        return text
    return None


def _list_remote(folder: str) -> list[str]:
    """Every file under a GDAL folder (recursive), through GDAL's VSI listing."""
    import pyogrio

    try:
        names = pyogrio.vsi_listtree(folder.rstrip("/") or "/")
    except Exception as exc:  # pyogrio names a network failure "does not exist"
        why = _why_unreachable(folder)
        if why is not None:
            raise InputError(
                f"{folder}: cannot list it: {why}; expected a reachable folder. {NETWORK_HELP}"
            ) from exc
        raise InputError(
            f"{folder}: no such folder or archive (GDAL: {exc}); expected a folder holding the "
            "images. Fix: check the path (GDAL paths look like /vsizip/archive.zip/folder or "
            "/vsis3/bucket/prefix)"
        ) from exc
    return [n for n in names if not n.endswith("/")]


def _remote_glob(item: str) -> list[str]:
    path = _gdal_path(item)
    parts = path.split("/")
    first = next(i for i, p in enumerate(parts) if _GLOB_CHARS.search(p))
    folder = "/".join(parts[:first])
    regex = _pattern_regex(path)
    names = sorted(n for n in _list_remote(folder) if regex.fullmatch(n))
    if not names:
        raise InputError(
            f"{item}: glob pattern matches no file under {folder}; expected the images, one "
            "per date. Fix: check the pattern (* stays within one folder; ** crosses folders)"
        )
    return names


def _remote_folder(item: str, suffixes: tuple[str, ...]) -> list[str]:
    path = _gdal_path(item)
    names = sorted(
        n
        for n in _list_remote(path)
        if "/" not in n[len(path.rstrip("/")) + 1 :] and n.lower().endswith(suffixes)
    )
    if not names:
        raise InputError(
            f"{item}: folder has no {'/'.join(suffixes)} files; expected one image per date. "
            "Fix: point to the folder holding them"
        )
    return names


def _list_file(item: str) -> list[str]:
    path = Path(item[1:])
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{item}: cannot read the list file {path} ({exc.__class__.__name__}: {exc}); "
            "expected a text file with one input path per line. Fix: check the path"
        ) from None
    base = path.parent
    out = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("@"):
            raise InputError(
                f"{path}: lists another list file {text!r}; expected image paths, folders or "
                "globs. Fix: put the paths themselves in one list"
            )
        out.append(text if is_url(text) or os.path.isabs(text) else str(base / text))
    if not out:
        raise InputError(
            f"{item}: the list file names no input; expected one path per line. Fix: add the "
            "paths of the images"
        )
    return out


def _folder(text: str, suffixes: tuple[str, ...]) -> list[str]:
    names = sorted(
        os.path.join(text, n)
        for n in os.listdir(text)
        if n.lower().endswith(suffixes) and os.path.isfile(os.path.join(text, n))
    )
    if names:
        return names
    vrts = [n for n in os.listdir(text) if n.lower().endswith(".vrt")]
    if vrts and ".vrt" not in suffixes:
        raise InputError(
            f"{text}: folder has {len(vrts)} .vrt file(s) and no GeoTIFF; VRTs are read only "
            "when allowed, since a VRT makes GDAL read whatever files or URLs it names. Fix: "
            "if you trust them, add --allow-driver VRT (API: allow_driver='VRT')"
        )
    raise InputError(
        f"{text}: folder has no {'/'.join(suffixes)} files; expected one GeoTIFF per date. "
        "Fix: point to the folder holding the GeoTIFFs (subfolders are not searched)"
    )


def expand_inputs(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    drivers: Sequence[str] = ("GTiff",),
) -> list[str]:
    """Files named by ``inputs`` (see the module docstring), duplicates dropped.

    Folders and globs are sorted by name; list files keep their order.

    Args:
        inputs: a path, folder, glob, GDAL path or URL, ``@list.txt``, or a list of them.
        drivers: the allowed GDAL drivers (:func:`geochange.io.drivers.allowed_drivers`),
            which decide what a folder lists.

    Raises:
        InputError: nothing given, a missing path, an empty folder or glob, an unreadable list
            file, or a remote folder that cannot be listed (the network or credential error).
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise InputError("no input given; expected GeoTIFF files, a folder or a glob pattern")
    suffixes = suffixes_for(drivers)
    found: list[str] = []
    queue = [os.fspath(i) for i in items]
    while queue:
        text = queue.pop(0)
        if text.startswith("@") and not os.path.exists(text):
            found.extend(_expand_listed(_list_file(text), drivers, suffixes))
        elif is_url(text):
            if _GLOB_CHARS.search(text.split("?", 1)[0]) and not text.startswith(
                ("http://", "https://", "/vsicurl/")
            ):
                found.extend(_remote_glob(text))
            elif text.endswith("/") and not text.startswith(("http://", "https://")):
                found.extend(_remote_folder(text, suffixes))
            else:
                found.append(text)  # a GDAL URL: checked when opened
        else:
            found.extend(_expand_listed([text], drivers, suffixes))
    unique: list[str] = []
    seen: set[str] = set()
    for path in found:
        key = path if is_url(path) else os.path.realpath(path)
        if key in seen:
            logger.info("%s listed twice; reading it once", path)
            continue
        seen.add(key)
        unique.append(path)
    return unique


def _expand_listed(
    items: list[str], drivers: Sequence[str], suffixes: tuple[str, ...]
) -> list[str]:
    """Local items (and URLs from a list file) as files."""
    found: list[str] = []
    for text in items:
        if is_url(text):
            found.extend(expand_inputs(text, drivers))
        elif os.path.isdir(text):
            found.extend(_folder(text, suffixes))
        elif os.path.exists(text):
            found.append(text)
        elif _GLOB_CHARS.search(text):
            names = sorted(n for n in glob.glob(text) if os.path.isfile(n))
            if not names:
                raise InputError(
                    f"{text}: glob pattern matches no file; expected GeoTIFFs, one per date. "
                    "Fix: check the pattern and the folder"
                )
            found.extend(names)
        else:
            raise InputError(
                f"{text}: no such file or folder; expected a GeoTIFF, a folder of GeoTIFFs or a "
                "glob pattern. Fix: check the path"
            )
    return found
