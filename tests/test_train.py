"""The training engine on a tiny generated dataset: run directory, determinism, exact resume, failures."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import CheckpointError, TrainingDiverged, UsageError
from cnnlab.train import TrainConfig, Trainer, precision, train
from cnnlab.train.optim import FUSED_MIN_PARAMS, LRSchedule, build_optimizer, param_groups

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")


@pytest.fixture(scope="module")
def tiny(tiny_dataset_dir: Path):
    return load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False)


def recipe(**overrides) -> TrainConfig:
    base = dict(model="lecture-simple", epochs=2, batch_size=64, eval_batch_size=256, lr=0.05, threads=1)
    return TrainConfig(**{**base, **overrides})


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: row[k] for k in METRICS} for row in csv.DictReader(f)]


def test_run_directory_holds_config_metrics_plot_and_checkpoints(tmp_path: Path, tiny) -> None:
    result = train(recipe(epochs=3), tmp_path / "run", data=tiny, progress=False)
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["model"] == "lecture-simple"
    assert len(metrics(run)) == 3
    assert (run / "curves.png").stat().st_size > 1000
    for name in ("last", "best"):
        manifest = json.loads((run / "checkpoints" / f"{name}.json").read_text())
        assert all((run / "checkpoints" / file).is_file() for file in manifest["files"].values())
    assert set(json.loads((run / "checkpoints" / "last.json").read_text())["files"]) == {"weights", "state"}
    assert result.test_acc > 0.5  # the generated classes are learnable; chance is 0.1
    results = json.loads((run / "results.json").read_text())
    assert results["checkpoint"] == "best" and results["test_acc"] == result.test_acc
    assert results["precision"] == "fp32" and results["selection"] == "best validation accuracy"


@pytest.mark.usefixtures("no_curves")
def test_the_test_split_is_evaluated_once_on_the_checkpoint_the_validation_split_selects(
    tmp_path: Path, tiny, monkeypatch
) -> None:
    evaluated = []
    original = Trainer.evaluate

    def spy(self, loader, tta=None):
        evaluated.append("test" if loader is self.test_loader else "val")
        return original(self, loader, tta)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    result = train(recipe(epochs=3), tmp_path / "run", data=tiny, progress=False)
    assert evaluated == ["val", "val", "val", "test"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    best = max(result.history, key=lambda r: r["val_acc"])
    assert [r["selected"] for r in rows] == ["1" if float(r["epoch"]) == best["epoch"] else "" for r in rows]
    assert [r["test_acc"] != "" for r in rows] == [r["selected"] == "1" for r in rows]
    assert result.results["epoch"] == best["epoch"] and result.results["val_acc"] == best["val_acc"]


@pytest.mark.usefixtures("no_curves")
def test_without_a_validation_split_nothing_is_selected_and_the_last_epoch_is_the_result(
    tmp_path: Path, tiny
) -> None:
    result = train(recipe(epochs=2, val_fraction=0.0), tmp_path / "run", data=tiny, progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "best.json").exists()
    assert result.results["checkpoint"] == "last" and result.results["epoch"] == 2
    assert result.history[-1]["selected"] == 1 and result.history[0].get("test_acc") is None
    with pytest.raises(UsageError, match="plateau schedule decays on the validation loss"):
        recipe(schedule="plateau", val_fraction=0.0).validate()


def test_the_default_validation_split_is_seeded_and_disjoint_from_training(tmp_path: Path, tiny) -> None:
    a = Trainer(recipe(), tmp_path / "a", data=tiny, progress=False)
    b = Trainer(recipe(), tmp_path / "b", data=tiny, progress=False)
    assert TrainConfig().val_fraction == 0.1 and len(a.data.val) == round(0.1 * len(tiny.train))
    assert torch.equal(a.data.val.images, b.data.val.images)
    train_rows = {bytes(img.numpy()) for img in a.data.train.images}
    assert not any(bytes(img.numpy()) in train_rows for img in a.data.val.images)
    assert len(a.data.train) + len(a.data.val) == len(tiny.train)


@pytest.mark.usefixtures("no_curves")  # conftest.py: metrics only, matplotlib would be most of the time
def test_same_seed_gives_same_metrics(tmp_path: Path, tiny) -> None:
    train(recipe(crop_padding=2, flip=True), tmp_path / "a", data=tiny, progress=False)
    train(recipe(crop_padding=2, flip=True), tmp_path / "b", data=tiny, progress=False)
    train(recipe(crop_padding=2, flip=True, seed=1), tmp_path / "c", data=tiny, progress=False)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert metrics(tmp_path / "a") != metrics(tmp_path / "c")


def resume_recipe() -> TrainConfig:
    """The recipe of the exact-resume test: augmentation, dropout, warm-up and cosine all draw or depend on state."""
    return recipe(epochs=3, crop_padding=2, flip=True, drop_rate=0.3, schedule="cosine", warmup_epochs=1)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory, tiny) -> Path:
    """The uninterrupted run of :func:`resume_recipe`, trained once for every stopping point compared with it."""
    run = tmp_path_factory.mktemp("straight") / "run"
    train(resume_recipe(), run, data=tiny, progress=False)
    return run


@pytest.mark.usefixtures("no_curves")
@pytest.mark.parametrize("stop_after_steps", [10, 14])  # an epoch boundary (10 steps/epoch) and mid-epoch
def test_resume_ends_with_the_same_metrics_as_an_uninterrupted_run(
    tmp_path: Path, tiny, stop_after_steps: int, interrupt_after, straight_run: Path
) -> None:
    cfg = resume_recipe()
    trainer = Trainer(cfg, tmp_path / "stopped", data=tiny, progress=False)
    interrupt_after(trainer, stop_after_steps)
    assert trainer.fit().status == "interrupted"
    resumed = train(cfg, tmp_path / "stopped", data=tiny, progress=False, resume=True)
    assert resumed.status == "completed"
    assert metrics(tmp_path / "stopped") == metrics(straight_run)
    # the run's wall time continues across the stop: each epoch ends at least its own time after the last
    # (an epoch resumed part-way counts the part before the stop; time-to-accuracy reads elapsed_s)
    with open(tmp_path / "stopped" / "metrics.csv") as f:
        rows = [(float(r["elapsed_s"]), float(r["epoch_seconds"])) for r in csv.DictReader(f)]
    ends = [0.0] + [elapsed for elapsed, _ in rows]
    assert all(elapsed >= end + seconds for end, (elapsed, seconds) in zip(ends, rows)), rows


@pytest.mark.usefixtures("no_curves")
def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path: Path, tiny) -> None:
    trainer = Trainer(recipe(epochs=3), tmp_path / "run", data=tiny, progress=False)
    forward = trainer.model.forward

    def poisoned(x: torch.Tensor) -> torch.Tensor:
        out = forward(x)
        return out * math.nan if trainer.schedule.step >= 12 else out

    trainer.step.forward = poisoned
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2"):
        trainer.fit()
    manifest = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert manifest["model"] == "lecture-simple"
    resumed = Trainer(recipe(epochs=3), tmp_path / "run", data=tiny, progress=False, resume=True)
    assert resumed.start_epoch == 1 and all(torch.isfinite(p).all() for p in resumed.model.parameters())


@pytest.mark.usefixtures("no_curves")
def test_existing_run_is_refused_unless_overwrite_or_resume(tmp_path: Path, tiny) -> None:
    train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists; use --overwrite"):
        train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False)
    train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False, overwrite=True)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # only cnnlab's own files are replaced


@pytest.mark.usefixtures("no_curves")
def test_a_folder_that_is_no_run_is_never_trained_into_even_with_overwrite(
    tmp_path: Path, tiny, tiny_dataset_dir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files that merely share a run file's name (config.json, metrics.csv), or a mistyped --name that hits an
    image folder: refused in one line naming what is there, exit 2, every file left as it was."""
    mine = tmp_path / "notrun"
    mine.mkdir()
    (mine / "config.json").write_text("hi")
    (mine / "metrics.csv").write_text("x")
    images = tmp_path / "photos"
    (images / "cat").mkdir(parents=True)
    (images / "cat" / "1.png").write_bytes(b"png")
    for folder in (mine, images):
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        for overwrite in (False, True):
            with pytest.raises(
                UsageError, match=f"{re.escape(str(folder))} is not a cnnlab run \\(it holds "
            ):
                train(recipe(epochs=1), folder, data=tiny, progress=False, overwrite=overwrite)
        monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")  # the generated dataset has no official checksums
        argv = ["train", "lecture-simple", "--out", str(tmp_path), "--name", folder.name, "--overwrite"]
        assert main([*argv, "--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--quiet"]) == 2
        assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    err = capsys.readouterr().err
    assert "notrun is not a cnnlab run (it holds config.json, metrics.csv): " in err
    assert "photos is not a cnnlab run (it holds cat): " in err and "choose another --out or --name" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    train(recipe(epochs=1), empty, data=tiny, progress=False)  # an empty folder is fine
    (empty / "inspect").mkdir()
    (empty / "inspect" / "old-cam.png").write_bytes(b"old")
    (empty / "config.json").write_text("damaged")  # still a run: its checkpoint manifests say so
    train(recipe(epochs=1), empty, data=tiny, progress=False, overwrite=True)
    assert not (empty / "inspect").exists()  # the old model's pictures went with it


def test_a_file_in_the_way_of_the_run_directory_is_a_usage_error(tmp_path: Path, tiny) -> None:
    """The user's to fix (another folder), not a storage failure; real storage failures:
    tests/test_rundir.py."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="a-file is a file; choose another folder"):
        train(recipe(epochs=1), blocker / "run", data=tiny, progress=False)


def test_resume_refuses_another_model_and_damaged_checkpoints(tmp_path: Path, tiny) -> None:
    train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False)
    with pytest.raises(UsageError, match="is a run of 'lecture-simple'"):
        train(
            recipe(epochs=2, model="lecture-residual"),
            tmp_path / "run",
            data=tiny,
            progress=False,
            resume=True,
        )
    checkpoints = tmp_path / "run" / "checkpoints"
    weights = checkpoints / json.loads((checkpoints / "last.json").read_text())["files"]["weights"]
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        train(recipe(epochs=2), tmp_path / "run", data=tiny, progress=False, resume=True)
    with pytest.raises(UsageError, match="nothing to resume"):
        train(recipe(epochs=2), tmp_path / "empty", data=tiny, progress=False, resume=True)


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", "config.json is damaged \\(a JSON list, not an object\\)"),
        ("", "config.json is empty"),
        ('{"model": "lecture-simple"}', "training settings are missing"),
        ("not json", "config.json is damaged"),
    ],
)
def test_a_damaged_config_is_refused_on_resume_and_left_as_it_was(
    tmp_path: Path, tiny, content: str, message: str
) -> None:
    train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False)
    (tmp_path / "run" / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        train(recipe(epochs=2), tmp_path / "run", data=tiny, progress=False, resume=True)
    assert (tmp_path / "run" / "config.json").read_text() == content


def test_saved_settings_of_the_wrong_type_are_refused() -> None:
    values = recipe().to_dict()
    for key, bad in (("lr", "fast"), ("epochs", 2.5), ("nesterov", 1), ("betas", [0.9]), ("seed", None)):
        with pytest.raises(UsageError, match=f"training setting {key} takes .*, got {re.escape(repr(bad))}"):
            TrainConfig.from_dict({**values, key: bad}, complete=True)
    assert TrainConfig.from_dict(values, complete=True) == recipe()
    for key, bad in (("lr", "0.1"), ("freeze", "12"), ("classes", 5)):  # given in Python: the same check
        with pytest.raises(UsageError, match=f"training setting {key} takes .*, got {re.escape(repr(bad))}"):
            recipe(**{key: bad}).validate()
    assert TrainConfig.from_dict({**values, "amp": None, "cpu_shards": None}).amp == "fp32"  # older runs


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"epochs": 0}, "epochs must be a whole number of at least 1"),
        ({"lr": -0.1}, "learning rate must be greater than 0"),
        ({"val_fraction": 1.0}, "validation fraction must be in"),
        ({"optimizer": "adam"}, "unknown optimizer 'adam'. Did you mean 'adamw'"),
        ({"schedule": "cosin"}, "unknown schedule 'cosin'. Did you mean 'cosine'"),
        ({"milestones": (5, 3)}, "milestones must be increasing"),
        ({"warmup_epochs": float("nan")}, "warmup_epochs must be a finite number"),
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
        ({"weight_decay": float("inf")}, "weight_decay must be a finite number"),
        ({"seed": 2**64}, "seed must be at most"),
        ({"seed": -1}, "seed must be a whole number of at least 0"),
        ({"amp": "fp8"}, "unknown precision 'fp8'"),
        ({"cpu_shards": 0}, "cpu_shards must be a whole number of at least 1"),
    ],
)
def test_invalid_recipes_are_usage_errors(bad: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        recipe(**bad).validate()


def test_schedules_warm_up_and_decay_as_documented() -> None:
    model = torch.nn.Linear(2, 2)

    def lrs(**cfg) -> list[float]:
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        schedule = LRSchedule(opt, recipe(lr=1.0, **cfg), steps_per_epoch=10)
        values = []
        for _ in range(schedule.total_steps):
            values.append(schedule.lr)
            schedule.step_batch()
        return values

    step = lrs(epochs=6, schedule="step", step_size=2, gamma=0.5)
    assert step[0] == 1.0 and step[20] == 0.5 and step[40] == 0.25
    multi = lrs(epochs=6, schedule="multistep", milestones=(1, 4), gamma=0.1)
    assert multi[9] == 1.0 and math.isclose(multi[10], 0.1) and math.isclose(multi[45], 0.01)
    warm = lrs(epochs=4, schedule="cosine", warmup_epochs=1)
    assert warm[0] == pytest.approx(0.1) and warm[10] == pytest.approx(1.0) and warm[-1] < 0.01
    assert warm == sorted(warm[:11]) + sorted(warm[11:], reverse=True)  # linear up, cosine down
    held = lrs(epochs=4, schedule="cosine", warmup_epochs=1, warmup_mode="constant")
    assert held[:10] == [pytest.approx(0.1)] * 10 and held[10] == pytest.approx(1.0) and held[-1] < 0.01
    assert held[10:] == sorted(held[10:], reverse=True)  # lr/10 for the warm-up epoch, then cosine from lr
    one = lrs(epochs=4, schedule="onecycle")
    assert one.index(max(one)) == 9 and one[0] == pytest.approx(1 / 25) and one[-1] < 0.01

    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    plateau = LRSchedule(opt, recipe(lr=1.0, schedule="plateau", patience=1, gamma=0.1), steps_per_epoch=10)
    for loss in (1.0, 0.9, 0.95, 0.95):
        plateau.step_epoch(loss)
    assert plateau.lr == pytest.approx(0.1)


def test_weight_decay_skips_norm_and_bias_parameters() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2)
    )
    decay, no_decay = param_groups(model, 5e-4)
    assert {p.ndim for p in decay["params"]} == {2, 4} and decay["weight_decay"] == 5e-4
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_large_model_takes_the_fused_step_and_a_small_one_the_multi_tensor_step(optimizer: str) -> None:
    """The fused step pays where the update is bound by memory, the multi-tensor one on small nets
    (docs/training.md); the checkpoint keeps resumes exact with either."""
    cfg = TrainConfig(model="lecture-simple", optimizer=optimizer)
    small = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    large = torch.nn.Linear(1000, 1000)  # 1,001,000 parameters, in two groups (weight; bias)
    assert sum(p.numel() for p in large.parameters()) >= FUSED_MIN_PARAMS
    assert all(group["foreach"] and not group["fused"] for group in build_optimizer(small, cfg).param_groups)
    assert all(group["fused"] for group in build_optimizer(large, cfg).param_groups)


def test_auxiliary_heads_enter_the_loss_with_their_weights(tmp_path: Path, tiny) -> None:
    trainer = Trainer(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False)
    x, y = next(iter(trainer.test_loader))
    base, _ = trainer.step.loss(x, y)
    aux_logits = torch.zeros(len(y), 10)
    trainer.step.aux_weights = (0.3, 0.3)
    trainer.model.forward_aux = lambda inp: (trainer.model(inp), [aux_logits, aux_logits])
    with_aux, _ = trainer.step.loss(x, y)
    assert with_aux.item() == pytest.approx(base.item() + 0.6 * math.log(10), rel=1e-5)


@pytest.mark.parametrize("bf16_path", ["AMX", "AVX512-BF16", None])
def test_the_default_is_fp32_and_the_same_batches_on_every_cpu(
    tmp_path: Path, tiny, monkeypatch, bf16_path: str | None
) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: bf16_path)
    default = Trainer(recipe(), tmp_path / "auto", data=tiny, progress=False)
    assert default.amp == "fp32" and default.shards is None and default.step.scaler is None
    assert Trainer(recipe(amp="bf16"), tmp_path / "on", data=tiny, progress=False).amp == "bf16"
    line = default.describe()
    assert "cpu (" in line and "fp32" in line and "1 thread," in line and "whole batches" in line
    assert "540 training images," in line  # all of them, every epoch
    capped = Trainer(recipe(max_steps_per_epoch=2), tmp_path / "capped", data=tiny, progress=False)
    assert "540 training images (2 steps of them per epoch)," in capped.describe()
    note = Trainer(recipe(amp="bf16"), tmp_path / "on2", data=tiny, progress=False).describe()
    assert ("no bf16 instructions" in note) is (bf16_path is None)
    assert bf16_path is None or f"bf16 autocast ({bf16_path})" in note


def test_every_run_starts_with_a_line_naming_device_precision_threads_and_batch_mode(
    tmp_path: Path, tiny, capsys
) -> None:
    train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=True)
    first = capsys.readouterr().out.splitlines()[0]
    assert (
        first.startswith("lecture-simple on fashion-mnist: cpu (")
        and "fp32, 1 thread, whole batches" in first
    )


@pytest.mark.usefixtures("no_curves")
def test_fp16_autocast_with_gradient_scaling_learns_and_resumes_its_scale(tmp_path: Path, tiny) -> None:
    trainer = Trainer(recipe(amp="fp16"), tmp_path / "run", data=tiny, progress=False)
    result = trainer.fit()
    assert result.test_acc > 0.5
    trainer.step.scaler.update(new_scale=1234.0)  # as if overflows had backed the scale off
    trainer.save("last", epoch=2)
    resumed = Trainer(recipe(amp="fp16", epochs=3), tmp_path / "run", data=tiny, progress=False, resume=True)
    assert resumed.step.scaler.get_scale() == 1234.0


def test_cpu_autocast_runs_convolutions_in_bf16_and_keeps_weights_and_loss_in_fp32(
    tmp_path: Path, tiny
) -> None:
    trainer = Trainer(recipe(amp="bf16"), tmp_path / "run", data=tiny, progress=False)
    seen = []
    trainer.model.features.conv1.register_forward_hook(
        lambda module, inputs, output: seen.append(output.dtype)
    )
    x, y = next(iter(trainer.train_loader))
    loss, logits = trainer.step.loss(x, y)
    assert seen == [torch.bfloat16] and logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    trainer.step(x, y, lambda: None)
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in trainer.step.params)
    result = train(recipe(amp="bf16"), tmp_path / "trained", data=tiny, progress=False)
    assert result.test_acc > 0.5  # learns as in fp32; chance is 0.1


@pytest.mark.usefixtures("no_curves")
def test_validation_split_is_evaluated_and_metrics_match_cnnlab_evaluate(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch
) -> None:
    from cnnlab.train.evaluation import evaluate_checkpoint

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")  # generated files, not the official ones

    cfg = recipe(val_fraction=0.2, amp="bf16", data_dir=str(tiny_dataset_dir))
    data = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False)
    result = train(cfg, tmp_path / "run", data=data, progress=False)
    assert all(0.0 < row["val_acc"] <= 1.0 for row in result.history)
    # reported in fp32 although trained in bf16: the same figures as evaluating the saved weights
    last = result.history[-1]
    saved = evaluate_checkpoint(tmp_path / "run", split="val", which="last").result
    assert saved.accuracy == last["val_acc"] and saved.loss == pytest.approx(last["val_loss"])
    tested = evaluate_checkpoint(tmp_path / "run", split="test", which=result.results["checkpoint"]).result
    assert tested.accuracy == result.test_acc and tested.loss == pytest.approx(result.results["test_loss"])


def test_cli_train_evaluate_and_compare(tmp_path: Path, tiny_dataset_dir: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    common = ["--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--batch-size", "64", "--quiet"]
    assert main(["train", "lecture-simple", "--out", str(tmp_path), *common]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and f"report: {tmp_path / 'lecture-simple' / 'report.html'}" in out
    assert (
        main(["train", "lecture-simple", "--out", str(tmp_path), "--name", "bare", "--no-report", *common])
        == 0
    )
    assert not (tmp_path / "bare" / "report.html").exists()
    assert main(["evaluate", str(tmp_path / "lecture-simple")]) == 0
    out = capsys.readouterr().out
    assert "per-class accuracy" in out and "confusion matrix" in out
    assert (tmp_path / "lecture-simple" / "confusion.png").is_file()
    assert (
        main(["compare", "lecture-simple", "lecture-residual", "--out", str(tmp_path / "cmp"), *common]) == 0
    )
    out = capsys.readouterr().out
    assert "| lecture-residual | 41,514 |" in out and "comparison.png" in out
    assert (tmp_path / "cmp" / "comparison.png").is_file() and (
        tmp_path / "cmp" / "lecture-simple" / "metrics.csv"
    ).is_file()
    page = (tmp_path / "cmp" / "report.html").read_text()  # both runs, side by side
    assert "cnnlab report: 2 runs compared" in page and 'id="run-lecture-residual"' in page


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["train", "lecture-simpel"], 2, "unknown model 'lecture-simpel'. Did you mean 'lecture-simple'"),
        (["train", "lecture-simple", "--data", "fashion-mnst"], 2, "unknown dataset 'fashion-mnst'"),
        (["train", "lecture-simple", "--epochs", "0"], 2, "error: --epochs must be a whole number"),
        (
            ["train", "lecture-simple", "--label-smoothing", "1"],
            2,
            "error: --label-smoothing must be in [0, 1)",
        ),
        (["train", "lecture-simple", "--lr", "-1"], 2, "learning rate must be greater than 0"),
        (["train", "lecture-simple", "--optimizer", "rmsprop"], 2, "unknown optimizer 'rmsprop'"),
        (["train", "lecture-simple", "--val-fraction", "1"], 2, "validation fraction must be in [0, 1)"),
        (["evaluate", "/nonexistent/run"], 2, "no run directory or checkpoint at /nonexistent/run"),
    ],
)
def test_cli_user_errors_are_one_line(
    argv: list[str], code: int, message: str, capsys, tmp_path: Path
) -> None:
    assert main([*argv, *(["--out", str(tmp_path)] if argv[0] == "train" else [])]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error: ") and message in err and "\n" not in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--device", "meta"], "cannot train or evaluate on device 'meta'"),
        (["--seed", str(2**64)], "seed must be at most"),
        (["--name", "n" * 300], "--name is 300 bytes long"),
        (["--name", "../elsewhere"], "--name must be a single folder name"),
        (["--in-chans", "100000"], "would take"),
        (["--pad-to", "100000"], "would take"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--warmup-epochs", "nan"], "--warmup-epochs must be a finite number"),
        (["--seed", "-1"], "--seed must be a whole number"),
        (["--pad-to", "20"], "--pad-to=20 is smaller than the 28x28 images"),  # the engine's words, in flags
    ],
)
def test_cli_refuses_impossible_recipes_before_training(
    flags: list[str], message: str, tmp_path: Path, tiny_dataset_dir: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    argv = ["train", "lecture-simple", "--data-dir", str(tiny_dataset_dir), "--out", str(tmp_path), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_resume_refuses_changed_recipe_flags_and_accepts_more_epochs(
    tmp_path: Path, tiny_dataset_dir: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    base = ["train", "lecture-simple", "--data-dir", str(tiny_dataset_dir), "--out", str(tmp_path), "--quiet"]
    assert main([*base, "--epochs", "1", "--batch-size", "64", "--max-steps-per-epoch", "2"]) == 0
    config = (tmp_path / "lecture-simple" / "config.json").read_text()
    capsys.readouterr()
    assert main([*base, "--resume", "--lr", "0.1", "--max-steps-per-epoch", "1"]) == 2
    err = capsys.readouterr().err
    assert "these flags differ from it: --lr 0.05 -> 0.1; --max-steps-per-epoch 2 -> 1" in err
    assert (tmp_path / "lecture-simple" / "config.json").read_text() == config  # nothing changed
    assert main([*base, "--resume", "--batch-size", "64", "--epochs", "2"]) == 0  # same value: fine
    assert json.loads((tmp_path / "lecture-simple" / "config.json").read_text())["epochs"] == 2
    assert "(best checkpoint, epoch" in capsys.readouterr().out


def test_divergence_in_the_first_epoch_does_not_point_at_an_empty_checkpoints_folder(
    tmp_path: Path, tiny
) -> None:
    with pytest.raises(TrainingDiverged, match="no checkpoint was saved yet"):
        train(recipe(lr=1e30, schedule="constant"), tmp_path / "run", data=tiny, progress=False)


def test_missing_dataset_says_how_to_get_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "none"))
    code = main(
        [
            "train",
            "lecture-simple",
            "--data",
            "kmnist",
            "--data-dir",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "cnnlab data fetch kmnist" in err


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys
) -> None:
    env = {**os.environ, "CNNLAB_NO_VERIFY": "1", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "cnnlab", "train", "lecture-simple", "--data-dir", str(tiny_dataset_dir),
            "--out", str(tmp_path), "--epochs", "200", "--batch-size", "64", "--quiet", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics_file = tmp_path / "lecture-simple" / "metrics.csv"
    deadline = time.time() + 60
    while not metrics_file.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in out and "Traceback" not in err
    manifest = json.loads((tmp_path / "lecture-simple" / "checkpoints" / "last.json").read_text())
    assert manifest["model"] == "lecture-simple"
    # the exit status 130 and the signal needed a process; resuming is the same code in this one (no second
    # interpreter and torch import to wait for)
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    assert main([*argv[3:-5], "--epochs", "2", "--batch-size", "64", "--resume"]) == 0
    said = capsys.readouterr().out
    assert (
        f"resumed from {tmp_path / 'lecture-simple' / 'checkpoints' / 'last.json'}: " in said
    )  # not a fresh start
    assert " of 2 epochs done" in said


@pytest.mark.usefixtures("no_curves")
def test_ctrl_c_after_the_last_step_says_the_run_is_finishing_not_stopping(
    tmp_path: Path, tiny, capsys
) -> None:
    """A signal after the last training step cannot cut the run short: it completes, and says so."""
    cfg = recipe(epochs=2, max_steps_per_epoch=2)
    stops = []

    def signal_after(row: dict) -> None:
        if row["epoch"] == 2:
            signal.raise_signal(signal.SIGINT)  # during the last epoch's bookkeeping, before the test report
            stops.append(trainer.stop_requested)

    trainer = Trainer(cfg, tmp_path / "run", data=tiny, progress=False, on_epoch=signal_after)
    result = trainer.fit()
    out = capsys.readouterr().out
    assert stops == [True] and result.status == "completed" and result.test_acc is not None
    assert (
        "training is done; finishing the run's evaluation" in out and "stopping after this batch" not in out
    )


@pytest.mark.usefixtures("no_curves")
def test_googlenet_trains_with_its_auxiliary_heads(tmp_path: Path, tiny) -> None:
    cfg = recipe(model="googlenet", epochs=1, batch_size=8, eval_batch_size=100, pad_to=80, max_steps_per_epoch=2,
                 model_options={"aux_logits": True})  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run", data=tiny, progress=False)
    assert trainer.step.aux_weights == (0.3, 0.3)
    seen = []
    forward_aux = trainer.model.forward_aux
    trainer.model.forward_aux = lambda x: seen.append(len(x)) or forward_aux(x)
    assert trainer.fit().status == "completed"
    assert seen == [8, 8]  # both training steps went through the auxiliary heads; evaluation did not


def test_a_failed_overwrite_leaves_the_old_run_and_no_half_made_folder(tmp_path: Path, tiny) -> None:
    train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False)
    before = (tmp_path / "run" / "metrics.csv").read_text()
    with pytest.raises(UsageError, match="too small for .*--pad-to"):
        train(recipe(epochs=1, model="vgg16"), tmp_path / "run", data=tiny, progress=False, overwrite=True)
    assert (tmp_path / "run" / "metrics.csv").read_text() == before
    with pytest.raises(UsageError, match="too small"):
        train(recipe(epochs=1, model="vgg16"), tmp_path / "fresh", data=tiny, progress=False)
    assert not (tmp_path / "fresh").exists()  # a run that could not start leaves nothing behind


@pytest.mark.parametrize(
    ("settings", "fix"),
    [
        ({}, "zero-pad the images to a square of 32 with --pad-to 32 (pad_to=32)"),
        ({"pad_to": 30}, "use --pad-to 32 or more (pad_to=32)"),
        (
            {"input_size": 24},
            "use --input-size 32 or more (input_size=32), and --pad-to if the images are smaller",
        ),
    ],
)
def test_an_input_too_small_names_the_model_as_typed_and_the_fix_for_the_option_at_fault(
    tmp_path: Path, tiny, settings: dict, fix: str
) -> None:
    """vgg11 is VGG's configuration A, built as "vgg-a": the message names what the user asked for, and
    the setting to change is the one that made the input small (the stored 28x28, --pad-to or --input-size)."""
    side = settings.get("input_size") or settings.get("pad_to") or 28
    with pytest.raises(UsageError) as err:
        Trainer(recipe(model="vgg11", **settings), tmp_path / "run", data=tiny, progress=False)
    assert str(err.value) == (
        f"input 1x{side}x{side} is too small for vgg11: the smallest input that works is 1x32x32; {fix}"
    )


def test_the_padding_named_for_images_too_small_covers_their_longer_side() -> None:
    """28x1 images too narrow for a net of 16: --pad-to 16 would be refused (padding never crops)."""
    from cnnlab.train.engine import input_too_small_fix

    assert (
        input_too_small_fix(TrainConfig(), 16, 28)
        == "zero-pad the images to a square of 28 with --pad-to 28 (pad_to=28)"
    )
    assert input_too_small_fix(TrainConfig(pad_to=20), 16, 28) == "use --pad-to 28 or more (pad_to=28)"


@pytest.mark.usefixtures("no_curves")
@pytest.mark.parametrize("accum_steps", [2, 4])
def test_gradient_accumulation_gives_the_update_of_the_whole_batch(
    tmp_path: Path, tiny, accum_steps: int
) -> None:
    """k micro-batches add up to the whole batch's gradient (BN-free net): the same weights after a step."""
    whole = Trainer(recipe(), tmp_path / "whole", data=tiny, progress=False)
    micro = Trainer(recipe(accum_steps=accum_steps), tmp_path / "micro", data=tiny, progress=False)
    x, y = next(iter(whole.train_loader))
    loss_whole, correct_whole, _ = whole.step(x, y, lambda: None)
    loss_micro, correct_micro, _ = micro.step(x, y, lambda: None)
    assert loss_micro == pytest.approx(loss_whole, rel=1e-6) and correct_micro == correct_whole
    for (name, a), b in zip(whole.model.named_parameters(), micro.model.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6), name
        assert (a - b).abs().max() <= 1e-6, name


def test_a_parameter_the_forward_never_uses_is_named_in_a_warning(tmp_path: Path, tiny) -> None:
    from cnnlab.train.step import UnusedParametersWarning

    trainer = Trainer(recipe(), tmp_path / "run", data=tiny, progress=False)
    trainer.model.spare = torch.nn.Linear(3, 3)  # registered, trainable, never called
    trainer.step.params = [p for p in trainer.model.parameters() if p.requires_grad]
    x, y = next(iter(trainer.train_loader))
    with pytest.warns(UnusedParametersWarning, match=r"2 trainable parameters .*: spare.weight, spare.bias"):
        trainer.step(x, y, lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnusedParametersWarning)
        trainer.step(x, y, lambda: None)  # said once, on the first step


def test_constructing_a_trainer_leaves_the_process_settings_alone(tmp_path: Path, tiny) -> None:
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    Trainer(recipe(threads=threads + 1, seed=123), tmp_path / "run", data=tiny, progress=False)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "1e300"], "lr must be at most 3.4e+38"),
        (["--weight-decay", "1e300"], "--weight-decay must be at most"),
        (["--threads", str(2**70)], "threads must be at most 4096"),
        (["--crop-padding", "100000"], "one training batch of"),
        (
            ["--model-option", "img_size=abc"],
            "option img_size takes a whole number or 2 comma-separated whole numbers, not text: got 'abc'",
        ),
        (["--warmup-epochs", "0.5"], "--warmup-epochs does not apply to the onecycle schedule"),
        (
            ["--warmup-mode", "constant"],
            "--warmup-mode constant shapes a warm-up, and --warmup-epochs is 0: set --warmup-epochs above 0, or leave --warmup-mode out",
        ),
        (["--epochs", str(2**70)], "epochs must be at most"),
        (["--overwrite", "--resume"], "--overwrite and --resume contradict each other"),
        (
            ["--augment", "vgg", "--crop-padding", "2"],
            "--crop-padding applies to the none (custom) and cifar",
        ),
        (["--augment", "crops"], "the crops augmentation needs an input size below the stored image size"),
        (["--input-size", "29"], "--input-size 29 is larger than the 28x28 images"),
        (
            ["--augment", "vgg", "--input-size", "20", "--scale-range", "16,30"],
            "needs Smin >= the input size 20",
        ),
    ],
)
def test_probe_findings_are_one_line_usage_errors(
    flags: list[str], message: str, tmp_path: Path, tiny_dataset_dir: Path, capsys, monkeypatch
) -> None:
    """Inputs a new-user probe found ending in tracebacks or silent acceptance."""
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    argv = [
        "train",
        "lecture-simple",
        "--data-dir",
        str(tiny_dataset_dir),
        "--out",
        str(tmp_path),
        "--name",
        "run",
    ]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.usefixtures("no_curves")
def test_resume_cannot_shorten_a_run_below_the_epochs_it_trained(tmp_path: Path, tiny) -> None:
    train(recipe(epochs=2, max_steps_per_epoch=2), tmp_path / "run", data=tiny, progress=False)
    with pytest.raises(UsageError, match="has already trained 2 epochs; resume it with --epochs 2 or more"):
        train(
            recipe(epochs=1, max_steps_per_epoch=2), tmp_path / "run", data=tiny, progress=False, resume=True
        )
    longer = train(
        recipe(epochs=3, max_steps_per_epoch=2), tmp_path / "run", data=tiny, progress=False, resume=True
    )
    assert [row["epoch"] for row in longer.history] == [1, 2, 3] and longer.test_acc is not None
    # another recipe value is refused in Python as on the command line, not silently replaced by the saved one
    with pytest.raises(UsageError, match=r"the config asks for another: lr 0.05 -> 0.1; only epochs, device"):
        train(recipe(epochs=4, max_steps_per_epoch=2, lr=0.1), tmp_path / "run", data=tiny, resume=True)


def test_a_run_too_short_for_batch_norms_running_statistics_warns(tmp_path: Path, tiny_short_test) -> None:
    """Evaluation uses batch norm's running statistics, which start at mean 0 and variance 1 and move
    by ``momentum`` per step: a run of few steps scores near chance, and says why, with the fix."""
    from cnnlab.train.engine import STALE_BATCH_NORM, batch_norm_start_share

    bn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4, momentum=0.5)
    )
    assert batch_norm_start_share(bn, 10) == pytest.approx(0.9**10)  # the slowest layer counts
    assert batch_norm_start_share(torch.nn.BatchNorm2d(4, momentum=None), 1) == 0.0  # a cumulative average
    assert batch_norm_start_share(torch.nn.Conv2d(1, 4, 3), 1) == 0.0
    assert batch_norm_start_share(bn, 21) > STALE_BATCH_NORM > batch_norm_start_share(bn, 22)

    def opened(model: str, steps: int, epochs: int = 1) -> list[str]:
        cfg = TrainConfig(model=model, epochs=epochs, batch_size=32, max_steps_per_epoch=steps, threads=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Trainer(cfg, tmp_path / f"{model}-{steps}", data=tiny_short_test, progress=False)
        return [str(w.message) for w in caught if "batch-norm running statistics" in str(w.message)]

    (message,) = opened("resnet8-cifar", 3)
    assert message.startswith("3 training steps in all") and "73% their starting values" in message
    assert f"cnnlab evaluate {tmp_path / 'resnet8-cifar-3'} --bn-recalibrate" in message
    assert opened("resnet8-cifar", 11, epochs=2) == []  # 22 steps: enough
    assert opened("lecture-simple", 3) == []  # no batch norm


def test_an_fp32_run_computes_in_fp32_on_cuda_too_and_gives_the_callers_tf32_flags_back(
    tmp_path: Path, tiny, no_curves
) -> None:
    """cuDNN runs fp32 convolutions in TF32 by PyTorch's default: a run labelled fp32 turns that off for
    itself (the flags are plain process settings, so this is checked without a GPU)."""
    seen: list[tuple[bool, bool]] = []
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        train(
            recipe(epochs=1, train_subset=64),
            tmp_path / "run",
            data=tiny,
            progress=False,
            on_epoch=lambda row: seen.append(
                (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            ),
        )
        assert seen == [(False, False)]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_train_gives_the_caller_its_threads_denormal_flushing_and_random_state_back(
    tmp_path: Path, tiny, no_curves
) -> None:
    """A notebook's later cells compute as before the call: the run sets these for itself, not for the process."""
    from cnnlab.train.engine import flushes_denormals

    threads = torch.get_num_threads()
    torch.set_flush_denormal(False)
    torch.manual_seed(999)
    expected = torch.rand(3)
    torch.manual_seed(999)
    try:
        train(
            recipe(epochs=1, threads=threads + 1, train_subset=64),
            tmp_path / "run",
            data=tiny,
            progress=False,
        )
        assert torch.get_num_threads() == threads
        assert not flushes_denormals()
        assert torch.equal(torch.rand(3), expected)
    finally:
        torch.set_num_threads(threads)
