"""Writing scenes as dated GeoTIFFs plus their truth, and reading real labelled pairs."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from geochange.errors import InputError, OutputExistsError
from geochange.grid import GridSpec
from geochange.io.atomic import atomic_path
from geochange.synth.scene import DN_SCALE, Scene
from geochange.synth.spectra import band_names

__all__ = ["STACK_DIR", "TRUTH_DIR", "check_out_dir", "load_pair", "write_scene"]

log = logging.getLogger(__name__)

STACK_DIR = "stack"
TRUTH_DIR = "truth"
_IMAGE_PREFIX = "S2_"
# GeoPackages record a "last change" time; pin it so the same scene gives identical bytes.
_GPKG_DATE = "2000-01-01T00:00:00Z"


def _block(n: int) -> int | None:
    """Largest GeoTIFF block size (multiple of 16, <= 256) fitting ``n`` pixels, or None."""
    b = min(256, (n // 16) * 16)
    return b if b >= 16 else None


def _tiff_profile(grid: GridSpec, count: int, dtype: str, nodata: float | None) -> dict:
    bh, bw = _block(grid.height), _block(grid.width)
    extra: dict = {"tiled": False}
    if bh and bw:
        extra = {"tiled": True, "blockxsize": bw, "blockysize": bh}
    return grid.profile(
        count=count, dtype=dtype, nodata=nodata, compress="deflate", predictor=2, zlevel=9,
        interleave="pixel" if count > 1 else "band", **extra,
    )  # fmt: skip


def _write_tif(
    path: Path, data: np.ndarray, profile: dict, tags: dict, descriptions: tuple[str, ...] = ()
) -> None:
    """Write (c, h, w) ``data`` to ``path`` under a temporary name, then rename."""
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)


def check_out_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Return ``out_dir`` as a Path if a scene may be written there.

    Raises:
        OutputExistsError: it is a file, or a non-empty folder and ``overwrite`` is False.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(
            f"{out}: exists and is a file, expected a folder; choose another OUT_DIR"
        )
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{out}: folder is not empty; pass overwrite=True (--overwrite) to replace its scene "
            "or choose an empty folder"
        )
    return out


def write_scene(
    scene: Scene, out_dir: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, list[Path] | Path]:
    """Write a scene: one GeoTIFF per date and the truth.

    Layout::

        out_dir/stack/S2_YYYYMMDD.tif   uint16 (c bands), nodata 0, tag ACQUISITION_DATE (ISO)
        out_dir/truth/label.tif         uint8, band 1 change (0/1/255), band 2 date index (0, j, 255)
        out_dir/truth/changes.gpkg      layer "changes": one polygon per change with its date
        out_dir/truth/clouds.tif        uint8, one band per date, 1 = cloud or shadow
        out_dir/truth/events.tif        uint8, band k = date index of each pixel's k-th change
                                        event (0 none); only for a scene made with events > 1

    Files are DEFLATE-compressed (predictor 2), tiled, written under temporary names and renamed.

    Args:
        scene: from :func:`make_scene` or :func:`semi_synthetic`.
        out_dir: folder; must be empty or missing unless ``overwrite``.
        overwrite: replace the files of an earlier scene (stale ``S2_*.tif`` are removed).

    Returns:
        {"images": [paths of the dates], "label": path, "changes": path, "clouds": path}.

    Raises:
        OutputExistsError: ``out_dir`` holds files and ``overwrite`` is False.
    """
    out = check_out_dir(out_dir, overwrite=overwrite)
    stack_dir, truth_dir = out / STACK_DIR, out / TRUTH_DIR
    stack_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)

    t, c = scene.images.shape[:2]
    names = [f"{_IMAGE_PREFIX}{d:%Y%m%d}.tif" for d in scene.dates]
    for stale in stack_dir.glob(f"{_IMAGE_PREFIX}*.tif"):
        if stale.name not in names:
            stale.unlink()
    descriptions = band_names(scene.band_wavelengths)
    profile = _tiff_profile(scene.grid, c, "uint16", 0)
    images = []
    for i, (d, name) in enumerate(zip(scene.dates, names)):
        path = stack_dir / name
        tags = {
            "ACQUISITION_DATE": d.isoformat(),
            "DN_SCALE": f"{DN_SCALE:g}",
            "WAVELENGTHS_NM": ",".join(f"{w:g}" for w in scene.band_wavelengths),
            "SOURCE": "geochange.synth",
        }
        _write_tif(path, scene.images[i], profile, tags, descriptions)
        images.append(path)

    label = np.stack([scene.change, scene.date_index]).astype(np.uint8)
    label_path = truth_dir / "label.tif"
    _write_tif(
        label_path, label, _tiff_profile(scene.grid, 2, "uint8", 255),
        {"DATES": ",".join(d.isoformat() for d in scene.dates)},
        ("change: 0 no, 1 yes, 255 ignore", "date index j: first date seen (1..T-1), 0 none, 255 unknown"),
    )  # fmt: skip

    clouds_path = truth_dir / "clouds.tif"
    _write_tif(
        clouds_path, scene.clouds.astype(np.uint8), _tiff_profile(scene.grid, t, "uint8", None),
        {"DATES": ",".join(d.isoformat() for d in scene.dates)},
        tuple(f"cloud or shadow {d.isoformat()}" for d in scene.dates),
    )  # fmt: skip

    out_paths: dict[str, list[Path] | Path] = {}
    events_path = truth_dir / "events.tif"
    if scene.events is not None:
        k = scene.events.shape[0]
        _write_tif(
            events_path, scene.events.astype(np.uint8), _tiff_profile(scene.grid, k, "uint8", None),
            {"DATES": ",".join(d.isoformat() for d in scene.dates)},
            tuple(f"date index of change event {i + 1} (0 none)" for i in range(k)),
        )  # fmt: skip
        out_paths["events"] = events_path
    elif events_path.exists():
        events_path.unlink()

    gpkg = truth_dir / "changes.gpkg"
    import pyogrio  # only the GeoPackage writer needs it

    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _GPKG_DATE})
    try:
        with atomic_path(gpkg) as tmp:
            scene.changes.to_file(tmp, driver="GPKG", layer="changes", engine="pyogrio")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})
    log.info("wrote %d dates and truth to %s", t, out)
    return {
        "images": images, "label": label_path, "changes": gpkg, "clouds": clouds_path, **out_paths
    }  # fmt: skip


def _find(sample: Path, stem: str) -> Path:
    for ext in (".tif", ".tiff", ".png"):
        p = sample / f"{stem}{ext}"
        if p.exists():
            return p
    raise InputError(
        f"{sample}: no {stem}.tif or {stem}.png found; a sample folder holds t0, t1 and label "
        "(.tif or .png)"
    )


def _read(path: Path) -> tuple[np.ndarray, GridSpec | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                data = src.read()
                geo = src.crs is not None and not src.transform.is_identity
                grid = (
                    GridSpec(src.crs, src.transform, src.height, src.width, src.nodata)
                    if geo
                    else None
                )
    except RasterioIOError as exc:
        raise InputError(f"{path}: unreadable ({exc}); expected a GeoTIFF or PNG") from exc
    return data, grid


def load_pair(
    sample_dir: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, GridSpec | None]:
    """Read a real labelled pair: ``t0``, ``t1`` and ``label`` (.tif or .png) from a folder.

    Labels are returned as 0 no change, 1 change, 255 unlabelled: GeoTIFF labels are kept as
    they are (OSCD 0/1, Landsat 0/1/255); PNG labels (DSIFN, LEVIR: 0/255 = change) are mapped
    to 0/1. A PNG has no georeferencing: its grid is None (:func:`semi_synthetic` then uses a
    local stand-in grid).

    Returns:
        t0 (c, h, w), t1 (c, h, w) in their source dtype, label (h, w) uint8, grid or None.
    """
    sample = Path(sample_dir)
    if not sample.is_dir():
        raise InputError(
            f"{sample}: not a folder; expected a sample folder holding t0, t1 and label"
        )
    t0, grid = _read(_find(sample, "t0"))
    t1, _ = _read(_find(sample, "t1"))
    lab_path = _find(sample, "label")
    lab, _ = _read(lab_path)
    lab = lab[0]
    if lab_path.suffix == ".png":
        lab = (lab > 0).astype(np.uint8)
        # PNG images may carry an alpha band: keep the colour bands.
        t0, t1 = t0[:3], t1[:3]
    if t0.shape != t1.shape or t0.shape[1:] != lab.shape:
        raise InputError(
            f"{sample}: t0 {t0.shape}, t1 {t1.shape} and label {lab.shape} differ in shape; "
            "expected (c, h, w), (c, h, w) and (h, w) on one grid"
        )
    return t0, t1, lab.astype(np.uint8), grid
