"""Training throughput on the CPU's two cores, three ways: threads, CPU shards, DDP processes.

Each lecture net trains the same steps at batch 128, fp32, constant learning rate 0.01 (a short run
of the default one-cycle schedule can diverge; the rate does not change the speed) with

* ``threads``: one process, PyTorch's operation-level threading over 2 threads (``--threads 2``);
* ``shards``:  one process, each batch split into 2 shards trained side by side (``--cpu-shards 2``);
* ``ddp``:     2 data-parallel processes of 1 thread each (``--nproc 2 --threads 1``, gloo over loopback).

Each is a ``cnnlab train`` command of its own (so each starts from a fresh process, as a user's does),
run in interleaved rounds; the figure is the median over rounds of the run's own training
images/s (``train_images_per_s`` in metrics.csv: the training loop only, not start-up or evaluation).
The verdict compares DDP with the shards (the two ways to keep both cores busy with whole
forward/backward passes): docs/training.md says which mechanism the figures justify.

    python benchmarks/ddp_throughput.py [--steps 80] [--rounds 2] [--models ...] [--data-dir DIR] [--save]

Run it with ``OMP_WAIT_POLICY=PASSIVE`` on a shared machine (idle OpenMP threads then sleep instead of
spinning on cores other processes need). Needs Fashion-MNIST (``cnnlab data check fashion-mnist``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import add_output_args, cpu_info, verdict, write_results

from cnnlab.train.rundir import read_metrics

MODELS = ("lecture-simple", "lecture-inception", "lecture-residual")
#: mechanism -> the flags of `cnnlab train` that select it
MECHANISMS = {
    "threads": ["--threads", "2"],
    "shards": ["--threads", "2", "--cpu-shards", "2"],
    "ddp": ["--nproc", "2", "--threads", "1"],
}
SRC = Path(__file__).resolve().parents[1] / "src"


def run_once(model: str, mechanism: str, steps: int, workdir: Path, data_dir: str | None) -> float:
    """Train ``model`` for ``steps`` steps with ``mechanism``; its training images/s."""
    cmd = [
        sys.executable, "-m", "cnnlab", "train", model, "--epochs", "1", "--max-steps-per-epoch", str(steps),
        "--val-fraction", "0", "--schedule", "constant", "--lr", "0.01", "--device", "cpu", "--out", str(workdir), "--name", f"{model}-{mechanism}",
        "--overwrite", "--quiet", *MECHANISMS[mechanism], *(["--data-dir", data_dir] if data_dir else []),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    (row,) = read_metrics(workdir / f"{model}-{mechanism}" / "metrics.csv")
    return float(row["train_images_per_s"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=80, help="training steps per run (default: 80)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default: 2)")
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), help="models (default: the lecture nets)"
    )
    parser.add_argument("--data-dir", help="folder holding fashion-mnist/ (default: cnnlab's search path)")
    add_output_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table and the verdicts, write the JSON."""
    args = parse_args(argv)
    figures: dict[str, dict[str, list[float]]] = {m: {k: [] for k in MECHANISMS} for m in args.models}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for model in args.models:
                for mechanism in MECHANISMS:
                    figures[model][mechanism].append(
                        run_once(model, mechanism, args.steps, Path(tmp), args.data_dir)
                    )
    rows, verdicts = [], []
    print(
        f"\n{'model':<18} {'1 proc x 2 threads':>19} {'cpu shards 2':>13} {'2 DDP x 1 thread':>17} {'ddp/shards':>11}"
    )
    for model in args.models:
        med = {k: statistics.median(v) for k, v in figures[model].items()}
        ratio = med["ddp"] / med["shards"]
        rows.append({"model": model, **{f"{k}_images_per_s": round(v, 1) for k, v in med.items()},
                     "ddp_vs_shards": round(ratio, 3), "ddp_vs_threads": round(med["ddp"] / med["threads"], 3),
                     "shards_vs_threads": round(med["shards"] / med["threads"], 3), "runs": figures[model]})  # fmt: skip
        print(
            f"{model:<18} {med['threads']:>19.0f} {med['shards']:>13.0f} {med['ddp']:>17.0f} {ratio:>10.2f}x"
        )
        verdicts.append(
            verdict(f"{model}, 2 DDP processes vs cpu shards 2", ">= 1.00x", f"{ratio:.2f}x", ratio >= 1.0)
        )
    result = {
        "benchmark": "ddp_throughput",
        "steps": args.steps,
        "rounds": args.rounds,
        "batch_size": 128,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        **cpu_info(),
        "rows": rows,
        "verdicts": verdicts,
    }
    write_results("ddp_throughput", result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
