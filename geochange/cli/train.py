"""`geochange train`: train or fine-tune the CNN-LSTM from a YAML config.

The config (see pipelines/default_model.yaml) is read by :func:`geochange.model.train.load_config`
and run by :func:`geochange.model.train.run_training`.
"""

from __future__ import annotations

import click

from geochange.cli import options

__all__ = ["command"]


@click.command("train")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value (dotted key, YAML value); repeatable.",
)
@click.option(
    "--resume",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Continue from a Lightning checkpoint (OUT_checkpoints/last.ckpt).",
)
@click.option(
    "--init",
    default=None,
    metavar="default|PATH",
    help="Start from the default model or a checkpoint (fine-tuning).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Model file to write (loads with --model in detect).",
)
@click.option(
    "--max-minutes",
    type=float,
    default=None,
    help="Stop training after this many minutes (overrides trainer.max_minutes).",
)
@options.overwrite_option
def command(config, overrides, resume, init, output, max_minutes, overwrite):
    """Train or fine-tune the CNN-LSTM change model from a YAML config.

    Writes OUT (the model), OUT_checkpoints/ (Lightning checkpoints), OUT_logs/ (metrics.csv) and
    OUT.report.json / OUT.report.md (config, data, seeds, validation metrics, wall time).

    \b
    Examples:
      geochange train pipelines/default_model.yaml -o geochange/model/weights/default.ckpt
      geochange train pipelines/finetune_example.yaml --init default -o my_model.ckpt
      geochange train cfg.yaml --set trainer.max_steps=200 --set task.lr=1e-3 -o m.ckpt
      geochange train cfg.yaml --resume m_checkpoints/last.ckpt -o m.ckpt --overwrite
    """
    from geochange.model.train import load_config, run_training

    cfg = load_config(config, tuple(overrides))
    report = run_training(
        cfg, output, resume=resume, init=init, max_minutes=max_minutes, overwrite=overwrite
    )
    val = ", ".join(f"{k}={v}" for k, v in sorted(report["val_metrics"].items()))
    click.echo(
        f"wrote {report['output']} ({report['steps']} steps, {report['wall_time_s'] / 60:.1f} min"
        + (f"; {val}" if val else "")
        + ")"
    )
