"""``cnnlab models``: the registry as a table."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    import torch


def traced_macs(model: torch.nn.Module, input_size: tuple[int, int, int]) -> int | None:
    """MACs of one image counted by :func:`cnnlab.analysis.summarize` on the meta device; ``None`` if it fails."""
    from cnnlab.analysis import summarize

    try:
        return summarize(model, input_size).totals.macs
    except (CnnlabError, RuntimeError, NotImplementedError, TypeError, ValueError):
        return None


def model_rows(pattern: str | None = None) -> list[dict]:
    """One row per registered model: name, family, parameters and MACs (counted on the meta device), input, paper."""
    import torch

    from cnnlab.models import count_params, create_model, list_models, model_info

    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        with torch.device("meta"):
            model = create_model(name)
        rows.append(
            {
                "name": name,
                "family": info.family,
                "params": count_params(model),
                "macs": traced_macs(model, info.input_size),
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
    width = max([24, *(len(r["name"]) for r in rows)])
    print(f"{'model':<{width}} {'params':>13} {'MACs':>16} {'input':>11}  paper")
    for r in rows:
        macs = f"{r['macs']:,}" if r["macs"] is not None else "-"
        print(f"{r['name']:<{width}} {r['params']:>13,} {macs:>16} {r['input']:>11}  {r['paper']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``cnnlab models``."""
    p = subparsers.add_parser(
        "models",
        help="list the registered models with parameters, MACs, input size and paper",
        description="List every registered model: parameter count (at its default classes and channels), "
        "MACs of one image at its default input (multiply-accumulates of convolutions and linear layers, "
        "traced on the meta device as 'cnnlab summary' does; '-' where tracing fails), default input size "
        "(CxHxW) and paper.",
    )
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_run)
