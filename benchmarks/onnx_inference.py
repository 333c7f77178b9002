"""Inference images/s of an exported ONNX file under onnxruntime against the same model in PyTorch, CPU.

For each network (ResNet-50 at 224x224, lecture-inception at 28x28) and batch size (1 and 32): the model
is exported with ``cnnlab.export.export_onnx`` (dynamic batch), then each round times one PyTorch
forward pass (eval, no_grad, fp32) and one onnxruntime run on the same batch, one after the other, so a
busy machine disturbs both alike; the ratio is the median of the per-round ratios. Both use the same
number of threads (``--threads``, default 1). The outputs are checked to agree (max |difference|).

Target: onnxruntime at least as fast as PyTorch (ratio >= 1.00x); a measurement, printed and stored.
Writes a new timestamped JSON under benchmarks/results/, or with ``--save`` the committed
benchmarks/results/onnx_inference.json.

    python benchmarks/onnx_inference.py [--save] [--threads N] [--rounds N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import add_output_args, cpu_info, verdict, write_results

from cnnlab.export import export_onnx
from cnnlab.models import create_model, model_info
from cnnlab.weights import card_for_model

MODELS = ("resnet50", "lecture-inception")
BATCHES = (1, 32)
TARGET = 1.0  # onnxruntime images/s / PyTorch images/s at least this


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model and batch (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both runtimes (default: 1)")
    add_output_args(parser)
    return parser.parse_args(argv)


def measure(name: str, batches: list[int], rounds: int, threads: int, folder: Path) -> list[dict]:
    """Rows of ``name``: images/s of PyTorch and onnxruntime per batch size, and their ratio."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model(name).eval()
    size = model_info(name).input_size
    exported = export_onnx(model, folder / f"{name}.onnx", card_for_model(model, size), dynamic_batch=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(exported.path), options, providers=["CPUExecutionProvider"])
    rows = []
    for batch in batches:
        x = torch.randn(batch, *size)
        feed = {"input": x.numpy()}
        with torch.no_grad():
            want = model(x)  # warm-up of both, and the agreement check
        diff = float((torch.from_numpy(session.run(None, feed)[0]) - want).abs().max())
        torch_s, ort_s = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            with torch.no_grad():
                model(x)
            torch_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            session.run(None, feed)
            ort_s.append(time.perf_counter() - start)
        ratio = statistics.median(t / o for t, o in zip(torch_s, ort_s))
        rows.append(
            {
                "model": name,
                "input": list(size),
                "batch": batch,
                "torch_images_per_s": batch / statistics.median(torch_s),
                "onnxruntime_images_per_s": batch / statistics.median(ort_s),
                "ratio": ratio,
                "max_abs_diff": diff,
                "export_s": exported.seconds,
                "rounds": rounds,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure each model and batch size; print the table and the verdicts; write the JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        rows = [
            r
            for name in args.models
            for r in measure(name, args.batches, args.rounds, args.threads, Path(folder))
        ]
    print(
        f"{'model':<18} {'batch':>5} {'PyTorch img/s':>14} {'onnxruntime img/s':>18} {'ratio':>7} {'max |diff|':>11}"
    )
    for r in rows:
        print(
            f"{r['model']:<18} {r['batch']:>5} {r['torch_images_per_s']:>14.1f} "
            f"{r['onnxruntime_images_per_s']:>18.1f} {r['ratio']:>6.2f}x {r['max_abs_diff']:>11.2e}"
        )
    verdicts = [
        verdict(
            f"{r['model']} batch {r['batch']}, onnxruntime vs PyTorch images/s",
            f">= {TARGET:.2f}x",
            f"{r['ratio']:.2f}x",
            r["ratio"] >= TARGET,
        )
        for r in rows
    ]
    import onnxruntime

    write_results(
        "onnx_inference",
        {
            "benchmark": "onnx_inference",
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": args.threads,
            "machine": platform.machine(),
            **cpu_info(),
            "rows": rows,
            "verdicts": verdicts,
            "all_meet_target": all(v["met"] for v in verdicts),
        },
        args,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
