"""Data pruning by training loss (``TrainConfig.prune``): train later epochs on the hard examples.

The first epoch trains on the whole training split. Every later epoch trains on the share ``prune`` of
it with the highest training loss when last seen, of which the share ``prune_random`` is drawn at random
from the others instead, so that no easy example is left out for good. This is the idea of selective
backprop (Jiang et al. 2019, "Accelerating deep learning by focusing on the biggest losers"), chosen
per epoch rather than per batch: the losses are the training step's own (the main head's label-smoothed
cross-entropy of each image), so ranking costs nothing but a sort. docs/training.md ("Speedrun") has
the measurements that put it in the speedrun recipe.

An epoch's losses are held apart until it ends and then replace the images' old ones, so the subset of
an epoch depends only on the table at its start: a run resumed part-way through an epoch trains on the
same images. Data-parallel ranks add up their parts at the end of the epoch (each image is in one
rank's part), so every rank holds the same table.
"""

from __future__ import annotations

import math

import torch

from cnnlab.data.loader import epoch_generator
from cnnlab.errors import CheckpointError
from cnnlab.train.distributed import SINGLE, DistContext

#: the random stream of the random share (cnnlab.data.loader.epoch_generator's ``stream``): apart from
#: the loader's order and augmentation for the same (seed, epoch)
PRUNING_STREAM = 1
#: the checkpoint tensors of the pruning state (cnnlab.train.checkpoint saves a run's extra tensors)
STATE_TENSORS = ("pruning.last_loss", "pruning.epoch_loss", "pruning.epoch_seen")


def epoch_sizes(total: int, epochs: int, prune: float | None) -> list[int]:
    """Images per epoch: ``total`` in the first (and every epoch without pruning), ``prune`` of it after."""
    kept = total if prune is None else max(1, round(prune * total))
    return [total] + [kept] * (epochs - 1) if epochs > 0 else []


class LossPruning:
    """The per-image loss table of a pruned run and the subset of each epoch it implies."""

    def __init__(self, total: int, prune: float, random_share: float, seed: int) -> None:
        self.total, self.prune, self.random_share, self.seed = total, prune, random_share, seed
        self.size = epoch_sizes(total, 2, prune)[1]  # images of every epoch after the first
        self.last_loss = torch.full((total,), math.inf)  # never seen: first in line
        self.epoch_loss = torch.zeros(total)
        self.epoch_seen = torch.zeros(total)

    def subset(self, epoch: int) -> torch.Tensor | None:
        """Sorted indices of epoch ``epoch``'s images (None: all of them, the first epoch)."""
        if epoch == 0:
            return None
        drawn_count = round(self.random_share * self.size)
        order = torch.argsort(self.last_loss, descending=True, stable=True)
        hard, rest = order[: self.size - drawn_count], order[self.size - drawn_count :]
        draw = torch.randperm(len(rest), generator=epoch_generator(self.seed, epoch, PRUNING_STREAM))
        return torch.cat([hard, rest[draw[:drawn_count]]]).sort().values

    def record(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        """Hold the losses of the images ``indices`` of this epoch (applied by :meth:`end_epoch`)."""
        self.epoch_loss[indices] = losses.detach().float().cpu()
        self.epoch_seen[indices] = 1.0

    def end_epoch(self, dist: DistContext = SINGLE) -> None:
        """Every rank's losses of the epoch (summed: each image is one rank's) replace the old ones."""
        dist.sum_tensors_(self.epoch_loss, self.epoch_seen, what="summing the epoch's training losses")
        seen = self.epoch_seen > 0
        self.last_loss[seen] = self.epoch_loss[seen]
        self.epoch_loss.zero_()
        self.epoch_seen.zero_()

    def state_tensors(self, dist: DistContext = SINGLE) -> dict[str, torch.Tensor]:
        """The table and the epoch's held losses of every rank, for a checkpoint (names:
        :data:`STATE_TENSORS`). Every rank of a data-parallel run calls it: each holds the losses of its
        own part of the batches, and the checkpoint (rank 0's) must hold them all."""
        held = [self.epoch_loss.clone(), self.epoch_seen.clone()]
        dist.sum_tensors_(*held, what="gathering the epoch's training losses for the checkpoint")
        return dict(zip(STATE_TENSORS, (self.last_loss, *held)))

    def load_state_tensors(
        self, tensors: dict[str, torch.Tensor], source: str, dist: DistContext = SINGLE
    ) -> None:
        """Restore :meth:`state_tensors` from a checkpoint (``source`` names it in errors). The epoch's held
        losses go to rank 0 alone, as :meth:`end_epoch` sums the ranks' and would count them again."""
        for name, into in zip(STATE_TENSORS, (self.last_loss, self.epoch_loss, self.epoch_seen)):
            saved = tensors.get(name)
            if saved is None or saved.shape != into.shape:
                raise CheckpointError(
                    f"{source} has no data-pruning state for {self.total} training images ({name}); it was "
                    "saved by a run without --prune or with other data"
                )
            into.copy_(saved if dist.is_main or into is self.last_loss else torch.zeros_like(saved))
