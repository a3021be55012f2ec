"""Measured quality of every detect method, side by side: writes benchmarks/QUALITY.md.

One command, from the repository root::

    python benchmarks/quality.py            # full run (~10 min on 2 CPU cores)
    python benchmarks/quality.py --quick    # 1 scene per group, 128 px crops: a smoke run

Methods: ``cnn-lstm`` (the shipped default model, skipped with a note while its weights are
absent), ``cva``, ``irmad``, ``diff`` — each run as ``geochange detect`` runs it (scene statistics
fitted once on a decimated sample, then chunk by chunk with the detector's halo), in memory, on
GeoTIFFs written to a temporary folder and opened with ``open_stack``.

Groups:

(a) held-out synthetic scenes (``make_scene``, seeds 5000+, never used in training) at nuisance
    low, medium and high;
(b) semi-synthetic 8-date series (``semi_synthetic``, nuisance medium, seeds 6000+) built from each
    real pair in ../shared/data/real_samples;
(c) those real pairs as they are (2 dates).

The real samples are read from ../shared and never copied into the repository (their licences
are research / non-commercial, see their SOURCES.md). Output: the Markdown report with per-sample
and per-group tables, and ``quality_*.png`` plots beside it. Deterministic: seeds are fixed, torch
uses a fixed number of threads with deterministic algorithms and dask runs synchronously, so a
re-run gives the same numbers (only the timings differ).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

log = logging.getLogger("quality")

LEVELS = ("low", "medium", "high")
SYNTH_SEED = 5000
SEMI_SEED = 6000
SEMI_NUISANCE = "medium"
DATES, BANDS = 8, 4
#: Columns of the per-sample and per-group tables: (key, header, as percent).
COLUMNS = (
    ("f1", "F1", False),
    ("precision", "precision", False),
    ("recall", "recall", False),
    ("iou", "IoU", False),
    ("kappa", "kappa", False),
    ("obj_f1", "object F1", False),
    ("micro_recall", "micro recall", False),
    ("date_exact", "date exact %", True),
)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 scene per group, 128 px: smoke run")
    p.add_argument("--out", default=str(C.ROOT / "benchmarks" / "QUALITY.md"), help="report path")
    p.add_argument("--model", default=None, help="checkpoint for cnn-lstm (default: shipped model)")
    p.add_argument("--scenes", type=int, default=None, help="synthetic scenes per nuisance level")
    p.add_argument("--size", type=int, default=None, help="synthetic scene size in pixels")
    p.add_argument("--samples", nargs="*", default=None, help="only these real sample names")
    p.add_argument("--threads", type=int, default=1, help="torch threads (fixed for determinism)")
    p.add_argument("--chunk-size", type=int, default=256, help="chunk edge in pixels")
    return p.parse_args(argv)


def _quick_samples() -> list[str]:
    """One sample per dataset (first by name): oscd, landsat, dsifn."""
    seen: dict[str, str] = {}
    for d in C.sample_dirs():
        seen.setdefault(d.name.split("_")[0], d.name)
    return list(seen.values())


def build_cases(a: argparse.Namespace, tmp: Path) -> list[C.Case]:
    """All cases of the run, in report order."""
    n = a.scenes or (1 if a.quick else 3)
    size = a.size or (128 if a.quick else 256)
    crop = 128 if a.quick else None
    cases = []
    for level in LEVELS:
        for i in range(n):
            cases.append(
                C.synthetic_case(
                    tmp,
                    seed=SYNTH_SEED + i,
                    nuisance=level,
                    size=size,
                    dates=DATES,
                    bands=BANDS,
                    group=f"synthetic {level}",
                )
            )
    names = a.samples if a.samples is not None else (_quick_samples() if a.quick else None)
    samples = C.sample_dirs(names)
    for i, s in enumerate(samples):
        cases.append(
            C.semi_case(tmp, s, seed=SEMI_SEED + i, dates=DATES, nuisance=SEMI_NUISANCE, crop=crop)
        )
    for s in samples:
        cases.append(C.real_case(tmp, s, crop=crop))
    return cases


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    vals = np.array([r[key] for r in rows], float)
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else float("nan")


def _plots(results: list[dict], groups: list[str], methods: list[str], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"cnn-lstm": "#1b9e77", "cva": "#d95f02", "irmad": "#7570b3", "diff": "#e7298a"}
    written = []
    panels = (
        ("f1", "pixel F1 (change)"),
        ("obj_f1", "object F1"),
        ("micro_recall", "micro-change recall (≤ 9 px)"),
        ("date_exact", "change date exact (on TP pixels)"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(methods))
    for ax, (key, title) in zip(axes.ravel(), panels):
        for j, m in enumerate(methods):
            vals = [
                _mean([r for r in results if r["group"] == g and r["method"] == m], key)
                for g in groups
            ]
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, np.nan_to_num(vals), width,
                   label=m, color=colors.get(m))  # fmt: skip
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(x, groups, rotation=20, ha="right")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    fig.suptitle("geochange methods, mean over samples per group")
    fig.tight_layout()
    path = out_dir / "quality_groups.png"
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    written.append(path.name)

    real = sorted({r["name"] for r in results if r["group"] == "real pair"})
    if real:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
        xs = np.arange(len(real))
        for ax, group in zip(axes, ("real pair", "semi-synthetic")):
            for j, m in enumerate(methods):
                vals = []
                for name in real:
                    row = [r for r in results if r["group"] == group and r["method"] == m
                           and r["name"] == name]  # fmt: skip
                    vals.append(row[0]["f1"] if row else np.nan)
                ax.bar(xs + (j - (len(methods) - 1) / 2) * width, np.nan_to_num(vals), width,
                       label=m, color=colors.get(m))  # fmt: skip
            ax.set_title(f"pixel F1, {group}" + (" (8 dates)" if group != "real pair" else ""))
            ax.set_xticks(xs, real, rotation=30, ha="right")
            ax.set_ylim(0, 1)
            ax.grid(axis="y", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / "quality_real.png"
        fig.savefig(path, dpi=90, metadata={"Software": None})
        plt.close(fig)
        written.append(path.name)
    return written


def report(
    a: argparse.Namespace,
    argv: list[str],
    cases: list[C.Case],
    results: list[dict],
    methods: list[str],
    notes: list[str],
    plots: list[str],
    halos: dict[str, set[int]],
) -> str:
    """The Markdown report."""
    groups = list(dict.fromkeys(c.group for c in cases))
    cmd = "python benchmarks/quality.py" + ("" if not argv else " " + shlex.join(argv))
    _, model_desc = C.model_description(a.model)
    n = a.scenes or (1 if a.quick else 3)
    size = a.size or (128 if a.quick else 256)
    lines = [
        "# Change-detection quality: every method side by side",
        "",
        "Generated by `benchmarks/quality.py`; do not edit by hand.",
        "",
        f"- Command (repository root): `{cmd}`" + (" — QUICK smoke run" if a.quick else ""),
        f"- Git commit: {C.git_commit()}",
        f"- Machine: {C.machine()}",
        f"- Torch threads: {a.threads}, deterministic algorithms; dask synchronous scheduler; "
        f"chunk size {a.chunk_size} px; halo per method: "
        + ", ".join(f"{m} {'/'.join(str(h) for h in sorted(halos[m]))} px" for m in methods)
        + ".",
        f"- Default model (cnn-lstm): {model_desc}; device cpu.",
        f"- Synthetic (a): `make_scene` seeds {SYNTH_SEED}–{SYNTH_SEED + n - 1} (held out: "
        f"training uses 0–1099) at each nuisance level low / medium / high; {size}×{size} px, "
        f"{DATES} dates, {BANDS} bands.",
        f"- Semi-synthetic (b): `semi_synthetic` from each real pair, {DATES} dates, nuisance "
        f"{SEMI_NUISANCE}, seeds {SEMI_SEED}+ (in sample-name order), change date drawn by the seed.",
        "- Real pairs (c): ../shared/data/real_samples as they are (2 dates, source dtype), read "
        "from ../shared (never copied into the repository); PNG pairs get a stand-in grid. "
        "Landsat labels are partial: only labelled pixels are scored.",
        f"- Change = probability ≥ {C.THRESHOLD} (the `geochange detect` default). Metrics from "
        "`geochange.evaluate.evaluate_arrays`: pixel scores of the change class over labelled "
        "pixels; objects are 8-connected (a reference object is detected when ≥ 50 % of it is "
        "predicted or a predicted object overlaps it with IoU ≥ 0.25); micro recall = detected "
        "share of reference objects ≤ 9 px; date exact = share of true-positive pixels whose "
        "predicted change date equals the reference (multi-date groups only).",
        "- Group means are plain means over samples (metrics undefined for a sample, e.g. micro "
        "recall without micro objects, are left out of the mean).",
        "- Reproduce: run the command again with `--out /tmp/Q.md`, then "
        "`diff <(sed '/^## Runtime/,$d' benchmarks/QUALITY.md) <(sed '/^## Runtime/,$d' /tmp/Q.md)`"
        ": only the command line differs (timings are below that heading).",
        "",
    ]
    if a.quick:
        lines += [
            "> QUICK run: one scene per group, 128 px scenes and 128 px centre crops of the real "
            "samples. Not the reference figures.",
            "",
        ]
    for note in notes:
        lines += [f"> **Note:** {note}", ""]

    lines += ["## Summary: mean per group", ""]
    for p in plots[:1]:
        lines += [f"![mean scores per group]({p})", ""]
    header = ["group", "method", "n"] + [h for _, h, _ in COLUMNS]
    rows = []
    for g in groups:
        for m in methods:
            rs = [r for r in results if r["group"] == g and r["method"] == m]
            if not rs:
                continue
            rows.append([g, m, str(len(rs))] + [C.fmt(_mean(rs, k), pct) for k, _, pct in COLUMNS])
    lines += C.md_table(header, rows) + [""]

    real_names = [c.name for c in cases if c.group == "real pair"]
    if real_names and "cnn-lstm" in methods:
        lines += ["## Multi-date vs two-date F1 on the real samples (cnn-lstm)", ""]
        rows = []
        for name in real_names:
            f2 = [r["f1"] for r in results if r["group"] == "real pair" and r["name"] == name
                  and r["method"] == "cnn-lstm"]  # fmt: skip
            f8 = [r["f1"] for r in results if r["group"] == "semi-synthetic" and r["name"] == name
                  and r["method"] == "cnn-lstm"]  # fmt: skip
            if f2 and f8:
                rows.append([name, C.fmt(f2[0]), C.fmt(f8[0]), C.fmt(f8[0] - f2[0])])
        lines += C.md_table(["sample", "F1 2 dates", "F1 8 dates (semi)", "difference"], rows)
        lines += [""]

    lines += ["## Per sample", ""]
    for p in plots[1:]:
        lines += [f"![F1 per real sample]({p})", ""]
    for g in groups:
        gcases = [c for c in cases if c.group == g]
        lines += [f"### {g}", ""]
        info_keys = list(dict.fromkeys(k for c in gcases for k in c.info))
        lines += C.md_table(
            ["sample"] + info_keys,
            [[c.name] + [str(c.info.get(k, "")) for k in info_keys] for c in gcases],
        )
        lines += [""]
        rows = []
        for c in gcases:
            for m in methods:
                rs = [r for r in results if r["group"] == g and r["name"] == c.name
                      and r["method"] == m]  # fmt: skip
                if rs:
                    r = rs[0]
                    rows.append([c.name, m] + [C.fmt(r[k], pct) for k, _, pct in COLUMNS])
        lines += C.md_table(["sample", "method"] + [h for _, h, _ in COLUMNS], rows) + [""]

    lines += [
        "## Runtime (seconds, this run; varies between runs, every other number does not)",
        "",
    ]
    rows = []
    for g in groups:
        rows.append(
            [g]
            + [
                f"{sum(r['seconds'] for r in results if r['group'] == g and r['method'] == m):.1f}"
                for m in methods
            ]
        )
    lines += C.md_table(["group"] + methods, rows) + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = _args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    C.setup_determinism(a.threads)
    cache_note = C.gdal_cache_workaround()
    out = Path(a.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)

    methods = list(C.METHODS)
    notes = [cache_note] if cache_note else []
    model_path, _ = C.model_description(a.model)
    if not model_path.is_file():
        methods.remove("cnn-lstm")
        notes.append(
            f"cnn-lstm skipped: model weights {model_path} not found (the default model is not "
            "trained yet). Baselines only; re-run this command once the weights exist."
        )
        print(f"[quality] {notes[-1]}", flush=True)
    if not C.sample_dirs():
        notes.append(f"no real samples found in {C.REAL_SAMPLES}: groups (b) and (c) skipped.")

    start = time.perf_counter()
    results: list[dict] = []
    halos: dict[str, set[int]] = {m: set() for m in methods}
    with tempfile.TemporaryDirectory(prefix="geochange-quality-") as tmpdir:
        cases = build_cases(a, Path(tmpdir))
        print(f"[quality] {len(cases)} cases built in {time.perf_counter() - start:.1f} s")
        for case in cases:
            for m in methods:
                prob, interval, secs, halo = C.run_method(
                    m, case, model=a.model, chunk_size=a.chunk_size
                )
                halos[m].add(halo)
                row = {"group": case.group, "name": case.name, "method": m, "seconds": secs}
                row.update(C.score(prob, interval, case))
                results.append(row)
                print(
                    f"[quality] {case.group:<16} {case.name:<18} {m:<9} F1 {C.fmt(row['f1'])} "
                    f"kappa {C.fmt(row['kappa'])} date {C.fmt(row['date_exact'], True)} % "
                    f"({secs:.1f} s)",
                    flush=True,
                )
    groups = list(dict.fromkeys(c.group for c in cases))
    plots = _plots(results, groups, methods, out.parent)
    text = report(a, argv, cases, results, methods, notes, plots, halos)
    C.write_text(out, text + "\n")
    print(f"[quality] wrote {out} and {', '.join(plots)} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
