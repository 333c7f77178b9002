"""Optimisers and learning-rate schedules.

Weight decay applies to weights of convolutions and linear layers only: norm parameters and
biases (every parameter with fewer than two dimensions) are exempt, as in Goyal et al. 2017
section 5.1 and most modern recipes.

Schedules are PyTorch's own (``torch.optim.lr_scheduler``), stepped once per optimisation step
(``plateau`` once per epoch); their state dicts go into the checkpoint, so a resumed run continues
exactly.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from cnnlab.train.config import CONSTANT_WARMUP_FACTOR, TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with ``weight_decay``; biases and norm parameters (ndim < 2) without."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


#: The fewest trainable parameters for which the engine takes torch's fused optimiser step (below, the
#: multi-tensor one); see :func:`build_optimizer`.
FUSED_MIN_PARAMS = 1_000_000


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optionally Nesterov) or AdamW over :func:`param_groups`.

    Which of torch's implementations depends on the model's size, a property of the command (not of the
    machine), since the two round differently in the last bit. A model of :data:`FUSED_MIN_PARAMS` or more
    takes the fused kernel, one pass over each weight, gradient and buffer: its update is bound by memory
    (vgg11 at 64x64: 75 ms multi-tensor against 22 ms fused on a 2-core Xeon; densenet121 45 against 32
    ms; docs/training.md). A smaller one takes the multi-tensor (``foreach``) step: the fused CPU kernel
    starts a parallel region for every tensor, which costs more than the arithmetic of a small net's
    update when the OpenMP threads sleep between regions (lecture-residual with ``OMP_WAIT_POLICY=PASSIVE``:
    0.81 ms fused against 0.15 ms, about 4% of a training epoch). Either beats torch's default on CPU, a loop over
    the parameters. A resumed run stays exact with both: the checkpoint restores each buffer's layout.
    """
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        options = dict(lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
        kind: type[torch.optim.Optimizer] = torch.optim.SGD
    else:
        options, kind = dict(lr=cfg.lr, betas=cfg.betas), torch.optim.AdamW
    size = sum(p.numel() for group in groups for p in group["params"])
    preferred = [{"fused": True}] if size >= FUSED_MIN_PARAMS else []
    for implementation in (*preferred, {"foreach": True}):
        try:
            return kind(groups, **implementation, **options)
        except (RuntimeError, TypeError, ValueError):  # not available for this torch, device or dtype
            continue
    return kind(groups, **options)


# Schedules whose shape depends on the run's length: a resumed run with another --epochs rebuilds them.
LENGTH_DEPENDENT = ("onecycle", "cosine")


class LRSchedule:
    """The learning-rate schedule of a run, on ``torch.optim.lr_scheduler``, stepped once per batch.

    * ``onecycle``: :class:`~torch.optim.lr_scheduler.OneCycleLR` as Smith & Topin 2019 describe it:
      from lr/25 up to lr over the first 25% of steps, cosine down to lr/25e4 (no momentum cycling);
    * ``cosine``: :class:`~torch.optim.lr_scheduler.CosineAnnealingLR` to ``min_lr_ratio * lr``;
    * ``step`` / ``multistep``: :class:`~torch.optim.lr_scheduler.StepLR` /
      :class:`~torch.optim.lr_scheduler.MultiStepLR`, with epochs counted in steps;
    * ``plateau``: :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` on the validation loss,
      stepped by :meth:`step_epoch` (rel. threshold 1e-4, ``patience`` epochs, factor ``gamma``);
    * ``constant``: the base rate.

    ``warmup_epochs`` (not with one-cycle, which has its own) puts a warm-up of W steps in front, through
    :class:`~torch.optim.lr_scheduler.SequentialLR`: ``warmup_mode`` "linear" is a
    :class:`~torch.optim.lr_scheduler.LinearLR` ramp from lr/W to lr, "constant" a
    :class:`~torch.optim.lr_scheduler.ConstantLR` at lr x ``CONSTANT_WARMUP_FACTOR``.
    """

    ONECYCLE_WARM = 0.25
    ONECYCLE_DIV = 25.0
    ONECYCLE_FINAL_DIV = 1e4

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: TrainConfig,
        steps_per_epoch: int,
        total_steps: int | None = None,
    ) -> None:
        """``total_steps``: the run's steps, where epochs differ in length (data pruning); default
        ``cfg.epochs * steps_per_epoch``. Warm-ups count epochs in ``steps_per_epoch`` steps."""
        self.optimizer = optimizer
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = cfg.epochs * steps_per_epoch if total_steps is None else total_steps
        self.warmup_steps = 0 if cfg.schedule == "onecycle" else round(cfg.warmup_epochs * steps_per_epoch)
        self.step = 0
        self.per_step = self._per_step_scheduler()
        self.plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=cfg.gamma, patience=cfg.patience, threshold=1e-4
            )
            if cfg.schedule == "plateau"
            else None
        )

    def _per_step_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        cfg, opt, spe = self.cfg, self.optimizer, self.steps_per_epoch
        schedulers = torch.optim.lr_scheduler
        if cfg.schedule == "onecycle":
            total = max(2, self.total_steps)
            # OneCycleLR's warm phase must span more than one step (a run of a few steps, a smoke test)
            return schedulers.OneCycleLR(
                opt,
                max_lr=cfg.lr,
                total_steps=total,
                pct_start=max(self.ONECYCLE_WARM, 1.5 / total),
                anneal_strategy="cos",
                div_factor=self.ONECYCLE_DIV,
                final_div_factor=self.ONECYCLE_FINAL_DIV,
                cycle_momentum=False,
            )
        if cfg.schedule == "step":
            main = schedulers.StepLR(opt, step_size=cfg.step_size * spe, gamma=cfg.gamma)
        elif cfg.schedule == "multistep":
            main = schedulers.MultiStepLR(opt, milestones=[m * spe for m in cfg.milestones], gamma=cfg.gamma)
        elif cfg.schedule == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            main = schedulers.CosineAnnealingLR(opt, T_max=span, eta_min=cfg.lr * cfg.min_lr_ratio)
        else:  # constant, plateau (decayed per epoch by ReduceLROnPlateau)
            main = schedulers.ConstantLR(opt, factor=1.0, total_iters=0)
        if not self.warmup_steps:
            return main
        if cfg.warmup_mode == "constant":
            warmup = schedulers.ConstantLR(opt, factor=CONSTANT_WARMUP_FACTOR, total_iters=self.warmup_steps)
        else:
            warmup = schedulers.LinearLR(
                opt, start_factor=1 / self.warmup_steps, end_factor=1.0, total_iters=self.warmup_steps
            )
        return schedulers.SequentialLR(opt, [warmup, main], milestones=[self.warmup_steps])

    def step_batch(self) -> None:
        """Advance one optimisation step."""
        self.step += 1
        if (
            isinstance(self.per_step, torch.optim.lr_scheduler.OneCycleLR)
            and self.step > self.per_step.total_steps
        ):
            return  # past the cycle (a benchmark's extra steps): the final rate stays
        self.per_step.step()

    def step_epoch(self, val_loss: float) -> None:
        """End of an epoch: ``plateau`` decays by ``gamma`` after ``patience`` epochs without improvement."""
        if self.plateau is not None:
            self.plateau.step(val_loss)

    @property
    def lr(self) -> float:
        """Current learning rate."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (JSON-ready): the schedulers' own state dicts."""
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "per_step": self.per_step.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (after the optimiser, whose param groups hold the current rate).

        A run resumed with another length keeps the schedule it would have had from the start with
        that length: one-cycle and cosine are rebuilt for it and advanced to the saved step.
        """
        self.step = int(state["step"])
        if self.cfg.schedule in LENGTH_DEPENDENT and state.get("total_steps") != self.total_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.lr
                group.pop("initial_lr", None)
            self.per_step = self._per_step_scheduler()
            with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": replaying
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(self.step):
                    self.per_step.step()
        else:
            self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])
