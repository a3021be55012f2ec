"""`geochange calibrate`: Platt-scale a model's change probability on synthetic scenes."""

from __future__ import annotations

import click

from geochange.cli import options


def _range(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        lo, hi = (int(v) for v in value.split("-"))
    except ValueError:
        raise click.BadParameter(
            f"found {value!r}, expected FIRST-LAST such as 1000-1024"
        ) from None
    return [lo, hi]


@click.command("calibrate")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Model file to write."
)
@click.option(
    "--seeds",
    callback=_range,
    default=None,
    help="Synthetic scene seeds FIRST-LAST (last excluded). Default 1000-1024, the validation "
    "seeds; never use training seeds.",
)
@click.option(
    "--size",
    "sizes",
    type=click.IntRange(32, 4096),
    multiple=True,
    help="Scene edge in pixels, repeatable (default 256 and 512).",
)
@options.overwrite_option
def command(model, output, seeds, sizes, overwrite):
    """Calibrate a model's change probability (Platt scaling) and write it.

    Whole synthetic scenes (their natural share of change, unlike the class-balanced training
    chips) are detected with MODEL (default: the shipped model); a logistic fit of the truth on
    the change logit is stored in the checkpoint, and detect then reports calibrated
    probabilities: pixels at 0.7 changed about 70 % of the time, and the default --threshold 0.5
    sits near the F1 optimum. 'geochange train' does this itself when its config has a
    'calibration' section.

    \b
    Examples:
      geochange calibrate my_model.ckpt -o my_model_cal.ckpt
      geochange calibrate my_model.ckpt -o my_model.ckpt --overwrite --seeds 1000-1050
    """
    from geochange.model.calibrate import calibrate_checkpoint

    scenes = {}
    if seeds is not None:
        scenes["seeds"] = seeds
    if sizes:
        scenes["sizes"] = list(sizes)
    cal = calibrate_checkpoint(model, output, overwrite=overwrite, **scenes)
    click.echo(
        f"wrote {output}: scale {cal['scale']:.3f}, bias {cal['bias']:.3f}; on "
        f"{cal['scenes']['seeds'][1] - cal['scenes']['seeds'][0]} scenes F1 at 0.5 "
        f"{cal['f1_at_0.5_raw']:.3f} raw -> {cal['f1_at_0.5_calibrated']:.3f} calibrated"
    )
