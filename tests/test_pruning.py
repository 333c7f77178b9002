"""Data pruning by training loss (cnnlab.train.pruning, TrainConfig.prune): which images each epoch
trains on, the schedule over the shorter epochs, exact resume part-way through a pruned epoch."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import BatchLoader, load_dataset
from cnnlab.data.load import Split
from cnnlab.errors import CheckpointError, UsageError
from cnnlab.train import TrainConfig, Trainer
from cnnlab.train.pruning import LossPruning, epoch_sizes
from cnnlab.train.rundir import read_metrics

PRUNED = TrainConfig(
    model="lecture-simple", epochs=3, batch_size=32, eval_batch_size=256, lr=0.05, threads=1,
    train_subset=200, prune=0.5, prune_random=0.2,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tiny_dataset_dir: Path):
    return load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False)


def test_each_epoch_after_the_first_takes_the_hardest_images_and_a_random_share_of_the_rest() -> None:
    assert epoch_sizes(10, 3, 0.3) == [10, 3, 3]
    assert epoch_sizes(10, 2, None) == [10, 10]
    pruning = LossPruning(total=100, prune=0.2, random_share=0.25, seed=7)
    assert pruning.subset(0) is None  # the first epoch: every image
    losses = torch.arange(100, dtype=torch.float32)  # image i has loss i: 99 is the hardest
    pruning.record(torch.arange(100), losses)
    assert torch.isinf(pruning.last_loss).all()  # held until the epoch ends
    pruning.end_epoch()
    subset = pruning.subset(1)
    assert len(subset) == 20 and torch.equal(subset, subset.sort().values) and len(set(subset.tolist())) == 20
    hardest, drawn = set(range(85, 100)), set(subset.tolist()) - set(range(85, 100))
    assert hardest <= set(subset.tolist()) and len(drawn) == 5 and max(drawn) < 85
    assert torch.equal(pruning.subset(1), subset)  # a function of the table, seed and epoch alone
    assert not torch.equal(pruning.subset(2), subset)  # another epoch draws other easy images
    # an epoch's losses replace the old ones of the images it saw, and only those
    pruning.record(torch.tensor([99]), torch.tensor([-1.0]))
    pruning.end_epoch()
    assert pruning.last_loss[99] == -1.0 and pruning.last_loss[98] == 98.0
    assert 99 not in pruning.subset(3)[:15].tolist() or 99 in set(pruning.subset(3).tolist()) - hardest


def test_a_subset_loader_yields_those_images_in_the_order_epoch_indices_says() -> None:
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 2, 2).contiguous()
    split = Split("train", images, torch.arange(40))
    loader = BatchLoader(split, batch_size=8, shuffle=True, seed=3)
    whole = loader.epoch_indices(1)
    loader.set_epoch(1)
    assert torch.cat([y for _, y in loader]).tolist() == whole.tolist()  # the whole split, as before
    loader.subset = torch.tensor([1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 39])
    order = loader.epoch_indices(2)
    assert sorted(order.tolist()) == loader.subset.tolist() and len(loader) == 2
    loader.set_epoch(2)
    assert torch.cat([y for _, y in loader]).tolist() == order.tolist()


def test_a_pruned_run_trains_fewer_images_after_the_first_epoch_over_one_whole_cycle(
    tmp_path: Path, tiny, no_curves
) -> None:
    rows: list[dict] = []
    trainer = Trainer(PRUNED, tmp_path / "run", data=tiny, progress=False, on_epoch=rows.append)
    assert trainer.epoch_steps == [7, 4, 4]  # 200 images, then 100, in batches of 32
    assert "(50% of them in each epoch after the first: the highest-loss, 20% of those drawn at random" in (
        trainer.describe()
    )
    trainer.fit()
    seen = [round(row["train_images_per_s"] * row["epoch_seconds"]) for row in rows]
    assert seen == [200, 100, 100]
    # the one-cycle schedule spans the 15 steps taken, not 3 whole epochs' 21
    assert (
        trainer.schedule.step == trainer.schedule.total_steps == trainer.schedule.per_step.total_steps == 15
    )
    assert torch.isfinite(trainer.pruning.last_loss).all()  # every image was seen in the first epoch


def test_a_pruned_run_stopped_part_way_through_a_pruned_epoch_resumes_exactly(
    tmp_path: Path, tiny, no_curves, interrupt_after
) -> None:
    Trainer(PRUNED, tmp_path / "straight", data=tiny, progress=False).fit()
    trainer = Trainer(PRUNED, tmp_path / "stopped", data=tiny, progress=False)
    interrupt_after(trainer, 9)  # inside the second epoch (7 + 4 + 4 steps)
    assert trainer.fit().status == "interrupted"
    resumed = Trainer(PRUNED, tmp_path / "stopped", data=tiny, progress=False, resume=True)
    assert resumed.fit().status == "completed"
    timing = ("epoch_seconds", "train_images_per_s", "elapsed_s")
    straight, stopped = (read_metrics(tmp_path / name / "metrics.csv") for name in ("straight", "stopped"))
    assert [{k: v for k, v in row.items() if k not in timing} for row in stopped] == [
        {k: v for k, v in row.items() if k not in timing} for row in straight
    ]


def test_a_checkpoint_without_the_loss_table_is_refused_by_a_pruned_resume(tmp_path: Path) -> None:
    pruning = LossPruning(total=5, prune=0.4, random_share=0.0, seed=0)
    with pytest.raises(CheckpointError, match="no data-pruning state for 5 training images"):
        pruning.load_state_tensors({}, "last.json")
    pruning.load_state_tensors({name: torch.full((5,), 2.0) for name in pruning.state_tensors()}, "last.json")
    assert pruning.last_loss.tolist() == [2.0] * 5


def test_per_image_losses_are_the_same_in_micro_batches_and_cpu_shards(tmp_path: Path, tiny) -> None:
    """What ranks the images does not depend on how the batch's gradient was computed."""
    losses = []
    for name, extra in (("whole", {}), ("micro", {"accum_steps": 3}), ("shards", {"cpu_shards": 2})):
        cfg = TrainConfig(**{**PRUNED.to_dict(), **extra, "threads": 2})
        trainer = Trainer(cfg, tmp_path / name, data=tiny, progress=False)
        x, y = next(iter(trainer.train_loader))
        with trainer.shards.coordinating() if trainer.shards else contextlib.nullcontext():
            trainer.step(x, y, lambda: None)
        losses.append(trainer.step.last_losses)
        trainer.run_lock.release()
    assert losses[0].shape == (32,)
    torch.testing.assert_close(losses[1], losses[0])
    torch.testing.assert_close(losses[2], losses[0])


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"prune": 1.5}, "prune is the share of the training images"),
        ({"prune": 0.0}, "prune is the share of the training images"),
        ({"prune": float("nan")}, "prune must be a finite number"),
        ({"prune_random": 1.0}, r"prune_random must be in \[0, 1\)"),
        ({"schedule": "step"}, "the step schedule counts epochs in steps"),
    ],
)
def test_bad_pruning_settings_are_usage_errors(bad: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        TrainConfig(**{**PRUNED.to_dict(), **bad}).validate()


def test_cli_refuses_a_prune_share_outside_0_1_in_one_line(capsys) -> None:
    assert main(["train", "lecture-simple", "--prune", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "prune" in err and "(0, 1]" in err


def test_configs_saved_before_data_pruning_existed_still_load_complete() -> None:
    saved = TrainConfig().to_dict()
    del saved["prune"], saved["prune_random"]
    cfg = TrainConfig.from_dict(saved, complete=True)
    assert cfg.prune is None and cfg.prune_random == 0.1


def test_prune_1_turns_a_recipes_pruning_off_and_prune_random_alone_is_refused(tmp_path: Path, tiny) -> None:
    off = TrainConfig(
        **{**PRUNED.to_dict(), "prune": 1.0, "prune_random": 0.1, "schedule": "step"}
    ).validate()
    assert not off.prunes
    trainer = Trainer(off, tmp_path / "off", data=tiny, progress=False)
    assert trainer.pruning is None and trainer.epoch_steps == [7, 7, 7]
    trainer.run_lock.release()
    with pytest.raises(UsageError, match="prune_random shapes data pruning, which is off"):
        TrainConfig(**{**PRUNED.to_dict(), "prune": None, "prune_random": 0.3}).validate()
    # the speedrun recipe's own pruning, turned off from the command line
    from cnnlab.experiments.speedrun import speedrun_config

    assert speedrun_config("fashion-mnist").prunes and not speedrun_config("fashion-mnist", prune=1.0).prunes


def test_an_experiment_of_equal_epochs_refuses_pruning_before_it_writes_anything(tmp_path: Path) -> None:
    out = tmp_path / "bn"
    assert (
        main(["experiment", "batchnorm", "--prune", "0.5", "--out", str(out), "--train-subset", "256"]) == 2
    )
    assert not out.exists()


def test_the_speedrun_caption_says_the_pruning_it_timed() -> None:
    from cnnlab.experiments.speedrun import SpeedrunResult, speedrun_config

    def caption(**given) -> str:
        return SpeedrunResult(
            [], (93.0,), Path("t.md"), Path("f.png"), config=speedrun_config("fashion-mnist", **given)
        ).caption()

    assert "pruned to 50% after the first epoch (10% of it random)" in caption()
    assert "pruned to 30% after the first epoch (20% of it random)" in caption(prune=0.3, prune_random=0.2)
    assert "pruned" not in caption(prune=1.0)
