"""``cnnlab experiment NAME``: the lectures' experiments, each one library call."""

from __future__ import annotations

import argparse

from cnnlab.cli.common import add_command, add_command_group, report_experiment
from cnnlab.cli.train import add_recipe_args, config_from_args, on_rank_zero


def _degradation(args: argparse.Namespace) -> int:
    from cnnlab.experiments.degradation import degradation, recipe_config

    cfg = config_from_args(args, "plain20-cifar", base=recipe_config())
    result = degradation(
        args.depths, cfg, args.out, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet
    )
    if not on_rank_zero():  # data-parallel: rank 0 reports for the job
        return 0
    return report_experiment(
        result.markdown(), {"table": result.table, "figure": result.figure}, result.status
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``experiment degradation``."""
    experiments = add_command_group(
        subparsers,
        "experiment",
        help="run one of the lectures' experiments",
        description="The lectures' experiments.",
        metavar="EXPERIMENT",
        dest="experiment",
    )
    from cnnlab.train.recipes import DEGRADATION as RECIPE
    from cnnlab.train.recipes import recipe_config

    d = add_command(
        experiments,
        "degradation",
        _degradation,
        help="plain vs residual nets of several depths (He et al. 2016, Fig. 1/6)",
        description="Train plainN-cifar and resnetN-cifar for each depth with one recipe; plot training and test "
        "error per epoch of all of them on one figure and print the final errors. Recipe defaults follow He et al. "
        f"section 4.2 with a cosine schedule: {', '.join(f'{k}={v}' for k, v in RECIPE.items())}. Nets take the "
        "dataset's own size and channels (1x28x28 for Fashion-MNIST); --pad-to 32 --in-chans 3 gives CIFAR's shape.",
    )
    d.add_argument("--depths", type=int, nargs="+", default=[20, 56], help="depths 6n+2 (default: 20 56)")
    d.add_argument("--out", default="runs/degradation", help="experiment folder (default: runs/degradation)")
    add_recipe_args(d, defaults=recipe_config(RECIPE))
