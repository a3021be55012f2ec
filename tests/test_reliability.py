"""Faults a careful user meets, tried for real: kill -9, SIGTERM, concurrent runs, bad inputs.

Every test starts from a previous output set (GeoPackage, rasters, quicklook) in the output
folder and checks that a failed, killed or refused run leaves it byte-identical, and that a
refused run says why in one line with exit status 2 (the user's input) or 1 (the machine).

``python tests/test_reliability.py --doc`` runs the bad-input table below and writes the measured
outcome of each case to docs/RELIABILITY.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from helpers import run_cli, write_stack

ROOT = Path(__file__).resolve().parents[1]
DATES = ["2022-01-01", "2022-03-01", "2022-06-01", "2022-09-01"]
#: A fast run: a classical baseline, no co-registration (the scene has no shift to find).
FAST = ("--method", "cva", "--skip", "coregister", "--no-progress")


def _scene() -> np.ndarray:
    rng = np.random.default_rng(7)
    data = (rng.random((4, 3, 64, 64)) * 1000 + 500).astype(np.uint16)
    data[2:, :, 20:40, 24:44] += 3000  # a change seen from the third date on
    return data


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stack") / "in"
    write_stack(folder, _scene(), DATES)
    return folder


@pytest.fixture(scope="module")
def previous(tmp_path_factory, stack) -> Path:
    """A finished run's output set (threshold 0.5), copied by each test."""
    out = tmp_path_factory.mktemp("previous") / "out"
    code, _, err = run_cli("detect", stack, "-o", out / "c.gpkg", *FAST)
    assert code == 0, err
    return out


@pytest.fixture
def out(tmp_path, previous) -> Path:
    folder = tmp_path / "out"
    shutil.copytree(previous, folder)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    """Every visible file of the folder with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _thresholds(folder: Path) -> set[str]:
    """The threshold each member of a set was made with: one value in a consistent set."""
    runs = pyogrio.read_dataframe(folder / "c.gpkg", layer="runs")
    found = {repr(float(runs["threshold"][0]))}
    for name in ("c_prob.tif", "c_date.tif"):
        with rasterio.open(folder / name) as src:
            found.add(repr(float(src.tags()["threshold"])))
    return found


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- real processes

_MAIN = "import sys; from geochange.cli import main; sys.argv[0] = 'geochange'; main(sys.argv[1:])"


def _spawn(*args: object) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-c", _MAIN, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first: {proc.returncode} {proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.005)


def _work_has(folder: Path, name: str) -> Callable[[], bool]:
    return lambda: any((w / name).exists() for w in folder.glob(".c.gpkg.work-*"))


def test_kill_9_during_overwrite_leaves_the_previous_set_byte_identical(stack, out):
    before = _files(out)
    proc = _spawn("detect", stack, "-o", out / "c.gpkg", *FAST, "--overwrite", "--threshold", 0.6)
    # The moment the issue names: the new probability raster is complete.
    _wait_for(proc, _work_has(out, "c_prob.tif"))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert _files(out) == before
    assert any(name.startswith(".c.gpkg.work-") for name in _hidden(out))  # the dead run's

    # The next run on the target removes what the dead one left and publishes a whole set.
    code, _, err = run_cli("detect", stack, "-o", out / "c.gpkg", *FAST, "--overwrite")
    assert code == 0, err
    assert _hidden(out) == []
    assert _thresholds(out) == {"0.5"}


def test_sigterm_stops_a_run_like_ctrl_c_and_keeps_the_previous_set(stack, out):
    before = _files(out)
    args = ("detect", stack, "-o", out / "c.gpkg", *FAST, "--overwrite", "--threshold", 0.6)
    proc = _spawn(*args)
    _wait_for(proc, _work_has(out, "c_prob.tif"))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    line = _one_line(err)
    assert "SIGTERM" in line and "1 of 1 chunks are kept" in line and "--resume" in line
    assert _files(out) == before
    # The lock is released; the work folder holds the finished chunks only.
    (work,) = (out / name for name in _hidden(out))
    assert sorted(p.name for p in (work / "chunks").iterdir()) == ["0-0.npy", "manifest.json"]
    assert [p.name for p in work.iterdir()] == ["chunks"]

    code, stdout, err = run_cli(*args, "--resume")
    assert code == 0, err
    assert "1 chunks were kept" in stdout
    assert _thresholds(out) == {"0.6"}
    assert _hidden(out) == []


def test_two_runs_on_one_output_one_wins_the_other_fails_at_once(stack, out):
    before = _files(out)
    first = _spawn("detect", stack, "-o", out / "c.gpkg", *FAST, "--overwrite", "--threshold", 0.6)
    _wait_for(first, _work_has(out, "c_prob.tif"))
    first.send_signal(signal.SIGSTOP)  # hold the first run inside its work, lock held
    try:
        start = time.monotonic()
        code, _, err = run_cli(
            "detect", stack, "-o", out / "c.gpkg", *FAST, "--overwrite", "--threshold", 0.7
        )
        waited = time.monotonic() - start
    finally:
        first.send_signal(signal.SIGCONT)
    assert code == 1
    assert f"being written by another geochange run (pid {first.pid})" in _one_line(err)
    assert waited < 20  # validation only: no waiting on the lock, no compute
    assert _files(out) == before
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert _thresholds(out) == {"0.6"}  # the winner's set, whole
    assert _hidden(out) == []


@pytest.mark.slow
def test_two_runs_started_together_never_mix(stack, out):
    runs = [
        _spawn("detect", stack, "-o", out / "c.gpkg", *FAST, "--overwrite", "--threshold", t)
        for t in (0.6, 0.7)
    ]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in runs]
    assert any(code == 0 for code, _ in results), results
    for code, err in results:
        if code != 0:
            assert code == 1 and "another geochange run" in _one_line(err)
    assert len(_thresholds(out)) == 1
    assert _hidden(out) == []


# --------------------------------------------------------------------------- resume

#: The deep model (a tiny one) on 16 chunks: slow enough per chunk to be killed in the middle.
DEEP = ("--method", "cnn-lstm", "--device", "cpu", "--skip", "coregister", "--chunk-size", "32",
        "--no-progress")  # fmt: skip
#: Two dask threads here, as two single-threaded workers: the same torch threads per task
#: (cores // 2) on the threaded scheduler and on a cluster, so their results agree bit for bit.
TWO = ("--threads-per-worker", "2")


def _deep_scene() -> np.ndarray:
    rng = np.random.default_rng(3)
    base = rng.normal(1000, 80, size=(3, 128, 128))
    data = np.stack([base + rng.normal(0, 10, size=base.shape) for _ in range(4)])
    data[2:, :, 20:60, 30:62] += 500
    return np.clip(data, 1, 60000).astype(np.uint16)


@dataclass(frozen=True)
class Unfinished:
    """A run killed with ``kill -9`` in the middle of its chunks, and the same command run
    again without ``--resume`` on a copy of what it left (an uninterrupted run)."""

    stack: Path
    args: tuple  # detect's arguments but -o and the threads
    killed: Path  # the folder of the killed run: its work folder only
    kept: int  # chunks finished when it was killed
    whole: Path  # the folder of the run started over
    whole_output: tuple[int, str, str]  # its exit status, stdout and stderr


def _chunk_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".c.gpkg.work-*/chunks/*.npy"))


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory, tiny_model) -> Unfinished:
    base = tmp_path_factory.mktemp("unfinished")
    stack = base / "in"
    write_stack(stack, _deep_scene(), DATES)
    args = ("detect", stack, *DEEP, "--model", tiny_model)
    killed = base / "killed"
    proc = _spawn(*args, *TWO, "-o", killed / "c.gpkg")
    _wait_for(proc, lambda: bool(_chunk_files(killed)), timeout=300)
    proc.send_signal(signal.SIGSTOP)  # freeze it to count what it finished, then kill it
    kept = len(_chunk_files(killed))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    whole = base / "whole"
    shutil.copytree(killed, whole)
    again = _spawn(*args, *TWO, "-o", whole / "c.gpkg")
    stdout, err = again.communicate(timeout=300)
    return Unfinished(stack, args, killed, kept, whole, (again.returncode, stdout, err))


def _same_set(a: Path, b: Path, differ: tuple[str, ...] = ()) -> None:
    """Two output sets equal bit for bit: rasters and quicklook byte for byte, the GeoPackage's
    layers value for value (its ``runs`` record but the creation time and ``differ``)."""
    for name in ("c_prob.tif", "c_date.tif", "c_quicklook.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ca = pyogrio.read_dataframe(a / "c.gpkg", layer="changes")
    cb = pyogrio.read_dataframe(b / "c.gpkg", layer="changes")
    assert len(ca) > 0 and ca.drop(columns="geometry").equals(cb.drop(columns="geometry"))
    assert list(ca.geometry.to_wkb()) == list(cb.geometry.to_wkb())
    ra = pyogrio.read_dataframe(a / "c.gpkg", layer="runs").drop(columns=["created", *differ])
    rb = pyogrio.read_dataframe(b / "c.gpkg", layer="runs").drop(columns=["created", *differ])
    assert ra.equals(rb)


def test_resume_after_kill_9_gives_the_uninterrupted_outputs_bit_for_bit(unfinished, tmp_path):
    assert 0 < unfinished.kept < 16  # killed in the middle of its chunks
    out = tmp_path / "out"
    shutil.copytree(unfinished.killed, out)
    proc = _spawn(*unfinished.args, *TWO, "-o", out / "c.gpkg", "--resume")
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"{unfinished.kept} chunks were kept" in stdout
    _same_set(out, unfinished.whole)
    assert _hidden(out) == []


def _resume_refused(unfinished: Unfinished, tmp: Path, *extra: object) -> str:
    out = tmp / "out"
    shutil.copytree(unfinished.killed, out)
    before = {p.name: p.read_bytes() for p in _chunk_files(out)}
    code, _, err = run_cli(*unfinished.args, *TWO, "-o", out / "c.gpkg", "--resume", *extra)
    after = {p.name: p.read_bytes() for p in _chunk_files(out)}
    assert code == 2, err
    assert len(after) == unfinished.kept and after == before  # kept for a resume with its options
    assert _files(out) == {}  # nothing published
    return _one_line(err)


def test_resume_refuses_a_changed_option(unfinished, tmp_path):
    line = _resume_refused(unfinished, tmp_path, "--threshold", "0.6")
    assert "cannot be continued: it ran with --threshold 0.5, this run with 0.6" in line


def test_resume_refuses_a_changed_input(unfinished, tmp_path):
    first = sorted(unfinished.stack.glob("*.tif"))[0]
    st = first.stat()
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        line = _resume_refused(unfinished, tmp_path)
    finally:
        os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f"input {str(first)!r} changed since" in line


def test_resume_refuses_a_changed_model(unfinished, tmp_path):
    import torch

    from geochange.model import CNNLSTM, save_model

    torch.manual_seed(1)
    other = tmp_path / "tiny.ckpt"
    save_model(CNNLSTM(in_bands=None, features=4, hidden=4, head_hidden=4), other, {"name": "b"})
    model = Path(unfinished.args[unfinished.args.index("--model") + 1])
    shutil.copy(model, tmp_path / "same.ckpt")
    shutil.copy(other, model)  # the same path, other weights
    try:
        line = _resume_refused(unfinished, tmp_path)
    finally:
        shutil.copy(tmp_path / "same.ckpt", model)
    assert "its model file had sha256" in line


def test_a_run_without_resume_says_an_unfinished_run_exists(unfinished):
    code, stdout, err = unfinished.whole_output
    assert code == 0, err
    assert f"left {unfinished.kept} of 16 chunks" in err and "--resume" in err
    assert "chunks were kept" not in stdout  # started over
    assert _hidden(unfinished.whole) == []  # the unfinished run's chunks go with a published set


# --------------------------------------------------------------------------- dask workers


def _workers_of(pid: int) -> list[int]:
    """Worker processes a dask nanny started under process ``pid`` (``spawn`` children)."""
    import psutil

    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmd:
            found.append(child.pid)
    return sorted(found)


def _kill_workers(proc: subprocess.Popen, out: Path, parent: int, both: bool = True) -> int:
    """Once the run has kept a chunk, kill -9 one of its two workers. With ``both``, the other
    is held still until the nanny has started a new worker, then killed -9 too: every chunk left
    is computed by restarted workers. Returns the chunks finished before the kills."""
    _wait_for(proc, lambda: bool(_chunk_files(out)), timeout=300)
    first = _workers_of(parent)
    assert len(first) == 2, first
    if both:
        os.kill(first[1], signal.SIGSTOP)
    os.kill(first[0], signal.SIGKILL)
    if not both:
        return len(_chunk_files(out))
    _wait_for(proc, lambda: any(p not in first for p in _workers_of(parent)), timeout=120)
    kept = len(_chunk_files(out))
    os.kill(first[1], signal.SIGKILL)
    return kept


def _torch_threads_of_workers(address: str) -> list[int]:
    from distributed import Client

    def threads() -> int:
        import torch

        return torch.get_num_threads()

    with Client(address, timeout=60, set_as_default=False) as client:
        return sorted(client.run(threads).values())


@pytest.fixture
def dask_cluster(tmp_path):
    """A real ``dask scheduler`` and ``dask worker --nworkers 2`` (nannies) on 127.0.0.1."""
    from distributed import Client

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    sched_file = tmp_path / "scheduler.json"
    logs = open(tmp_path / "cluster.log", "wb")  # noqa: SIM115 - closed below
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
         "0", "--dashboard-address", ":0", "--scheduler-file", str(sched_file)],
        env=env, stdout=logs, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    workers = None
    try:
        _wait_for(scheduler, lambda: sched_file.is_file() and bool(sched_file.read_text()))
        address = json.loads(sched_file.read_text())["address"]
        workers = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "2",
             "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "2GB",
             "--local-directory", str(tmp_path / "workers")],
            env=env, stdout=logs, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
        yield sched_file, workers.pid
    finally:
        for p in (workers, scheduler):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        logs.close()


def test_dask_workers_killed_mid_run_change_no_bit(unfinished, dask_cluster, tmp_path):
    """Real scheduler and nanny workers; both original workers die with kill -9 during the run,
    so the chunks left are computed by workers their nannies restarted."""
    from geochange.cluster import cpu_cores

    sched_file, parent = dask_cluster
    out = tmp_path / "out"
    proc = _spawn(*unfinished.args, "-o", out / "c.gpkg", "--scheduler", sched_file)
    kept = _kill_workers(proc, out, parent)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert kept < 16
    _same_set(out, unfinished.whole, differ=("scheduler",))
    address = json.loads(sched_file.read_text())["address"]
    plan = max(1, cpu_cores() // 2)  # two single-threaded workers on this host
    assert _torch_threads_of_workers(address) == [plan, plan]  # restarted workers too


@pytest.mark.parametrize(
    "both", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["one", "both-in-turn"]
)
def test_a_local_cluster_worker_killed_mid_run_changes_no_bit(unfinished, tmp_path, both):
    """--workers 2: one worker killed -9 (the other finishes the run), or both in turn (the
    LocalCluster's nannies restart them and the restarted workers finish it)."""
    out = tmp_path / "out"
    proc = _spawn(*unfinished.args, "-o", out / "c.gpkg", "--workers", "2",
                  "--threads-per-worker", "1")  # fmt: skip
    kept = _kill_workers(proc, out, proc.pid, both=both)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert kept < 16
    _same_set(out, unfinished.whole, differ=("scheduler",))


_PUBLISH_AND_DIE = """
import os, signal, sys
from pathlib import Path
from geochange.io.outputs import OutputSet

folder = Path(sys.argv[1])
finals = {k: folder / n for k, n in [("gpkg", "c.gpkg"), ("prob", "c_prob.tif"),
                                     ("date", "c_date.tif"), ("quicklook", "c_quicklook.png")]}
with OutputSet(finals, overwrite=True) as outputs:
    for path in outputs.paths.values():
        path.write_bytes(b"new")
    outputs.publish(_after_rename=lambda i: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_kill_9_between_the_publishing_renames_is_rolled_back_by_the_next_run(stack, out):
    before = _files(out)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _PUBLISH_AND_DIE, str(out)], env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL
    assert (out / "c.gpkg").read_bytes() == b"new"  # killed after the first rename: mixed
    code, _, err = run_cli("detect", stack, "-o", out / "c.gpkg", *FAST)
    assert code == 2 and "already exists" in _one_line(err)
    assert _files(out) == before  # the previous set is back, byte for byte
    assert _hidden(out) == []


def test_stale_work_folders_and_temporary_files_are_cleaned_by_the_next_run(stack, out):
    dead = out / ".c.gpkg.work-999999-0123abcd"
    dead.mkdir()
    (dead / "c_prob.tif").write_bytes(b"half")
    (out / ".c_prob.work-89abcdef.tif").write_bytes(b"orphan")
    (out / "other.tif").write_bytes(b"not ours")
    code, _, err = run_cli("detect", stack, "-o", out / "c.gpkg", *FAST, "--overwrite")
    assert code == 0, err
    assert _hidden(out) == []
    assert (out / "other.tif").read_bytes() == b"not ours"


def test_a_run_without_quicklook_removes_the_old_one_with_its_set(stack, out):
    code, _, err = run_cli(
        "detect", stack, "-o", out / "c.gpkg", *FAST, "--overwrite", "--no-quicklook"
    )
    assert code == 0, err
    assert sorted(_files(out)) == ["c.gpkg", "c_date.tif", "c_date.tif.aux.xml", "c_prob.tif"]


# --------------------------------------------------------------------------- bad inputs


@dataclass(frozen=True)
class Case:
    """One bad input: what the user does, and the refusal expected.

    ``argv`` follows ``geochange``; ``{in}`` is a fresh copy of the good stack, ``{out}`` the
    target of the previous set (``out/c.gpkg``), ``{tmp}`` the test's folder. ``setup(inputs,
    tmp)`` breaks something before the run and may return a function that undoes it after.
    """

    id: str
    what: str
    argv: tuple[str, ...]
    code: int = 2
    match: str = ""
    setup: Callable[[Path, Path], Callable[[], None] | None] | None = None
    kind: str = "option"


def D(*extra: str) -> tuple[str, ...]:  # noqa: N802 - reads like a command line
    """detect on the good stack into the previous set's target, replacing it."""
    return ("detect", "{in}", "-o", "{out}", *FAST, "--overwrite", *extra)


def _replace(inputs: Path, index: int, array: np.ndarray, **kwargs) -> Path:
    from helpers import write_geotiff

    path = sorted(inputs.glob("*.tif"))[index]
    write_geotiff(path, array, tags={"ACQUISITION_DATE": DATES[index]}, **kwargs)
    return path


def _other_crs(inputs, tmp):
    _replace(inputs, 3, _scene()[3], crs="EPSG:32632")


def _other_size(inputs, tmp):
    _replace(inputs, 3, _scene()[3][:, :40, :50])


def _other_bands(inputs, tmp):
    _replace(inputs, 3, _scene()[3][:2])


def _one_date(inputs, tmp):
    for path in sorted(inputs.glob("*.tif"))[1:]:
        path.unlink()


def _duplicate_date(inputs, tmp):
    shutil.copy(sorted(inputs.glob("*.tif"))[1], inputs / "copy.tif")


def _no_date(inputs, tmp):
    from helpers import write_geotiff

    write_geotiff(inputs / "scene.tif", _scene()[0])


def _truncated(inputs, tmp):
    path = sorted(inputs.glob("*.tif"))[3]
    path.write_bytes(path.read_bytes()[:2000])


def _corrupt_block(inputs, tmp):
    # Deflate tiles of 16 px, and garbage over some tiles in the middle of the file: the file
    # opens and its last block reads; the damage shows while computing.
    path = _replace(inputs, 2, _scene()[2], compress="deflate", blocksize=16)
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 400] = b"\x07" * 400
    path.write_bytes(bytes(raw))


def _empty_dir(inputs, tmp):
    for path in inputs.glob("*.tif"):
        path.unlink()


def _text_as_tif(inputs, tmp):
    sorted(inputs.glob("*.tif"))[3].write_text("not a raster\n")


def _vrt_as_tif(inputs, tmp):
    # A VRT that would read another file's raw bytes as pixels, named like a GeoTIFF.
    (tmp / "secret.txt").write_text("secret " * 2000)
    sorted(inputs.glob("*.tif"))[3].write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64">'
        '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
        f"<SourceFilename>{tmp / 'secret.txt'}</SourceFilename>"
        "</VRTRasterBand></VRTDataset>"
    )


def _no_crs(inputs, tmp):
    from helpers import write_geotiff

    for i, path in enumerate(sorted(inputs.glob("*.tif"))):
        write_geotiff(path, _scene()[i], crs=None, tags={"ACQUISITION_DATE": DATES[i]})


def _all_nodata(inputs, tmp):
    for i in range(4):
        _replace(inputs, i, np.zeros((3, 64, 64), np.uint16), nodata=0)


def _huge_values(inputs, tmp):
    for i in range(4):
        _replace(inputs, i, np.full((3, 64, 64), 1e300 * (i + 1)))


def _one_pixel(inputs, tmp):
    for i in range(4):
        _replace(inputs, i, _scene()[i][:, :1, :1])


def _mask_other_grid(inputs, tmp):
    from helpers import write_geotiff

    write_geotiff(tmp / "mask.tif", np.zeros((4, 32, 32), np.uint8))


def _bad_json(inputs, tmp):
    (tmp / "bad.json").write_text("{not json")


def _json_without_address(inputs, tmp):
    (tmp / "noaddr.json").write_text('{"type": "Scheduler"}')


def _model_garbage(inputs, tmp):
    (tmp / "m.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))


class _Payload:
    """Pickled by a checkpoint: unpickling it would create a file (code run on load)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _model_pickle(inputs, tmp):
    import torch

    torch.save({"state_dict": {}, "payload": _Payload(tmp / "ran")}, tmp / "m.ckpt")

    def check() -> None:
        assert not (tmp / "ran").exists(), "the checkpoint's pickled code ran"

    return check


def _model_nan(inputs, tmp):
    import torch

    from geochange.model import CNNLSTM, save_model

    net = CNNLSTM(in_bands=None, features=4, hidden=4, head_hidden=4)
    with torch.no_grad():
        for param in net.parameters():
            param.fill_(float("nan"))
    save_model(net, tmp / "m.ckpt", {"name": "broken"})


def _model_dir(inputs, tmp):
    (tmp / "m.ckpt").mkdir()


def _dir_output(inputs, tmp):
    (tmp / "dir.gpkg").mkdir()


def _file_as_folder(inputs, tmp):
    (tmp / "afile").write_text("x")


def _read_only_folder(inputs, tmp):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return lambda: (tmp / "ro").chmod(0o755)


def _locked(inputs, tmp):
    import fcntl

    lock = tmp / "out" / ".c.gpkg.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242\n")

    def release() -> None:
        lock.unlink()
        os.close(fd)

    return release


def _far_reference(inputs, tmp):
    from affine import Affine
    from helpers import write_geotiff

    far = Affine(10.0, 0.0, 900_000.0, 0.0, -10.0, 5_000_000.0)
    write_geotiff(tmp / "ref.tif", np.zeros((64, 64), np.uint8), transform=far)


def _far_dates(inputs, tmp):
    from affine import Affine
    from helpers import write_geotiff

    write_geotiff(tmp / "ref.tif", np.zeros((64, 64), np.uint8))
    far = Affine(10.0, 0.0, 900_000.0, 0.0, -10.0, 5_000_000.0)
    write_geotiff(tmp / "dates.tif", np.zeros((64, 64), np.uint8), transform=far, nodata=255)


def _resume_garbage(inputs, tmp):
    (tmp / "last.ckpt").write_bytes(b"PK\x03\x04garbage")


def _resume_pickle(inputs, tmp):
    return _model_pickle(inputs, tmp) or None


def _disjoint(inputs, tmp):
    """Each date valid in its own strip of columns: no pixel has two valid dates."""
    for i in range(4):
        data = _scene()[i].copy()
        keep = np.zeros(64, bool)
        keep[16 * i : 16 * i + 16] = True
        data[:, :, ~keep] = 0
        _replace(inputs, i, data, nodata=0)


CASES: list[Case] = [
    # Options: checked before anything is read.
    Case("threshold-nan", "--threshold nan", D("--threshold", "nan"), match="--threshold"),
    Case("threshold-inf", "--threshold inf", D("--threshold", "inf"), match="--threshold"),
    Case("threshold-above-1", "--threshold 1.5", D("--threshold", "1.5"), match="--threshold"),
    Case("threshold-0", "--threshold 0", D("--threshold", "0"), match="--threshold"),
    Case("min-area-nan", "--min-area nan", D("--min-area", "nan"), match="--min-area"),
    Case("min-area-inf", "--min-area inf", D("--min-area", "inf"), match="--min-area"),
    Case("min-area-negative", "--min-area -1", D("--min-area", "-1"), match="--min-area"),
    Case("simplify-negative", "--simplify -5", D("--simplify", "-5"), match="--simplify"),
    Case("simplify-nan", "--simplify nan", D("--simplify", "nan"), match="--simplify"),
    Case("rgb-bands-range", "--rgb-bands 9,9,9 on 3 bands", D("--rgb-bands", "9,9,9"),
         match="--rgb-bands"),
    Case("rgb-bands-two", "--rgb-bands 1,2", D("--rgb-bands", "1,2"), match="--rgb-bands"),
    Case("rgb-bands-zero", "--rgb-bands 0,1,2", D("--rgb-bands", "0,1,2"), match="--rgb-bands"),
    Case("rgb-bands-text", "--rgb-bands r,g,b", D("--rgb-bands", "r,g,b"), match="--rgb-bands"),
    Case("chunk-size-small", "--chunk-size 8", D("--chunk-size", "8"), match="--chunk-size"),
    Case("workers-0", "--workers 0", D("--workers", "0"), match="--workers"),
    Case("threads-0", "--threads-per-worker 0", D("--threads-per-worker", "0"),
         match="--threads-per-worker"),
    Case("scheduler-protocol", "--scheduler foo://host:1", D("--scheduler", "foo://host:1"),
         match="--scheduler"),
    Case("scheduler-bad-json", "--scheduler FILE that is not JSON",
         D("--scheduler", "{tmp}/bad.json"), match="not readable JSON", setup=_bad_json),
    Case("scheduler-json-no-address", "--scheduler FILE without an address",
         D("--scheduler", "{tmp}/noaddr.json"), match="no 'address'",
         setup=_json_without_address),
    Case("scheduler-file-missing", "--scheduler missing.json",
         D("--scheduler", "{tmp}/missing.json"), match="not found"),
    Case("scheduler-with-workers", "--scheduler ADDRESS with --workers 2",
         D("--scheduler", "tcp://127.0.0.1:1", "--workers", "2"), match="--workers"),
    Case("batch-size-baseline", "--batch-size with a classical method", D("--batch-size", "4"),
         match="--batch-size"),
    Case("skip-unknown", "--skip nosuchstage", D("--skip", "nosuchstage"), match="nosuchstage"),
    Case("method-unknown", "--method magic", D("--method", "magic"), match="--method"),
    Case("dates-count", "--dates with 2 dates for 4 files", D("--dates", "2022-01-01,2022-02-01"),
         match="--dates"),
    Case("dates-malformed", "--dates 2022-13-45,...",
         D("--dates", "2022-13-45,2022-02-01,2022-03-01,2022-04-01"), match="2022-13-45"),
    Case("mask-values-alone", "--mask-values without --masks", D("--mask-values", "3,8"),
         match="--mask-values"),
    Case("wavelengths-count", "--wavelengths with 2 values for 3 bands",
         D("--wavelengths", "490,560"), match="wavelength"),
    Case("allow-driver-unknown", "--allow-driver NOSUCH", D("--allow-driver", "NOSUCH"),
         match="--allow-driver"),
    Case("resume-with-adapt", "--resume with --adapt (a model trained anew each run)",
         D("--method", "cnn-lstm", "--adapt", "--resume"), match="--resume: given with adapt"),
    # The model.
    Case("model-missing", "--model missing.ckpt",
         D("--method", "cnn-lstm", "--model", "{tmp}/missing.ckpt"), match="--model",
         kind="model"),
    Case("model-directory", "--model FOLDER", D("--method", "cnn-lstm", "--model", "{tmp}/m.ckpt"),
         match="--model", setup=_model_dir, kind="model"),
    Case("model-with-baseline", "--model with --method cva", D("--model", "{tmp}/m.ckpt"),
         match="--model", setup=_model_garbage, kind="model"),
    Case("model-garbage", "--model FILE of random bytes",
         D("--method", "cnn-lstm", "--model", "{tmp}/m.ckpt"), match="cannot be read",
         setup=_model_garbage, kind="model"),
    Case("model-pickled-code", "--model FILE carrying pickled code (not run)",
         D("--method", "cnn-lstm", "--model", "{tmp}/m.ckpt"), match="cannot be read",
         setup=_model_pickle, kind="model"),
    Case("model-nan-weights", "--model whose weights are NaN",
         D("--method", "cnn-lstm", "--model", "{tmp}/m.ckpt", "--skip", "coregister,clouds"),
         match="non-finite", setup=_model_nan, kind="model"),
    # Outputs.
    Case("output-exists", "existing output without --overwrite",
         ("detect", "{in}", "-o", "{out}", *FAST), match="already exists", kind="output"),
    Case("output-suffix", "-o c.tif", ("detect", "{in}", "-o", "{tmp}/c.tif", *FAST),
         match=".gpkg", kind="output"),
    Case("output-directory", "-o FOLDER.gpkg", ("detect", "{in}", "-o", "{tmp}/dir.gpkg", *FAST),
         match="directory", setup=_dir_output, kind="output"),
    Case("output-parent-is-file", "-o afile/c.gpkg where afile is a file",
         ("detect", "{in}", "-o", "{tmp}/afile/c.gpkg", *FAST), match="is a file",
         setup=_file_as_folder, kind="output"),
    Case("output-read-only", "-o into a read-only folder",
         ("detect", "{in}", "-o", "{tmp}/ro/c.gpkg", *FAST), match="not writable",
         setup=_read_only_folder, kind="output"),
    Case("output-locked", "another run holds the output", D(), code=1,
         match="being written by another geochange run (pid 4242)", setup=_locked,
         kind="output"),
    # Inputs.
    Case("input-missing", "a path that does not exist",
         ("detect", "{tmp}/nothere", "-o", "{out}", *FAST, "--overwrite"), match="nothere",
         kind="input"),
    Case("input-empty-folder", "a folder without .tif", D(), match="no .tif", setup=_empty_dir,
         kind="input"),
    Case("input-one-date", "one date only", D(), match="only one date", setup=_one_date,
         kind="input"),
    Case("input-duplicate-date", "two files of one date", D(), match="the same date",
         setup=_duplicate_date, kind="input"),
    Case("input-no-date", "a file without a date", D(), match="scene.tif", setup=_no_date,
         kind="input"),
    Case("input-crs", "dates in different CRSs", D(), match="CRS", setup=_other_crs,
         kind="input"),
    Case("input-size", "dates of different sizes", D(), match="size", setup=_other_size,
         kind="input"),
    Case("input-bands", "dates with different band counts", D(), match="band",
         setup=_other_bands, kind="input"),
    Case("input-truncated", "a truncated GeoTIFF", D(), match="S2_20220901.tif",
         setup=_truncated, kind="input"),
    Case("input-corrupt-block", "garbage in the middle of a GeoTIFF (seen while computing)",
         D(), match="S2_20220601.tif", setup=_corrupt_block, kind="input"),
    Case("input-not-raster", "a text file named .tif", D(), match="S2_20220901.tif",
         setup=_text_as_tif, kind="input"),
    Case("input-vrt-as-tif", "a VRT named .tif reading another file's bytes", D(),
         match="VRT", setup=_vrt_as_tif, kind="input"),
    Case("input-vrt-raw-allowed", "the same with --allow-driver VRT (raw bands stay off)",
         D("--allow-driver", "VRT"), match="VRTRawRasterBand", setup=_vrt_as_tif, kind="input"),
    Case("input-no-crs", "a stack without a CRS", D(), match="--allow-no-crs", setup=_no_crs,
         kind="input"),
    Case("input-all-nodata", "every pixel nodata", D(), match="no valid pixel",
         setup=_all_nodata, kind="input"),
    Case("input-huge-values", "float64 values near 1e300 (beyond float32: nodata)", D(),
         match="no valid pixel", setup=_huge_values, kind="input"),
    Case(
        "input-no-pixel-on-two-dates",
        "no pixel valid on two dates: the result is all nodata",
        D("--method", "irmad"),
        match="--allow-empty",
        setup=_disjoint,
        kind="input",
    ),
    Case("input-1x1", "1x1 px images", D(), match="1x1 px", setup=_one_pixel, kind="input"),
    Case("mask-missing", "--masks missing.tif", D("--masks", "{tmp}/missing.tif"),
         match="missing.tif", kind="input"),
    Case("mask-other-grid", "--masks on another grid", D("--masks", "{tmp}/mask.tif"),
         match="mask.tif", setup=_mask_other_grid, kind="input"),
    # Evaluate and train.
    Case("evaluate-no-overlap", "evaluate polygons against a reference elsewhere",
         ("evaluate", "{out}", "{tmp}/ref.tif"), match="reference grid", setup=_far_reference,
         kind="evaluate"),
    Case("evaluate-dates-elsewhere", "evaluate --pred-dates on another grid",
         ("evaluate", "{out}", "{tmp}/ref.tif", "--pred-dates", "{tmp}/dates.tif"),
         match="--pred-dates", setup=_far_dates, kind="evaluate"),
    Case("train-resume-garbage", "train --resume FILE of garbage",
         ("train", str(ROOT / "pipelines" / "default_model.yaml"), "-o", "{tmp}/m.ckpt",
          "--resume", "{tmp}/last.ckpt"), match="--resume", setup=_resume_garbage, kind="train"),
    Case("train-resume-pickled-code", "train --resume FILE carrying pickled code (not run)",
         ("train", str(ROOT / "pipelines" / "default_model.yaml"), "-o", "{tmp}/m.ckpt",
          "--resume", "{tmp}/m.ckpt.resume"), match="--resume", kind="train",
         setup=lambda i, t: (_model_pickle(i, t), shutil.move(t / "m.ckpt", t / "m.ckpt.resume"))[0]),
]  # fmt: skip


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_case(case: Case, tmp: Path, stack: Path, previous: Path) -> tuple[int, str, set[str]]:
    """Run one case in ``tmp``; returns (exit code, stderr, paths that appeared under tmp)."""
    inputs = tmp / "in"
    shutil.copytree(stack, inputs)
    shutil.copytree(previous, tmp / "out")
    undo = case.setup(inputs, tmp) if case.setup else None
    names = {"in": str(inputs), "out": str(tmp / "out" / "c.gpkg"), "tmp": str(tmp)}
    before = _tree(tmp)
    try:
        code, _, err = run_cli(*(a.format(**names) for a in case.argv))
    finally:
        if undo is not None:
            undo()
    return code, err, _tree(tmp) - before


def _record(**measured: object) -> None:
    """Append what a case measured to $GEOCHANGE_RELIABILITY_RECORD (for docs/RELIABILITY.md)."""
    target = os.environ.get("GEOCHANGE_RELIABILITY_RECORD")
    if target:
        with open(target, "a") as f:
            f.write(json.dumps(measured) + "\n")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case, tmp_path, stack, previous):
    before = _files(previous)
    code, err, created = run_case(case, tmp_path, stack, previous)
    after = _files(tmp_path / "out")
    lost = sum(len(b) for name, b in before.items() if after.get(name) != b)
    lines = [line for line in err.splitlines() if line.strip()]
    message = lines[0].replace(str(tmp_path), "TMP") if lines else ""
    _record(id=case.id, code=code, lines=len(lines), message=message,
            created=sorted(created), bytes_lost=lost)  # fmt: skip
    assert code == case.code, err
    line = _one_line(err)
    assert line.startswith("Error: ") and case.match in line, line
    assert after == before
    assert created == set()


# --------------------------------------------------------------------------- what is accepted


def test_allow_empty_accepts_an_all_nodata_result(tmp_path, stack):
    inputs = tmp_path / "in"
    shutil.copytree(stack, inputs)
    _disjoint(inputs, tmp_path)
    out = tmp_path / "out" / "c.gpkg"
    code, _, err = run_cli("detect", inputs, "-o", out, *FAST, "--method", "irmad", "--allow-empty")
    assert code == 0, err
    with rasterio.open(out.with_name("c_prob.tif")) as src:  # uint8, 255 = nodata
        assert src.nodata == 255 and (src.read(1) == 255).all()


def test_non_finite_input_values_are_nodata(tmp_path):
    """±inf read as data used to spread NaN into valid neighbours: now they are nodata, so the
    run is the same as with NaN in their place."""
    data = _scene().astype(np.float32)
    data[1, :, 10, 10] = np.inf
    data[2, 0, 30, 31] = -np.inf
    with_nan = np.where(np.isfinite(data), data, np.nan)
    results = []
    for name, values in (("inf", data), ("nan", with_nan)):
        write_stack(tmp_path / name, values, DATES)
        import geochange

        res = geochange.detect(tmp_path / name, method="cva", skip=("coregister",))
        results.append(res.prob.compute())
    np.testing.assert_array_equal(results[0], results[1])
    assert np.isfinite(results[0]).mean() > 0.99


@pytest.mark.filterwarnings("ignore:'crs' was not provided:UserWarning")
def test_allow_no_crs_and_allow_driver_accept_what_they_name(tmp_path, stack):
    inputs = tmp_path / "in"
    shutil.copytree(stack, inputs)
    _no_crs(inputs, tmp_path)
    code, _, err = run_cli("detect", inputs, "-o", tmp_path / "a.gpkg", *FAST, "--allow-no-crs")
    assert code == 0, err

    vrt_dir = tmp_path / "vrt"
    vrt_dir.mkdir()
    for path in sorted(stack.glob("*.tif")):
        import rasterio.shutil

        rasterio.shutil.copy(path, vrt_dir / path.name.replace(".tif", ".vrt"), driver="VRT")
    vrts = [str(p) for p in sorted(vrt_dir.glob("*.vrt"))]
    dates = ",".join(DATES)
    code, _, err = run_cli("detect", *vrts, "--dates", dates, "-o", tmp_path / "b.gpkg", *FAST)
    assert code == 2 and "--allow-driver" in _one_line(err)
    code, _, err = run_cli(
        "detect", *vrts, "--dates", dates, "-o", tmp_path / "b.gpkg", *FAST, "--allow-driver", "VRT"
    )
    assert code == 0, err


@pytest.mark.slow
def test_an_input_deleted_during_the_run_is_named_and_nothing_changes(tmp_path, stack, out):
    inputs = tmp_path / "in"
    shutil.copytree(stack, inputs)
    before = _files(out)
    proc = _spawn("detect", inputs, "-o", out / "c.gpkg", *FAST, "--overwrite")
    _wait_for(proc, _work_has(out, "c_prob.tif"))
    proc.send_signal(signal.SIGSTOP)
    first = sorted(inputs.glob("*.tif"))[0]
    first.unlink()  # the quicklook reads the first date again after the rasters
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "vanished during the run" in _one_line(err) and first.name in err
    assert _files(out) == before
    assert _hidden(out) == []


_DISK_FULL = """
set -e
mount -t tmpfs -o size={size} tmpfs {mnt}
cp -r {previous} {mnt}/out
cd {cwd}
set +e
{python} -c "{main}" detect {stack} -o {mnt}/out/c.gpkg {fast} --overwrite --threshold 0.6
echo "rc=$?"
ls -a {mnt}/out
sha256sum {mnt}/out/*
"""


@pytest.mark.slow
def test_a_full_disk_says_disk_full_and_keeps_the_previous_set(tmp_path, stack, previous):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a small file system")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    size = sum(p.stat().st_size for p in previous.iterdir()) + 60_000  # room for a part only
    script = _DISK_FULL.format(
        size=size,
        mnt=mnt,
        previous=previous,
        cwd=ROOT,
        python=sys.executable,
        main=_MAIN.replace('"', '\\"'),
        stack=stack,
        fast=" ".join(FAST),
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True
    )
    if "mount" in proc.stderr and "rc=" not in proc.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert "rc=1" in proc.stdout, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "disk full" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    listed = proc.stdout.split("rc=1", 1)[1]
    assert ".c.gpkg" not in listed  # no work folder, no lock left
    for path in sorted(previous.iterdir()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{digest}  {mnt}/out/{path.name}" in listed


_READ_ONLY = """
set -e
mount -t tmpfs tmpfs {mnt}
cp -r {previous} {mnt}/out
mount -o remount,ro {mnt}
cd {cwd}
set +e
{python} -c "{main}" detect {stack} -o {mnt}/out/c.gpkg {fast} --overwrite
echo "rc=$?"
"""


@pytest.mark.slow
def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path, stack, previous):
    """As root (where permissions do not stop writes), on a file system mounted read-only."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a read-only file system")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = _READ_ONLY.format(
        mnt=mnt, previous=previous, cwd=ROOT, python=sys.executable,
        main=_MAIN.replace('"', '\\"'), stack=stack, fast=" ".join(FAST),
    )  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True
    )
    if "rc=" not in proc.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert "rc=2" in proc.stdout, proc.stdout + proc.stderr
    assert "not writable" in _one_line(proc.stderr)


# --------------------------------------------------------------------------- the report

_FAULTS = {
    "test_kill_9_during_overwrite_leaves_the_previous_set_byte_identical":
        "kill -9 while an --overwrite run writes its new set",
    "test_sigterm_stops_a_run_like_ctrl_c_and_keeps_the_previous_set":
        "SIGTERM while an --overwrite run writes its new set, then --resume",
    "test_resume_after_kill_9_gives_the_uninterrupted_outputs_bit_for_bit":
        "kill -9 in the middle of the chunks (deep model, 16 chunks), then --resume",
    "test_a_run_without_resume_says_an_unfinished_run_exists":
        "the same command again after kill -9, without --resume",
    "test_dask_workers_killed_mid_run_change_no_bit":
        "both workers of a real `dask scheduler` + `dask worker --nworkers 2` (nannies) "
        "killed -9 in turn mid-run",
    "test_a_local_cluster_worker_killed_mid_run_changes_no_bit[one]":
        "one worker of a `--workers 2` LocalCluster killed -9 mid-run",
    "test_a_local_cluster_worker_killed_mid_run_changes_no_bit[both-in-turn]":
        "both workers of a `--workers 2` LocalCluster killed -9 in turn mid-run",
    "test_resume_refuses_a_changed_option": "--resume with another --threshold",
    "test_resume_refuses_a_changed_input": "--resume after an input file changed",
    "test_resume_refuses_a_changed_model": "--resume with other weights in the model file",
    "test_two_runs_on_one_output_one_wins_the_other_fails_at_once":
        "a second run on the same output while the first computes",
    "test_two_runs_started_together_never_mix": "two runs on one output started together",
    "test_kill_9_between_the_publishing_renames_is_rolled_back_by_the_next_run":
        "kill -9 between the renames that publish a set",
    "test_stale_work_folders_and_temporary_files_are_cleaned_by_the_next_run":
        "work folders and temporary files of dead runs",
    "test_a_run_without_quicklook_removes_the_old_one_with_its_set":
        "--overwrite --no-quicklook over a set with a quicklook",
    "test_an_input_deleted_during_the_run_is_named_and_nothing_changes":
        "an input deleted during the run",
    "test_a_full_disk_says_disk_full_and_keeps_the_previous_set":
        "the disk fills up while writing the new set",
    "test_a_read_only_output_folder_is_refused_before_any_work":
        "the output folder is on a read-only file system (as root)",
    "test_allow_empty_accepts_an_all_nodata_result": "--allow-empty on an all-nodata result",
    "test_non_finite_input_values_are_nodata": "±inf in a float input",
    "test_allow_no_crs_and_allow_driver_accept_what_they_name":
        "--allow-no-crs and --allow-driver VRT",
}  # fmt: skip

_OUTCOME = {
    "test_kill_9_during_overwrite_leaves_the_previous_set_byte_identical":
        "previous set byte-identical; the next run removes the dead run's work folder",
    "test_sigterm_stops_a_run_like_ctrl_c_and_keeps_the_previous_set":
        "exit 143, one line saying how many chunks are kept and to use --resume; previous set "
        "byte-identical; lock released, the work folder stripped to its chunks; --resume "
        "publishes the whole new set",
    "test_resume_after_kill_9_gives_the_uninterrupted_outputs_bit_for_bit":
        "the kept chunks are loaded, the rest computed; rasters and quicklook byte-identical "
        "and GeoPackage layers equal (but the creation time) to an uninterrupted run",
    "test_a_run_without_resume_says_an_unfinished_run_exists":
        "a warning names the kept chunks and --resume; the run starts over, and its published "
        "set removes them",
    "test_dask_workers_killed_mid_run_change_no_bit":
        "exit 0; the chunks left are computed by the restarted workers; outputs bit-identical "
        "to the threaded run's (but `runs.scheduler`); every worker, restarted ones included, "
        "has the run's torch threads",
    "test_a_local_cluster_worker_killed_mid_run_changes_no_bit[one]":
        "exit 0; outputs bit-identical to the threaded run's (but `runs.scheduler`)",
    "test_a_local_cluster_worker_killed_mid_run_changes_no_bit[both-in-turn]":
        "exit 0; the restarted workers finish the run; outputs bit-identical to the threaded "
        "run's (but `runs.scheduler`)",
    "test_resume_refuses_a_changed_option":
        "exit 2, one line naming --threshold with both values; the kept chunks stay",
    "test_resume_refuses_a_changed_input":
        "exit 2, one line naming the file; the kept chunks stay",
    "test_resume_refuses_a_changed_model":
        "exit 2, one line naming the model's sha256; the kept chunks stay",
    "test_two_runs_on_one_output_one_wins_the_other_fails_at_once":
        "the second exits 1 at once naming the first's pid; the first publishes its whole set",
    "test_two_runs_started_together_never_mix":
        "one or both succeed, any other exits 1 in one line; one threshold across the set",
    "test_kill_9_between_the_publishing_renames_is_rolled_back_by_the_next_run":
        "the next run restores the previous set byte-identical before judging the target",
    "test_stale_work_folders_and_temporary_files_are_cleaned_by_the_next_run":
        "removed by the next run on the target; other files untouched",
    "test_a_run_without_quicklook_removes_the_old_one_with_its_set":
        "the old quicklook goes with the old set",
    "test_an_input_deleted_during_the_run_is_named_and_nothing_changes":
        "exit 1, one line naming the file; previous set byte-identical",
    "test_a_full_disk_says_disk_full_and_keeps_the_previous_set":
        "exit 1, 'disk full' in one line; previous set byte-identical (tmpfs of a few kB)",
    "test_a_read_only_output_folder_is_refused_before_any_work":
        "exit 2, one line 'not writable', before any compute",
    "test_allow_empty_accepts_an_all_nodata_result": "exit 0, an all-nodata probability raster",
    "test_non_finite_input_values_are_nodata": "read as nodata: same result as NaN there",
    "test_allow_no_crs_and_allow_driver_accept_what_they_name":
        "exit 0 with the flag; without --allow-driver a VRT is refused (exit 2)",
}  # fmt: skip


def _write_report(path: Path) -> None:  # pragma: no cover - run by hand
    """Run this file under pytest (slow tests included) and write what it measured."""
    import tempfile
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        record, junit = Path(tmp) / "cases.jsonl", Path(tmp) / "junit.xml"
        env = dict(os.environ, GEOCHANGE_RELIABILITY_RECORD=str(record))
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
             "slow or not slow", f"--junitxml={junit}", __file__],
            cwd=ROOT, env=env, check=False,
        )  # fmt: skip
        measured = {m["id"]: m for m in map(json.loads, record.read_text().splitlines())}
        outcomes = {}
        for case in ET.parse(junit).iter("testcase"):
            name = case.get("name", "")
            state = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    state = tag
            outcomes[name] = (state, float(case.get("time", 0)))

    def param(case_id: str) -> tuple[str, float]:
        name = f"test_bad_input_is_refused_in_one_line_and_changes_nothing[{case_id}]"
        return outcomes.get(name, ("not run", 0.0))

    refused = [c for c in CASES if param(c.id)[0] == "passed"]
    skipped = [c for c in CASES if param(c.id)[0] == "skipped"]
    faults = [n for n in _FAULTS if outcomes.get(n, ("",))[0] == "passed"]
    lost = sum(int(m.get("bytes_lost", 0)) for m in measured.values())
    lines = [
        "# Reliability: what a failed, killed or refused run does",
        "",
        "Generated by `python tests/test_reliability.py --doc` from the suite's own runs "
        "(`tests/test_reliability.py`); do not edit by hand.",
        "",
        "Every case starts from a finished run's output set (GeoPackage, probability and date "
        "rasters, quicklook) in the output folder. A refused run must exit with 2 (the user's "
        "input) or 1 (the machine), print one line naming the culprit and the fix, and leave "
        "the previous set byte-identical with nothing new written.",
        "",
        "## Counts",
        "",
        f"- bad inputs tried: {len(CASES)}; refused cleanly as expected: {len(refused)}; "
        f"skipped here: {len(skipped)} ({', '.join(c.id for c in skipped) or 'none'}"
        f"{'; run as root, measured by the read-only file system fault below' if skipped else ''})",
        f"- faults (signals, concurrency, disk, vanished input, resume, dask workers) "
        f"survived: {len(faults)} of "
        f"{len(_FAULTS)}",
        f"- bytes of a previous output set lost: {lost}",
        "",
        "## How the outputs are kept whole",
        "",
        "All outputs of a run are written into a hidden work folder beside the target "
        "(`.c.gpkg.work-PID-XXXXXXXX/`) and published together at the end: the previous files "
        "are hard-linked aside, a journal is written, the new files are renamed over the old "
        "ones, and the journal is removed (the commit point). An advisory lock "
        "(`.c.gpkg.lock`, `flock`) lets one run at a time work on a target; a second one fails "
        "at once. The next run on a target removes the work folders of dead runs and rolls a "
        "half-done publication back. SIGTERM is handled like Ctrl-C. Options, the output path, "
        "the model file, the inputs' drivers, CRS, grid and size are checked before any "
        "compute.",
        "",
        "## Resuming a run that did not finish",
        "",
        "Each finished chunk (the chain's probability and change interval, float32) is saved "
        "as it comes into `chunks/` of the work folder, beside a `manifest.json` holding the "
        "input files (absolute path, size, modification time), every option that shapes the "
        "outputs (torch threads per task for the deep model among them), the model file's "
        "sha256, the geochange version and the dask token of the chunk computation. A run "
        "killed (`kill -9`, out of memory, a lost machine), interrupted (Ctrl-C, SIGTERM) or "
        "failed for an unexplained reason leaves that folder; Ctrl-C and SIGTERM say how many "
        "chunks are kept. `geochange detect ... --resume` (the same command plus `--resume`) "
        "loads the kept chunks instead of computing them and computes the rest: the outputs "
        "are those of an uninterrupted run, bit for bit. A changed input, option or model is "
        "refused in one line naming it (exit 2), and the chunks stay. The same command "
        "without `--resume` warns that an unfinished run exists and how to continue it, "
        "starts over, and removes the kept chunks when it publishes its set. A refusal or an "
        "explained fault (disk full, an input that vanished) keeps no chunks. `--resume` is "
        "refused with `--adapt` and `--examples`, whose model is trained anew in every run. "
        "The kept chunks take 8 bytes per pixel in the output's folder until the set is "
        "published (about 1 GB for a 10980 x 10980 px Sentinel-2 tile).",
        "",
        "## Dask workers killed mid-run",
        "",
        "A worker that dies (`kill -9`, out of memory) takes the chunks it held with it; dask "
        "runs them again on the other workers and the worker's nanny starts a new one. Every "
        "task of the deep model runs with the run's one torch thread count (the worker plugin "
        "sets it on every worker, those that join later or are restarted included, and each "
        "task sets it again), because the model's float sums depend on it: a chunk gives the "
        "same bits wherever it runs. Chunks already kept for `--resume` are loaded, not "
        "computed again.",
        "",
        "## Faults",
        "",
        "| fault | outcome | measured |",
        "|---|---|---|",
    ]
    for name, what in _FAULTS.items():
        state, secs = outcomes.get(name, ("not run", 0.0))
        lines.append(f"| {what} | {_OUTCOME[name]} | {state} ({secs:.1f} s) |")
    lines += ["", "## Bad inputs", "", "| case | kind | exit | message (measured) | result |",
              "|---|---|---|---|---|"]  # fmt: skip
    for case in CASES:
        state, _ = param(case.id)
        m = measured.get(case.id)
        msg = m["message"].replace("|", "\\|") if m else ""
        code = m["code"] if m else "-"
        lines.append(f"| {case.what} | {case.kind} | {code} | {msg} | {state} |")
    lines += [
        "",
        "## Not covered",
        "",
        "- The written rasters hold the probability in steps of 1/254, so a difference in the "
        "7th digit of the model's output seldom shows in them; the worker tests also check "
        "that every worker, restarted ones included, runs the model with the run's torch "
        "threads (a nanny-restarted worker used to get cores // its own dask threads instead).",
        "- `GDAL_VRT_ENABLE_RAWRASTERBAND=NO` is set, but the GDAL 3.10 in rasterio's wheels "
        "reads it only at build time; geochange refuses VRTs with raw bands itself, and reads "
        "VRTs at all only with `--allow-driver VRT`.",
        "- Files are checked when the stack is opened; a file swapped for a VRT during the run "
        "is read by whatever GDAL makes of it.",
        "- `--resume` knows an input file by its path, size and modification time, not by its "
        "bytes: a file rewritten to the same size with its time set back (`touch -r`) is not "
        "seen as changed; a GDAL URL is known by its name only.",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":  # python tests/test_reliability.py --doc
    if sys.argv[1:] != ["--doc"]:
        sys.exit("usage: python tests/test_reliability.py --doc")
    _write_report(ROOT / "docs" / "RELIABILITY.md")
