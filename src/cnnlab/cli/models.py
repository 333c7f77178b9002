"""``cnnlab models``: the registry as a table."""

from __future__ import annotations

import argparse
import json
import sys


def _run(args: argparse.Namespace) -> int:
    from cnnlab.analysis.zoo import model_rows  # torch-free for built-in models: the table is data

    rows = model_rows(args.pattern, trace=args.trace)
    failed = [r for r in rows if "macs_error" in r]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        width = max([24, *(len(r["name"]) for r in rows)])
        print(f"{'model':<{width}} {'params':>13} {'MACs':>16} {'input':>11} {'smallest':>8}  paper")
        for r in rows:
            macs = f"{r['macs']:,}" if r["macs"] is not None else "trace failed"
            side = f"{r['min_side']}x{r['min_side']}" if r.get("min_side") else "-"
            print(
                f"{r['name']:<{width}} {r['params']:>13,} {macs:>16} {r['input']:>11} {side:>8}  {r['paper']}"
            )
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
        "traced on the meta device as 'cnnlab summary' does; the built-in models' counts are stored, "
        "--trace counts them again), default input size (CxHxW), the smallest square input its features accept "
        "(pad smaller images to it, e.g. --pad-to) and paper. "
        "A pattern that matches nothing is an error (exit 2); a model that fails to trace is marked "
        "'trace failed' and named on stderr (exit 1).",
    )
    p.add_argument(
        "pattern",
        nargs="?",
        help="shell-style filter over the registered names, e.g. 'resnet*', or a family's name at any size, "
        "such as wrn-34-2 (patterns do not list those sizes)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--trace", action="store_true", help="trace every model now instead of reading the stored counts"
    )
    p.set_defaults(func=_run)
    register_recipes(subparsers)


#: what ``--recipe none`` means, in the listing and for ``cnnlab recipes none``
NO_RECIPE_TEXT = "no recipe: TrainConfig's defaults, whatever the model's own recipe (--recipe none)"


def _recipes(args: argparse.Namespace) -> int:
    from cnnlab.train.recipes import NO_RECIPE, RECIPES, describe_recipe, recipe

    if args.name == NO_RECIPE:
        print(f"{NO_RECIPE}: {NO_RECIPE_TEXT}")
        return 0
    if args.name:
        recipe(args.name)  # an unknown name: one line naming the valid ones
        print(describe_recipe(args.name))
        return 0
    if args.models:
        from cnnlab.models import model_info
        from cnnlab.models.registry import match_models

        # the names `cnnlab models` takes: patterns, family names (wrn-34-2); nothing matching is an error
        for name in match_models(args.models if args.models is not True else None):
            print(f"{name:<36} {model_info(name).recipe}")
        return 0
    width = max(map(len, [*RECIPES, NO_RECIPE]))
    for r in RECIPES.values():
        shown = ", ".join(f"{k}={v}" for k, v in r.settings().items()) or "TrainConfig's defaults"
        print(f"{r.name:<{width}}  {r.paper}\n{'':<{width}}  {shown}")
    print(f"{NO_RECIPE:<{width}}  {NO_RECIPE_TEXT}")
    return 0


def register_recipes(subparsers: argparse._SubParsersAction) -> None:
    """Add ``cnnlab recipes``."""
    p = subparsers.add_parser(
        "recipes",
        help="list the papers' training recipes (values and sources)",
        description="List the named training recipes with their values; NAME prints one with each value's "
        "source (paper section or slide); --models lists which recipe each model trains with.",
    )
    p.add_argument("name", nargs="?", help="a recipe to show with its sources")
    p.add_argument(
        "--models", nargs="?", const=True, metavar="PATTERN", help="each model's recipe (optionally filtered)"
    )
    p.set_defaults(func=_recipes)
