"""Shared helpers of the benchmark scripts: cases, running a method, scoring, provenance.

A *case* is one scene to score: dated GeoTIFFs written to a temporary folder (so the real
reading path, ``stack.open_stack``, is exercised) plus its reference change mask, the labelled
pixels and, where known, the reference change date index (label encoding of docs/DESIGN.md).

Every method runs through :func:`geochange.detect` in memory, the production path of ``geochange
detect`` (the chain of stages fitted once on ``read_sample``, ``tiling.window_map`` chunk by chunk
with the chain's halo), with a fixed number of torch threads so a re-run gives the same numbers.

Run the scripts from the repository root; they are not part of the package.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geochange.evaluate import evaluate_arrays
from geochange.grid import GridSpec
from geochange.io.atomic import write_text  # noqa: F401 - the benchmarks' report writer
from geochange.io.stack import open_stack
from geochange.pipeline import detect
from geochange.synth import load_pair, make_scene, semi_synthetic, write_scene

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = ROOT.parent / "shared" / "data" / "real_samples"
METHODS: tuple[str, ...] = ("cnn-lstm", "cva", "irmad", "diff")
#: Probability from which a pixel counts as change (the ``geochange detect`` default).
THRESHOLD = 0.5
#: Dates given to real pairs whose metadata has none (PNG pairs); they only order t0 before t1.
PLACEHOLDER_DATES = ("2000-01-01", "2001-01-01")


@dataclass
class Case:
    """One scored scene.

    Attributes:
        group: table group, e.g. "synthetic low", "semi-synthetic", "real pair".
        name: sample name, e.g. "seed 5000" or "oscd_paris".
        paths: one GeoTIFF per date, sorted by date.
        dates: ISO dates, one per path.
        ref: (h, w) bool reference change.
        labelled: (h, w) bool pixels with a reference label (not 255).
        ref_date: (h, w) uint8 reference date index (0 none, 1..T-1, 255 unknown) or None.
        info: free description for the tables (size, bands, dates, seed, micro objects).
        masks: the scene's cloud masks (one band per date) where known, for ``use_masks``.
    """

    group: str
    name: str
    paths: list[Path]
    dates: list[str]
    ref: np.ndarray
    labelled: np.ndarray
    ref_date: np.ndarray | None
    info: dict[str, Any]
    masks: Path | None = None


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


def synthetic_case(
    tmp: Path, *, seed: int, nuisance: str, size: int, dates: int, bands: int, group: str
) -> Case:
    """A held-out synthetic scene (``make_scene``) written as dated GeoTIFFs under ``tmp``."""
    scene = make_scene(size=size, dates=dates, bands=bands, seed=seed, nuisance=nuisance)  # type: ignore[arg-type]
    out = write_scene(scene, tmp / f"synth_{nuisance}_{seed}")
    return Case(
        group=group,
        name=f"seed {seed}",
        paths=list(out["images"]),  # type: ignore[arg-type]
        dates=[d.isoformat() for d in scene.dates],
        ref=scene.change == 1,
        labelled=scene.change != 255,
        ref_date=scene.date_index.copy(),
        info={
            "size": f"{size}x{size}",
            "dates": dates,
            "bands": bands,
            "seed": seed,
            "nuisance": nuisance,
            "changed %": round(100 * float(scene.change.mean()), 2),
            "changes": len(scene.changes),
            "micro": int(scene.changes.micro.sum()),
        },
        masks=Path(out["clouds"]),  # type: ignore[arg-type]
    )


def sample_dirs(names: Sequence[str] | None = None) -> list[Path]:
    """Real sample folders (sorted), optionally only those named."""
    if not REAL_SAMPLES.is_dir():
        return []
    dirs = sorted(p for p in REAL_SAMPLES.iterdir() if p.is_dir() and (p / "meta.json").exists())
    if names is not None:
        dirs = [d for d in dirs if d.name in set(names)]
    return dirs


def _crop(arrs: list[np.ndarray], crop: int | None) -> list[np.ndarray]:
    """Centre crop of (…, h, w) arrays to at most ``crop`` pixels square (quick runs)."""
    if crop is None:
        return arrs
    h, w = arrs[0].shape[-2:]
    y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    return [a[..., y0 : y0 + crop, x0 : x0 + crop] for a in arrs]


def _crop_grid(grid: GridSpec | None, shape: tuple[int, int], full: tuple[int, int]) -> Any:
    if grid is None:
        return None
    y0, x0 = max(0, (full[0] - shape[0]) // 2), max(0, (full[1] - shape[1]) // 2)
    t = grid.transform
    moved = Affine(t.a, t.b, t.c + t.a * x0 + t.b * y0, t.d, t.e, t.f + t.d * x0 + t.e * y0)
    return GridSpec(grid.crs, moved, shape[0], shape[1], grid.nodata)


def _load(sample: Path, crop: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    t0, t1, label, grid = load_pair(sample)
    full = label.shape
    t0, t1, label = _crop([t0, t1, label], crop)
    return t0, t1, label, _crop_grid(grid, label.shape, full)


def semi_case(
    tmp: Path, sample: Path, *, seed: int, dates: int, nuisance: str, crop: int | None = None
) -> Case:
    """A semi-synthetic ``dates``-date series built from a real pair (``semi_synthetic``)."""
    t0, t1, label, grid = _load(sample, crop)
    scene = semi_synthetic(t0, t1, label, dates=dates, seed=seed, nuisance=nuisance, grid=grid)  # type: ignore[arg-type]
    out = write_scene(scene, tmp / f"semi{dates}_{sample.name}")
    k = int(scene.date_index[scene.change == 1].max()) if (scene.change == 1).any() else 0
    return Case(
        group="semi-synthetic",
        name=sample.name,
        paths=list(out["images"]),  # type: ignore[arg-type]
        dates=[d.isoformat() for d in scene.dates],
        ref=scene.change == 1,
        labelled=scene.change != 255,
        ref_date=scene.date_index.copy(),
        info={
            "size": f"{label.shape[1]}x{label.shape[0]}",
            "dates": dates,
            "bands": int(t0.shape[0]),
            "seed": seed,
            "nuisance": nuisance,
            "change date index": k,
        },
        masks=Path(out["clouds"]),  # type: ignore[arg-type]
    )


def _pair_dates(sample: Path) -> list[str]:
    meta = json.loads((sample / "meta.json").read_text())
    raw = meta.get("dates")
    if not raw or len(raw) != 2:
        return list(PLACEHOLDER_DATES)
    return [dt.datetime.strptime(str(d), "%Y%m%d").date().isoformat() for d in raw]


#: Band centres (nm) of the real samples' sensors, by sample-name prefix (from their meta.json
#: band lists): what a user passes as ``--wavelengths`` or finds in the band descriptions.
SENSOR_WAVELENGTHS = {
    "oscd": (490.0, 560.0, 665.0, 842.0),  # Sentinel-2 B02, B03, B04, B08
    "landsat": (485.0, 560.0, 660.0, 830.0, 1650.0, 2215.0),  # TM/ETM+ 1, 2, 3, 4, 5, 7
    "dsifn": (665.0, 560.0, 490.0),  # RGB PNG: red, green, blue
}


def real_case(
    tmp: Path, sample: Path, *, crop: int | None = None, wavelengths: bool = True
) -> Case:
    """A real labelled pair as it is: t0 and t1 written as GeoTIFFs in their source dtype.

    Georeferenced pairs keep their grid; PNG pairs get a local stand-in grid (EPSG:32633, 1 m),
    which changes nothing for per-pixel scoring. With ``wavelengths`` the files carry their
    sensor's band centres (``WAVELENGTHS_NM`` tag, :data:`SENSOR_WAVELENGTHS`); without, the
    bands are unknown to the model.
    """
    t0, t1, label, grid = _load(sample, crop)
    c, h, w = t0.shape
    if grid is None:
        grid = GridSpec(CRS.from_epsg(32633), Affine(1.0, 0, 500000.0, 0, -1.0, 0.0), h, w, None)
    dates = _pair_dates(sample)
    folder = tmp / f"real_{sample.name}{'' if wavelengths else '_nowl'}"
    folder.mkdir(parents=True, exist_ok=True)
    tags = {}
    wl = SENSOR_WAVELENGTHS.get(sample.name.split("_")[0])
    if wavelengths and wl is not None and len(wl) == c:
        tags["WAVELENGTHS_NM"] = ",".join(f"{v:g}" for v in wl)
    paths = []
    for img, d in zip((t0, t1), dates):
        path = folder / f"{sample.name}_{d.replace('-', '')}.tif"
        profile = grid.profile(count=c, dtype=img.dtype.name, nodata=None)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(img)
            dst.update_tags(ACQUISITION_DATE=d, **tags)
        paths.append(path)
    labelled = label != 255
    return Case(
        group="real pair",
        name=sample.name,
        paths=paths,
        dates=dates,
        ref=label == 1,
        labelled=labelled,
        ref_date=None,
        info={
            "size": f"{w}x{h}",
            "dates": 2,
            "bands": c,
            "dtype": img.dtype.name,
            "wavelengths nm": tags.get("WAVELENGTHS_NM", "unknown"),
            "labelled %": round(100 * float(labelled.mean()), 1),
            "changed % of labelled": round(100 * float((label == 1).sum() / labelled.sum()), 2),
        },
    )


# --------------------------------------------------------------------------------------------
# Running and scoring
# --------------------------------------------------------------------------------------------


def run_method(
    method: str,
    case: Case,
    *,
    model: str | None = None,
    chunk_size: int = 256,
    use_masks: bool = False,
    skip: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Run ``method`` on a case as ``geochange detect`` does (:func:`geochange.detect`, in memory).

    ``use_masks`` gives the case's cloud masks (``detect --masks``; the cloud screen then stays
    off); ``skip`` leaves stages out (``detect --skip``). Every other stage runs as by default.

    Returns:
        prob (h, w) float32 (NaN = nodata), interval (h, w) float32 (k in 0..T-2), seconds,
        halo in pixels.
    """
    start = time.perf_counter()
    if use_masks and case.masks is None:
        raise ValueError(f"{case.name}: no cloud masks known for this case")
    masks = case.masks if use_masks else None
    stack = open_stack(case.paths, dates=case.dates, chunk_size=chunk_size, masks=masks)
    options: dict[str, Any] = {"model": model, "device": "cpu"} if method == "cnn-lstm" else {}
    result = detect(stack, None, method=method, skip=tuple(skip), chunk_size=chunk_size, **options)
    prob = np.asarray(result.prob.compute())
    chain_interval = _interval(result.date_index.compute(), prob)
    return prob, chain_interval, time.perf_counter() - start, int(result.run["halo"])


def _interval(date_index: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Interval k (0..T-2) from the date raster where it shows a change, else 0; NaN = nodata."""
    k = np.where((date_index > 0) & (date_index < 255), date_index.astype(np.float32) - 1, 0.0)
    return np.where(np.isnan(prob), np.nan, k).astype(np.float32)


def score(prob: np.ndarray, interval: np.ndarray, case: Case) -> dict[str, Any]:
    """Metrics of one run against the case's reference (``evaluate_arrays``), flattened.

    Returns:
        Scores ``f1, precision, recall, iou, kappa, obj_f1, micro_recall, date_exact,
        date_within_one, false_alarm`` (fractions; NaN when undefined) and the counts behind them
        (``tp, fp, fn, tn, micro_n, micro_det, date_n, date_ok``) for pooling over cases.
    """
    mapped = ~np.isnan(prob)
    pred = np.nan_to_num(prob, nan=0.0) >= THRESHOLD
    pred_date = None
    if case.ref_date is not None:
        pred_date = np.where(pred, np.nan_to_num(interval, nan=-1.0) + 1, 0).astype(np.int16)
    r = evaluate_arrays(
        pred,
        case.ref,
        valid=case.labelled,
        mapped=mapped,
        pred_date=pred_date,
        ref_date=case.ref_date,
    )
    px, ob = r["pixel"], r["object"]
    micro = ob["by_size"]["micro"]
    date = r["date"]
    out = {
        "f1": px["f1"],
        "precision": px["precision"],
        "recall": px["recall"],
        "iou": px["iou"],
        "kappa": px["kappa"],
        "obj_f1": ob["f1"],
        "micro_recall": micro["recall"],
        "false_alarm": px["fp"] / (px["fp"] + px["tn"]) if (px["fp"] + px["tn"]) else np.nan,
        "date_exact": date["exact"] if date else np.nan,
        "date_within_one": date["within_one"] if date else np.nan,
        "tp": px["tp"],
        "fp": px["fp"],
        "fn": px["fn"],
        "tn": px["tn"],
        "micro_n": micro["n_ref"],
        "micro_det": micro["detected"],
        "date_n": date["n"] if date else 0,
        "date_ok": int(round(date["exact"] * date["n"])) if date and date["n"] else 0,
    }
    return {k: (float(v) if isinstance(v, float) else v) for k, v in out.items()}


def pooled(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Scores from confusion counts summed over cases (micro average)."""
    s = {k: sum(int(r[k]) for r in rows) for k in ("tp", "fp", "fn", "tn", "micro_n", "micro_det")}
    s.update({k: sum(int(r[k]) for r in rows) for k in ("date_n", "date_ok")})

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {
        "f1": ratio(2 * s["tp"], 2 * s["tp"] + s["fp"] + s["fn"]),
        "precision": ratio(s["tp"], s["tp"] + s["fp"]),
        "recall": ratio(s["tp"], s["tp"] + s["fn"]),
        "false_alarm": ratio(s["fp"], s["fp"] + s["tn"]),
        "date_exact": ratio(s["date_ok"], s["date_n"]),
        "micro_recall": ratio(s["micro_det"], s["micro_n"]),
        "micro_n": s["micro_n"],
    }


# --------------------------------------------------------------------------------------------
# Provenance and formatting
# --------------------------------------------------------------------------------------------


def git_commit() -> str:
    """HEAD commit, with a note when the package (weights included) or the benchmark scripts
    differ from it; the reports and figures a benchmark writes do not count."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "geochange",
                "benchmarks/*.py",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" (with uncommitted changes to geochange/ or benchmarks/*.py)" if dirty else "")


def machine() -> str:
    """CPU model, cores, OS and library versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
    )


def model_description(model: str | None) -> tuple[Path, str]:
    """(checkpoint path, "name, sha256 prefix") of the model cnn-lstm would use."""
    from geochange.model import DEFAULT_MODEL_PATH

    path = Path(model) if model else DEFAULT_MODEL_PATH
    if not path.is_file():
        return path, "missing"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    try:
        rel = path.resolve().relative_to(ROOT)
    except ValueError:
        rel = path
    return path, f"{rel} (sha256 {digest}…)"


def fmt(v: Any, pct: bool = False, digits: int = 3) -> str:
    """A table cell: '–' for NaN/None, percentages with one decimal."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{100 * v:.1f}" if pct else f"{v:.{digits}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def gdal_cache_workaround() -> str | None:
    """Fix a too-small GDAL block cache in ``read.GDAL_ENV`` for this process; say so.

    ``rasterio.Env(GDAL_CACHEMAX=n)`` takes an integer number of BYTES (it calls
    ``GDALSetCacheMax64``), so ``256`` meant 256 bytes, not 256 MB: every decimated read
    (``read_sample``) then decodes each tile again for every output row, 10-100 s per date of a
    400 px tiled scene instead of milliseconds. Results are unchanged; only time is lost. Until
    geochange/io/read.py sets it in bytes, the benchmarks raise it here and report it.
    """
    from geochange.io import read

    value = read.GDAL_ENV.get("GDAL_CACHEMAX")
    if isinstance(value, int) and value < 2**20:
        read.GDAL_ENV["GDAL_CACHEMAX"] = 256 * 2**20
        return (
            f"geochange.io.read.GDAL_ENV['GDAL_CACHEMAX'] = {value} is read by rasterio as bytes; "
            "this run set it to 256 MiB (268435456) to avoid 10-100 s per decimated read. "
            "Numbers are unaffected."
        )
    return None


def setup_determinism(threads: int) -> None:
    """Fixed torch threads, deterministic algorithms, numpy/torch seeds."""
    import torch

    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    np.random.seed(0)
