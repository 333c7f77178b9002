"""Train every registered model briefly on Fashion-MNIST: seconds per step and images/s (not part of CI).

Each model is built for 1-channel input and 10 classes and fed Fashion-MNIST zero-padded (centred)
to the model's smallest valid input, or 28x28 where that is enough. It trains 20 steps at batch
16 with the default recipe and reports seconds per step and images/s. Models designed for 32x32
input (CIFAR nets; the lecture nets) also train one full epoch (batch 128) and report test accuracy, unless the 20-step timing
projects the epoch past ``--epoch-budget`` seconds; those are listed with the projection.

    python scripts/zoo_train_smoke.py [--pattern 'resnet*'] [--epoch-budget 600] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.data import load_dataset
from cnnlab.models import create_model, list_models, model_info, smallest_input_size
from cnnlab.models.layers import meta_call
from cnnlab.train import TrainConfig, Trainer


def smallest_side(name: str) -> int:
    """Smallest square input side of ``name`` with one input channel (meta device)."""
    with torch.device("meta"):
        model = create_model(name, in_chans=1, num_classes=10)
    return smallest_input_size(meta_call(model, model.forward_features), 1) or 28


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pattern", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epoch-budget", type=float, default=600.0)
    parser.add_argument("--out", default="benchmarks/results/zoo_train_smoke.json")
    args = parser.parse_args()
    data = load_dataset("fashion-mnist")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in list_models(args.pattern):
            side = max(28, smallest_side(name))
            pad = side if side > 28 else None
            cfg = TrainConfig(
                model=name, epochs=1, batch_size=16, max_steps_per_epoch=args.steps, pad_to=pad, seed=0
            )
            row = {
                "model": name,
                "input": f"1x{side}x{side}",
                "paper_input": "x".join(map(str, model_info(name).input_size)),
            }
            try:
                trainer = Trainer(cfg, Path(tmp) / name, data=data, progress=False, overwrite=True)
                start = time.perf_counter()
                stats = trainer.train_epoch(0)
                seconds = time.perf_counter() - start
                row.update(
                    seconds_per_step=seconds / args.steps,
                    images_per_s=stats["train_images_per_s"],
                    loss=stats["train_loss"],
                )
                if model_info(name).input_size[1] <= 32:  # nets designed for 32x32 (CIFAR) or smaller
                    projected = len(data.train) / (
                        stats["train_images_per_s"] * 1.5
                    )  # batch 128 runs ~1.5x faster
                    row["projected_epoch_s"] = projected
                    if projected <= args.epoch_budget:
                        full = TrainConfig(model=name, epochs=1, batch_size=128, pad_to=pad, seed=0)
                        start = time.perf_counter()
                        result = Trainer(
                            full, Path(tmp) / f"{name}-epoch", data=data, progress=False, overwrite=True
                        ).fit()
                        row.update(epoch_s=time.perf_counter() - start, test_acc=result.test_acc)
            except Exception as err:  # a smoke script reports every failure and goes on
                row["error"] = f"{type(err).__name__}: {err}"
            rows.append(row)
            acc = f"  1-epoch test acc {100 * row['test_acc']:.2f}%" if "test_acc" in row else ""
            status = (
                row.get("error")
                or f"{row['seconds_per_step']:.3f} s/step {row['images_per_s']:8.1f} img/s{acc}"
            )
            print(f"{name:<28} {row['input']:>10}  {status}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"steps": args.steps, "batch_size": 16, "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
