"""The outputs of a run as one unit: written aside, published together, never mixed.

A detect run writes several files named after its target (``changes.gpkg``,
``changes_prob.tif``, ``changes_date.tif``, ``changes_quicklook.png``). :class:`OutputSet`
makes them one unit:

- **One run per target.** An advisory lock (``fcntl.flock``) on ``.changes.gpkg.lock`` beside the
  target: a second run on the same target fails at once (:class:`OutputLockedError`) instead of
  waiting or interleaving. The kernel drops the lock when a process dies, even by ``kill -9``.
- **Written aside.** Every file is written into a hidden work folder beside the target
  (``.changes.gpkg.work-PID-XXXXXXXX/``, same file system, so renames are atomic) under its final
  name.
- **Published together, or not at all.** :meth:`OutputSet.publish` first hard-links the previous
  files into ``old/`` inside the work folder, then writes a journal, renames the new files over the
  old ones, removes members of the old set that the new one lacks, and deletes the journal (the
  commit point). On an error (Ctrl-C and SIGTERM included) before the commit, the previous set is
  put back byte-identical; SIGINT and SIGTERM are held off while the renames run.
- **Dead runs are cleaned.** A run killed with ``kill -9`` leaves its work folder (and, if killed
  within the publishing renames, its journal). The next run on the same target, holding the lock,
  rolls such a journal back (the previous set comes back) and removes the folder.
- **Finished chunks are kept for ``--resume``.** A run's finished chunks live in ``chunks/`` of
  its work folder (:mod:`geochange.io.resume`). When a run is killed, interrupted (Ctrl-C,
  SIGTERM) or fails for an unexplained reason, that folder is kept: the next run on the target
  continues from it with ``resume=True`` (:meth:`OutputSet.chunk_store`), or says that it
  exists and starts over; the first run that publishes a set removes it.

Nothing is written before :meth:`OutputSet.__enter__`: :func:`check_target` validates the paths
without touching the file system.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from geochange.errors import (
    GeochangeError,
    InputError,
    OutputExistsError,
    OutputLockedError,
    ResumeError,
)
from geochange.io.resume import (
    CHUNKS,
    MANIFEST,
    ChunkStore,
    count_chunks,
    difference,
    read_manifest,
    write_manifest,
)

__all__ = [
    "OutputSet",
    "check_target",
    "recover",
    "restore_interrupted",
    "resumable",
    "work_folders",
]

log = logging.getLogger(__name__)

_JOURNAL = "publish.json"
_OLD = "old"


def _lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def _work_prefix(target: Path) -> str:
    return f".{target.name}.work-"


def work_folders(target: str | os.PathLike) -> list[Path]:
    """Work folders of runs on ``target`` found beside it (live or dead), sorted."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        return []
    prefix = _work_prefix(target)
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir())


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_target(paths: Mapping[str, Path], overwrite: bool) -> None:
    """Validate the outputs of a run without writing anything.

    Raises:
        InputError: a path is a directory; the output folder (or one above it) is a file; the
            nearest existing folder cannot be written.
        OutputExistsError: an output exists and ``overwrite`` is False.
    """
    for p in paths.values():
        if p.is_dir():
            raise InputError(
                f"output {str(p)!r}: found a directory, expected a file name; choose a file "
                "path such as 'changes.gpkg'"
            )
    target = next(iter(paths.values()))
    folder = target.parent if str(target.parent) else Path(".")
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise InputError(
            f"output {str(target)!r}: {str(base)!r} is a file, expected a folder to write into; "
            "choose an output path whose folders are folders"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(
            f"output {str(target)!r}: folder {str(base)!r} is not writable (read-only or no "
            "permission); choose a writable output folder"
        )
    if not overwrite:
        for p in paths.values():
            if p.exists():
                raise OutputExistsError(
                    f"output {str(p)!r} already exists; pass --overwrite (overwrite=True) to "
                    "replace it, or choose another output path"
                )


# ---------------------------------------------------------------------------------- the lock


class _Lock:
    """An exclusive, non-blocking ``flock`` on a lock file; the file is removed on release."""

    def __init__(self, path: Path, target: Path) -> None:
        self.path = path
        self.fd = -1
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f" (pid {holder})" if holder else ""
                raise OutputLockedError(
                    f"output {str(target)!r} is being written by another geochange run{who}; "
                    "wait for it to finish or choose another output path"
                ) from None
            # The holder before us may have removed the file after we opened it: then our lock
            # is on a dead inode and a third run could lock a new file. Lock the live one.
            try:
                live = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                live = False
            if live:
                self.fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return
            os.close(fd)
        raise OutputLockedError(  # pragma: no cover - needs ten lost races in a row
            f"output {str(target)!r}: could not take the lock {str(path)!r}; another run keeps "
            "replacing it; try again"
        )

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still holding it (see the inode check above)
        os.close(self.fd)
        self.fd = -1


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------- recovery


def _has_chunks(work: Path) -> bool:
    """A work folder holds kept chunks and their manifest (a run that can be resumed)."""
    return (work / CHUNKS / MANIFEST).is_file() and count_chunks(work / CHUNKS) > 0


def _keep_chunks_only(work: Path) -> None:
    """Remove everything in a work folder but its kept chunks (half-written outputs)."""
    for p in work.iterdir():
        if p.name == CHUNKS:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def resumable(target: str | os.PathLike) -> list[Path]:
    """Work folders of dead runs on ``target`` holding chunks a run can resume from; call only
    while holding its lock (or after :func:`recover`)."""
    return [w for w in work_folders(target) if _has_chunks(w)]


def recover(target: str | os.PathLike) -> list[Path]:
    """Clean up after dead runs on ``target``; call only while holding its lock.

    A work folder with a publishing journal belongs to a run killed while renaming: the previous
    files are put back from its ``old/`` copies and the new ones removed. A folder with kept
    chunks is then stripped to them (see :func:`resumable`); any other is deleted.

    Returns:
        The work folders removed.
    """
    target = Path(target)
    removed = []
    for work in work_folders(target):
        if (work / _JOURNAL).exists():
            _roll_back(work, target.parent)
            log.warning(
                "a run on %s was killed while publishing; its previous outputs are restored",
                target,
            )
        if _has_chunks(work):
            _keep_chunks_only(work)
            continue
        log.info("removing %s, left by a run on %s that did not finish", work, target)
        shutil.rmtree(work, ignore_errors=True)
        removed.append(work)
    # Temporary files that writers before output sets left beside each output.
    folder = target.parent if str(target.parent) else Path(".")
    stem = target.name[: -len(target.suffix)] if target.suffix else target.name
    legacy = re.compile(rf"\.{re.escape(stem)}(_[a-z]+)?\.(work|tmp)-[0-9a-f]{{8}}\.[a-z]+")
    for tmp in folder.iterdir():
        if legacy.fullmatch(tmp.name) and tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed


def restore_interrupted(target: str | os.PathLike) -> bool:
    """Put back the previous outputs of ``target`` if a run was killed while publishing.

    Cheap when there is nothing to do (one folder listing). Called before an existing target is
    judged, so that a half-published set is never taken for a result. Skipped while another run
    holds the target (that run recovers it itself).

    Returns:
        True when a set was restored.
    """
    target = Path(target)
    if not any((w / _JOURNAL).exists() for w in work_folders(target)):
        return False
    try:
        lock = _Lock(_lock_path(target), target)
    except OutputLockedError:
        return False
    try:
        recover(target)
    finally:
        lock.release()
    return True


def _roll_back(work: Path, folder: Path) -> None:
    journal = json.loads((work / _JOURNAL).read_text())
    for name, had_old in journal["members"].items():
        final = folder / name
        backup = work / _OLD / name
        if had_old and backup.exists():
            os.replace(backup, final)
        elif not had_old:
            with contextlib.suppress(FileNotFoundError):
                final.unlink()
    _fsync_dir(folder)
    (work / _JOURNAL).unlink()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM off (delivered after the block) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ---------------------------------------------------------------------------------- the set


class OutputSet:
    """The outputs of one run, written into a work folder and published as one unit.

    Use as a context manager; write every file to :attr:`paths` (same kinds, work-folder paths),
    then call :meth:`publish`. Leaving the block without publishing (an error, Ctrl-C, SIGTERM)
    removes the work folder; the previous outputs are untouched.

    Args:
        finals: final path of each output kind; the first is the target (the GeoPackage) that
            names the lock and the work folder. All in one folder.
        overwrite: replace an existing set.
        stale: further paths of the set that this run does not write (e.g. the quicklook of an
            earlier run with one): removed on publish, so no old member outlives its set.
        resume: continue from the kept chunks of a killed run on the target
            (:meth:`chunk_store`); without it such chunks are reported and left until this
            run publishes.

    Raises (on entry):
        OutputLockedError: another run holds the target.
        OutputExistsError: an output appeared meanwhile and ``overwrite`` is False.
    """

    def __init__(
        self,
        finals: Mapping[str, str | os.PathLike],
        *,
        overwrite: bool = False,
        stale: tuple[str | os.PathLike, ...] = (),
        resume: bool = False,
    ) -> None:
        self.finals = {k: Path(v) for k, v in finals.items()}
        self.target = next(iter(self.finals.values()))
        self.folder = self.target.parent if str(self.target.parent) else Path(".")
        if any(p.parent != self.target.parent for p in self.finals.values()):
            raise ValueError("every output of a set must lie in one folder")
        self.overwrite = overwrite
        self.stale = tuple(Path(p) for p in stale if overwrite)
        self.resume = resume
        self.work: Path | None = None
        self._store: ChunkStore | None = None
        self.published = False
        self._lock: _Lock | None = None
        self._made: Path | None = None

    @property
    def paths(self) -> dict[str, Path]:
        """Where each output is written during the run (inside the work folder)."""
        if self.work is None:
            raise RuntimeError("OutputSet.paths is known inside its `with` block only")
        return {k: self.work / p.name for k, p in self.finals.items()}

    def __enter__(self) -> OutputSet:
        check_target(self.finals, self.overwrite)
        if not self.folder.is_dir():
            self._made = _existing_ancestor(self.folder)
            self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = _Lock(_lock_path(self.target), self.target)
            recover(self.target)
            # The target may have been written by a run that ended since we checked.
            check_target(self.finals, self.overwrite)
            work = self.folder / f"{_work_prefix(self.target)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            work.mkdir()
            self.work = work
        except BaseException:
            self._close(failed=True)
            raise
        if not self.resume:
            for dead in resumable(self.target):
                kept = read_manifest(dead / CHUNKS) or {}
                log.warning(
                    "a run on %s that did not finish left %d of %s chunks (%s); this run starts "
                    "over and removes them when it finishes. To continue that run instead, stop "
                    "this one and run the same command with --resume",
                    self.target,
                    count_chunks(dead / CHUNKS),
                    kept.get("chunks", "?"),
                    dead.name,
                )
        return self

    def chunk_store(self, manifest: Mapping[str, object]) -> ChunkStore:
        """Where this run keeps its finished chunks, tied to ``manifest`` (JSON-able: inputs,
        options, model, ``chunks`` = their number; see :mod:`geochange.io.resume`).

        With ``resume``, the kept chunks of a killed run on the target whose manifest equals
        ``manifest`` become this run's (the one with the most chunks if several do).

        Raises:
            ResumeError: ``resume`` was asked and kept chunks exist, but none fit ``manifest``
                (the message names the first difference).
        """
        if self.work is None:
            raise RuntimeError("OutputSet.chunk_store() is called inside its `with` block only")
        own = self.work / CHUNKS
        if self.resume and not own.exists():
            dead = sorted(
                resumable(self.target), key=lambda w: count_chunks(w / CHUNKS), reverse=True
            )
            why = None
            for work in dead:
                why = difference(read_manifest(work / CHUNKS) or {}, manifest)
                if why is None:
                    os.rename(work / CHUNKS, own)
                    shutil.rmtree(work, ignore_errors=True)
                    log.info(
                        "resuming a run on %s: %d of %s chunks are kept",
                        self.target,
                        count_chunks(own),
                        manifest.get("chunks", "?"),
                    )
                    break
            else:
                if why is not None:
                    raise ResumeError(
                        f"--resume: the run on {str(self.target)!r} that did not finish cannot "
                        f"be continued: {why}. Run it with its own inputs and options to continue "
                        "it, or drop --resume to start over"
                    )
                log.warning(
                    "--resume: no unfinished run on %s to continue; starting from the beginning",
                    self.target,
                )
        own.mkdir(exist_ok=True)
        write_manifest(own, manifest)
        self._store = ChunkStore(own, int(manifest.get("chunks", 0) or 0))
        return self._store

    def __exit__(self, exc_type, exc, tb) -> None:
        # Interrupted (Ctrl-C, SIGTERM) or failed for an unexplained reason: keep the finished
        # chunks for --resume. A refusal or an explained fault (GeochangeError) keeps nothing.
        keep = exc is not None and not isinstance(exc, GeochangeError)
        kept = self._close(failed=not self.published, keep_chunks=keep)
        if kept and exc is not None:
            exc.add_note(
                f"{kept} of {self._store.total if self._store else '?'} chunks are kept: run the "
                "same command with --resume to continue"
            )

    def _close(self, failed: bool, keep_chunks: bool = False) -> int:
        """Remove the work folder (or strip it to its chunks); returns the chunks kept."""
        kept = 0
        try:
            if self.work is not None:
                if (self.work / _JOURNAL).exists():
                    _roll_back(self.work, self.folder)
                if failed and keep_chunks and _has_chunks(self.work):
                    _keep_chunks_only(self.work)
                    kept = count_chunks(self.work / CHUNKS)
                else:
                    shutil.rmtree(self.work, ignore_errors=True)
                self.work = None
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            if failed and self._made is not None and not kept:
                _remove_empty(self.folder, self._made)
        return kept

    def publish(self, _after_rename: Callable[[int], None] | None = None) -> dict[str, Path]:
        """Replace the previous set (if any) by the files written to :attr:`paths`.

        Returns:
            The final paths by kind.

        Raises:
            RuntimeError: an output of the set was not written.
        """
        if self.work is None or self.published:
            raise RuntimeError("publish() runs once, inside the OutputSet's `with` block")
        new = self.paths
        missing = [str(p) for p in new.values() if not p.is_file()]
        if missing:
            raise RuntimeError(f"outputs not written, nothing published: {missing}")
        members = list(self.finals.values()) + [p for p in self.stale if p.exists()]
        old = self.work / _OLD
        old.mkdir()
        for final in members:
            if final.exists():
                _keep(final, old / final.name)
        journal = {"members": {p.name: p.exists() for p in members}}
        tmp = self.work / f"{_JOURNAL}.tmp"
        with open(tmp, "w") as f:
            json.dump(journal, f)
            f.flush()
            os.fsync(f.fileno())
        with _signals_held():
            os.replace(tmp, self.work / _JOURNAL)  # from here on a crash rolls back
            for i, (kind, final) in enumerate(self.finals.items()):
                os.replace(new[kind], final)
                if _after_rename is not None:
                    _after_rename(i)
            for p in self.stale:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            _fsync_dir(self.folder)
            (self.work / _JOURNAL).unlink()  # the commit point
            self.published = True
        for dead in resumable(self.target):  # unfinished runs this set supersedes
            if dead != self.work:
                shutil.rmtree(dead, ignore_errors=True)
        return dict(self.finals)


def _keep(final: Path, backup: Path) -> None:
    """A copy of ``final`` that survives its replacement: a hard link (free), else a copy."""
    try:
        os.link(final, backup)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(final, backup)


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``stop`` while empty."""
    p = folder.absolute()
    while p != stop and p != p.parent:
        try:
            p.rmdir()
        except OSError:
            return
        p = p.parent
