"""Training and evaluation: :func:`train` a :class:`TrainConfig` into a run directory, :func:`evaluate` a model.

The engine's names are imported on first use (PEP 562): the configuration (``TrainConfig``,
``OPTIMIZERS``, ``SCHEDULES``) is torch-free, so the CLI can build its parser without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab.train.config import OPTIMIZERS, SCHEDULES, TrainConfig

if TYPE_CHECKING:
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

_FROM_ENGINE = ("EvalResult", "RunResult", "Trainer", "evaluate", "select_device", "train")


def __getattr__(name: str) -> Any:
    if name in _FROM_ENGINE:
        from cnnlab.train import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'cnnlab.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
