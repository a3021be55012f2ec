"""What ``detect`` does before any compute: checks of what was asked (resume, the model file,
the stack's size), the stack of an xarray cube, and a model taught from examples or adapted to
the stack for the run."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from geochange.config import ConfigError, DetectConfig, RuntimeConfig, StackConfig
from geochange.errors import InputError, OutputExistsError
from geochange.io.stack import Stack

__all__ = [
    "MIN_SIZE",
    "adapted_model",
    "check_model_file",
    "check_resume",
    "check_stack",
    "cube_stack",
    "input_files",
    "is_array",
    "taught_model",
]

#: Smallest image edge in pixels a run accepts.
MIN_SIZE = 2


def check_resume(paths: dict[str, Path], config: DetectConfig) -> None:
    """``resume`` needs an output (the kept chunks live beside it) and a model that is the same
    from run to run."""
    if not paths:
        raise ConfigError(
            "resume",
            "given without an output; the chunks of an unfinished run are kept beside its "
            "output: pass the output path of the run to continue",
        )
    for name, value in (("adapt", config.adapt or None), ("examples", config.examples)):
        if value is not None:
            raise ConfigError(
                "resume",
                f"given with {name}; that model is trained anew in every run, so an unfinished "
                "run's chunks cannot be continued with it. Save it first (geochange adapt -o, "
                "or --save-model) and pass it with --model, or drop --resume",
            )


def input_files(stack: Stack) -> dict[str, int]:
    """Input files (images and masks) with their modification times (ns) now."""
    names = [str(p) for p in stack.paths]
    names += [str(m[0]) for m in (stack.masks or []) if m is not None]
    out = {}
    for name in names:
        try:
            out[name] = os.stat(name).st_mtime_ns
        except OSError:  # a GDAL URL, not a local file
            continue
    return out


def check_model_file(model: str | os.PathLike) -> None:
    """A named checkpoint must be a readable file (its content is checked when loaded)."""
    path = Path(model)
    if not path.is_file() or not os.access(path, os.R_OK):
        found = "a directory" if path.is_dir() else "no readable file"
        raise ConfigError(
            "model",
            f"{str(path)!r}: found {found}, expected a checkpoint written by 'geochange train' "
            "or 'geochange adapt'; check the path",
        )


def check_stack(stack: Stack, config: DetectConfig) -> None:
    """What can be known of the stack before any compute: its size, the quicklook's bands."""
    if min(stack.grid.height, stack.grid.width) < MIN_SIZE:
        raise InputError(
            f"inputs: the images are {stack.grid.width}x{stack.grid.height} px, expected at "
            f"least {MIN_SIZE}x{MIN_SIZE} px (the probability raster needs one overview level); "
            "pass a larger area"
        )
    if config.quicklook and config.rgb_bands is not None:
        bad = [b for b in config.rgb_bands if not 1 <= b <= stack.band_count]
        if bad:
            raise ConfigError(
                "rgb_bands",
                f"found {','.join(map(str, config.rgb_bands))}, but the stack has "
                f"{stack.band_count} band(s); give 3 band numbers (or 1) between 1 and "
                f"{stack.band_count}",
            )


def is_array(inputs: Any) -> bool:
    return hasattr(inputs, "shape") and hasattr(inputs, "dtype") or hasattr(inputs, "data_vars")


def cube_stack(cube: Any, stack_config: StackConfig, chunk_size: int) -> tuple[Stack, Any]:
    """An xarray cube as a Stack and its coordinates; a bare array is refused clearly."""
    from geochange.io.cube import cube_coords, is_cube, stack_from_xarray

    if not is_cube(cube):
        raise InputError(
            f"inputs: found a {type(cube).__module__}.{type(cube).__name__} of shape "
            f"{tuple(cube.shape)} without coordinates or CRS; expected GeoTIFF paths, a Stack or "
            "an xarray.DataArray (time, band, y, x) with a CRS. Fix: wrap it, e.g. "
            "xarray.DataArray(a, dims=('time', 'band', 'y', 'x'), coords=...)"
            ".rio.write_crs('EPSG:32633')"
        )
    for name in ("align", "masks", "mask_values", "bands_per_date"):
        if getattr(stack_config, name) or (
            name == "bands_per_date" and stack_config.layout != "file-per-date"
        ):
            raise ConfigError(
                name,
                "given with an xarray input; expected a cube already on one grid with clouds "
                "as NaN. Fix: drop it and mask or reproject the cube with xarray/rioxarray",
            )
    stack = stack_from_xarray(
        cube,
        chunk_size=chunk_size,
        dates=stack_config.dates,
        wavelengths=stack_config.wavelengths,
    )
    coords = cube_coords(cube)
    if stack_config.dates is not None:
        coords["time"] = np.array(stack.dates, dtype="datetime64[ns]")
    return stack, coords


@contextlib.contextmanager
def adapted_model(stack: Stack, config: DetectConfig, runtime: RuntimeConfig) -> Iterator[Path]:
    """``adapt=True``: adapt the model to ``stack`` into a temporary checkpoint.

    The checkpoint lives in a temporary folder of this machine for the duration of the run (a
    cluster's workers must see it: with remote workers, run ``geochange adapt`` to a shared path
    and pass ``model`` instead).
    """
    from geochange.model.adapt import adapt as _adapt

    with tempfile.TemporaryDirectory(prefix="geochange-adapt-") as tmp:
        yield _adapt(
            stack,
            Path(tmp) / "adapted.ckpt",
            model=config.model,
            minutes=3.0 if config.adapt_minutes is None else config.adapt_minutes,
            device=runtime.device,
        )


@contextlib.contextmanager
def taught_model(
    stack: Stack, config: DetectConfig, runtime: RuntimeConfig, overwrite: bool
) -> Iterator[Path]:
    """``examples``: teach the model from them (:func:`geochange.model.fewshot.teach`) into
    ``save_model``, or a temporary checkpoint for the duration of the run."""
    from geochange.io.examples import read_examples
    from geochange.model.fewshot import teach

    examples = read_examples(config.examples, stack.grid)
    if config.save_model is not None:
        keep = Path(config.save_model)
        if keep.exists() and not overwrite:
            raise OutputExistsError(f"--save-model {keep}: exists; pass --overwrite to replace it")
        yield teach(stack, examples, keep, model=config.model, minutes=config.adapt_minutes,
                    device=runtime.device, overwrite=overwrite)[0]  # fmt: skip
        return
    with tempfile.TemporaryDirectory(prefix="geochange-teach-") as tmp:
        yield teach(stack, examples, Path(tmp) / "taught.ckpt", model=config.model,
                    minutes=config.adapt_minutes, device=runtime.device)[0]  # fmt: skip
