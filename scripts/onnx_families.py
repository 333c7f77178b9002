"""Export one model per family to ONNX at its default input size: seconds, and onnxruntime's largest
difference from PyTorch's logits (with the logits' scale). A developer script for the export figures
(needs the export extra: onnx, onnxruntime)."""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.export import export_onnx
from cnnlab.models import create_model, list_models, model_info


def first_per_family() -> list[str]:
    """The first registered model of each family, in registry order."""
    seen: dict[str, str] = {}
    for name in list_models():
        seen.setdefault(model_info(name).family, name)
    return list(seen.values())


def main(argv: list[str] | None = None) -> int:
    """Print one row per family and, with --json, write them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", help="default: the first model of each family")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    print(
        f"{'model':<24} {'family':<16} {'input':<10} {'export s':>8} {'max |diff|':>11} {'logit scale':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models or first_per_family():
            model = create_model(name).eval()
            start = time.perf_counter()
            result = export_onnx(model, Path(tmp) / f"{name}.onnx")
            wall = time.perf_counter() - start
            shape = "x".join(map(str, model_info(name).input_size))
            row = {
                "model": name, "family": model_info(name).family, "input": shape,
                "export_seconds": round(result.seconds, 2), "with_check_seconds": round(wall, 2),
                "max_abs_diff": result.max_abs_diff, "logit_scale": result.logit_scale,
            }  # fmt: skip
            rows.append(row)
            print(
                f"{name:<24} {row['family']:<16} {shape:<10} {result.seconds:>8.2f} "
                f"{result.max_abs_diff:>11.2e} {result.logit_scale:>11.3f}"
            )
    if args.json:
        args.json.write_text(
            json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
