"""Errors raised for user mistakes.

Every error names the culprit (file or argument), what was found, what was expected and how to
fix it. The CLI prints ``str(error)`` on one line and exits with status 2; it never shows a
traceback for a :class:`GeochangeError`.
"""

from __future__ import annotations

__all__ = [
    "AlignmentError",
    "DateError",
    "GeochangeError",
    "InputError",
    "ModelError",
    "OutputExistsError",
]


class GeochangeError(Exception):
    """Base class of every error geochange raises for bad input or options."""


class InputError(GeochangeError, ValueError):
    """An input file, directory or argument is missing, unreadable or malformed."""


class AlignmentError(InputError):
    """The dates of a stack do not share CRS, grid, size or band count."""


class DateError(InputError):
    """A date is missing, duplicated or malformed."""


class ModelError(GeochangeError, ValueError):
    """A model checkpoint is unreadable or does not fit the stack (e.g. band count)."""


class OutputExistsError(GeochangeError, FileExistsError):
    """An output file exists and ``overwrite`` was not given."""
