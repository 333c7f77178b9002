"""The training recipe as one typed record, validated before anything runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cnnlab.errors import UsageError, unknown_choice

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "multistep", "plateau", "cosine", "onecycle")


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run directory.

    The defaults are the recipe measured in the README (SGD with Nesterov momentum, one-cycle,
    batch 128, channels_last on CPU, bf16 autocast where the hardware has bf16 matrix units).
    """

    model: str = "lecture-simple"
    data: str = "fashion-mnist"
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    # optimiser (weight decay never applies to norm and bias parameters)
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    # schedule: per-step factors on lr, with linear warmup
    schedule: str = "onecycle"
    warmup_epochs: float = 0.0
    step_size: int = 3  # step: epochs between decays
    milestones: tuple[int, ...] = ()  # multistep: epochs where lr is multiplied by gamma
    gamma: float = 0.1
    patience: int = 2  # plateau: epochs without improvement before decaying
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    # regularisation
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    drop_rate: float | None = None
    crop_padding: int = 0
    flip: bool = False
    aux_loss: bool = True  # use the model's auxiliary heads in the loss (GoogLeNet: 0.3 each)
    # data
    val_fraction: float = 0.0
    train_subset: int | None = None  # train on this many images (a seeded sample) for budget runs
    data_dir: str | None = None
    pad_to: int | None = None
    in_chans: int | None = None  # repeat grey images to this many channels (3 for ImageNet-shaped nets)
    model_options: dict[str, Any] = field(default_factory=dict)
    # reproducibility and speed
    seed: int = 0
    device: str = "auto"
    channels_last: bool | None = None  # None: on where it is faster (CUDA, and CPU for conv nets)
    threads: int | None = None
    cpu_shards: int | None = None  # None: one batch shard per core where exact (see cnnlab.train.shards)
    compile: bool = False
    amp: bool | None = None  # None: bf16 autocast on CUDA and on CPUs with AMX bf16 units
    max_steps_per_epoch: int | None = None  # for smoke runs and benchmarks

    def validate(self) -> TrainConfig:
        """Raise :class:`UsageError` on any invalid value; return self."""
        if self.optimizer not in OPTIMIZERS:
            raise unknown_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise unknown_choice("schedule", self.schedule, SCHEDULES)
        _whole("epochs", self.epochs, 1)
        _whole("batch_size", self.batch_size, 1)
        _whole("eval_batch_size", self.eval_batch_size, 1)
        _whole("step_size", self.step_size, 1)
        _whole("patience", self.patience, 0)
        _whole("crop_padding", self.crop_padding, 0)
        if not self.lr > 0:
            raise UsageError(f"learning rate must be greater than 0, got {self.lr}")
        for name, value, lo, hi in (
            ("momentum", self.momentum, 0.0, 1.0),
            ("gamma", self.gamma, 0.0, 1.0),
            ("label_smoothing", self.label_smoothing, 0.0, 1.0),
            ("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0),
        ):
            if not lo <= value < hi and not (name == "gamma" and value == 1.0):
                raise UsageError(f"{name} must be in [{lo:g}, {hi:g}), got {value}")
        if self.weight_decay < 0:
            raise UsageError(f"weight_decay must be at least 0, got {self.weight_decay}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"validation fraction must be in [0, 1), got {self.val_fraction}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise UsageError(
                f"warmup_epochs must be between 0 and epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UsageError(f"grad_clip must be greater than 0, got {self.grad_clip}")
        if self.drop_rate is not None and not 0.0 <= self.drop_rate < 1.0:
            raise UsageError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if any(m < 1 or m > self.epochs for m in self.milestones) or list(self.milestones) != sorted(
            self.milestones
        ):
            raise UsageError(
                f"milestones must be increasing epochs between 1 and {self.epochs}, got {list(self.milestones)}"
            )
        if self.threads is not None:
            _whole("threads", self.threads, 1)
        if self.cpu_shards is not None:
            _whole("cpu_shards", self.cpu_shards, 1)
            if self.cpu_shards > self.batch_size:
                raise UsageError(
                    f"cpu_shards ({self.cpu_shards}) cannot exceed the batch size ({self.batch_size})"
                )
        if self.max_steps_per_epoch is not None:
            _whole("max_steps_per_epoch", self.max_steps_per_epoch, 1)
        if self.train_subset is not None:
            _whole("train_subset", self.train_subset, 1)
        if self.in_chans is not None:
            _whole("in_chans", self.in_chans, 1)
        if self.pad_to is not None:
            _whole("pad_to", self.pad_to, 1)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a config from a newer version)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"unknown training settings: {', '.join(unknown)}")
        values = dict(values)
        for key in ("betas", "milestones"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def _whole(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
