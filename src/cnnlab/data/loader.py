"""Batches from an in-memory split: sliced, augmented and normalised as whole tensors.

No per-sample Python work: a batch is one index gather on the uint8 images, the augmentation pipeline
of :mod:`cnnlab.data.augment` applied to the whole batch (one gather for crops and flips, one
``grid_sample`` for rescaled crops), and one fused multiply-add that converts to float32 and normalises
with precomputed scale and shift. Order and augmentation are drawn from a generator seeded by
(seed, epoch) alone, so resuming at an epoch boundary reproduces the rest exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from cnnlab.data.augment import Augment, Draws, apply, draw
from cnnlab.data.load import Split
from cnnlab.errors import UsageError, check_positive


def rank_part(start: int, stop: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s part of the positions ``start:stop``: ``torch.tensor_split`` into ``world_size``
    contiguous parts (the first ``(stop - start) % world_size`` parts one longer), disjoint, covering it."""
    count, extra = divmod(stop - start, world_size)
    first = start + rank * count + min(rank, extra)
    return first, first + count + (1 if rank < extra else 0)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator determined by (seed, epoch) alone, well mixed for neighbouring values; ``stream`` > 0
    gives another, independent one for the same (seed, epoch) (0: the loader's own)."""
    entropy = [seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF] + ([stream] if stream else [])
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class BatchLoader:
    """Iterate ``(x, y)`` batches over ``split``: x float32 [B, C, H, W] normalised, y int64 [B].

    ``pad_to``: zero-pad (raw 0, centred) to a square of this side, e.g. 28 -> 32 for 32x32 models.
    ``out_chans``: repeat a single channel, e.g. 3 for models built for RGB. ``mean``/``std``: per input
    channel (one value is broadcast). Each ``iter()`` runs the epoch set by :meth:`set_epoch` and then
    advances it by one, so a training loop works with or without calling ``set_epoch``.

    ``subset`` (settable between epochs): indices of the split's images that the next epochs iterate
    over, in place of all of them (data pruning, :mod:`cnnlab.train.pruning`); None: the whole split.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int = 128,
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        pad_to: int | None = None,
        out_chans: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        check_positive("batch_size", batch_size)
        check_positive("world_size", world_size)
        if not 0 <= rank < world_size:
            raise UsageError(f"rank must be in [0, {world_size}), got {rank}")
        self.rank, self.world_size = rank, world_size
        check_positive("out_chans", out_chans)
        images = split.images if split.images.ndim == 4 else split.images.unsqueeze(1)
        if images.dtype != torch.uint8:
            raise UsageError(f"BatchLoader expects uint8 images, got {images.dtype}")
        self.split, self.images, self.labels = split, images, split.labels
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.augment = augment or Augment()
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.epoch = 0
        self.subset: torch.Tensor | None = None
        in_chans, height, width = images.shape[1:]
        self.out_chans = out_chans or in_chans
        if self.out_chans != in_chans and in_chans != 1:
            raise UsageError(
                f"out_chans={out_chans} needs single-channel images; these have {in_chans} channels"
            )
        self.pad = self._centre_padding(pad_to, height, width)
        self.stored_size = (height + self.pad[2] + self.pad[3], width + self.pad[0] + self.pad[1])
        self.out_size = self.augment.output_size(*self.stored_size)
        self.canvas = tuple(side + 2 * self.augment.padding for side in self.stored_size)
        mean_t, std_t = self._per_channel("mean", mean, in_chans), self._per_channel("std", std, in_chans)
        if (std_t <= 0).any():
            raise UsageError(f"std must be positive, got {tuple(std)}")
        # x_norm = (x / 255 - mean) / std = x * scale + shift, one fused op per batch.
        scale, shift = 1.0 / (255.0 * std_t), -mean_t / std_t
        repeat = self.out_chans // in_chans
        self.scale = scale.repeat(repeat).view(1, -1, 1, 1).to(self.device)
        self.shift = shift.repeat(repeat).view(1, -1, 1, 1).to(self.device)

    @staticmethod
    def _per_channel(what: str, values: Sequence[float], chans: int) -> torch.Tensor:
        """``values`` (a scalar, sequence or tensor) as one float32 per channel; a single value is broadcast."""
        values = tuple(torch.as_tensor(values, dtype=torch.float64).flatten().tolist())
        if len(values) == 1:
            values = values * chans
        if len(values) != chans:
            raise UsageError(f"{what} needs 1 or {chans} values (one per channel), got {len(values)}")
        return torch.tensor(values, dtype=torch.float32)

    @staticmethod
    def _centre_padding(pad_to: int | None, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zero padding that centres an HxW image in pad_to x pad_to."""
        if pad_to is None:
            return (0, 0, 0, 0)
        if pad_to < max(height, width):
            raise UsageError(
                f"pad_to={pad_to} is smaller than the {height}x{width} images; use at least {max(height, width)}"
            )
        top, left = (pad_to - height) // 2, (pad_to - width) // 2
        return (left, pad_to - width - left, top, pad_to - height - top)

    @property
    def num_samples(self) -> int:
        """Samples of an epoch: the split's (or the subset's), including a dropped last partial batch."""
        return len(self.labels) if self.subset is None else len(self.subset)

    def __len__(self) -> int:
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(self.num_samples / self.batch_size)

    def global_batch(self, index: int) -> tuple[int, int]:
        """Positions ``(start, stop)`` in the epoch's order of global batch ``index`` (all ranks' parts)."""
        start = index * self.batch_size
        return start, min(start + self.batch_size, self.num_samples)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch the next iteration runs; order and augmentation depend on (seed, epoch) only."""
        check_positive("epoch", epoch, allow_zero=True)
        self.epoch = int(epoch)

    def _geometry(self, batch: torch.Tensor, draws: Draws) -> torch.Tensor:
        """Pad (pad_to and crop padding) with raw 0, then crop, rescale and flip as ``draws`` say."""
        p = self.augment.padding
        left, right, top, bottom = self.pad
        if any(self.pad) or p:
            n, c, h, w = batch.shape
            # A zeroed canvas and one slice copy: several times faster than F.pad on uint8.
            canvas = batch.new_zeros(n, c, h + top + bottom + 2 * p, w + left + right + 2 * p)
            canvas[:, :, top + p : top + p + h, left + p : left + p + w] = batch
            batch = canvas
        return apply(batch, draws, self.out_size)

    def _to_float(self, batch: torch.Tensor, colour: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (or float32 raw-pixel) [B, C, H, W] -> normalised float32 on the device, with ``colour``
        ([B, C] raw-pixel shifts) added, channels repeated and laid out as asked."""
        batch = batch.to(self.device, non_blocking=True)
        if colour is not None:
            batch = batch.float() + colour.to(self.device)[:, :, None, None]
        if self.out_chans != batch.shape[1]:
            batch = batch.expand(-1, self.out_chans, -1, -1)
        x = torch.addcmul(self.shift, batch, self.scale)  # uint8 -> float32, scaled and shifted, one kernel
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _order(self, generator: torch.Generator) -> torch.Tensor | None:
        """The split's indices in the epoch's order (the generator's first draw); None: in stored order."""
        order = torch.randperm(self.num_samples, generator=generator) if self.shuffle else None
        if self.subset is None:
            return order
        return self.subset if order is None else self.subset[order]

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """The split's indices of epoch ``epoch``'s images, in the order it yields them (global batch
        ``i`` is positions :meth:`global_batch` ``(i)``; a rank's part of it, :func:`rank_part`)."""
        order = self._order(epoch_generator(self.seed, epoch))
        return torch.arange(self.num_samples) if order is None else order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, n = self.epoch, self.num_samples
        self.epoch += 1
        generator = epoch_generator(self.seed, epoch)
        order = self._order(generator)
        # All of the epoch's randomness is drawn up front, per position in the epoch's order.
        draws = draw(self.augment, n, self.canvas, generator, int(self.images.shape[1]))
        for batch_index in range(len(self)):
            start, stop = rank_part(*self.global_batch(batch_index), self.rank, self.world_size)
            if start == stop:
                continue  # a final batch smaller than the number of ranks: nothing for this one
            if order is not None:
                index = order[start:stop]
                images, labels = self.images.index_select(0, index), self.labels.index_select(0, index)
            else:
                images, labels = self.images[start:stop], self.labels[start:stop]
            part = draws.take(start, stop)
            batch = self._geometry(images, part)
            yield self._to_float(batch, part.colour), labels.to(self.device, non_blocking=True)
