"""What a CUDA device buys over the CPU of the same machine: detect, adapt and train.

Run on a machine with a GPU (results in benchmarks/GPU.md)::

    python benchmarks/gpu.py --size 2048 --json /tmp/gpu.json

1. detect: data_samples/stack tiled to SIZE² px (its dates × 4 bands, real content, no synth run
   needed), detected in memory (model + vectorise, no files written) with the shipped model:
   CPU (all cores) and CUDA at several chunk sizes / batch sizes, float16 autocast too. The CUDA
   probabilities are compared with the CPU ones (max abs difference, and agreement of the change
   mask at 0.5). The model-only floor on the GPU (the detector on tiles already in memory, one
   thread, synchronised) says how much of the CUDA run is the network.
2. adapt: steps per second of `adapt_network` on data_samples, CPU vs CUDA, same wall budget.
3. train: the default config's batches per second from the synthetic generator (CPU, one
   process) and optimizer steps per second on CPU and CUDA: is GPU training data-bound?

Each part is timed in this process; one failing part is reported and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import rasterio
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples" / "stack"


def tiled_stack(out: Path, size: int) -> Path:
    """data_samples' dates tiled to size × size (same origin and pixel size), dates kept."""
    out.mkdir(parents=True, exist_ok=True)
    for src_path in sorted(SAMPLES.glob("*.tif")):
        with rasterio.open(src_path) as src:
            data = src.read()
            profile = src.profile
            tags = src.tags()
        reps = (1, -(-size // data.shape[1]), -(-size // data.shape[2]))
        big = np.tile(data, reps)[:, :size, :size]
        profile.update(width=size, height=size, compress="deflate", tiled=True)
        with rasterio.open(out / src_path.name, "w", **profile) as dst:
            dst.write(big)
            dst.update_tags(**tags)
    return out


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_detect(stack_dir: Path, size: int, runs: list[dict]) -> list[dict]:
    from geochange.pipeline import detect

    rows, ref = [], None
    mpx_dates = size * size * len(list(stack_dir.glob("*.tif"))) / 1e6
    for cfg in runs:
        t0 = time.perf_counter()
        res = detect(stack_dir, progress=False, **cfg)
        prob = np.asarray(res.prob.compute())
        sync()
        wall = time.perf_counter() - t0
        row = {**cfg, "wall_s": round(wall, 2), "mpx_date_per_s": round(mpx_dates / wall, 2)}
        row["polygons"] = len(res.changes)
        if ref is None:
            ref = prob
        else:
            ok = ~np.isnan(ref) & ~np.isnan(prob)
            row["max_abs_diff_vs_first"] = float(np.abs(ref[ok] - prob[ok]).max())
            row["mask_agreement_vs_first"] = float(((ref[ok] >= 0.5) == (prob[ok] >= 0.5)).mean())
        rows.append(row)
        print("detect", json.dumps(row), flush=True)
    return rows


def model_floor(stack_dir: Path, chunk: int, batch_size: int, amp: bool) -> dict:
    """The CUDA detector alone on in-memory tiles (chunk + halo), one thread, synchronised."""
    from geochange.io.stack import open_stack
    from geochange.pipeline import stack_chain

    stack = open_stack(stack_dir, chunk_size=chunk)
    det = stack_chain(stack, device="cuda", batch_size=batch_size, amp=amp)
    det.detector.tile_size = chunk
    h, w = stack.grid.shape
    read = stack.reader()
    halo = det.halo
    tiles = []
    for y0 in range(0, h, chunk):
        for x0 in range(0, w, chunk):
            ya, xa = max(0, y0 - halo), max(0, x0 - halo)
            yb, xb = min(h, y0 + chunk + halo), min(w, x0 + chunk + halo)
            tiles.append(np.asarray(read[:, :, ya:yb, xa:xb]))
    det(tiles[0])  # warm-up (cuDNN autotune, allocator)
    sync()
    t0 = time.perf_counter()
    for tile in tiles:
        det(tile)
    sync()
    s = time.perf_counter() - t0
    return {"chunk": chunk, "batch_size": batch_size, "amp": amp, "tiles": len(tiles),
            "model_s": round(s, 2), "mpx_date_per_s": round(h * w * stack.T / 1e6 / s, 2)}  # fmt: skip


def bench_adapt(seconds: float) -> list[dict]:
    from geochange.io.stack import open_stack
    from geochange.model.adapt import adapt_network

    rows = []
    for device in ("cpu", "cuda"):
        res = adapt_network(
            open_stack(SAMPLES), minutes=seconds / 60, device=device, seed=0, progress=False
        )
        info = res.info
        row = {"device": device, "steps": info["steps"], "seconds": info["seconds"],
               "steps_per_s": round(info["steps"] / max(info["seconds"], 1e-9), 2),
               "torch_threads": torch.get_num_threads()}  # fmt: skip
        rows.append(row)
        print("adapt", json.dumps(row), flush=True)
    return rows


def bench_train(n_batches: int, steps: int) -> list[dict]:
    """Steps/s of the default config: scene + chip generation (CPU, one process) and optimizer
    steps on batches already made, on CPU (all cores) and CUDA."""
    import yaml

    from geochange.model.data import ChangeDataModule
    from geochange.model.task import ChangeTask

    cfg = yaml.safe_load((ROOT / "pipelines" / "default_model.yaml").read_text())
    data_cfg = {**cfg["data"], "num_workers": 0, "seed": 0}
    dm = ChangeDataModule(**data_cfg)
    t0 = time.perf_counter()
    it = iter(dm.train_dataset(0))
    batches = [next(it) for _ in range(n_batches)]
    gen_s = time.perf_counter() - t0
    rows = [{"part": "data (scenes + chips, 1 process)", "batches": n_batches,
             "per_s": round(n_batches / gen_s, 2)}]  # fmt: skip
    print("train", json.dumps(rows[0]), flush=True)
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        task = ChangeTask(**cfg["model"], **{**cfg["task"], "scheduler": "none"}).to(device)
        opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
        on = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]

        def step(b: dict, task=task, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            task.losses(b)[0].backward()
            opt.step()

        step(on[0])  # warm-up
        sync()
        t0 = time.perf_counter()
        for k in range(steps):
            step(on[k % len(on)])
        sync()
        s = time.perf_counter() - t0
        row = {"part": f"optimizer steps on {device}", "steps": steps,
               "per_s": round(steps / s, 2), "torch_threads": torch.get_num_threads()}  # fmt: skip
        rows.append(row)
        print("train", json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "geochange-gpu")
    ap.add_argument("--adapt-seconds", type=float, default=20.0)
    ap.add_argument("--train-batches", type=int, default=40)
    ap.add_argument("--train-steps", type=int, default=100)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs CUDA (torch.cuda.is_available() is False)")

    report: dict = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "size": args.size,
    }

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))

    def part(name, fn, *a) -> None:
        t0 = time.perf_counter()
        try:
            report[name] = fn(*a)
        except Exception:
            report[name] = {"error": traceback.format_exc()[-3000:]}
            print(name, "FAILED\n", report[name]["error"], flush=True)
        print(f"[{name}: {time.perf_counter() - t0:.0f} s]", flush=True)
        save()

    t0 = time.perf_counter()
    stack_dir = tiled_stack(args.workdir / f"stack{args.size}", args.size)
    report["make_stack_s"] = round(time.perf_counter() - t0, 1)
    runs = [
        {"device": "cpu", "chunk_size": 512},
        {"device": "cuda", "chunk_size": 512, "batch_size": 4},
        {"device": "cuda", "chunk_size": 1024, "batch_size": 16},
        {"device": "cuda", "chunk_size": 1024, "batch_size": 16, "amp": True},
    ]
    part("detect", bench_detect, stack_dir, args.size, runs)
    part("model_floor", lambda: [model_floor(stack_dir, 1024, 16, False),
                                 model_floor(stack_dir, 1024, 16, True)])  # fmt: skip
    part("adapt", bench_adapt, args.adapt_seconds)
    part("train", bench_train, args.train_batches, args.train_steps)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
