"""Training and evaluation: :func:`train` a :class:`TrainConfig` into a run directory, :func:`evaluate` a model."""

from cnnlab.train.config import OPTIMIZERS, SCHEDULES, TrainConfig
from cnnlab.train.engine import EvalResult, RunResult, Trainer, evaluate, select_device, train

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "EvalResult",
    "RunResult",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "select_device",
    "train",
]
