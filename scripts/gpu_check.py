"""``make gpu-check``: exercise cnnlab's CUDA path on a machine with a GPU and write what it measured.

On CUDA, in order (each check records its error instead of stopping the others):

1. ``registry``: every registered model, forward and backward at batch 2 on its smallest input
   (one channel, 10 classes), in fp32 and channels_last;
2. ``epochs``: one epoch of Fashion-MNIST for each lecture net and resnet20-cifar, in fp32 and with
   ``--amp`` (bf16 autocast), each with channels_last on and off: training images/s and the test
   accuracy of the selected checkpoint;
3. ``ddp``: with 2 or more GPUs, one epoch of lecture-residual in that many DDP processes (NCCL,
   through ``cnnlab train --nproc``), against the one-GPU run of step 2;
4. ``compile``: one epoch of lecture-residual with ``torch.compile``.

The JSON (``--out``, default ``gpu_check.json``) holds the device, torch and CUDA versions and one
record per run. Exit status: 0 when every check passed, 1 when one failed (the JSON says which) or
when there is no CUDA GPU (nothing is run then: this script checks the GPU path only), 2 for a wrong
command line.

    python scripts/gpu_check.py [--out gpu_check.json] [--data-dir DIR] [--models ...] [--train-subset N]
    python scripts/gpu_check.py --plan      # list the checks without running them (works without a GPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

EPOCH_MODELS = ("lecture-simple", "lecture-inception", "lecture-residual", "resnet20-cifar")
PRECISIONS = ("fp32", "bf16")
LAYOUTS = (True, False)  # channels_last on, off
DDP_MODEL = COMPILE_MODEL = "lecture-residual"


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (exit 2 with one line on a wrong one)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON to write")
    parser.add_argument("--data-dir", help="folder holding fashion-mnist/ (default: cnnlab's search path)")
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(EPOCH_MODELS),
        help="models of the one-epoch runs (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=positive, default=1, help="epochs of each run (default: 1)")
    parser.add_argument("--train-subset", type=positive, help="train on this many images (a quicker check)")
    parser.add_argument("--registry-pattern", help="only the registry's models matching this pattern")
    parser.add_argument("--no-ddp", action="store_true", help="skip the DDP check")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile check")
    parser.add_argument(
        "--plan", action="store_true", help="print the checks this command would run, run none"
    )
    args = parser.parse_args(argv)
    from cnnlab.errors import UsageError
    from cnnlab.models import model_info

    for name in args.models:
        try:
            model_info(name)
        except UsageError as err:
            parser.error(str(err))
    return args


def plan(args: argparse.Namespace, gpus: int) -> list[str]:
    """One line per check the command runs."""
    lines = [
        f"registry: forward+backward of every model{' matching ' + args.registry_pattern if args.registry_pattern else ''}"
    ]
    lines += [
        f"epochs: {name}, {precision}, channels_last {'on' if layout else 'off'}"
        for name in args.models
        for precision in PRECISIONS
        for layout in LAYOUTS
    ]
    if not args.no_ddp:
        lines.append(
            f"ddp: {DDP_MODEL} in {gpus} NCCL processes"
            if gpus >= 2
            else "ddp: skipped (needs 2 or more GPUs)"
        )
    if not args.no_compile:
        lines.append(f"compile: {COMPILE_MODEL} with torch.compile")
    return lines


def attempt(record: dict[str, Any], fn, *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` into ``record`` (its results, or the error that stopped it) and print one line."""
    start = time.perf_counter()
    try:
        record.update(fn(*args))
        record["ok"] = True
    except Exception as err:  # noqa: BLE001 - a failed check is recorded; the others still run
        record.update(ok=False, error=f"{type(err).__name__}: {err}", trace=traceback.format_exc(limit=3))
    record["seconds"] = round(time.perf_counter() - start, 2)
    shown = {k: v for k, v in record.items() if k not in ("trace",)}
    print(json.dumps(shown), flush=True)
    return record


def registry_check(name: str) -> dict[str, Any]:
    """Forward and backward of ``name`` at batch 2 on its smallest input, on CUDA."""
    import torch
    from zoo_train_smoke import smallest_side

    from cnnlab.train import TrainConfig
    from cnnlab.train.engine import build_model_for_data

    side = max(smallest_side(name), 1)
    cfg = TrainConfig(model=name, pad_to=side)
    model = build_model_for_data(cfg, 10, (1, side, side)).cuda().to(memory_format=torch.channels_last)
    model.train()
    x = torch.randn(2, 1, side, side, device="cuda").contiguous(memory_format=torch.channels_last)
    logits = model(x)
    logits.float().logsumexp(1).sum().backward()
    torch.cuda.synchronize()
    return {"input": f"1x{side}x{side}", "logits": list(logits.shape)}


def epoch_run(cfg: Any, run_dir: Path, data: Any) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``: images/s of its epochs and the test accuracy."""
    from cnnlab.train import train

    result = train(cfg, run_dir, data=data, progress=False, overwrite=True)
    return {
        "train_images_per_s": round(
            sum(r["train_images_per_s"] for r in result.history) / len(result.history), 1
        ),
        "test_acc": result.test_acc,
    }


def ddp_run(args: argparse.Namespace, gpus: int, run_dir: Path) -> dict[str, Any]:
    """``cnnlab train --nproc GPUS --device cuda`` (NCCL): images/s and test accuracy from its files."""
    from cnnlab.train.distributed import launch
    from cnnlab.train.rundir import read_metrics

    argv = [
        "train", DDP_MODEL, "--nproc", str(gpus), "--device", "cuda", "--epochs", str(args.epochs),
        "--out", str(run_dir.parent), "--name", run_dir.name, "--overwrite", "--quiet",
        *(["--data-dir", args.data_dir] if args.data_dir else []),
        *(["--train-subset", str(args.train_subset)] if args.train_subset else []),
    ]  # fmt: skip
    status = launch(gpus, argv)  # the elastic launcher of `cnnlab train --nproc`, from this process
    if status:
        raise RuntimeError(f"cnnlab {' '.join(argv)} exited with status {status} (its error is above)")
    rows = read_metrics(run_dir / "metrics.csv")
    selected = next(r for r in rows if r.get("selected"))
    return {
        "processes": gpus,
        "train_images_per_s": round(sum(r["train_images_per_s"] for r in rows) / len(rows), 1),
        "test_acc": selected["test_acc"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the checks (or print the plan); the exit status of the module's docstring."""
    args = parse_args(argv)
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.plan:
        print("\n".join(plan(args, gpus)))
        return 0
    if not gpus:
        print(
            f"gpu-check: error: no CUDA GPU is visible (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); run it on a machine with an NVIDIA GPU and a CUDA build of torch",
            file=sys.stderr,
        )
        return 1
    from cnnlab.data import load_dataset
    from cnnlab.models import list_models
    from cnnlab.train import TrainConfig
    from cnnlab.train.engine import configure_process

    configure_process(None)  # this script is an entry point
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "gpus": gpus,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "registry": [],
        "epochs": [],
    }
    data = load_dataset("fashion-mnist", data_dir=args.data_dir)
    base = TrainConfig(epochs=args.epochs, train_subset=args.train_subset, device="cuda", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in list_models(args.registry_pattern):
            report["registry"].append(attempt({"model": name}, registry_check, name))
        for name in args.models:
            for precision in PRECISIONS:
                for layout in LAYOUTS:
                    cfg = dataclasses.replace(base, model=name, amp=precision, channels_last=layout)
                    record = {"model": name, "amp": precision, "channels_last": layout}
                    run_dir = Path(tmp) / f"{name}-{precision}-{int(layout)}"
                    report["epochs"].append(attempt(record, epoch_run, cfg, run_dir, data))
        if not args.no_ddp and gpus >= 2:
            report["ddp"] = attempt({"model": DDP_MODEL}, ddp_run, args, gpus, Path(tmp) / "ddp")
        if not args.no_compile:
            cfg = dataclasses.replace(base, model=COMPILE_MODEL, compile=True)
            report["compile"] = attempt({"model": COMPILE_MODEL}, epoch_run, cfg, Path(tmp) / "compile", data)
    failed = [
        r
        for r in [*report["registry"], *report["epochs"], report.get("ddp"), report.get("compile")]
        if r and not r["ok"]
    ]
    report["failed"] = len(failed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from cnnlab.fileio import atomic_write_text

    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}: {len(failed)} failed check(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
