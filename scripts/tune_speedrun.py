"""Variants of the speedrun recipe, measured at equal cost (a developer's tuning loop, not part of CI).

Each variant is one run of the speedrun's net and recipe in cnnlab's engine (its loaders, net,
optimiser and validation views: the recipe's ``eval_tta``, flip views until the recipe took the centre
crop; ``{"config": {"eval_tta": "flip"}}`` measures as before), with three levers, of which the engine
has the first:

* ``keep`` and ``random_share``: data pruning, as the engine's ``prune`` and ``prune_random``
  (:mod:`cnnlab.train.pruning`, whose subsets this loop takes; variants measured before it was in the
  engine drew the random share with a generator of their own);
* ``train_size``: each training image (already cropped and mirrored by the recipe) is cut to a random
  ``train_size`` square; validation sees the whole image (the net pools globally, so it takes any size);
* ``val_from``: validation only from that epoch on (1: every epoch).

The one-cycle schedule spans the steps the run takes. Cost is counted in training pixels, in full
28x28 epochs' worth (``cost_epochs``); ``seconds`` is the run's wall time. Validation accuracy only:
the test split is never read here, so variants are chosen on validation alone.

    python scripts/tune_speedrun.py --variants variants.json --out tune.jsonl [--device cuda]

``variants.json``: a list of objects, each with ``name`` and any of ``seed``, ``epochs``, ``keep``,
``random_share``, ``train_size``, ``val_from`` and ``config`` (TrainConfig fields over the recipe, e.g.
``{"lr": 0.3, "model_options": {"widths": [16, 32, 64, 128]}}``). One JSON line per finished run is
appended to ``--out``; a variant already there (by name and seed) is skipped, so a cut run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.experiments.speedrun import speedrun_config
from cnnlab.train import Trainer
from cnnlab.train.engine import process_settings
from cnnlab.train.optim import LRSchedule
from cnnlab.train.pruning import LossPruning, epoch_sizes


def random_squares(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``size`` x ``size`` square of each image of the batch ``x`` (N, C, H, W)."""
    n, _, height, width = x.shape
    top = torch.randint(0, height - size + 1, (n, 1), generator=generator).to(x.device)
    left = torch.randint(0, width - size + 1, (n, 1), generator=generator).to(x.device)
    offsets = torch.arange(size, device=x.device)
    rows, cols = top + offsets, left + offsets  # (N, size) each
    batch = torch.arange(n, device=x.device)[:, None, None]
    return (
        x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        .permute(0, 3, 1, 2)
        .contiguous(memory_format=torch.channels_last)
    )


def run_variant(variant: dict[str, Any], device: str, threads: int, data_dir: str | None) -> dict[str, Any]:
    """Train one variant and return its record: validation accuracy and cost after each epoch."""
    seed, epochs = variant.get("seed", 0), variant.get("epochs", 6)
    keep, random_share = variant.get("keep", 1.0), variant.get("random_share", 0.1)
    val_from = variant.get("val_from", 1)
    given = {
        "seed": seed,
        "epochs": epochs,
        "device": device,
        "threads": threads,
        "prune": None,  # pruning is this loop's own (keep), not the Trainer's
        **variant.get("config", {}),
    }
    if data_dir:
        given["data_dir"] = data_dir
    cfg = speedrun_config("fashion-mnist", **given)
    with process_settings(cfg.threads), tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir, overwrite=True, progress=False)
        loader, model, optimizer = trainer.train_loader, trainer.model, trainer.optimizer
        total, side = loader.num_samples, int(loader.images.shape[-1])
        train_size = variant.get("train_size", side)
        sizes = epoch_sizes(total, epochs, keep if keep < 1 else None)
        steps = sum(math.ceil(size / cfg.batch_size) for size in sizes)
        schedule = LRSchedule(optimizer, cfg, steps, total_steps=steps)  # one cycle over all the steps
        pruning = LossPruning(total, keep, random_share, seed)
        generator = torch.Generator().manual_seed(1000 + seed)  # the train_size squares
        rows, pixels, start = [], 0.0, time.perf_counter()
        for epoch, size in enumerate(sizes):
            loader.subset = None if size == total else pruning.subset(epoch)
            order = loader.epoch_indices(epoch)  # the split's images in the order the loader yields them
            loader.set_epoch(epoch)
            model.train()
            position = 0
            for x, y in loader:
                index = order[position : position + len(y)]
                position += len(y)
                if train_size < side:
                    x = random_squares(x, train_size, generator)
                losses = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing, reduction="none")
                optimizer.zero_grad(set_to_none=True)
                losses.mean().backward()
                optimizer.step()
                schedule.step_batch()
                pruning.record(index, losses)
            pruning.end_epoch()
            pixels += size * (train_size / side) ** 2
            val = trainer.evaluate(trainer.val_loader).accuracy if epoch + 1 >= val_from else None
            rows.append({"epoch": epoch + 1, "cost_epochs": round(pixels / total, 3), "val_acc": val,
                         "seconds": round(time.perf_counter() - start, 2)})  # fmt: skip
        loader.subset = None
    return {"name": variant["name"], "seed": seed, "variant": variant, "device": device, "epochs": rows,
            "val_acc": rows[-1]["val_acc"], "cost_epochs": rows[-1]["cost_epochs"],
            "seconds": rows[-1]["seconds"]}  # fmt: skip


def main() -> None:
    """Run every variant not yet in ``--out`` and append its record there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        # fp32 as on a CPU: cuDNN would otherwise run convolutions in TF32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    done = set()
    if args.out.exists():
        done = {(r["name"], r["seed"]) for r in map(json.loads, args.out.read_text().splitlines())}
    for variant in json.loads(args.variants.read_text()):
        if (variant["name"], variant.get("seed", 0)) in done:
            continue
        record = run_variant(variant, args.device, args.threads, args.data_dir)
        with args.out.open("a") as out:
            out.write(json.dumps(record) + "\n")
        print(f"{record['name']:<28} seed {record['seed']}  val {100 * record['val_acc']:.2f}%  "
              f"cost {record['cost_epochs']:.2f}  {record['seconds']:.1f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
