"""Time to accuracy on Fashion-MNIST: ``cnnlab speedrun`` against the lectures' loop, in one run.

The yardstick, measured first in this process: the wall time of one epoch of lecture-residual in the
lectures' loop (:func:`train_throughput.lecture_loop`'s loop over all 60,000 training images: per-sample
PIL transforms, batch 64, SGD). Then:

* the speedrun, run as a user runs it: ``cnnlab speedrun fashion-mnist --nproc 2`` (net
  ``speedrun-fmnist``, recipe ``speedrun``, two data-parallel processes of one thread each) in a new
  process per seed, timed from the command's start to its exit (Python's start, data loading, model
  building, training, validation every epoch, checkpoints, the test, the table), with ``--seeds``
  seeds: target mean test accuracy >= 93.0% in a mean wall time <= 6x the yardstick;
* the same recipe over ``--long-epochs`` epochs with ``--long-seeds`` seeds: >= 94.0% in <= 25x;
* lecture-residual under cnnlab's default recipe (``cnnlab train lecture-residual``, in this
  process), for the curve.

Both speedrun marks are measured in fp32, every run's default, and again in bf16 autocast
(``--amp bf16``, opt-in: other numbers than fp32) on CPUs with bf16 instructions (AMX or
AVX512-BF16); each precision has its own verdicts, JSON and figure (``speedrun.json``,
``speedrun-bf16.json``).

Writes the JSON (every run's validation accuracy against wall time, the test accuracies, the verdicts,
the CPU) and ``speedrun-curve.png`` beside it: validation accuracy against wall time for every run,
with the two time limits and accuracy marks drawn in.

    python benchmarks/speedrun.py [--seeds 3] [--long-seeds 3] [--long-epochs 16] [--precisions fp32 bf16]
        [--nproc 2] [--model-option widths=8,32,64,128] [--save]

``--model-option`` measures a variant of the net (recorded in the JSON's recipe) against the same marks.

Needs Fashion-MNIST (``make data``); without it, it says so in one line and fails.
Takes about 3 x (6 + 14) yardstick epochs in fp32, 3 x (4 + 9) in bf16 (16 long epochs), and the
default run: ~25 minutes for fp32 and ~15 for bf16 on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import add_output_args, cpu_info, results_path, verdict, write_results
from train_throughput import lecture_loop

import cnnlab
from cnnlab.cli.common import add_model_option_arg, model_options
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.experiments.speedrun import speedrun_config
from cnnlab.train import TrainConfig, train
from cnnlab.train.engine import configure_process
from cnnlab.train.plots import plot_time_to_accuracy
from cnnlab.train.precision import cpu_bf16_instructions

#: the cnnlab that this benchmark imports, for the commands it runs
SRC = Path(cnnlab.__file__).resolve().parents[1]

#: (name, test accuracy %, time limit in yardstick epochs) of the issue's two marks
MARKS = (("speedrun", 93.0, 6.0), ("speedrun-long", 94.0, 25.0))
LONG_EPOCHS = 16


def speedrun_command(cfg: TrainConfig, out: Path, nproc: int) -> list[str]:
    """The ``cnnlab speedrun`` command line of one seed of ``cfg`` into ``out``, as ``nproc`` processes."""
    argv = [
        sys.executable, "-m", "cnnlab", "speedrun", cfg.data, "--out", str(out), "--seed", str(cfg.seed),
        "--epochs", str(cfg.epochs), "--nproc", str(nproc), "--quiet",
    ]  # fmt: skip
    if cfg.amp != "fp32":  # fp32 is every run's default, and has no flag
        argv += ["--amp", cfg.amp]
    if cfg.data_dir:
        argv += ["--data-dir", cfg.data_dir]
    if cfg.train_subset:
        argv += ["--train-subset", str(cfg.train_subset)]
    for key, value in cfg.model_options.items():
        shown = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
        argv += ["--model-option", f"{key}={shown}"]
    return argv


def timed_speedrun(cfg: TrainConfig, out: Path, nproc: int) -> dict[str, Any]:
    """One seed of ``cfg`` run as a user runs it (``cnnlab speedrun``, a new process), timed from the
    command's start to its exit: its wall time, test accuracy and curve (metrics.csv's ``elapsed_s``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(speedrun_command(cfg, out, nproc), capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        raise CnnlabError(f"cnnlab speedrun exited with {done.returncode}: {said}")
    (row,) = json.loads((out / "speedrun.json").read_text())["rows"]
    with (out / cfg.model / "metrics.csv").open(newline="") as metrics:
        history = [r for r in csv.DictReader(metrics) if r["val_acc"]]
    return {
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "processes": nproc,
        "wall_s": wall,
        "test_acc": row["test_acc"],
        "val_acc": row["val_acc"],
        "time_to_val_acc": row["time_to_val_acc"],
        "curve": [(float(r["elapsed_s"]), float(r["val_acc"])) for r in history],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the 93%% speedrun (default: 3)")
    parser.add_argument("--long-seeds", type=int, default=3, help="seeds of the 94%% run (default: 3)")
    parser.add_argument(
        "--long-epochs",
        type=int,
        default=LONG_EPOCHS,
        help=f"epochs of the 94%% run (default: {LONG_EPOCHS})",
    )
    parser.add_argument("--epochs", type=int, help="epochs of the 93%% speedrun (default: the recipe's)")
    parser.add_argument("--default-epochs", type=int, default=10, help="lecture-residual's run (default: 10)")
    parser.add_argument("--train-subset", type=int, help="train on this many images (smoke runs only)")
    parser.add_argument(
        "--yardstick-steps", type=int, help="time this many steps of the lectures' loop (default: one epoch)"
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=("fp32", "bf16"),
        default=["fp32", "bf16"],
        help="fp32 (the default of every run) and the opt-in bf16 autocast, each against the marks and written "
        "to its own JSON (speedrun.json, speedrun-bf16.json); bf16 only on CPUs with bf16 instructions "
        "(default: fp32 bf16)",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="data-parallel processes of each speedrun (cnnlab speedrun --nproc; default: 2, or 1 on a "
        "one-core machine: the recipe was measured with batch norm over each process's 128 images)",
    )
    parser.add_argument("--data-dir")
    add_model_option_arg(parser)
    add_output_args(parser)
    return parser.parse_args(argv)


def measure_precision(
    amp: str, short: TrainConfig, args: argparse.Namespace, yardstick: float, tmp: Path
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]], dict[str, Any]]:
    """The speedrun's seeds and the long run's seeds in precision ``amp``: the runs, the verdicts
    against :data:`MARKS` and their summary."""
    runs: dict[str, list[dict[str, Any]]] = {"speedrun": [], "speedrun-long": []}
    for name, seeds, epochs in (
        ("speedrun", args.seeds, short.epochs),
        ("speedrun-long", args.long_seeds, args.long_epochs),
    ):
        for seed in range(seeds):
            cfg = dataclasses.replace(short, seed=seed, epochs=epochs, amp=amp)
            run = timed_speedrun(cfg, tmp / f"{name}-{amp}-{seed}", args.nproc)
            runs[name].append(run)
            print(
                f"{name} ({amp}) seed {seed}: {epochs} epochs, {args.nproc} process{'es' * (args.nproc > 1)}, "
                f"{run['wall_s']:.0f} s "
                f"({run['wall_s'] / yardstick:.2f}x the yardstick), test {100 * run['test_acc']:.2f}%",
                flush=True,
            )
    verdicts, summary = [], {}
    for name, accuracy, limit in MARKS:
        done = runs[name]
        if not done:
            continue
        mean_acc = statistics.fmean(r["test_acc"] for r in done)
        mean_wall = statistics.fmean(r["wall_s"] for r in done)
        summary[name] = {
            "seeds": len(done),
            "test_acc_mean": mean_acc,
            "test_acc_std": statistics.stdev([r["test_acc"] for r in done]) if len(done) > 1 else None,
            "wall_s_mean": mean_wall,
            "yardsticks": mean_wall / yardstick,
        }
        verdicts.append(
            verdict(
                f"{name} ({amp}): mean test accuracy of {len(done)} seeds",
                f">= {accuracy:.1f}%",
                f"{100 * mean_acc:.2f}%",
                100 * mean_acc >= accuracy,
            )
        )
        verdicts.append(
            verdict(
                f"{name} ({amp}): mean wall time in lecture-residual epochs of the lectures' loop",
                f"<= {limit:.0f}x",
                f"{mean_wall / yardstick:.2f}x ({mean_wall:.0f} s / {yardstick:.1f} s)",
                mean_wall <= limit * yardstick,
            )
        )
    return runs, verdicts, summary


def main(argv: list[str] | None = None) -> int:
    """Measure the yardstick and the runs, print the table and the verdicts, write the JSON and the figure."""
    args = parse_args(argv)
    configure_process(None)  # the entry point sets the process-wide CPU settings, as `cnnlab` does
    try:
        data = load_dataset("fashion-mnist", data_dir=args.data_dir)
    except CnnlabError as err:  # time to accuracy means nothing on synthetic images
        print(f"speedrun benchmark: needs Fashion-MNIST (make data): {err}", file=sys.stderr)
        return 1
    bf16_path = cpu_bf16_instructions()
    precisions = list(dict.fromkeys(args.precisions))
    if "bf16" in precisions and bf16_path is None:
        precisions.remove("bf16")
        print("bf16: not measured (this CPU has no bf16 instructions, AMX or AVX512-BF16)", flush=True)
    # the yardstick: one whole epoch of the lectures' loop (all 60,000 images, minus its 3 warm-up steps)
    steps = args.yardstick_steps or len(data.train.labels) // 64 - 3
    images_per_s = lecture_loop("lecture-residual", data, steps)
    yardstick = len(data.train.labels) / images_per_s
    print(
        f"lectures' loop, lecture-residual: one epoch {yardstick:.1f} s ({images_per_s:.0f} images/s)",
        flush=True,
    )
    given = {"data_dir": args.data_dir} if args.data_dir else {}
    if args.train_subset:
        given["train_subset"] = args.train_subset
    variant = {"model_options": model_options(args)} if args.model_options else {}  # the speedrun net's alone
    short = speedrun_config(
        "fashion-mnist", **given, **variant, **({"epochs": args.epochs} if args.epochs else {})
    )
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in precisions:
            measured[amp] = measure_precision(amp, short, args, yardstick, Path(tmp))
        start = time.perf_counter()
        default = train(
            TrainConfig(model="lecture-residual", epochs=args.default_epochs, **given),
            Path(tmp) / "lecture-residual",
            progress=False,
        )
        default_run = {
            "wall_s": time.perf_counter() - start,
            "test_acc": default.test_acc,
            "epochs": len(default.history),
            "curve": [(r["elapsed_s"], r["val_acc"]) for r in default.history],
        }
    print(
        f"lecture-residual, default recipe: {default_run['epochs']} epochs, {default_run['wall_s']:.0f} s, "
        f"test {100 * default_run['test_acc']:.2f}%",
        flush=True,
    )
    for amp, (runs, verdicts, summary) in measured.items():
        # fp32 (every CPU's default) writes speedrun.json; the opt-in bf16 runs speedrun-bf16.json
        name = "speedrun" if amp == "fp32" else f"speedrun-{amp}"
        path = results_path(name, args.save, args.results_dir)
        figure = path.with_name(path.stem.replace(name, f"{name}-curve", 1) + ".png")
        series = {
            f"{run} seed {r['seed']} ({r['epochs']} ep)": [(t, 100 * a) for t, a in r["curve"]]
            for run, done in runs.items()
            for r in done
        }
        series["lecture-residual, default recipe (fp32)"] = [(t, 100 * a) for t, a in default_run["curve"]]
        plot_time_to_accuracy(
            series,
            figure,
            marks=[accuracy for _, accuracy, _ in MARKS],
            title=f"Fashion-MNIST, speedrun in {amp}: validation accuracy against wall time "
            f"(yardstick epoch {yardstick:.0f} s)",
            time_limits=[limit * yardstick for _, _, limit in MARKS],
        )
        result = {
            "benchmark": "speedrun",
            "data": "fashion-mnist",
            "precision": amp,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            **cpu_info(),
            "bf16_instructions": bf16_path,
            "yardstick": {"model": "lecture-residual", "loop": "lectures'", "epoch_s": yardstick},
            "processes": args.nproc,
            "recipe": dataclasses.replace(short, amp=amp).to_dict(),
            "long_epochs": args.long_epochs,
            "runs": runs,
            "summary": summary,
            "default_recipe": {"model": "lecture-residual", **default_run},
            "figure": figure.name,
            "verdicts": verdicts,
        }
        write_results(name, result, args, path)
        print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
