"""`geochange synth`: write a seeded synthetic scene (dated GeoTIFFs + ground truth)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["command"]


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", default=512, show_default=True, help="Scene height and width in pixels.")
@click.option("--dates", default=8, show_default=True, help="Number of dates T.")
@click.option(
    "--bands", default=4, show_default=True, help="Number of bands (1-16; 4 = B, G, R, NIR)."
)
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option(
    "--nuisance",
    type=click.Choice(["low", "medium", "high"]),
    default="medium",
    show_default=True,
    help="Strength of illumination, haze, clouds, noise and misregistration.",
)
@click.option(
    "--events",
    default=1,
    show_default=True,
    help="Up to this many change events per pixel (1-8): with more, some changed ground "
    "changes again later (truth/events.tif).",
)
@click.option("--overwrite", is_flag=True, help="Replace the scene in a non-empty OUT_DIR.")
def command(
    out_dir: Path,
    size: int,
    dates: int,
    bands: int,
    seed: int,
    nuisance: str,
    events: int,
    overwrite: bool,
) -> None:
    """Write a synthetic multi-date scene with known, dated changes to OUT_DIR.

    OUT_DIR/stack/S2_YYYYMMDD.tif holds one uint16 GeoTIFF per date (reflectance x 10000,
    UTM, 10 m); OUT_DIR/truth/ holds label.tif (change mask, change-date index),
    changes.gpkg (one polygon per change with its date) and clouds.tif (cloud masks).

    \b
    Examples:
      geochange synth scene0 --size 256 --seed 0
      geochange synth hard --nuisance high --dates 12 --bands 10 --seed 7
      geochange synth scene0 --size 256 --seed 1 --overwrite
      geochange synth years --size 256 --dates 96 --events 2 --seed 3
    """
    from geochange.synth import make_scene, write_scene
    from geochange.synth.io import check_out_dir

    check_out_dir(out_dir, overwrite=overwrite)  # fail before the work, not after
    scene = make_scene(
        size=size,
        dates=dates,
        bands=bands,
        seed=seed,
        nuisance=nuisance,
        events=events,  # type: ignore[arg-type]
    )
    paths = write_scene(scene, out_dir, overwrite=overwrite)
    n_micro = int(scene.changes["micro"].sum()) if len(scene.changes) else 0
    click.echo(
        f"Wrote {len(paths['images'])} dates ({scene.images.shape[1]} bands, "
        f"{scene.grid.width}x{scene.grid.height} px) to {out_dir / 'stack'}; "
        f"{len(scene.changes)} changes ({n_micro} micro, {100 * scene.change.mean():.2f} % of "
        f"pixels) in {out_dir / 'truth'}"
    )
    if scene.events is not None:
        multi = int(((scene.events > 0).sum(axis=0) > 1).sum())
        click.echo(f"{multi} pixels change more than once (truth/events.tif)")
