"""The detect pipeline: a multi-date stack in, change rasters and dated change polygons out.

``detect`` glues the one-way flow of docs/DESIGN.md together: open the stack lazily, fit the
detector's scene-wide statistics once on a decimated sample, run it chunk by chunk with a halo
(``tiling.window_map``), write the probability and change-date rasters block by block, vectorise
per chunk and merge across chunk borders, and write the GeoPackage with its provenance.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import geopandas as gpd
import numpy as np

from geochange._version import __version__
from geochange.errors import InputError
from geochange.io.stack import Stack, open_stack, read_sample
from geochange.stages import clouds
from geochange.stages.coregister import coregister as coregister_stack

__all__ = ["DetectResult", "Method", "detect", "make_detector", "output_paths", "stack_detector"]

log = logging.getLogger(__name__)

Method = Literal["cnn-lstm", "cva", "irmad", "diff"]
METHODS: tuple[str, ...] = ("cnn-lstm", "cva", "irmad", "diff")
Device = Literal["auto", "cpu", "cuda"]

#: Value of the change-date raster where the pixel is nodata (see DESIGN.md encodings).
DATE_NODATA = 255


@dataclass
class DetectResult:
    """What ``detect`` returns.

    Attributes:
        stack: the opened stack (dates, grid, paths).
        prob: (y, x) float32 change probability, NaN = nodata. Lazy (dask) unless written.
        date_index: (y, x) uint8 change date index: 0 no change, j = 1..T-1 first date the change
            is seen, 255 nodata.
        changes: change polygons (GeoDataFrame in the stack's CRS).
        paths: output files written, by kind ("gpkg", "prob", "date"); empty when not written.
        run: the provenance record written to the GeoPackage's ``runs`` layer.
    """

    stack: Stack
    prob: da.Array
    date_index: da.Array
    changes: gpd.GeoDataFrame
    paths: dict[str, Path] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)


def output_paths(output: str | os.PathLike, *, quicklook: bool = False) -> dict[str, Path]:
    """Output files of a detect run named after ``output`` (the GeoPackage).

    ``changes.gpkg`` gives ``changes.gpkg``, ``changes_prob.tif`` (COG), ``changes_date.tif``
    and, with ``quicklook``, ``changes_quicklook.png``.
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
    }
    if quicklook:
        paths["quicklook"] = stem.parent / f"{stem.name}_quicklook.png"
    return paths


def stack_detector(
    stack: Stack, method: Method = "cnn-lstm", cloud_screen: bool | None = None, **kwargs: Any
):
    """:func:`make_detector` fitted on a whole stack: its decimated scene sample and its band
    wavelengths (told to the deep model). ``cloud_screen`` None (auto) = screen only when the
    stack has no masks (a user's masks are trusted as they are). ``kwargs`` as
    :func:`make_detector`."""
    if cloud_screen is None:
        cloud_screen = not any(stack.masks)
    return make_detector(
        method,
        read_sample(stack),
        wavelengths=stack.wavelengths,
        cloud_screen=cloud_screen,
        **kwargs,
    )


def make_detector(
    method: Method,
    sample: np.ndarray,
    *,
    model: str | os.PathLike | None = None,
    device: Device = "auto",
    batch_size: int | None = None,
    amp: bool = False,
    wavelengths: Sequence[float | None] | None = None,
    cloud_screen: bool = False,
    micro: bool = True,
    refine: bool = True,
    emerge: bool = True,
):
    """A block detector for ``method`` with scene-wide parameters fitted on ``sample``.

    Args:
        method: "cnn-lstm" (the deep model), or a classical baseline "cva", "irmad", "diff".
        sample: (t, c, n) float32 decimated read of the whole scene, NaN = nodata.
        model: checkpoint path for "cnn-lstm"; None = the shipped default model.
        device: "auto", "cpu" or "cuda" for the deep model.
        batch_size: sub-tiles per forward pass of the deep model (None = its default).
        amp: float16 autocast on CUDA for the deep model.
        wavelengths: band centres in nm (None = unknown) told to the deep model
            (``Stack.wavelengths``); the baselines do not use them.
        cloud_screen: screen clouds and shadows out of every tile first
            (:class:`geochange.stages.clouds.CloudScreen`), where the stack has enough dates and bands
            (:func:`geochange.stages.clouds.usable`); otherwise ignored.
        micro: add the small persistent changes the deep model's context misses
            (:func:`geochange.stages.micro.rescue`; 3 dates or more, ignored otherwise). The
            classical baselines judge every pixel alone already and ignore it.
        refine: sharpen the deep model's probability along the pixels' own series
            (:func:`geochange.stages.refine.refine`); the baselines ignore it.
        emerge: add the objects that emerge from their surroundings at one date and stay
            apart, which the deep model's context can veto (:func:`geochange.stages.emerge.add`;
            4 dates or more, ignored otherwise); the baselines ignore it.

    Returns:
        An object with ``.halo`` (pixels) and ``__call__(tile (t, c, h, w)) -> (2, h, w)``.
    """
    if method not in METHODS:
        raise InputError(
            f"--method: found {method!r}, expected one of {', '.join(METHODS)}; "
            "pick one of those (cnn-lstm is the default deep model)"
        )
    if method == "cnn-lstm":
        from geochange.stages.network import model_detector

        kwargs: dict[str, Any] = {
            "amp": bool(amp),
            "wavelengths": wavelengths or None,
            "micro": bool(micro),
            "refine": bool(refine),
            "emerge": bool(emerge),
        }
        if batch_size is not None:
            if int(batch_size) != batch_size or batch_size < 1:
                raise InputError(
                    f"--batch-size: found {batch_size!r}, expected a whole number of tiles >= 1"
                )
            kwargs["batch_size"] = int(batch_size)
        detector = model_detector(sample, model_path=model, device=device, **kwargs)
        return _screened(detector, sample, cloud_screen)
    for flag, value in (("--batch-size", batch_size), ("--amp", amp or None)):
        if value is not None:
            raise InputError(
                f"{flag}: given but --method is {method!r}, a classical baseline that runs "
                f"on numpy; drop {flag} or use --method cnn-lstm"
            )
    if model is not None:
        raise InputError(
            f"--model: a checkpoint was given but --method is {method!r}, a classical baseline "
            "without weights; drop --model or use --method cnn-lstm"
        )
    from geochange.stages.baselines import make_baseline

    return _screened(make_baseline(method, sample), sample, cloud_screen)


def _screened(detector: Any, sample: np.ndarray, cloud_screen: bool) -> Any:
    """``detector`` behind a :class:`~geochange.stages.clouds.CloudScreen` when asked and usable."""
    if not cloud_screen or not clouds.usable(*sample.shape[:2]):
        return detector
    return clouds.CloudScreen.from_sample(detector, sample)


def _threads_layout(n_chunks: int) -> tuple[int, int]:
    """(dask threads, torch threads per task) so their product does not exceed the cores."""
    from geochange.cluster import threads_layout

    return threads_layout(n_chunks)


def detect(
    inputs: str | os.PathLike | Sequence[str | os.PathLike] | Stack,
    output: str | os.PathLike | None = None,
    *,
    dates: Sequence[str | _dt.date] | None = None,
    method: Method = "cnn-lstm",
    model: str | os.PathLike | None = None,
    threshold: float = 0.5,
    min_area: float = 0.0,
    simplify: float = 0.0,
    chunk_size: int = 512,
    align: bool = False,
    masks: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    mask_values: Sequence[float] | str | None = None,
    wavelengths: Sequence[float | None] | str | None = None,
    device: Device = "auto",
    overwrite: bool = False,
    progress: bool = False,
    quicklook: bool = True,
    rgb_bands: Sequence[int] | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    batch_size: int | None = None,
    amp: bool = False,
    adapt: bool = False,
    adapt_minutes: float = 3.0,
    coregister: bool = True,
    cloud_screen: bool | None = None,
    micro: bool = True,
    refine: bool = True,
    emerge: bool = True,
) -> DetectResult:
    """Detect changes in a multi-date stack.

    Args:
        inputs: GeoTIFF files (one per date), a directory, a glob, or an opened ``Stack``.
        output: GeoPackage path; the probability COG and date raster are written beside it.
            None = compute in memory and write nothing.
        dates: one date per file, overriding tags and file names.
        method: "cnn-lstm" (default deep model), "cva", "irmad" or "diff".
        model: checkpoint of a model trained with ``geochange train``; None = shipped default.
        threshold: probability from which a pixel counts as change.
        min_area: smallest polygon kept, in m².
        simplify: polygon simplification tolerance in CRS units (0 = none).
        chunk_size: chunk edge in pixels; memory per task grows with its square.
        align: resample every date onto the first date's grid.
        masks: cloud / validity masks per date, read as nodata (see ``open_stack``).
        mask_values: mask values that mean masked (None = any non-zero), e.g. "3,8,9,10".
        wavelengths: band centres in nm, e.g. "490,560,665,842" (see ``open_stack``); default
            from the files' ``WAVELENGTHS_NM`` tag or band descriptions.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        overwrite: replace existing outputs.
        progress: show a progress bar over chunks.
        quicklook: also write OUT_quicklook.png (first/last date, probability, polygons, dates).
        rgb_bands: 1-based bands shown as red, green, blue in the quicklook (default: guessed).
        scheduler: None or "threads" (dask threads in this process, the default), a
            dask.distributed scheduler address "tcp://HOST:PORT", or a scheduler file (.json).
            On a cluster the workers read the inputs and write the outputs themselves: they must
            see both under the same paths (or GDAL URLs) as this process. See docs/CLUSTER.md.
        workers: run on a local cluster of this many worker processes (not with an address).
        threads_per_worker: dask threads per worker process (threaded scheduler: dask threads).
            Default: cores // workers; torch threads are set to cores // all dask threads.
        batch_size: sub-tiles per forward pass of the deep model (None = its default); larger
            fills a GPU better.
        amp: float16 autocast on CUDA (faster; not bit-identical to float32).
        adapt: first adapt the model (``model`` or the default) to this stack without labels
            (:func:`geochange.model.adapt.adapt`, seed 0) into a temporary checkpoint, then detect
            with it; the ``runs`` record says ``adapted``. Only with ``method="cnn-lstm"``.
        adapt_minutes: wall-clock budget of that adaptation.
        coregister: estimate each date's whole shift (sub-pixel, up to 4 px) and resample it
            away on every read (:mod:`geochange.stages.coregister`); the ``runs`` record lists the
            shifts. A ``Stack`` whose ``shifts`` are set is used as it is.
        cloud_screen: flag clouds and cloud shadows from the dates themselves and read them as
            nodata (:mod:`geochange.stages.clouds`), as ``masks`` are; needs 3 dates and 4 bands.
            None (auto) = only when no ``masks`` are given: a user's masks are trusted as they
            are (the screen on top of them was measured to remove real change).
        micro: with the deep model, also add small objects whose local contrast steps at one
            date and stays (:mod:`geochange.stages.micro`), which the model's context can miss; needs
            3 dates. The ``runs`` record says whether it ran.
        refine: with the deep model, sharpen its probability along the pixels' own series
            (:mod:`geochange.stages.refine`: outlines move to where the series changes, specks whose
            series matches their surroundings go). The ``runs`` record says whether it ran.
        emerge: with the deep model, also add the objects that emerge from their
            surroundings (:mod:`geochange.stages.emerge`: alike the pixels around them before one
            date, apart from them on every date after it), such as a roof inside a field that
            the model's context can veto; needs 4 dates. The ``runs`` record says whether it
            ran.

    Returns:
        A ``DetectResult`` with lazy rasters (or rasters re-read from the written files),
        the change polygons and the written paths.
    """
    from geochange import cluster, tiling, vectorize
    from geochange.io import rasters as out_io

    if not 0.0 < threshold < 1.0:
        raise InputError(
            f"--threshold: found {threshold}, expected a probability strictly between 0 and 1"
        )
    if min_area < 0:
        raise InputError(f"--min-area: found {min_area}, expected an area in m² >= 0")
    if chunk_size < 16:
        raise InputError(f"--chunk-size: found {chunk_size}, expected at least 16 pixels")

    paths = output_paths(output, quicklook=quicklook) if output is not None else {}
    if paths and paths["gpkg"].parent.is_dir():
        # A missing output folder is created once the inputs have passed validation.
        out_io.check_writable(list(paths.values()), overwrite=overwrite)

    stack = (
        inputs
        if isinstance(inputs, Stack)
        else open_stack(
            inputs,
            dates=dates,
            chunk_size=chunk_size,
            align=align,
            masks=masks,
            mask_values=mask_values,
            wavelengths=wavelengths,
        )
    )
    if coregister:
        stack = coregister_stack(stack)
    if adapt:
        with _adapted_model(stack, method, model, adapt_minutes, device) as adapted:
            return detect(
                stack, output, method=method, model=adapted, threshold=threshold,
                min_area=min_area, simplify=simplify, chunk_size=chunk_size, device=device,
                overwrite=overwrite, progress=progress, quicklook=quicklook,
                rgb_bands=rgb_bands, scheduler=scheduler, workers=workers,
                threads_per_worker=threads_per_worker, batch_size=batch_size, amp=amp,
                coregister=coregister, cloud_screen=cloud_screen, micro=micro, refine=refine,
                emerge=emerge,
            )  # fmt: skip
    detector = stack_detector(
        stack,
        method,
        model=model,
        device=device,
        batch_size=batch_size,
        amp=amp,
        cloud_screen=cloud_screen,
        micro=micro,
        refine=refine,
        emerge=emerge,
    )
    halo = int(detector.halo)
    ychunks, xchunks = tiling.plan_chunks(stack.grid.height, stack.grid.width, chunk_size, halo)
    n_chunks = len(ychunks) * len(xchunks)
    with cluster.runtime(
        scheduler,
        workers,
        threads_per_worker,
        n_chunks=n_chunks,
        torch_threads=method == "cnn-lstm",
    ) as rt:
        if paths:
            paths["gpkg"].parent.mkdir(parents=True, exist_ok=True)
        if hasattr(detector, "num_threads"):
            # On a cluster each worker's torch threads are set by the worker plugin.
            detector.num_threads = None if rt.distributed else rt.layout.torch_threads
        log.info(
            "%d dates, %d bands, %dx%d px, %d chunks, halo %d px; %s",
            stack.T,
            stack.band_count,
            stack.grid.width,
            stack.grid.height,
            n_chunks,
            halo,
            rt.layout.describe(),
        )
        if rt.distributed:
            _check_shipping(detector)

        annotations = {}
        if rt.distributed and str(getattr(detector, "device", "cpu")).startswith("cuda"):
            if rt.gpu_workers():
                # One GPU per worker: a worker started with `--resources GPU=1` runs one model
                # task at a time.
                annotations = {"resources": {"GPU": 1}}
        with dask.annotate(**annotations):
            # Each task reads its own tile (chunk + halo) from the files: no input chunk is
            # kept for its neighbours and none moves between workers (see benchmarks/SCALE.md).
            result = tiling.window_map(
                stack.reader(),
                (ychunks, xchunks),
                detector,
                halo,
                out_bands=2,
                dtype=np.float32,
                name="geochange-detect",
            )
        prob = result[0]
        date_index = _date_raster(result[0], result[1], threshold)

        run = _provenance(stack, method, model, threshold, min_area, simplify, chunk_size, detector)
        run["scheduler"] = rt.layout.kind
        dates_iso = [d.isoformat() for d in stack.dates]

        with rt.compute():
            with rt.progress(result.name, n_chunks, enabled=progress):
                if paths:
                    prob, date_index = _write_rasters(
                        prob, date_index, stack, paths, threshold, dates_iso, overwrite
                    )
                elif rt.distributed:
                    # The cluster may be gone after this block: bring the rasters home.
                    p, d = dask.compute(prob, date_index)
                    prob = da.from_array(p, chunks=stack.chunk_size)
                    date_index = da.from_array(d, chunks=stack.chunk_size)
                else:
                    prob, date_index = dask.persist(prob, date_index)
            # Per chunk on the workers, merged here.
            changes = vectorize.polygons_from_rasters(
                prob,
                date_index,
                stack.grid,
                stack.dates,
                threshold=threshold,
                min_area=min_area,
                simplify=simplify,
                chunk_size=chunk_size,
            )
    if paths:
        try:
            if "quicklook" in paths:
                from geochange.plots import quicklook as _quicklook

                _quicklook(
                    stack,
                    prob,
                    date_index,
                    changes,
                    paths["quicklook"],
                    rgb_bands=rgb_bands,
                    overwrite=True,
                )
            out_io.write_gpkg(changes, paths["gpkg"], runs=run, overwrite=overwrite)
        except BaseException:
            for kind in ("prob", "date", "quicklook"):
                if kind in paths:
                    paths[kind].unlink(missing_ok=True)
            raise
    log.info("%d change polygons", len(changes))
    return DetectResult(stack, prob, date_index, changes, paths, run)


@contextlib.contextmanager
def _adapted_model(
    stack: Stack, method: str, model: str | os.PathLike | None, minutes: float, device: str
) -> Iterator[Path]:
    """``detect(adapt=True)``: adapt the model to ``stack`` into a temporary checkpoint.

    The checkpoint lives in a temporary folder of this machine for the duration of the run (a
    cluster's workers must see it: with remote workers, run ``geochange adapt`` to a shared path
    and pass ``--model`` instead).
    """
    if method != "cnn-lstm":
        raise InputError(
            f"--adapt: given but --method is {method!r}, a classical baseline without weights; "
            "drop --adapt or use --method cnn-lstm"
        )
    from geochange.model.adapt import adapt as _adapt

    with tempfile.TemporaryDirectory(prefix="geochange-adapt-") as tmp:
        path = _adapt(
            stack, Path(tmp) / "adapted.ckpt", model=model, minutes=minutes, device=device
        )
        yield path


def _date_raster(prob: da.Array, interval: da.Array, threshold: float) -> da.Array:
    """uint8 change date index: 0 no change, k+1 for interval k where prob >= threshold, 255 nodata."""

    def block(p: np.ndarray, k: np.ndarray) -> np.ndarray:
        out = np.zeros(p.shape, np.uint8)
        changed = np.nan_to_num(p, nan=0.0) >= threshold
        out[changed] = (np.nan_to_num(k[changed], nan=0.0) + 1).astype(np.uint8)
        out[np.isnan(p)] = DATE_NODATA
        return out

    return da.map_blocks(block, prob, interval, dtype=np.uint8)


def _write_rasters(prob, date_index, stack, paths, threshold, dates_iso, overwrite):
    """Write both rasters from one pass over the graph; return them re-read lazily from disk."""
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
                array=prob,
                path=paths["prob"],
                dtype="float32",
                nodata=float("nan"),
                cog=True,
                tags=tags,
                band_descriptions=["change_probability"],
            ),
            dict(
                array=date_index,
                path=paths["date"],
                dtype="uint8",
                nodata=DATE_NODATA,
                cog=False,
                tags=date_tags,
                band_descriptions=["change_date_index"],
            ),
        ],
        stack.grid,
        overwrite=overwrite,
    )
    return (
        out_io.read_raster_lazy(paths["prob"], chunks=stack.chunk_size),
        out_io.read_raster_lazy(paths["date"], chunks=stack.chunk_size),
    )


def _provenance(stack, method, model, threshold, min_area, simplify, chunk_size, detector) -> dict:
    meta = getattr(detector, "meta", {}) or {}
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "geochange_version": __version__,
        "inputs": [str(p) for p in stack.paths],
        "dates": [d.isoformat() for d in stack.dates],
        "crs": stack.grid.crs.to_string() if stack.grid.crs else "",
        "method": method,
        "model": str(model) if model is not None else ("default" if method == "cnn-lstm" else ""),
        "model_name": str(meta.get("name", method)),
        "model_version": str(meta.get("version", __version__)),
        "adapted": bool(meta.get("adapted", False)),
        "device": str(getattr(detector, "device", "cpu")),
        "threshold": float(threshold),
        "min_area_m2": float(min_area),
        "simplify": float(simplify),
        "chunk_size": int(chunk_size),
        "halo": int(detector.halo),
        "align": bool(stack.align),
        "masks": stack.mask_names,
        "mask_values": list(stack.mask_values) if stack.mask_values else [],
        "wavelengths_nm": list(stack.wavelengths),
        "shifts_px": [list(s) for s in stack.shifts],
        "cloud_screen": isinstance(detector, clouds.CloudScreen),
        "micro": bool(getattr(detector, "micro", False)),
        "refine": bool(getattr(detector, "refine", False)),
        "emerge": bool(getattr(detector, "emerge", False)),
    }


#: A pickled detector larger than this is shipped with every task: warn (bytes).
_SHIP_WARN_BYTES = 1 << 20


def _check_shipping(detector: object) -> None:
    """Log the pickled size of the detector that goes with every task to the workers.

    A ``ModelDetector`` built from a checkpoint pickles its path and scene statistics, and each
    worker process loads the network once (predict's per-process cache), so this is small.
    """
    import pickle

    size = len(pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL))
    if size > _SHIP_WARN_BYTES:
        log.warning(
            "the detector pickles to %.1f MB and is sent with every task; save the model to a "
            "file (geochange train -o) so workers load it once from its path",
            size / 1e6,
        )
    else:
        log.info("detector pickles to %d bytes per task", size)
