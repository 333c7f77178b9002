"""Checkpoints that survive a full disk or a kill at any write, and refuse damaged or hostile manifests."""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as serialize

from cnnlab.errors import CheckpointError
from cnnlab.fileio import atomic_write_text, sha256_hex
from cnnlab.train import TrainConfig, Trainer, train
from cnnlab.train.checkpoint import load_checkpoint, load_weights, read_manifest, save_checkpoint

METRICS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


pytestmark = pytest.mark.usefixtures("no_curves")  # conftest.py: matplotlib is not what these test


def recipe(**overrides) -> TrainConfig:
    base = dict(model="lecture-simple", epochs=2, batch_size=32, eval_batch_size=256, lr=0.05, threads=1,
                max_steps_per_epoch=2)  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def metrics(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without its timing columns, which differ from run to run."""
    with open(run_dir / "metrics.csv") as f:
        return [{k: row[k] for k in METRICS} for row in csv.DictReader(f)]


class FullDisk:
    """While entered, ``os.write`` into ``folder`` fails with ENOSPC from the ``fail_at``-th write on
    (0-based; None: never); ``writes`` counts the writes into ``folder``."""

    def __init__(self, folder: Path, fail_at: int | None = None) -> None:
        if not Path("/proc/self/fd").is_dir():
            pytest.skip("needs /proc to tell which file a descriptor writes to")
        self.folder, self.fail_at, self.writes = folder, fail_at, 0
        self._patch = pytest.MonkeyPatch()

    def __enter__(self) -> FullDisk:
        real_write, prefix = os.write, str(self.folder.resolve()) + os.sep

        def write(fd: int, data: bytes) -> int:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if target.startswith(prefix):
                self.writes += 1
                if self.fail_at is not None and self.writes > self.fail_at:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        self._patch.setattr(os, "write", write)
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.undo()


def intact(checkpoints: Path) -> list[str]:
    """Names of the checkpoints in ``checkpoints`` whose manifests and files all check out."""
    names = []
    for manifest_path in sorted(checkpoints.glob("*.json")):
        manifest = read_manifest(manifest_path)
        for kind, file_name in manifest["files"].items():
            load_weights(checkpoints / file_name, manifest["sha256"][kind])
        names.append(manifest_path.stem)
    return names


# --------------------------------------------------------------------------------- saving


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model.model_name = "small"
    return model


def state(epoch: int) -> dict:
    schedule = {"step": epoch, "total_steps": 10, "per_step": {"last_epoch": epoch}, "plateau": None}
    return {"epoch": epoch, "step_in_epoch": 0, "partial": None, "schedule": schedule, "history": [],
            "best_accuracy": 0.0}  # fmt: skip


def trained(model: torch.nn.Module) -> torch.optim.Optimizer:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    return optimizer


def test_a_save_that_fails_at_any_write_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    model = small_model()
    optimizer = trained(model)
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, "last", model, {"model": "small"}, optimizer, state(1))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with FullDisk(folder) as probe:
        save_checkpoint(tmp_path / "elsewhere", "last", model, {"model": "small"}, optimizer, state(2))
        assert probe.writes == 0
        save_checkpoint(folder, "last", model, {"model": "small"}, optimizer, state(2))
    assert probe.writes >= 3  # weights, state, manifest
    for k in range(probe.writes):
        folder_k = tmp_path / f"k{k}"
        folder_k.mkdir()
        for name, data in before.items():
            (folder_k / name).write_bytes(data)
        with (
            FullDisk(folder_k, fail_at=k),
            pytest.raises(
                CheckpointError, match="No space left on device; free space and resume with --resume"
            ),
        ):
            save_checkpoint(folder_k, "last", model, {"model": "small"}, optimizer, state(2))
        assert {p.name: p.read_bytes() for p in folder_k.iterdir()} == before, f"write {k}"
        restored = small_model()
        assert load_checkpoint(folder_k / "last.json", restored, trained(small_model()))["epoch"] == 1


FUSED_OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, fused=True),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, fused=True),
}


@pytest.mark.parametrize("kind", sorted(FUSED_OPTIMIZERS))
def test_restored_optimizer_state_keeps_a_channels_last_weights_layout_so_fused_steps_continue_exactly(
    tmp_path: Path, kind: str
) -> None:
    """Saved tensors come back contiguous; torch's fused CPU step walks a buffer as if laid out like its
    weight, so without the restored layout a resumed run would drift from the uninterrupted one."""

    def conv_model() -> torch.nn.Module:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 2))
        model.model_name = "small-conv"
        return model.to(memory_format=torch.channels_last)

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
        torch.manual_seed(seed)
        optimizer.zero_grad()
        model(torch.randn(5, 3, 4, 4).contiguous(memory_format=torch.channels_last)).sum().backward()
        optimizer.step()

    straight = conv_model()
    optimizer = FUSED_OPTIMIZERS[kind](straight.parameters())
    step(straight, optimizer, 1)
    save_checkpoint(tmp_path, "last", straight, {"model": "small-conv"}, optimizer, state(1))
    step(straight, optimizer, 2)
    resumed = conv_model()
    resumed_optimizer = FUSED_OPTIMIZERS[kind](resumed.parameters())
    load_checkpoint(tmp_path / "last.json", resumed, resumed_optimizer)
    weight = resumed[0].weight
    buffers = [v for v in resumed_optimizer.state[weight].values() if v.shape == weight.shape]
    assert buffers and all(buffer.stride() == weight.stride() for buffer in buffers)
    step(resumed, resumed_optimizer, 2)
    assert torch.equal(resumed[0].weight, straight[0].weight)


def test_a_save_removes_the_files_of_the_previous_one_and_leftovers_of_a_killed_one(tmp_path: Path) -> None:
    model = small_model()
    optimizer = trained(model)
    first = read_manifest(save_checkpoint(tmp_path, "last", model, {"model": "small"}, optimizer, state(1)))
    save_checkpoint(tmp_path, "best", model, {"model": "small"}, None, state(1))
    leftovers = [".last.7.weights.safetensors.x1y2z3.part", ".last.json.abc.part", "last.weights.safetensors"]
    for name in (*leftovers, "notes.txt"):
        (tmp_path / name).write_text("")
    second = read_manifest(save_checkpoint(tmp_path, "last", model, {"model": "small"}, optimizer, state(2)))
    assert not set(first["files"].values()) & set(second["files"].values())  # new names, never overwritten
    best = read_manifest(tmp_path / "best.json")
    assert {p.name for p in tmp_path.iterdir()} == {
        "last.json",
        *second["files"].values(),
        "best.json",
        *best["files"].values(),
        "notes.txt",
    }
    assert second["epoch"] == 2 and intact(tmp_path) == ["best", "last"]


# ------------------------------------------------------------------------ full disk in a run


def test_a_full_disk_at_each_checkpoint_write_then_resume_ends_like_an_uninterrupted_run(
    tmp_path: Path, tiny_short_test
) -> None:
    cfg = recipe(val_fraction=0.0)
    with FullDisk(tmp_path / "straight" / "checkpoints") as probe:
        train(cfg, tmp_path / "straight", data=tiny_short_test, progress=False)
    expected = metrics(tmp_path / "straight")
    assert probe.writes >= 3 * cfg.epochs  # at least weights, state and manifest of last
    for k in range(probe.writes):
        run = tmp_path / f"k{k}"
        with (
            FullDisk(run / "checkpoints", fail_at=k),
            pytest.raises(
                CheckpointError, match=f"cannot write checkpoint to {run / 'checkpoints'}: No space left"
            ),
        ):
            train(cfg, run, data=tiny_short_test, progress=False)
        if "last" in intact(run / "checkpoints"):
            train(cfg, run, data=tiny_short_test, progress=False, resume=True)
        else:  # the disk filled up before the first checkpoint: nothing to resume, start again
            train(cfg, run, data=tiny_short_test, progress=False, overwrite=True)
        assert metrics(run) == expected, f"write {k}"


# ------------------------------------------------------------------- manifests and state files


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory, tiny_short_test) -> Path:
    run = tmp_path_factory.mktemp("saved") / "run"
    train(recipe(epochs=1), run, data=tiny_short_test, progress=False)
    return run


def copy_run(saved_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for path in saved_run.rglob("*"):
        if path.is_file():
            (run / path.relative_to(saved_run)).write_bytes(path.read_bytes())
    return run


@dataclasses.dataclass
class Whole:
    """What ``edit_manifest``'s change returns to replace the whole manifest."""

    value: object


def edit_manifest(run: Path, change: Callable[[dict], object]) -> None:
    """Edit last.json in place through ``change`` (or replace it by what a returned :class:`Whole` holds)."""
    path = run / "checkpoints" / "last.json"
    manifest = json.loads(path.read_text())
    replaced = change(manifest)
    path.write_text(json.dumps(replaced.value if isinstance(replaced, Whole) else manifest))


def rewrite_state(run: Path, change: Callable[[dict, dict], None]) -> None:
    """Rewrite last's state file through ``change(tensors, header)`` and fix its manifest's SHA-256,
    as a buggy or hostile writer could."""
    folder = run / "checkpoints"
    manifest = json.loads((folder / "last.json").read_text())
    path = folder / manifest["files"]["state"]
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["json"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    change(tensors, header)
    data = serialize(tensors, metadata={"json": json.dumps(header)})
    path.write_bytes(data)
    manifest["sha256"]["state"] = sha256_hex(data)
    (folder / "last.json").write_text(json.dumps(manifest))


def test_a_manifest_naming_a_file_outside_its_folder_is_refused(
    saved_run: Path, tmp_path: Path, tiny_short_test
) -> None:
    run = copy_run(saved_run, tmp_path)
    weights_name = json.loads((run / "checkpoints" / "last.json").read_text())["files"]["weights"]
    outside = tmp_path / "outside.safetensors"  # a valid weights file, with its true SHA-256
    outside.write_bytes((run / "checkpoints" / weights_name).read_bytes())
    for name in ("../outside.safetensors", str(outside), "sub/x.safetensors", "..", ""):
        edit_manifest(run, lambda m, name=name: m["files"].update(weights=name))
        with pytest.raises(CheckpointError, match="is refused: its weights file .* is not a plain file name"):
            Trainer(recipe(epochs=2), run, data=tiny_short_test, progress=False, resume=True)
    edit_manifest(run, lambda m: m["files"].update(weights=weights_name))
    for sha in (None, "", "0" * 63, "x" * 64):
        edit_manifest(run, lambda m, sha=sha: m["sha256"].update(weights=sha))
        with pytest.raises(CheckpointError, match="is refused: its weights file has no valid SHA-256"):
            Trainer(recipe(epochs=2), run, data=tiny_short_test, progress=False, resume=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: Whole([m]), "a JSON list, not an object"),
        (lambda m: Whole("last"), "a JSON str, not an object"),
        (lambda m: m.pop("files"), "'files' does not name a weights file"),
        (lambda m: m.update(files=["a", "b"]), "'files' does not name a weights file"),
        (lambda m: m.pop("sha256"), "no 'sha256' object"),
        (lambda m: m.update(sha256="abc"), "no 'sha256' object"),
        (lambda m: m.pop("model"), "no model name"),
        (lambda m: m.update(format=2), "not a cnnlab checkpoint manifest"),
        (lambda m: m["files"].update(extra="x"), "unknown file kind 'extra'"),
        (lambda m: m.update(epoch="1"), "'epoch' is not a whole number"),
        (lambda m: m["files"].pop("state"), "holds weights only, no training state to resume"),
    ],
)
def test_damaged_manifests_are_clear_errors(
    saved_run: Path, tmp_path: Path, tiny_short_test, change: Callable, message: str
) -> None:
    run = copy_run(saved_run, tmp_path)
    edit_manifest(run, change)
    with pytest.raises(CheckpointError, match=message):
        Trainer(recipe(epochs=2), run, data=tiny_short_test, progress=False, resume=True)


def drop(key: str) -> Callable[[dict, dict], None]:
    return lambda tensors, header: header.pop(key)


@pytest.mark.parametrize(
    "change, message",
    [
        (drop("schedule"), "its header has no 'schedule'"),
        (drop("history"), "its header has no 'history'"),
        (drop("optimizer"), "param_groups are missing"),
        (lambda t, h: h.update(epoch="1"), "'epoch' has the wrong type"),
        (lambda t, h: h.update(history=[1, 2]), "'history' holds a non-object"),
        (lambda t, h: h["schedule"].pop("step"), "the schedule state is incomplete"),
        (lambda t, h: h["optimizer"].update(param_groups={}), "param_groups are missing"),
        (
            lambda t, h: h["optimizer"]["param_groups"].append({"params": []}),
            "3 parameter groups, expected 2",
        ),
        (lambda t, h: t.pop("rng.torch"), "no valid random-number-generator state"),
        (lambda t, h: t.update({"rng.torch": torch.zeros(3, dtype=torch.uint8)}), "is damaged"),
        (
            lambda t, h: t.update({"optimizer.0.momentum_buffer": torch.zeros(3, 3)}),
            r"momentum_buffer of parameter 0 has shape \(3, 3\)",
        ),
        (lambda t, h: t.update({"optimizer.99.momentum_buffer": torch.zeros(3)}), "state for parameter 99"),
    ],
)
def test_damaged_state_files_are_clear_errors(
    saved_run: Path, tmp_path: Path, tiny_short_test, change: Callable, message: str
) -> None:
    run = copy_run(saved_run, tmp_path)
    rewrite_state(run, change)
    with pytest.raises(CheckpointError, match=message):
        Trainer(recipe(epochs=2), run, data=tiny_short_test, progress=False, resume=True)


def test_a_state_file_that_is_not_safetensors_is_a_clear_error(
    saved_run: Path, tmp_path: Path, tiny_short_test
) -> None:
    run = copy_run(saved_run, tmp_path)
    garbage = b"\x80\x04not safetensors"  # pickle-like bytes: never unpickled
    manifest = json.loads((run / "checkpoints" / "last.json").read_text())
    (run / "checkpoints" / manifest["files"]["state"]).write_bytes(garbage)
    manifest["sha256"]["state"] = sha256_hex(garbage)
    atomic_write_text(run / "checkpoints" / "last.json", json.dumps(manifest))
    with pytest.raises(CheckpointError, match="cannot be read"):
        Trainer(recipe(epochs=2), run, data=tiny_short_test, progress=False, resume=True)


# --------------------------------------------------------------------------------- SIGKILL


def train_in_child(cfg: TrainConfig, run: Path, tiny_short_test, mode: dict) -> None:
    train(cfg, run, data=tiny_short_test, progress=False, **mode)


def test_sigkill_at_random_moments_always_leaves_a_checkpoint_that_resumes_to_the_same_metrics(
    tmp_path: Path, tiny_short_test
) -> None:
    # Many one-step epochs: a checkpoint is saved every few tens of milliseconds, so kills land in saves.
    cfg = recipe(epochs=12, max_steps_per_epoch=1, val_fraction=0.0)
    train(cfg, tmp_path / "straight", data=tiny_short_test, progress=False)
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    context = multiprocessing.get_context("fork")  # the child shares the loaded data and starts at once
    moments = random.Random(20261202)
    leftovers = 0
    for _ in range(5):
        mode = {"resume": True} if (checkpoints / "last.json").exists() else {"overwrite": True}
        child = context.Process(target=train_in_child, args=(cfg, run, tiny_short_test, mode))
        child.start()
        time.sleep(moments.uniform(0.05, 0.6))
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        if (checkpoints / "last.json").exists():
            assert "last" in intact(checkpoints)  # raises a CheckpointError if anything is damaged
            named = set(read_manifest(checkpoints / "last.json")["files"].values())
            leftovers += any(
                p.name.startswith((".last", "last.")) and p.name not in named for p in checkpoints.iterdir()
            )
    mode = {"resume": True} if (checkpoints / "last.json").exists() else {"overwrite": True}
    train(cfg, run, data=tiny_short_test, progress=False, **mode)
    assert metrics(run) == metrics(tmp_path / "straight")
    print(f"{leftovers} of 5 kills left files of an unfinished save behind")  # shown with -s
