"""`geochange adapt`: learn the user's own scene without labels, write a scene model."""

from __future__ import annotations

import time

import click

from geochange.cli import options


@click.command("adapt")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Adapted checkpoint to write (use it with 'geochange detect --model').",
)
@click.option(
    "--model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Starting checkpoint (default: the shipped model).",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0.05),
    default=None,
    help="Wall-clock budget; more minutes, more steps (default 3, which fit a 512x512 scene on "
    "2 CPU cores; with --examples sized to the scene).",
)
@click.option(
    "--examples",
    type=click.Path(dir_okay=False),
    default=None,
    help="Teach from example polygons of what counts as change instead (see 'geochange detect "
    "--examples'); the checkpoint keeps the threshold they chose.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--alpha",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Weight of the adapted parameters against the starting ones (1 = adapted only).",
)
@options.device_option("Where the model trains.")
@options.dates_option
@options.align_option
@options.skip_option
@options.masks_option
@options.mask_values_option
@options.wavelengths_option
@options.overwrite_option
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
def command(
    inputs,
    output,
    model,
    minutes,
    seed,
    alpha,
    device,
    dates,
    align,
    skip,
    masks,
    mask_values,
    wavelengths,
    overwrite,
    progress,
    examples,
):
    """Adapt the change model to a stack of GeoTIFFs, without labels.

    Fine-tunes the default model (or --model) for --minutes on chips of the stack itself:
    real chips teach the scene's own nuisances as "no change" (strongly changed-looking pixels
    are left out), and pieces of the scene pasted elsewhere at a random date teach change and
    its date. The checkpoint records the stack, the base model, seed and budget; detect's
    'runs' layer then says the result was adapted.

    \b
    Examples:
      geochange adapt data_samples/stack -o scene_model.ckpt
      geochange detect data_samples/stack -o changes.gpkg --model scene_model.ckpt
      geochange adapt 'scenes/S2_*.tif' -o scene.ckpt --minutes 10 --seed 1
      geochange adapt a.tif b.tif --dates 2021-06-01,2022-06-03 -o ab.ckpt --model my.ckpt
      geochange adapt stack/ -o scene.ckpt --device cuda --overwrite
      geochange adapt stack/ -o scene.ckpt --masks clouds/ --mask-values 3,8,9,10
      geochange adapt stack/ -o scene.ckpt --skip coregister
    """
    start = time.monotonic()  # the budget includes importing torch
    from geochange.model import load_model
    from geochange.model.adapt import adapt

    if examples is not None:
        _teach(inputs, output, model, minutes, seed, device, dates, align, skip, masks,
               mask_values, wavelengths, overwrite, examples, start)  # fmt: skip
        return
    path = adapt(
        list(inputs),
        output,
        model=model,
        minutes=3.0 if minutes is None else minutes,
        seed=seed,
        alpha=alpha,
        device=device,
        dates=dates,
        align=align,
        skip=skip,
        masks=list(masks) or None,
        mask_values=mask_values,
        wavelengths=wavelengths,
        overwrite=overwrite,
        progress=progress,
        start_time=start,
    )
    meta = load_model(path)[1]
    click.echo(
        f"wrote {path} ({meta['steps']} steps in {meta['seconds']:.0f} s on {meta['device']}, "
        f"{len(meta['adapted_on']['dates'])} dates, seed {seed})"
    )


def _teach(inputs, output, model, minutes, seed, device, dates, align, skip, masks, mask_values,
           wavelengths, overwrite, examples, start):  # fmt: skip
    """``--examples``: teach the model from example polygons and write it."""
    from pathlib import Path

    from geochange.errors import OutputExistsError
    from geochange.io.examples import read_examples
    from geochange.io.stack import open_stack
    from geochange.model.fewshot import teach
    from geochange.stages import parse_skip, prepare_stack

    if Path(output).exists() and not overwrite:
        raise OutputExistsError(f"output {output}: exists; pass --overwrite to replace it")
    stack = open_stack(list(inputs), dates=dates, align=align, masks=list(masks) or None,
                       mask_values=mask_values, wavelengths=wavelengths)  # fmt: skip
    stack, _ = prepare_stack(stack, parse_skip(skip))
    ex = read_examples(examples, stack.grid)
    path, meta = teach(stack, ex, output, model=model, minutes=minutes, seed=seed,
                       device=device, overwrite=overwrite, start_time=start)  # fmt: skip
    cv = meta["cv"]
    est = (
        f"expected F1 {cv['f1']:.2f} ± {cv['f1_sd']:.2f} ({cv['k']}-fold blocked cross-validation)"
        if cv.get("k")
        else cv.get("note", "")
    )
    click.echo(
        f"wrote {path} (taught from {ex.n_change} change and {ex.n_no_change} no-change polygons, "
        f"{ex.n_labelled} reviewed areas in {meta['seconds']:.0f} s; threshold "
        f"{meta['threshold']:.2f}; {est})"
    )
