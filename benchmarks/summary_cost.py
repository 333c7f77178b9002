"""What a full summary costs beside one plain forward pass, measured in the same run.

For each network (ResNet-152, ResNet-50 and a lecture net, when registered), at its default input and
batch 1: the median time of a plain CPU forward pass (eval, no_grad, real arithmetic), of
``summarize`` on the meta device (the default: shapes only) and of ``summarize(device="cpu")`` (the
same trace with real arithmetic). Ratios are against the plain forward of the same run; nothing is
compared across runs. One thread, so that a busy machine disturbs both sides alike.

Target: on the large networks (the ResNets) the meta summary costs less than one plain forward
pass (ratio < 1.0); for a tiny network its fixed bookkeeping dominates, which is not a target. The
verdict is printed and stored. Writes a new timestamped JSON under benchmarks/results/, or with
``--save`` the committed benchmarks/results/summary_cost.json.

    python benchmarks/summary_cost.py [--save]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from _common import add_output_args, cpu_info, verdict, write_results

from cnnlab.analysis import summarize
from cnnlab.models import create_model, list_models, model_info

CANDIDATES = ("resnet152", "resnet50", "lecture-inception")
TARGETS = {"resnet152": 1.0, "resnet50": 1.0}  # meta summary / forward pass below this


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str) -> dict:
    """Forward, meta summary and CPU summary times of ``name`` at its default input."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    input_size = model_info(name).input_size
    x = torch.randn(1, *input_size)
    repeats = 3 if name.startswith("resnet") else 20

    def forward() -> None:
        with torch.no_grad():
            model(x)

    plain = median_time(forward, repeats)
    meta = median_time(lambda: summarize(model, input_size), repeats)
    cpu = median_time(lambda: summarize(model, input_size, device="cpu"), repeats)
    return {
        "model": name,
        "input": list(input_size),
        "forward_s": plain,
        "summary_meta_s": meta,
        "summary_cpu_s": cpu,
        "ratio_meta": meta / plain,
        "ratio_cpu": cpu / plain,
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure every candidate that is registered; print the table and the verdicts; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_output_args(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    available = set(list_models())
    rows = [measure(name) for name in CANDIDATES if name in available]
    missing = [name for name in CANDIDATES if name not in available]
    print(
        f"{'model':<18} {'forward':>9} {'summary(meta)':>14} {'ratio':>7} {'summary(cpu)':>13} {'ratio':>7}"
    )
    for r in rows:
        print(
            f"{r['model']:<18} {r['forward_s'] * 1e3:>7.1f}ms {r['summary_meta_s'] * 1e3:>12.1f}ms "
            f"{r['ratio_meta']:>6.2f}x {r['summary_cpu_s'] * 1e3:>11.1f}ms {r['ratio_cpu']:>6.2f}x"
        )
    if missing:
        print(f"not registered (skipped): {', '.join(missing)}")
    verdicts = [
        verdict(
            f"{r['model']}, meta summary vs one forward pass",
            f"< {TARGETS[r['model']]:.2f}x",
            f"{r['ratio_meta']:.2f}x",
            r["ratio_meta"] < TARGETS[r["model"]],
        )
        for r in rows
        if r["model"] in TARGETS
    ]
    write_results(
        "summary_cost",
        {
            "benchmark": "summary_cost",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            **cpu_info(),
            "rows": rows,
            "skipped": missing,
            "verdicts": verdicts,
            "all_meet_target": all(v["met"] for v in verdicts),
        },
        args,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
