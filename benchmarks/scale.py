"""Scale benchmark of `geochange detect`: throughput, memory, and how far from the floors.

For each size N (N x N px, 8 dates x 4 bands, uint16 DEFLATE GeoTIFFs written to disk):

- e2e: ``geochange detect STACK -o OUT.gpkg --no-quicklook`` in a fresh process (local threaded
  scheduler, the default layout), wall time and peak resident memory summed over the process
  tree (psutil, sampled every 0.1 s; shared library pages are counted once per process);
- io floor: a plain read of the stack (every chunk read and decoded once, dask threads);
- model floor: the detector alone on tiles already in memory (the same chunks + halo), with the
  same dask threads x torch threads, on a sample of chunks, scaled to all chunks;
- at ``--workers-size``: ``--workers 1`` and ``--workers 2`` (LocalCluster, 1 dask thread
  each; torch gets cores // dask threads), and ``--workers 1`` held to one core (CPU affinity):
  the per-core baseline of scale-out. ``--sizes ''`` runs only this part.

Stacks up to 1024 px come from ``geochange.synth.make_scene``; larger ones are mosaics of four
1024 px scenes (seeds 0-3, flipped), written block by block as real GeoTIFFs. Stacks are kept in
``--workdir`` and reused.

Without ``geochange/model/weights/default.ckpt`` the deep model is a randomly initialised
CNNLSTM with the default architecture (the same compute as a trained one).

Usage:
    python benchmarks/scale.py --sizes 1024,2048 --workdir /tmp/geochange-scale
    python benchmarks/scale.py                      # 1024,2048,4096,8192 (long: see SCALE.md)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil

DATES, BANDS, TILE = 8, 4, 1024


# ----------------------------------------------------------------------------- stacks


def make_stack(size: int, workdir: Path) -> Path:
    """A stack of ``size``² px x 8 dates x 4 bands on disk; reused when already there."""
    import rasterio
    from affine import Affine

    from geochange.io.atomic import atomic_path
    from geochange.synth import make_scene, write_scene

    out = workdir / f"stack_{size}"
    done = out / ".complete"
    if done.exists():
        return out / "stack"
    if out.exists():
        shutil.rmtree(out)
    if size <= TILE:
        write_scene(make_scene(size=size, dates=DATES, bands=BANDS, seed=0), out)
        done.touch()
        return out / "stack"

    pool = [make_scene(size=TILE, dates=DATES, bands=BANDS, seed=s) for s in range(4)]
    grid = pool[0].grid
    t0 = grid.transform
    (out / "stack").mkdir(parents=True)
    profile = dict(
        driver="GTiff", width=size, height=size, count=BANDS, dtype="uint16", nodata=0,
        crs=grid.crs, transform=Affine(t0.a, 0, t0.c, 0, t0.e, t0.f), tiled=True,
        blockxsize=512, blockysize=512, compress="DEFLATE", predictor=2, BIGTIFF="IF_SAFER",
    )  # fmt: skip
    n = -(-size // TILE)
    for k, d in enumerate(pool[0].dates):
        path = out / "stack" / f"S2_{d:%Y%m%d}.tif"
        with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.update_tags(ACQUISITION_DATE=d.isoformat(), SOURCE="benchmarks/scale.py mosaic")
            for i in range(n):
                for j in range(n):
                    img = pool[(i + 2 * j) % 4].images[k]
                    if (i + j) % 2:
                        img = img[:, ::-1]
                    if i % 2:
                        img = img[:, :, ::-1]
                    h, w = min(TILE, size - i * TILE), min(TILE, size - j * TILE)
                    window = rasterio.windows.Window(j * TILE, i * TILE, w, h)
                    dst.write(np.ascontiguousarray(img[:, :h, :w]), window=window)
    done.touch()
    return out / "stack"


def bench_model(workdir: Path) -> str | None:
    """Checkpoint to use: None = the shipped default, else a random CNNLSTM saved once."""
    from geochange.model import CNNLSTM, DEFAULT_MODEL_PATH, save_model

    if DEFAULT_MODEL_PATH.is_file():
        return None
    path = workdir / "random_default_arch.ckpt"
    if not path.is_file():
        import torch

        torch.manual_seed(0)
        save_model(CNNLSTM(), path, {"name": "random-default-architecture"})
    return str(path)


# ----------------------------------------------------------------------------- measuring


class PeakRSS:
    """Peak of the summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run(cmd: list[str], label: str, cores: set[int] | None = None) -> dict:
    """Run a command, return wall time (s), peak tree RSS (bytes) and the last output line.

    ``cores``: pin the command (and every process it starts) to these CPUs; geochange sizes
    its threads from the affinity it sees.
    """
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=pin
    )
    peak = PeakRSS(proc.pid)
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    rss = peak.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed ({proc.returncode}):\n{out[-3000:]}")
    last = [ln for ln in out.strip().splitlines() if ln.strip()]
    return {"wall_s": wall, "peak_rss": rss, "out": last[-1] if last else ""}


_FLOORS = textwrap.dedent(
    """
    import json, sys, time
    from concurrent.futures import ThreadPoolExecutor
    import dask, dask.array as da, numpy as np
    from geochange import tiling
    from geochange.cluster import threads_layout
    from geochange.pipeline import stack_chain
    from geochange.io.stack import open_stack

    stack_dir, model, chunk, sample_chunks = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4])
    stack = open_stack(stack_dir, chunk_size=chunk)
    det = stack_chain(stack, model=model, device="cpu")
    halo = det.halo
    yc, xc = tiling.plan_chunks(stack.grid.height, stack.grid.width, chunk, halo)
    n = len(yc) * len(xc)
    threads, torch_threads = threads_layout(n)
    det.num_threads = torch_threads
    data = stack.data.rechunk({0: -1, 1: -1, 2: yc, 3: xc})

    # I/O floor: every chunk read and decoded once (a tiny reduction per chunk).
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=threads):
        data.map_blocks(lambda b: b[:1, :1, :1, :1], chunks=(1, 1, 1, 1)).compute()
    io_s = time.perf_counter() - t0

    # Model floor: the detector on in-memory tiles (chunk + halo), same thread layout.
    depth = {0: 0, 1: 0, 2: halo if len(yc) > 1 else 0, 3: halo if len(xc) > 1 else 0}
    tiles = da.overlap.overlap(data, depth=depth, boundary="none", allow_rechunk=False)
    blocks = tiles.to_delayed().ravel()
    m = min(n, max(sample_chunks, 2 * threads))
    # Interior tiles first when sampling (full halo on every side, the common case).
    order = sorted(range(n), key=lambda k: (k // len(xc) in (0, len(yc) - 1)) + (k % len(xc) in (0, len(xc) - 1)))
    with dask.config.set(scheduler="threads", num_workers=threads):
        arrays = dask.compute(*[blocks[k] for k in order[:m]])
    det(arrays[0][:, :, :32, :32])  # warm-up
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(det, arrays))
    model_s = (time.perf_counter() - t0) * n / m
    print(json.dumps({"io_s": io_s, "model_s": model_s, "chunks": n, "sampled": m,
                      "threads": threads, "torch_threads": torch_threads, "halo": halo}))
    """
)


def floors(stack: Path, model: str | None, chunk: int, sample_chunks: int) -> dict:
    """I/O floor and model-only floor in a fresh process."""
    cmd = [sys.executable, "-c", _FLOORS, str(stack), model or "", str(chunk), str(sample_chunks)]
    res = run(cmd, "floors")
    return {**json.loads(res["out"]), "floor_peak_rss": res["peak_rss"]}


def detect_cmd(stack: Path, out: Path, model: str | None, chunk: int, extra: list[str]) -> list:
    cmd = [sys.executable, "-c", "from geochange.cli import main; main()", "-q", "detect"]
    cmd += [str(stack), "-o", str(out), "--no-quicklook", "--no-progress", "--overwrite"]
    cmd += ["--chunk-size", str(chunk), "--device", "cpu"]
    return cmd + (["--model", model] if model else []) + extra


# ----------------------------------------------------------------------------- main


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": os.getloadavg(),
    }
    try:
        info["lscpu"] = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        pass
    import torch

    info["torch"] = torch.__version__
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1024,2048,4096,8192", help="comma-separated edges, px")
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/geochange-scale"))
    ap.add_argument("--workers-size", type=int, default=2048, help="size of the 1 vs 2 run")
    ap.add_argument("--sample-chunks", type=int, default=8, help="chunks timed for the floor")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.workdir).free
    need = sum(s * s * DATES * BANDS * 2 for s in sizes) * 0.8  # DEFLATE keeps most of it
    if free < need:
        raise SystemExit(f"{args.workdir}: {free / 1e9:.1f} GB free, about {need / 1e9:.1f} needed")

    model = bench_model(args.workdir)
    results: dict = {"machine": machine(), "model": model or "default", "sizes": {}}
    print(f"model: {model or 'default'}; cores {os.cpu_count()}; load {os.getloadavg()}")
    header = (
        f"{'size':>6} {'chunks':>6} {'wall s':>8} {'Mpx*d/s':>8} {'peak GB':>8} "
        f"{'model s':>8} {'io s':>7} {'e2e/model':>9} {'e2e/io':>7}"
    )
    print(header)
    for size in sizes:
        t0 = time.perf_counter()
        stack = make_stack(size, args.workdir)
        gen_s = time.perf_counter() - t0
        out = args.workdir / f"out_{size}" / "changes.gpkg"
        out.parent.mkdir(exist_ok=True)
        e2e = run(detect_cmd(stack, out, model, args.chunk_size, []), f"detect {size}")
        fl = floors(stack, model, args.chunk_size, args.sample_chunks)
        mpx = size * size * DATES / 1e6
        row = {
            "generate_s": gen_s,
            "wall_s": e2e["wall_s"],
            "mpx_dates_per_s": mpx / e2e["wall_s"],
            "peak_rss": e2e["peak_rss"],
            **fl,
            "e2e_over_model": e2e["wall_s"] / fl["model_s"],
            "e2e_over_io": e2e["wall_s"] / fl["io_s"],
        }
        results["sizes"][size] = row
        print(
            f"{size:>6} {fl['chunks']:>6} {row['wall_s']:>8.1f} {row['mpx_dates_per_s']:>8.2f} "
            f"{row['peak_rss'] / 2**30:>8.2f} {fl['model_s']:>8.1f} {fl['io_s']:>7.1f} "
            f"{row['e2e_over_model']:>9.2f} {row['e2e_over_io']:>7.1f}",
            flush=True,
        )

    if args.workers_size:
        size = args.workers_size
        stack = make_stack(size, args.workdir)
        out = args.workdir / f"out_{size}_w" / "changes.gpkg"
        out.parent.mkdir(exist_ok=True)
        w = {}
        for n in (1, 2):
            extra = ["--workers", str(n), "--threads-per-worker", "1"]
            w[n] = run(detect_cmd(stack, out, model, args.chunk_size, extra), f"workers {n}")
        # The same single worker held to one core: the per-core baseline of scale-out.
        one = {sorted(os.sched_getaffinity(0))[0]}
        extra = ["--workers", "1", "--threads-per-worker", "1"]
        w["1core"] = run(detect_cmd(stack, out, model, args.chunk_size, extra), "1 core", one)
        results["workers"] = {
            "size": size,
            "wall_1_s": w[1]["wall_s"],
            "wall_2_s": w[2]["wall_s"],
            "wall_1_on_1_core_s": w["1core"]["wall_s"],
            "speedup_2_over_1": w[1]["wall_s"] / w[2]["wall_s"],
            "speedup_2_over_1_on_1_core": w["1core"]["wall_s"] / w[2]["wall_s"],
            "peak_rss_1": w[1]["peak_rss"],
            "peak_rss_2": w[2]["peak_rss"],
        }
        r = results["workers"]
        print(
            f"workers at {size}: 1 -> {r['wall_1_s']:.1f} s, 2 -> {r['wall_2_s']:.1f} s, "
            f"speed-up {r['speedup_2_over_1']:.2f}x (peak {r['peak_rss_1'] / 2**30:.2f} / "
            f"{r['peak_rss_2'] / 2**30:.2f} GB); 1 worker held to 1 core -> "
            f"{r['wall_1_on_1_core_s']:.1f} s, 2 workers on 2 cores are "
            f"{r['speedup_2_over_1_on_1_core']:.2f}x faster"
        )
    s = results["sizes"]
    if 2048 in s and 8192 in s:
        ratio = s[8192]["peak_rss"] / s[2048]["peak_rss"]
        results["peak_8192_over_2048"] = ratio
        print(f"peak memory 8192 / 2048: {ratio:.2f}x")
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    print(f"load average at end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
