"""The detect pipeline: a multi-date stack in, change rasters and dated change polygons out.

``detect`` glues the one-way flow of docs/DESIGN.md together: open the stack lazily, apply the
stack stages (co-registration), fit the chain of stages once on a decimated scene sample
(:func:`geochange.stages.build_chain`), run it chunk by chunk with the chain's halo
(``tiling.window_map``), write the probability and change-date rasters block by block, vectorise
per chunk and merge across chunk borders, and write the GeoPackage with its provenance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import geopandas as gpd
import numpy as np

from geochange._version import __version__
from geochange.config import (
    ConfigError,
    DetectConfig,
    RuntimeConfig,
    StackConfig,
    split_options,
)
from geochange.dates import iso
from geochange.errors import EmptyResultError, GeochangeError, InputError, OutputExistsError
from geochange.io import encoding
from geochange.io.read import read_sample
from geochange.io.stack import Stack, open_stack
from geochange.stages import Chain, Context, build_chain, prepare_stack

__all__ = [
    "DATE_NODATA",
    "DetectResult",
    "detect",
    "output_paths",
    "stack_chain",
]

log = logging.getLogger(__name__)


#: Value of the change-date raster where the pixel is nodata (see DESIGN.md encodings).
DATE_NODATA = 255

#: Smallest image edge in pixels a run accepts.
MIN_SIZE = 2


@dataclass
class DetectResult:
    """What ``detect`` returns.

    Attributes:
        stack: the opened stack (dates, grid, paths).
        prob: (y, x) float32 change probability in steps of 1/254 (as written), NaN = nodata.
            Lazy (dask) unless written.
        date_index: (y, x) uint8 change date index: 0 no change, j = 1..T-1 first date the change
            is seen, 255 nodata.
        changes: change polygons (GeoDataFrame in the stack's CRS).
        paths: output files written, by kind ("gpkg", "prob", "date"); empty when not written.
        run: the provenance record written to the GeoPackage's ``runs`` layer.
        coords: the input cube's y/x coordinates and times (xarray input), for
            :meth:`to_xarray`; None for files.
        resumed: chunks taken from a run that did not finish (``resume=True``), not computed.
        events: a series run in temporal windows (longer than ``window`` dates): (4, y, x)
            uint8 number of change events, first and last event's date index, last event's
            probability x 254 (255 nodata); None otherwise.
        event_polygons: with ``events``: one polygon per event (``change_date``,
            ``date_before``, ``date_after``), the ``events`` layer of the GeoPackage.
    """

    stack: Stack
    prob: da.Array
    date_index: da.Array
    changes: gpd.GeoDataFrame
    paths: dict[str, Path] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    coords: dict[str, Any] | None = None
    resumed: int = 0
    events: da.Array | None = None
    event_polygons: gpd.GeoDataFrame | None = None

    def to_xarray(self) -> Any:
        """``prob`` and ``change_date`` (datetime64) as an ``xarray.Dataset`` with the CRS, on
        the input cube's coordinates (the grid's pixel centres for files); needs the
        ``[xarray]`` extra. See :func:`geochange.io.cube.result_dataset`."""
        from geochange.io.cube import result_dataset

        return result_dataset(self, self.coords)


def output_paths(
    output: str | os.PathLike, *, quicklook: bool = False, events: bool = False
) -> dict[str, Path]:
    """Output files of a detect run named after ``output`` (the GeoPackage).

    ``changes.gpkg`` gives ``changes.gpkg``, ``changes_prob.tif`` (COG), ``changes_date.tif``,
    with ``events`` (a series run in temporal windows) ``changes_events.tif`` and, with
    ``quicklook``, ``changes_quicklook.png``.
    """
    gpkg = Path(output)
    if gpkg.suffix.lower() != ".gpkg":
        raise InputError(
            f"output {str(gpkg)!r}: found suffix {gpkg.suffix or '(none)'!r}, expected '.gpkg'; "
            "name the output like 'changes.gpkg' (the rasters are written beside it)"
        )
    stem = gpkg.with_suffix("")
    paths = {
        "gpkg": gpkg,
        "prob": stem.parent / f"{stem.name}_prob.tif",
        "date": stem.parent / f"{stem.name}_date.tif",
        # The date raster's attribute table (GDAL keeps a GeoTIFF's table in this side-car).
        "date_rat": stem.parent / f"{stem.name}_date.tif.aux.xml",
    }
    if events:
        paths["events"] = stem.parent / f"{stem.name}_events.tif"
    if quicklook:
        paths["quicklook"] = stem.parent / f"{stem.name}_quicklook.png"
    return paths


def stack_chain(
    stack: Stack,
    config: DetectConfig | None = None,
    runtime: RuntimeConfig | None = None,
    stack_stages: Sequence[tuple[str, dict]] = (),
    **options: Any,
) -> Chain:
    """The chain of ``config`` fitted on a stack: its decimated scene sample, its band
    wavelengths (told to the deep model) and whether it carries the user's masks.

    ``options`` are fields of :class:`DetectConfig` or :class:`RuntimeConfig` put into them
    (e.g. ``method="cva"``, ``device="cuda"``); ``stack_stages`` are those already applied
    (:func:`geochange.stages.prepare_stack`), for the ``runs`` record.
    """
    _, config, runtime = split_options(options, None, config, runtime)
    context = _context(stack, config, runtime)
    return build_chain(read_sample(stack), config.method, config.skip, context, stack_stages)


def _context(stack: Stack, config: DetectConfig, runtime: RuntimeConfig) -> Context:
    return Context(
        wavelengths=tuple(stack.wavelengths) if stack.wavelengths else None,
        masks=any(stack.masks),
        model=None if config.model is None else str(config.model),
        device=runtime.device,
        batch_size=runtime.batch_size,
        amp=runtime.amp,
    )


def detect(
    inputs: str | os.PathLike | Sequence[str | os.PathLike] | Stack | Any,
    output: str | os.PathLike | None = None,
    config: DetectConfig | None = None,
    runtime: RuntimeConfig | None = None,
    *,
    stack_config: StackConfig | None = None,
    overwrite: bool = False,
    resume: bool = False,
    **options: Any,
) -> DetectResult:
    """Detect changes in a multi-date stack.

    Args:
        inputs: GeoTIFF files (one per date), a directory, a glob, an opened ``Stack``, or an
            ``xarray.DataArray`` (time, band, y, x) with a CRS, lazy or not, as stackstac,
            odc-stac or rioxarray give it (:mod:`geochange.io.cube`; ``result.to_xarray()``
            then returns the rasters on its coordinates).
        output: GeoPackage path; the probability COG and date raster are written beside it.
            None = compute in memory and write nothing.
        config: what is computed and written (:class:`geochange.config.DetectConfig`).
        runtime: where and how it runs (:class:`geochange.config.RuntimeConfig`).
        stack_config: how ``inputs`` are opened (:class:`geochange.config.StackConfig`;
            ignored for an opened ``Stack``).
        overwrite: replace existing outputs.
        resume: continue a run on the same ``output`` that was killed or interrupted, from the
            chunks it finished (kept in its work folder, :mod:`geochange.io.resume`); refused
            when its inputs, options or model differ. The outputs are bit-identical to those of
            an uninterrupted run. Without a run to continue, starts from the beginning.
        **options: fields of any of the three configurations, put into them, e.g.
            ``threshold=0.6, skip=("clouds",), chunk_size=1024, dates=[...]``.

    Returns:
        A ``DetectResult`` with lazy rasters (or rasters re-read from the written files),
        the change polygons and the written paths. Its ``run`` record lists the stages that
        ran with their parameters.
    """
    from geochange.io.outputs import OutputSet, check_target, restore_interrupted

    stack_config, config, runtime = split_options(options, stack_config, config, runtime)
    if config.method != "cnn-lstm":
        for name, value in (("batch_size", runtime.batch_size), ("amp", runtime.amp or None)):
            if value is not None:
                raise ConfigError(
                    name,
                    f"given but method is {config.method!r}, a classical baseline that runs "
                    "on numpy; drop it or use method cnn-lstm",
                )
    paths = output_paths(output, quicklook=config.quicklook) if output is not None else {}
    if resume:
        _check_resume(paths, config)
    if paths:
        restore_interrupted(paths["gpkg"])
        check_target(paths, overwrite)
    if config.model is not None:
        _check_model_file(config.model)
    if config.co and paths:
        from geochange.io.creation import check_creation_options

        try:
            check_creation_options(dict(config.co))
        except InputError as exc:
            raise ConfigError("co", str(exc).split(": ", 1)[1]) from None
    from geochange import cluster

    cluster.check_args(runtime.scheduler, runtime.workers, runtime.threads_per_worker)

    coords = None
    if not isinstance(inputs, Stack) and _is_array(inputs):
        inputs, coords = _cube_stack(inputs, stack_config, runtime.chunk_size)
    stack = (
        inputs
        if isinstance(inputs, Stack)
        else open_stack(inputs, chunk_size=runtime.chunk_size, **dataclasses.asdict(stack_config))
    )
    _check_stack(stack, config)
    windowed = _windowed(stack.T, config)
    if paths and windowed:
        paths = output_paths(output, quicklook=config.quicklook, events=True)
        check_target(paths, overwrite)
    stack, stack_stages = prepare_stack(stack, config.skip)
    with contextlib.ExitStack() as exits:
        outputs = None
        if paths:
            # Every output is written into a work folder and published together at the end;
            # an error anywhere before that leaves the previous outputs as they were.
            every = output_paths(output, quicklook=True, events=True)
            stale = tuple(every[k] for k in ("quicklook", "events") if k not in paths)
            outputs = exits.enter_context(
                OutputSet(paths, overwrite=overwrite, stale=stale, resume=resume)
            )
        if config.examples is not None:
            taught = exits.enter_context(_taught_model(stack, config, runtime, overwrite))
            config = dataclasses.replace(config, model=taught, examples=None, save_model=None)
            stack, stack_stages = prepare_stack(stack, config.skip)
        if config.adapt:
            adapted = exits.enter_context(_adapted_model(stack, config, runtime))
            config = dataclasses.replace(config, model=adapted, adapt=False)
            stack, stack_stages = prepare_stack(stack, config.skip)
        files = _input_files(stack)
        try:
            result = _run(stack, stack_stages, config, runtime, outputs)
            result.coords = coords
            if outputs is not None:
                result.paths = outputs.publish()
        except GeochangeError:
            raise
        except Exception as exc:
            from geochange.io.faults import explain

            folder = paths["gpkg"].parent if paths else Path(".")
            told = explain(exc, list(files), folder, files)
            if told is None:
                raise
            raise told from exc
        if outputs is not None:
            from geochange.io import rasters as out_io

            result.prob = encoding.read_prob(result.paths["prob"], chunks=stack.chunk_size)
            result.date_index = out_io.read_raster_lazy(
                result.paths["date"], chunks=stack.chunk_size
            )
            if "events" in result.paths:
                result.events = out_io.read_raster_lazy(
                    result.paths["events"], band=None, chunks=stack.chunk_size
                )
    log.info("%d change polygons", len(result.changes))
    return result


def _check_resume(paths: dict[str, Path], config: DetectConfig) -> None:
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


def _input_files(stack: Stack) -> dict[str, int]:
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


def _check_model_file(model: str | os.PathLike) -> None:
    """A named checkpoint must be a readable file (its content is checked when loaded)."""
    path = Path(model)
    if not path.is_file() or not os.access(path, os.R_OK):
        found = "a directory" if path.is_dir() else "no readable file"
        raise ConfigError(
            "model",
            f"{str(path)!r}: found {found}, expected a checkpoint written by 'geochange train' "
            "or 'geochange adapt'; check the path",
        )


def _check_stack(stack: Stack, config: DetectConfig) -> None:
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


def _run(
    stack: Stack,
    stack_stages: list,
    config: DetectConfig,
    runtime: RuntimeConfig,
    outputs: Any = None,
) -> DetectResult:
    """Compute the run and write its outputs into ``outputs`` (an entered
    :class:`geochange.io.outputs.OutputSet`, which also keeps the finished chunks; None: keep
    the rasters in memory)."""
    from geochange import cluster, tiling, vectorize
    from geochange.io import rasters as out_io

    paths = outputs.paths if outputs is not None else {}
    windowed = _windowed(stack.T, config)
    chain: Any = (
        _windowed_chain(stack, config, runtime, stack_stages)
        if windowed
        else stack_chain(stack, config, runtime, stack_stages)
    )
    if config.threshold is None:
        # The model's own threshold (a taught model's, chosen from its examples), else 0.5.
        own = (getattr(chain, "meta", None) or {}).get("threshold")
        config = dataclasses.replace(config, threshold=float(own) if own is not None else 0.5)
    if windowed:
        chain.threshold = float(config.threshold)
    since = _since_index(stack.dates, config.since)
    halo = int(chain.halo)
    chunk_size = _plan_memory(stack, config, runtime, chain, windowed)
    ychunks, xchunks = tiling.plan_chunks(stack.grid.height, stack.grid.width, chunk_size, halo)
    n_chunks = len(ychunks) * len(xchunks)
    with cluster.runtime(
        runtime.scheduler,
        runtime.workers,
        runtime.threads_per_worker,
        n_chunks=n_chunks,
        torch_threads=config.method == "cnn-lstm",
    ) as rt:
        # Every task sets the run's torch threads itself: the deep model's float sums depend
        # on the count, so a chunk gives the same bits on any worker (a restarted one too).
        chain.num_threads = rt.layout.torch_threads
        log.info(
            "%d dates, %d bands, %dx%d px, %d chunks, halo %d px, stages %s%s; %s",
            stack.T,
            stack.band_count,
            stack.grid.width,
            stack.grid.height,
            n_chunks,
            halo,
            ", ".join(chain.names),
            f", {len(chain.windows)} windows of {config.window} dates" if windowed else "",
            rt.layout.describe(),
        )
        if rt.distributed:
            _check_shipping(chain)
        store = None
        if outputs is not None:
            # Finished chunks are kept as they come, for --resume (geochange.io.resume).
            store = outputs.chunk_store(
                _manifest(stack, config, runtime, chain, (ychunks, xchunks), rt.layout)
            )
        resumed = store.count() if store is not None else 0

        annotations = {}
        if rt.distributed and chain.device.startswith("cuda"):
            if rt.gpu_workers():
                # One GPU per worker: a worker started with `--resources GPU=1` runs one model
                # task at a time.
                annotations = {"resources": {"GPU": 1}}
        with dask.annotate(**annotations):
            # Each task reads its own tile (chunk + halo) from the files: no input chunk is
            # kept for its neighbours and none moves between workers (see benchmarks/SCALE.md).
            # A windowed chain reads one window's dates at a time (lazy tile).
            result = tiling.window_map(
                stack.reader(),
                (ychunks, xchunks),
                chain,
                halo,
                out_bands=chain.out_bands if windowed else 2,
                dtype=np.float32,
                name="geochange-detect",
                store=store,
                lazy=windowed,
            )
        slots = None
        if windowed:
            reported = _report(result, chain.n_slots, config.threshold, config.events, since)
            prob, interval = reported[0], reported[1]
            n = chain.n_slots
            slots = (reported[2 : 2 + n], reported[2 + n :])
        else:
            # Kept in steps of 1/254, as written (geochange.io.encoding): in-memory and written
            # results agree.
            prob, interval = encoding.quantise(result[0]), result[1]
            if since > 1:
                prob = _drop_before(prob, interval, config.threshold, since)
        date_index = _date_raster(prob, interval, config.threshold)
        events = None
        if slots is not None:
            events = da.map_blocks(
                _summary_block,
                slots[0],
                slots[1],
                prob,
                dtype=np.uint8,
                chunks=((len(EVENT_BANDS),),) + prob.chunks,
            )

        run = _provenance(stack, config, chunk_size, chain)
        run["scheduler"] = rt.layout.kind
        dates_iso = [iso(d) for d in stack.dates]

        with rt.compute():
            with rt.progress(result.name, n_chunks, enabled=runtime.progress):
                if paths:
                    prob, date_index, events, slots = _write_rasters(
                        prob,
                        date_index,
                        stack,
                        paths,
                        config.threshold,
                        dates_iso,
                        config.co,
                        events,
                        slots,
                    )
                elif rt.distributed:
                    # The cluster may be gone after this block: bring the rasters home.
                    p, d, e, sp, sd = dask.compute(
                        prob, date_index, events, *(slots or (None, None))
                    )
                    prob = da.from_array(p, chunks=stack.chunk_size)
                    date_index = da.from_array(d, chunks=stack.chunk_size)
                    if slots is not None:
                        chunks3 = (1, stack.chunk_size, stack.chunk_size)
                        events = da.from_array(e, chunks=(4,) + chunks3[1:])
                        slots = (
                            da.from_array(sp, chunks=chunks3),
                            da.from_array(sd, chunks=chunks3),
                        )
                else:
                    prob, date_index, events, *rest = dask.persist(
                        prob, date_index, events, *(slots or ())
                    )
                    slots = tuple(rest) if rest else None
            if not config.allow_empty and not bool(da.isfinite(prob).any().compute()):
                raise EmptyResultError(
                    f"result: every pixel of the {stack.grid.width}x{stack.grid.height} px "
                    "result is nodata (no pixel has valid values on two dates: inputs all "
                    "nodata, masked or non-finite); check the inputs, their nodata value and "
                    "masks, or pass --allow-empty (allow_empty=True) to accept an empty result"
                )
            # Per chunk on the workers, merged here.
            polygon_options = dict(
                threshold=config.threshold,
                min_area=config.min_area,
                simplify=config.simplify,
                chunk_size=chunk_size,
            )
            changes = vectorize.polygons_from_rasters(
                prob, date_index, stack.grid, stack.dates, **polygon_options
            )
            event_polygons = None
            if slots is not None:
                event_polygons = _event_polygons(slots, prob, stack, polygon_options)
                if config.events == "all":
                    changes = event_polygons
                if paths:
                    with contextlib.suppress(OSError):
                        os.remove(_slots_path(paths))
    if paths:
        if "quicklook" in paths:
            from geochange.plots import quicklook as _quicklook

            _quicklook(
                stack,
                prob,
                date_index,
                changes,
                paths["quicklook"],
                rgb_bands=config.rgb_bands,
                overwrite=True,
            )
        layers = {} if event_polygons is None else {"events": event_polygons}
        out_io.write_gpkg(changes, paths["gpkg"], runs=run, overwrite=True, layers=layers)
    return DetectResult(
        stack,
        prob,
        date_index,
        changes,
        dict(paths),
        run,
        events=events,
        event_polygons=event_polygons,
        resumed=resumed,
    )


def _manifest(
    stack: Stack,
    config: DetectConfig,
    runtime: RuntimeConfig,
    chain: Chain,
    chunks: tuple[tuple[int, ...], tuple[int, ...]],
    layout: Any,
) -> dict[str, Any]:
    """What the chunks of a run are made from (see :mod:`geochange.io.resume`): input files
    with size and modification time, every option that shapes the outputs, the model file's
    sha256, the version and the dask token of the chunk computation."""
    from dask.base import tokenize

    from geochange.io.resume import file_sha256

    inputs = []
    for name in [str(p) for p in stack.paths] + [str(m[0]) for m in stack.masks or [] if m]:
        try:
            st = os.stat(name)
            inputs.append([_absolute(name), st.st_size, st.st_mtime_ns])
        except OSError:  # a GDAL URL
            inputs.append([name, None, None])
    model = getattr(chain.detector, "model_path", None)
    if model is None and config.method == "cnn-lstm":
        from geochange.model import DEFAULT_MODEL_PATH

        model = DEFAULT_MODEL_PATH
    options: dict[str, Any] = {
        "method": config.method,
        "model": None if config.model is None else _absolute(str(config.model)),
        "skip": sorted(config.skip),
        "threshold": float(config.threshold),
        "min_area": float(config.min_area),
        "simplify": float(config.simplify),
        "quicklook": bool(config.quicklook),
        "rgb_bands": None if config.rgb_bands is None else list(config.rgb_bands),
        "allow_empty": bool(config.allow_empty),
        "co": [f"{k}={v}" for k, v in config.co],
        "dates": [d.isoformat() for d in stack.dates],
        "align": bool(stack.align),
        "masks": stack.mask_names,
        "mask_values": list(stack.mask_values) if stack.mask_values else [],
        "wavelengths": [None if w is None or w != w else float(w) for w in stack.wavelengths],
        "chunk_size": int(runtime.chunk_size),
        "device": chain.device,
        "batch_size": runtime.batch_size,
        "amp": bool(runtime.amp),
        "window": int(config.window),
        "window_overlap": int(config.window_overlap),
        "events": config.events,
        "since": None if config.since is None else config.since.isoformat(),
        "memory_limit": None if runtime.memory_limit is None else str(runtime.memory_limit),
    }
    if config.method == "cnn-lstm":
        # The deep model's float sums depend on how many threads split them.
        options["torch_threads"] = int(layout.torch_threads)
    ychunks, xchunks = chunks
    return {
        "format": 1,
        "geochange_version": __version__,
        "inputs": inputs,
        "options": options,
        "model_sha256": file_sha256(model) if model is not None else None,
        "chunks": len(ychunks) * len(xchunks),
        "graph": tokenize(stack.reader(), ychunks, xchunks, int(chain.halo), chain),
    }


def _is_array(inputs: Any) -> bool:
    return hasattr(inputs, "shape") and hasattr(inputs, "dtype") or hasattr(inputs, "data_vars")


def _cube_stack(cube: Any, stack_config: StackConfig, chunk_size: int) -> tuple[Stack, Any]:
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
def _adapted_model(stack: Stack, config: DetectConfig, runtime: RuntimeConfig) -> Iterator[Path]:
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
def _taught_model(
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


def _plan_memory(
    stack: Stack, config: DetectConfig, runtime: RuntimeConfig, chain: Any, windowed: bool
) -> int:
    """The chunk size, and the deep model's batch, that keep a worker within
    ``runtime.memory_limit`` (:func:`geochange.memory.plan`); the chunk size asked for when
    it fits, or for a classical baseline."""
    from dask.system import CPU_COUNT

    from geochange import memory

    if config.method != "cnn-lstm":
        return runtime.chunk_size
    limit_text = runtime.memory_limit
    limit = memory.DEFAULT_LIMIT if limit_text is None else memory.parse_bytes(limit_text)
    chains = chain.chains if windowed else (chain,)
    detector = chains[0].detector
    batch = int(getattr(detector, "batch_size", 1))
    tile_size = int(getattr(detector, "tile_size", 256))
    tasks = runtime.threads_per_worker or max(1, CPU_COUNT // (runtime.workers or 1))
    halo = int(chain.halo)
    dates = config.window if windowed else stack.T
    n_windows = len(chain.windows) if windowed else 1
    size = max(stack.grid.height, stack.grid.width)
    asked = min(runtime.chunk_size, size)
    args = (halo, int(chains[0].detector_halo), dates, stack.band_count, n_windows)
    scene = (stack.grid.height, stack.grid.width)
    chunk, new_batch = memory.plan(limit, asked, *args, tasks, tile_size, batch, scene)
    if chunk == 0 or (chunk < halo and chunk < size):
        smallest = max(16, min(halo, size))
        one = memory.task_bytes(smallest, *args, tile_size, 1, scene)
        need = memory.PROCESS_BYTES + tasks * one
        raise ConfigError(
            "memory_limit",
            f"found {limit_text or '2GiB'} ({limit / 2**30:.2f} GiB), but {tasks} task(s) of "
            f"this stack ({dates} dates at a time, {stack.band_count} bands, halo {halo} px) "
            f"need about {need / 2**30:.2f} GiB; raise it, run fewer threads per worker "
            "(--threads-per-worker) or shorter windows (--window)",
        )
    if new_batch < batch:
        for ch in chains:
            ch.detector.batch_size = new_batch
    if chunk < asked or new_batch < batch:
        log.info(
            "memory limit %.2f GiB per worker, %d task(s) in flight: chunk %d px (asked %d), "
            "batch %d (asked %d)", limit / 2**30, tasks, chunk, asked, new_batch, batch,
        )  # fmt: skip
    return chunk if chunk < asked else runtime.chunk_size


def _windowed(n_dates: int, config: DetectConfig) -> bool:
    """Whether the series runs in more than one temporal window."""
    from geochange.events import plan_windows

    return len(plan_windows(n_dates, config.window, config.window_overlap)) > 1


def _windowed_chain(stack: Stack, config: DetectConfig, runtime: RuntimeConfig, stack_stages):
    """The chain of ``config`` fitted per temporal window (:mod:`geochange.stages.windows`)."""
    from geochange.stages.windows import build_windowed

    return build_windowed(
        read_sample(stack),
        config.method,
        config.skip,
        _context(stack, config, runtime),
        stack_stages,
        config.window,
        config.window_overlap,
    )


def _since_index(dates: Sequence[_dt.date], since: _dt.date | None) -> int:
    """First date index on or after ``since`` (0 = every event; T = none)."""
    if since is None:
        return 0
    # By day: a stack's dates may carry times (datetimes do not compare with dates).
    days = [d.date() if isinstance(d, _dt.datetime) else d for d in dates]
    return next((j for j, d in enumerate(days) if d >= since), len(dates))


def _drop_before(prob: da.Array, interval: da.Array, threshold: float, since: int) -> da.Array:
    """One-window run: a change first seen before date ``since`` is no change (probability 0)."""

    def block(p: np.ndarray, k: np.ndarray) -> np.ndarray:
        early = (np.nan_to_num(p, nan=0.0) >= threshold) & (np.nan_to_num(k, nan=0.0) + 1 < since)
        return np.where(early, np.float32(0.0), p).astype(np.float32)

    return da.map_blocks(block, prob, interval, dtype=np.float32)


def _report(result: da.Array, n_slots: int, threshold: float, mode: str, since: int) -> da.Array:
    """(2 + 2S, y, x) float32 of a windowed chain's output: the reported probability (steps of
    1/254) and interval, each slot's kept event probability (steps of 1/254) and date."""
    from geochange.events import report

    def block(out: np.ndarray) -> np.ndarray:
        quiet = out[0]
        steps = np.float32(encoding.PROB_STEPS)
        slot_prob = np.round(np.clip(out[1 : 1 + n_slots], 0, 1) * steps) / steps
        slot_date = out[1 + n_slots :].astype(np.uint8)
        # An event is one whose probability, as stored, reaches the threshold.
        slot_date = np.where(slot_prob >= threshold, slot_date, 0).astype(np.uint8)
        quiet = np.round(np.clip(quiet, 0, 1) * steps) / steps  # NaN stays NaN
        prob, interval, sp, sd = report(quiet, slot_prob, slot_date, mode, since)  # type: ignore[arg-type]
        return np.concatenate([prob[None], interval[None], sp, sd.astype(np.float32)]).astype(
            np.float32
        )

    chunks = ((2 + 2 * n_slots,),) + result.chunks[1:]
    return da.map_blocks(block, result, dtype=np.float32, chunks=chunks)


def _summary_block(slot_prob: np.ndarray, slot_date: np.ndarray, prob: np.ndarray) -> np.ndarray:
    from geochange.events import summary

    return summary(slot_prob, slot_date.astype(np.uint8), np.isnan(prob))


def _event_polygons(slots, prob, stack: Stack, options: dict) -> gpd.GeoDataFrame:
    """One polygon per connected region of one slot's event: every event of every pixel, with
    ``change_date``, ``date_before`` and ``date_after``; ordered by change date."""
    import pandas as pd

    from geochange import vectorize

    slot_prob, slot_date = slots
    frames = []
    for k in range(slot_prob.shape[0]):
        p = da.where(da.isnan(prob), np.nan, slot_prob[k]).astype(np.float32)
        d = da.where(da.isnan(prob), DATE_NODATA, slot_date[k]).astype(np.uint8)
        frame = vectorize.polygons_from_rasters(p, d, stack.grid, stack.dates, **options)
        if len(frame):
            frames.append(frame)
    if not frames:
        return vectorize.polygons_from_rasters(
            da.zeros_like(prob), da.zeros(prob.shape, np.uint8, chunks=prob.chunks),
            stack.grid, stack.dates, **options,
        )  # fmt: skip
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values(["change_date", "id"], kind="stable").reset_index(drop=True)
    out["id"] = np.arange(1, len(out) + 1, dtype=np.int64)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=stack.grid.crs)


def _date_raster(prob: da.Array, interval: da.Array, threshold: float) -> da.Array:
    """uint8 change date index: 0 no change, k+1 for interval k where prob >= threshold, 255 nodata."""

    def block(p: np.ndarray, k: np.ndarray) -> np.ndarray:
        out = np.zeros(p.shape, np.uint8)
        changed = np.nan_to_num(p, nan=0.0) >= threshold
        out[changed] = (np.nan_to_num(k[changed], nan=0.0) + 1).astype(np.uint8)
        out[np.isnan(p)] = DATE_NODATA
        return out

    return da.map_blocks(block, prob, interval, dtype=np.uint8)


def _write_rasters(
    prob, date_index, stack, paths, threshold, dates_iso, co=None, events=None, slots=None
):
    """Write the rasters from one pass over the graph; return them re-read lazily from disk.

    ``co``: GDAL creation options of the COGs (``--co``), over ours. A windowed run also writes
    its events raster and, into the work folder, each slot's event probability and date (read
    back for the event polygons, then removed).
    """
    from geochange.io import rasters as out_io

    tags = {
        "geochange_version": __version__,
        "threshold": str(threshold),
        "dates": ",".join(dates_iso),
    }
    date_tags = dict(tags)
    date_tags.update({f"DATE_{j}": d for j, d in enumerate(dates_iso) if j > 0})
    date_tags["encoding"] = (
        "0 = no change; j = 1..T-1: change first seen on date j (DATE_j), after date j-1; 255 = nodata"
    )
    out_io.write_rasters(
        [
            dict(
                array=encoding.encode(prob),
                path=paths["prob"],
                dtype="uint8",
                nodata=encoding.PROB_NODATA,
                cog=True,
                tags={**tags, "encoding": "probability = value / 254 (GDAL scale); 255 = nodata"},
                band_descriptions=["change_probability"],
                resampling="average",
                scale=encoding.PROB_SCALE,
                creation=dict(co or ()),
            ),
            dict(
                array=date_index,
                path=paths["date"],
                dtype="uint8",
                nodata=DATE_NODATA,
                cog=True,  # overviews by nearest neighbour: date indices are never averaged
                tags=date_tags,
                band_descriptions=["change_date_index"],
                colormap=_date_colormap(dates_iso),
                creation=dict(co or ()),
                rat=_date_table(dates_iso),
            ),
        ]
        + _event_outputs(events, slots, paths, tags, dates_iso, co),
        stack.grid,
        overwrite=True,
    )
    chunks = stack.chunk_size
    if slots is not None:
        both = out_io.read_raster_lazy(_slots_path(paths), band=None, chunks=chunks)
        n = slots[0].shape[0]
        slots = (encoding.decode(both[:n]), both[n:])
        events = out_io.read_raster_lazy(paths["events"], band=None, chunks=chunks)
    return (
        encoding.read_prob(paths["prob"], chunks=chunks),
        out_io.read_raster_lazy(paths["date"], chunks=chunks),
        events,
        slots,
    )


def _date_table(dates_iso: list[str]) -> list[dict]:
    """The date raster's attribute table: per value its change date, the date before it, a
    label and the colour of :func:`_date_colormap`."""
    colours = _date_colormap(dates_iso)
    rows = []
    for value in [0, *range(1, len(dates_iso)), DATE_NODATA]:
        if value == 0:
            after, before, label = "", "", "no change"
        elif value == DATE_NODATA:
            after, before, label = "", "", "nodata"
        else:
            after, before = dates_iso[value], dates_iso[value - 1]
            label = f"change between {before} and {after}"
        r, g, b, a = colours[value]
        rows.append(
            dict(value=value, label=label, change_date=after, date_before=before, red=r, green=g,
                 blue=b, alpha=a)
        )  # fmt: skip
    return rows


#: Bands of the events raster (OUT_events.tif).
EVENT_BANDS = ("event_count", "first_event_date_index", "last_event_date_index", "last_event_prob")


def _event_outputs(events, slots, paths, tags, dates_iso, co=None) -> list[dict]:
    """The events raster and the work file of the slots (none for a one-window run)."""
    if events is None or slots is None:
        return []
    date_tags = {**tags, **{f"DATE_{j}": d for j, d in enumerate(dates_iso) if j > 0}}
    date_tags["encoding"] = (
        "band 1: number of change events; bands 2, 3: first and last event's date index j "
        "(change first seen on date j, DATE_j; 0 = none); band 4: last event's probability x "
        "254; 255 = nodata"
    )
    n = slots[0].shape[0]
    return [
        dict(
            array=events,
            path=paths["events"],
            dtype="uint8",
            nodata=DATE_NODATA,
            cog=True,
            tags=date_tags,
            band_descriptions=list(EVENT_BANDS),
            creation=dict(co or ()),
        ),
        dict(
            array=da.concatenate([encoding.encode(slots[0]), slots[1]]),
            path=_slots_path(paths),
            dtype="uint8",
            nodata=None,
            band_descriptions=[f"slot_{k}_prob" for k in range(n)]
            + [f"slot_{k}_date" for k in range(n)],
        ),
    ]


def _slots_path(paths: dict[str, Path]) -> Path:
    gpkg = Path(paths["gpkg"])
    return gpkg.with_name(gpkg.stem + "_slots.tif")


def _date_colormap(dates: Sequence[str]) -> dict[int, tuple[int, int, int, int]]:
    """Colour table of the date raster: the quicklook's colour per date index (the continuous
    ramp for a long series), 0 (no change) white; nodata is transparent through the nodata
    value (TIFF colour tables hold no alpha)."""
    from geochange.palette import date_ramp

    table = {0: (255, 255, 255, 255), DATE_NODATA: (0, 0, 0, 0)}
    for j, rgba in enumerate(date_ramp(dates), start=1):
        table[j] = tuple(int(round(255 * c)) for c in rgba[:3]) + (255,)
    return table


def _absolute(path: str) -> str:
    """A local input path as an absolute path for the ``runs`` record (URLs as they are)."""
    if path.startswith("/vsi") or "://" in path or ":" in path.split(os.sep)[0]:
        return path
    return os.path.abspath(path)


def _provenance(stack: Stack, config: DetectConfig, chunk_size: int, chain: Chain) -> dict:
    meta = chain.meta
    method = config.method
    model = config.model
    run = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "geochange_version": __version__,
        "inputs": [_absolute(str(p)) for p in stack.paths],
        "dates": [iso(d) for d in stack.dates],
        "crs": stack.grid.crs.to_string() if stack.grid.crs else "",
        "method": method,
        "model": _absolute(str(model))
        if model is not None
        else ("default" if method == "cnn-lstm" else ""),
        "model_name": str(meta.get("name", method)),
        "model_version": str(meta.get("version", __version__)),
        "adapted": bool(meta.get("adapted", False)),
        "device": chain.device,
        "threshold": float(config.threshold),
        "min_area_m2": float(config.min_area),
        "simplify": float(config.simplify),
        "chunk_size": int(chunk_size),
        "halo": int(chain.halo),
        "align": bool(stack.align),
        "masks": [f"{_absolute(m[0])}:{m[1]}" if m else "" for m in stack.masks],
        "mask_values": list(stack.mask_values) if stack.mask_values else [],
        "wavelengths_nm": list(stack.wavelengths),
        "shifts_px": [list(s) for s in stack.shifts],
        "creation_options": [f"{k}={v}" for k, v in config.co],
    }
    run.update(chain.record())
    if meta.get("taught"):
        cv = meta.get("cv") or {}
        run.update({k: meta.get(k) for k in _TAUGHT_RUN_KEYS})
        run["taught_threshold"] = meta.get("threshold")
        run["threshold_source"] = meta.get("threshold_source")
        run.update({f"cv_{k}": cv.get(k) for k in _CV_RUN_KEYS})
    return run


#: Fields of a taught model's meta copied to the ``runs`` record.
_TAUGHT_RUN_KEYS = (
    "taught",
    "examples",
    "examples_sha256",
    "examples_change_polygons",
    "examples_no_change_polygons",
    "examples_labelled_areas",
    "examples_change_px",
    "examples_no_change_px",
)
_CV_RUN_KEYS = ("k", "f1", "f1_sd", "precision", "precision_sd", "recall", "recall_sd", "note")


#: A pickled detector larger than this is shipped with every task: warn (bytes).
_SHIP_WARN_BYTES = 1 << 20


def _check_shipping(chain: Chain) -> None:
    """Log the pickled size of the detector that goes with every task to the workers.

    A ``ModelDetector`` built from a checkpoint pickles its path and scene statistics, and each
    worker process loads the network once (predict's per-process cache), so this is small.
    """
    import pickle

    size = len(pickle.dumps(chain, protocol=pickle.HIGHEST_PROTOCOL))
    if size > _SHIP_WARN_BYTES:
        log.warning(
            "the chain pickles to %.1f MB and is sent with every task; save the model to a "
            "file (geochange train -o) so workers load it once from its path",
            size / 1e6,
        )
    else:
        log.info("the chain pickles to %d bytes per task", size)
