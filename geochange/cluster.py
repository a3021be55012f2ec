"""Where the dask graph of ``detect`` runs: local threads, a local cluster, or a remote one.

Three layouts, picked by :func:`runtime`:

- ``scheduler=None`` or ``"threads"`` (default): dask's threaded scheduler in this process;
  dask threads × torch intra-op threads ≤ cores.
- ``workers=N``: a ``distributed.LocalCluster`` of N worker *processes* (``threads_per_worker``
  dask threads each, default cores // N), started for the run and closed after it.
- ``scheduler="tcp://HOST:PORT"`` (any ``proto://`` address) or a scheduler file (``.json``,
  written by ``dask scheduler --scheduler-file``): a ``distributed.Client`` to an existing
  cluster (``dask scheduler`` + ``dask worker``, dask-jobqueue, Kubernetes). The cluster is left
  running; only the client is closed.

On a distributed cluster every worker gets, through a worker plugin (so workers that join later
or that a nanny restarts get it too): the GDAL settings of :data:`geochange.io.read.GDAL_ENV` as
environment variables, and the run's one torch thread count (on a remote cluster: cores of a host
// dask threads on that host, the smallest over hosts) so torch and dask do not oversubscribe the
cores. Every task of the deep model also sets that count itself: the model's float sums depend
on how many threads split them, so a chunk gives the same bits on whichever worker runs it. Inputs and outputs are read and written by the workers themselves: they
must see the input paths (or GDAL URLs) and the output folder under the same names as the client.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask
from distributed.diagnostics.plugin import WorkerPlugin

from geochange.errors import InputError

__all__ = ["Layout", "Runtime", "check_args", "cpu_cores", "runtime", "threads_layout"]

log = logging.getLogger(__name__)

Kind = Literal["threads", "local-cluster", "remote"]

#: Seconds to wait for a remote scheduler before giving up.
CONNECT_TIMEOUT = 30

#: Protocols of dask.distributed's communication backends (a scheduler address's prefix).
PROTOCOLS = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


def cpu_cores() -> int:
    """Cores this process may use: dask's count, which honours the CPU affinity (a batch job's
    allocation) and a container's cgroup CPU quota (Kubernetes ``limits.cpu``)."""
    from dask.system import CPU_COUNT

    return max(1, int(CPU_COUNT))


def threads_layout(n_chunks: int, cores: int | None = None) -> tuple[int, int]:
    """(dask threads, torch threads per task) so their product does not exceed the cores."""
    cores = cores or cpu_cores()
    workers = max(1, min(cores, n_chunks))
    return workers, max(1, cores // workers)


@dataclass(frozen=True)
class Layout:
    """How the work is spread.

    Attributes:
        kind: "threads" (this process), "local-cluster" (worker processes started for the run)
            or "remote" (an existing cluster).
        workers: dask worker processes (1 for "threads").
        threads_per_worker: dask threads per worker (for "remote": the total over all workers).
        torch_threads: torch intra-op threads of every task (for "remote": cores of a host //
            dask threads on that host, the smallest over hosts).
        dashboard: the dask dashboard URL, None on the threaded scheduler.
    """

    kind: Kind
    workers: int
    threads_per_worker: int
    torch_threads: int
    dashboard: str | None = None

    def describe(self) -> str:
        """One line for the log: layout and dashboard."""
        if self.kind == "threads":
            return (
                f"local threads: {self.threads_per_worker} dask threads x "
                f"{self.torch_threads} torch threads"
            )
        what = "local cluster" if self.kind == "local-cluster" else "cluster"
        text = (
            f"{what}: {self.workers} worker(s) x {self.threads_per_worker} dask thread(s), "
            f"{self.torch_threads} torch thread(s) per worker"
        )
        return text + (f"; dashboard {self.dashboard}" if self.dashboard else "")


@dataclass
class Runtime:
    """The scheduler chosen for one run; use ``compute()`` around every dask computation.

    Attributes:
        layout: the thread and process layout.
        client: the ``distributed.Client`` (None on the threaded scheduler).
    """

    layout: Layout
    client: Any = None
    _config: dict[str, Any] = field(default_factory=dict)

    @property
    def distributed(self) -> bool:
        """True on a local or remote dask.distributed cluster."""
        return self.client is not None

    def compute(self) -> contextlib.AbstractContextManager:
        """Context in which ``dask.compute`` runs on this runtime's scheduler."""
        if self.client is None:
            return dask.config.set(self._config)
        return self.client.as_current()

    def gpu_workers(self) -> int:
        """Number of workers advertising a ``GPU`` resource (``dask worker --resources GPU=1``)."""
        if self.client is None:
            return 0
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        return sum(1 for w in info.values() if (w.get("resources") or {}).get("GPU", 0) > 0)

    def progress(self, group: str, total: int, enabled: bool) -> contextlib.AbstractContextManager:
        """A tqdm bar over the ``total`` tasks of the task group ``group`` (a graph layer name).

        On the threaded scheduler a dask callback counts finished tasks; on a cluster each
        finished task sends an event the client listens to (:class:`_ClusterProgress`).
        """
        if not enabled:
            return contextlib.nullcontext()
        if self.client is None:
            return _ThreadedProgress(group, total)
        return _ClusterProgress(self.client, group, total, self.layout.dashboard)


def check_args(scheduler: str | None, workers: int | None, threads: int | None) -> None:
    """Validate where a run is asked to go, before any work (no connection is made).

    Raises:
        InputError: a bad worker or thread count, a malformed address, an unknown protocol, a
            missing or malformed scheduler file, or options that contradict each other.
    """
    _check_args(scheduler, workers, threads)


def _check_address(address: str, where: str) -> None:
    protocol = address.split("://", 1)[0] if "://" in address else ""
    if protocol not in PROTOCOLS or not address.split("://", 1)[1]:
        raise InputError(
            f"--scheduler: {where} {address!r} has protocol {protocol or '(none)'!r}, expected "
            f"one of {', '.join(PROTOCOLS)} as in 'tcp://10.0.0.5:8786'; check the address"
        )


def _check_scheduler_file(path: str) -> None:
    import json

    try:
        info = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(
            f"--scheduler: scheduler file {path!r} is not readable JSON ({type(exc).__name__}); "
            "pass the file written by `dask scheduler --scheduler-file`"
        ) from None
    if not isinstance(info, dict) or not isinstance(info.get("address"), str):
        raise InputError(
            f"--scheduler: scheduler file {path!r} has no 'address'; pass the file written by "
            "`dask scheduler --scheduler-file`"
        )
    _check_address(info["address"], f"the address in {path!r},")


def _check_args(scheduler: str | None, workers: int | None, threads: int | None) -> None:
    for flag, value in (("--workers", workers), ("--threads-per-worker", threads)):
        if value is not None and not isinstance(value, int) or isinstance(value, bool):
            if not (isinstance(value, float) and value.is_integer()):
                raise InputError(f"{flag}: found {value!r}, expected a whole number >= 1")
    if workers is not None and (int(workers) != workers or workers < 1):
        raise InputError(
            f"--workers: found {workers!r}, expected a whole number of worker processes >= 1"
        )
    if threads is not None and (int(threads) != threads or threads < 1):
        raise InputError(
            f"--threads-per-worker: found {threads!r}, expected a whole number of threads >= 1"
        )
    if scheduler in (None, "threads"):
        if scheduler == "threads" and workers is not None:
            raise InputError(
                f"--workers {workers} starts a local cluster of worker processes, but "
                "--scheduler is 'threads' (no processes); drop one of the two"
            )
        return
    if not isinstance(scheduler, str) or not ("://" in scheduler or scheduler.endswith(".json")):
        raise InputError(
            f"--scheduler: found {scheduler!r}, expected 'threads', a scheduler address such as "
            "'tcp://10.0.0.5:8786', or a scheduler file 'scheduler.json' written by "
            "`dask scheduler --scheduler-file`"
        )
    if scheduler.endswith(".json") and "://" not in scheduler and not Path(scheduler).is_file():
        raise InputError(
            f"--scheduler: scheduler file {scheduler!r} not found; start the scheduler with "
            "`dask scheduler --scheduler-file PATH` first, or pass its tcp:// address"
        )
    if "://" in scheduler:
        _check_address(scheduler, "address")
    else:
        _check_scheduler_file(scheduler)
    if workers is not None or threads is not None:
        flag = "--workers" if workers is not None else "--threads-per-worker"
        raise InputError(
            f"{flag}: given together with --scheduler {scheduler!r}; an existing cluster "
            f"uses its own workers (set with `dask worker --nthreads`); drop {flag}"
        )


@contextlib.contextmanager
def runtime(
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    *,
    n_chunks: int = 1,
    torch_threads: bool = True,
) -> Iterator[Runtime]:
    """Set up the scheduler for one run; close what was started on exit.

    Args:
        scheduler: None or "threads" (threaded scheduler), a scheduler address
            ("tcp://HOST:PORT") or a scheduler file (.json).
        workers: start a LocalCluster of this many worker processes (not with an address).
        threads_per_worker: dask threads per worker process; with the threaded scheduler, the
            number of dask threads. Default: cores // workers (at least 1).
        n_chunks: chunks in the run (no more dask threads than chunks on the threaded scheduler).
        torch_threads: set torch's intra-op threads on the workers (the deep model runs there).

    Yields:
        A :class:`Runtime`.

    Raises:
        InputError: inconsistent or invalid arguments, or no scheduler at the address.
    """
    _check_args(scheduler, workers, threads_per_worker)
    cores = cpu_cores()
    if scheduler in (None, "threads") and workers is None:
        if threads_per_worker is not None:
            dask_threads = threads_per_worker
            torch_n = max(1, cores // dask_threads)
        else:
            dask_threads, torch_n = threads_layout(n_chunks, cores)
        layout = Layout("threads", 1, dask_threads, torch_n)
        log.info(layout.describe())
        yield Runtime(layout, None, {"scheduler": "threads", "num_workers": dask_threads})
        return

    import distributed

    if workers is not None:
        tpw = threads_per_worker or max(1, cores // workers)
        torch_n = max(1, cores // (workers * tpw))
        with _quiet_startup(), _distributed_logs():
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=tpw,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.WARNING,
            )
        try:
            with _distributed_logs(), distributed.Client(cluster, set_as_default=False) as client:
                client.register_plugin(
                    _WorkerSetup(torch_n if torch_threads else None), name=_PLUGIN
                )
                layout = Layout("local-cluster", workers, tpw, torch_n, client.dashboard_link)
                log.info(layout.describe())
                yield Runtime(layout, client)
        finally:
            with _distributed_logs():
                cluster.close()
        return

    kwargs: dict[str, Any] = (
        {"scheduler_file": scheduler} if "://" not in scheduler else {"address": scheduler}
    )
    try:
        client = distributed.Client(timeout=CONNECT_TIMEOUT, set_as_default=False, **kwargs)
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"--scheduler {scheduler!r}: no dask scheduler answered within {CONNECT_TIMEOUT} s "
            f"({type(exc).__name__}); start one with `dask scheduler` and `dask worker ADDRESS`, "
            "check the address and firewall, or leave --scheduler out to run locally"
        ) from exc
    with client:
        torch_n, n_workers, n_threads = _remote_torch_threads(client)
        if n_workers == 0:
            raise InputError(
                f"--scheduler {scheduler!r}: the scheduler has no workers; start some with "
                f"`dask worker {client.scheduler.address}`"
            )
        client.register_plugin(_WorkerSetup(torch_n if torch_threads else None), name=_PLUGIN)
        layout = Layout("remote", n_workers, n_threads, torch_n, client.dashboard_link)
        log.info(layout.describe())
        yield Runtime(layout, client)


def _remote_torch_threads(client: Any) -> tuple[int, int, int]:
    """(torch threads of every task, workers, dask threads in all) of a running cluster.

    Torch threads: cores of a host // dask threads of all workers on that host, the smallest
    over hosts. One count for the whole run, whatever worker runs a chunk: a worker that joins
    later or that its nanny restarts (under a new address) computes the same bits.
    """
    info = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(cpu_cores)  # {address: cores}
    threads_on_host: dict[str, int] = defaultdict(int)
    for w in info.values():
        threads_on_host[w["host"]] += int(w["nthreads"])
    per_host = [
        max(1, int(cores.get(addr, 1)) // max(1, threads_on_host[w["host"]]))
        for addr, w in info.items()
    ]
    n_threads = sum(int(w["nthreads"]) for w in info.values())
    return min(per_host, default=1), len(info), n_threads


_PLUGIN = "geochange-worker-setup"


#: glibc mallopt parameters and the values its dynamic mmap threshold would grow to on 64 bits.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, 64 << 20


def restore_malloc_thresholds() -> bool:
    """Undo the effect of ``MALLOC_TRIM_THRESHOLD_`` on glibc's mmap threshold in this process.

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand freed memory
    back to the OS). Setting it also freezes glibc's mmap threshold at 128 KiB, so every large
    buffer torch allocates on the CPU is a fresh mmap whose pages fault in on first touch: the
    model ran 2.8× slower in a worker than in the client process (benchmarks/SCALE.md). This
    sets the mmap threshold to 32 MiB and the trim threshold to 64 MiB, what glibc's dynamic
    threshold reaches by itself. Returns False where there is no glibc (macOS, musl, Windows).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False


class _WorkerSetup(WorkerPlugin):
    """Worker plugin: GDAL settings as environment variables, glibc malloc thresholds (see
    :func:`restore_malloc_thresholds`), torch threads.

    Set up on every worker of the cluster, those that join later or that a nanny restarts
    included, with the same values: nothing depends on a worker's address.

    Args:
        torch_threads: torch intra-op threads of every worker process (None: torch left alone,
            the run has no deep model).
    """

    def __init__(self, torch_threads: int | None) -> None:
        self.torch_threads = torch_threads

    def setup(self, worker: Any) -> None:
        from geochange.io.read import GDAL_ENV

        for key, value in GDAL_ENV.items():
            os.environ.setdefault(key, str(value))
        restore_malloc_thresholds()
        if self.torch_threads is None:
            return
        os.environ["OMP_NUM_THREADS"] = str(self.torch_threads)
        import torch

        torch.set_num_threads(int(self.torch_threads))


@contextlib.contextmanager
def _quiet_startup() -> Iterator[None]:
    # LocalCluster warns when the default dashboard port is taken; we ask for a free port, but
    # keep any other start-up warning from becoming an error under `-W error`.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        yield


@contextlib.contextmanager
def _distributed_logs() -> Iterator[None]:
    """Keep the in-process scheduler's INFO chatter out of the terminal unless debugging.

    ``distributed`` installs its own handler at INFO; a LocalCluster's scheduler runs in this
    process, so its logs would interleave with the progress bar. Shown with ``-vv``.
    """
    dlog = logging.getLogger("distributed")
    old = dlog.level
    if not log.isEnabledFor(logging.DEBUG):
        dlog.setLevel(max(old, logging.WARNING))
    try:
        yield
    finally:
        dlog.setLevel(old)


# ----------------------------------------------------------------------------- progress


class _ThreadedProgress(dask.callbacks.Callback):
    """A tqdm bar over chunks on the threaded scheduler: counts finished tasks of a layer."""

    def __init__(self, group: str, total: int) -> None:
        super().__init__()
        self._group = group
        self._n = total
        self._bar: Any = None

    def _start_state(self, dsk: Any, state: Any) -> None:
        from tqdm.auto import tqdm

        if self._bar is None:
            self._bar = tqdm(total=self._n, unit="chunk", desc="detect", leave=False)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        name = key[0] if isinstance(key, tuple) else key
        if isinstance(name, str) and name.startswith(self._group) and self._bar is not None:
            if self._bar.n < self._n:
                self._bar.update(1)

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _ClusterProgress:
    """A tqdm bar over a task group on a distributed cluster, fed by the workers' events.

    Each finished chunk task publishes its group name on :data:`PROGRESS_TOPIC` through the
    worker's public event log (:func:`geochange.tiling.tell_done`); the client subscribes to
    that topic. The scheduler only relays the events: it needs no geochange and none of its
    internals are read. The dashboard link is printed first, for the full picture.
    """

    def __init__(self, client: Any, group: str, total: int, dashboard: str | None) -> None:
        self._client = client
        self._group = group
        self._n = total
        self._dashboard = dashboard
        self._bar: Any = None
        self._lock = threading.Lock()
        self.received = 0  # chunk events of this group seen (a retried task may send two)

    def __enter__(self) -> _ClusterProgress:
        from tqdm.auto import tqdm

        from geochange.tiling import PROGRESS_TOPIC

        if self._dashboard:
            tqdm.write(f"dask dashboard: {self._dashboard}", file=sys.stderr)
        self._bar = tqdm(total=self._n, unit="chunk", desc="detect", leave=False)
        self._client.subscribe_topic(PROGRESS_TOPIC, self._on_event)
        return self

    def _on_event(self, event: Any) -> None:
        _, group = event
        if group != self._group:
            return  # another run on the same cluster
        with self._lock:
            self.received += 1
            if self._bar is not None and self._bar.n < self._n:
                self._bar.update(1)

    def __exit__(self, *exc: Any) -> None:
        from geochange.tiling import PROGRESS_TOPIC

        try:
            self._client.unsubscribe_topic(PROGRESS_TOPIC)
        except Exception as err:  # the bar is a convenience: never fail the run for it
            log.debug("progress unsubscribe failed: %s", err)
        with self._lock:
            if self._bar is not None:
                if exc[0] is None:
                    self._bar.update(self._n - self._bar.n)
                self._bar.close()
                self._bar = None
