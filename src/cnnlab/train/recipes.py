"""Named training recipes: a paper's settings as data, applied over :class:`TrainConfig`'s defaults.

Torch-free, so that ``--help`` can show a recipe's values as its defaults without importing torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cnnlab.train.config import TrainConfig

# He et al. 2016, section 4.2 (CIFAR-10): SGD with momentum 0.9, lr 0.1, weight decay 1e-4, batch
# 128; a cosine schedule with one warm-up epoch in place of the paper's steps at 32k and 48k
# iterations, so that short budgets still end annealed.
DEGRADATION: dict[str, Any] = {
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "batch_size": 128,
    "schedule": "cosine",
    "warmup_epochs": 1.0,
}


def recipe_config(recipe: dict[str, Any]) -> TrainConfig:
    """TrainConfig's defaults with ``recipe`` applied."""
    return dataclasses.replace(TrainConfig(), **recipe)
