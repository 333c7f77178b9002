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
from cnnlab.train.shards import SHARD_SAFE_MODELS, CoreShards, core_shards, shard_blocker


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


@pytest.mark.parametrize("amp", ["fp32", "bf16"])
def test_a_sharded_step_gives_the_gradients_of_the_whole_batch(tmp_path: Path, tiny, amp: str) -> None:
    whole = Trainer(recipe(cpu_shards=1, amp=amp), tmp_path / "whole", data=tiny, progress=False)
    sharded = Trainer(recipe(cpu_shards=2, amp=amp), tmp_path / "sharded", data=tiny, progress=False)
    assert whole.shards is None and sharded.shards.workers == 2
    x, y = next(iter(whole.train_loader))
    loss_whole, correct_whole, _ = whole.step(x, y, lambda: None)
    loss_sharded, correct_sharded, _ = sharded.step(x, y, lambda: None)
    # fp32: equal up to summation order; bf16 autocast: up to bf16 rounding (8 bits of mantissa)
    bf16 = amp == "bf16"
    rel = 1e-2 if bf16 else 1e-5
    assert loss_sharded == pytest.approx(loss_whole, rel=rel)
    assert abs(correct_sharded - correct_whole) <= (2 if bf16 else 0)
    for (name, a), b in zip(whole.model.named_parameters(), sharded.model.parameters()):
        if bf16:
            assert (a.grad - b.grad).norm() <= 2e-2 * a.grad.norm(), name
        else:
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


def test_a_batch_smaller_than_the_shard_count_trains_whole(tmp_path: Path, tiny) -> None:
    trainer = Trainer(recipe(cpu_shards=2), tmp_path / "r", data=tiny, progress=False)
    x, y = next(iter(trainer.train_loader))
    loss, correct, _ = trainer.step(x[:1], y[:1], lambda: None)
    assert torch.isfinite(torch.tensor(loss)) and correct in (0, 1)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainer.step.params)


def _metrics(history: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in ("epoch_seconds", "train_images_per_s", "elapsed_s")}
        for row in history
    ]


@pytest.mark.usefixtures("no_curves")  # conftest.py: metrics only
def test_sharded_training_is_deterministic_learns_and_resumes_exactly(tmp_path: Path, tiny) -> None:
    cfg = recipe(cpu_shards=2, crop_padding=2, flip=True)
    a = train(cfg, tmp_path / "a", data=tiny, progress=False)
    b = train(cfg, tmp_path / "b", data=tiny, progress=False)
    assert _metrics(a.history) == _metrics(b.history)
    assert a.test_acc > 0.3  # chance is 0.1

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


def test_shards_are_opt_in(tmp_path: Path, tiny) -> None:
    assert TrainConfig().cpu_shards == 1
    assert Trainer(recipe(), tmp_path / "r", data=tiny, progress=False).shards is None


def test_shards_are_refused_for_models_they_would_change(tmp_path: Path, tiny) -> None:
    with torch.device("meta"):
        assert "BatchNorm2d" in shard_blocker(create_model("resnet20-cifar"))
        assert "Dropout" in shard_blocker(create_model("lecture-simple", drop_rate=0.5))
        assert shard_blocker(create_model("lecture-simple", drop_rate=0.0), "lecture-simple") is None
        # an allow-list: a model nobody vouched for is refused even when its layers look harmless
        assert "not among the models known" in shard_blocker(
            create_model("alexnet", drop_rate=0.0), "alexnet"
        )
    with pytest.raises(UsageError, match=r"cannot be trained in CPU shards: layer head.drop \(Dropout\)"):
        Trainer(recipe(model="lecture-simple", drop_rate=0.3, cpu_shards=2), tmp_path / "r", data=tiny)
    with pytest.raises(UsageError, match="cannot exceed the batch size"):
        recipe(batch_size=4, cpu_shards=8).validate()
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


class DropPath(torch.nn.Module):
    """Stochastic depth as timm writes it: a layer a deny-list of dropout classes does not know."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = (torch.rand(x.shape[0], 1, 1, 1) > 0.1).to(x.dtype)
        return x * keep / 0.9


def test_any_layer_outside_the_per_sample_allow_list_blocks_shards() -> None:
    net = create_model("lecture-simple")
    net.features.add_module("drop_path", DropPath())
    assert "drop_path (DropPath) is not known to compute each image independently" in shard_blocker(
        net, "lecture-simple"
    )
    for name in SHARD_SAFE_MODELS:  # every allowed model, at its defaults, passes the layer check
        with torch.device("meta"):
            assert shard_blocker(create_model(name), name) is None


def test_cli_cpu_shards_flag(tmp_path: Path, tiny_dataset_dir: Path, capsys) -> None:
    code = main([
        "train", "lecture-simple", "--data", "fashion-mnist", "--data-dir", str(tiny_dataset_dir),
        "--epochs", "1", "--cpu-shards", "0", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert code == 2
    assert "error: --cpu-shards must be a whole number of at least 1" in capsys.readouterr().err
