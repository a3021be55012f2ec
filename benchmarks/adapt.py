"""Benchmark: does adapting to the scene (``geochange adapt``) help? Writes ADAPT.md.

One command, from the repository root (CPU-heavy: about seeds × samples × minutes / jobs)::

    python benchmarks/adapt.py                          # full: 3 seeds, default 3-minute budget
    python benchmarks/adapt.py --seeds 0 --semi oscd_paris    # reduced
    python benchmarks/adapt.py --quick                  # smoke run: 48 px crops, a few seconds

Per real sample of ../shared/data/real_samples (OSCD, Landsat, DSIFN; 2 dates, as they are):
CVA-Otsu, the default model zero-shot, and the default model after ``adapt`` with the default
budget, once per seed (mean and spread over seeds). From each adaptation run the checkpoint is
scored at the shipped interpolation weight ``alpha`` (0.5) and at ``alpha = 1`` (adapted weights
only), so the choice of the default is measured too. Then semi-synthetic 8-date series
(``semi_synthetic``, nuisance medium) built from chosen pairs: zero-shot vs adapted F1 and
change-date accuracy.

Each adaptation runs in its own process with 1 torch thread (``--jobs`` processes side by side),
so it gets 1 core for its budget: fewer steps than ``geochange adapt`` makes on 2 cores, a
conservative measure. Detection runs as ``geochange detect`` does (``_common.run_method``),
threshold 0.5. PASS/FAIL against these targets:

1. adapted mean F1 on the OSCD and Landsat samples together >= CVA-Otsu's mean + 0.08;
2. adapted mean F1 above zero-shot in every group (oscd, landsat, dsifn);
3. no sample's adapted F1 (mean over seeds) more than 0.05 below its zero-shot F1.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

log = logging.getLogger("adapt-bench")

SEMI_SEED = 6000
SEMI_DATES = 8
SEMI_NUISANCE = "medium"
ALPHAS = (0.5, 1.0)
SHIPPED_ALPHA = 0.5


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 48 px crops, 5 s budgets")
    p.add_argument("--out", default=str(C.ROOT / "benchmarks" / "ADAPT.md"))
    p.add_argument("--model", default=None, help="starting checkpoint (default: shipped model)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minutes", type=float, default=3.0, help="adaptation budget per run")
    p.add_argument("--samples", nargs="*", default=None, help="real samples (default: all)")
    p.add_argument(
        "--semi",
        nargs="*",
        default=None,
        help="pairs to build semi-synthetic series from (default: the OSCD and Landsat ones)",
    )
    p.add_argument("--semi-seeds", type=int, nargs="+", default=None, help="default: --seeds")
    p.add_argument("--jobs", type=int, default=2, help="processes side by side (1 thread each)")
    p.add_argument("--crop", type=int, default=None, help="centre crop in pixels")
    p.add_argument("--max-steps", type=int, default=None, help="step limit of each adaptation")
    p.add_argument("--note", action="append", default=[], help="a note for the report")
    return p.parse_args(argv)


def _group(name: str) -> str:
    return name.split("_")[0]


# --------------------------------------------------------------------------------------------
# Work items (run in worker processes)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    C.gdal_cache_workaround()
    logging.basicConfig(level=logging.WARNING)


def _baselines(case: C.Case, model: str | None) -> dict[str, Any]:
    out = {}
    for key, method in (("cva", "cva"), ("zero-shot", "cnn-lstm")):
        prob, interval, secs, _ = C.run_method(method, case, model=model)
        out[key] = C.score(prob, interval, case) | {"seconds": secs}
    return {"case": case.name, "kind": case.group, "scores": out}


def _adapted(
    case: C.Case, model: str | None, seed: int, minutes: float, max_steps: int | None, tmp: str
) -> dict[str, Any]:
    from geochange.io.stack import open_stack
    from geochange.model import save_model
    from geochange.model.adapt import adapt_network, interpolate

    stack = open_stack(case.paths, dates=case.dates)
    t0 = time.perf_counter()
    res = adapt_network(
        stack, model=model, minutes=minutes, seed=seed, device="cpu", max_steps=max_steps
    )
    secs = time.perf_counter() - t0
    scores = {}
    for alpha in ALPHAS:
        ckpt = Path(tmp) / f"{case.group}_{case.name}_{seed}_{alpha}.ckpt".replace(" ", "_")
        save_model(interpolate(res.base, res.adapted, alpha), ckpt, {"adapted": True})
        prob, interval, _, _ = C.run_method("cnn-lstm", case, model=str(ckpt))
        scores[alpha] = C.score(prob, interval, case)
        ckpt.unlink()
    return {
        "case": case.name,
        "kind": case.group,
        "seed": seed,
        "steps": res.info["steps"],
        "seconds": secs,
        "scores": scores,
    }


# --------------------------------------------------------------------------------------------
# Report


def _defaults() -> str:
    """The labelling defaults of ``adapt_network``, read from its signature (not restated)."""
    import inspect

    from geochange.model.adapt import adapt_network

    d = {k: v.default for k, v in inspect.signature(adapt_network).parameters.items()}
    return (
        f"chip {d['chip']}, batch {d['batch_size']}, lr {d['lr']:g}, ignore top "
        f"{100 * d['ignore_top']:g} % / Otsu of the CVA-like magnitude, dilated "
        f"{d['ignore_dilate']} px, never teach the start model's ≥ {d['keep_confident']} "
        f"detections as no change; with 3 dates or more its unknown pixels rejected at ≤ "
        f"{d['keep_rejected']} are no change"
    )


def _stats(v: list[float]) -> tuple[float, float, float, float]:
    a = np.asarray(v, float)
    return float(a.mean()), float(a.std()), float(a.min()), float(a.max())


def _pm(v: list[float]) -> str:
    m, s, lo, hi = _stats(v)
    return f"{m:.3f} ± {s:.3f} ({lo:.3f}–{hi:.3f})" if len(v) > 1 else f"{m:.3f}"


def _table(kind: str, base: list[dict], runs: list[dict], key: str) -> tuple[list[str], dict]:
    """Per-sample rows of one kind ("real pair" / "semi-synthetic") and per-sample means."""
    rows, per = [], {}
    for b in base:
        if b["kind"] != kind:
            continue
        name = b["case"]
        mine = [r for r in runs if r["kind"] == kind and r["case"] == name]
        ad = {a: [r["scores"][a][key] for r in mine] for a in ALPHAS}
        steps = [r["steps"] for r in mine]
        per[name] = {
            "cva": b["scores"]["cva"][key],
            "zero": b["scores"]["zero-shot"][key],
            **{a: float(np.nanmean(ad[a])) if ad[a] else float("nan") for a in ALPHAS},
        }
        pr = [
            f"{np.nanmean([r['scores'][SHIPPED_ALPHA][k] for r in mine]):.2f}" if mine else "–"
            for k in ("precision", "recall")
        ]
        z = b["scores"]["zero-shot"]
        rows.append(
            [
                name,
                C.fmt(b["scores"]["cva"][key]),
                C.fmt(b["scores"]["zero-shot"][key]),
                *(_pm(ad[a]) if ad[a] else "–" for a in ALPHAS),
                f"{int(np.mean(steps))}" if steps else "–",
                f"{C.fmt(z['precision'], digits=2)} / {C.fmt(z['recall'], digits=2)}",
                " / ".join(pr),
            ]
        )
    return rows, per


def _group_means(per: dict[str, dict]) -> dict[str, dict]:
    groups: dict[str, dict] = {}
    for name in per:
        groups.setdefault(_group(name), {}).setdefault("names", []).append(name)
    for g in groups.values():
        for k in ("cva", "zero", *ALPHAS):
            g[k] = float(np.nanmean([per[n][k] for n in g["names"]]))
    return groups


def _verdicts(per: dict[str, dict]) -> list[tuple[str, str, str, bool]]:
    a = SHIPPED_ALPHA
    target = [n for n in per if _group(n) in ("oscd", "landsat")]
    out = []
    if target:
        ad = float(np.mean([per[n][a] for n in target]))
        cva = float(np.mean([per[n]["cva"] for n in target]))
        out.append(
            (
                "OSCD + Landsat: adapted mean F1 vs CVA-Otsu",
                f"{ad:.3f} vs {cva:.3f} (+{ad - cva:.3f})",
                "≥ +0.08",
                ad >= cva + 0.08,
            )
        )
    for g, v in _group_means(per).items():
        out.append(
            (
                f"group {g}: adapted mean F1 above zero-shot",
                f"{v[a]:.3f} vs {v['zero']:.3f}",
                "> zero-shot",
                v[a] > v["zero"],
            )
        )
    worst = min(per, key=lambda n: per[n][a] - per[n]["zero"])
    d = per[worst][a] - per[worst]["zero"]
    out.append(
        (
            "worst sample: adapted − zero-shot F1",
            f"{d:+.3f} ({worst})",
            "≥ −0.05",
            d >= -0.05,
        )
    )
    return out


def report(a: argparse.Namespace, argv: list[str], base: list[dict], runs: list[dict], wall: float, notes: list[str]) -> tuple[str, list]:  # fmt: skip
    cmd = "python benchmarks/adapt.py" + ("" if not argv else " " + shlex.join(argv))
    _, model_desc = C.model_description(a.model)
    head = [
        "sample",
        "CVA-Otsu",
        "zero-shot",
        *(f"adapted α={x}" for x in ALPHAS),
        "steps",
        "zero-shot P / R",
        f"adapted α={SHIPPED_ALPHA} P / R",
    ]
    lines = [
        "# Scene adaptation (`geochange adapt`): measured against zero-shot and CVA-Otsu",
        "",
        "Generated by `benchmarks/adapt.py`; do not edit by hand.",
        "",
        f"- Command (repository root): `{cmd}`",
        "- Full run (the targets' setting): `python benchmarks/adapt.py` (3 seeds, 3-minute budget, "
        "all samples; about 3 × 9 × 3 / 2 + 3 × 5 × 3 / 2 ≈ 65 min on 2 cores).",
        f"- Git commit: {C.git_commit()}",
        f"- Machine: {C.machine()}",
        f"- Starting model: {model_desc}",
        f"- Seeds {a.seeds}, budget {a.minutes} min per adaptation"
        + (f", at most {a.max_steps} steps" if a.max_steps else "")
        + f", {a.jobs} adaptations side by side with 1 torch thread each (1 core per "
        "adaptation: fewer steps than `geochange adapt` makes on 2 cores)"
        + (f", centre crops of {a.crop} px" if a.crop else "")
        + f"; total wall time {wall / 60:.1f} min.",
        f"- Adapted = `adapt` with its defaults ({_defaults()}), "
        f"scored at α = {SHIPPED_ALPHA} (the shipped default: weights halfway between start and "
        "adapted) and α = 1 (adapted weights only), from the same run. F1 of the change class "
        "at threshold 0.5 over labelled pixels (`_common.score`); mean ± sd (min–max) over seeds.",
        "",
    ]
    lines += [f"> **Note:** {n}" for n in notes]
    if notes:
        lines.append("")
    rows, per = _table("real pair", base, runs, "f1")
    verdicts = _verdicts(per) if per else []
    lines += ["## Verdict (targets, α = 0.5)", ""]
    lines += C.md_table(
        ["target", "measured", "goal", "result"],
        [[t, m, g, "PASS" if ok else "FAIL"] for t, m, g, ok in verdicts],
    )
    lines += ["", "## Real pairs: F1 per sample", ""]
    lines += C.md_table(head, rows)
    lines += ["", "### Mean per group", ""]
    grows = [
        [g, str(len(v["names"])), *(f"{v[k]:.3f}" for k in ("cva", "zero", *ALPHAS))]
        for g, v in _group_means(per).items()
    ]
    if per:
        allm = {k: float(np.mean([p[k] for p in per.values()])) for k in ("cva", "zero", *ALPHAS)}
        grows.append(["all", str(len(per)), *(f"{allm[k]:.3f}" for k in ("cva", "zero", *ALPHAS))])
    lines += C.md_table(["group", "n", "CVA-Otsu", "zero-shot", *(f"α={x}" for x in ALPHAS)], grows)
    srows, sper = _table("semi-synthetic", base, runs, "f1")
    if srows:
        drows, _ = _table("semi-synthetic", base, runs, "date_exact")
        lines += [
            "",
            f"## Semi-synthetic {SEMI_DATES}-date series (nuisance {SEMI_NUISANCE})",
            "",
            "F1:",
            "",
        ]
        lines += C.md_table(head, srows)
        lines += ["", "Change date exact (share of correctly detected change pixels):", ""]
        lines += C.md_table(head, drows)
        m = {k: float(np.mean([p[k] for p in sper.values()])) for k in ("cva", "zero", *ALPHAS)}
        lines += [
            "",
            f"Mean F1: CVA-Otsu {m['cva']:.3f}, zero-shot {m['zero']:.3f}, "
            + ", ".join(f"adapted α={x} {m[x]:.3f}" for x in ALPHAS)
            + ".",
        ]
    lines.append("")
    return "\n".join(lines), verdicts


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = _args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.quick:
        a.crop, a.minutes = a.crop or 48, min(a.minutes, 5 / 60)
        a.seeds = a.seeds[:1]
    notes = [n for n in [C.gdal_cache_workaround(), *a.note] if n]
    model_path, desc = C.model_description(a.model)
    if desc == "missing":
        print(f"model {model_path} not found: train or pass --model", file=sys.stderr)
        return 2
    semi_names = a.semi
    all_dirs = C.sample_dirs(a.samples)
    if semi_names is None:
        semi_names = [d.name for d in all_dirs if _group(d.name) in ("oscd", "landsat")]
    semi_seeds = a.semi_seeds or a.seeds
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="geochange-adapt-bench-") as tmp_s:
        tmp = Path(tmp_s)
        cases = [C.real_case(tmp, d, crop=a.crop) for d in all_dirs]
        semi_dirs = C.sample_dirs(semi_names)
        for i, d in enumerate(semi_dirs):
            case = C.semi_case(
                tmp, d, seed=SEMI_SEED + i, dates=SEMI_DATES, nuisance=SEMI_NUISANCE, crop=a.crop
            )
            case.name = d.name
            cases.append(case)
        jobs = []
        with ProcessPoolExecutor(max_workers=a.jobs, initializer=_init_worker) as ex:
            base_f = [ex.submit(_baselines, c, a.model) for c in cases]
            for c in cases:
                seeds = semi_seeds if c.group == "semi-synthetic" else a.seeds
                for s in seeds:
                    jobs.append(
                        ex.submit(_adapted, c, a.model, s, a.minutes, a.max_steps, str(tmp))
                    )
            base = [f.result() for f in base_f]
            runs = []
            for f in jobs:
                r = f.result()
                runs.append(r)
                print(
                    f"{r['kind']:15s} {r['case']:18s} seed {r['seed']} {r['steps']:4d} steps "
                    + " ".join(f"α={x}: F1 {r['scores'][x]['f1']:.3f}" for x in ALPHAS),
                    flush=True,
                )
    wall = time.perf_counter() - t_start
    text, verdicts = report(a, argv, base, runs, wall, notes)
    out = Path(a.out)
    C.write_text(out, text)
    print(text)
    for t, m, g, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {t}: {m} (goal {g})")
    print(f"wrote {out}")
    return 0 if verdicts and all(ok for *_, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
