"""Data-parallel training (DDP over gloo, loopback only): equivalence with one process, exact resume,
stops and dead ranks. The two-process runs of the equivalence and resume tests share one spawn."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cnnlab.data import Augment, BatchLoader, load_dataset
from cnnlab.data.load import Split
from cnnlab.errors import UsageError
from cnnlab.train import TrainConfig, Trainer
from cnnlab.train.checkpoint import load_weights
from cnnlab.train.distributed import check_world
from cnnlab.train.rundir import read_metrics

SRC = Path(__file__).resolve().parents[1] / "src"
# BN-free (a lecture net), with micro-batches so that DDP's no_sync path runs, and a final batch of
# 9 images shared 5/4: the ranks' unequal shares must still give the global batch's update.
PLAIN = TrainConfig(
    model="lecture-simple", batch_size=64, train_subset=201, epochs=2, seed=3, device="cpu",
    threads=1, eval_batch_size=50,
)  # fmt: skip
TWO = dataclasses.replace(PLAIN, accum_steps=2)  # the two-process run of PLAIN
# data pruning: the ranks add up their images' losses, so both choose the one process's subsets
PRUNED = dataclasses.replace(PLAIN, epochs=3, prune=0.5)
# A batch-norm net: equal to one process only with --sync-bn. NCHW: with channels_last, one process
# against itself in NCHW already differs by 4.5e-5 in conv1 after these 3 steps (layout, not ranks).
NORMED = TrainConfig(
    model="resnet8-cifar", batch_size=32, train_subset=96, epochs=1, seed=1, device="cpu",
    threads=1, eval_batch_size=50, sync_bn=True, channels_last=False,
)  # fmt: skip
WEIGHTS_TOL = 1e-5


def free_port() -> int:
    """A free TCP port on the loopback address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of a run's ``last`` checkpoint."""
    folder = run_dir / "checkpoints"
    name = next(
        p for p in folder.iterdir() if p.name.startswith("last.") and p.name.endswith("weights.safetensors")
    )
    return load_weights(folder / name.name)[0]


class StopAfter:
    """A TrainStep stand-in that asks its trainer to stop after ``steps`` calls (a Ctrl-C on this rank)."""

    def __init__(self, trainer: Trainer, steps: int) -> None:
        self.inner, self.trainer, self.steps, self.calls = trainer.step, trainer, steps, 0

    def __call__(self, *args, **kwargs):
        result = self.inner(*args, **kwargs)
        self.calls += 1
        if self.calls == self.steps:
            self.trainer.request_stop()
        return result

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def two_rank_scenarios(rank: int, port: int, data_dir: str, out: str) -> None:
    """One rank of the spawned job: the three two-process runs the tests compare."""
    from cnnlab.train import distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
    )  # fmt: skip
    torch.set_num_threads(1)
    from cnnlab.train import plots

    plots.plot_curves = lambda *args, **kwargs: None  # as the no_curves fixture: matplotlib is slow
    distributed.setup_process("cpu", threads=1)  # what the CLI does, as the entry point
    status = 1
    try:
        data = load_dataset("fashion-mnist", data_dir=data_dir, verify=False)
        root = Path(out)
        Trainer(TWO, root / "plain", data=data, progress=False).fit()
        Trainer(NORMED, root / "normed", data=data, progress=False).fit()
        Trainer(dataclasses.replace(PRUNED, accum_steps=2), root / "pruned", data=data, progress=False).fit()
        # the same run, stopped by rank 1 alone in the middle of its first epoch, then resumed
        cut = Trainer(TWO, root / "cut", data=data, progress=False)
        if rank == 1:
            cut.step = StopAfter(cut, 2)
        assert cut.fit().status == "interrupted"
        Trainer(TWO, root / "cut", data=data, progress=False, resume=True).fit()
        # and the pruned one: the checkpoint must hold both ranks' losses of the epoch so far
        pruned = dataclasses.replace(PRUNED, accum_steps=2)
        cut = Trainer(pruned, root / "pruned-cut", data=data, progress=False)
        if rank == 1:
            cut.step = StopAfter(cut, 2)
        assert cut.fit().status == "interrupted"
        Trainer(pruned, root / "pruned-cut", data=data, progress=False, resume=True).fit()
        status = 0
    except BaseException:
        traceback.print_exc()  # leave_process_group ends the process before the error could propagate
        raise
    finally:
        distributed.leave_process_group(status)  # as the CLI's entry point ends: exits with the status


@pytest.fixture(scope="module")
def two_ranks(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the two-process runs of :func:`two_rank_scenarios`."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(two_rank_scenarios, args=(free_port(), str(tiny_dataset_dir), str(out)), nprocs=2)
    return out


def one_process(cfg: TrainConfig, run_dir: Path, data_dir: Path) -> Path:
    """Train ``cfg`` in this process (no process group), into ``run_dir``."""
    data = load_dataset("fashion-mnist", data_dir=data_dir, verify=False)
    Trainer(cfg, run_dir, data=data, progress=False).fit()
    return run_dir


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    gaps = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()}
    worst = max(gaps, key=gaps.get)
    assert gaps[worst] < WEIGHTS_TOL, (
        f"{worst} differs by {gaps[worst]:.3g} (largest value {float(b[worst].abs().max()):.3g})"
    )


def test_two_processes_give_the_one_process_update(two_ranks, tiny_dataset_dir, tmp_path, no_curves):
    single = one_process(PLAIN, tmp_path / "plain", tiny_dataset_dir)
    assert_same_weights(last_weights(two_ranks / "plain"), last_weights(single))
    two, one = read_metrics(two_ranks / "plain" / "metrics.csv"), read_metrics(single / "metrics.csv")
    for row2, row1 in zip(two, one, strict=True):  # the ranks' losses, counts and evaluations are gathered
        assert row2["train_acc"] == row1["train_acc"] and row2["val_acc"] == row1["val_acc"]
        assert row2["train_loss"] == pytest.approx(row1["train_loss"], rel=1e-5)
        assert row2["val_loss"] == pytest.approx(row1["val_loss"], rel=1e-5)
    assert two[-1]["test_acc"] == one[-1]["test_acc"]


def test_two_processes_prune_as_one_process(two_ranks, tiny_dataset_dir, tmp_path, no_curves):
    single = one_process(PRUNED, tmp_path / "pruned", tiny_dataset_dir)
    two, one = read_metrics(two_ranks / "pruned" / "metrics.csv"), read_metrics(single / "metrics.csv")
    seen = [round(float(r["train_images_per_s"]) * float(r["epoch_seconds"])) for r in one]
    assert seen == [201, 100, 100]  # the epochs after the first: the 100 highest-loss images
    for row2, row1 in zip(two, one, strict=True):
        assert row2["train_acc"] == row1["train_acc"] and row2["val_acc"] == row1["val_acc"]
    assert_same_weights(last_weights(two_ranks / "pruned"), last_weights(single))


def test_sync_bn_gives_the_one_process_update(two_ranks, tiny_dataset_dir, tmp_path, no_curves):
    single = one_process(NORMED, tmp_path / "normed", tiny_dataset_dir)
    # weights and running statistics alike
    assert_same_weights(last_weights(two_ranks / "normed"), last_weights(single))


@pytest.mark.parametrize(
    "whole_run, cut_run, epochs", [("plain", "cut", TWO.epochs), ("pruned", "pruned-cut", PRUNED.epochs)]
)
def test_interrupted_and_resumed_ends_as_uninterrupted(two_ranks, whole_run: str, cut_run: str, epochs: int):
    timing = ("epoch_seconds", "train_images_per_s", "elapsed_s")
    whole, cut = (
        read_metrics(two_ranks / whole_run / "metrics.csv"),
        read_metrics(two_ranks / cut_run / "metrics.csv"),
    )
    assert len(whole) == len(cut) == epochs
    for a, b in zip(whole, cut):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }
    assert_same_weights(last_weights(two_ranks / whole_run), last_weights(two_ranks / cut_run))


# ------------------------------------------------------------------------------------------ data


def test_rank_parts_are_disjoint_and_make_the_one_process_batch():
    split = Split("train", torch.randint(0, 256, (23, 6, 6), dtype=torch.uint8), torch.arange(23) % 10)
    kwargs = dict(batch_size=8, shuffle=True, seed=4, augment=Augment(crop_padding=1, flip=True))
    whole = list(BatchLoader(split, **kwargs))
    for world in (2, 3):
        parts = [list(BatchLoader(split, rank=r, world_size=world, **kwargs)) for r in range(world)]
        for index, (x, y) in enumerate(whole):
            mine = [p[index] for p in parts if index < len(p)]
            assert torch.equal(torch.cat([m[0] for m in mine]), x)
            assert torch.equal(torch.cat([m[1] for m in mine]), y)
            sizes = [len(m[1]) for m in mine]
            assert max(sizes) - min(sizes) <= 1


def test_a_global_batch_the_ranks_cannot_share_is_refused():
    check_world(128, 2)
    with pytest.raises(UsageError, match="multiple of 3"):
        check_world(128, 3)


# ------------------------------------------------------------------------------------------- CLI


def cnnlab_command(tmp_path: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cnnlab", "train", "lecture-simple", "--nproc", "2", "--data-dir", str(data_dir),
        "--out", str(tmp_path), "--device", "cpu", "--quiet", *extra,
    ]  # fmt: skip


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "CNNLAB_NO_VERIFY": "1"}


def test_nproc_refuses_a_batch_it_cannot_share(tmp_path, tiny_dataset_dir):
    done = subprocess.run(
        cnnlab_command(tmp_path, tiny_dataset_dir, "--batch-size", "63"),
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "multiple of 2" in done.stderr and "Traceback" not in done.stderr


def test_nproc_refuses_before_any_process_starts_what_its_ranks_would_refuse(
    tmp_path, tiny_dataset_dir, monkeypatch, capsys
):
    """The recipe's batch (lecture-simple's 128 by 3 ranks), CPU shards beside ranks, more ranks than cores
    without a GPU: one line, exit 2, in this process (the launcher is never reached)."""
    from cnnlab.cli import main
    from cnnlab.train import distributed

    monkeypatch.setattr(distributed, "launch", lambda *a: pytest.fail("launched"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    common = ["--data-dir", str(tiny_dataset_dir), "--out", str(tmp_path), "--epochs", "1"]
    for cores, extra, said in [
        (4, ["--nproc", "3"], "the batch size 128 is the global batch, shared equally by 3 processes"),
        (2, ["--nproc", "2", "--cpu-shards", "2"], distributed.SHARDS_WITH_RANKS),
        (2, ["--nproc", "4"], "--nproc 4 is more processes than this machine's 2 cores"),
        # the cores first: a batch fitted to 3 processes would only meet that refusal next
        (2, ["--nproc", "3"], "--nproc 3 is more processes than this machine's 2 cores"),
    ]:
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert main(["train", "lecture-simple", *common, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err


def test_a_rank_that_refuses_the_run_stops_every_rank(tmp_path, tiny_dataset_dir):
    (tmp_path / "lecture-simple").mkdir()
    (tmp_path / "lecture-simple" / "config.json").write_text("{}")  # a run is there: rank 0 refuses
    done = subprocess.run(
        cnnlab_command(tmp_path, tiny_dataset_dir, "--train-subset", "64", "--epochs", "1"),
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("cnnlab: error:")]
    # one line, rank 0's, as one process says it: rank 1, stopped only because rank 0 failed, holds its
    # line back until the launcher stops it; no line about a rank that died, as none did
    assert len(errors) == 1 and errors[0].startswith("cnnlab: error: run directory"), done.stderr
    assert "--overwrite" in errors[0] and "Traceback" not in done.stderr


def test_an_error_every_rank_meets_is_said_once(tmp_path, tiny_dataset_dir):
    """Missing data fails every rank alike (exit 1): rank 0 says it; rank 1 holds its line back and is stopped."""
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        cnnlab_command(tmp_path, tmp_path / "empty", "--epochs", "1"),
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("cnnlab: error:")]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert "not found in --data-dir" in errors[0] and "Traceback" not in done.stderr


def rank_pid(launcher: int, rank: int) -> int | None:
    """The PID of the worker of ``rank`` among ``launcher``'s children, once it runs."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children")
    for pid in children.read_text().split() if children.exists() else ():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


def start_until_checkpoint(tmp_path: Path, data_dir: Path) -> tuple[subprocess.Popen, int]:
    """Start a long two-process run; return it and rank 1's PID once its first checkpoint is written."""
    cmd = cnnlab_command(
        tmp_path,
        data_dir,
        "--epochs",
        "500",
        "--train-subset",
        "64",
        "--batch-size",
        "32",
        "--val-fraction",
        "0",
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.monotonic() + 60
    while not (tmp_path / "lecture-simple" / "checkpoints" / "last.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.05)
    pid = rank_pid(proc.pid, 1)
    assert pid is not None
    return proc, pid


def test_a_killed_rank_ends_the_job_with_a_clear_error(tmp_path, tiny_dataset_dir):
    proc, pid = start_until_checkpoint(tmp_path, tiny_dataset_dir)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    _, err = proc.communicate(timeout=40)  # bounded: never a hang
    assert time.monotonic() - killed < 40
    assert proc.returncode == 1
    assert f"rank 1 (pid {pid}) was killed by signal 9" in err


def test_sigterm_on_one_rank_stops_all_with_a_checkpoint(tmp_path, tiny_dataset_dir):
    proc, pid = start_until_checkpoint(tmp_path, tiny_dataset_dir)
    os.kill(pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=40)
    assert proc.returncode == 130, err
    assert "interrupted: checkpoint saved" in out
    assert "Traceback" not in err
    epochs = len(read_metrics(tmp_path / "lecture-simple" / "metrics.csv"))
    assert 1 <= epochs < 500


@pytest.mark.parametrize(("rank0_says", "expected"), [("0", 0), ("130", 130), (None, 130)])
def test_a_stop_the_launcher_raises_on_exits_as_rank_0_ended(monkeypatch, capsys, rank0_says, expected):
    """Ctrl-C reaches torch's launcher and the ranks together; the launcher raises without their statuses. A run
    past its last step (its final evaluation) completes all the same: rank 0's own status (written where
    report_status_to_launcher is told) makes the exit 0, not 130; a stopped run, or no word, stays 130, and
    the launcher says "interrupted" only where rank 0 has said nothing."""
    import torch.distributed.launcher.api as launcher_api
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from cnnlab.train import distributed

    def fake_launch(config, entrypoint):
        def run(*args):
            if rank0_says is not None:  # as rank 0's entry point does at its end
                monkeypatch.setenv("RANK", "0")
                distributed.report_status_to_launcher(int(rank0_says))
            raise SignalException("interrupted", signal.SIGINT)

        return run

    monkeypatch.setattr(launcher_api, "elastic_launch", fake_launch)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # launch sets it for its ranks: restored after
    status_env = distributed.STATUS_FILE_ENV
    assert distributed.launch(2, ["train", "lecture-simple"]) == expected
    # one closing line: rank 0's own ("interrupted: checkpoint saved in ..."), else the launcher's
    assert ("cnnlab: interrupted" in capsys.readouterr().err) == (rank0_says is None)
    assert status_env not in os.environ  # the launcher's file is gone with its variable


def test_only_rank_0_of_a_launched_job_reports_its_status(tmp_path, monkeypatch):
    from cnnlab.train import distributed

    path = tmp_path / "status"
    monkeypatch.setenv(distributed.STATUS_FILE_ENV, str(path))
    monkeypatch.setenv("RANK", "1")
    distributed.report_status_to_launcher(0)
    assert not path.exists() and distributed.launched_status(str(path)) is None
    monkeypatch.setenv("RANK", "0")
    distributed.report_status_to_launcher(2)
    assert distributed.launched_status(str(path)) == 2
    monkeypatch.delenv(distributed.STATUS_FILE_ENV)
    distributed.report_status_to_launcher(0)  # a job torchrun started: nothing to write
    assert distributed.launched_status(str(path)) == 2


LEAVING_RANK = """
import atexit, os, sys, torch
from cnnlab.train import distributed
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
torch.distributed.init_process_group("gloo", world_size=1, rank=0)
tensor = torch.ones(3)
torch.distributed.all_reduce(tensor)
del tensor  # gloo's worker thread may still hold it: it must not be released during interpreter shutdown
atexit.register(lambda: print("interpreter shutdown", flush=True))
print("unflushed output", end="")
distributed.leave_process_group(int(sys.argv[2]))
print("returned")
"""


@pytest.mark.parametrize("status", [0, 1])
def test_a_rank_leaves_its_group_without_the_interpreters_shutdown(status):
    """A rank ends in leave_process_group: the group left, its output flushed, the process exited with the
    status at once, never through Python's shutdown (where a gloo thread releasing a tensor aborts it)."""
    done = subprocess.run(
        [sys.executable, "-c", LEAVING_RANK, str(free_port()), str(status)],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == status, done.stderr
    assert done.stdout == "unflushed output"
