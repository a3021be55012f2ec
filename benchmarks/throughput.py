"""A whole detection run against its two floors: reading the stack, and the network alone.

    python benchmarks/throughput.py                       # CPU: 1024 px x 12 dates x 4 bands
    python benchmarks/throughput.py --size 10980 --device cuda --no-chain --out GPU_THROUGHPUT.md
                                                          # a Sentinel-2 tile on a GPU

The stack: a synthetic scene (``geochange.synth``, 512 px, nuisance medium) tiled to SIZE² px,
one local GeoTIFF per date in the layout of a cloud-optimised GeoTIFF (uint16, DEFLATE, 512 px
blocks). Then, in one process, with the run's own plan (chunk, temporal window, sub-tiles and
batch from ``geochange.plan``) and its threads (``geochange.cluster``, threaded scheduler):

1. **read**: every task's tile (chunk + halo) read through the stack's reader, as the run's tasks
   read them, on the same threads;
2. **model**: the network detector alone (the tile sent to its device and normalised there, the
   network on the chunk's core, its checks) on those tiles already in memory, on the same
   threads (synchronised on a GPU);
   and the same with four sub-tiles of one shape per pass instead of the planned batch;
3. **chain**: every stage of the run (cloud screen, network, refine, micro, emerge) on the same
   tiles in memory, told their cores as the run's tiling does;
4. **detect**: ``geochange.pipeline.detect`` end to end, writing the GeoPackage and rasters
   (co-registration, reading, the chain, vectorising, writing).

It prints each time, the model's Mpx·date/s (pixels of the scene x dates / s) and the ratios
detect / read and detect / model, and writes them to OUT (default benchmarks/THROUGHPUT.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import torch

HERE = Path(__file__).resolve().parent
SOURCE = 512  # px of the synthetic scene tiled to the stack's size


def make_stack(folder: Path, size: int, n_dates: int, bands: int, seed: int) -> Path:
    """A synthetic scene tiled to ``size`` px, one uint16 GeoTIFF per date (512 px blocks)."""
    from geochange.synth import make_scene
    from geochange.synth.spectra import band_names

    folder.mkdir(parents=True, exist_ok=True)
    scene = make_scene(SOURCE, dates=n_dates, bands=bands, seed=seed, nuisance="medium")
    reps = (1, -(-size // SOURCE), -(-size // SOURCE))
    profile = scene.grid.profile(
        count=bands, dtype="uint16", nodata=0, compress="deflate", predictor=2, tiled=True,
        blockxsize=512, blockysize=512, interleave="pixel", width=size, height=size,
    )  # fmt: skip
    for i, day in enumerate(scene.dates):
        path = folder / f"S2_{day:%Y%m%d}.tif"
        data = np.tile(scene.images[i], reps)[:, :size, :size]
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            dst.update_tags(
                ACQUISITION_DATE=day.isoformat(),
                WAVELENGTHS_NM=",".join(f"{w:g}" for w in scene.band_wavelengths),
            )
            for b, name in enumerate(band_names(scene.band_wavelengths), start=1):
                dst.set_band_description(b, name)
    return folder


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_map(fn, items: list, threads: int, cores: list | None = None) -> float:
    """Seconds to run ``fn`` on every item (told its core, as tiling does) with ``threads``
    threads (synchronised)."""
    sync()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        if cores is None:
            calls = pool.map(fn, items)
        else:
            calls = pool.map(lambda a, c: fn(a, core=c), items, cores)
        for _ in calls:
            pass
    sync()
    return time.perf_counter() - t0


def measure(stack_dir: Path, device: str, workdir: Path, chain_part: bool = True) -> dict:
    from geochange import cluster, tiling
    from geochange.config import DetectConfig, RuntimeConfig
    from geochange.io.stack import open_stack
    from geochange.pipeline import detect, stack_chain
    from geochange.plan import plan_memory

    stack = open_stack(stack_dir)
    config, runtime = DetectConfig(), RuntimeConfig(device=device)
    chain = stack_chain(stack, config, runtime)
    chunk = plan_memory(stack, config, runtime, chain, False)
    ychunks, xchunks = tiling.plan_chunks(stack.grid.height, stack.grid.width, chunk, chain.halo)
    h, w, halo = stack.grid.height, stack.grid.width, int(chain.halo)
    bounds, cores = [], []
    y0 = 0
    for cy in ychunks:
        x0 = 0
        for cx in xchunks:
            ya, xa = max(0, y0 - halo), max(0, x0 - halo)
            bounds.append((ya, min(h, y0 + cy + halo), xa, min(w, x0 + cx + halo)))
            cores.append((y0 - ya, y0 + cy - ya, x0 - xa, x0 + cx - xa))  # as tiling tells it
            x0 += cx
        y0 += cy
    with cluster.runtime(n_chunks=len(bounds)) as rt:
        threads, torch_threads = rt.layout.threads_per_worker, rt.layout.torch_threads
    chain.num_threads = torch_threads
    reader = stack.reader()

    def read(b: tuple) -> np.ndarray:
        ya, yb, xa, xb = b
        return np.asarray(reader[:, :, ya:yb, xa:xb])

    read_s = timed_map(read, bounds, threads)
    tiles = [read(b) for b in bounds]  # held in memory for the model and the chain
    detector = chain.detector
    detector(tiles[0][..., :64, :64])  # warm-up (allocator, cuDNN)
    model_s = timed_map(detector, tiles, threads, cores)
    # The same with four sub-tiles of a shape per pass (the planned batch is the fastest that
    # fits; on the CPU that is one).
    planned = detector.batch_size
    detector.batch_size = 4
    batch4_s = timed_map(detector, tiles, threads, cores)
    detector.batch_size = planned
    chain_s = timed_map(chain, tiles, threads, cores) if chain_part else float("nan")
    del tiles
    t0 = time.perf_counter()
    detect(stack_dir, workdir / "changes.gpkg", device=device, overwrite=True, progress=False)
    detect_s = time.perf_counter() - t0
    mpx_dates = h * w * stack.T / 1e6
    return {
        "size": h, "dates": stack.T, "bands": stack.band_count, "device": detector.device,
        "chunk": chunk, "halo": halo, "tasks": len(bounds), "threads": threads,
        "torch_threads": torch_threads, "sub_tile": int(detector.tile_size),
        "batch": int(detector.batch_size), "read_s": read_s, "model_s": model_s,
        "model_batch4_s": batch4_s,
        "chain_s": chain_s, "detect_s": detect_s,
        "model_mpx_date_s": mpx_dates / model_s, "detect_mpx_date_s": mpx_dates / detect_s,
    }  # fmt: skip


def machine(device: str) -> str:
    import _common as C

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "no GPU used"
    return f"{C.machine()}; {gpu}"


def report(r: dict, command: str) -> str:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()  # fmt: skip
    on_gpu = r["device"].startswith("cuda")
    lines = [
        "# Throughput: a whole run against reading the stack and the network alone",
        "",
        "Generated by `benchmarks/throughput.py`; do not edit by hand.",
        "",
        f"- Command: `{command}`",
        f"- Git commit: {commit}; {dt.date.today().isoformat()}",
        f"- Machine: {machine(r['device'])}",
        f"- Stack: {r['size']}² px × {r['dates']} dates × {r['bands']} bands, uint16 DEFLATE "
        "GeoTIFFs with 512 px blocks on local disk (a synthetic 512 px scene tiled).",
        f"- The run's plan: chunk {r['chunk']} px, halo {r['halo']} px, {r['tasks']} tasks; "
        f"{r['threads']} threads × {r['torch_threads']} torch threads; the network on "
        f"{r['device']} in sub-tiles of {r['sub_tile']} px, {r['batch']} at a time.",
        "",
        "| part | s | Mpx·date/s | × read | × model |",
        "|---|---:|---:|---:|---:|",
    ]
    mpx = r["size"] ** 2 * r["dates"] / 1e6
    for name, key in (
        ("read every task's tile", "read_s"),
        ("model: the network detector alone, tiles in memory", "model_s"),
        ("model with 4 sub-tiles of a shape per pass", "model_batch4_s"),
        ("chain: every stage, tiles in memory", "chain_s"),
        ("detect end to end (GeoPackage and rasters written)", "detect_s"),
    ):
        s = r[key]
        if s != s:  # a part not run (--no-chain)
            continue
        lines.append(
            f"| {name} | {s:.1f} | {mpx / s:.1f} | {s / r['read_s']:.2f} | {s / r['model_s']:.2f} |"
        )
    lines += ["", "## Targets", ""]
    if on_gpu:
        lines += [
            f"- model ≥ 200 Mpx·date/s on an H100-class GPU: {r['model_mpx_date_s']:.1f}",
            f"- detect ≤ 1.5 × read: {r['detect_s'] / r['read_s']:.2f}",
        ]
    else:
        lines += [f"- on the CPU, detect ≤ 1.05 × model: {r['detect_s'] / r['model_s']:.2f}"]
    lines += [
        "",
        "The model part runs what the run's network stage runs on each tile; the chain part "
        "adds the cloud screen, refine, micro and emerge; detect adds co-registration (each "
        "date read once more to estimate its shift), the reads, vectorising and writing.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--dates", type=int, default=12)
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--seed", type=int, default=8801)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", type=Path, default=HERE / "THROUGHPUT.md")
    ap.add_argument("--no-chain", action="store_true", help="skip the chain part (a long one on "
                    "a whole Sentinel-2 tile)")  # fmt: skip
    args = ap.parse_args()
    shown = [a for a in sys.argv[1:]]
    if "--out" in shown:
        i = shown.index("--out")
        del shown[i : i + 2]
    command = " ".join(["python benchmarks/throughput.py", *shown])
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        stack_dir = make_stack(Path(tmp) / "stack", args.size, args.dates, args.bands, args.seed)
        r = measure(stack_dir, args.device, Path(tmp), not args.no_chain)
    print(r, flush=True)
    text = report(r, command)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
