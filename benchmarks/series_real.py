"""More dates must never hurt: real pairs as date series, side by side with the pair itself.

Writes benchmarks/SERIES_REAL.md. One command, from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/series_real.py           # full run (about 350 runs)
    OMP_NUM_THREADS=1 python benchmarks/series_real.py --quick   # 2 samples, 1 seed, T = 6

A run can be split by sample (``--samples ... --rows part.jsonl``, one process each) and the
report rebuilt from the concatenated rows (``--rows all.jsonl --report-only``).

Every shared real pair (../shared/data/real_samples) is scored

- as it is, 2 dates (the pair), centre-cropped to 320 px (``--crop``; DSIFN pairs are 256 px) to
  bound the run's time,
- as semi-synthetic series of T = 3, 6 and 12 dates (``_series.make_series``: the first image
  repeated up to the change date, the second from it on; per-date gain, offset, haze and
  sub-pixel shift), with the change on an early date (index 1), a middle date (T // 2) and the
  last date (T - 1), over several seeds, with the default chain,
- and, for T = 6, with each stage of the chain switched off in turn (coregister, clouds,
  refine, micro, emerge), and with the network alone (every stage off) on the series, on the
  series without per-date differences (the two images repeated as they are) and on the pair.
- on request (``--chains nocheck``), the default chain with the network's last-date check off
  (``stages/network.py``), on the same series as the default chain.

For each series run with the default chain it also reports the share of the reference change
pixels that the cloud screen flags on the change date.

Change-date exactness is scored on the true positives of the series (the reference date is the
change date). Every run is ``geochange detect``'s production path in memory
(``_common.run_method``); the real samples are read from ../shared and never copied. Each run's
scores are appended to a JSON-lines file beside the report (``--rows``), so a report can be
rebuilt without running again (``--report-only``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import _series as S  # noqa: E402

log = logging.getLogger("series_real")

STAGES = ("coregister", "clouds", "refine", "micro", "emerge")
#: The network alone: every stage off ("bare"), on the series and on the pair, and on series
#: without per-date differences ("bare quiet": the two images repeated as they are).
BARE = ("bare", "bare quiet")
#: The default chain with the network's last-date check off (only when asked for in --chains).
NOCHECK = "nocheck"
#: The default chain on the series' first and last dates alone: the same two acquisitions, with
#: the same per-date differences, as a user who kept only those two would run them.
ENDS = "ends"
POSITIONS = ("early", "middle", "last")
SEED = 2800


def change_index(position: str, dates: int) -> int:
    """Date index of the change: early 1, middle T // 2, last T - 1."""
    return {"early": 1, "middle": dates // 2, "last": dates - 1}[position]


def _positions(dates: int) -> list[str]:
    """With 3 dates, early and middle are the same date (index 1): only early is run."""
    return ["early", "last"] if dates == 3 else list(POSITIONS)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 samples, 1 seed, T = 6: smoke run")
    p.add_argument("--out", default=str(C.ROOT / "benchmarks" / "SERIES_REAL.md"))
    p.add_argument("--rows", default=None, help="JSON-lines of every run (default: beside --out)")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from --rows")
    p.add_argument(
        "--before",
        default=None,
        help="rows of the same runs on the code before a change: adds a before/after table",
    )
    p.add_argument("--samples", nargs="*", default=None, help="only these real sample names")
    p.add_argument("--seeds", type=int, default=2, help="seeds per sample, length and position")
    p.add_argument("--dates", type=int, nargs="*", default=[3, 6, 12], help="series lengths")
    p.add_argument("--ablate", type=int, default=6, help="series length of the stage-off runs")
    p.add_argument(
        "--chains",
        nargs="*",
        default=None,
        help="only these chains: pair, default, a stage name (that stage off), bare, 'bare quiet', "
        "nocheck (default chain, the network's last-date check off; run only when named), "
        "ends (the series' first and last dates alone)",
    )
    p.add_argument("--model", default=None, help="model checkpoint (default: the shipped model)")
    p.add_argument(
        "--positions", nargs="*", default=list(POSITIONS), help="change positions of the series"
    )
    p.add_argument("--ablate-seeds", type=int, default=1, help="seeds of the stage-off runs")
    p.add_argument("--crop", type=int, default=320, help="centre crop (px) of every pair (0: none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (fixed for determinism)")
    p.add_argument("--chunk-size", type=int, default=256, help="chunk edge in pixels")
    a = p.parse_args(argv)
    a.crop = a.crop or None
    if a.quick:
        a.samples = a.samples or ["oscd_rennes", "dsifn_0_2"]
        a.seeds, a.dates, a.ablate_seeds = 1, [6], 1
    return a


def _run(
    case: C.Case, off: str | None, chunk_size: int, model: str | None = None, check: bool = True
) -> tuple[dict[str, Any], float]:
    """Default chain (``off`` None), the chain with stage ``off`` switched off, or the network
    alone (``off`` "all"); ``check`` False switches the network's last-date check off."""
    skip = () if off is None else STAGES if off == "all" else (off,)
    with _last_date_check(check):
        prob, interval, secs, _ = C.run_method(
            "cnn-lstm", case, model=model, chunk_size=chunk_size, skip=skip
        )
    return C.score(prob, interval, case), secs


@contextlib.contextmanager
def _last_date_check(on: bool) -> Iterator[None]:
    """While inside, the network stage is built with its last-date check on or off (detect has
    no option for it: it is measured here, not offered)."""
    from geochange.stages import network

    fit = network.fit
    if not on:

        def fit_nocheck(sample: np.ndarray, context: Any, name: str = "cnn-lstm") -> Any:
            det = fit(sample, context, name)
            det.last_date_check = False
            return det

        network.fit = fit_nocheck
    try:
        yield
    finally:
        network.fit = fit


def screened_share(case: C.Case) -> float:
    """Share of the reference change pixels that the cloud screen flags on the change date
    (the stack co-registered first, as detect does); NaN when the screen does not apply."""
    from geochange.io.read import read_sample
    from geochange.io.stack import open_stack
    from geochange.stages import Context, prepare_stack
    from geochange.stages.clouds import fit

    stack, _ = prepare_stack(open_stack(case.paths, dates=case.dates))
    stage = fit(read_sample(stack), Context(wavelengths=stack.wavelengths))
    ref = case.ref & case.labelled
    if stage is None or case.ref_date is None or not ref.any():
        return float("nan")
    k = int(case.ref_date[ref].max())
    flagged = stage.mask(np.asarray(stack.data.compute(), dtype=np.float32))
    return float(flagged[k][ref].mean())


def series_case(
    tmp: Path,
    sample: Path,
    *,
    dates: int,
    position: str,
    seed: int,
    crop: int | None,
    quiet: bool = False,
) -> C.Case:
    """A ``dates``-date series of a real pair with its change at ``position``."""
    t0, t1, label, grid = C._load(sample, crop)
    wl = C.SENSOR_WAVELENGTHS.get(sample.name.split("_")[0])
    wl = wl if wl is not None and len(wl) == t0.shape[0] else None
    k = change_index(position, dates)
    images = S.make_series(t0, t1, dates=dates, change_at=k, seed=seed, wavelengths=wl, quiet=quiet)
    pd = C._pair_dates(sample)
    iso = S.series_dates(pd[0], pd[1], dates)
    folder = tmp / f"{sample.name}_T{dates}_{position}_{seed}{'_quiet' if quiet else ''}"
    paths = S.write_series(images, iso, folder, name=sample.name, grid=grid, wavelengths=wl)
    ref = label == 1
    ref_date = np.where(ref, k, 0).astype(np.uint8)
    ref_date[label == 255] = 255
    return C.Case(
        group="series",
        name=sample.name,
        paths=paths,
        dates=iso,
        ref=ref,
        labelled=label != 255,
        ref_date=ref_date,
        info={"dates": dates, "position": position, "change index": k, "seed": seed},
    )


def ends_case(case: C.Case) -> C.Case:
    """The series' first and last dates alone, as a 2-date case (the change at index 1)."""
    assert case.ref_date is not None
    ref_date = np.where(case.ref_date == 255, 255, np.where(case.ref, 1, 0)).astype(np.uint8)
    return C.Case(
        group="series ends",
        name=case.name,
        paths=[case.paths[0], case.paths[-1]],
        dates=[case.dates[0], case.dates[-1]],
        ref=case.ref,
        labelled=case.labelled,
        ref_date=ref_date,
        info={**case.info, "dates": 2, "change index": 1},
    )


def _seed(sample_i: int, dates: int, position: str, s: int) -> int:
    return SEED + 1000 * s + 100 * sample_i + 10 * dates + POSITIONS.index(position)


def run_all(a: argparse.Namespace, rows_path: Path) -> None:
    samples = C.sample_dirs(a.samples)
    if not samples:
        raise SystemExit(f"no real samples under {C.REAL_SAMPLES}")
    rows_path.write_text("")
    with tempfile.TemporaryDirectory(prefix="series_real_") as td:
        tmp = Path(td)
        # A sample's seeds follow its place among all shared samples, so a run split by sample
        # (--samples) draws the same series as a whole run.
        everyone = [d.name for d in C.sample_dirs()]
        for sample in samples:
            si = everyone.index(sample.name)
            jobs: list[tuple[str, C.Case | None, int, str, int]] = [
                ("pair", None, 2, "-", 0),
                ("bare", None, 2, "-", 0),
            ]
            for t in a.dates:
                for pos in _positions(t):
                    if pos not in a.positions:
                        continue
                    for s in range(a.seeds):
                        jobs.append(("default", None, t, pos, _seed(si, t, pos, s)))
                        jobs.append((ENDS, None, t, pos, _seed(si, t, pos, s)))
                        if a.chains is not None and NOCHECK in a.chains:
                            jobs.append((NOCHECK, None, t, pos, _seed(si, t, pos, s)))
            for pos in _positions(a.ablate):
                for s in range(a.ablate_seeds):
                    for stage in (*STAGES, *BARE):
                        jobs.append((stage, None, a.ablate, pos, _seed(si, a.ablate, pos, s)))
            if a.chains is not None:
                jobs = [j for j in jobs if j[0] in a.chains]
            for chain, _, t, pos, seed in jobs:
                if t == 2:
                    case = C.real_case(tmp, sample, crop=a.crop)
                else:
                    case = series_case(
                        tmp, sample, dates=t, position=pos, seed=seed, crop=a.crop,
                        quiet=chain == "bare quiet",
                    )  # fmt: skip
                if chain == ENDS:
                    case = ends_case(case)
                skip = {"pair": None, "default": None, NOCHECK: None, ENDS: None}.get(chain, chain)
                r, secs = _run(
                    case, "all" if chain in BARE else skip, a.chunk_size, a.model,
                    check=chain != NOCHECK,
                )  # fmt: skip
                if chain == "default" and t > 2:
                    r["screened"] = screened_share(case)
                row = {
                    "sample": sample.name,
                    "chain": chain,
                    "dates": t,
                    "position": pos,
                    "seed": seed,
                    "seconds": round(secs, 2),
                    **r,
                }
                with rows_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                log.info(
                    "%s %s T=%d %s seed %d: F1 %.3f (%.1f s)",
                    sample.name,
                    chain,
                    t,
                    pos,
                    seed,
                    r["f1"],
                    secs,
                )


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def _nanmean(v: list[float]) -> float:
    v = [x for x in v if x is not None and not np.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def _before_after(
    path: Path, default: list[dict[str, Any]], pair: dict[str, dict[str, Any]]
) -> list[str]:
    """A table of the runs found both in ``path`` (before) and in ``default`` (after), matched
    by sample, length, position and seed; both against the same pair (2 dates)."""
    key = ("sample", "dates", "position", "seed")
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    before = {tuple(r[k] for k in key): r for r in rows if r["chain"] == "default"}
    # Each side against its own pair where the before rows hold one (another model scores the
    # pair differently too), else against the pair of now.
    pair_before = {**pair, **{r["sample"]: r for r in rows if r["chain"] == "pair"}}
    matched = [
        (before[tuple(r[k] for k in key)], r) for r in default if tuple(r[k] for k in key) in before
    ]
    header = ["T", "change", "runs"] + [
        f"{what} {side}"
        for what in (
            "series - pair",
            "worst run - pair",
            "runs below pair by > 0.05",
            "date exact %",
        )
        for side in ("before", "after")
    ]
    body = []
    for t in sorted({r["dates"] for _, r in matched}):
        for pos in POSITIONS:
            both = [(b, r) for b, r in matched if r["dates"] == t and r["position"] == pos]
            if not both:
                continue
            cells: list[str] = [str(t), pos, str(len(both))]
            sides = [[b for b, _ in both], [r for _, r in both]]
            d = [
                [x["f1"] - p[x["sample"]]["f1"] for x in side]
                for side, p in zip(sides, (pair_before, pair))
            ]
            cells += [f"{_nanmean(v):+.3f}" for v in d]
            cells += [f"{min(v):+.3f}" for v in d]
            cells += [str(sum(x < -0.05 for x in v)) for v in d]
            for side in sides:
                n = sum(x["date_n"] for x in side)
                cells.append(C.fmt(sum(x["date_ok"] for x in side) / n if n else np.nan, pct=True))
            body.append(cells)
    return [
        "### Before and after (`--before`)",
        "",
        f"The same series (sample, length, position, seed) run on the code before the change "
        f"({path.name}) and now, each against its own run of the pair (2 dates).",
        "",
        *C.md_table(header, body),
    ]


def _against_ends(
    rows: list[dict[str, Any]], default: list[dict[str, Any]], lengths: list[int]
) -> list[str]:
    """Each series against its own first and last dates run as a pair (``ENDS``)."""
    key = ("sample", "dates", "position", "seed")
    ends = {tuple(r[k] for k in key): r for r in rows if r["chain"] == ENDS}
    if not ends:
        return []
    header = [
        "T",
        "change",
        "runs",
        "F1 series",
        "F1 first + last date",
        "series - first + last",
        "worst run",
        "runs below by > 0.05",
        "date exact % (TP) series / first + last",
    ]
    body = []
    for t in lengths:
        for pos in POSITIONS:
            both = [
                (r, ends[k])
                for r in default
                if r["dates"] == t and r["position"] == pos
                and (k := tuple(r[c] for c in key)) in ends
            ]  # fmt: skip
            if not both:
                continue
            d = [r["f1"] - e["f1"] for r, e in both]
            exact = []
            for side in ([r for r, _ in both], [e for _, e in both]):
                n = sum(x["date_n"] for x in side)
                exact.append(C.fmt(sum(x["date_ok"] for x in side) / n if n else np.nan, pct=True))
            body.append(
                [
                    str(t),
                    pos,
                    str(len(both)),
                    C.fmt(_nanmean([r["f1"] for r, _ in both])),
                    C.fmt(_nanmean([e["f1"] for _, e in both])),
                    f"{_nanmean(d):+.3f}",
                    f"{min(d):+.3f}",
                    str(sum(x < -0.05 for x in d)),
                    " / ".join(exact),
                ]
            )
    return [
        "",
        "### Series against their own first and last dates",
        "",
        "The same series, and its first and last dates alone run as a pair with the default "
        "chain: the same two acquisitions with the same per-date gains, offsets, haze and "
        "shifts, as a user who kept only those two dates would run them. 'Pair' above is the "
        "pair as it is, never resampled.",
        "",
        *C.md_table(header, body),
    ]


def report(a: argparse.Namespace, rows: list[dict[str, Any]], seconds: float) -> str:
    f = C.fmt
    pair = {r["sample"]: r for r in rows if r["chain"] == "pair"}
    samples = sorted(pair)
    default = [r for r in rows if r["chain"] == "default"]
    lengths = sorted({r["dates"] for r in default})
    pair_mean = _nanmean([pair[s]["f1"] for s in samples])
    _, model = C.model_description(a.model)
    lines = [
        "# Real pairs as date series: do more dates hurt?",
        "",
        f"- Command: `{' '.join(shlex.quote(x) for x in ['python', *sys.argv])}`"
        + (
            " (the report rebuilt from the rows of runs split by `--samples`, one process each, "
            "with the other options at their defaults)"
            if a.report_only
            else ""
        ),
        f"- Commit: {C.git_commit()}",
        f"- Model: {model}",
        f"- Machine: {C.machine()}",
        f"- Samples: {', '.join(samples)} (../shared/data/real_samples, read in place; Landsat "
        "scored on its labelled pixels only).",
        f"- Series: `benchmarks/_series.py` (not the training generator): T = "
        f"{', '.join(map(str, lengths))}; change at index 1 (early), T // 2 (middle), T - 1 "
        "(last); with T = 3 early and middle are the same date and only early is run; per date "
        f"gain {S.GAIN[0]}-{S.GAIN[1]} (band jitter ±{S.BAND_JITTER:.0%}), offset "
        f"±{S.OFFSET:.0%} of the band mean, haze up to {S.HAZE:.0%} of the mean (blue-weighted), "
        f"shift ±{S.SHIFT} px; {a.seeds} seed(s) per sample, length and position; stage-off "
        f"runs at T = {a.ablate}, {a.ablate_seeds} seed(s).",
        "- Each run: `geochange detect`'s production path in memory (`_common.run_method`, "
        f"cnn-lstm, threshold {C.THRESHOLD}, chunk {a.chunk_size} px, {a.threads} torch "
        "thread(s), deterministic).",
        f"- Pairs centre-cropped to {a.crop} px (series and pair alike).\n"
        "- F1 is the change class's pixel F1 per run; means are over samples (and seeds) with "
        "equal weight. 'Pair' is the same pair as 2 dates, as it is.",
        "",
        "## Series against the pair, default chain",
        "",
    ]
    header = [
        "T",
        "change",
        "runs",
        "F1 series",
        "F1 pair",
        "series - pair",
        "worst run - pair",
        "runs below pair by > 0.05",
        "date exact % (TP)",
        "change px screened % (change date)",
    ]
    body = []
    for t in lengths:
        for pos in POSITIONS:
            rs = [r for r in default if r["dates"] == t and r["position"] == pos]
            if not rs:
                continue
            diffs = [r["f1"] - pair[r["sample"]]["f1"] for r in rs]
            ok = sum(r["date_ok"] for r in rs)
            n = sum(r["date_n"] for r in rs)
            body.append(
                [
                    str(t),
                    pos,
                    str(len(rs)),
                    f(_nanmean([r["f1"] for r in rs])),
                    f(_nanmean([pair[r["sample"]]["f1"] for r in rs])),
                    f"{_nanmean(diffs):+.3f}",
                    f"{min(diffs):+.3f}",
                    str(sum(d < -0.05 for d in diffs)),
                    f(ok / n if n else float("nan"), pct=True),
                    f(_nanmean([r.get("screened", float("nan")) for r in rs]), pct=True),
                ]
            )
    lines += C.md_table(header, body)
    lines += _against_ends(rows, default, lengths)
    if a.before:
        lines += ["", *_before_after(Path(a.before), default, pair)]
    lines += [
        "",
        f"Pair mean F1 over the {len(samples)} samples: {f(pair_mean)}. 'Change px screened': "
        "share of the reference change pixels the cloud screen flags on the change date (mean "
        "over the runs where it applies: 4+ bands, not DSIFN's RGB).",
        "",
    ]
    nocheck = {
        (r["sample"], r["dates"], r["position"], r["seed"]): r
        for r in rows
        if r["chain"] == NOCHECK
    }
    if nocheck:
        lines += [
            "## The network's last-date check on and off",
            "",
            "The same series, default chain, with the last-date check (`stages/network.py`) on "
            "(as shipped) and off.",
            "",
        ]
        header = [
            "T",
            "change",
            "runs",
            "series - pair, check on",
            "check off",
            "worst on",
            "worst off",
        ]
        body = []
        for t in lengths:
            for pos in POSITIONS:
                both = [
                    (r, nocheck[k])
                    for r in default
                    if r["dates"] == t and r["position"] == pos
                    and (k := (r["sample"], r["dates"], r["position"], r["seed"])) in nocheck
                ]  # fmt: skip
                if not both:
                    continue
                on = [r["f1"] - pair[r["sample"]]["f1"] for r, _ in both]
                off = [x["f1"] - pair[x["sample"]]["f1"] for _, x in both]
                body.append([str(t), pos, str(len(both)), f"{_nanmean(on):+.3f}",
                             f"{_nanmean(off):+.3f}", f"{min(on):+.3f}", f"{min(off):+.3f}"])  # fmt: skip
        lines += C.md_table(header, body)
        lines.append("")
    bare = [r for r in rows if r["chain"] in BARE]
    if bare:
        lines += [
            "## The network alone (every stage off)",
            "",
            f"T = {a.ablate}, the same series as the stage-off runs; 'quiet' repeats the two "
            "images as they are (no per-date gain, offset, haze or shift), which isolates the "
            "network's handling of repeated dates from the differences between acquisitions.",
            "",
        ]
        pair_bare = {r["sample"]: r["f1"] for r in bare if r["dates"] == 2}
        header = ["change", "series", "series quiet", "pair (network alone)", "pair (default)"]
        body = []
        for pos in POSITIONS:
            rs = [r for r in bare if r["dates"] > 2 and r["position"] == pos]
            if not rs:
                continue
            names = sorted({r["sample"] for r in rs})
            body.append(
                [
                    pos,
                    f(_nanmean([r["f1"] for r in rs if r["chain"] == "bare"])),
                    f(_nanmean([r["f1"] for r in rs if r["chain"] == "bare quiet"])),
                    f(_nanmean([pair_bare.get(n, float("nan")) for n in names])),
                    f(_nanmean([pair[n]["f1"] for n in names])),
                ]
            )
        lines += C.md_table(header, body)
        lines.append("")

    # Per stage off.
    t = a.ablate
    abl = [r for r in rows if r["dates"] == t and r["chain"] in (*STAGES,)]
    if abl:
        lines += [
            f"## Each stage switched off (T = {t})",
            "",
            "Same series (same seeds) as the default chain's first seed(s); the difference "
            "is to the default chain on those very series.",
            "",
        ]
        key = {(r["sample"], r["dates"], r["position"], r["seed"]): r for r in default}
        header = ["change", "default", *[f"{s} off" for s in STAGES], "pair"]
        body = []
        for pos in POSITIONS:
            ab = [r for r in abl if r["position"] == pos]
            if not ab:
                continue
            base_keys = {(r["sample"], r["dates"], r["position"], r["seed"]) for r in ab}
            base = [key[k]["f1"] for k in sorted(base_keys) if k in key]
            cells = [pos, f(_nanmean(base))]
            for s in STAGES:
                v = [r["f1"] for r in ab if r["chain"] == s]
                d = [
                    r["f1"] - key[(r["sample"], r["dates"], r["position"], r["seed"])]["f1"]
                    for r in ab
                    if r["chain"] == s
                ]
                cells.append(f"{f(_nanmean(v))} ({_nanmean(d):+.3f})")
            cells.append(f(_nanmean([pair[k[0]]["f1"] for k in sorted(base_keys)])))
            body.append(cells)
        lines += C.md_table(header, body)
        lines.append("")

    # Per sample.
    lines += ["## Per sample (default chain, mean over seeds)", ""]
    cols = [
        (tt, pos)
        for tt in lengths
        for pos in POSITIONS
        if any(r["dates"] == tt and r["position"] == pos for r in default)
    ]
    header = ["sample", "pair", *[f"T{tt} {pos}" for tt, pos in cols]]
    body = []
    for s in samples:
        cells = [s, f(pair[s]["f1"])]
        for tt, pos in cols:
            v = [
                r["f1"]
                for r in default
                if r["sample"] == s and r["dates"] == tt and r["position"] == pos
            ]
            cells.append(f(_nanmean(v)))
        body.append(cells)
    lines += C.md_table(header, body)
    lines += [
        "",
        "## Runtime",
        "",
        f"{len(rows)} runs, {seconds:.0f} s in all (this run; varies between runs).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(a.out)
    rows_path = Path(a.rows) if a.rows else out.with_suffix(".jsonl")
    C.setup_determinism(a.threads)
    note = C.gdal_cache_workaround()
    if note:
        log.info(note)
    start = time.perf_counter()
    if not a.report_only:
        run_all(a, rows_path)
    rows = [json.loads(x) for x in rows_path.read_text().splitlines() if x.strip()]
    seconds = time.perf_counter() - start if not a.report_only else sum(r["seconds"] for r in rows)
    tmp = out.with_name(f".{out.name}.tmp")  # written whole, then renamed
    tmp.write_text(report(a, rows, seconds))
    os.replace(tmp, out)
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
