"""``cnnlab train``, ``cnnlab evaluate``, ``cnnlab compare``: thin wrappers over :mod:`cnnlab.train`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cnnlab.train.config import OPTIMIZERS, SCHEDULES, TrainConfig

DEFAULTS = TrainConfig()


def _float_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs such as '5,8', got {text!r}") from None


def _model_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"model options are KEY=VALUE, got {text!r}")
    import ast

    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a plain string such as stride_in=3x3


# (flag, config field, type, help); every default is TrainConfig's, shown in --help.
RECIPE = (
    ("--data", "data", str, "dataset name (cnnlab data list)"),
    (
        "--data-dir",
        "data_dir",
        str,
        "folder holding the dataset files (else $CNNLAB_DATA, the cache, system folders)",
    ),
    ("--epochs", "epochs", int, "number of epochs"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--optimizer", "optimizer", str, f"one of {', '.join(OPTIMIZERS)}"),
    ("--lr", "lr", float, "base (peak) learning rate"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--weight-decay", "weight_decay", float, "weight decay (never on norm and bias parameters)"),
    ("--schedule", "schedule", str, f"one of {', '.join(SCHEDULES)}"),
    ("--warmup-epochs", "warmup_epochs", float, "linear warmup length in epochs (not with onecycle)"),
    ("--step-size", "step_size", int, "step schedule: epochs between decays"),
    ("--milestones", "milestones", _float_list, "multistep schedule: epochs at which lr *= gamma, e.g. 5,8"),
    ("--gamma", "gamma", float, "decay factor of step, multistep and plateau"),
    ("--label-smoothing", "label_smoothing", float, "label smoothing of the cross-entropy"),
    ("--grad-clip", "grad_clip", float, "clip the gradient norm to this value"),
    ("--drop-rate", "drop_rate", float, "dropout before the classifier (default: the model's)"),
    ("--crop-padding", "crop_padding", int, "random-crop augmentation with this padding (0: off)"),
    ("--val-fraction", "val_fraction", float, "fraction of the training set held out for validation"),
    ("--train-subset", "train_subset", int, "train on this many images, a seeded sample (budget runs)"),
    ("--pad-to", "pad_to", int, "zero-pad images to this size (e.g. 32 for CIFAR-shaped nets)"),
    ("--in-chans", "in_chans", int, "repeat grey images to this many channels (e.g. 3)"),
    ("--seed", "seed", int, "random seed: same seed, same metrics on the CPU"),
    ("--device", "device", str, "auto (CUDA when present), cpu, cuda, cuda:N"),
    ("--threads", "threads", int, "CPU threads (default: torch's choice)"),
    (
        "--cpu-shards",
        "cpu_shards",
        int,
        "split each CPU batch into this many shards, one per core (default: one per core for models "
        "without batch norm or dropout; 1 turns it off)",
    ),
    ("--max-steps-per-epoch", "max_steps_per_epoch", int, "cut epochs short (smoke tests, benchmarks)"),
)


def add_recipe_args(parser: argparse.ArgumentParser) -> None:
    """The training-recipe flags shared by ``train`` and ``compare``."""
    group = parser.add_argument_group("recipe")
    for flag, fieldname, kind, text in RECIPE:
        group.add_argument(
            flag,
            dest=fieldname,
            type=kind,
            default=None,
            help=f"{text} (default: {getattr(DEFAULTS, fieldname)})",
        )
    group.add_argument(
        "--nesterov",
        dest="nesterov",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Nesterov momentum (default: on)",
    )
    group.add_argument(
        "--flip",
        dest="flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (default: off)",
    )
    group.add_argument(
        "--aux-loss",
        dest="aux_loss",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use auxiliary heads in the loss (default: on, where the model has them)",
    )
    group.add_argument(
        "--amp",
        dest="amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast: convolutions and matmuls in bf16, weights and losses in fp32 "
        "(default: on for CUDA and for CPUs with AMX bf16 units, where it is about 2x faster)",
    )
    group.add_argument(
        "--compile", dest="compile", action="store_true", default=None, help="torch.compile the model"
    )
    group.add_argument(
        "--model-option",
        dest="model_options",
        type=_model_option,
        action="append",
        metavar="KEY=VALUE",
        help="model builder option, e.g. stride_in=3x3 (repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in its directory from the last checkpoint"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def config_from_args(args: argparse.Namespace, model: str, base: TrainConfig = DEFAULTS) -> TrainConfig:
    """``base`` (TrainConfig's defaults), overridden by the flags actually given."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and k != "model" and v is not None}
    if "model_options" in given:
        given["model_options"] = dict(given["model_options"])
    return dataclasses.replace(base, model=model, **given).validate()


def _train(args: argparse.Namespace) -> int:
    from cnnlab.train import train

    cfg = config_from_args(args, args.model)
    run_dir = Path(args.out) / (args.name or cfg.model)
    if args.resume and args.epochs is None:
        cfg.epochs = saved_epochs(run_dir)
    result = train(cfg, run_dir, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet)
    if result.status == "interrupted":
        print(
            f"interrupted: checkpoint saved in {run_dir / 'checkpoints'}; continue with the same command and --resume"
        )
        return 130
    final = result.final
    print(
        f"done: {cfg.model}, {len(result.history)} epochs, test accuracy {100 * final['test_acc']:.2f}% "
        f"(best {100 * max(r['test_acc'] for r in result.history):.2f}%); run directory {run_dir}"
    )
    return 0


def saved_epochs(run_dir: Path) -> int:
    """Epochs recorded in a run's config.json (what --resume continues to when --epochs is not given)."""
    import json

    from cnnlab.errors import CheckpointError

    try:
        return int(json.loads((run_dir / "config.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"nothing to resume in {run_dir}: config.json is missing or damaged ({err})"
        ) from None


def _evaluate(args: argparse.Namespace) -> int:
    from cnnlab.train.evaluation import evaluate_checkpoint

    evaluation = evaluate_checkpoint(
        args.path,
        split=args.split,
        data_dir=args.data_dir,
        which=args.checkpoint,
        out_dir=args.out,
        device=args.device,
    )
    print(evaluation.report())
    return 0


def _compare(args: argparse.Namespace) -> int:
    from cnnlab.experiments.compare import compare

    cfg = config_from_args(args, args.models[0])
    comparison = compare(
        args.models, cfg, args.out, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet
    )
    print()
    print(comparison.markdown())
    print()
    print(f"table: {comparison.table_path}")
    print(f"plot:  {comparison.plot_path}")
    if any(r.status != "completed" for r in comparison.runs):
        print("interrupted: continue with the same command and --resume")
        return 130
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate`` and ``compare``."""
    p = subparsers.add_parser(
        "train",
        help="train a model into a run directory",
        description="Train MODEL on a dataset into OUT/NAME/ (config.json, metrics.csv, curves.png, checkpoints/). "
        "Ctrl-C stops after the current batch and saves a checkpoint; --resume continues exactly.",
    )
    p.add_argument("model", help="model name (cnnlab models)")
    p.add_argument("--out", default="runs", help="parent folder of run directories (default: runs)")
    p.add_argument("--name", help="run directory name (default: the model name)")
    add_recipe_args(p)
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a run directory or checkpoint",
        description="Accuracy, per-class accuracy and confusion matrix (printed, and saved as confusion.png) of a "
        "saved run directory, checkpoint manifest (.json) or weights file (.safetensors).",
    )
    p.add_argument("path", help="run directory, checkpoints/NAME.json or a .weights.safetensors file")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="which checkpoint of a run directory"
    )
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--out", help="where to save confusion.png (default: the run directory)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser(
        "compare",
        help="train several models with one recipe and compare them",
        description="Train each MODEL with the same recipe into OUT/MODEL/, then print a table of parameters, final "
        "and best test accuracy, seconds per epoch and images/s, and save comparison.md/.json and comparison.png.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--out", default="runs/compare", help="folder of the comparison (default: runs/compare)")
    add_recipe_args(p)
    p.set_defaults(func=_compare)
