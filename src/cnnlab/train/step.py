"""One optimisation step, in one screen: loss, backward (in micro-batches or CPU shards), clip, step.

    >>> step = TrainStep(model, optimizer, schedule, cfg, device)
    >>> loss, correct, upcoming = step(x, y, meanwhile=lambda: next(batches, None))

The loss is the mean cross-entropy of the batch (plus the auxiliary heads' weighted losses, as
GoogLeNet trains, Szegedy et al. 2015 section 5). ``accum_steps`` computes it in micro-batches
whose gradients add up in ``.grad`` (each scaled by its share of the batch): the same update as
the whole batch, in less memory. CPU shards (:mod:`cnnlab.train.shards`) compute the slices of a
micro-batch side by side and add their gradients in a fixed order.

In data-parallel training (:mod:`cnnlab.train.distributed`) the model runs inside
DistributedDataParallel: each rank's loss is weighted by its share of the global batch times the
number of ranks, so that DDP's average of the ranks' gradients is the global batch's gradient; the
micro-batches before the last one skip DDP's all-reduce (``no_sync``), which then sums them all at once.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.train.config import TrainConfig
from cnnlab.train.distributed import SINGLE, DistContext
from cnnlab.train.optim import LRSchedule
from cnnlab.train.precision import autocast
from cnnlab.train.shards import CoreShards


class UnusedParametersWarning(UserWarning):
    """Trainable parameters that received no gradient on the first step (a branch the forward skips)."""


class WithAuxOutputs(nn.Module):
    """``model.forward_aux`` as a module's forward, so that DDP sees the auxiliary heads' outputs too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.model.forward_aux(x)


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
        dist: DistContext = SINGLE,
    ) -> None:
        self.model, self.optimizer, self.schedule, self.cfg, self.device = (
            model,
            optimizer,
            schedule,
            cfg,
            device,
        )
        self.shards = shards
        self.dist = dist
        self.aux_weights = tuple(getattr(model, "aux_loss_weights", ())) if cfg.aux_loss else ()
        trained: nn.Module = model
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        if dist.active:
            # Parameters the loss leaves out (auxiliary heads with aux_loss off) must not stall DDP.
            unused = bool(getattr(model, "aux_loss_weights", ())) and not cfg.aux_loss
            self.ddp = nn.parallel.DistributedDataParallel(
                WithAuxOutputs(model) if self.aux_weights else model,
                device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=unused,
            )
            trained = self.ddp
        self.forward = torch.compile(trained) if cfg.compile else trained
        self.scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.checked_unused = False
        # data pruning (cnnlab.train.pruning) ranks images by their loss: each step keeps its images'
        self.record_losses = cfg.prunes
        self.last_losses: torch.Tensor | None = None  # the last step's per-image losses (record_losses)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss (fp32) and logits of one (micro-)batch, under the run's autocast."""
        loss, logits, _ = self.loss_terms(x, y)
        return loss, logits

    def loss_terms(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`loss`, and (``record_losses``) each image's main-head loss, detached."""
        smoothing = self.cfg.label_smoothing
        with autocast(self.device, self.cfg.amp):
            if not self.aux_weights:
                logits, aux = self.forward(x), []
            else:  # through DDP, which must see every output; in one process, as the model gives them
                logits, aux = self.ddp(x) if self.ddp is not None else self.model.forward_aux(x)
            if self.record_losses:
                per_image = F.cross_entropy(logits.float(), y, label_smoothing=smoothing, reduction="none")
                loss = per_image.mean()
            else:
                per_image, loss = None, F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
            for weight, aux_logits in zip(self.aux_weights, aux):
                loss = loss + weight * F.cross_entropy(aux_logits.float(), y, label_smoothing=smoothing)
        return loss, logits, None if per_image is None else per_image.detach()

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, meanwhile: Callable[[], Any], total: int | None = None
    ) -> tuple[float, int, Any]:
        """Train on one batch; return its mean loss, correct count and ``meanwhile()`` (the next batch,
        fetched while CPU shards compute). A non-finite loss takes no step: the caller reports it.

        ``total``: the images of the global batch this rank's ``x`` is a part of (data-parallel
        training); the loss returned is then this rank's share of the global batch's mean loss.
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss, correct, upcoming, per_image = 0.0, 0, None, []
        # As many micro-batches on every rank (the smallest rank part bounds them): with --sync-bn each
        # one is a collective all ranks must join.
        smallest = (total // self.dist.world_size) if total else len(y)
        pieces = min(self.cfg.accum_steps, max(1, smallest), len(y))
        parts = list(zip(x.tensor_split(pieces), y.tensor_split(pieces)))
        for index, (xs, ys) in enumerate(parts):
            final = index == len(parts) - 1
            # DDP all-reduces the gradients in the last micro-batch's backward only.
            deferred = self.ddp.no_sync() if self.ddp is not None and not final else contextlib.nullcontext()
            with deferred:
                part_loss, part_correct, fetched, part_losses = self._gradients(
                    xs, ys, total or len(y), meanwhile if final else None
                )
            loss, correct, upcoming = loss + part_loss, correct + part_correct, fetched
            per_image += part_losses
        self.last_losses = torch.cat(per_image) if per_image else None
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
    ) -> tuple[float, int, Any, list[torch.Tensor]]:
        """Add this micro-batch's share of the batch gradient to ``.grad``; return its loss share, correct
        count, ``meanwhile()`` and (``record_losses``) its per-image losses, in order."""
        if self.shards is None or len(y) < self.shards.workers:  # too small to split
            loss, logits, per_image = self.loss_terms(x, y)
            loss = loss * (len(y) / batch)
            # DDP divides the ranks' summed gradients by their number: multiplied back here.
            averaged = loss * self.dist.world_size if self.ddp is not None else loss
            (self.scaler.scale(averaged) if self.scaler is not None else averaged).backward()
            correct = int((logits.argmax(1) == y).sum())
            return (
                loss.item(),
                correct,
                meanwhile() if meanwhile else None,
                [] if per_image is None else [per_image],
            )
        slices = zip(x.tensor_split(self.shards.workers), y.tensor_split(self.shards.workers))
        futures = self.shards.submit(self._shard_gradients, [(xs, ys, batch) for xs, ys in slices])
        upcoming = meanwhile() if meanwhile else None
        parts = [future.result() for future in futures]
        for _, _, grads, _ in parts:  # a fixed order, so the sum is the same on every run
            for param, grad in zip(self.params, grads):
                if grad is not None:
                    param.grad = grad if param.grad is None else param.grad.add_(grad)
        per_image = [p[3] for p in parts if p[3] is not None]
        return sum(p[0] for p in parts), sum(p[1] for p in parts), upcoming, per_image

    def _shard_gradients(
        self, x: torch.Tensor, y: torch.Tensor, batch: int
    ) -> tuple[float, int, list, torch.Tensor | None]:
        """On a shard worker: this slice's loss share, correct count, gradients (not yet in ``.grad``:
        the workers run at once, so the caller adds them in order) and per-image losses."""
        loss, logits, per_image = self.loss_terms(x, y)
        loss = loss * (len(y) / batch)
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss
        grads = torch.autograd.grad(scaled, self.params, allow_unused=True)
        return loss.item(), int((logits.argmax(1) == y).sum()), list(grads), per_image

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
