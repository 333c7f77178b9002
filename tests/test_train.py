"""The training engine on a tiny generated dataset: run directory, determinism, exact resume, failures."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import CheckpointError, TrainingDiverged, UsageError
from cnnlab.train import TrainConfig, Trainer, engine, train
from cnnlab.train.optim import LRSchedule, param_groups

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
    assert result.final["test_acc"] > 0.5  # the generated classes are learnable; chance is 0.1


def test_same_seed_gives_same_metrics(tmp_path: Path, tiny) -> None:
    train(recipe(crop_padding=2, flip=True), tmp_path / "a", data=tiny, progress=False)
    train(recipe(crop_padding=2, flip=True), tmp_path / "b", data=tiny, progress=False)
    train(recipe(crop_padding=2, flip=True, seed=1), tmp_path / "c", data=tiny, progress=False)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert metrics(tmp_path / "a") != metrics(tmp_path / "c")


@pytest.mark.parametrize("stop_after_steps", [10, 14])  # an epoch boundary (10 steps/epoch) and mid-epoch
def test_resume_ends_with_the_same_metrics_as_an_uninterrupted_run(
    tmp_path: Path, tiny, stop_after_steps: int
) -> None:
    cfg = recipe(epochs=3, crop_padding=2, flip=True, drop_rate=0.3, schedule="cosine", warmup_epochs=1)
    train(cfg, tmp_path / "straight", data=tiny, progress=False)

    trainer = Trainer(cfg, tmp_path / "stopped", data=tiny, progress=False)
    step_batch = trainer.schedule.step_batch

    def step_then_maybe_stop() -> None:
        step_batch()
        if trainer.schedule.step == stop_after_steps:
            trainer.request_stop()

    trainer.schedule.step_batch = step_then_maybe_stop
    assert trainer.fit().status == "interrupted"
    resumed = train(cfg, tmp_path / "stopped", data=tiny, progress=False, resume=True)
    assert resumed.status == "completed"
    assert metrics(tmp_path / "stopped") == metrics(tmp_path / "straight")


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path: Path, tiny) -> None:
    trainer = Trainer(recipe(epochs=3), tmp_path / "run", data=tiny, progress=False)
    forward = trainer.model.forward

    def poisoned(x: torch.Tensor) -> torch.Tensor:
        out = forward(x)
        return out * math.nan if trainer.schedule.step >= 12 else out

    trainer.forward = poisoned
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2"):
        trainer.fit()
    manifest = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert manifest["model"] == "lecture-simple"
    resumed = Trainer(recipe(epochs=3), tmp_path / "run", data=tiny, progress=False, resume=True)
    assert resumed.start_epoch == 1 and all(torch.isfinite(p).all() for p in resumed.model.parameters())


def test_existing_run_is_refused_unless_overwrite_or_resume(tmp_path: Path, tiny) -> None:
    train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists; use --overwrite"):
        train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False)
    train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False, overwrite=True)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # only cnnlab's own files are replaced


def test_unwritable_output_directory_is_a_clear_failure(tmp_path: Path, tiny) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="cannot write to"):
        train(recipe(epochs=1), blocker / "run", data=tiny, progress=False)


def test_resume_refuses_another_model_and_damaged_checkpoints(tmp_path: Path, tiny) -> None:
    train(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False)
    with pytest.raises(CheckpointError, match="is a run of 'lecture-simple'"):
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
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(recipe(epochs=2), tmp_path / "empty", data=tiny, progress=False, resume=True)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"epochs": 0}, "epochs must be a whole number of at least 1"),
        ({"lr": -0.1}, "learning rate must be greater than 0"),
        ({"val_fraction": 1.0}, "validation fraction must be in"),
        ({"optimizer": "adam"}, "unknown optimizer 'adam'. Did you mean 'adamw'"),
        ({"schedule": "cosin"}, "unknown schedule 'cosin'. Did you mean 'cosine'"),
        ({"milestones": (5, 3)}, "milestones must be increasing"),
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
    assert warm[0] == pytest.approx(0.1) and warm[9] == pytest.approx(1.0) and warm[-1] < 0.01
    one = lrs(epochs=4, schedule="onecycle")
    assert one.index(max(one)) == 10 and one[0] == pytest.approx(1 / 25) and one[-1] < 0.01

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


def test_auxiliary_heads_enter_the_loss_with_their_weights(tmp_path: Path, tiny) -> None:
    trainer = Trainer(recipe(epochs=1), tmp_path / "run", data=tiny, progress=False)
    x, y = next(iter(trainer.test_loader))
    base, _ = trainer._loss(x, y)
    aux_logits = torch.zeros(len(y), 10)
    trainer.aux_weights = (0.3, 0.3)
    trainer.model.forward_aux = lambda inp: (trainer.model(inp), [aux_logits, aux_logits])
    with_aux, _ = trainer._loss(x, y)
    assert with_aux.item() == pytest.approx(base.item() + 0.6 * math.log(10), rel=1e-5)


@pytest.mark.parametrize("has_units", [True, False])
def test_bf16_autocast_is_on_by_default_only_where_the_cpu_has_bf16_units(
    tmp_path: Path, tiny, monkeypatch, has_units: bool
) -> None:
    monkeypatch.setattr(engine, "cpu_has_bf16_matrix_units", lambda: has_units)
    assert Trainer(recipe(), tmp_path / "auto", data=tiny, progress=False).amp is has_units
    assert Trainer(recipe(amp=False), tmp_path / "off", data=tiny, progress=False).amp is False
    assert Trainer(recipe(amp=True), tmp_path / "on", data=tiny, progress=False).amp is True


def test_cpu_autocast_runs_convolutions_in_bf16_and_keeps_weights_and_loss_in_fp32(
    tmp_path: Path, tiny
) -> None:
    trainer = Trainer(recipe(amp=True), tmp_path / "run", data=tiny, progress=False)
    seen = []
    trainer.model.features.conv1.register_forward_hook(
        lambda module, inputs, output: seen.append(output.dtype)
    )
    x, y = next(iter(trainer.train_loader))
    loss, logits = trainer._loss(x, y)
    assert seen == [torch.bfloat16] and logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    trainer._step(x, y, lambda: None)
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in trainer.params)
    result = train(recipe(amp=True), tmp_path / "trained", data=tiny, progress=False)
    assert result.final["test_acc"] > 0.5  # learns as in fp32; chance is 0.1


def test_validation_split_is_evaluated_and_metrics_match_cnnlab_evaluate(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch
) -> None:
    from cnnlab.train.evaluation import evaluate_checkpoint

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")  # generated files, not the official ones

    cfg = recipe(val_fraction=0.2, amp=True, data_dir=str(tiny_dataset_dir))
    data = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False, val_fraction=0.2)
    result = train(cfg, tmp_path / "run", data=data, progress=False)
    assert all(0.0 < row["val_acc"] <= 1.0 for row in result.history)
    # reported in fp32 although trained in bf16: the same figures as evaluating the saved weights
    last = result.history[-1]
    for split in ("val", "test"):
        saved = evaluate_checkpoint(tmp_path / "run", split=split, which="last").result
        assert saved.accuracy == last[f"{split}_acc"] and saved.loss == pytest.approx(last[f"{split}_loss"])


def test_cli_train_evaluate_and_compare(tmp_path: Path, tiny_dataset_dir: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    common = ["--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--batch-size", "64", "--quiet"]
    assert main(["train", "lecture-simple", "--out", str(tmp_path), *common]) == 0
    assert "test accuracy" in capsys.readouterr().out
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


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["train", "lecture-simpel"], 2, "unknown model 'lecture-simpel'. Did you mean 'lecture-simple'"),
        (["train", "lecture-simple", "--data", "fashion-mnst"], 2, "unknown dataset 'fashion-mnst'"),
        (["train", "lecture-simple", "--epochs", "0"], 2, "epochs must be a whole number"),
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
    assert code == 1 and "cnnlab data fetch kmnist" in err


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path: Path, tiny_dataset_dir: Path) -> None:
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
    done = subprocess.run([*argv[:-5], "--epochs", "2", "--batch-size", "64", "--resume", "--quiet"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_googlenet_trains_with_its_auxiliary_heads(tmp_path: Path, tiny) -> None:
    cfg = recipe(model="googlenet", epochs=1, batch_size=8, eval_batch_size=100, pad_to=80, max_steps_per_epoch=2,
                 model_options={"aux_logits": True})  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run", data=tiny, progress=False)
    assert trainer.aux_weights == (0.3, 0.3)
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
