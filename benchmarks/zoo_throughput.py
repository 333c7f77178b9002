"""Training throughput of zoo networks: the cnnlab engine against the same model in a plain PyTorch loop.

Does the engine cost anything on a network big enough that the arithmetic dominates? For each model
(default: resnet18, densenet121, vgg11) at 3x64x64 input, in one process, interleaved round by round:

* ``plain``: the model from ``cnnlab.create_model`` trained the usual way: the whole batch already a
  float tensor in memory (no loader cost at all), ``model(x)``, ``F.cross_entropy``, ``backward``,
  ``torch.optim.SGD(model.parameters(), ...)`` with the update rule of the engine's default recipe
  (lr, momentum 0.9, Nesterov, weight decay 5e-4: the same arithmetic per step, as a user writes it),
  in the memory format and precision the engine uses (channels_last, fp32);
* ``cnnlab``: :class:`cnnlab.train.Trainer` with its default recipe at the same batch size, on
  Fashion-MNIST padded to 64x64 and repeated to 3 channels (``pad_to``, ``in_chans``), so it also pays
  for batching, padding and normalising its uint8 images.

Target: ``cnnlab`` >= 1.0x ``plain`` for each model (the median of the per-round ratios). The JSON
records the CPU model and its ISA flags.

    python benchmarks/zoo_throughput.py [--steps 8] [--rounds 3] [--batch-size 32] [--save]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import add_output_args, cpu_info, verdict, write_results

from cnnlab.data import load_dataset
from cnnlab.data.synthetic import write_synthetic_dataset
from cnnlab.errors import DataError
from cnnlab.models import create_model, model_info
from cnnlab.train import TrainConfig, Trainer

MODELS = ("resnet18", "densenet121", "vgg11")
SIDE = 64
TARGET = 1.0


def plain_loop(name: str, batch: int, steps: int) -> float:
    """Images/s of ``steps`` plain training steps on one in-memory batch (after 2 warm-up steps)."""
    torch.manual_seed(0)
    sized = {"img_size": SIDE} if "img_size" in model_info(name).options() else {}  # as the engine builds it
    model = create_model(name, num_classes=10, in_chans=3, **sized)
    model = model.to(memory_format=torch.channels_last).train()
    recipe = TrainConfig(model=name)  # the engine's default update rule, written the usual way
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
    x = torch.randn(batch, 3, SIDE, SIDE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - start)


def engine_loop(name: str, data, batch: int, steps: int, workdir: Path) -> float:
    """Images/s of the engine's training epoch over ``steps`` steps (after a 2-step warm-up epoch)."""
    cfg = TrainConfig(
        model=name, epochs=2, batch_size=batch, pad_to=SIDE, in_chans=3, max_steps_per_epoch=steps, seed=0
    )
    trainer = Trainer(cfg, workdir / name, data=data, progress=False, overwrite=True)
    trainer.steps_per_epoch = 2
    trainer.train_epoch(0)
    trainer.steps_per_epoch = steps
    return trainer.train_epoch(1)["train_images_per_s"]


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table and the verdicts, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per loop and round (default: 8)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL")
    parser.add_argument("--data-dir")
    add_output_args(parser)
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)  # as the engine's entry points do, for both loops
    try:
        data, source = load_dataset("fashion-mnist", data_dir=args.data_dir), "fashion-mnist"
    except DataError:
        folder = write_synthetic_dataset(Path(tempfile.mkdtemp()), "fashion-mnist", 2000, 200, seed=0)
        data, source = load_dataset("fashion-mnist", data_dir=folder, verify=False), "synthetic 28x28"
    rows = []
    print(f"{'model':<14}{'plain loop':>12}{'cnnlab':>12}{'cnnlab/plain':>14}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            plain, engine = [], []
            for _ in range(args.rounds):
                plain.append(plain_loop(name, args.batch_size, args.steps))
                engine.append(engine_loop(name, data, args.batch_size, args.steps, Path(tmp)))
            ratio = statistics.median(e / p for e, p in zip(engine, plain))
            rows.append(
                {
                    "model": name,
                    "plain_images_per_s": statistics.median(plain),
                    "engine_images_per_s": statistics.median(engine),
                    "ratio": ratio,
                    "rounds": {"plain": plain, "cnnlab": engine},
                }
            )
            print(
                f"{name:<14}{statistics.median(plain):>12.1f}{statistics.median(engine):>12.1f}{ratio:>13.2f}x",
                flush=True,
            )
    print(
        f"training images/s at 3x{SIDE}x{SIDE}, batch {args.batch_size}, median over rounds; cnnlab/plain: median "
        "per-round ratio\n  plain loop  the model on one in-memory float batch, channels_last, fp32 (no loader), "
        "torch.optim.SGD with the engine's default momentum, Nesterov and weight decay\n"
        "  cnnlab      the engine (default recipe, same batch) on 28x28 uint8 images padded to 64, 3 channels",
        flush=True,
    )
    verdicts = [
        verdict(
            f"{r['model']} 3x{SIDE}x{SIDE}, cnnlab vs a plain loop",
            f">= {TARGET:.2f}x",
            f"{r['ratio']:.2f}x",
            r["ratio"] >= TARGET,
        )  # fmt: skip
        for r in rows
    ]
    result = {
        "benchmark": "zoo_throughput",
        "data": source,
        "input": f"3x{SIDE}x{SIDE}",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        **cpu_info(),
        "rows": rows,
        "verdicts": verdicts,
        "all_meet_target": all(v["met"] for v in verdicts),
    }
    write_results("zoo_throughput", result, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
