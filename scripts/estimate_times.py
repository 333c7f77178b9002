"""How long the README's long examples take on this machine: a few steps timed, then extrapolated.

For each example, every net it trains runs a few training steps (after a warm-up) and one
evaluation pass with the engine's settings (fp32, no batch shards, a 10% validation split, as
given below), and the script multiplies out: epochs x (steps x seconds per step + evaluated images x
seconds per image). It is an estimate: it leaves out start-up, checkpoints and plots (about a second
per epoch), and a busy machine makes it longer. It takes a few minutes.

    python scripts/estimate_times.py [--steps 10] [--only degradation]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.data import load_dataset
from cnnlab.experiments.degradation import recipe_config
from cnnlab.train import TrainConfig, Trainer

VAL_FRACTION = 0.1
#: example name -> (command, nets, epochs, training images (None: the whole training split), recipe)
EXAMPLES = {
    "demo": (
        "cnnlab compare lecture-simple lecture-inception lecture-residual --epochs 10  (make demo)",
        ("lecture-simple", "lecture-inception", "lecture-residual"),
        10,
        None,
        TrainConfig(),
    ),
    "train": (
        "cnnlab train lecture-residual --epochs 10",
        ("lecture-residual",),
        10,
        None,
        TrainConfig(),
    ),
    "degradation": (
        "cnnlab experiment degradation --depths 20 56 --epochs 5 --train-subset 10000",
        ("plain20-cifar", "resnet20-cifar", "plain56-cifar", "resnet56-cifar"),
        5,
        10000,
        recipe_config(),
    ),
}


def cpu_name() -> str:
    """The CPU's model name (lscpu's "Model name"), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_net(name: str, base: TrainConfig, data, steps: int, workdir: Path) -> dict[str, float]:
    """Seconds per training step and per evaluated image (wall and CPU), images trained and evaluated."""
    cfg = dataclasses.replace(
        base, model=name, epochs=1, cpu_shards=1, amp="fp32", val_fraction=VAL_FRACTION, warmup_epochs=0.0
    )
    trainer = Trainer(cfg, workdir / name, data=data, progress=False, overwrite=True)
    trainer.steps_per_epoch = 3
    trainer.train_epoch(0)  # warm-up: allocator, kernels
    trainer.steps_per_epoch = steps
    step_wall, step_cpu = timed(lambda: trainer.train_epoch(0))
    eval_wall, eval_cpu = timed(lambda: trainer.evaluate(trainer.val_loader))
    n_val = len(data.val.labels)
    return {
        "step_wall": step_wall / steps,
        "step_cpu": step_cpu / steps,
        "image_wall": eval_wall / n_val,
        "image_cpu": eval_cpu / n_val,
        "train": len(data.train.labels),
        "evaluated": n_val + len(data.test.labels),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per net (default: 10)")
    parser.add_argument("--only", choices=sorted(EXAMPLES), action="append", help="one example (repeatable)")
    parser.add_argument("--data-dir")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", data_dir=args.data_dir, val_fraction=VAL_FRACTION, seed=0)
    threads = torch.get_num_threads()
    print(f"CPU: {cpu_name()}, {threads} threads, torch {torch.__version__}, fp32, no shards")
    if threads == 1:
        print("one thread: the CPU-time column is what an idle core would take, however busy the machine is")
    measured: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for example in args.only or list(EXAMPLES):
            command, nets, epochs, subset, base = EXAMPLES[example]
            wall = cpu = 0.0
            print(f"\n{command}")
            for name in nets:
                key = (name, base.schedule)
                if key not in measured:
                    measured[key] = time_net(name, base, data, args.steps, Path(tmp))
                m = measured[key]
                steps = math.ceil(min(subset or m["train"], m["train"]) / base.batch_size)
                epoch_wall = steps * m["step_wall"] + m["evaluated"] * m["image_wall"]
                epoch_cpu = steps * m["step_cpu"] + m["evaluated"] * m["image_cpu"]
                wall, cpu = wall + epochs * epoch_wall, cpu + epochs * epoch_cpu
                print(
                    f"  {name:<18} {steps} steps of {m['step_wall'] * 1e3:.1f} ms (CPU {m['step_cpu'] * 1e3:.1f} ms)"
                    f" + {m['evaluated']} evaluated images: {epoch_wall:.1f} s/epoch (CPU {epoch_cpu:.1f} s)"
                )
            print(f"  estimated total: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU ({epochs} epochs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
