"""The run directory: what it holds, its lock (one process per run directory), its metrics file, and
storage failures (a full disk, read-only storage) worded as one line.

A run directory holds ``config.json``, ``metrics.csv``, ``curves.png``, ``confusion.png``,
``checkpoints/``, and where asked for ``report.html``, ``tensorboard/``, ``data_manifest.json`` (an image
folder's files), ``colour_pca.json`` and ``inspect/`` (``cnnlab show``'s pictures); while a process trains
it, also ``.lock``. A folder is a run only when its ``config.json`` or a checkpoint manifest says so
(:func:`holds_run`): ``--overwrite`` replaces those files of a run and nothing else, and never writes into
a folder that holds anything but is no run. The lock is an ``fcntl.flock`` on ``.lock`` (which holds the PID of its holder), taken before an
old run is replaced and kept until training returns; the operating system drops it when its process dies,
even by SIGKILL, so it is never stale (the file of a killed process stays, empty of meaning, and is reused).
The holder removes the file as it releases the lock; every taker checks, once locked, that the path still
names the file it locked, and starts again if not, so two processes never hold locks on two files of the
same name.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cnnlab.data.imagefolder import MANIFEST_FILE, recorded_rows
from cnnlab.errors import CheckpointError, UsageError, few
from cnnlab.fileio import TEMP_SUFFIX, atomic_write_text

RUN_FILES = (
    "config.json", "metrics.csv", "results.json", "curves.png", "confusion.png", "checkpoints", "report.html",
    "tensorboard", "data_manifest.json", "colour_pca.json", "inspect",
)  # fmt: skip
LOCK_FILE = ".lock"
METRIC_FIELDS = (
    "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "selected",
    "epoch_seconds", "train_images_per_s", "elapsed_s",
)  # fmt: skip
# Errors of the storage rather than of cnnlab: worded as one line, never a traceback.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is recognisably a cnnlab run: its ``config.json`` reads as a cnnlab recipe, or
    ``checkpoints/`` holds a cnnlab checkpoint manifest. A file that merely shares a run file's name (a
    user's own ``config.json`` or ``metrics.csv``) does not make one, so ``--overwrite`` never replaces it."""
    from cnnlab.train.checkpoint import FORMAT
    from cnnlab.train.config import TrainConfig

    run_dir = Path(run_dir)
    try:
        TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        return True
    except (OSError, ValueError, TypeError):  # missing, unreadable, not JSON, not a recipe
        pass
    for manifest in (run_dir / "checkpoints").glob("*.json"):
        try:
            record = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("format") == FORMAT:
            return True
    return False


def foreign_entries(folder: Path) -> list[str]:
    """The names in ``folder`` (sorted) other than what a training process leaves before it has written its
    run: the lock file and temporary files. Empty for a folder that does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name != LOCK_FILE and not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX))
    )


def refuse_overwrite_with_resume(overwrite: bool, resume: bool) -> None:
    """The one refusal of ``--overwrite`` with ``--resume`` (a run, an experiment): they contradict each other."""
    if overwrite and resume:
        raise UsageError("--overwrite and --resume contradict each other; choose one")


def nothing_to_resume(folder: Path, what: str) -> UsageError:
    """The one refusal of ``--resume`` where ``folder`` holds no ``what`` (a run, an experiment): a mistyped
    ``--out`` must not start afresh unnoticed."""
    return UsageError(f"nothing to resume in {folder}: no {what} there; drop --resume to start one")


def check_run_dir(run_dir: Path, *, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse, before any work, a run directory that cannot be used; changes nothing on disk."""
    run_dir = Path(run_dir)
    refuse_file_in_the_way(run_dir)
    if resume:
        if not (run_dir / "checkpoints" / "last.json").is_file():
            raise UsageError(
                f"nothing to resume in {run_dir}: no checkpoints/last.json there (it stopped before its first "
                "checkpoint); start it again with --overwrite"
            )
    elif holds_run(run_dir):
        if not overwrite:
            raise UsageError(
                f"run directory {run_dir} already exists; use --overwrite to replace it or --resume to continue it"
            )
    elif foreign_entries(run_dir):  # a folder that was never a run (an image folder, a mistyped --name)
        raise UsageError(
            f"{run_dir} is not a cnnlab run (it holds {few(foreign_entries(run_dir))}): a run goes only into a new "
            "or empty folder, or over an earlier run with --overwrite; choose another --out or --name"
        )


def prepare_run_dir(run_dir: Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create ``run_dir`` after :func:`check_run_dir`; with ``overwrite``, remove the old run's own files only.

    Call it holding the run's :class:`RunLock`, so that no other process is writing the old run.
    """
    run_dir = Path(run_dir)
    check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    ensure_writable_dir(run_dir)  # read-only storage: refuse before removing anything
    if not resume and overwrite and holds_run(run_dir):
        with storage_errors(f"cannot replace the run in {run_dir}"):
            for name in RUN_FILES:  # only cnnlab's own files: anything else the user put there stays
                target = run_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
    ensure_writable_dir(run_dir / "checkpoints")
    return run_dir


def refuse_file_in_the_way(folder: Path) -> None:
    """A usage error if ``folder``, or the nearest of its parents that exists, is a file (``--out``
    naming a file): the user's to fix, not a failure of the storage."""
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        where = "it" if blocker == folder else blocker
        raise UsageError(f"cannot use {folder} as a folder: {where} is a file; choose another folder (--out)")


def ensure_writable_dir(folder: Path) -> Path:
    """Create ``folder`` (and parents) and check that a file can be written there, or fail with one line."""
    folder = Path(folder)
    refuse_file_in_the_way(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(f"cannot write to {folder}: {err.strerror or err}") from None
    return folder


@contextlib.contextmanager
def storage_errors(what: str, *, hint: Callable[[], str] | str = "") -> Iterator[None]:
    """Turn an ``OSError`` of the storage (full, read-only, no permission) raised inside into a
    :class:`CheckpointError` ``"<what> (<file>): <reason>[; <hint>]"``; other errors pass unchanged.
    ``hint`` may be a function, called only on failure (what to do may depend on what is on disk)."""
    try:
        yield
    except OSError as err:
        if err.errno not in STORAGE_ERRNOS:
            raise
        where = f" ({err.filename})" if err.filename else ""
        advice = hint() if callable(hint) else hint
        raise CheckpointError(
            f"{what}{where}: {err.strerror or err}{'; ' + advice if advice else ''}"
        ) from None


def output_storage_errors(what: str, option: str) -> contextlib.AbstractContextManager:
    """:func:`storage_errors` for a command's output (a report, an exported model, pictures): ``what`` names
    it ("the report"), ``option`` the flag that puts it elsewhere (``-o``, ``--out``)."""
    return storage_errors(
        f"cannot write {what}", hint=f"free space or make it writable, or choose another {option}"
    )


def training_storage_errors(run_dir: Path) -> contextlib.AbstractContextManager:
    """:func:`storage_errors` for writing a run's outputs (metrics, curves, config) during training."""
    run_dir = Path(run_dir)

    def hint() -> str:
        if (run_dir / "checkpoints" / "last.json").is_file():
            return (
                "free space or make it writable, then continue with --resume (the last checkpoint is intact)"
            )
        return "free space or make it writable, then start again"

    return storage_errors(f"cannot write to the run directory {run_dir}", hint=hint)


class RunLock:
    """An exclusive lock on a run directory (``fcntl.flock`` on ``<run>/.lock``, which holds the PID).

    :meth:`acquire` raises :class:`CheckpointError` naming the holder's PID when another process
    holds it. Use as a context manager to release it on every exit path.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (creating the run directory) or fail at once; return ``self``."""
        if self._fd is not None:
            return self
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise CheckpointError(f"cannot lock {self.path}: {err.strerror or err}") from None
                locked = False
            # The holder removes the file as it releases (below): a lock taken on a file no longer at
            # the path, or a refusal by a holder that has since removed it, is about a lock that is gone;
            # try again with the file now at the path (or a new one).
            if not self._names(fd):
                os.close(fd)
                continue
            if locked:
                break
            holder = _read_pid(fd)
            os.close(fd)
            raise CheckpointError(
                f"run directory {self.run_dir} is in use by another cnnlab process "
                f"({'PID ' + holder if holder else 'PID unknown'}); wait for it to finish or stop it"
            ) from None
        with contextlib.suppress(OSError):  # the PID only informs; a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def _open(self) -> int:
        """A descriptor of the lock file (created, with the run directory, where missing)."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise CheckpointError(f"cannot write to {self.run_dir}: {err.strerror or err}") from None

    def _names(self, fd: int) -> bool:
        """Whether the lock file's path still names the file ``fd`` is open on."""
        try:
            here, there = os.stat(self.path), os.fstat(fd)
        except OSError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    @contextlib.contextmanager
    def released_on_error(self) -> Iterator[RunLock]:
        """Keep the lock when the block succeeds; release it when the block raises."""
        try:
            yield self
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Drop the lock (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            # Removed while still held, so that no run directory keeps a stray .lock. Safe because every
            # taker checks, once it holds a lock, that the path still names the file it locked, and
            # starts again if not (acquire): a process that opened this file before it was removed cannot
            # go on holding a lock on a file that no longer guards the run.
            if self._names(fd):
                try:
                    self.path.unlink()
                except OSError:  # it stays (read-only storage): at least no stale PID for the next reader
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` atomically from ``rows``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_FIELDS})
    atomic_write_text(path, buffer.getvalue())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.csv`` with numbers parsed (empty cells become None)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


def read_run_json(path: Path, fix: str) -> dict[str, Any]:
    """A run's JSON file (``config.json``, ``results.json``, ``colour_pca.json``) as the object it holds, or a
    :class:`CheckpointError` naming the file, what is wrong and ``fix`` (what to do): the one reader of them,
    so that an empty or damaged file is one line wherever it is read."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        what = "empty" if isinstance(err, ValueError) and not path.read_bytes().strip() else "damaged"
        raise CheckpointError(f"{path} is {what} ({err}); {fix}") from None
    return record


class RunFiles:
    """The files of one run directory, in their formats: ``config.json``, ``metrics.csv`` and
    ``curves.png`` (after every epoch), ``results.json`` (the final report), ``checkpoints/`` and, for an image
    folder, ``data_manifest.json``.

    The training loop says what to record; this class alone knows where and how it is written.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoints = self.run_dir / "checkpoints"

    def write_config(self, config: dict[str, Any]) -> None:
        """The recipe, as ``config.json``."""
        atomic_write_text(self.run_dir / "config.json", json.dumps(config, indent=2))

    def read_config_record(self) -> dict[str, Any]:
        """``config.json`` as saved, with what the run recorded beside the recipe ({} where unreadable)."""
        try:
            record = json.loads((self.run_dir / "config.json").read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def write_colour_pca(self, values: dict[str, Any]) -> None:
        """The alexnet augmentation's colour PCA of the training split, as ``colour_pca.json``."""
        atomic_write_text(self.run_dir / "colour_pca.json", json.dumps(values, indent=2))

    def read_colour_pca(self) -> dict[str, Any] | None:
        """The saved colour PCA (None where the run has none)."""
        path = self.run_dir / "colour_pca.json"
        if not path.is_file():
            return None
        return read_run_json(path, "delete it to recompute it")

    def write_data_manifest(self, manifest: dict[str, Any]) -> None:
        """An image folder's files (relative path, label, split, size, mtime_ns), as ``data_manifest.json``."""
        atomic_write_text(self.run_dir / MANIFEST_FILE, json.dumps(manifest))

    def read_data_manifest(self) -> dict[str, Any] | None:
        """The saved ``data_manifest.json`` (None where the run has none: not an image folder, or older)."""
        path = self.run_dir / MANIFEST_FILE
        if not path.is_file():
            return None
        manifest = read_run_json(
            path, "the run's record of its image folder's files and splits cannot be read"
        )
        recorded_rows(manifest, str(path))  # the rows are read where they are compared; refused here first
        return manifest

    def manifest(self, name: str) -> Path:
        """The manifest of checkpoint ``name`` (``last``, ``best``)."""
        return self.checkpoints / f"{name}.json"

    def save_checkpoint(
        self,
        name: str,
        model: Any,
        header: dict[str, Any],
        optimizer: Any = None,
        state: Any = None,
        rank_rng: Any = None,
    ) -> Path:
        """Save checkpoint ``name`` (see :func:`cnnlab.train.checkpoint.save_checkpoint`)."""
        from cnnlab.train.checkpoint import save_checkpoint

        return save_checkpoint(self.checkpoints, name, model, header, optimizer, state, rank_rng)

    def load_checkpoint(self, name: str, model: Any, optimizer: Any = None) -> dict[str, Any]:
        """Load checkpoint ``name`` into ``model`` (and ``optimizer``); the training state it holds."""
        from cnnlab.train.checkpoint import load_checkpoint

        return load_checkpoint(self.manifest(name), model, optimizer)

    def record_epochs(self, history: list[dict[str, Any]], title: str) -> None:
        """``metrics.csv`` and ``curves.png`` for the epochs so far."""
        from cnnlab.train.plots import plot_curves

        write_metrics(self.run_dir / "metrics.csv", history)
        plot_curves(history, self.run_dir / "curves.png", title=title)

    def record_results(self, history: list[dict[str, Any]], results: dict[str, Any], title: str) -> None:
        """The final report: ``results.json``, the selected row's test columns in ``metrics.csv`` and its
        test point on ``curves.png``."""
        self.record_epochs(history, title)
        atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2))
