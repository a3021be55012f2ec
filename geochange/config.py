"""What a detection run is asked to do, as frozen values checked once.

- :class:`StackConfig`: how the stack is opened (dates, alignment, masks, wavelengths).
- :class:`DetectConfig`: what is computed and written (method, model, stages, threshold,
  polygons, adaptation, quicklook).
- :class:`RuntimeConfig`: where and how it runs (chunks, device, batch, dask scheduler).

:func:`geochange.detect` takes them, or their fields as keyword arguments
(``detect(stack, out, threshold=0.6, skip=("clouds",))``); a derived run is a
``dataclasses.replace`` of them. A bad value raises :class:`ConfigError` naming the field; the
command line names the matching flag instead.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

from geochange.errors import InputError

__all__ = [
    "ConfigError",
    "DetectConfig",
    "Device",
    "Method",
    "RuntimeConfig",
    "StackConfig",
    "split_options",
]

Method = Literal["cnn-lstm", "cva", "irmad", "diff"]
EventMode = Literal["first", "latest", "all"]
Device = Literal["auto", "cpu", "cuda"]


class ConfigError(InputError):
    """A configuration field has a bad value.

    ``str()`` names the field (``threshold: found 2.0, ...``); :meth:`for_flag` names the
    command-line flag (``--threshold: found 2.0, ...``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def for_flag(self) -> str:
        return f"--{self.field.replace('_', '-')}: {self.message}"


def _finite(name: str, value: float, expected: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"found {value!r}, expected {expected}") from None
    if not math.isfinite(v):
        raise ConfigError(name, f"found {value!r}, expected {expected} (a finite number)")
    return v


def _whole(name: str, value: int | None, least: int, expected: str) -> None:
    if value is None:
        return
    try:
        whole = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):  # NaN, inf, text
        whole = False
    if not whole or value < least:
        raise ConfigError(name, f"found {value!r}, expected {expected}")


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """How the stack is opened (see :func:`geochange.io.stack.open_stack`).

    Attributes:
        dates: one date per file, overriding tags and file names.
        align: resample every date onto the first date's grid.
        masks: cloud / validity masks per date, read as nodata.
        mask_values: mask values that mean masked (None = any non-zero), e.g. "3,8,9,10".
        wavelengths: band centres in nm, e.g. "490,560,665,842"; default from the files.
        allow_driver: GDAL drivers allowed besides GTiff, e.g. ("VRT",) for trusted VRTs.
        allow_no_crs: accept a stack without a CRS (pixel coordinates only).
        layout: "file-per-date" (default) or "band-per-date" (one file, its bands date after
            date); bands_per_date: bands of each date there (default: bands / dates).
    """

    dates: Sequence[Any] | None = None
    align: bool = False
    masks: str | os.PathLike | Sequence[str | os.PathLike] | None = None
    mask_values: Sequence[float] | str | None = None
    wavelengths: Sequence[float | None] | str | None = None
    allow_driver: Sequence[str] = ()
    allow_no_crs: bool = False
    layout: Literal["file-per-date", "band-per-date"] = "file-per-date"
    bands_per_date: int | None = None


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    """What a run computes and writes.

    Attributes:
        method: "cnn-lstm" (the deep model) or a classical baseline "cva", "irmad", "diff".
        model: checkpoint of ``geochange train``/``adapt`` for "cnn-lstm"; None = shipped default.
        skip: optional stages left out of the chain (:data:`geochange.stages.OPTIONAL`:
            coregister, clouds, refine, micro, emerge).
        threshold: probability from which a pixel counts as change, in (0, 1); None = the
            model's own (the one a model taught from examples chose from them), else 0.5.
        min_area: smallest polygon kept, in m² (>= 0).
        simplify: polygon simplification tolerance in CRS units (0 = none).
        adapt: first adapt the model to the stack without labels (:mod:`geochange.model.adapt`).
        adapt_minutes: wall-clock budget of that adaptation (None = 3 minutes) or of the
            teaching from ``examples`` (None = sized to the scene: 5 minutes for 2 dates of
            512² on 2 CPU cores).
        examples: vector file of example polygons of what counts as change (and what does
            not) in this scene (:mod:`geochange.io.examples`); the model is first taught from
            them (:mod:`geochange.model.fewshot`) and detects with the threshold they chose.
        save_model: keep the taught model in this checkpoint (with ``examples``).
        quicklook: also write OUT_quicklook.png.
        rgb_bands: 1-based bands shown as red, green, blue in the quicklook (None = guessed);
            three bands, or one for greyscale.
        allow_empty: accept a result without information (every pixel nodata); otherwise such
            a run fails and says why.
        co: GDAL creation options of the output COGs, over the package's own: ``KEY=VALUE``
            strings or a mapping, e.g. ``("COMPRESS=ZSTD", "LEVEL=15")``; checked with GDAL
            before any work (:mod:`geochange.io.creation`).
        window: dates per temporal window: a longer series runs in overlapping windows of this
            many dates and every change event is kept (:mod:`geochange.events`). None (the
            default): from the memory budget (:func:`geochange.plan.choose_window`): the whole
            series as one window when it fits ``RuntimeConfig.memory_limit`` at a reasonable
            chunk size, else the fewest windows that fit (at least 16 dates each).
        window_overlap: dates shared by consecutive windows (1 .. window - 2).
        events: which event of a pixel the probability and date rasters and the ``changes``
            layer show: "first", "latest" (a monitoring product's latest change and its
            confidence) or "all" (the ``changes`` layer then holds one polygon per event).
            With "latest" or "all" (or ``since``), a long series run whole also looks for each
            pixel's next event: one more pass of the network (docs/LONG_SERIES.md).
        since: leave out events first seen before this date (ISO date or ``datetime.date``).
    """

    method: Method = "cnn-lstm"
    model: str | os.PathLike | None = None
    skip: frozenset[str] = frozenset()
    threshold: float | None = None
    min_area: float = 0.0
    simplify: float = 0.0
    adapt: bool = False
    adapt_minutes: float | None = None
    examples: str | os.PathLike | None = None
    save_model: str | os.PathLike | None = None
    quicklook: bool = True
    rgb_bands: tuple[int, ...] | None = None
    allow_empty: bool = False
    co: Any = ()
    window: int | None = None
    window_overlap: int = 3
    events: EventMode = "first"
    since: Any = None

    def __post_init__(self) -> None:
        from geochange.io.creation import parse_creation_options
        from geochange.stages import DETECTORS, parse_skip

        try:
            co = parse_creation_options(self.co)
        except InputError as exc:
            raise ConfigError("co", str(exc).split(": ", 1)[1]) from None
        object.__setattr__(self, "co", tuple(co.items()))
        _whole("window", self.window, 3, "a whole number of dates >= 3")
        _whole("window_overlap", self.window_overlap, 1, "a whole number of dates >= 1")
        if self.window is not None and self.window_overlap > self.window - 2:
            raise ConfigError(
                "window_overlap",
                f"found {self.window_overlap}, expected 1 .. {self.window - 2} dates (window - 2) "
                f"for a window of {self.window} dates",
            )
        if self.events not in ("first", "latest", "all"):
            raise ConfigError(
                "events", f"found {self.events!r}, expected one of first, latest, all"
            )
        if self.since is not None:
            from geochange.dates import to_date
            from geochange.errors import DateError

            try:
                object.__setattr__(self, "since", to_date(self.since, "since"))
            except DateError:
                raise ConfigError(
                    "since", f"found {self.since!r}, expected an ISO date such as 2024-06-01"
                ) from None

        if self.method not in DETECTORS:
            raise ConfigError(
                "method",
                f"found {self.method!r}, expected one of {', '.join(DETECTORS)}; pick one of "
                "those (cnn-lstm is the default deep model)",
            )
        object.__setattr__(self, "skip", parse_skip(self.skip, "skip"))
        t = self.threshold
        if t is not None:
            t = _finite("threshold", t, "a probability strictly between 0 and 1")
        if t is not None and not 0.0 < t < 1.0:
            raise ConfigError(
                "threshold", f"found {self.threshold}, expected a probability strictly between "
                "0 and 1",
            )  # fmt: skip
        if _finite("min_area", self.min_area, "an area in m² >= 0") < 0:
            raise ConfigError("min_area", f"found {self.min_area}, expected an area in m² >= 0")
        if _finite("simplify", self.simplify, "a tolerance in CRS units >= 0") < 0:
            raise ConfigError(
                "simplify", f"found {self.simplify}, expected a tolerance in CRS units >= 0"
            )
        if (
            self.adapt_minutes is not None
            and _finite("adapt_minutes", self.adapt_minutes, "minutes > 0") <= 0
        ):
            raise ConfigError("adapt_minutes", f"found {self.adapt_minutes}, expected minutes > 0")
        if self.method != "cnn-lstm":
            for name, value in (
                ("model", self.model),
                ("adapt", self.adapt or None),
                ("examples", self.examples),
            ):
                if value is not None:
                    raise ConfigError(
                        name,
                        f"given but method is {self.method!r}, a classical baseline without "
                        "weights; drop it or use method cnn-lstm",
                    )
        if self.examples is not None and self.adapt:
            raise ConfigError(
                "adapt",
                "given with examples; teaching from examples uses the scene's own signals "
                "already: drop adapt",
            )
        if self.save_model is not None and self.examples is None:
            raise ConfigError(
                "save_model", "given without examples; it keeps a model taught from examples"
            )
        if self.rgb_bands is not None:
            bands = tuple(self.rgb_bands)
            if len(bands) not in (1, 3) or not all(
                not isinstance(b, bool) and int(b) == b and b >= 1 for b in bands
            ):
                raise ConfigError(
                    "rgb_bands",
                    f"found {','.join(map(str, bands)) or '(none)'}, expected 3 band numbers "
                    "(red, green, blue) or 1 for greyscale, counted from 1, e.g. 3,2,1",
                )
            object.__setattr__(self, "rgb_bands", tuple(int(b) for b in bands))


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a run computes; none of it changes the result (``amp`` aside).

    Attributes:
        chunk_size: chunk edge in pixels (>= 16); memory per task grows with its square.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        batch_size: sub-tiles per forward pass of the deep model, at most (None = its default
            on the CPU; on a GPU as many as its free memory holds, see
            :func:`geochange.memory.device_plan`).
        amp: float16 autocast on CUDA (faster; not bit-identical to float32).
        scheduler: None or "threads" (dask threads here), a dask.distributed scheduler
            address "tcp://HOST:PORT", or a scheduler file (.json). See docs/CLUSTER.md.
        workers: run on a local cluster of this many worker processes.
        threads_per_worker: dask threads per worker process.
        progress: show a progress bar over chunks.
        memory_limit: memory budget of one worker process (bytes, or a size such as "2GB",
            "1.5GiB"; None = 2 GiB): it chooses the temporal window of a long series
            (``DetectConfig.window`` None), then the deep model's chunk and batch are lowered
            until the tasks in flight fit it (:mod:`geochange.plan`); never raised above
            ``chunk_size`` and ``batch_size``.
    """

    chunk_size: int = 512
    device: Device = "auto"
    batch_size: int | None = None
    amp: bool = False
    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    progress: bool = False
    memory_limit: str | int | float | None = None

    def __post_init__(self) -> None:
        _whole("chunk_size", self.chunk_size, 16, "at least 16 pixels")
        if self.memory_limit is not None:
            from geochange.memory import parse_bytes

            try:
                parse_bytes(self.memory_limit)
            except ValueError as exc:
                raise ConfigError("memory_limit", str(exc)) from None
        _whole("batch_size", self.batch_size, 1, "a whole number of tiles >= 1")
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise ConfigError("device", f"found {self.device!r}, expected auto, cpu or cuda")


_CONFIGS = (StackConfig, DetectConfig, RuntimeConfig)
_FIELDS = {f.name: cls for cls in _CONFIGS for f in dataclasses.fields(cls)}


def split_options(
    options: dict[str, Any],
    stack: StackConfig | None = None,
    detect: DetectConfig | None = None,
    runtime: RuntimeConfig | None = None,
) -> tuple[StackConfig, DetectConfig, RuntimeConfig]:
    """The three configurations with ``options`` (field names of any of them) put in.

    Raises:
        TypeError: an option that is no field of any configuration.
    """
    unknown = sorted(set(options) - set(_FIELDS))
    if unknown:
        raise TypeError(f"unknown detect options {unknown}; fields are {sorted(_FIELDS)}")
    out = []
    for cls, base in zip(_CONFIGS, (stack, detect, runtime)):
        mine = {k: v for k, v in options.items() if _FIELDS[k] is cls}
        base = base if base is not None else cls()
        out.append(dataclasses.replace(base, **mine) if mine else base)
    return out[0], out[1], out[2]
