"""`geochange detect`: a multi-date stack in, change polygons and rasters out."""

from __future__ import annotations

import sys

import click

from geochange.cli import options


@click.command("detect")
@click.argument("inputs", nargs=-1, required=False)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="GeoPackage to write (layers 'changes' and 'runs'); OUT_prob.tif and OUT_date.tif are "
    "written beside it.",
)
@options.dates_option
@click.option(
    "--stac",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read the dates from STAC items instead of INPUTS: an ItemCollection JSON file or a "
    "STAC API search saved to disk (needs the [stac] extra). Items of one day are one date.",
)
@click.option(
    "--assets",
    default=None,
    metavar="KEY,KEY,...",
    help="With --stac: the asset keys loaded as bands, in order, e.g. blue,green,red,nir.",
)
@click.option(
    "--bbox",
    default=None,
    metavar="W,S,E,N",
    help="With --stac: load only this box, in degrees (EPSG:4326).",
)
@click.option(
    "--crs",
    default=None,
    help="With --stac: output CRS, e.g. EPSG:32633 (default: the items' own).",
)
@click.option(
    "--resolution",
    type=float,
    default=None,
    help="With --stac: pixel size in units of the CRS (default: the items' own).",
)
@click.option(
    "--method",
    type=click.Choice(["cnn-lstm", "cva", "irmad", "diff"]),
    default="cnn-lstm",
    show_default=True,
    help="Deep CNN-LSTM model or a classical baseline.",
)
@click.option(
    "--model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Checkpoint from 'geochange train' or 'geochange adapt' (default: the shipped model).",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Change probability from which a pixel counts as change (default: the model's own, "
    "chosen from the examples of a taught model; else 0.5).",
)
@click.option(
    "--min-area",
    type=float,
    default=0.0,
    show_default=True,
    help="Drop change polygons smaller than this, in m².",
)
@click.option(
    "--simplify",
    type=float,
    default=0.0,
    show_default=True,
    help="Simplify polygon outlines with this tolerance in CRS units (0 = off).",
)
@options.chunk_size_option
@options.align_option
@options.skip_option
@options.masks_option
@options.mask_values_option
@options.wavelengths_option
@options.device_option()
@options.overwrite_option
@click.option(
    "--resume",
    is_flag=True,
    help="Continue a run on the same output that was killed or interrupted, from the chunks it "
    "finished; refused if its inputs, options or model differ. Same outputs, bit for bit.",
)
@click.option(
    "--quicklook/--no-quicklook",
    default=True,
    show_default=True,
    help="Write OUT_quicklook.png: first/last date, probability, polygons, change dates.",
)
@click.option(
    "--rgb-bands",
    default=None,
    help="1-based bands shown as red,green,blue in the quicklook, e.g. 3,2,1.",
)
@click.option(
    "--layout",
    type=click.Choice(["file-per-date", "band-per-date"]),
    default="file-per-date",
    show_default=True,
    help="band-per-date: INPUTS is one file holding every date, its bands date after date "
    "(date 1's bands, then date 2's, ...); dates from --dates or the band descriptions "
    "(e.g. NDVI_20230115).",
)
@click.option(
    "--bands-per-date",
    type=click.IntRange(min=1),
    default=None,
    help="With --layout band-per-date: bands of each date (default: the file's bands / dates).",
)
@click.option(
    "--co",
    "co",
    multiple=True,
    metavar="KEY=VALUE",
    help="GDAL creation option of the output COGs (COG driver), over ours; checked by GDAL "
    "before any work, e.g. --co COMPRESS=ZSTD --co LEVEL=15. Repeatable.",
)
@click.option(
    "--allow-driver",
    multiple=True,
    metavar="NAME",
    help="Also read inputs with this GDAL driver (e.g. VRT); only GeoTIFFs otherwise. A VRT "
    "can make GDAL read any file or URL: allow it for files you trust. Repeatable.",
)
@click.option(
    "--allow-no-crs",
    is_flag=True,
    help="Accept inputs without a CRS (polygons in pixel coordinates).",
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Accept a result without information (every pixel nodata) instead of failing.",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Progress bar over chunks (never with -q, nor when stderr is not a terminal).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="threads|ADDRESS|FILE",
    help="Where the work runs: 'threads' (default: dask threads in this process), the address "
    "of a running dask scheduler (tcp://HOST:PORT) or its --scheduler-file (.json). Workers must "
    "see INPUTS and the output folder under the same paths.",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Start a local dask cluster of N worker processes for this run.",
)
@click.option(
    "--threads-per-worker",
    type=int,
    default=None,
    help="Dask threads per worker process (default: cores // workers; torch gets the rest).",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Sub-tiles per forward pass of the model, at most (default: 1 on the CPU; on a GPU "
    "as many as its free memory holds).",
)
@click.option(
    "--amp", is_flag=True, help="Mixed precision (float16) on CUDA: faster, not bit-identical."
)
@click.option(
    "--adapt",
    is_flag=True,
    help="First adapt the model to this stack without labels (as 'geochange adapt'), then "
    "detect with it.",
)
@click.option(
    "--adapt-minutes",
    type=click.FloatRange(min=0.05),
    default=None,
    help="Budget of --adapt in minutes (default 3) or of --examples (default sized to the "
    "scene: 5 for 2 dates of 512x512 px on 2 CPU cores).",
)
@click.option(
    "--examples",
    type=click.Path(dir_okay=False),
    default=None,
    help="Vector file (GeoPackage...) of example polygons: a 'change' column 1/0 (yes/no), a "
    "'labelled' layer of areas reviewed completely, or an earlier result's 'changes' layer "
    "with a filled 'verdict' column. The model is first taught what counts as change here.",
)
@click.option(
    "--save-model",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --examples: keep the taught model in this checkpoint (for --model later, on "
    "stacks with the same bands).",
)
@click.option(
    "--events",
    type=click.Choice(["first", "latest", "all"]),
    default="first",
    show_default=True,
    help="Which change event of a pixel the rasters and the 'changes' layer show: its first, "
    "its latest (monitoring), or all (one polygon per event). A series longer than 16 dates "
    "(or than --window) also gets OUT_events.tif (count, first, last date, last probability) and an "
    "'events' layer with every event; run whole, it has each pixel's first event, and with "
    "latest or all (or --since) also the next one (one more pass of the model).",
)
@click.option(
    "--since",
    default=None,
    metavar="DATE",
    help="Leave out change events first seen before this date (YYYY-MM-DD).",
)
@click.option(
    "--window",
    type=int,
    default=None,
    help="Dates per temporal window: a longer series runs in overlapping windows of this many "
    "dates (memory per task follows the window, not the series). Default: the whole series "
    "when it fits --memory-limit at a reasonable chunk size, else the fewest windows that fit "
    "(at least 16 dates each).",
)
@click.option(
    "--window-overlap",
    type=int,
    default=3,
    show_default=True,
    help="Dates shared by consecutive temporal windows.",
)
@click.option(
    "--memory-limit",
    default=None,
    metavar="SIZE",
    help="Memory budget of one worker process, e.g. 2GB or 8GiB (default 2GiB): a long series "
    "is split into temporal windows only where it needs them, and the chunk and batch of the "
    "model are lowered until the tasks in flight fit it.",
)
def command(
    inputs,
    output,
    dates,
    stac,
    assets,
    bbox,
    crs,
    resolution,
    method,
    model,
    threshold,
    min_area,
    simplify,
    chunk_size,
    align,
    skip,
    masks,
    mask_values,
    wavelengths,
    device,
    overwrite,
    resume,
    quicklook,
    rgb_bands,
    layout,
    bands_per_date,
    co,
    allow_driver,
    allow_no_crs,
    allow_empty,
    progress,
    scheduler,
    workers,
    threads_per_worker,
    batch_size,
    amp,
    adapt,
    adapt_minutes,
    examples,
    save_model,
    events,
    since,
    window,
    window_overlap,
    memory_limit,
):
    """Detect changes in a stack of GeoTIFFs, one per date, or in STAC items.

    INPUTS are GeoTIFF files, a directory or a glob (local, or on GDAL paths and object
    stores: '/vsizip/a.zip/*.tif', 's3://bucket/T32/*.tif'), or @list.txt naming one input per
    line. A folder of .vrt files is read with --allow-driver VRT only. Dates come from --dates,
    else the ACQUISITION_DATE or TIFFTAG_DATETIME tag, else a date in the file name. With
    --stac, the items' assets are read instead (one band per asset of --assets, one date per
    day).

    \b
    Examples:
      geochange detect data_samples/stack -o changes.gpkg
      geochange detect 'scenes/S2_*.tif' -o out/changes.gpkg --threshold 0.6 --min-area 200
      geochange detect a.tif b.tif --dates 2021-06-01,2022-06-03 -o ab.gpkg --method cva
      geochange detect stack/ -o changes.gpkg --model my_model.ckpt --align --overwrite
      geochange detect stack/ -o changes.gpkg --resume  # after a kill, Ctrl-C or SIGTERM
      geochange detect stack/ -o changes.gpkg --masks truth/clouds.tif
      geochange detect 'S2_*_B.tif' -o c.gpkg --masks 'S2_*_SCL.tif' --mask-values 3,8,9,10 --align
      geochange detect landsat/ -o c.gpkg --wavelengths 485,560,660,830,1650,2215
      geochange detect stack/ -o changes.gpkg --workers 2 --threads-per-worker 1
      geochange detect /shared/stack -o /shared/out/changes.gpkg --scheduler tcp://10.0.0.5:8786
      geochange detect stack/ -o changes.gpkg --device cuda --chunk-size 1024
      geochange detect stack/ -o changes.gpkg --adapt --adapt-minutes 5
      geochange detect stack/ -o changes.gpkg --skip clouds,emerge
      geochange detect stack/ -o changes.gpkg --co COMPRESS=ZSTD --co LEVEL=15
      geochange detect @scenes.txt -o changes.gpkg
      geochange detect ndvi_series.tif --layout band-per-date -o changes.gpkg
      geochange detect 's3://bucket/T32TQM/S2_*.tif' -o changes.gpkg
      geochange detect vrts/ -o changes.gpkg --allow-driver VRT
      geochange detect years/ -o changes.gpkg --events latest --since 2024-01-01
      geochange detect stack/ -o changes.gpkg --examples my_examples.gpkg --save-model mine.ckpt
      geochange detect stack/ -o changes2.gpkg --examples changes.gpkg  # 'verdict' filled in
      geochange detect --stac items.json --assets blue,green,red,nir -o c.gpkg
      geochange detect --stac search.json --assets red,nir08,swir16 --bbox 11.0,46.0,11.2,46.1 \
        --crs EPSG:32632 --resolution 20 -o c.gpkg
    """
    from geochange.config import DetectConfig, RuntimeConfig, StackConfig
    from geochange.pipeline import detect

    quiet = bool((click.get_current_context().find_root().obj or {}).get("quiet"))
    # No bar with -q or into a log file (its carriage returns would land there).
    progress = progress and not quiet and sys.stderr.isatty()
    source = _stac_stack(
        inputs, stac, assets, bbox, crs, resolution, chunk_size, align, masks, dates, wavelengths
    )
    result = detect(
        source if source is not None else list(inputs),
        output,
        DetectConfig(
            method=method,
            model=model,
            skip=skip,
            threshold=threshold,
            min_area=min_area,
            simplify=simplify,
            adapt=adapt,
            adapt_minutes=adapt_minutes,
            examples=examples,
            save_model=save_model,
            quicklook=quicklook,
            rgb_bands=options.parse_int_list(rgb_bands, "--rgb-bands"),
            allow_empty=allow_empty,
            co=co,
            window=window,
            window_overlap=window_overlap,
            events=events,
            since=since,
        ),
        RuntimeConfig(
            chunk_size=chunk_size,
            device=device,
            batch_size=batch_size,
            amp=amp,
            scheduler=scheduler,
            workers=workers,
            threads_per_worker=threads_per_worker,
            progress=progress,
            memory_limit=memory_limit,
        ),
        stack_config=StackConfig(
            dates=dates,
            align=align,
            masks=list(masks) or None,
            mask_values=mask_values,
            wavelengths=wavelengths,
            allow_driver=tuple(allow_driver),
            allow_no_crs=allow_no_crs,
            layout=layout,
            bands_per_date=bands_per_date,
        ),
        overwrite=overwrite,
        resume=resume,
    )
    if result.resumed:
        click.echo(f"continued an unfinished run: {result.resumed} chunks were kept from it")
    click.echo(
        f"{len(result.changes)} change polygons over {result.stack.T} dates "
        f"({result.stack.dates[0]} .. {result.stack.dates[-1]})"
    )
    if result.event_polygons is not None:
        click.echo(f"{len(result.event_polygons)} change events (layer 'events')")
    for kind, path in result.paths.items():
        click.echo(f"  {kind:6s} {path}")
    if result.run.get("taught"):
        click.echo(_taught_line(result.run))


def _stac_stack(
    inputs, stac, assets, bbox, crs, resolution, chunk_size, align, masks, dates, wavelengths
):
    """The stack of ``--stac`` (None without it); option mix-ups are one clear error."""
    from geochange.errors import InputError

    given = {"--assets": assets, "--bbox": bbox, "--crs": crs, "--resolution": resolution}
    if stac is None:
        extra = [flag for flag, value in given.items() if value is not None]
        if extra:
            raise InputError(
                f"{extra[0]}: given without --stac; expected it only with STAC items. Fix: add "
                "--stac items.json, or drop the option"
            )
        if not inputs:
            raise InputError(
                "no INPUTS given; expected GeoTIFF files, a folder or a glob, or --stac "
                "items.json --assets KEY,... Fix: e.g. geochange detect stack/ -o changes.gpkg"
            )
        return None
    if inputs:
        raise InputError(
            f"--stac {stac} given with INPUTS ({inputs[0]}, ...); expected one or the other. "
            "Fix: drop the INPUTS or --stac"
        )
    if assets is None:
        raise InputError(
            "--stac given without --assets; expected the asset keys to load as bands. Fix: "
            "add e.g. --assets blue,green,red,nir"
        )
    for flag, value in (("--align", align or None), ("--masks", masks or None)):
        if value is not None:
            raise InputError(
                f"{flag}: given with --stac; the items are loaded onto one grid already and "
                "masks are not read from STAC. Fix: drop it"
            )
    from geochange.io.cube import stack_from_xarray
    from geochange.io.stac import load_stac

    cube, labels = load_stac(
        stac, assets, bbox=bbox, crs=crs, resolution=resolution, chunk_size=chunk_size
    )
    return stack_from_xarray(
        cube, chunk_size=chunk_size, dates=dates, wavelengths=wavelengths, labels=labels
    )


def _taught_line(run: dict) -> str:
    """What the examples taught: threshold and the cross-validated estimate."""
    head = (
        f"taught from {run['examples_change_polygons']} change and "
        f"{run['examples_no_change_polygons']} no-change polygons, "
        f"{run['examples_labelled_areas']} reviewed areas; threshold {run['threshold']:.2f}"
    )
    if run.get("cv_k"):
        return (
            f"{head}; expected outside your examples ({run['cv_k']}-fold blocked "
            f"cross-validation): F1 {run['cv_f1']:.2f} ± {run['cv_f1_sd']:.2f}, precision "
            f"{run['cv_precision']:.2f} ± {run['cv_precision_sd']:.2f}, recall "
            f"{run['cv_recall']:.2f} ± {run['cv_recall_sd']:.2f}"
        )
    return f"{head}; {run.get('cv_note') or 'no estimate'}"
