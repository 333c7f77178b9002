"""``cnnlab train``, ``cnnlab evaluate``, ``cnnlab compare``: thin wrappers over :mod:`cnnlab.train`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from cnnlab.cli.common import (
    add_command,
    add_model_option_arg,
    add_weights_from_arg,
    class_list,
    flag_actions,
    model_options,
    named_as_flags,
    report_experiment,
    resume_with_saved_flags,
    save_experiment_flags,
)
from cnnlab.data.views import AUGMENTATIONS, TTA_MODES, views_said
from cnnlab.errors import UsageError
from cnnlab.train.config import (
    CONSTANT_WARMUP_FACTOR,
    OPTIMIZERS,
    SCHEDULES,
    WARMUP_MODES,
    WEIGHT_INITS,
    TrainConfig,
    flag_for,
)

DEFAULTS = TrainConfig()
MAX_NAME_BYTES = 255  # a run directory's name is one path component


def _epoch_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs such as '5,8', got {text!r}") from None


def _int_pair(text: str) -> tuple[int, int]:
    values = text.replace(",", " ").split()
    try:
        pair = tuple(int(v) for v in values)
    except ValueError:
        pair = ()
    if len(pair) != 2:
        raise argparse.ArgumentTypeError(f"expected two whole numbers such as '256,512', got {text!r}")
    return pair


def _augmentation(text: str) -> str:
    if text not in AUGMENTATIONS:
        raise argparse.ArgumentTypeError(
            f"unknown augmentation {text!r}; choose one of {', '.join(AUGMENTATIONS)}"
        )
    return text


# (flag, config field, type, help); every default is shown in --help from the record training starts
# from (TrainConfig's, or an experiment's recipe), except where the help text says what None means.
RECIPE = (
    (
        "--data",
        "data",
        str,
        "dataset name (cnnlab data list), or an image folder: PATH or imagefolder:PATH (docs/data.md)",
    ),
    (
        "--data-dir",
        "data_dir",
        str,
        "folder holding the dataset files (else $CNNLAB_DATA, the cache, system folders)",
    ),
    ("--epochs", "epochs", int, "number of epochs"),
    ("--batch-size", "batch_size", int, "training batch size"),
    (
        "--accum-steps",
        "accum_steps",
        int,
        "compute each batch's gradient in this many micro-batches, for memory: the same update as the "
        "whole batch (batch norm sees the micro-batches)",
    ),
    ("--optimizer", "optimizer", str, f"one of {', '.join(OPTIMIZERS)}"),
    ("--lr", "lr", float, "base (peak) learning rate"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--weight-decay", "weight_decay", float, "weight decay (never on norm and bias parameters)"),
    ("--schedule", "schedule", str, f"one of {', '.join(SCHEDULES)}"),
    ("--warmup-epochs", "warmup_epochs", float, "warm-up length in epochs (not with onecycle)"),
    (
        "--warmup-mode",
        "warmup_mode",
        str,
        f"one of {', '.join(WARMUP_MODES)}: a ramp from lr/W to lr over the W warm-up steps, or lr x "
        f"{CONSTANT_WARMUP_FACTOR:g} throughout them (He et al. 2016)",
    ),
    ("--step-size", "step_size", int, "step schedule: epochs between decays"),
    ("--milestones", "milestones", _epoch_list, "multistep schedule: epochs at which lr *= gamma, e.g. 5,8"),
    ("--gamma", "gamma", float, "decay factor of step, multistep and plateau"),
    ("--label-smoothing", "label_smoothing", float, "label smoothing of the cross-entropy"),
    ("--grad-clip", "grad_clip", float, "clip the gradient norm to this value"),
    ("--drop-rate", "drop_rate", float, "dropout before the classifier (default: the model's own)"),
    (
        "--prune",
        "prune",
        float,
        "data pruning by training loss: after a full first epoch, each epoch trains on this share of the "
        "training images, those of highest loss when last seen (e.g. 0.5; 1: all of them, turning off a "
        "recipe's pruning)",
    ),
    (
        "--prune-random",
        "prune_random",
        float,
        "with --prune: the share of each epoch's images drawn at random from the others instead",
    ),
    (
        "--weight-init",
        "weight_init",
        str,
        f"one of {', '.join(WEIGHT_INITS)}: the model's own initialisation (the paper's, where it states one) "
        "or every conv and linear layer re-drawn with zero biases: he (He et al. 2015 normal) or glorot "
        "(Glorot & Bengio 2010 uniform)",
    ),
    (
        "--augment",
        "augment",
        _augmentation,
        "training augmentation pipeline: "
        + "; ".join(f"{name} ({paper})" for name, paper in AUGMENTATIONS.items()).replace("%", "%%"),
    ),
    (
        "--input-size",
        "input_size",
        int,
        "the square crop the network sees, smaller than the stored (padded) images; evaluation takes the "
        "centre crop (default: the stored size)",
    ),
    (
        "--scale-range",
        "scale_range",
        _int_pair,
        "vgg augmentation: Smin,Smax of the jittered shorter side (default: input size x 256/224, x 512/224)",
    ),
    ("--crop-padding", "crop_padding", int, "random-crop augmentation with this padding (0: off; cifar: 4)"),
    (
        "--eval-tta",
        "eval_tta",
        str,
        "views validation and the final test average: center, flip (each image and its mirror image) or "
        "flip-shift (those and both moved one pixel down-right and up-left: six views)",
    ),
    (
        "--test-tta",
        "test_tta",
        str,
        "the final test's views alone, as --eval-tta (default: --eval-tta's)",
    ),
    (
        "--val-fraction",
        "val_fraction",
        float,
        "fraction of the training set held out (seeded) to select the checkpoint; the test split is "
        "evaluated once, on the selected checkpoint (0: no selection, the last epoch is the result)",
    ),
    ("--train-subset", "train_subset", int, "train on this many images, a seeded sample (budget runs)"),
    (
        "--classes",
        "classes",
        class_list,
        "train, validate and test on these classes only, relabelled 0..k-1 in the order given, e.g. 0,1,2,3,4 "
        "(default: all classes)",
    ),
    (
        "--pad-to",
        "pad_to",
        int,
        "zero-pad images to this size (e.g. 32 for CIFAR-shaped nets) (default: no padding)",
    ),
    (
        "--in-chans",
        "in_chans",
        int,
        "repeat grey images to this many channels (e.g. 3); an image folder is decoded to 1 or 3 channels "
        "(default: 1 if all its images are grey, else 3)",
    ),
    (
        "--image-size",
        "image_size",
        int,
        "image folders: resize the shorter side to S and crop the centre SxS (default: the images' own "
        "size, which they must then share)",
    ),
    ("--bad-images", "bad_images", str, "image folders: error or skip an image that cannot be decoded"),
    ("--seed", "seed", int, "random seed: same seed, machine and thread count give the same metrics"),
    ("--device", "device", str, "auto (CUDA when present), cpu, cuda, cuda:N"),
    ("--threads", "threads", int, "CPU threads (default: torch's choice)"),
    (
        "--cpu-shards",
        "cpu_shards",
        int,
        "split each CPU batch into this many shards computed in parallel, one per core; exact, allowed "
        "only for models known to treat each image independently (1: off)",
    ),
    ("--max-steps-per-epoch", "max_steps_per_epoch", int, "cut epochs short (smoke tests, benchmarks)"),
)

# (flag, config field, help) of the on/off settings: --flag and --no-flag; a help text that says its
# own default keeps it (aux_loss is on only where the model has auxiliary heads).
SWITCHES = (
    ("--nesterov", "nesterov", "Nesterov momentum"),
    ("--flip", "flip", "random horizontal flips"),
    ("--aux-loss", "aux_loss", "use auxiliary heads in the loss (default: on, where the model has them)"),
    (
        "--sync-bn",
        "sync_bn",
        "data-parallel runs (torchrun, --nproc): batch norm with the statistics of the global batch over "
        "every process, as one process computes them",
    ),
    (
        "--zero-init-residual",
        "zero_init_residual",
        "start the last layer of every residual branch at zero, so that each unit starts as its shortcut "
        "(Goyal et al. 2017): the residual units of the ResNet families (resnet, resnet-cifar, preact-resnet, "
        "wrn) whose shortcut is an identity, a projection or a gate; the run says how many it zeroed",
    ),
)


def _shown(value: object) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def _with_default(text: str, value: object) -> str:
    """A flag's help with its default. A text that ends by saying what an unset value (None, ()) means
    keeps that while the value is unset; a value set (by an experiment's recipe) takes its place."""
    unset_meaning = re.search(r" \(default: [^()]*\)$", text)
    if unset_meaning and value in (None, ()):
        return text
    return f"{text[: unset_meaning.start()] if unset_meaning else text} (default: {_shown(value)})"


def add_recipe_args(
    parser: argparse.ArgumentParser,
    defaults: TrainConfig = DEFAULTS,
    recipe_help: str = "a paper's recipe (cnnlab recipes) under the flags given; 'none': the defaults shown",
    resume_help: str = (
        "continue the run in its directory from its last checkpoint with its saved recipe: only --epochs, "
        "--device and --threads may differ (a new --epochs recomputes the schedule for the new length, so "
        "only a run continued within its original length ends as an uninterrupted one would)"
    ),
    experiment: str | None = None,
) -> None:
    """The training-recipe flags shared by ``train``, ``compare`` and the experiments.

    ``defaults`` is the record training starts from (an experiment passes its recipe), so the
    defaults that ``--help`` shows are the ones used when no ``--recipe`` is given. ``experiment``: the
    experiment whose command this is; the flags of the settings it sets itself
    (:data:`cnnlab.train.recipes.EXPERIMENT_SETS`) are refused when given (:func:`config_from_args`),
    and their help says so instead of showing a default.
    """
    from cnnlab.train.recipes import EXPERIMENT_SETS

    set_by: Mapping[str, str] = EXPERIMENT_SETS[experiment] if experiment else {}
    if set_by:
        parser.set_defaults(set_by_experiment=experiment)

    def described(fieldname: str, text: str) -> str:
        how = set_by.get(fieldname)
        return f"set by the experiment ({how}); refused here" if how else text

    group = parser.add_argument_group("recipe")
    group.add_argument(
        "--recipe",
        dest="recipe_name",
        metavar="NAME",
        help=recipe_help,
    )
    for flag, fieldname, kind, text in RECIPE:
        group.add_argument(
            flag,
            dest=fieldname,
            type=kind,
            default=None,
            help=described(fieldname, _with_default(text, getattr(defaults, fieldname))),
        )
    for flag, fieldname, text in SWITCHES:
        value = getattr(defaults, fieldname)
        group.add_argument(
            flag,
            dest=fieldname,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=described(fieldname, text if "(default: " in text else f"{text} (default: {_shown(value)})"),
        )
    group.add_argument(
        "--amp",
        dest="amp",
        nargs="?",
        const="bf16",
        choices=("bf16", "fp16"),
        default=None,
        help="mixed precision, opt-in: bf16 autocast (the default of --amp; about 2x faster on CPUs with AMX "
        "bf16 units, and on CUDA for large models only) or fp16 autocast with gradient scaling (CUDA); weights, gradients and "
        "losses stay fp32 (default: off, fp32 on every machine)",
    )
    group.add_argument("--no-amp", dest="amp", action="store_const", const="fp32", help="fp32 (the default)")
    group.add_argument(
        "--compile", dest="compile", action="store_true", default=None, help="torch.compile the model"
    )
    add_model_option_arg(group)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument(
        "--resume",
        action="store_true",
        help=resume_help,
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    # Under torchrun (or --nproc) the entry point joins the process group before the command runs.
    parser.set_defaults(joins_process_group=True)


# what a weight file no run produced needs said about its data (evaluate MODEL --weights FILE)
DATA_SETTINGS = ("data", "classes", "pad_to", "in_chans", "image_size", "bad_images")


def add_data_setting_args(group: argparse._ArgumentGroup) -> None:
    """The :data:`DATA_SETTINGS` flags, as ``train`` declares them (:data:`RECIPE`), and ``--model-option``."""
    for flag, fieldname, kind, text in RECIPE:
        if fieldname in DATA_SETTINGS:
            value = getattr(DEFAULTS, fieldname)
            group.add_argument(flag, dest=fieldname, type=kind, default=None, help=_with_default(text, value))
    add_model_option_arg(group)


def given_settings(args: argparse.Namespace) -> dict[str, object]:
    """The recipe settings the user actually gave on the command line (flags left unset are None)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and k != "model" and v is not None}
    if "model_options" in given:
        given["model_options"] = model_options(args)
    if "freeze" in given:
        given["freeze"] = tuple(given["freeze"])
    return given


def config_from_args(
    args: argparse.Namespace, model: str, base: TrainConfig = DEFAULTS, recipe: str | None = None
) -> TrainConfig:
    """``base`` (the defaults the command's ``--help`` shows: TrainConfig's, or an experiment's recipe),
    overridden by the flags actually given.

    With ``--recipe NAME`` (or ``recipe``, the caller's default: ``train`` passes the model's own), the
    named recipe replaces ``base`` and the config records which values came from it; ``--recipe none``
    is ``base`` itself, as the flag's help says."""
    from cnnlab.train.recipes import NO_RECIPE, config_with_recipe

    refuse_flags_the_experiment_sets(args)
    name = getattr(args, "recipe_name", None) or recipe
    given = given_settings(args)
    try:
        if name is not None and name != NO_RECIPE:
            return config_with_recipe(name, given, model=model).validate()
        return dataclasses.replace(base, model=model, **given, recipe=None, recipe_fields=()).validate()
    except UsageError as err:
        raise UsageError(as_flags(str(err), args, given)) from None


def as_flags(message: str, args: argparse.Namespace, given: Mapping[str, object]) -> str:
    """A refusal from :meth:`TrainConfig.validate` in the command's flags (:func:`named_as_flags`), its
    leading one-word field too where the user gave it (``epochs must be ...`` -> ``--epochs must be ...``;
    elsewhere such a word is plain English)."""
    named = named_as_flags(message, args)
    first, space, rest = named.partition(" ")
    if first not in given or flag_for(first) in named:
        return named
    return f"{flag_for(first)}{space}{rest}"


def refuse_flags_the_experiment_sets(args: argparse.Namespace) -> None:
    """An experiment's command refuses a flag of a setting the experiment sets itself whenever it is given,
    also with the value the experiment would use: it would be recorded as the user's and mean nothing."""
    experiment = getattr(args, "set_by_experiment", None)
    if not experiment:
        return
    from cnnlab.train.recipes import EXPERIMENT_SETS

    for fieldname, how in EXPERIMENT_SETS[experiment].items():
        if getattr(args, fieldname, None) is None:
            continue
        strings = next(
            (a.option_strings for a in flag_actions(args.command_parser) if a.dest == fieldname),
            [flag_for(fieldname)],
        )
        typed = [s for s in strings for w in getattr(args, "argv", []) if w == s or w.startswith(s + "=")]
        raise UsageError(
            f"the {experiment} experiment sets {fieldname} itself ({how}); drop {(typed or strings)[0]}"
        )


def resumed_config(args: argparse.Namespace, model: str, run_dir: Path) -> TrainConfig:
    """What ``--resume`` runs: the saved recipe, with --epochs/--device/--threads where given.

    Any other recipe flag that differs from the saved recipe is refused, naming each, rather than
    silently ignored.
    """
    from cnnlab.train.engine import RESUME_MAY_CHANGE, recipe_changes, saved_config

    saved = saved_config(run_dir)
    if saved.model != model:
        raise UsageError(f"{run_dir} is a run of {saved.model!r}, not {model!r}; resume it with that model")
    given = given_settings(args)
    asked = getattr(args, "recipe_name", None)
    if asked is not None and asked != (saved.recipe or "none"):
        raise UsageError(
            f"{run_dir} was trained with recipe {saved.recipe or 'none'}, not {asked}; drop --recipe"
        )
    requested = dataclasses.replace(saved, **given)
    changes = recipe_changes(saved, requested, given)
    if changes:
        raise UsageError(
            f"--resume continues {run_dir} with its saved recipe, but these flags differ from it: "
            f"{'; '.join(changes)}. Drop them (only {', '.join('--' + n for n in RESUME_MAY_CHANGE)} may "
            f"change), or start again with --overwrite or {'--name' if hasattr(args, 'name') else 'another --out'}"
        )
    return requested.validate()


def run_dir_for(out: str, name: str | None, model: str) -> Path:
    """``OUT/NAME`` (NAME defaults to the model), refusing a name that is not one folder name."""
    name = name if name is not None else model
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UsageError(f"--name must be a single folder name, got {name!r}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise UsageError(
            f"--name is {len(name.encode())} bytes long; a folder name may be at most {MAX_NAME_BYTES}"
        )
    return Path(out) / name


def add_nproc_arg(parser: argparse.ArgumentParser) -> None:
    """``--nproc``: run the command as that many data-parallel processes (see :func:`launched`)."""
    parser.add_argument(
        "--nproc",
        type=int,
        help="train in this many data-parallel processes on this machine (DDP through torch's elastic "
        "launcher, as torchrun --nproc-per-node; gloo on CPUs, NCCL on GPUs): --batch-size stays the "
        "global batch and must divide by it; see docs/distributed.md (default: 1, one process)",
    )


def launched(args: argparse.Namespace, config: Callable[[], TrainConfig]) -> int | None:
    """With ``--nproc N`` (N > 1) outside a data-parallel job: check ``config()`` (the run's settings)
    as each rank would, then run this command line as N ranks and return the job's exit status; else
    None, and this process runs the command itself."""
    if args.nproc is not None and args.nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc is None or args.nproc == 1 or "WORLD_SIZE" in os.environ:
        return None
    from cnnlab.train.distributed import check_launch, launch

    if not args.resume:  # refused before any process starts: the recipe's batch and settings
        check_launch(config(), args.nproc)
    return launch(args.nproc, args.argv)  # this process becomes the elastic agent of N ranks


def _train(args: argparse.Namespace) -> int:
    def config() -> TrainConfig:
        from cnnlab.models import model_info

        return config_from_args(args, args.model, recipe=model_info(args.model).recipe)

    status = launched(args, config)
    if status is not None:
        return status
    from cnnlab.train import train
    from cnnlab.train.rundir import refuse_overwrite_with_resume

    run_dir = run_dir_for(args.out, args.name, args.model)
    refuse_overwrite_with_resume(args.overwrite, args.resume)
    if args.resume:
        cfg = resumed_config(args, args.model, run_dir)
    else:
        from cnnlab.models import model_info

        cfg = config_from_args(args, args.model, recipe=model_info(args.model).recipe)
        if cfg.init_from != "cnnlab" and not cfg.init:
            raise UsageError("--weights-from says how to read --weights; give --weights FILE too")
        if cfg.init:  # a misspelt source fails now, before anything is built or written
            from cnnlab.weights import parse_weights_from

            parse_weights_from(cfg.init_from)
        if ":" in cfg.init_from:  # one reference: the model built with its options
            from cnnlab.references import reference_model_options

            options = reference_model_options(cfg.init_from, cfg.model, cfg.model_options)
            cfg = dataclasses.replace(cfg, model_options=options).validate()
        if cfg.recipe_fields and not args.quiet and on_rank_zero():
            taken = ", ".join(f"{k}={getattr(cfg, k)}" for k in cfg.recipe_fields)
            print(f"recipe {cfg.recipe}: {taken} (cnnlab recipes {cfg.recipe} gives the sources)")
    result = train(
        cfg, run_dir, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet,
        tensorboard=args.tensorboard,
    )  # fmt: skip
    if not on_rank_zero():  # rank 0 reports for the job, and its exit status is the job's
        return 0
    if result.status == "interrupted":
        print(
            f"interrupted: checkpoint saved in {run_dir / 'checkpoints'}; continue with the same command and --resume"
        )
        return 130
    r = result.results
    print(
        f"done: {cfg.model}, {len(result.history)} epoch{'s' * (len(result.history) != 1)}; test accuracy {100 * r['test_acc']:.2f}%{views_said(r.get('test_views'))} "
        f"({r['checkpoint']} checkpoint, epoch {r['epoch']}, selected by {r['selection']}); run directory {run_dir}"
    )
    if args.report:
        from cnnlab.inspect import write_report

        print(f"report: {write_report(run_dir, run_dir / 'report.html', overwrite=True, device=cfg.device)}")
    return 0


def on_rank_zero() -> bool:
    """Whether this process reports for its job: always, but in a data-parallel job only rank 0."""
    if "WORLD_SIZE" not in os.environ:
        return True
    from cnnlab.train.distributed import current

    return current().is_main


def _evaluate(args: argparse.Namespace) -> int:
    from cnnlab.train.evaluation import evaluate_checkpoint, evaluate_tta_checkpoint

    if args.scales and not args.tta:
        raise UsageError("--scales applies to --tta multiscale and --tta dense; add --tta")
    if args.weights_from is not None and args.weights is None:
        raise UsageError("--weights-from says how to read --weights; give --weights FILE too")
    settings = {k: v for k, v in given_settings(args).items() if k in (*DATA_SETTINGS, "model_options")}
    if args.weights is not None and args.checkpoint is not None:
        raise UsageError("--checkpoint picks a run's checkpoint; with --weights there is one file")
    weights = dict(weights=args.weights, weights_from=args.weights_from or "cnnlab", settings=settings)
    if args.tta:
        tta = evaluate_tta_checkpoint(
            args.path, args.tta, scales=args.scales or (), split=args.split, data_dir=args.data_dir,
            which=args.checkpoint, device=args.device, **weights,
        )  # fmt: skip
        print(tta.report())
        return 0
    evaluation = evaluate_checkpoint(
        args.path,
        split=args.split,
        data_dir=args.data_dir,
        which=args.checkpoint,
        out_dir=args.out,
        device=args.device,
        bn_recalibrate=args.bn_recalibrate,
        **weights,
    )
    print(evaluation.report())
    return 0


def _compare(args: argparse.Namespace) -> int:
    from cnnlab.experiments.compare import compare

    resume_with_saved_flags(args, args.out)
    cfg = config_from_args(args, args.models[0])
    if args.resume:  # the saved recipe, with the same refusal of changed flags as `train --resume`
        started = [m for m in args.models if (Path(args.out) / m / "config.json").is_file()]
        for model in started:
            cfg = dataclasses.replace(
                resumed_config(args, model, Path(args.out) / model), model=args.models[0]
            )
    comparison = compare(
        args.models, cfg, args.out, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet,
        seeds=args.seeds,
    )  # fmt: skip
    if not on_rank_zero():  # data-parallel: rank 0 reports for the job
        return 0
    save_experiment_flags(args, args.out)
    files = {"table": comparison.table_path, "plot": comparison.plot_path}
    if args.report and comparison.status == "completed":
        from cnnlab.inspect import write_report

        # derived from the runs, like comparison.md: rewritten whenever the comparison is
        files["report"] = write_report(
            [run.run_dir for run in comparison.runs], Path(args.out) / "report.html", overwrite=True,
            device=cfg.device,
        )  # fmt: skip
    return report_experiment(comparison.markdown(), files, comparison.status)


def _ensemble(args: argparse.Namespace) -> int:
    from cnnlab.train.ensemble import ensemble, ensemble_members, parse_weights

    runs = ensemble_members(args.runs)
    weights = parse_weights(args.weights, len(runs))
    result = ensemble(runs, weights, split=args.split, data_dir=args.data_dir, device=args.device)
    print(result.report())
    return 0


def _add_view_args(parser: argparse.ArgumentParser, tensorboard: bool) -> None:
    group = parser.add_argument_group("views")
    group.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write report.html at the end (cnnlab report: curves, confusion matrix, mistakes, filters) "
        "(default: on)",
    )
    if tensorboard:
        group.add_argument(
            "--tensorboard",
            action="store_true",
            help="also write TensorBoard event files to RUN/tensorboard/ (needs the tensorboard package; "
            "metrics.csv stays the record)",
        )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate``, ``ensemble`` and ``compare``."""
    p = add_command(
        subparsers,
        "train",
        _train,
        help="train a model into a run directory",
        description="Train MODEL on a dataset into OUT/NAME/ (config.json, metrics.csv, curves.png, checkpoints/). "
        "Ctrl-C stops after the current batch and saves a checkpoint; --resume continues exactly. MODEL trains "
        "with its paper's recipe (cnnlab recipes; the model's own is in cnnlab recipes --models): its values "
        "replace the defaults shown below, and the flags given replace both.",
    )
    p.add_argument("model", help="model name (cnnlab models)")
    p.add_argument("--out", default="runs", help="parent folder of run directories (default: runs)")
    p.add_argument("--name", help="run directory name (default: the model name)")
    add_recipe_args(
        p,
        recipe_help="recipe to train with (cnnlab recipes; default: the model's own); 'none': the defaults shown",
    )
    t = p.add_argument_group("starting from weights (Yosinski et al. 2014)")
    t.add_argument(
        "--weights",
        "--init",
        dest="init",
        metavar="FILE_OR_RUN",
        help="start from these weights: a weight file (.safetensors, or .pth/.pt read with weights_only=True: an "
        "exported model file, a run's weights, a published file), a run directory or a checkpoint manifest; "
        "a classifier with another class count is dropped and re-initialised. config.json records the file, "
        "its source and its SHA-256",
    )
    add_weights_from_arg(t, dest="init_from")
    t.add_argument(
        "--freeze",
        nargs="+",
        metavar="N_OR_PATTERN",
        help="freeze the first N conv/fc layers (as cnnlab summary MODEL --layers counts them), or the modules "
        "whose names match these patterns; frozen batch-norm layers keep their statistics",
    )
    t.add_argument(
        "--reinit-above",
        dest="reinit_above",
        type=int,
        metavar="N",
        help="after --weights, re-initialise the layers above the N-th (the model's own initialisation)",
    )
    add_nproc_arg(p)
    _add_view_args(p, tensorboard=True)

    p = add_command(
        subparsers,
        "evaluate",
        _evaluate,
        help="evaluate a run directory, checkpoint, model file, or a model name with --weights",
        description="Accuracy, per-class accuracy and confusion matrix (printed, and saved as confusion.png) of a "
        "saved run directory, checkpoint manifest (.json), run weights file or exported model file (.safetensors), "
        "or of MODEL with --weights FILE: a weight file no run produced, evaluated on --data (and --classes, "
        "--pad-to, --in-chans: what the model takes).",
    )
    p.add_argument(
        "path",
        metavar="PATH_OR_MODEL",
        help="run directory, checkpoints/NAME.json, a .weights.safetensors or exported model file; with --weights, "
        "a model name",
    )
    p.add_argument(
        "--split",
        choices=("test", "val", "train"),
        default="test",
        help="which split of the run's data: its test split, the validation split it held out, or the training "
        "split (all of it, also for a run trained on a --train-subset) (default: test)",
    )
    p.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default=None,
        help="which checkpoint of a run directory (default: the run's selected one: best, or last in a run "
        "without a validation split)",
    )
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--out", help="where to save confusion.png (default: the run directory)")
    p.add_argument(
        "--bn-recalibrate",
        action="store_true",
        help="recompute batch-norm statistics over the whole training split before evaluating (BN-Inception's "
        "test-time statistics, Ioffe & Szegedy 2015 section 3.1)",
    )
    p.add_argument(
        "--device", default="auto", help="where to evaluate: auto, cpu, cuda or cuda:N (default: auto)"
    )
    p.add_argument(
        "--tta",
        nargs="+",
        choices=tuple(TTA_MODES),
        metavar="MODE",
        help="test-time evaluation, one accuracy per mode, softmax posteriors averaged over views: "
        + "; ".join(f"{name}: {what}" for name, what in TTA_MODES.items()),
    )
    p.add_argument(
        "--scales",
        nargs="+",
        type=int,
        metavar="Q",
        help="shorter sides to rescale the images to, for --tta multiscale (required) and dense (default: the "
        "stored size)",
    )
    w = p.add_argument_group("a weight file no run produced (PATH_OR_MODEL is then a model name)")
    w.add_argument("--weights", metavar="FILE", help="weight file (.safetensors, .pth, .pt) to evaluate")
    add_weights_from_arg(w)
    add_data_setting_args(w)

    p = add_command(
        subparsers,
        "ensemble",
        _ensemble,
        help="average several runs' softmax outputs (model averaging)",
        description="Evaluate each RUN (its selected checkpoint) and the average of their softmax outputs "
        "(weighted with --weights) on one split; prints each member's accuracy and the ensemble's.",
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run directories, manifests or weights files, or one folder of runs",
    )
    p.add_argument("--weights", help="one weight per run, e.g. 1,2,1 (default: equal)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="which split (default: test)")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument(
        "--device", default="auto", help="where to evaluate: auto, cpu, cuda or cuda:N (default: auto)"
    )
    p = add_command(
        subparsers,
        "compare",
        _compare,
        help="train several models with one recipe and compare them",
        description="Train each MODEL with the same recipe into OUT/MODEL/, then print a table of parameters, the "
        "selected checkpoint's validation and test accuracy (the checkpoint chosen on the validation split), "
        "seconds per epoch and images/s, and save comparison.md/.json and comparison.png.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--out", default="runs/compare", help="folder of the comparison (default: runs/compare)")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train each model with this many seeds (--seed, --seed + 1, ...) into OUT/MODEL-seedS/ and report "
        "the mean and standard deviation (default: 1, into OUT/MODEL/)",
    )
    add_recipe_args(p)
    _add_view_args(p, tensorboard=False)
