"""Batch shards across CPU cores: same gradients as the whole batch, deterministic, refused where inexact."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import UsageError
from cnnlab.models import create_model
from cnnlab.train import TrainConfig, Trainer, train
from cnnlab.train.shards import CoreShards, auto_shards, core_shards, shard_blocker


@pytest.fixture(scope="module")
def tiny(tiny_dataset_dir: Path):
    return load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False)


def recipe(**overrides) -> TrainConfig:
    base = dict(model="lecture-inception", epochs=2, batch_size=64, eval_batch_size=256, threads=1)
    return TrainConfig(**{**base, **overrides})


def test_workers_run_calls_in_order_each_on_its_own_thread_and_pass_errors_back() -> None:
    shards = core_shards(2)
    assert core_shards(2) is shards  # one pool per size for the whole process
    names = shards.map(lambda tag: (tag, threading.current_thread().name), [("a",), ("b",)])
    assert names == [("a", "cnnlab-shard-0"), ("b", "cnnlab-shard-1")]

    def fail() -> None:
        raise RuntimeError("boom in a shard")

    with pytest.raises(RuntimeError, match="boom in a shard"):
        shards.map(fail, [()])
    with pytest.raises(ValueError, match="3 calls for 2 workers"):
        shards.map(fail, [(), (), ()])
    with pytest.raises(ValueError):
        CoreShards(0)


@pytest.mark.parametrize("amp", [False, True])
def test_a_sharded_step_gives_the_gradients_of_the_whole_batch(tmp_path: Path, tiny, amp: bool) -> None:
    whole = Trainer(recipe(cpu_shards=1, amp=amp), tmp_path / "whole", data=tiny, progress=False)
    sharded = Trainer(recipe(cpu_shards=2, amp=amp), tmp_path / "sharded", data=tiny, progress=False)
    assert whole.shards is None and sharded.shards.workers == 2
    x, y = next(iter(whole.train_loader))
    loss_whole, correct_whole, _ = whole._step(x, y, lambda: None)
    loss_sharded, correct_sharded, _ = sharded._step(x, y, lambda: None)
    # fp32: equal up to summation order; bf16 autocast: up to bf16 rounding (8 bits of mantissa)
    rel = 1e-2 if amp else 1e-5
    assert loss_sharded == pytest.approx(loss_whole, rel=rel)
    assert abs(correct_sharded - correct_whole) <= (2 if amp else 0)
    for (name, a), b in zip(whole.model.named_parameters(), sharded.model.parameters()):
        if amp:
            assert (a.grad - b.grad).norm() <= 2e-2 * a.grad.norm(), name
        else:
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


def test_a_batch_smaller_than_the_shard_count_trains_whole(tmp_path: Path, tiny) -> None:
    trainer = Trainer(recipe(cpu_shards=2), tmp_path / "r", data=tiny, progress=False)
    x, y = next(iter(trainer.train_loader))
    loss, correct, _ = trainer._step(x[:1], y[:1], lambda: None)
    assert torch.isfinite(torch.tensor(loss)) and correct in (0, 1)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainer.params)


def _metrics(history: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in ("epoch_seconds", "train_images_per_s")} for row in history
    ]


def test_sharded_training_is_deterministic_learns_and_resumes_exactly(tmp_path: Path, tiny) -> None:
    cfg = recipe(cpu_shards=2, crop_padding=2, flip=True)
    a = train(cfg, tmp_path / "a", data=tiny, progress=False)
    b = train(cfg, tmp_path / "b", data=tiny, progress=False)
    assert _metrics(a.history) == _metrics(b.history)
    assert a.final["test_acc"] > 0.3  # chance is 0.1

    trainer = Trainer(cfg, tmp_path / "stopped", data=tiny, progress=False)
    step_batch = trainer.schedule.step_batch

    def step_then_stop() -> None:
        step_batch()
        if trainer.schedule.step == 5:
            trainer.request_stop()

    trainer.schedule.step_batch = step_then_stop
    assert trainer.fit().status == "interrupted"
    resumed = train(cfg, tmp_path / "stopped", data=tiny, progress=False, resume=True)
    assert _metrics(resumed.history) == _metrics(a.history)


@pytest.mark.parametrize(
    ("model", "threads", "batch", "expected"),
    [
        ("lecture-simple", 2, 128, 2),
        ("lecture-residual", 4, 128, 4),
        ("lecture-residual", 8, 128, 4),  # at least 32 images a shard
        ("lecture-simple", 2, 32, 1),
        ("lecture-simple", 1, 128, 1),
        ("resnet20-cifar", 2, 128, 1),  # batch norm
        ("googlenet", 2, 128, 1),  # dropout
    ],
)
def test_shards_by_default_only_where_exact_and_worth_it(
    model: str, threads: int, batch: int, expected: int
) -> None:
    with torch.device("meta"):
        net = create_model(model)
    assert auto_shards(net, torch.device("cpu"), batch, threads) == expected
    assert auto_shards(net, torch.device("cuda"), batch, threads) == 1
    assert auto_shards(net, torch.device("cpu"), batch, threads, bf16=True) == 1  # measured slower


def test_shards_are_refused_for_models_they_would_change(tmp_path: Path, tiny) -> None:
    with torch.device("meta"):
        assert "batch norm" in shard_blocker(create_model("resnet20-cifar"))
        assert "dropout" in shard_blocker(create_model("lecture-simple", drop_rate=0.5))
        assert shard_blocker(create_model("lecture-simple", drop_rate=0.0)) is None
    with pytest.raises(UsageError, match="cannot be trained in CPU shards: layer .* is dropout"):
        Trainer(recipe(model="lecture-simple", drop_rate=0.3, cpu_shards=2), tmp_path / "r", data=tiny)
    with pytest.raises(UsageError, match="cannot exceed the batch size"):
        recipe(batch_size=4, cpu_shards=8).validate()
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


def test_cli_cpu_shards_flag(tmp_path: Path, tiny_dataset_dir: Path, capsys) -> None:
    code = main([
        "train", "lecture-simple", "--data", "fashion-mnist", "--data-dir", str(tiny_dataset_dir),
        "--epochs", "1", "--cpu-shards", "0", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert code == 2
    assert "cpu_shards must be a whole number of at least 1" in capsys.readouterr().err
