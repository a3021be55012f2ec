"""Reports of an evaluation: a readable table and a PNG error map."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from geochange.evaluate.align import PathLike
from geochange.evaluate.scoring import Aligned, pixel_metrics

__all__ = ["error_map", "format_report"]

log = logging.getLogger(__name__)


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, int):
        return f"{v:d}"
    return f"{100 * v:.1f} %" if pct else f"{v:.4g}"


def format_report(result: dict[str, Any]) -> str:
    """A readable multi-line table of :func:`evaluate`'s result."""
    px, ob, ar, n = result["pixel"], result["object"], result["area"], result["pixels"]
    lines = [
        f"prediction: {result['pred']}",
        f"reference:  {result['reference']}",
        f"grid:       {result['grid']}",
        f"pixels:     {n['evaluated']} evaluated, {n['ignored']} ignored (unlabelled), "
        f"{n['pred_nodata']} without prediction",
        "",
        "pixel metrics (change class)",
        f"  TP {px['tp']}  FP {px['fp']}  FN {px['fn']}  TN {px['tn']}",
        f"  precision {_fmt(px['precision'], True)}   recall {_fmt(px['recall'], True)}   "
        f"F1 {_fmt(px['f1'], True)}   IoU {_fmt(px['iou'], True)}",
        f"  kappa {_fmt(px['kappa'])}   overall accuracy {_fmt(px['overall_accuracy'], True)}",
        "",
        "object metrics",
        f"  {'size':<8}{'ref':>6}{'detected':>10}{'recall':>10}{'pred':>6}{'correct':>9}"
        f"{'precision':>11}{'F1':>9}",
    ]
    rows = [("all", ob)] + list(ob["by_size"].items())
    for name, s in rows:
        lines.append(
            f"  {name:<8}{s['n_ref']:>6}{s['detected']:>10}{_fmt(s['recall'], True):>10}"
            f"{s['n_pred']:>6}{s['correct']:>9}{_fmt(s['precision'], True):>11}"
            f"{_fmt(s['f1'], True):>9}"
        )
    lines.append(f"  rule: {ob['rule']}")
    lines.append("")
    if result["date"] is None:
        lines.append("change dates: not scored (no date index on both sides)")
    else:
        d = result["date"]
        lines.append(
            f"change dates on {d['n']} correctly detected pixels: exact {_fmt(d['exact'], True)}, "
            f"within one date {_fmt(d['within_one'], True)} ({d['n_unknown']} unknown)"
        )
    ha = 1e4
    lines += [
        "",
        "area estimates (Olofsson et al. 2014; map classes as strata)",
        f"  user's accuracy change {_fmt(ar['users_accuracy']['change'], True)} "
        f"± {_fmt(1.96 * ar['users_accuracy_se']['change'], True)}, "
        f"producer's {_fmt(ar['producers_accuracy']['change'], True)} "
        f"± {_fmt(1.96 * ar['producers_accuracy_se']['change'], True)}, "
        f"overall {_fmt(ar['overall_accuracy'], True)} ± {_fmt(1.96 * ar['overall_accuracy_se'], True)}",
        f"  mapped change {ar['map_change_area_m2'] / ha:.4g} ha; estimated change "
        f"{ar['change_area_m2'] / ha:.4g} ± {ar['change_area_ci95_m2'] / ha:.4g} ha (95 % CI) "
        f"of {ar['mapped_area_m2'] / ha:.4g} ha mapped",
    ]
    return "\n".join(lines)


def error_map(a: Aligned, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write a PNG map of true positives, false positives and misses on the evaluation grid.

    Colours: true positive green, false positive red, miss (false negative) blue, true negative
    light grey, not evaluated (ignored or unmapped) white. Written under a temporary name, then
    renamed.

    Args:
        a: aligned inputs (:func:`align_inputs`).
        path: .png path.
        overwrite: replace an existing file.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from geochange.io.atomic import atomic_path, check_writable

    path = Path(path)
    check_writable([path], overwrite)
    cls = np.zeros(a.grid.shape, np.uint8)  # 0 not evaluated
    cls[a.valid & ~a.pred & ~a.ref] = 1
    cls[a.valid & a.pred & a.ref] = 2
    cls[a.valid & a.pred & ~a.ref] = 3
    cls[a.valid & ~a.pred & a.ref] = 4
    colours = ["#ffffff", "#d9d9d9", "#1a9850", "#d73027", "#4575b4"]
    labels = ["not evaluated", "true negative", "true positive", "false positive", "miss"]
    counts = [int((cls == i).sum()) for i in range(5)]
    h, w = a.grid.shape
    scale = 6.0 / max(h, w)
    fig = Figure(figsize=(max(w * scale, 3.0) + 2.6, max(h * scale, 3.0)), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.05, 0.62, 0.88))
    ax.imshow(cls, cmap=ListedColormap(colours), vmin=0, vmax=4, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    f1 = pixel_metrics(a.pred, a.ref, a.valid)["f1"]
    ax.set_title(f"change map vs reference (pixel F1 {_fmt(f1, True)})", fontsize=9)
    handles = [
        Patch(facecolor=c, edgecolor="#555555", label=f"{lab} ({n})")
        for c, lab, n in zip(colours, labels, counts)
    ]
    fig.legend(
        handles=handles, loc="center left", bbox_to_anchor=(0.66, 0.5), fontsize=8, frameon=False
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    log.info("wrote %s", path)
    return path
