"""Outputs appear whole or not at all, and never replace a file by surprise (standard library only).

Every writer of the package writes under a temporary name in the output's folder (so the rename
is atomic on the same file system) and renames it once complete (:func:`atomic_path`,
:func:`write_text`); on any error, KeyboardInterrupt included, the temporary file is removed and
the output is left untouched. :func:`check_writable` fails early, before any work.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from geochange.errors import InputError, OutputExistsError

__all__ = ["atomic_path", "check_writable", "remove_temp", "temp_path", "write_text"]


def check_writable(paths: Sequence[str | os.PathLike], overwrite: bool) -> None:
    """Fail early, before any work, when an output cannot be written.

    Raises:
        OutputExistsError: a path exists and ``overwrite`` is False (the first one is named).
        InputError: a path's folder does not exist, or a path is a directory.
    """
    for p in map(Path, paths):
        if p.is_dir():
            raise InputError(
                f"output {str(p)!r}: found a directory, expected a file name; "
                "choose a file path such as 'changes.gpkg'."
            )
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(
                f"output {str(p)!r}: its folder {str(parent)!r} does not exist; "
                "create it first (mkdir -p) or choose another output path."
            )
        if p.exists() and not overwrite:
            raise OutputExistsError(
                f"output {str(p)!r} already exists; pass --overwrite (overwrite=True) to replace "
                "it, or choose another output path."
            )


def temp_path(path: Path, tag: str = "tmp") -> Path:
    """A fresh hidden name beside ``path`` with the same suffix (GDAL picks drivers by it)."""
    return path.with_name(f".{path.stem}.{tag}-{uuid.uuid4().hex[:8]}{path.suffix}")


def remove_temp(path: Path) -> None:
    """Remove a temporary file and the side-cars GDAL and SQLite may have left beside it."""
    for p in (path, Path(f"{path}.aux.xml"), Path(f"{path}-journal"), Path(f"{path}-wal")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On an exception (including KeyboardInterrupt) the temporary file is removed and ``path`` is
    left untouched. An existing ``path`` is replaced; check with :func:`check_writable` first.
    """
    final = Path(path)
    tmp = temp_path(final)
    try:
        yield tmp
    except BaseException:
        remove_temp(tmp)
        raise
    try:
        os.replace(tmp, final)
    except BaseException:
        remove_temp(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
