"""Numeric precision of a run: fp32 by default, bf16 or fp16 autocast when asked for, and what the
CPU offers (bf16 instructions: AMX tiles or AVX512-BF16) for the line every run starts with."""

from __future__ import annotations

import contextlib

import torch


def cpu_bf16_instructions() -> str | None:
    """The CPU's fast bf16 path for oneDNN's convolutions and matmuls: ``"AMX"`` (AMX-BF16 tiles, Intel
    Sapphire Rapids and later), ``"AVX512-BF16"`` (bf16 dot products, e.g. AMD Zen 4, Intel Cooper
    Lake), or None, where bf16 autocast only converts and runs slower than fp32.

    Measured in benchmarks/train_throughput.py: on AMX about twice fp32; on an AVX512-BF16 AMD EPYC
    the speedrun net trains 1.7-1.9x faster (docs/training.md, "Speedrun").
    """
    if not torch.backends.mkldnn.is_available():
        return None
    for name, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return name
    return None


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
    if device.type == "cpu":
        path = cpu_bf16_instructions()
        if path is None:
            return "bf16 autocast (this CPU has no bf16 instructions, AMX or AVX512-BF16: slower than fp32)"
        return f"bf16 autocast ({path})"
    return "bf16 autocast"
