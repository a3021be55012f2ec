"""What each optional stage earns: F1 with and without it, and its cost per tile.

For every optional stage of the chain (``geochange.stages.OPTIONAL``: coregister, clouds, refine,
micro, emerge) the default chain is run with and without it (``detect --skip STAGE``) on:

1. the shared real pairs as 2 dates (only coregister and refine apply to 2 dates);
2. semi-synthetic 6-date series built from the same real pairs (``_series.py``, the generator the
   network never saw; change in the middle date and on the last date);
3. held-out synthetic scenes (256 px, 8 dates, 4 bands, nuisance high, seeds 5100+).

It also times each stage's block function on one tile (512² px, 8 dates, 4 bands, one thread).
A stage that helps on neither real nor synthetic data should be removed, not kept off by default.

    python benchmarks/stages.py            # writes benchmarks/STAGES.md (about 25 min on 2 cores)
    python benchmarks/stages.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import series_real as SR  # noqa: E402

from geochange.stages import OPTIONAL, Block, Context, build_chain  # noqa: E402
from geochange.synth import make_scene  # noqa: E402

SYNTH_SEED = 5100
SERIES_SEED = 7300


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few cases, small crops: smoke run")
    p.add_argument("--out", default=str(C.ROOT / "benchmarks" / "STAGES.md"))
    p.add_argument("--scenes", type=int, default=6, help="held-out synthetic scenes")
    p.add_argument("--crop", type=int, default=320, help="real pairs: centre crop in pixels")
    p.add_argument("--threads", type=int, default=1, help="torch threads (fixed)")
    p.add_argument(
        "--rows",
        default=None,
        help="JSON file of finished runs: saved after every run, reused when it exists "
        "(a rerun or a crash loses nothing); its 'commit' is the code that made them",
    )
    return p.parse_args(argv)


def _cases(a: argparse.Namespace, tmp: Path) -> dict[str, list[C.Case]]:
    samples = C.sample_dirs()
    crop = 128 if a.quick else a.crop
    if a.quick:
        samples = samples[::4]
    groups: dict[str, list[C.Case]] = {"real pairs": [], "real series, middle": [],
                                       "real series, last": [], "synthetic": []}  # fmt: skip
    for i, s in enumerate(samples):
        groups["real pairs"].append(C.real_case(tmp, s, crop=crop))
        for pos, key in (("middle", "real series, middle"), ("last", "real series, last")):
            groups[key].append(
                SR.series_case(tmp, s, dates=6, position=pos, seed=SERIES_SEED + i, crop=crop)
            )
    n = 1 if a.quick else a.scenes
    size = 128 if a.quick else 256
    for k in range(n):
        groups["synthetic"].append(
            C.synthetic_case(
                tmp,
                seed=SYNTH_SEED + k,
                size=size,
                dates=8,
                bands=4,
                nuisance="high",
                group="synthetic",
            )  # fmt: skip
        )
    return groups


def _stage_costs(threads: int) -> dict[str, float]:
    """Seconds of each stage's block function on one 512² x 8 x 4 tile (median of 3)."""
    import torch

    torch.set_num_threads(threads)
    x = make_scene(size=512, dates=8, bands=4, seed=SYNTH_SEED, nuisance="high").images
    x = x.astype(np.float32)
    chain = build_chain(x.reshape(8, 4, -1), "cnn-lstm", (), Context(device="cpu"))
    costs: dict[str, float] = {}
    block = Block(x.copy(), halo=chain.detector_halo)
    for stage in chain.stages:
        times = []
        for _ in range(3):
            trial = Block(block.tile, block.halo, block.x, block.valid, block.prob, block.interval)
            start = time.perf_counter()
            stage.run(trial)
            times.append(time.perf_counter() - start)
        stage.run(block)
        costs[stage.name] = float(np.median(times))
    return costs


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    C.setup_determinism(a.threads)
    start = time.perf_counter()
    saved = Path(a.rows) if a.rows else None
    cache = json.loads(saved.read_text()) if saved and saved.exists() else {}
    commit = cache.get("commit") or C.git_commit()
    rows: list[dict[str, Any]] = list(cache.get("rows", []))
    done = {(r["group"], r["case"], r["off"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="geochange-stages-") as tmpdir:
        groups = _cases(a, Path(tmpdir))
        for group, cases in groups.items():
            for case in cases:
                for off in (None, *OPTIONAL):
                    if (group, case.name, off or "") in done:
                        continue
                    skip = () if off is None else (off,)
                    prob, interval, secs, _ = C.run_method("cnn-lstm", case, skip=skip)
                    score = C.score(prob, interval, case)
                    rows.append({"group": group, "case": case.name, "off": off or "",
                                 "seconds": secs, **score})  # fmt: skip
                    print(f"[stages] {group:<20} {case.name:<18} without {off or '-':<10} "
                          f"F1 {C.fmt(score['f1'])} ({secs:.1f} s)", flush=True)  # fmt: skip
                    if saved:
                        C.write_text(saved, json.dumps({"commit": commit, "rows": rows}))
    costs = _stage_costs(a.threads)
    text = report(a, rows, costs, time.perf_counter() - start, commit)
    C.write_text(Path(a.out), text)
    print(text)
    return 0


def report(
    a: argparse.Namespace, rows: list[dict], costs: dict[str, float], secs: float, commit: str
) -> str:
    groups = list(dict.fromkeys(r["group"] for r in rows))

    def mean_f1(group: str, off: str) -> float:
        v = [r["f1"] for r in rows if r["group"] == group and r["off"] == off]
        v = [x for x in v if np.isfinite(x)]
        return float(np.mean(v)) if v else float("nan")

    header = ["stage", *groups, "cost per tile (s)"]
    table = []
    for off in OPTIONAL:
        cells = [off]
        for g in groups:
            with_it, without = mean_f1(g, ""), mean_f1(g, off)
            delta = with_it - without
            cells.append(f"{C.fmt(with_it)} vs {C.fmt(without)} ({delta:+.3f})")
        cells.append(f"{costs.get(off, float('nan')):.2f}" if off in costs else "-")
        table.append(cells)
    default = ["(default chain)", *[C.fmt(mean_f1(g, "")) for g in groups], "-"]
    detector = f"{costs.get('cnn-lstm', float('nan')):.2f}"
    n_cases = {g: len({r["case"] for r in rows if r["group"] == g}) for g in groups}
    lines = [
        "# What each stage earns",
        "",
        f"`python benchmarks/stages.py{' --quick' if a.quick else ''}` — {C.machine()}; "
        f"runs at commit {commit}, stage costs at {C.git_commit()}; {a.threads} torch "
        f"thread(s); this invocation {secs / 60:.1f} min.",
        "",
        "Mean change F1 of the default chain with the stage vs without it (`detect --skip "
        "STAGE`), the difference in brackets (positive: the stage helps). Cases: "
        + ", ".join(f"{g} {n}" for g, n in n_cases.items())
        + f". Real pairs centre-cropped to {128 if a.quick else a.crop} px; series of 6 dates "
        "built from the same pairs by benchmarks/_series.py (gain, offset, haze, sub-pixel "
        "shift per date; change at the middle or the last date); synthetic scenes "
        f"{128 if a.quick else 256} px, 8 dates, 4 bands, nuisance high, seeds 5100+. A stage that needs more dates than a case "
        "has does not run there (clouds and micro need 3, emerge 4), so on 2-date pairs its "
        "two columns are equal.",
        "",
        *C.md_table(header, [*table, default]),
        "",
        f"Cost per tile: median seconds of the stage's block function on one 512² px tile of 8 "
        f"dates and 4 bands, one thread; the detector (the network) takes {detector} s on the "
        "same tile.",
        "",
        "## Per case",
        "",
    ]
    case_rows = []
    for g in groups:
        for name in dict.fromkeys(r["case"] for r in rows if r["group"] == g):
            f = {r["off"]: r["f1"] for r in rows if r["group"] == g and r["case"] == name}
            case_rows.append([g, name, C.fmt(f.get("")), *[C.fmt(f.get(o)) for o in OPTIONAL]])
    lines += C.md_table(["group", "case", "default", *[f"without {o}" for o in OPTIONAL]],
                        case_rows)  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
