"""Errors raised for user mistakes and for faults of the machine a run is on.

Every error names the culprit (file or argument), what was found, what was expected and how to
fix it. The CLI prints ``str(error)`` on one line, never a traceback, and exits with status 2 for
a user's mistake, 1 for a :class:`RunEnvironmentError` (disk full, another run holding the output,
an input that vanished during the run).
"""

from __future__ import annotations

__all__ = [
    "AlignmentError",
    "DateError",
    "DiskFullError",
    "EmptyResultError",
    "GeochangeError",
    "InputError",
    "ModelError",
    "OutputExistsError",
    "OutputLockedError",
    "ResumeError",
    "RunEnvironmentError",
]


class GeochangeError(Exception):
    """Base class of every error geochange raises for bad input or options."""


class InputError(GeochangeError, ValueError):
    """An input file, directory or argument is missing, unreadable or malformed."""


class AlignmentError(InputError):
    """The dates of a stack do not share CRS, grid, size or band count."""


class DateError(InputError):
    """A date is missing, duplicated or malformed."""


class ResumeError(InputError):
    """``--resume`` was asked, but the kept chunks of the killed run were made from other
    inputs, options or model."""


class ModelError(GeochangeError, ValueError):
    """A model checkpoint is unreadable or does not fit the stack (e.g. band count)."""


class OutputExistsError(GeochangeError, FileExistsError):
    """An output file exists and ``overwrite`` was not given."""


class EmptyResultError(GeochangeError, ValueError):
    """The result holds no information (all nodata, all NaN, or non-finite network outputs) and
    an empty result was not allowed."""


class RunEnvironmentError(GeochangeError, OSError):
    """The machine or the file system failed the run, not the user's input (CLI exit status 1)."""


class OutputLockedError(RunEnvironmentError):
    """Another run is writing the same output."""


class DiskFullError(RunEnvironmentError):
    """No space left on the device while writing an output."""
