"""The training recipe as one typed record, validated before anything runs."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from cnnlab.data.catalog import check_bad_images
from cnnlab.errors import UsageError, unknown_choice

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "multistep", "plateau", "cosine", "onecycle")
# How a model's weights start: "model" is the builder's own (the paper's, where the paper states one);
# "he" re-draws every conv and linear weight He-normal (He et al. 2015 section 2.2), biases 0;
# "glorot" re-draws them Glorot-uniform (Glorot & Bengio 2010; VGG's section 3.1 trains with it), biases 0.
WEIGHT_INITS = ("model", "he", "glorot")
# Mixed precision is opt-in, so that one command gives the same numbers on every CPU: "bf16" is
# autocast to bfloat16 (CPUs with AMX bf16 units, CUDA); "fp16" is autocast to float16 with a
# gradient scaler (meant for CUDA).
PRECISIONS = ("fp32", "bf16", "fp16")
# Settings added after runs were saved without them: their value in those runs (which then still resume).
ADDED_LATER: dict[str, Any] = {
    "augment": "none", "input_size": None, "scale_range": None, "image_size": None, "bad_images": "error",
    "recipe": None, "recipe_fields": (), "init": None, "freeze": (), "reinit_above": None, "classes": (),
    "sync_bn": False, "weight_init": "model", "init_from": "cnnlab", "eval_tta": "center",
    "warmup_mode": "linear", "zero_init_residual": False, "prune": None, "prune_random": 0.1,
    "test_tta": None,
}  # fmt: skip
MAX_SEED = 2**63 - 1
#: the default share of a pruned epoch's images drawn at random from the others (cnnlab.train.pruning)
PRUNE_RANDOM = 0.1
#: warmup_mode's choices: a linear ramp from lr/W to lr over the W warm-up steps (Goyal et al. 2017
#: Sec. 2.2), or lr x CONSTANT_WARMUP_FACTOR throughout them (He et al. 2016a Sec. 4.2: 0.01, then back to 0.1)
WARMUP_MODES = ("linear", "constant")
CONSTANT_WARMUP_FACTOR = 0.1
#: eval_tta's choices: test-time modes of cnnlab.train.tta that need no scales and keep the input size
EVAL_TTA_MODES = ("center", "flip", "flip-shift")
# What config.json records beside the settings (Trainer.config_record): read back, they are left out.
RECORDED = ("frozen", "init_notes", "init_weights")
MAX_EPOCHS = 1_000_000
MAX_THREADS = 4096
FLOAT32_MAX = 3.4028234663852886e38


#: Settings whose command-line flag is not the field's name with dashes (``cnnlab train``'s flags).
FLAGS = {
    "init": "--weights",
    "init_from": "--weights-from",
    "model_options": "--model-option",
    "recipe": "--recipe",
}


def flag_for(field: str) -> str:
    """The command-line flag of TrainConfig ``field`` (``crop_padding`` -> ``--crop-padding``), for messages."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run directory.

    The defaults are the recipe measured in the README (SGD with Nesterov momentum, one-cycle,
    batch 128, channels_last, fp32, 10% of the training set held out for model selection). They
    are the same on every machine: faster numerics (``amp``) and CPU batch shards are opt-in.
    """

    model: str = "lecture-simple"
    data: str = "fashion-mnist"
    epochs: int = 10
    batch_size: int = 128
    accum_steps: int = 1  # compute each batch's gradient in this many micro-batches (memory; same update)
    # evaluation batches small enough for the CPU's caches: 1.2-1.7x faster fp32 evaluation than 1000 (docs/training.md)
    eval_batch_size: int = 256
    # optimiser (weight decay never applies to norm and bias parameters)
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    # schedule: per-step factors on lr, with a warm-up (linear or constant)
    schedule: str = "onecycle"
    warmup_epochs: float = 0.0
    warmup_mode: str = "linear"  # one of WARMUP_MODES
    step_size: int = 3  # step: epochs between decays
    milestones: tuple[int, ...] = ()  # multistep: epochs where lr is multiplied by gamma
    gamma: float = 0.1
    patience: int = 2  # plateau: epochs without improvement before decaying
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    # regularisation
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    drop_rate: float | None = None
    crop_padding: int = 0
    flip: bool = False
    augment: str = "none"  # a training pipeline of cnnlab.data.augment (cifar, alexnet, vgg, inception ...)
    input_size: int | None = None  # the square crop the network sees, when smaller than the stored images
    scale_range: tuple[int, int] | None = None  # vgg augmentation: shorter side S in [Smin, Smax]
    # the views validation and the final test average (softmax posteriors): "center", "flip" (the image
    # and its mirror, cnnlab.train.tta: twice the evaluation's cost) or "flip-shift" (six views)
    eval_tta: str = "center"
    # the final test's views alone, where they differ from validation's (None: eval_tta): the speedrun
    # recipe validates every epoch on the centre crop and tests once on six views
    test_tta: str | None = None
    aux_loss: bool = True  # use the model's auxiliary heads in the loss (GoogLeNet: 0.3 each)
    # data pruning (cnnlab.train.pruning): after the first epoch, each epoch trains on this share of the
    # training split, the images of highest loss when last seen, prune_random of them drawn at random
    prune: float | None = None  # 1: every image every epoch (turns a recipe's pruning off)
    prune_random: float = 0.1  # PRUNE_RANDOM
    # data
    val_fraction: float = (
        0.1  # held out of the training set (seeded); selects the checkpoint. 0: the last epoch
    )
    train_subset: int | None = None  # train on this many images (a seeded sample) for budget runs
    data_dir: str | None = None
    pad_to: int | None = None
    in_chans: int | None = None  # repeat grey images to this many channels (3 for ImageNet-shaped nets)
    # image folders: stored size (shorter side resized, centre crop) and what to do with unreadable images
    image_size: int | None = None
    bad_images: str = "error"
    model_options: dict[str, Any] = field(default_factory=dict)
    # reproducibility and speed
    seed: int = 0
    device: str = "auto"
    channels_last: bool | None = None  # None: on where it is faster (CUDA, and CPU for conv nets)
    threads: int | None = None
    cpu_shards: int = 1  # >1: split each CPU batch into this many shards, one per core (cnnlab.train.shards)
    sync_bn: bool = False  # data-parallel runs: batch norm over the global batch (cnnlab.train.distributed)
    compile: bool = False
    amp: str = "fp32"  # one of PRECISIONS; anything but fp32 is opt-in
    max_steps_per_epoch: int | None = None  # for smoke runs and benchmarks
    # provenance: the named recipe (cnnlab.train.recipes) and the fields whose value came from it
    recipe: str | None = None
    recipe_fields: tuple[str, ...] = ()
    # transfer (cnnlab.train.transfer): start from weights, freeze layers, re-initialise the top ones
    init: str | None = None  # a weight file (any --weights-from source), run directory or checkpoint manifest
    init_from: str = (
        "cnnlab"  # its key map: cnnlab, torchvision, timm, or SOURCE:NAME (cnnlab.weights.load_weights)
    )
    freeze: tuple[str, ...] = ()  # ("N",): the first N conv/fc layers; else module-name patterns
    reinit_above: int | None = None  # re-initialise the conv/fc layers after the first N (after --weights)
    classes: tuple[int, ...] = ()  # train on these classes only, relabelled 0..k-1 (cnnlab.data.class_subset)
    weight_init: str = "model"  # one of WEIGHT_INITS: the model's own initialisation, "he" or "glorot"
    # every residual branch starts at zero (cnnlab.models.residual.zero_init_residual_branches)
    zero_init_residual: bool = False

    def check_types(self) -> None:
        """Each field's value of its annotated type (a path where text belongs is taken as its text), so that
        ``lr="0.1"`` or ``freeze="12"`` (read one character at a time) is a usage error naming the field."""
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, os.PathLike) and _fits("", hints[item.name]):
                setattr(self, item.name, value := os.fspath(value))
            if not _fits(value, hints[item.name]):
                hint = hints[item.name]
                shown = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
                raise UsageError(
                    f"training setting {item.name} takes {shown}, got {value!r} ({type(value).__name__})"
                )

    def validate(self) -> TrainConfig:
        """Raise :class:`UsageError` on any invalid value; return self."""
        self.check_types()
        if self.optimizer not in OPTIMIZERS:
            raise unknown_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise unknown_choice("schedule", self.schedule, SCHEDULES)
        if self.warmup_mode not in WARMUP_MODES:
            raise unknown_choice("warmup mode", self.warmup_mode, WARMUP_MODES)
        if self.weight_init not in WEIGHT_INITS:
            raise unknown_choice("weight initialisation", self.weight_init, WEIGHT_INITS)
        if self.eval_tta not in EVAL_TTA_MODES:
            raise unknown_choice("evaluation test-time mode", self.eval_tta, EVAL_TTA_MODES)
        if self.test_tta is not None and self.test_tta not in EVAL_TTA_MODES:
            raise unknown_choice("test view mode", self.test_tta, EVAL_TTA_MODES)
        _whole("epochs", self.epochs, 1)
        if self.epochs > MAX_EPOCHS:
            raise UsageError(f"epochs must be at most {MAX_EPOCHS:,}, got {self.epochs}")
        _whole("batch_size", self.batch_size, 1)
        _whole("accum_steps", self.accum_steps, 1)
        if self.accum_steps > self.batch_size:
            raise UsageError(
                f"accum_steps ({self.accum_steps}) cannot exceed the batch size ({self.batch_size})"
            )
        _whole("eval_batch_size", self.eval_batch_size, 1)
        _whole("step_size", self.step_size, 1)
        _whole("patience", self.patience, 0)
        _whole("crop_padding", self.crop_padding, 0)
        if self.amp not in PRECISIONS:
            raise unknown_choice("precision", str(self.amp), PRECISIONS)
        for name in ("lr", "momentum", "weight_decay", "gamma", "label_smoothing", "min_lr_ratio",
                     "warmup_epochs", "val_fraction", "grad_clip", "drop_rate", "prune", "prune_random"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UsageError(f"{name} must be a finite number, got {value}")
            if value is not None and abs(value) > FLOAT32_MAX:  # the optimiser holds it in fp32 tensors
                raise UsageError(f"{name} must be at most {FLOAT32_MAX:.3g}, got {value}")
        if not self.lr > 0:
            raise UsageError(f"learning rate must be greater than 0, got {self.lr}")
        _whole("seed", self.seed, 0)
        if self.seed > MAX_SEED:
            raise UsageError(f"seed must be at most 2**63 - 1 ({MAX_SEED}), got {self.seed}")
        if self.schedule == "plateau" and self.val_fraction == 0:
            raise UsageError(
                "the plateau schedule decays on the validation loss, and val_fraction 0 leaves no validation "
                "split; set --val-fraction above 0 or choose another schedule"
            )
        for name, value, lo, hi in (
            ("momentum", self.momentum, 0.0, 1.0),
            ("gamma", self.gamma, 0.0, 1.0),
            ("label_smoothing", self.label_smoothing, 0.0, 1.0),
            ("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0),
        ):
            if not lo <= value < hi and not (name == "gamma" and value == 1.0):
                raise UsageError(f"{name} must be in [{lo:g}, {hi:g}), got {value}")
        if self.weight_decay < 0:
            raise UsageError(f"weight_decay must be at least 0, got {self.weight_decay}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"validation fraction must be in [0, 1), got {self.val_fraction}")
        if self.schedule == "onecycle" and self.warmup_epochs:
            raise UsageError(
                "warmup_epochs does not apply to the onecycle schedule, which warms up over its first 25% of "
                "steps; leave it at 0 or choose another schedule"
            )
        if (
            self.warmup_mode != "linear"
            and not self.warmup_epochs
            and "warmup_mode" not in self.recipe_fields
        ):
            # a mode chosen for a warm-up that is not there would change nothing: say so (a recipe's own
            # mode stays quiet when its warm-up is turned off)
            raise UsageError(
                f"warmup_mode {self.warmup_mode} shapes a warm-up, and warmup_epochs is 0: set warmup_epochs "
                "above 0, or leave warmup_mode out"
            )
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise UsageError(
                f"warmup_epochs must be between 0 and epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UsageError(f"grad_clip must be greater than 0, got {self.grad_clip}")
        if self.prune is not None:
            if not 0.0 < self.prune <= 1.0:
                raise UsageError(
                    f"prune is the share of the training images each epoch after the first trains on, in (0, 1] "
                    f"(1: every image, no pruning), got {self.prune}"
                )
            if self.prunes and self.schedule in ("step", "multistep"):
                raise UsageError(
                    f"the {self.schedule} schedule counts epochs in steps, which pruned epochs change; with prune, "
                    "choose onecycle, cosine, constant or plateau (or set prune to 1: no pruning)"
                )
        if not 0.0 <= self.prune_random < 1.0:
            raise UsageError(f"prune_random must be in [0, 1), got {self.prune_random}")
        if not self.prunes and self.prune_random != PRUNE_RANDOM and "prune_random" not in self.recipe_fields:
            raise UsageError(
                "prune_random shapes data pruning, which is off: set prune too, or leave prune_random out"
            )
        if self.drop_rate is not None and not 0.0 <= self.drop_rate < 1.0:
            raise UsageError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if any(m < 1 or m > self.epochs for m in self.milestones) or list(self.milestones) != sorted(
            self.milestones
        ):
            raise UsageError(
                f"milestones must be increasing epochs between 1 and {self.epochs}, got {list(self.milestones)}"
            )
        if self.threads is not None:
            _whole("threads", self.threads, 1)
            if self.threads > MAX_THREADS:
                raise UsageError(f"threads must be at most {MAX_THREADS}, got {self.threads}")
        _whole("cpu_shards", self.cpu_shards, 1)
        if self.cpu_shards > self.batch_size:
            raise UsageError(
                f"cpu_shards ({self.cpu_shards}) cannot exceed the batch size ({self.batch_size})"
            )
        if self.max_steps_per_epoch is not None:
            _whole("max_steps_per_epoch", self.max_steps_per_epoch, 1)
        if self.train_subset is not None:
            _whole("train_subset", self.train_subset, 1)
        if self.in_chans is not None:
            _whole("in_chans", self.in_chans, 1)
        if self.pad_to is not None:
            _whole("pad_to", self.pad_to, 1)
        if self.input_size is not None:
            _whole("input_size", self.input_size, 1)
        if self.scale_range is not None:
            for value in self.scale_range:
                _whole("each of scale_range", value, 1)
        self.augmentation()  # the pipeline checks its own settings
        if self.image_size is not None:
            _whole("image_size", self.image_size, 1)
        check_bad_images(self.bad_images)
        for key, flag in (
            ("num_classes", "--classes"),
            ("in_chans", "--in-chans"),
            ("drop_rate", "--drop-rate"),
        ):
            if key in self.model_options:  # the builder takes them from these settings: no second way
                raise UsageError(f"{key} is set by the training settings ({flag}), not as a model option")
        if self.reinit_above is not None:
            _whole("reinit_above", self.reinit_above, 0)
            if self.reinit_above == 0:  # every layer fresh: the loaded weights would all be discarded
                raise UsageError(
                    "reinit_above 0 re-initialises every layer, which discards all the loaded weights; "
                    "keep at least the first layer (1), or train without weights"
                )
        if not isinstance(self.init_from, str) or not self.init_from:
            raise UsageError(f"init_from must name a weight source, got {self.init_from!r}")
        for index in self.classes:
            _whole("class index", index, 0)
        if len(set(self.classes)) != len(self.classes):
            raise UsageError(f"classes must name each class once, got {list(self.classes)}")
        # one class is refused with the data (rundata), after the indices are checked against its classes
        return self

    @property
    def prunes(self) -> bool:
        """Whether later epochs train on a share of the images (data pruning, ``prune`` below 1)."""
        return self.prune is not None and self.prune < 1.0

    def views_of(self, split: str) -> str:
        """The test-time mode this recipe evaluates ``split`` with: ``test_tta`` (else ``eval_tta``) for
        the final test, ``eval_tta`` for validation."""
        return (self.test_tta or self.eval_tta) if split == "test" else self.eval_tta

    def augmentation(self, pca: Any = None) -> Any:
        """The training :class:`cnnlab.data.augment.Augment` of this recipe (``pca``: alexnet's colour PCA)."""
        from cnnlab.data.augment import Augment

        return Augment(
            crop_padding=self.crop_padding, flip=self.flip, pipeline=self.augment,
            input_size=self.input_size, scale_range=self.scale_range, pca=pca,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Any, *, complete: bool = False) -> TrainConfig:
        """Inverse of :meth:`to_dict`, type-checked; unknown keys are an error (a config from a newer version).

        ``complete``: every setting must be present (a saved ``config.json``), so that a damaged file is
        refused rather than silently filled in with today's defaults.
        """
        if not isinstance(values, dict):
            raise UsageError(f"training settings must be a JSON object, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k not in RECORDED}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"unknown training settings: {', '.join(unknown)}")
        values = {key: _legacy(key, value) for key, value in values.items()}
        values = {**{key: value for key, value in ADDED_LATER.items() if key not in values}, **values}
        missing = sorted(names - set(values))
        if complete and missing:
            raise UsageError(f"training settings are missing: {', '.join(missing)}")
        config = cls(**values)
        config.check_types()
        for key in ("betas", "milestones", "scale_range", "recipe_fields", "freeze", "classes"):
            if getattr(config, key) is not None:
                setattr(config, key, tuple(getattr(config, key)))
        return config


def _legacy(key: str, value: Any) -> Any:
    """Values as older versions saved them: ``amp`` was True/False/None (None: bf16 where fast)."""
    if key == "amp" and (value is None or isinstance(value, bool)):
        return "bf16" if value else "fp32"
    if key == "cpu_shards" and value is None:
        return 1
    return value


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type hint (int, float, bool, str, X | None, tuples, dicts)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return True


def _whole(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
