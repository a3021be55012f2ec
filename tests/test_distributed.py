"""detect on dask.distributed: a real `dask scheduler` + two `dask worker` processes, a local
cluster, the CUDA path; outputs must equal the local threaded run."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from helpers import write_stack

from geochange.cli import cli
from geochange.errors import InputError
from geochange.io.stack import open_stack
from geochange.pipeline import detect, stack_chain

DATES = ["2022-03-01", "2022-05-17", "2022-08-02", "2022-10-20"]
START_TIMEOUT = 60  # s: a loaded 2-core machine starts processes slowly


def _scene(t=4, c=3, h=96, w=80, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(1000, 80, size=(c, h, w)).astype(np.float32)
    data = np.stack([base + rng.normal(0, 10, size=base.shape) for _ in range(t)])
    data[2:, :, 20:60, 30:62] += np.array([600, -400, 900][:c], np.float32)[:, None, None]
    data[1:, :, 70:90, 5:25] += np.array([300, 200, -300][:c], np.float32)[:, None, None]
    return np.clip(data, 1, 60000).astype(np.uint16)


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist") / "stack"
    write_stack(d, _scene(), DATES)
    return d


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real scheduler and two single-threaded workers on 127.0.0.1, random ports."""
    d = tmp_path_factory.mktemp("cluster")
    sched_file = d / "scheduler.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", DASK_DISTRIBUTED__WORKER__DAEMON="False")
    procs: list[subprocess.Popen] = []
    logs = []

    def start(args: list[str], name: str) -> subprocess.Popen:
        log = open(d / f"{name}.log", "wb")  # noqa: SIM115 - closed in the finaliser
        logs.append(log)
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=d)
        procs.append(p)
        return p

    try:
        start(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(sched_file)],
            "scheduler",
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not sched_file.is_file() or not sched_file.read_text().strip():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                pytest.fail(f"dask scheduler did not start: {(d / 'scheduler.log').read_text()}")
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            start(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                 "--no-nanny", "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "2GB",
                 "--local-directory", str(d / f"w{i}")],
                f"worker{i}",
            )  # fmt: skip
        from distributed import Client

        with Client(address, timeout=START_TIMEOUT, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
        yield address
    finally:
        for p in reversed(procs):
            _stop(p)
        for log in logs:
            log.close()


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _outputs(gpkg: Path) -> dict:
    stem = gpkg.with_suffix("")
    out = {}
    for kind in ("prob", "date"):
        path = stem.parent / f"{stem.name}_{kind}.tif"
        with rasterio.open(path) as src:
            out[kind] = src.read(1)
            out[kind + "_tags"] = src.tags()
    out["changes"] = gpd.read_file(gpkg, layer="changes")
    out["runs"] = gpd.read_file(gpkg, layer="runs")
    return out


def _assert_same(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["prob"], b["prob"])  # NaN == NaN here
    np.testing.assert_array_equal(a["date"], b["date"])
    assert a["prob_tags"] == b["prob_tags"]
    assert len(a["changes"]) > 0
    ca, cb = a["changes"], b["changes"]
    assert list(ca.columns) == list(cb.columns)
    assert ca.drop(columns="geometry").equals(cb.drop(columns="geometry"))
    assert ca.geometry.geom_equals_exact(cb.geometry, tolerance=0).all()


@pytest.mark.parametrize("method", ["cva", "cnn-lstm"])
def test_scheduler_address_gives_the_local_result(
    dask_cluster, stack_dir, tiny_model, tmp_path, method
):
    common = [str(stack_dir), "--method", method, "--chunk-size", "32", "--no-quicklook"]
    common += ["--no-progress", "--threshold", "0.3"]
    if method == "cnn-lstm":
        common += ["--model", str(tiny_model), "--device", "cpu"]
    _run(["detect", *common, "-o", str(tmp_path / "local.gpkg")])
    _run(["detect", *common, "-o", str(tmp_path / "remote.gpkg"), "--scheduler", dask_cluster])
    local, remote = _outputs(tmp_path / "local.gpkg"), _outputs(tmp_path / "remote.gpkg")
    _assert_same(local, remote)
    assert local["runs"]["scheduler"][0] == "threads"
    assert remote["runs"]["scheduler"][0] == "remote"


def test_cluster_workers_loaded_the_model_once(dask_cluster, stack_dir, tiny_model):
    """The detector ships as path + statistics (small); each worker keeps one network."""
    from distributed import Client

    stack = open_stack(stack_dir, chunk_size=32)
    det = stack_chain(stack, model=tiny_model, device="cpu")
    assert len(pickle.dumps(det)) < 10_000
    detect(stack, method="cnn-lstm", model=tiny_model, device="cpu", scheduler=dask_cluster)

    def cached_nets() -> int:
        from geochange.stages import network as predict

        return len(predict._NETS)

    with Client(dask_cluster, set_as_default=False) as client:
        counts = client.run(cached_nets)
    assert len(counts) == 2
    assert all(n <= 1 for n in counts.values()) and sum(counts.values()) >= 1, counts


def test_progress_on_a_cluster_counts_every_chunk_from_the_workers(dask_cluster, stack_dir):
    """The bar hears each finished chunk from the workers' events (no scheduler internals;
    the scheduler only relays them)."""
    import functools

    from geochange import cluster, tiling

    stack = open_stack(stack_dir, chunk_size=32)
    ychunks, xchunks = tiling.plan_chunks(stack.grid.height, stack.grid.width, 32, 0)
    n = len(ychunks) * len(xchunks)
    fn = functools.partial(np.nanmean, axis=0)  # (t, c, h, w) -> (c, h, w), picklable
    with cluster.runtime(dask_cluster, None, None, n_chunks=n) as rt:
        arr = tiling.window_map(stack.reader(), (ychunks, xchunks), fn, 0, out_bands=3, name="m")
        with rt.compute(), rt.progress(arr.name, n, enabled=True) as bar:
            total = float(arr.sum().compute())
            deadline = time.monotonic() + 20  # events travel on their own
            while bar.received < n and time.monotonic() < deadline:
                time.sleep(0.05)
            assert bar.received == n > 1
    assert total == pytest.approx(float(np.nanmean(stack.data.compute(), axis=0).sum()))


def test_local_cluster_gives_the_local_result(stack_dir, tmp_path):
    args = [str(stack_dir), "--method", "cva", "--chunk-size", "32", "--no-quicklook"]
    _run(["detect", *args, "-o", str(tmp_path / "a.gpkg")])
    _run(["detect", *args, "-o", str(tmp_path / "b.gpkg"), "--workers", "2"])
    _assert_same(_outputs(tmp_path / "a.gpkg"), _outputs(tmp_path / "b.gpkg"))


def test_in_memory_run_on_a_cluster(dask_cluster, stack_dir):
    local = detect(stack_dir, method="cva", chunk_size=32)
    remote = detect(stack_dir, method="cva", chunk_size=32, scheduler=dask_cluster)
    np.testing.assert_array_equal(local.prob.compute(), remote.prob.compute())
    assert len(local.changes) == len(remote.changes) > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workers": 0}, "--workers: found 0, expected a whole number"),
        ({"threads_per_worker": 0}, "--threads-per-worker: found 0"),
        ({"scheduler": "threads", "workers": 2}, "--workers 2 starts a local cluster"),
        ({"scheduler": "localhost:8786"}, "--scheduler: found 'localhost:8786', expected"),
        ({"scheduler": "missing.json"}, "scheduler file 'missing.json' not found"),
        (
            {"scheduler": "tcp://127.0.0.1:8786", "workers": 2},
            "--workers: given together with --scheduler",
        ),
        ({"batch_size": 4}, "batch_size: given but method is 'cva'"),
        ({"amp": True}, "amp: given but method is 'cva'"),
    ],
)
def test_bad_cluster_arguments_name_the_flag(stack_dir, kwargs, match):
    with pytest.raises(InputError, match=match):
        detect(stack_dir, method="cva", chunk_size=32, **kwargs)


@pytest.mark.gpu
def test_cuda_matches_cpu(stack_dir, tiny_model):
    cpu = detect(stack_dir, model=tiny_model, device="cpu", chunk_size=32)
    gpu = detect(stack_dir, model=tiny_model, device="cuda", chunk_size=32, batch_size=8)
    a, b = cpu.prob.compute(), gpu.prob.compute()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, atol=1e-3, equal_nan=True)
    amp = detect(stack_dir, model=tiny_model, device="cuda", chunk_size=32, amp=True)
    np.testing.assert_allclose(a, amp.prob.compute(), atol=2e-2, equal_nan=True)


@pytest.mark.gpu
def test_cuda_on_a_local_cluster_matches_cpu(stack_dir, tiny_model):
    """Two worker processes share the GPU; the result equals the CPU run (float tolerance)."""
    cpu = detect(stack_dir, model=tiny_model, device="cpu", chunk_size=32, threshold=0.3)
    gpu = detect(
        stack_dir, model=tiny_model, device="cuda", chunk_size=32, threshold=0.3, workers=2
    )
    a, b = cpu.prob.compute(), gpu.prob.compute()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, atol=1e-3, equal_nan=True)
    assert gpu.run["scheduler"] == "local-cluster" and gpu.run["device"].startswith("cuda")


_MMAP_PROBE = """
import ctypes, sys
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
def mmapped_4mib():
    before = libc.mallinfo2().hblks
    p = libc.malloc(4 << 20)
    n = libc.mallinfo2().hblks - before
    libc.free(ctypes.c_void_p(p))
    return n
"""


def _mmapped_4mib() -> int:
    """1 if a 4 MiB malloc in this process becomes its own mmap, else 0 (glibc only)."""
    ns: dict = {}
    exec(_MMAP_PROBE, ns)
    return ns["mmapped_4mib"]()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_workers_undo_the_nanny_malloc_trim_threshold():
    """dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536, which freezes glibc's mmap threshold at
    128 KiB (torch 2.8× slower); the worker plugin restores it."""
    from geochange.cluster import restore_malloc_thresholds, runtime

    code = _MMAP_PROBE + "a = mmapped_4mib()\n"
    code += "from geochange.cluster import restore_malloc_thresholds as r\nr()\n"
    code += "print(a, mmapped_4mib())"
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "0"], out.stdout + out.stderr
    assert restore_malloc_thresholds() is True
    with runtime(None, workers=1, threads_per_worker=1) as rt:
        found = rt.client.run(_mmapped_4mib)
    assert list(found.values()) == [0], found
