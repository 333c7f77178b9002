"""Data pruning on the speedrun recipe, measured at equal cost (a developer's tuning loop, not part of CI).

After a full first epoch, each epoch trains on a share ``--keep`` of the training split: the examples
with the highest training loss when last seen (the hard ones; the loss is the training step's own, so
ranking costs nothing), of which ``--random-share`` is drawn at random from the rest instead, so that
no easy example is dropped for good. The one-cycle schedule spans the steps the run will take. Cost is
counted in training images (``cost_epochs``: full epochs' worth); validation accuracy uses the
recipe's flip evaluation. ``--keep 1`` is the recipe itself, over ``--epochs`` full epochs.

    python scripts/tune_pruning.py --seed 0 --epochs 6 --keep 0.6 --random-share 0.1 --out runs/prune
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.data.loader import epoch_generator
from cnnlab.experiments.speedrun import speedrun_config
from cnnlab.train import Trainer
from cnnlab.train.engine import process_settings
from cnnlab.train.optim import LRSchedule


def epoch_subset(
    last_loss: torch.Tensor, size: int, random_share: float, generator: torch.Generator
) -> torch.Tensor:
    """Indices of the ``size`` examples to train on: the hardest by last-seen loss, ``random_share`` of
    them replaced by a random draw from the others (sorted, so the loader's shuffle alone orders them)."""
    n_random = round(random_share * size)
    order = torch.argsort(last_loss, descending=True)
    hard, rest = order[: size - n_random], order[size - n_random :]
    drawn = rest[torch.randperm(len(rest), generator=generator)[:n_random]]
    return torch.cat([hard, drawn]).sort().values


def main() -> None:
    """Train one run and print (and write as JSON) validation accuracy and cost after each epoch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument(
        "--keep", type=float, default=0.6, help="share of the training split per epoch after the first"
    )
    parser.add_argument(
        "--random-share", type=float, default=0.1, help="share of each subset drawn at random"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--train-subset", type=int, default=None, help="train on this many images (a smoke run)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/prune"))
    args = parser.parse_args()
    cfg = speedrun_config(
        "fashion-mnist",
        seed=args.seed,
        epochs=args.epochs,
        threads=args.threads,
        train_subset=args.train_subset,
    )
    with process_settings(cfg.threads):
        trainer = Trainer(cfg, args.out, overwrite=True, progress=False)
        loader, model, optimizer = trainer.train_loader, trainer.model, trainer.optimizer
        images, labels = loader.images, loader.labels
        total = len(labels)
        sizes = [total] + [round(args.keep * total)] * (args.epochs - 1)
        steps = sum(math.ceil(size / cfg.batch_size) for size in sizes)
        schedule = LRSchedule(
            optimizer, dataclasses.replace(cfg, epochs=1), steps
        )  # one cycle over all the steps
        last_loss = torch.full((total,), float("inf"))
        generator = torch.Generator().manual_seed(1000 + args.seed)
        rows, seen, start = [], 0, time.perf_counter()
        for epoch, size in enumerate(sizes):
            subset = (
                torch.arange(total)
                if size == total
                else epoch_subset(last_loss, size, args.random_share, generator)
            )
            loader.images, loader.labels = images[subset], labels[subset]
            loader.set_epoch(epoch)
            order = torch.randperm(len(subset), generator=epoch_generator(loader.seed, epoch))  # the loader's
            model.train()
            position = 0
            for x, y in loader:
                index = subset[order[position : position + len(y)]]
                position += len(y)
                losses = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing, reduction="none")
                optimizer.zero_grad(set_to_none=True)
                losses.mean().backward()
                optimizer.step()
                schedule.step_batch()
                last_loss[index] = losses.detach()
            seen += len(subset)
            row = {"epoch": epoch + 1, "images": len(subset), "cost_epochs": round(seen / total, 3),
                   "val_acc": trainer.evaluate(trainer.val_loader).accuracy,
                   "lr": schedule.lr, "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "pruning.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
