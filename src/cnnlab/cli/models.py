"""``cnnlab models``: the registry as a table."""

from __future__ import annotations

import argparse
import json

import torch

from cnnlab.models import count_params, create_model, list_models, model_info


def model_rows(pattern: str | None = None) -> list[dict]:
    """One row per registered model: name, family, parameters (counted on the meta device), input, paper."""
    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        with torch.device("meta"):
            params = count_params(create_model(name))
        rows.append(
            {
                "name": name,
                "family": info.family,
                "params": params,
                "macs": info.macs,
                "input": "x".join(map(str, info.input_size)),
                "classes": info.num_classes,
                "paper": info.paper,
            }
        )
    return rows


def _run(args: argparse.Namespace) -> int:
    rows = model_rows(args.pattern)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<24} {'params':>13} {'MACs':>16} {'input':>11}  paper")
    for r in rows:
        macs = f"{r['macs']:,}" if r["macs"] is not None else "-"
        print(f"{r['name']:<24} {r['params']:>13,} {macs:>16} {r['input']:>11}  {r['paper']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``cnnlab models``."""
    p = subparsers.add_parser(
        "models",
        help="list the registered models with parameters, MACs, input size and paper",
        description="List every registered model: parameter count (at its default classes and channels), "
        "MACs of one image at its default input, default input size (CxHxW) and paper.",
    )
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_run)
