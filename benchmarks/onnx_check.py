"""Would ONNX Runtime serve inference better than torch? Export the default model, time both.

Needs onnxruntime and onnx, which geochange does not depend on (install them apart, e.g.
``pip install --target /tmp/ort onnxruntime onnx`` and ``PYTHONPATH=/tmp/ort``). One thread each
(``OMP_NUM_THREADS=1``), one tile of the size detect feeds the model (a 512 chunk + halo is
larger; the ratio is what counts), random normalised bands, every date valid.

    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/ort python benchmarks/onnx_check.py --size 256 --dates 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--dates", type=int, default=6)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import onnxruntime as ort

    from geochange.model.checkpoint import load_model

    torch.set_num_threads(1)
    net, _ = load_model()
    rng = np.random.default_rng(0)
    shape = (1, args.dates, args.bands, args.size, args.size)
    x = torch.from_numpy(rng.normal(0, 1, size=shape).astype(np.float32))
    valid = torch.ones((1, args.dates, args.size, args.size), dtype=torch.bool)
    wl = torch.tensor([[490.0, 560.0, 665.0, 842.0][: args.bands]])

    with torch.inference_mode():
        ref = [t.numpy() for t in net(x, valid, wl)[:2]]
        t_torch = _median_seconds(lambda: net(x, valid, wl), args.repeats)

    folder = Path(tempfile.mkdtemp())
    path = folder / "default.onnx"
    t0 = time.perf_counter()
    torch.onnx.export(
        net,
        (x, valid, wl),
        str(path),
        input_names=["x", "valid", "wavelengths"],
        output_names=["change_logit", "interval_logits"],
        dynamic_axes={"x": {0: "b", 3: "h", 4: "w"}, "valid": {0: "b", 2: "h", 3: "w"}},
        dynamo=False,
    )
    t_export = time.perf_counter() - t0
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy(), "valid": valid.numpy(), "wavelengths": wl.numpy()}
    feed = {i.name: feed[i.name] for i in session.get_inputs()}
    out = session.run(None, feed)
    t_ort = _median_seconds(lambda: session.run(None, feed), args.repeats)
    diff = max(float(np.nanmax(np.abs(a - b))) for a, b in zip(ref, out[:2]))
    print(f"| tile | {args.dates} dates x {args.bands} bands x {args.size}² px |")
    print("|---|---|")
    print(f"| torch {torch.__version__} (1 thread) | {t_torch:.2f} s |")
    print(f"| onnxruntime {ort.__version__} (1 thread) | {t_ort:.2f} s |")
    print(f"| largest logit difference | {diff:.2e} |")
    print(f"| export (torch.onnx, fixed dates and bands) | {t_export:.1f} s |")
    print(f"| ONNX file | {path.stat().st_size / 1e3:.0f} kB |")


if __name__ == "__main__":
    main()
