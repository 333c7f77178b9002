"""One optimisation step, in one screen: loss, backward (in micro-batches or CPU shards), clip, step.

    >>> step = TrainStep(model, optimizer, schedule, cfg, device)
    >>> loss, correct, upcoming = step(x, y, meanwhile=lambda: next(batches, None))

The loss is the mean cross-entropy of the batch (plus the auxiliary heads' weighted losses, as
GoogLeNet trains, Szegedy et al. 2015 section 5). ``accum_steps`` computes it in micro-batches
whose gradients add up in ``.grad`` (each scaled by its share of the batch): the same update as
the whole batch, in less memory. CPU shards (:mod:`cnnlab.train.shards`) compute the slices of a
micro-batch side by side and add their gradients in a fixed order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.train.config import TrainConfig
from cnnlab.train.optim import LRSchedule
from cnnlab.train.precision import autocast
from cnnlab.train.shards import CoreShards


class UnusedParametersWarning(UserWarning):
    """Trainable parameters that received no gradient on the first step (a branch the forward skips)."""


class TrainStep:
    """Compute a batch's gradient and take one optimiser (and schedule) step."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        cfg: TrainConfig,
        device: torch.device,
        shards: CoreShards | None = None,
    ) -> None:
        self.model, self.optimizer, self.schedule, self.cfg, self.device = (
            model,
            optimizer,
            schedule,
            cfg,
            device,
        )
        self.shards = shards
        self.forward = torch.compile(model) if cfg.compile else model
        self.aux_weights = tuple(getattr(model, "aux_loss_weights", ())) if cfg.aux_loss else ()
        self.scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.checked_unused = False

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss (fp32) and logits of one (micro-)batch, under the run's autocast."""
        smoothing = self.cfg.label_smoothing
        with autocast(self.device, self.cfg.amp):
            logits, aux = self.model.forward_aux(x) if self.aux_weights else (self.forward(x), [])
            loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
            for weight, aux_logits in zip(self.aux_weights, aux):
                loss = loss + weight * F.cross_entropy(aux_logits.float(), y, label_smoothing=smoothing)
        return loss, logits

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, meanwhile: Callable[[], Any]
    ) -> tuple[float, int, Any]:
        """Train on one batch; return its mean loss, correct count and ``meanwhile()`` (the next batch,
        fetched while CPU shards compute). A non-finite loss takes no step: the caller reports it."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, correct, upcoming = 0.0, 0, None
        pieces = min(self.cfg.accum_steps, len(y))
        parts = list(zip(x.tensor_split(pieces), y.tensor_split(pieces)))
        for index, (xs, ys) in enumerate(parts):
            last = meanwhile if index == len(parts) - 1 else None
            part_loss, part_correct, fetched = self._gradients(xs, ys, len(y), last)
            loss, correct, upcoming = loss + part_loss, correct + part_correct, fetched
        if not math.isfinite(loss):
            return loss, correct, upcoming
        self._warn_unused_once()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # before clipping: the norm of the true gradients
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step when fp16 gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.schedule.step_batch()
        return loss, correct, upcoming

    def _gradients(
        self, x: torch.Tensor, y: torch.Tensor, batch: int, meanwhile: Callable[[], Any] | None
    ) -> tuple[float, int, Any]:
        """Add this micro-batch's share of the batch gradient to ``.grad``; return its loss share and correct count."""
        if self.shards is None or len(y) < self.shards.workers:  # too small to split
            loss, logits = self.loss(x, y)
            loss = loss * (len(y) / batch)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            return loss.item(), int((logits.argmax(1) == y).sum()), meanwhile() if meanwhile else None
        slices = zip(x.tensor_split(self.shards.workers), y.tensor_split(self.shards.workers))
        futures = self.shards.submit(self._shard_gradients, [(xs, ys, batch) for xs, ys in slices])
        upcoming = meanwhile() if meanwhile else None
        parts = [future.result() for future in futures]
        for _, _, grads in parts:  # a fixed order, so the sum is the same on every run
            for param, grad in zip(self.params, grads):
                if grad is not None:
                    param.grad = grad if param.grad is None else param.grad.add_(grad)
        return sum(p[0] for p in parts), sum(p[1] for p in parts), upcoming

    def _shard_gradients(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, int, list]:
        """On a shard worker: this slice's loss share, correct count and gradients (not yet in ``.grad``:
        the workers run at once, so the caller adds them in order)."""
        loss, logits = self.loss(x, y)
        loss = loss * (len(y) / batch)
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss
        grads = torch.autograd.grad(scaled, self.params, allow_unused=True)
        return loss.item(), int((logits.argmax(1) == y).sum()), list(grads)

    def _warn_unused_once(self) -> None:
        """After the first step's backward: name every trainable parameter that got no gradient."""
        if self.checked_unused:
            return
        self.checked_unused = True
        unused = [name for name, p in self.model.named_parameters() if p.requires_grad and p.grad is None]
        if unused:
            shown = ", ".join(unused[:8]) + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
            warnings.warn(
                f"{len(unused)} trainable parameters received no gradient on the first step: {shown}. "
                "The forward pass does not use them, so the optimiser leaves them as they are",
                UnusedParametersWarning,
                stacklevel=3,
            )
