"""Teaching from a few examples (`--examples`): F1 on the real pairs outside the examples.

From the repository root::

    python benchmarks/fewshot.py            # all nine pairs, 2 seeds (about 40 min on 2 cores)
    python benchmarks/fewshot.py --quick    # 3 pairs, 1 seed, fewer steps, no timing run

For each real pair of ../shared/data/real_samples and each seed, two ways a user gives examples
are simulated from the reference labels and written as a GeoPackage that
``geochange.io.examples.read_examples`` reads back, as ``--examples`` does:

(a) one square block of about 10 % of the scene, reviewed completely (a ``labelled`` layer,
    less the reference's unlabelled pixels) with the reference change inside it as change
    polygons, placed at random where it holds change;
(b) 10 change polygons (whole reference objects of at least 4 px, at random; at most half of
    the pair's objects, so that change remains to be scored) and 10 no-change squares of
    8 x 8 px at random.

Scored only outside the examples, with a 3-px ring around them left out, over the reference's
labelled pixels. Side by side: zero-shot (the shipped model, threshold 0.5), ``--adapt``
(``geochange adapt`` without labels, seed 0, the budget below), ``--examples`` (teach_network
with the steps below, threshold from the examples), CVA-Otsu, and a random forest
(scikit-learn; 100 trees) trained on the same example pixels with the two dates' bands and
their difference as features, threshold 0.5.

The taught and zero-shot probabilities are computed in memory from the frozen backbone's output
over the whole scene and the refinement ``detect`` applies (the report gives the largest
difference to a tiled ``detect``-equivalent run); ``--adapt`` and CVA run as ``detect`` does
(``_common.run_method``). Real data never trains the shipped weights; the taught models stay in
a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

#: Results so far, rewritten after every run: ``--report-from`` writes the report from them.
ROWS = Path(tempfile.gettempdir()) / "geochange-fewshot-rows.json"
QUICK_PAIRS = ("dsifn_0_2", "landsat_taizhou", "oscd_rennes")
GROUPS = ("dsifn", "landsat", "oscd")


# --------------------------------------------------------------------------------------------
# Examples as a user would give them


def _polygons(mask: np.ndarray, grid) -> list:
    import shapely.geometry
    from rasterio.features import shapes

    return [
        shapely.geometry.shape(g)
        for g, v in shapes(
            mask.astype(np.uint8), mask=mask, transform=grid.transform, connectivity=4
        )
        if v == 1
    ]


def _write(path: Path, layers: dict[str, tuple[list, list | None]], grid) -> Path:
    import geopandas as gpd

    for name, (geoms, change) in layers.items():
        cols = {} if change is None else {"change": change}
        gpd.GeoDataFrame(cols, geometry=geoms, crs=grid.crs).to_file(
            path, layer=name, driver="GPKG", engine="pyogrio"
        )
    return path


def examples_block(case: C.Case, grid, rng: np.random.Generator, path: Path) -> Path:
    """(a): one square block of ~10 % of the scene holding change, reviewed completely."""
    h, w = case.ref.shape
    side = int(round(np.sqrt(0.1 * h * w)))
    best, best_lab = None, -1.0
    for _ in range(2000):
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        sl = (slice(y0, y0 + side), slice(x0, x0 + side))
        lab = float(case.labelled[sl].mean())
        if (case.ref[sl] & case.labelled[sl]).sum() < 0.01 * side * side:
            continue
        if lab >= 0.95:
            best = sl
            break
        if lab > best_lab:
            best, best_lab = sl, lab
    if best is None:
        raise SystemExit(f"{case.name}: no block of {side} px holds change")
    block = np.zeros((h, w), bool)
    block[best] = True
    reviewed = block & case.labelled
    change = reviewed & case.ref
    polys = _polygons(change, grid)
    return _write(
        path,
        {"examples": (polys, [1] * len(polys)), "labelled": (_polygons(reviewed, grid), None)},
        grid,
    )


def examples_polygons(
    case: C.Case, grid, rng: np.random.Generator, path: Path, n: int = 10, square: int = 8
) -> Path:
    """(b): ``n`` whole reference change objects (>= 4 px) and ``n`` no-change squares."""
    ids, m = ndimage.label(case.ref & case.labelled, structure=np.ones((3, 3), bool))
    sizes = np.bincount(ids.ravel(), minlength=m + 1)
    cand = np.flatnonzero(sizes >= 4)
    cand = cand[cand > 0]
    # At most half of the objects, so that change remains outside the examples to score.
    pick = rng.choice(cand, size=min(n, cand.size // 2), replace=False)
    change = np.isin(ids, pick)
    near = ndimage.binary_dilation(change, iterations=3)
    quiet = case.labelled & ~case.ref & ~near
    ok = ndimage.minimum_filter(quiet.astype(np.uint8), size=square, origin=(-(square // 2),) * 2)
    ys, xs = np.nonzero(ok[: -square + 1, : -square + 1])
    squares = np.zeros_like(change)
    for j in rng.permutation(ys.size)[: 40 * n]:
        y, x = ys[j], xs[j]
        if squares[max(0, y - 2) : y + square + 2, max(0, x - 2) : x + square + 2].any():
            continue
        squares[y : y + square, x : x + square] = True
        if squares.sum() >= n * square * square:
            break
    cp, sp = _polygons(change, grid), _polygons(squares, grid)
    return _write(path, {"examples": (cp + sp, [1] * len(cp) + [0] * len(sp))}, grid)


# --------------------------------------------------------------------------------------------
# Methods


class SceneModel:
    """The frozen backbone's output over a whole scene, to score any taught heads on it."""

    def __init__(self, stack, base) -> None:
        from geochange.bands import wavelength_array
        from geochange.io.read import read_sample
        from geochange.model.fewshot import _run_backbone
        from geochange.model.normalize import apply
        from geochange.robust import scene_stats

        raw = stack.window(0, 0, *stack.grid.shape)
        self.raw = raw
        self.x, self.valid = apply(raw, scene_stats(read_sample(stack)))
        wl = torch.from_numpy(wavelength_array(stack.wavelengths, stack.band_count)[None])
        self.cache = _run_backbone(base, self.x, self.valid, wl, "cpu")

    def prob(self, net) -> np.ndarray:
        from geochange.model.fewshot import _heads
        from geochange.stages.refine import refine

        with torch.inference_mode():
            logit, _ = _heads(net, *self.cache)
            p = torch.sigmoid(logit)[0].numpy().astype(np.float32)
        return refine(p, self.x, self.valid)


def random_forest(raw: np.ndarray, label: np.ndarray, seed: int) -> np.ndarray:
    """P(change) of a random forest on (t0 bands, t1 bands, t1 - t0) trained on the examples."""
    from sklearn.ensemble import RandomForestClassifier

    a, b = raw[0].astype(np.float32), raw[-1].astype(np.float32)
    feats = np.concatenate([a, b, b - a]).reshape(3 * a.shape[0], -1).T
    feats = np.nan_to_num(feats)
    idx = np.flatnonzero(label.ravel() != 255)
    rng = np.random.default_rng(seed)
    if idx.size > 20000:
        idx = rng.choice(idx, 20000, replace=False)
    y = label.ravel()[idx] == 1
    if y.all():
        return np.ones(label.shape, np.float32)
    rf = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=1, random_state=seed)
    rf.fit(feats[idx], y)
    return rf.predict_proba(feats)[:, 1].reshape(label.shape).astype(np.float32)


def prf(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    q, y = pred[mask], ref[mask]
    tp, fp, fn = float((q & y).sum()), float((q & ~y).sum()), float((~q & y).sum())
    return {
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }


# --------------------------------------------------------------------------------------------
# Timing: a 512² two-date scene taught and detected as a user would


def time_scene(tmp: Path, minutes: float | None) -> dict:
    from geochange.io.examples import read_examples
    from geochange.io.stack import open_stack
    from geochange.model.fewshot import teach
    from geochange.pipeline import detect
    from geochange.stages.coregister import coregister
    from geochange.synth import make_scene, write_scene

    scene = make_scene(size=512, dates=2, bands=4, seed=5100, nuisance="medium")
    out = write_scene(scene, tmp / "timing")
    case = C.Case("timing", "synthetic 512", list(out["images"]), [d.isoformat() for d in scene.dates],
                  scene.change == 1, scene.change != 255, None, {})  # fmt: skip
    start = time.perf_counter()
    stack = coregister(open_stack(case.paths, dates=case.dates))
    ex = read_examples(examples_polygons(case, stack.grid, np.random.default_rng(0),
                                         tmp / "timing.gpkg"), stack.grid)  # fmt: skip
    ckpt, meta = teach(stack, ex, tmp / "timing.ckpt", minutes=minutes)
    taught = time.perf_counter() - start
    detect(stack, tmp / "timing_out.gpkg", model=ckpt, threshold=meta["threshold"], quicklook=False)
    total = time.perf_counter() - start
    return {"teach_s": taught, "total_s": total, "steps": meta["steps_done"], "cv": meta["cv"]}


# --------------------------------------------------------------------------------------------
# The README's picture: a synthetic scene where only new construction counts as change


def figure(out: Path, tmp: Path) -> None:
    """docs/fewshot.png: examples, zero-shot and taught detections on a synthetic scene where
    the user counts new construction as change and cleared fields as no change."""
    import geopandas as gpd
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rasterio.features import rasterize

    from geochange.io.examples import read_examples
    from geochange.io.stack import open_stack
    from geochange.model.fewshot import teach
    from geochange.pipeline import detect
    from geochange.stages.coregister import coregister
    from geochange.synth import make_scene, write_scene

    scene = make_scene(size=192, dates=2, bands=4, seed=5010, nuisance="low")
    images = write_scene(scene, tmp / "figure")["images"]
    ch = scene.changes
    build = ch[ch.kind.isin(("building", "small_object", "moved_object", "road"))]
    clear = ch[ch.kind.isin(("clearing", "water_rise", "water_fall"))]
    ex = gpd.GeoDataFrame(
        {"change": [1] * len(build.iloc[::2]) + [0] * len(clear.iloc[::2])},
        geometry=list(build.geometry.iloc[::2]) + list(clear.geometry.iloc[::2]),
        crs=ch.crs,
    )
    path = tmp / "figure_examples.gpkg"
    ex.to_file(path, layer="examples", driver="GPKG")
    stack = coregister(open_stack(images))
    examples = read_examples(path, stack.grid)
    ckpt, meta = teach(stack, examples, tmp / "figure.ckpt", seed=0, device="cpu")
    zero = np.asarray(detect(stack, None, quicklook=False).prob) >= 0.5
    taught = np.asarray(detect(stack, None, model=ckpt, quicklook=False).prob) >= meta["threshold"]
    g = scene.grid
    truth = rasterize([(p, 1) for p in build.geometry], out_shape=g.shape, transform=g.transform)
    img = scene.images[-1][[2, 1, 0]].astype(np.float32)
    lo, hi = np.percentile(img, (2, 98))
    rgb = np.clip((img - lo) / (hi - lo), 0, 1).transpose(1, 2, 0)
    lab = examples.label
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    panels = [
        ("examples: change (green), not change (red)", None),
        ("zero-shot: every change", zero),
        (f"taught (threshold {meta['threshold']:.2f})", taught),
        ("what the user calls change", truth.astype(bool)),
    ]
    for ax, (title, mask) in zip(axes, panels):
        ax.imshow(rgb)
        if mask is None:
            over = np.zeros((*lab.shape, 4))
            over[lab == 1] = (0.1, 0.9, 0.2, 0.7)
            over[lab == 0] = (0.95, 0.1, 0.1, 0.7)
        else:
            over = np.zeros((*mask.shape, 4))
            over[mask] = (1.0, 0.85, 0.0, 0.75)
        ax.imshow(over)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(
        "New construction is change, cleared fields are not (synthetic scene)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"[fewshot] wrote {out}")


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 pairs, 1 seed, 20 steps, no timing")
    ap.add_argument("--pairs", nargs="*", default=None, help="real pairs (default: all)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None,
                    help="head steps per fit (folds and final); default: the product's")  # fmt: skip
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--adapt-minutes", type=float, default=0.5, help="0 = no --adapt column")
    ap.add_argument("--no-timing", action="store_true", help="skip the 512² timing run")
    ap.add_argument("--resume", action="store_true",
                    help=f"keep the pairs an interrupted run finished ({ROWS})")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=C.ROOT / "benchmarks" / "FEWSHOT.md")
    ap.add_argument("--figure", type=Path, default=None,
                    help="only draw the README picture (e.g. docs/fewshot.png) and stop")  # fmt: skip
    ap.add_argument("--report-from", type=Path, default=None,
                    help=f"write the report from saved results ({ROWS}) without running")  # fmt: skip
    args = ap.parse_args(argv)
    if args.report_from is not None:
        saved = json.loads(args.report_from.read_text())
        write_report(
            args, argv, saved["rows"], saved.get("timing"), saved["check"], float("nan"), None
        )
        return 0
    if args.figure is not None:
        with tempfile.TemporaryDirectory(prefix="geochange-fewshot-") as tmp_:
            figure(args.figure, Path(tmp_))
        return 0
    if args.quick:
        args.pairs = args.pairs or list(QUICK_PAIRS)
        args.seeds, args.steps, args.no_timing = 1, 20, True
        args.adapt_minutes = min(args.adapt_minutes, 0.25)
    if args.steps is None:
        import inspect

        from geochange.model.fewshot import teach_network as _tn

        args.steps = int(inspect.signature(_tn).parameters["steps"].default)
    C.setup_determinism(args.threads)
    torch.use_deterministic_algorithms(False)
    note = C.gdal_cache_workaround()
    from geochange.io.examples import read_examples
    from geochange.io.stack import open_stack
    from geochange.model import load_model
    from geochange.model.adapt import adapt
    from geochange.model.fewshot import teach_network
    from geochange.stages.coregister import coregister

    start = time.perf_counter()
    samples = C.sample_dirs(args.pairs)
    if not samples:
        raise SystemExit(f"no real samples under {C.REAL_SAMPLES}")
    base, _ = load_model()
    rows: list[dict] = []
    check = None
    if args.resume and ROWS.is_file():  # pairs finished by an earlier run of the same command
        saved = json.loads(ROWS.read_text())
        whole = {p for p in {r["pair"] for r in saved["rows"]}
                 if sum(r["pair"] == p for r in saved["rows"]) == 2 * args.seeds}  # fmt: skip
        rows = [r for r in saved["rows"] if r["pair"] in whole]
        check = saved.get("check")
        samples = [s for s in samples if s.name not in whole]
        print(f"[fewshot] resumed: {sorted(whole)} done", flush=True)
    with tempfile.TemporaryDirectory(prefix="geochange-fewshot-") as tmp_:
        tmp = Path(tmp_)
        for s in samples:
            case = C.real_case(tmp, s)
            stack = coregister(open_stack(case.paths, dates=case.dates))
            scene = SceneModel(stack, base)
            zero = scene.prob(base)
            if check is None:
                tiled = C.run_method("cnn-lstm", case)[0]
                check = float(np.nanmax(np.abs(tiled - zero)))
            cva = C.run_method("cva", case)[0]
            adapted = None
            if args.adapt_minutes > 0:
                ck = adapt(stack, tmp / f"adapt_{s.name}.ckpt", minutes=args.adapt_minutes, seed=0)
                adapted = C.run_method("cnn-lstm", case, model=str(ck))[0]
            for setting, make in (("a", examples_block), ("b", examples_polygons)):
                for seed in range(args.seeds):
                    rng = np.random.default_rng([seed, 23, ord(setting)])
                    path = make(case, stack.grid, rng, tmp / f"ex_{s.name}_{setting}{seed}.gpkg")
                    ex = read_examples(path, stack.grid)
                    t0 = time.perf_counter()
                    res = teach_network(stack, ex, steps=args.steps, folds=args.folds, seed=seed,
                                        minutes=60.0, device="cpu")  # fmt: skip
                    secs = time.perf_counter() - t0
                    taught = scene.prob(res.net)
                    rf = random_forest(scene.raw, ex.label, seed)
                    mask = case.labelled & ~ndimage.binary_dilation(ex.label != 255, iterations=3)
                    preds = {
                        "cva": np.nan_to_num(cva) >= 0.5,
                        "zero": zero >= 0.5,
                        "rf": rf >= 0.5,
                        "taught": taught >= res.threshold,
                        "taught05": taught >= 0.5,
                    }
                    if adapted is not None:
                        preds["adapt"] = np.nan_to_num(adapted) >= 0.5
                    row = {
                        "pair": s.name,
                        "setting": setting,
                        "seed": seed,
                        "seconds": secs,
                        "threshold": res.threshold,
                        "cv": res.info["cv"],
                        "n_change_px": ex.change_pixels,
                        "n_no_change_px": ex.no_change_pixels,
                        "scored_px": int(mask.sum()),
                        **{k: prf(v, case.ref, mask) for k, v in preds.items()},
                    }
                    rows.append(row)
                    ROWS.write_text(json.dumps({"rows": rows, "check": check}))
                    print(f"[fewshot] {s.name} ({setting}, seed {seed}): zero "
                          f"{row['zero']['f1']:.3f} rf {row['rf']['f1']:.3f} cva "
                          f"{row['cva']['f1']:.3f} taught {row['taught']['f1']:.3f} "
                          f"(thr {res.threshold:.2f}, cv {res.info['cv'].get('f1')}, "
                          f"{secs:.0f} s)", flush=True)  # fmt: skip
        timing = None if args.no_timing else time_scene(tmp, None)
        ROWS.write_text(json.dumps({"rows": rows, "check": check, "timing": timing}))
    wall = (time.perf_counter() - start) / 60
    write_report(args, argv, rows, timing, check, wall, note)
    return 0


def _mean(rows, setting, key, names=None, field="f1"):
    v = [
        r[key][field]
        for r in rows
        if r["setting"] == setting and (names is None or r["pair"] in names)
    ]
    return float(np.nanmean(v)) if v else float("nan")


def write_report(args, argv, rows, timing, check, wall, note) -> None:
    methods = [("cva", "CVA-Otsu"), ("zero", "zero-shot"), ("adapt", "--adapt"), ("rf", "random forest"),
               ("taught05", "--examples @0.5"), ("taught", "--examples")]  # fmt: skip
    methods = [m for m in methods if any(m[0] in r for r in rows)]
    pairs = sorted({r["pair"] for r in rows})
    lines = [
        "# Teaching from a few examples (`--examples`): F1 outside the examples on the real pairs",
        "",
        "Generated by `benchmarks/fewshot.py`; do not edit by hand.",
        "",
        f"- Command: `python benchmarks/fewshot.py {shlex.join(argv or sys.argv[1:])}`".rstrip(),
        f"- Git commit: {C.git_commit()}",
        f"- Machine: {C.machine()}; {args.threads} torch threads. Total wall time {wall:.1f} min; "
        f"load average at the end {os.getloadavg()[0]:.1f} (the 2 cores are shared).",
        f"- Teaching budget per run: {args.steps} head steps per fit, then the spectral term's "
        f"pixel-wise fit; k = {args.folds} blocked folds + the final fit, "
        f"{np.mean([r['seconds'] for r in rows]):.0f} s per run on average. Seeds: "
        f"{args.seeds}. `--adapt`: {args.adapt_minutes} min, seed 0.",
        "- (a) one square block of ~10 % of the scene reviewed completely (less the reference's unlabelled pixels), placed at random where "
        "it holds change; (b) 10 whole reference change objects (>= 4 px; at most half of the pair's objects) + 10 no-change 8 x 8 "
        "squares at random. Scored outside the examples with a 3-px ring left out, over labelled "
        "pixels; F1 of the change class, mean over seeds (± sd for `--examples`).",
        "- `--examples` uses the threshold chosen from the examples (stored in the checkpoint); "
        "`--examples @0.5` is the same model at 0.5. CV = the blocked cross-validation's expected "
        "F1 as the product prints it (mean over seeds; – = too few examples).",
        f"- Taught/zero-shot probabilities from the cached backbone: largest difference to a tiled "
        f"`detect`-equivalent run on the first pair {check:.2g}.",
    ]
    if note:
        lines.append(f"- Note: {note}")
    lines.append("")
    header, lines = lines, []
    a_all = _mean(rows, "a", "taught")
    for setting in ("a", "b"):
        lines += [f"## ({setting}) " + ("one reviewed block" if setting == "a" else
                                         "10 change polygons + 10 no-change squares"), ""]  # fmt: skip
        table = []
        for p in pairs:
            rr = [r for r in rows if r["pair"] == p and r["setting"] == setting]
            cells = [p]
            for key, _ in methods:
                v = [r[key]["f1"] for r in rr]
                cells.append(
                    C.fmt(float(np.nanmean(v)))
                    + (f" ± {np.nanstd(v):.3f}" if key == "taught" and len(v) > 1 else "")
                )
            cvs = [r["cv"].get("f1") for r in rr if r["cv"].get("f1") is not None]
            cells.append(C.fmt(float(np.mean(cvs))) if cvs else "–")
            cells.append(f"{np.nanmean([r['taught']['f1'] - r['zero']['f1'] for r in rr]):+.3f}")
            cells.append(f"{np.mean([r['threshold'] for r in rr]):.2f}")
            table.append(cells)
        means = ["**mean**"] + [C.fmt(_mean(rows, setting, k)) for k, _ in methods] + ["", "", ""]
        table.append(means)
        for g in GROUPS:
            names = {p for p in pairs if p.startswith(g)}
            if names:
                table.append(
                    [f"mean {g} ({len(names)})"]
                    + [C.fmt(_mean(rows, setting, k, names)) for k, _ in methods]
                    + ["", "", ""]
                )
        lines += C.md_table(
            ["pair"] + [m[1] for m in methods] + ["CV estimate", "Δ vs zero-shot", "threshold"],
            table,
        )
        pr = [
            ["P / R"]
            + [
                f"{_mean(rows, setting, k, field='precision'):.2f} / {_mean(rows, setting, k, field='recall'):.2f}"
                for k, _ in methods
            ]
        ]
        lines += [""] + C.md_table(["mean"] + [m[1] for m in methods], pr) + [""]
        gaps = [
            r["cv"]["f1"] - r["taught"]["f1"]
            for r in rows
            if r["setting"] == setting and r["cv"].get("f1") is not None
        ]
        if gaps:
            lines += [
                f"CV estimate against the F1 measured outside the examples, per run: mean absolute "
                f"difference {np.mean(np.abs(gaps)):.3f}, mean difference (estimate − measured) "
                f"{np.mean(gaps):+.3f} ({len(gaps)} runs).",
                "",
            ]
    oscd = {p for p in pairs if p.startswith("oscd")}
    drops = {
        p: min(r["taught"]["f1"] - r["zero"]["f1"] for r in rows if r["pair"] == p) for p in pairs
    }
    worst = min(drops, key=drops.get)
    verdict = [
        ["(a) mean F1 ≥ 0.55", f"{a_all:.3f}", "PASS" if a_all >= 0.55 else "FAIL"],
        ["(a) OSCD mean F1 ≥ 0.45", f"{_mean(rows, 'a', 'taught', oscd):.3f}",
         "PASS" if _mean(rows, "a", "taught", oscd) >= 0.45 else "FAIL"],
        ["(a) ≥ 0.15 above zero-shot", f"{a_all - _mean(rows, 'a', 'zero'):+.3f}",
         "PASS" if a_all - _mean(rows, "a", "zero") >= 0.15 else "FAIL"],
        ["(a) ≥ 0.15 above the random forest", f"{a_all - _mean(rows, 'a', 'rf'):+.3f}",
         "PASS" if a_all - _mean(rows, "a", "rf") >= 0.15 else "FAIL"],
        ["(b) mean F1 ≥ 0.45", f"{_mean(rows, 'b', 'taught'):.3f}",
         "PASS" if _mean(rows, "b", "taught") >= 0.45 else "FAIL"],
        ["(b) ≥ 0.10 above zero-shot", f"{_mean(rows, 'b', 'taught') - _mean(rows, 'b', 'zero'):+.3f}",
         "PASS" if _mean(rows, "b", "taught") - _mean(rows, "b", "zero") >= 0.10 else "FAIL"],
        ["no pair > 0.05 below zero-shot (worst run)", f"{drops[worst]:+.3f} ({worst})",
         "PASS" if drops[worst] >= -0.05 else "FAIL"],
    ]  # fmt: skip
    if timing:
        verdict.append(["512² 2-date scene taught + detected ≤ 6 min (2 cores)",
                        f"{timing['total_s'] / 60:.1f} min (teach {timing['teach_s'] / 60:.1f})",
                        "PASS" if timing["total_s"] <= 360 else "FAIL"])  # fmt: skip
    head = ["## Verdict (targets on the shared samples)", ""]
    head += C.md_table(["target", "measured", "result"], verdict) + [""]
    if timing:
        head += [f"Timing run: synthetic 512² scene (seed 5100, 2 dates, 4 bands), examples as (b); "
                 f"`read_examples` + `teach` with the product defaults (budget sized to the scene, "
                 f"steps done per fit {timing['steps']}) + `detect`: "
                 f"{timing['total_s']:.0f} s in all. CV estimate there: {timing['cv']}.", ""]  # fmt: skip
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text("\n".join(header + head + lines) + "\n")
    os.replace(tmp, args.out)
    print(f"[fewshot] wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
