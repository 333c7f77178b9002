"""The run directory: one process at a time (a lock), and storage failures worded as one line."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest

from cnnlab.errors import CheckpointError
from cnnlab.train import TrainConfig, Trainer, plots, rundir, train
from cnnlab.train.rundir import RunLock

METRICS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")


pytestmark = pytest.mark.usefixtures("no_curves")  # conftest.py: matplotlib is not what these test


def recipe(**overrides) -> TrainConfig:
    base = dict(model="lecture-simple", epochs=2, batch_size=32, eval_batch_size=256, lr=0.05, threads=1,
                max_steps_per_epoch=2, val_fraction=0.0)  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: row[k] for k in METRICS} for row in csv.DictReader(f)]


def hold_run(run: Path, tiny_short_test, mode: str, ready, go) -> None:
    """In a child process: open the run (taking its lock), say so, wait, then train it to 3 epochs."""
    trainer = Trainer(recipe(epochs=3), run, data=tiny_short_test, progress=False, **{mode: True})
    ready.set()
    go.wait(30)
    trainer.fit()


@pytest.mark.parametrize("mode", ["overwrite", "resume"])
def test_a_second_process_cannot_use_a_run_directory_in_use(
    tmp_path: Path, tiny_short_test, mode: str
) -> None:
    run = tmp_path / "run"
    train(recipe(), run, data=tiny_short_test, progress=False)
    context = multiprocessing.get_context("fork")  # the child shares the loaded data and starts at once
    ready, go = context.Event(), context.Event()
    holder = context.Process(target=hold_run, args=(run, tiny_short_test, mode, ready, go))
    holder.start()
    try:
        assert ready.wait(30), "the holder did not start"
        in_use = f"run directory {run} is in use by another cnnlab process \\(PID {holder.pid}\\)"
        with pytest.raises(CheckpointError, match=in_use):
            train(recipe(), run, data=tiny_short_test, progress=False, overwrite=True)
        if mode == "resume":
            with pytest.raises(CheckpointError, match=in_use):
                train(recipe(epochs=3), run, data=tiny_short_test, progress=False, resume=True)
    finally:
        go.set()
        holder.join(30)
    assert holder.exitcode == 0
    assert len(metrics(run)) == 3  # the holder's run finished undisturbed
    train(
        recipe(epochs=4), run, data=tiny_short_test, progress=False, resume=True
    )  # and the folder is free again
    assert len(metrics(run)) == 4


def test_the_lock_is_released_when_opening_a_run_fails_and_when_fit_returns(
    tmp_path: Path, tiny_short_test
) -> None:
    run = tmp_path / "run"
    train(recipe(), run, data=tiny_short_test, progress=False)
    (run / "checkpoints" / "last.json").write_text("[]")
    with pytest.raises(CheckpointError, match="damaged") as failed:
        Trainer(recipe(epochs=3), run, data=tiny_short_test, progress=False, resume=True)
    assert failed.traceback  # the failed Trainer is still referenced here, yet its lock is gone
    with RunLock(run):
        pass
    trainer = Trainer(recipe(), run, data=tiny_short_test, progress=False, overwrite=True)
    with pytest.raises(CheckpointError, match=f"PID {os.getpid()}"):
        RunLock(run).acquire()
    trainer.fit()
    assert not (run / ".lock").exists()  # a finished run keeps no stray lock file
    with RunLock(run) as lock:
        assert lock.held and (run / ".lock").read_text().strip() == str(os.getpid())
    assert not (run / ".lock").exists()


def test_a_lock_taken_on_the_file_its_holder_removed_is_taken_again_on_the_file_now_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of removing a lock file: B opens .lock while A holds it, A releases (removing the file),
    B's flock then succeeds on a file no longer at the path. B must not stop there, or a third process
    would lock a new .lock beside it and both would write the run."""
    run = tmp_path / "run"
    first = RunLock(run).acquire()
    real_flock = rundir.fcntl.flock
    calls = []

    def release_first_then_lock(fd: int, op: int) -> None:
        if not calls:  # B has opened the old file: A lets go of it now, before B locks it
            first.release()
        calls.append(fd)
        real_flock(fd, op)

    monkeypatch.setattr(rundir.fcntl, "flock", release_first_then_lock)
    second = RunLock(run).acquire()
    monkeypatch.setattr(rundir.fcntl, "flock", real_flock)
    assert len(calls) == 2  # its first lock was on the removed file: taken again on the one at the path
    assert os.fstat(second._fd).st_ino == os.stat(run / ".lock").st_ino
    with pytest.raises(CheckpointError, match="in use by another cnnlab process"):
        RunLock(run).acquire()
    second.release()
    assert not (run / ".lock").exists()


def test_a_full_disk_while_writing_metrics_or_curves_is_one_line_and_resume_finishes(
    tmp_path: Path, tiny_short_test, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(recipe(epochs=3), tmp_path / "straight", data=tiny_short_test, progress=False)
    run = tmp_path / "run"

    def full(rows, path: Path, title: str = "") -> None:
        if len(rows) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(plots, "plot_curves", full)
    with pytest.raises(CheckpointError) as failed:
        train(recipe(epochs=3), run, data=tiny_short_test, progress=False)
    message = str(failed.value)
    assert message.startswith(f"cannot write to the run directory {run} ({run / 'curves.png'})")
    assert "No space left on device; free space or make it writable, then continue with --resume" in message
    monkeypatch.setattr(plots, "plot_curves", lambda *args, **kwargs: None)
    train(recipe(epochs=3), run, data=tiny_short_test, progress=False, resume=True)
    assert metrics(run) == metrics(tmp_path / "straight")


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_real_full_or_read_only_file_system(tmp_path: Path, tiny_short_test) -> None:
    train(recipe(epochs=3), tmp_path / "straight", data=tiny_short_test, progress=False)
    with tmpfs(tmp_path / "small", "4m") as disk:
        run = disk / "run"
        first = Trainer(recipe(epochs=3), run, data=tiny_short_test, progress=False)
        first.on_epoch = lambda row: first.request_stop()
        assert first.fit().status == "interrupted"
        filler = disk / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        manifest = (run / "checkpoints" / "last.json").read_text()
        with pytest.raises(CheckpointError, match="No space left on device"):
            train(recipe(epochs=3), run, data=tiny_short_test, progress=False, resume=True)
        assert (run / "checkpoints" / "last.json").read_text() == manifest
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(CheckpointError, match="Read-only file system"):
            train(recipe(epochs=3), run, data=tiny_short_test, progress=False, overwrite=True)
        with pytest.raises(CheckpointError, match="Read-only file system"):
            train(recipe(epochs=3), run, data=tiny_short_test, progress=False, resume=True)
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        assert json.loads((run / "checkpoints" / "last.json").read_text())["epoch"] == 1
        train(recipe(epochs=3), run, data=tiny_short_test, progress=False, resume=True)
        assert metrics(run) == metrics(tmp_path / "straight")


def test_a_full_disk_before_the_first_checkpoint_says_start_again(
    tmp_path: Path, tiny_short_test, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path, text: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(rundir, "atomic_write_text", full)  # config.json, written before any checkpoint
    with pytest.raises(CheckpointError) as failed:
        train(recipe(), tmp_path / "run", data=tiny_short_test, progress=False)
    assert str(failed.value) == (
        f"cannot write to the run directory {tmp_path / 'run'} ({tmp_path / 'run' / 'config.json'}): "
        "No space left on device; free space or make it writable, then start again"
    )


def test_a_file_where_the_out_folder_should_be_is_a_usage_error(
    tmp_path: Path, tiny_dataset_dir, capsys
) -> None:
    """``--out`` naming a file (or a folder below one) is the user's mistake: exit 2 before any work, one line
    naming the file, for a run and for an experiment alike; the file is left as it was."""
    from cnnlab.cli import main

    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    common = ["--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--max-steps-per-epoch", "1", "--quiet"]
    assert main(["train", "lecture-simple", "--out", str(afile), *common]) == 2
    assert f"{afile} is a file; choose another folder (--out)" in capsys.readouterr().err
    assert (
        main(["compare", "lecture-simple", "lecture-residual", "--out", str(afile / "below"), *common]) == 2
    )
    assert f"{afile} is a file; choose another folder (--out)" in capsys.readouterr().err
    assert main(["compare", "lecture-simple", "lecture-residual", "--out", str(afile), *common]) == 2
    assert f"cannot use {afile} as a folder: it is a file" in capsys.readouterr().err
    assert main(["show", "filters", "lecture-simple", "--out", str(afile)]) == 2  # the views' --out too
    assert f"cannot use {afile} as a folder: it is a file" in capsys.readouterr().err
    assert afile.read_text() == "mine"
