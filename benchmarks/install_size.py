"""Size of a fresh environment: a CPU-only install measured, the CUDA build's wheels counted -> INSTALL.md.

1. A new virtual environment in a temporary folder; ``pip install TORCH_SPEC`` (the CPU build:
   ``--torch-index https://download.pytorch.org/whl/cpu`` where that index is reachable, or a
   local CPU wheel that satisfies ``torch==VERSION``), then ``pip install -e REPO`` as the README
   says; the folder's size on disk in total and per package group.
2. The CUDA build that plain ``pip install torch`` resolves on PyPI for this Python and machine:
   pip's resolver (``--dry-run --report``) lists the wheels, their sizes come from the package
   index's JSON (the sizes pip shows when it downloads); nothing multi-GB is downloaded.

    python benchmarks/install_size.py --torch-version 2.13.0 --out benchmarks/INSTALL.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org/simple"
GROUPS = {
    "torch (CPU build)": ("torch", "functorch", "torchgen"),
    "training only: pytorch-lightning, torchmetrics, lightning-utilities, pyyaml": (
        "pytorch_lightning", "torchmetrics", "lightning_utilities", "yaml", "_yaml",
    ),
    "geospatial: rasterio, pyogrio, pyproj, shapely, geopandas (GDAL/PROJ bundled)": (
        "rasterio", "rasterio.libs", "pyogrio", "pyogrio.libs", "pyproj", "pyproj.libs",
        "shapely", "shapely.libs", "geopandas",
    ),
    "numpy, scipy, pandas": ("numpy", "numpy.libs", "scipy", "scipy.libs", "pandas"),
    "dask, distributed": ("dask", "distributed"),
    "matplotlib": ("matplotlib", "mpl_toolkits", "PIL", "pillow.libs", "fontTools",
                   "kiwisolver", "contourpy"),
    "sympy (a torch dependency)": ("sympy", "mpmath"),
}  # fmt: skip


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                total += os.lstat(p).st_blocks * 512
    return total


def _run(cmd: list[str], **kw) -> None:
    subprocess.run(cmd, check=True, **kw)


def measure_cpu(torch_version: str, torch_index: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="geochange-venv-") as tmp:
        venv = Path(tmp) / "venv"
        _run([sys.executable, "-m", "venv", str(venv)])
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--quiet"]
        _run([*pip, "install", "--upgrade", "pip"])
        torch = [*pip, "install", f"torch=={torch_version}"]
        _run(torch + (["--index-url", torch_index] if torch_index else []))
        _run([*pip, "install", "-e", str(ROOT)])
        site = next((venv / "lib").glob("python*/site-packages"))
        sizes = {p.name: _du(p) for p in site.iterdir() if p.is_dir()}
        frozen = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        torch_line = next(line for line in frozen.splitlines() if line.startswith("torch=="))
        groups = {g: sum(sizes.get(n, 0) for n in names) for g, names in GROUPS.items()}
        return {"total": _du(venv), "groups": groups, "torch": torch_line}


def cuda_wheels(torch_version: str) -> list[tuple[str, str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        _run([sys.executable, "-m", "pip", "install", "--isolated", "--quiet", "--dry-run",
              "--ignore-installed", "--index-url", PYPI, "--report", str(report),
              f"torch=={torch_version}"])  # fmt: skip
        wanted = json.loads(report.read_text())["install"]
    rows = []
    for item in wanted:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if not name.lower().startswith(("torch", "nvidia", "triton", "cuda")):
            continue
        filename = item["download_info"]["url"].rsplit("/", 1)[-1].split("#")[0]
        request = urllib.request.Request(
            f"{PYPI}/{name.lower()}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            files = json.load(answer)["files"]
        size = next(f.get("size") or 0 for f in files if f["filename"] == filename)
        rows.append((name, version, int(size)))
    return sorted(rows, key=lambda r: -r[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-version", default="2.13.0")
    parser.add_argument("--torch-index", default=None, help="e.g. the PyTorch CPU wheel index")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    cpu = measure_cpu(args.torch_version, args.torch_index)
    cuda = cuda_wheels(args.torch_version)
    gb = 1e9
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    lines = [
        "# Install size",
        "",
        f"`python benchmarks/install_size.py --torch-version {args.torch_version}` at commit "
        f"{commit}; Python {platform.python_version()}, {platform.machine()} Linux.",
        "",
        "## CPU-only (measured)",
        "",
        f"A fresh virtual environment after `pip install torch` (the CPU build, {cpu['torch']}) "
        f"and `pip install -e .`: **{cpu['total'] / gb:.2f} GB** on disk.",
        "",
        "| part | size |",
        "|---|---|",
    ]
    for group, size in cpu["groups"].items():
        lines.append(f"| {group} | {size / 1e6:.0f} MB |")
    rest = cpu["total"] - sum(cpu["groups"].values())
    lines += [f"| everything else (pip, click, tqdm, ... and geochange) | {rest / 1e6:.0f} MB |"]
    total_cuda = sum(s for _, _, s in cuda)
    torch_cuda = sum(s for n, _, s in cuda if n == "torch")
    lines += [
        "",
        "## With the CUDA build (wheel sizes)",
        "",
        f"Plain `pip install torch=={args.torch_version}` on Linux x86_64 resolves to the CUDA "
        f"build: {len(cuda)} wheels, **{total_cuda / gb:.2f} GB to download** (torch itself "
        f"{torch_cuda / gb:.2f} GB, the CUDA libraries and triton "
        f"{(total_cuda - torch_cuda) / gb:.2f} GB), unpacked to more than that on disk, "
        "instead of the CPU build's torch above. Sizes as the package index reports them to pip; "
        "nothing was downloaded.",
        "",
        "| wheel | version | size |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {v} | {s / 1e6:.0f} MB |" for n, v, s in cuda]
    lines += [
        "",
        "Without a GPU, install the CPU build first (README): `pip install torch --index-url "
        "https://download.pytorch.org/whl/cpu`.",
        "",
        "The training-only packages (pytorch-lightning, torchmetrics, lightning-utilities, "
        "pyyaml) stay core dependencies: the project's charter requires pytorch-lightning and "
        "together they are the row above, about 1 % of the CPU-only environment.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
