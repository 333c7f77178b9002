"""``cnnlab experiment NAME``: the lectures' experiments, each one library call."""

from __future__ import annotations

import argparse

from cnnlab.cli.common import (
    add_command,
    add_command_group,
    report_experiment,
    resume_with_saved_flags,
    save_experiment_flags,
)
from cnnlab.cli.train import add_nproc_arg, add_recipe_args, config_from_args, launched, on_rank_zero
from cnnlab.errors import UsageError

#: --resume of an experiment: it rebuilds its members from its flags, those it started with where left out
EXPERIMENT_RESUME_HELP = (
    "continue the experiment in --out: a flag left out takes the value it started with, and one given anew "
    "that changes a member's recipe is refused; finished members are read, not trained again, an interrupted "
    "one continues from its last checkpoint, and a member added (a depth, a seed) is trained"
)


def _degradation(args: argparse.Namespace) -> int:
    from cnnlab.experiments.degradation import degradation, recipe_config

    resume_with_saved_flags(args, args.out)
    cfg = config_from_args(args, "plain20-cifar", base=recipe_config())
    result = degradation(
        args.depths, cfg, args.out, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet
    )
    if not on_rank_zero():  # data-parallel: rank 0 reports for the job
        return 0
    save_experiment_flags(args, args.out)
    return report_experiment(
        result.markdown(), {"table": result.table, "figure": result.figure}, result.status
    )


def _transfer(args: argparse.Namespace) -> int:
    from cnnlab.experiments.transfer import transfer

    resume_with_saved_flags(args, args.out)
    cfg = config_from_args(args, args.model)
    result = transfer(
        cfg, args.out, split=args.split, ns=args.n, overwrite=args.overwrite, resume=args.resume,
        progress=not args.quiet,
    )  # fmt: skip
    save_experiment_flags(args, args.out)
    return report_experiment(
        result.markdown(), {"table": result.table, "figure": result.figure}, result.status
    )


def _batchnorm(args: argparse.Namespace) -> int:
    from cnnlab.experiments.batchnorm import batchnorm, recipe_config

    resume_with_saved_flags(args, args.out)
    cfg = config_from_args(args, args.model, base=recipe_config())
    result = batchnorm(
        cfg, args.out, steps=args.steps, eval_every=args.eval_every, overwrite=args.overwrite, resume=args.resume,
        progress=not args.quiet,
    )  # fmt: skip
    save_experiment_flags(args, args.out)
    return report_experiment(
        result.markdown(), {"table": result.table, "figure": result.figure}, result.status
    )


def _augmentation(args: argparse.Namespace) -> int:
    from cnnlab.experiments.augmentation import augmentation

    resume_with_saved_flags(args, args.out)
    cfg = config_from_args(args, args.model)
    result = augmentation(
        cfg, args.out, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet
    )
    save_experiment_flags(args, args.out)
    return report_experiment(
        result.markdown(), {"table": result.table, "figure": result.figure}, result.status
    )


def _speedrun(args: argparse.Namespace) -> int:
    from cnnlab.experiments.speedrun import speedrun, speedrun_for

    resume_with_saved_flags(args, args.out)
    run = speedrun_for(args.dataset)
    if getattr(args, "data", None) not in (None, args.dataset):
        raise UsageError(f"the speedrun's dataset is {args.dataset}; drop --data {args.data}")
    args.data = args.dataset
    status = launched(args, lambda: config_from_args(args, run.model, recipe=run.recipe))
    if status is not None:
        return status
    cfg = config_from_args(args, run.model, recipe=run.recipe)
    result = speedrun(
        cfg, args.out, seeds=args.seeds, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet
    )
    if not on_rank_zero():  # data-parallel: rank 0 reports for the job
        return 0
    save_experiment_flags(args, args.out)
    return report_experiment(
        result.markdown(), {"table": result.table, "figure": result.figure}, result.status
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``speedrun`` and ``experiment degradation``, ``transfer``, ``batchnorm`` and ``augmentation``."""
    from cnnlab.train.recipes import SPEEDRUNS, recipe, recipe_config

    s = add_command(
        subparsers,
        "speedrun",
        _speedrun,
        help="the fastest path on this CPU to a test accuracy: a net and recipe tuned for time to accuracy",
        description="Train the dataset's speedrun net under its recipe (cnnlab recipes speedrun; every flag "
        "below overrides it) with --seeds seeds; print the wall time at which validation accuracy first reached "
        "each mark, and the test accuracy of the checkpoint validation selected (the test split is touched once, "
        "at the end). Writes speedrun.md/.json and speedrun.png (validation accuracy against wall time) in OUT, "
        "beside the runs' comparison.md/.json/.png (cnnlab compare's table of the seeds' runs).",
    )
    s.add_argument("dataset", metavar="DATASET", help=f"one of {', '.join(SPEEDRUNS)}")
    s.add_argument(
        "--seeds", type=int, default=1, help="runs with seeds --seed, --seed + 1, ... (default: 1)"
    )
    s.add_argument("--out", default="runs/speedrun", help="folder of the speedrun (default: runs/speedrun)")
    add_recipe_args(
        s,
        defaults=recipe_config(recipe("speedrun").settings()),
        recipe_help="a recipe (cnnlab recipes) in place of the speedrun's, under the flags given; 'none': "
        "TrainConfig's defaults (cnnlab train's without a recipe), not the defaults shown",
        resume_help=EXPERIMENT_RESUME_HELP,
    )
    add_nproc_arg(s)

    experiments = add_command_group(
        subparsers,
        "experiment",
        help="run one of the lectures' experiments",
        description="The lectures' experiments.",
        metavar="EXPERIMENT",
        dest="experiment",
    )
    from cnnlab.train.recipes import DEGRADATION as RECIPE

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
    add_recipe_args(d, defaults=recipe_config(RECIPE), resume_help=EXPERIMENT_RESUME_HELP)

    t = add_command(
        experiments,
        "transfer",
        _transfer,
        help="transfer and selffer networks: baseA, baseB, BnB, BnB+, AnB, AnB+ (Yosinski et al. 2014, Fig. 2)",
        description="Split the classes into halves A and B (--split random: seeded; or a named split such as "
        "fashion-mnist's 'dissimilar': footwear, bags and trousers vs tops and dresses). Train baseA and baseB, "
        "then for each n (conv/fc layers as cnnlab summary MODEL --layers counts them) BnB and AnB (first n "
        "layers copied from baseB / baseA and frozen, the rest re-initialised) and BnB+ and AnB+ (the same, all "
        "layers learning); the split sets the classes (no --classes). Writes transfer.png (accuracy on B against n) "
        "and transfer.md/.json. Scale it to the "
        "machine with --n, --epochs, --train-subset and --max-steps-per-epoch (the budget).",
    )
    t.add_argument(
        "--model", default="lecture-residual", help="the net (default: lecture-residual, 7 layers)"
    )
    t.add_argument(
        "--split", default="random", help="random (seeded by --seed) or a named split (default: random)"
    )
    t.add_argument("--n", type=int, nargs="+", help="the n to chop at (default: every layer but the last)")
    t.add_argument("--out", default="runs/transfer", help="experiment folder (default: runs/transfer)")
    add_recipe_args(t, resume_help=EXPERIMENT_RESUME_HELP, experiment="transfer")

    from cnnlab.train.recipes import BATCHNORM as BN_RECIPE

    b = add_command(
        experiments,
        "batchnorm",
        _batchnorm,
        help="Inception vs BN-Baseline vs BN-x5 vs BN-x30 vs BN-x5-Sigmoid (Ioffe & Szegedy 2015, Fig. 2)",
        description="Train one Inception net without BN (Inception) and with BN after every convolution at the "
        "base lr (BN-Baseline), x5 and x30 the base lr (BN-x5, BN-x30) and BN-x5 with sigmoids (BN-x5-Sigmoid); "
        "plot validation accuracy against steps (batchnorm.png) and give the steps each needs to reach the "
        "no-BN net's best validation accuracy (batchnorm.md/.json); test accuracy is measured once per net. "
        f"Defaults: {', '.join(f'{k}={v}' for k, v in BN_RECIPE.items())} (slide 004: Inception's 0.0015). "
        "The budget: --steps, --eval-every, --train-subset; the experiment sets --epochs and --max-steps-per-epoch "
        "(from them) and the model options batch_norm and activation itself.",
    )
    b.add_argument(
        "--model", default="lecture-inception", help="a net with batch_norm and activation options"
    )
    b.add_argument(
        "--steps",
        type=int,
        default=2000,
        help="training steps per net, a multiple of --eval-every (default: 2000)",
    )
    b.add_argument(
        "--eval-every",
        type=int,
        default=100,
        help="validation every this many steps; an epoch of the training split must hold as many batches "
        "(default: 100)",
    )
    b.add_argument("--out", default="runs/batchnorm", help="experiment folder (default: runs/batchnorm)")
    add_recipe_args(
        b,
        defaults=recipe_config(BN_RECIPE),
        resume_help=EXPERIMENT_RESUME_HELP,
        experiment="batchnorm",
    )

    a = add_command(
        experiments,
        "augmentation",
        _augmentation,
        help="no augmentation vs flips vs crops and flips (Chatfield et al. 2014)",
        description="Train MODEL three times: without augmentation, with random flips, and with random crops "
        "(--crop-padding: the crops variant's padding, 4 when 0) and flips; it sets --flip, --augment, --eval-tta and --test-tta "
        "itself. Table and figure of validation accuracy, and test accuracy of each "
        "selected checkpoint with centre (whole-image) and 10-crop evaluation (Chatfield et al. section 3.2). "
        "The budget: --epochs, --train-subset, --max-steps-per-epoch.",
    )
    a.add_argument("--model", default="lecture-simple", help="the net (default: lecture-simple)")
    a.add_argument(
        "--out", default="runs/augmentation", help="experiment folder (default: runs/augmentation)"
    )
    add_recipe_args(a, resume_help=EXPERIMENT_RESUME_HELP, experiment="augmentation")
