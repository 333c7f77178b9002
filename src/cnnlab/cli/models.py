"""``cnnlab models``: the registry as a table."""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import sys
from typing import TYPE_CHECKING

from cnnlab.errors import CnnlabError, UsageError

if TYPE_CHECKING:
    import torch

_GLOB = "*?["


def traced_macs(model: torch.nn.Module, input_size: tuple[int, int, int]) -> int:
    """MACs of one image counted by :func:`cnnlab.analysis.summarize` on the meta device (its errors propagate)."""
    from cnnlab.analysis import summarize

    return summarize(model, input_size).totals.macs


def matching_models(pattern: str | None) -> list[str]:
    """Registry names matching ``pattern``; a name a family resolves (``wrn-34-2``) matches itself.

    Nothing matching is a :class:`UsageError` naming close matches: an empty table would look like an
    empty registry.
    """
    from cnnlab.models import list_models, model_info

    names = list_models(pattern)
    if names or not pattern:
        return names
    if not any(ch in pattern for ch in _GLOB):
        try:
            model_info(pattern)  # a family pattern (resnet74-cifar, densenet-bc-190-40) or a clear error
            return [pattern]
        except UsageError as err:
            if "unknown model" not in str(err):
                raise  # the family's own rule: "wrn-27-10: depth must be 6n+4"
    stem = pattern.strip(_GLOB)
    every = list_models()
    close = (
        difflib.get_close_matches(stem, every, n=3, cutoff=0.5)
        or [n for n in every if stem and fnmatch.fnmatch(n, f"*{stem}*")][:3]
    )
    hint = f"; close matches: {', '.join(close)}" if close else "; 'cnnlab models' lists them all"
    raise UsageError(f"no model matches {pattern!r}{hint}")


def model_rows(pattern: str | None = None) -> list[dict]:
    """One row per matching model: name, family, parameters and MACs (counted on the meta device), input, paper.

    A model whose forward cannot be traced keeps ``macs: None`` and gets ``macs_error``, its one-line reason.
    """
    import torch

    from cnnlab.models import count_params, create_model, model_info

    rows = []
    for name in matching_models(pattern):
        info = model_info(name)
        with torch.device("meta"):
            model = create_model(name)
        row = {
            "name": name,
            "family": info.family,
            "params": count_params(model),
            "macs": None,
            "input": "x".join(map(str, info.input_size)),
            "classes": info.num_classes,
            "paper": info.paper,
        }
        try:
            row["macs"] = traced_macs(model, info.input_size)
        except (CnnlabError, RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            # not hidden as "-": the table marks it and the command fails (exit 1) naming the reason
            reason = str(err).strip().splitlines()
            row["macs_error"] = f"{type(err).__name__}: {reason[0] if reason else ''}"
        rows.append(row)
    return rows


def _run(args: argparse.Namespace) -> int:
    rows = model_rows(args.pattern)
    failed = [r for r in rows if "macs_error" in r]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        width = max([24, *(len(r["name"]) for r in rows)])
        print(f"{'model':<{width}} {'params':>13} {'MACs':>16} {'input':>11}  paper")
        for r in rows:
            macs = f"{r['macs']:,}" if r["macs"] is not None else "trace failed"
            print(f"{r['name']:<{width}} {r['params']:>13,} {macs:>16} {r['input']:>11}  {r['paper']}")
    for r in failed:
        print(f"cnnlab: error: cannot trace {r['name']}: {r['macs_error']}", file=sys.stderr)
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``cnnlab models``."""
    p = subparsers.add_parser(
        "models",
        help="list the registered models with parameters, MACs, input size and paper",
        description="List every registered model: parameter count (at its default classes and channels), "
        "MACs of one image at its default input (multiply-accumulates of convolutions and linear layers, "
        "traced on the meta device as 'cnnlab summary' does), default input size (CxHxW) and paper. "
        "A pattern that matches nothing is an error (exit 2); a model that fails to trace is marked "
        "'trace failed' and named on stderr (exit 1).",
    )
    p.add_argument(
        "pattern", nargs="?", help="shell-style filter, e.g. 'resnet*', or a name such as wrn-34-2"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_run)
