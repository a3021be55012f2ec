"""The detect pipeline: a multi-date stack in, change rasters and dated change polygons out.

``detect`` glues the one-way flow of docs/DESIGN.md together: open the stack lazily, apply the
stack stages (co-registration), fit the chain of stages once on a decimated scene sample
(:func:`geochange.stages.build_chain`), run it chunk by chunk with the chain's halo
(``tiling.window_map``), write the probability and change-date rasters block by block, vectorise
per chunk and merge across chunk borders, and write the GeoPackage with its provenance.

Its parts live beside it:

- :mod:`geochange.prepare`: checks before any compute, xarray cubes, taught or adapted models;
- :mod:`geochange.plan`: chunk and batch from the memory budget;
- :mod:`geochange.windowed`: a long series run in temporal windows, and its events;
- :mod:`geochange.record`: the ``runs`` provenance and the resume manifest;
- :mod:`geochange.io.results`: the result files' names and the rasters' writing;
- :mod:`geochange.io.outputs`: the set of outputs published together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import geopandas as gpd
import numpy as np

from geochange import prepare, windowed
from geochange.config import (
    ConfigError,
    DetectConfig,
    RuntimeConfig,
    StackConfig,
    split_options,
)
from geochange.dates import iso
from geochange.errors import EmptyResultError, GeochangeError, InputError
from geochange.io import encoding, results
from geochange.io.read import read_sample
from geochange.io.results import DATE_NODATA, output_paths
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
        events: a long series (longer than 16 dates, or than ``window``): (4, y, x)
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
        prepare.check_resume(paths, config)
    if paths:
        restore_interrupted(paths["gpkg"])
        check_target(paths, overwrite)
    if config.model is not None:
        prepare.check_model_file(config.model)
    if config.co and paths:
        from geochange.io.creation import check_creation_options

        try:
            check_creation_options(dict(config.co))
        except InputError as exc:
            raise ConfigError("co", str(exc).split(": ", 1)[1]) from None
    from geochange import cluster

    cluster.check_args(runtime.scheduler, runtime.workers, runtime.threads_per_worker)

    coords = None
    if not isinstance(inputs, Stack) and prepare.is_array(inputs):
        inputs, coords = prepare.cube_stack(inputs, stack_config, runtime.chunk_size)
    stack = (
        inputs
        if isinstance(inputs, Stack)
        else open_stack(inputs, chunk_size=runtime.chunk_size, **dataclasses.asdict(stack_config))
    )
    prepare.check_stack(stack, config)
    if paths and windowed.is_long(stack.T, config):
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
            taught = exits.enter_context(prepare.taught_model(stack, config, runtime, overwrite))
            config = dataclasses.replace(config, model=taught, examples=None, save_model=None)
            stack, stack_stages = prepare_stack(stack, config.skip)
        if config.adapt:
            adapted = exits.enter_context(prepare.adapted_model(stack, config, runtime))
            config = dataclasses.replace(config, model=adapted, adapt=False)
            stack, stack_stages = prepare_stack(stack, config.skip)
        files = prepare.input_files(stack)
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
    from geochange import cluster, record, tiling, vectorize
    from geochange.io import rasters as out_io
    from geochange.plan import plan_memory

    paths = outputs.paths if outputs is not None else {}
    is_windowed = windowed.is_long(stack.T, config)
    chain: Any = (
        windowed.windowed_chain(
            stack, config, runtime, _context(stack, config, runtime), stack_stages
        )
        if is_windowed
        else stack_chain(stack, config, runtime, stack_stages)
    )
    if config.threshold is None:
        # The model's own threshold (a taught model's, chosen from its examples), else 0.5.
        own = (getattr(chain, "meta", None) or {}).get("threshold")
        config = dataclasses.replace(config, threshold=float(own) if own is not None else 0.5)
    if is_windowed:
        chain.threshold = float(config.threshold)
    # Each task reads its own tile from the files: the stages may overwrite it in place.
    chain.overwrite_input = True
    halo = int(chain.halo)
    chunk_size = plan_memory(stack, config, runtime, chain, is_windowed)
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
            f", {len(chain.windows)} window(s) of {chain.windows[0][1]} dates"
            if is_windowed
            else "",
            rt.layout.describe(),
        )
        if rt.distributed:
            _check_shipping(chain)
        store = None
        if outputs is not None:
            # Finished chunks are kept as they come, for --resume (geochange.io.resume).
            store = outputs.chunk_store(
                record.manifest(stack, config, runtime, chain, (ychunks, xchunks), rt.layout)
            )
        resumed = store.count() if store is not None else 0

        annotations = {}
        if rt.distributed and chain.device.startswith("cuda") and rt.gpu_workers():
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
                out_bands=chain.out_bands if is_windowed else 2,
                dtype=np.float32,
                name="geochange-detect",
                store=store,
                lazy=is_windowed,
            )
        rasters = _rasters(result, chain, config, stack.dates, is_windowed)
        run = record.provenance(stack, config, chunk_size, chain)
        run["scheduler"] = rt.layout.kind

        with rt.compute():
            with rt.progress(result.name, n_chunks, enabled=runtime.progress):
                if paths:
                    rasters = _write(rasters, stack, paths, config)
                elif rt.distributed:
                    # The cluster may be gone after this block: bring the rasters home.
                    rasters = rasters.brought_home(stack.chunk_size)
                else:
                    rasters = rasters.persisted()
            prob, date_index = rasters.prob, rasters.date_index
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
            if rasters.slots is not None:
                event_polygons = windowed.event_polygons(
                    rasters.slots, prob, stack, polygon_options
                )
                if config.events == "all":
                    changes = event_polygons
                if paths:
                    with contextlib.suppress(OSError):
                        os.remove(results.slots_path(paths))
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
        events=rasters.events,
        event_polygons=event_polygons,
        resumed=resumed,
    )


@dataclass
class _Rasters:
    """The rasters a run reports, lazy until written, brought home or persisted.

    ``prob`` (y, x) float32 in steps of 1/254; ``date_index`` (y, x) uint8; with temporal
    windows also ``events`` (4, y, x) uint8 and ``slots`` (each slot's event probability and
    date index, (S, y, x) each).
    """

    prob: da.Array
    date_index: da.Array
    events: da.Array | None = None
    slots: tuple[da.Array, da.Array] | None = None

    def brought_home(self, chunk_size: int) -> _Rasters:
        """Computed into this process (a cluster may be gone after the run), as dask arrays."""
        p, d, e, sp, sd = dask.compute(
            self.prob, self.date_index, self.events, *(self.slots or (None, None))
        )
        out = _Rasters(da.from_array(p, chunks=chunk_size), da.from_array(d, chunks=chunk_size))
        if self.slots is not None:
            out.events = da.from_array(e, chunks=(4, chunk_size, chunk_size))
            chunks3 = (1, chunk_size, chunk_size)
            out.slots = (da.from_array(sp, chunks=chunks3), da.from_array(sd, chunks=chunks3))
        return out

    def persisted(self) -> _Rasters:
        prob, date_index, events, *rest = dask.persist(
            self.prob, self.date_index, self.events, *(self.slots or ())
        )
        return _Rasters(prob, date_index, events, tuple(rest) if rest else None)


def _rasters(
    result: da.Array,
    chain: Any,
    config: DetectConfig,
    dates: Sequence[Any],
    is_windowed: bool,
) -> _Rasters:
    """The reported rasters of the chain's output ``result`` (lazy)."""
    since = windowed.since_index(dates, config.since)
    if is_windowed:
        prob, interval, slots = windowed.report_rasters(
            result, chain.n_slots, config.threshold, config.events, since
        )
        date_index = _date_raster(prob, interval, config.threshold)
        return _Rasters(prob, date_index, windowed.events_raster(slots, prob), slots)
    # Kept in steps of 1/254, as written (geochange.io.encoding): in-memory and written
    # results agree.
    prob, interval = encoding.quantise(result[0]), result[1]
    if since > 1:
        prob = windowed.drop_before(prob, interval, config.threshold, since)
    return _Rasters(prob, _date_raster(prob, interval, config.threshold))


def _write(
    rasters: _Rasters, stack: Stack, paths: dict[str, Path], config: DetectConfig
) -> _Rasters:
    """Write the rasters in one pass over the graph; they come back read lazily from disk."""
    prob, date_index, events, slots = results.write_result_rasters(
        rasters.prob,
        rasters.date_index,
        stack,
        paths,
        config.threshold,
        [iso(d) for d in stack.dates],
        config.co,
        rasters.events,
        rasters.slots,
    )
    return _Rasters(prob, date_index, events, slots)


def _date_raster(prob: da.Array, interval: da.Array, threshold: float) -> da.Array:
    """uint8 change date index: 0 no change, k+1 for interval k where prob >= threshold, 255 nodata."""

    def block(p: np.ndarray, k: np.ndarray) -> np.ndarray:
        out = np.zeros(p.shape, np.uint8)
        changed = np.nan_to_num(p, nan=0.0) >= threshold
        out[changed] = (np.nan_to_num(k[changed], nan=0.0) + 1).astype(np.uint8)
        out[np.isnan(p)] = DATE_NODATA
        return out

    return da.map_blocks(block, prob, interval, dtype=np.uint8)


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
