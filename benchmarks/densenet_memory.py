"""Peak memory of one DenseNet training step, plain vs ``memory_efficient=True`` (Pleiss et al. 2017).

For each case (same model, same weights seed, same batch), every variant runs in its own fresh
subprocess, so one variant's high-water mark cannot hide the other's. The child builds the model
and the batch, records its resident set size (RSS, /proc/self/statm), runs one training step
(forward, cross-entropy, backward, SGD update) and reads the peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``). ``step peak`` = peak RSS - RSS before the step:
the activations kept for backward, the gradients and the workspace of the step. Large blocks must
go back to the OS when freed for RSS to follow live memory, so the child runs with
``MALLOC_MMAP_THRESHOLD_=65536`` (glibc then serves every block above 64 KiB with mmap and
returns it on free, instead of keeping it in the heap).

As a second, allocator-independent measure the child also sums the bytes autograd saves for
backward (distinct storages seen by ``torch.autograd.graph.saved_tensors_hooks``, weights and
input excluded): what the concatenations and their BN-ReLU outputs cost in the plain net and what
checkpointing removes. Inside a checkpointed region these hooks are the checkpoint's own, so the
efficient variant's figure leaves out the region inputs the checkpoint keeps (each layer's k new
channels, one block output's worth); the RSS figure includes them.
Ratios are efficient / plain within the same run; the time ratio shows the recomputation's cost.
One thread.

Target, per case: the memory-efficient variant's step peak is below the plain one's (ratio < 1.0),
with the same loss and a valid measurement; the verdict is printed and stored. Writes a new
timestamped JSON under benchmarks/results/, or with ``--save`` the committed
benchmarks/results/densenet_memory.json.

    python benchmarks/densenet_memory.py [--quick] [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from _common import add_output_args, cpu_info, verdict, write_results

TARGET = 1.0  # memory-efficient / plain step peak below this
# (model, batch, image side): a CIFAR training batch and an ImageNet-size one
CASES = (("densenet-bc-100-12", 64, 32), ("densenet121", 8, 224))
QUICK_CASES = (("densenet-bc-100-12", 16, 32),)
VARIANTS = ("plain", "memory_efficient")


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """High-water mark of this process's RSS (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(model_name: str, batch: int, size: int, variant: str) -> dict:
    """One training step of ``model_name`` in this (fresh) process; memory figures as a dict."""
    import torch
    from torch import nn

    from cnnlab.models import create_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model(model_name, memory_efficient=variant == "memory_efficient").train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, model.head.fc.out_features, (batch,))
    saved: dict[int, int] = {}
    # weights and the input batch exist before the step: only tensors the step creates count
    existing = {t.untyped_storage().data_ptr() for t in [x, *model.parameters(), *model.buffers()]}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in existing:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    rss_before = current_rss_bytes()
    peak_before = peak_rss_bytes()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    peak_after = peak_rss_bytes()
    return {
        "rss_before_step": rss_before,
        "peak_before_step": peak_before,
        "peak_after_step": peak_after,
        # valid only if the step set a new high-water mark (checked below)
        "step_peak": peak_after - rss_before,
        "new_high_water": peak_after > peak_before,
        "saved_for_backward": sum(saved.values()),
        "step_s": seconds,
        "loss": loss.item(),
    }


def run_child(model_name: str, batch: int, size: int, variant: str) -> dict:
    """Run :func:`child` in a fresh interpreter and return its JSON."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", model_name, str(batch), str(size), variant],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Measure every case, print the table and the verdicts, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small case (a smoke run)")
    parser.add_argument(
        "--child", nargs=4, metavar=("MODEL", "BATCH", "SIZE", "VARIANT"), help=argparse.SUPPRESS
    )
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.child:
        name, batch, size, variant = args.child
        print(json.dumps(child(name, int(batch), int(size), variant)))
        return 0

    rows = []
    mib = 2**20
    header = (
        f"{'model':<19} {'batch':>5} {'input':>7} {'variant':<17} {'step peak':>10} "
        f"{'saved f. bwd':>12} {'step':>7}"
    )
    print(header)
    for name, batch, size in QUICK_CASES if args.quick else CASES:
        result = {v: run_child(name, batch, size, v) for v in VARIANTS}
        for v in VARIANTS:
            r = result[v]
            print(
                f"{name:<19} {batch:>5} {size:>3}x{size:<3} {v:<17} {r['step_peak'] / mib:>7.1f}MiB "
                f"{r['saved_for_backward'] / mib:>9.1f}MiB {r['step_s']:>6.2f}s"
                + ("" if r["new_high_water"] else "  (no new high-water mark: step peak not valid)")
            )
        plain, efficient = result["plain"], result["memory_efficient"]
        row = {
            "model": name,
            "batch": batch,
            "input": [3, size, size],
            "plain": plain,
            "memory_efficient": efficient,
            "ratio_step_peak": efficient["step_peak"] / plain["step_peak"],
            "ratio_saved_for_backward": efficient["saved_for_backward"] / plain["saved_for_backward"],
            "ratio_step_time": efficient["step_s"] / plain["step_s"],
            "same_loss": abs(efficient["loss"] - plain["loss"]) < 1e-5,
            "valid": plain["new_high_water"] and efficient["new_high_water"],
        }
        rows.append(row)
        print(
            f"  -> memory-efficient / plain: step peak {row['ratio_step_peak']:.2f}x, saved for backward "
            f"{row['ratio_saved_for_backward']:.2f}x, step time {row['ratio_step_time']:.2f}x, "
            f"same loss: {row['same_loss']}"
        )
    verdicts = [
        verdict(
            f"{r['model']} batch {r['batch']}, memory-efficient / plain step peak",
            f"< {TARGET:.2f}x with the same loss",
            f"{r['ratio_step_peak']:.2f}x with {'the same' if r['same_loss'] else 'a different'} loss"
            + ("" if r["valid"] else " (not valid: no new high-water mark)"),
            r["ratio_step_peak"] < TARGET and r["same_loss"] and r["valid"],
        )
        for r in rows
    ]
    write_results(
        "densenet_memory",
        {
            "benchmark": "densenet_memory",
            "method": "peak RSS (ru_maxrss) - RSS before the step, fresh subprocess per variant, "
            "MALLOC_MMAP_THRESHOLD_=65536; plus bytes saved for backward (saved_tensors_hooks)",
            "threads": 1,
            "machine": platform.machine(),
            **cpu_info(),
            "python": platform.python_version(),
            "rows": rows,
            "verdicts": verdicts,
            "all_meet_target": all(v["met"] for v in verdicts),
        },
        args,
    )
    return 0 if all(r["valid"] and r["same_loss"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
