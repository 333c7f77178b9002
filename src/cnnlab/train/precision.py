"""Numeric precision of a run: fp32 by default, bf16 or fp16 autocast when asked for, and what the
CPU offers (AMX bf16 units) for the line every run starts with."""

from __future__ import annotations

import contextlib

import torch


def cpu_has_bf16_matrix_units() -> bool:
    """True on CPUs with AMX-BF16 tiles (Intel Sapphire Rapids and later), where oneDNN's bf16
    convolutions and matmuls run about twice as fast as fp32 (benchmarks/train_throughput.py)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe() and torch.backends.mkldnn.is_available())


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (``lscpu``'s "Model name"), or the platform's word."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def autocast(device: torch.device, precision: str | bool) -> contextlib.AbstractContextManager:
    """Autocast for ``precision`` (``bf16``/``fp16``: convolutions and matmuls in that type, losses in
    fp32); a no-op for ``fp32``. ``True``/``False`` mean bf16/fp32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, True: torch.bfloat16}.get(precision)
    if dtype is not None and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def precision_note(precision: str, device: torch.device) -> str:
    """How a run computes, for its start line: fp32, or which autocast and whether this device suits it."""
    if precision == "fp32":
        return "fp32"
    if precision == "fp16":
        return "fp16 autocast with gradient scaling" + (
            "" if device.type == "cuda" else " (meant for CUDA; slow here)"
        )
    if device.type == "cpu" and not cpu_has_bf16_matrix_units():
        return "bf16 autocast (this CPU has no bf16 matrix units: slower than fp32)"
    return "bf16 autocast"
