"""Faults met while a run computes, told as one line that names the culprit and the fix.

Reading and writing happen inside dask tasks, where GDAL and the operating system raise their
own errors (``RasterioIOError: Read failed``, ``OSError: [Errno 28]``). :func:`explain` turns
those with a known cause into a :class:`GeochangeError`: a corrupt input (the user's, exit 2), an
input deleted or replaced during the run, a full disk or an output folder that became read-only
(the machine's, exit 1). Anything else is left as it is: an unknown fault is a bug to see whole.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from geochange.errors import DiskFullError, InputError, RunEnvironmentError

__all__ = ["explain"]

#: Below this many free bytes, a write that failed for an unclear reason is taken as disk full
#: (GDAL sometimes reports a short write as a TIFF directory error).
_NEARLY_FULL = 1 << 20


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def explain(
    exc: BaseException,
    inputs: Sequence[str | os.PathLike],
    folder: str | os.PathLike,
    mtimes: dict[str, int] | None = None,
) -> Exception | None:
    """A one-line error for a fault during a run, or None when its cause is unknown.

    Args:
        exc: what was raised.
        inputs: the run's input files (images and masks).
        folder: where the outputs were being written.
        mtimes: modification times (ns) of the inputs when the run started, to tell a file
            replaced during the run from a corrupt one.
    """
    chain = list(_chain(exc))
    folder = Path(folder)
    codes = {e.errno for e in chain if isinstance(e, OSError)}
    texts = [str(e) for e in chain]
    if errno.ENOSPC in codes or any("No space left on device" in t for t in texts):
        return _disk_full(folder)
    if errno.EROFS in codes or errno.EACCES in codes:
        return RunEnvironmentError(
            f"output folder {str(folder)!r}: writing was refused during the run "
            f"({_first_line(chain[-1])}); make the folder writable or choose another one, and "
            "run again (the previous outputs are unchanged)"
        )
    for path in map(str, inputs):
        if not any(path in t or os.path.basename(path) in t for t in texts):
            continue
        if not os.path.exists(path):
            return RunEnvironmentError(
                f"input {path!r} vanished during the run (deleted or moved); keep the inputs "
                "in place until the run ends and run again (no output was written)"
            )
        if mtimes is not None and path in mtimes and os.stat(path).st_mtime_ns != mtimes[path]:
            return RunEnvironmentError(
                f"input {path!r} was replaced during the run; keep the inputs unchanged until "
                "the run ends and run again (no output was written)"
            )
        return InputError(
            f"input {path!r}: a block cannot be read ({_first_line(chain[-1])}); the file is "
            "corrupt or truncated: re-export or re-download it (no output was written)"
        )
    if _free(folder) < _NEARLY_FULL:
        return _disk_full(folder)
    return None


def _free(folder: Path) -> int:
    p = folder.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return 1 << 62


def _disk_full(folder: Path) -> DiskFullError:
    free = _free(folder)
    return DiskFullError(
        f"disk full: no space left on the device of {str(folder)!r} while writing the outputs "
        f"({free / 1e6:.1f} MB free); free some space or choose an output folder on another "
        "disk (the previous outputs are unchanged)"
    )
