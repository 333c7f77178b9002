"""The training engine: one run directory per run, exact resume, clear failures.

    >>> from cnnlab.train import TrainConfig, train
    >>> result = train(TrainConfig(model="lecture-simple", data="fashion-mnist", epochs=10), "runs/simple")

A run directory holds ``config.json``, ``metrics.csv`` (one row per epoch), ``results.json``,
``curves.png`` and ``checkpoints/`` (``last`` after every epoch and on Ctrl-C; ``best`` by validation
accuracy when there is a validation split). Resuming restores weights, optimiser, schedule, RNG and
the partial epoch, so a resumed run ends with the same metrics as an uninterrupted one.

The test split is touched once, for the final report: model selection (the ``best`` checkpoint, the
plateau schedule) uses the validation split held out of the training set, and with
``val_fraction=0`` nothing is selected: the last epoch is the result. When the run completes, the
selected checkpoint is evaluated on the test split; its row of ``metrics.csv`` gets the test
columns and ``selected=1``, and ``results.json`` says which checkpoint it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.data.augment import ColourPCA
from cnnlab.data.catalog import preparation_header
from cnnlab.data.loader import rank_part
from cnnlab.data.views import views_said
from cnnlab.errors import CheckpointError, InputTooSmallError, TrainingDiverged, UsageError
from cnnlab.models import check_input_size, count_params, create_model, model_info
from cnnlab.models.layers import init_glorot, init_he
from cnnlab.models.residual import full_shortcut_units, zero_init_residual_branches
from cnnlab.train import distributed
from cnnlab.train.checkpoint import restore_rng_state
from cnnlab.train.config import TrainConfig, flag_for
from cnnlab.train.optim import LRSchedule, build_optimizer
from cnnlab.train.precision import autocast, cpu_bf16_instructions, cpu_name, precision_note
from cnnlab.train.pruning import LossPruning, epoch_sizes
from cnnlab.train.rundata import prepare_run_data
from cnnlab.train.rundir import (
    RunFiles,
    RunLock,
    check_run_dir,
    nothing_to_resume,
    prepare_run_dir,
    read_run_json,
    refuse_overwrite_with_resume,
    training_storage_errors,
)
from cnnlab.train.rundir import ensure_writable_dir as ensure_writable_dir  # re-exported: it lived here
from cnnlab.train.rundir import holds_run as holds_run  # re-exported: it lived here
from cnnlab.train.rundir import read_metrics as read_metrics  # re-exported: it lived here
from cnnlab.train.shards import CoreShards, core_shards, shard_blocker
from cnnlab.train.step import TrainStep
from cnnlab.train.transfer import BATCH_NORMS, hold_frozen_norms

__all__ = [
    "autocast",
    "cpu_bf16_instructions",
    "cpu_name",
    "precision_note",
]  # re-exported: they lived here


# ---------------------------------------------------------------------------------------- device


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. Asking for CUDA on a machine without it is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UsageError(f"cannot train or evaluate on device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise distributed.no_cuda(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(
            f"device {name} was asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s); "
            "use cuda:0 up to the last one"
        )
    return device


def configure_process(threads: int | None) -> None:
    """Flush denormals (slow paths on x86 once weights get tiny), set the thread count, and keep fp32 as
    fp32 on CUDA: cuDNN's convolutions run in TF32 (10-bit mantissas) by PyTorch's default, which would
    make a run labelled fp32 compute in lower precision on a GPU (bf16 and fp16 stay opt-in, ``--amp``).

    Process-wide settings: the entry points (:func:`train`, ``compare``, the experiments, the CLI)
    apply them, for the length of the call (:func:`process_settings`); :class:`Trainer` does not.
    """
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def flushes_denormals() -> bool:
    """Whether this process flushes denormal floats to zero now (torch has a setter and no getter)."""
    return torch.tensor(1e-39, dtype=torch.float32).mul(1.0).item() == 0.0


@contextlib.contextmanager
def process_settings(threads: int | None) -> Iterator[None]:
    """:func:`configure_process` for the length of a library call, and the caller's settings back
    afterwards: thread count, denormal flushing, TF32 on CUDA and torch's CPU random number generator
    (the run seeds it), so that a notebook's later cells compute as they did before the call."""
    threads_before, flushing_before = torch.get_num_threads(), flushes_denormals()
    tf32_before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    # the CPU generator only: saving every GPU's would open a CUDA context on each from every process
    with torch.random.fork_rng(devices=[]):
        try:
            configure_process(threads)
            yield
        finally:
            torch.set_num_threads(threads_before)
            torch.set_flush_denormal(flushing_before)
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32_before


# ------------------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Loss, accuracy and confusion matrix (rows: true class, columns: predicted) of one split."""

    loss: float
    accuracy: float
    confusion: torch.Tensor
    #: softmax outputs [N, classes] and labels [N] in the loader's order (``keep_outputs=True`` only)
    probabilities: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    @property
    def per_class_accuracy(self) -> list[float]:
        """Recall of each class."""
        totals = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diag() / totals).tolist()


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader,
    num_classes: int,
    device: torch.device,
    amp: str | bool = "fp32",
    shards: CoreShards | None = None,
    dist: distributed.DistContext = distributed.SINGLE,
    keep_outputs: bool = False,
    tta: str = "center",
) -> EvalResult:
    """Mean cross-entropy, accuracy and confusion matrix of ``model`` over ``loader``.

    ``tta="flip"`` averages the softmax posteriors of each image and its mirror image
    (:func:`cnnlab.train.tta.averaged_posteriors`; the loss is that of the averaged posteriors).

    With ``shards``, each batch is split across its workers (see :mod:`cnnlab.train.shards`). With
    ``dist``, ``loader`` yields this rank's part of the split and every rank calls this: the loss sums
    and confusion matrices are summed over the ranks, so each rank gets the whole split's figures. With
    ``keep_outputs``, the result also holds every image's softmax probabilities and label (on the CPU),
    for views of single images (the most confident mistakes of ``cnnlab report``).
    """
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, amp):  # both are per thread
            return model(x)

    def batch_logits(x: torch.Tensor) -> torch.Tensor:
        if shards is not None and len(x) >= shards.workers:
            return torch.cat(shards.map(forward, [(part,) for part in x.tensor_split(shards.workers)]))
        return forward(x)

    from cnnlab.train.tta import averaged_posteriors  # here: tta imports this module

    for x, y in loader:
        if tta == "center":
            logits = batch_logits(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
        else:
            probs = averaged_posteriors(batch_logits, x, tta, tuple(x.shape[-2:]))
            logits = probs.clamp_min(1e-12).log()  # log-posteriors: their argmax and NLL are the views'
            loss_sum += F.nll_loss(logits, y, reduction="sum")
        confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes**2)
        if keep_outputs:
            kept.append((logits.softmax(1).cpu(), y.cpu()))
    dist.sum_tensors_(loss_sum, confusion)
    confusion = confusion.view(num_classes, num_classes).cpu()
    count = int(confusion.sum())
    result = EvalResult(
        float(loss_sum) / max(count, 1), float(confusion.diag().sum()) / max(count, 1), confusion
    )
    if keep_outputs:
        result.probabilities = torch.cat([p for p, _ in kept]) if kept else torch.zeros(0, num_classes)
        result.labels = torch.cat([t for _, t in kept]) if kept else torch.zeros(0, dtype=torch.int64)
    return result


# -------------------------------------------------------------------------------------- training


@dataclass
class RunResult:
    """What a finished (or interrupted) run produced."""

    run_dir: Path
    config: TrainConfig
    history: list[dict[str, Any]]
    num_params: int
    status: str = "completed"  # or "interrupted"
    best_accuracy: float = 0.0  # the selection metric's best value (validation accuracy), 0 without one
    results: dict[str, Any] = field(
        default_factory=dict
    )  # results.json: the selected checkpoint's test metrics
    extras: dict[str, Any] = field(default_factory=dict)
    #: a stop (Ctrl-C, SIGTERM) was asked for in the run's last step, so it completed: a caller with more
    #: runs to train (an experiment) stops after this one
    stop_requested: bool = False

    @property
    def final(self) -> dict[str, Any]:
        """Metrics of the last completed epoch."""
        return self.history[-1] if self.history else {}

    @property
    def test_acc(self) -> float | None:
        """Test accuracy of the selected checkpoint (None until the run has completed)."""
        return self.results.get("test_acc")

    def epoch_mean(self, key: str) -> float | None:
        """The mean of ``key`` (``epoch_seconds``, ``train_images_per_s``) over the completed epochs; None
        before the first (a run interrupted in it), so that tables show no figure rather than zero."""
        return sum(r[key] for r in self.history) / len(self.history) if self.history else None


def sized_options(model: str, options: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """``options`` with ``img_size`` set to the images' ``size`` (H, W) where the model's head is sized from it
    and it is not the model's own input size (nor given)."""
    info = model_info(model)
    options = dict(options)
    h, w = size
    if "img_size" in info.options() and "img_size" not in options and (h, w) != info.input_size[1:]:
        options["img_size"] = h if h == w else (h, w)
    return options


#: ``weight_init`` (TrainConfig) other than "model": how every conv and linear layer is re-drawn
WEIGHT_REDRAWS: dict[str, Callable[[nn.Module], None]] = {"he": init_he, "glorot": init_glorot}


def zero_init_note(model: str, zeroed: int) -> str:
    """The line a run prints and records for ``zero_init_residual``: how many residual branches start at zero."""
    if zeroed:
        return f"zero-init residual: {zeroed} residual branches start at zero"
    return (
        f"zero-init residual: {model} has no ResNet residual unit with a full-strength shortcut; "
        "no weight was zeroed"
    )


def input_too_small_fix(cfg: TrainConfig, smallest: int, largest_side: int = 0) -> str:
    """What to change when the network's input is below ``smallest``: the crop size the run asked for, the
    padding it asked for, or else padding of the stored images (to a square no smaller than their
    ``largest_side``, since padding never crops)."""
    if cfg.input_size is not None:
        return f"use --input-size {smallest} or more (input_size={smallest}), and --pad-to if the images are smaller"
    side = max(smallest, largest_side)
    if cfg.pad_to is not None:
        return f"use --pad-to {side} or more (pad_to={side})"
    return f"zero-pad the images to a square of {side} with --pad-to {side} (pad_to={side})"


def build_model_for_data(cfg: TrainConfig, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """The registry model for this data: its classes, channels and (where the head depends on it) image size."""
    options = sized_options(cfg.model, cfg.model_options, input_shape[1:])
    c = input_shape[0]
    try:
        model = create_model(
            cfg.model, num_classes=num_classes, in_chans=c, drop_rate=cfg.drop_rate, **options
        )
        check_input_size(model, input_shape)
    except InputTooSmallError as err:
        raise UsageError(f"{err}; {input_too_small_fix(cfg, err.smallest, max(input_shape[1:]))}") from None
    if cfg.weight_init != "model":  # a recipe's named deviation from the paper's initialisation
        redraw = WEIGHT_REDRAWS[cfg.weight_init]
        redraw(model)
        model.classifier_init = redraw
    if cfg.zero_init_residual:  # a recipe's named deviation (Goyal et al. 2017 Sec. 5.1), after any redraw
        zero_init_residual_branches(model)
    return model


def refuse_short_epochs(batches: int, batch_size: int, images: int, required: tuple[int, str] | None) -> None:
    """UsageError where an epoch of ``batches`` batches is shorter than ``required`` (N steps, the flag
    asking for them): ``max_steps_per_epoch`` only caps an epoch, so a shorter one would train fewer steps
    than an experiment that counts epochs x N reports."""
    if required is None or batches >= required[0]:
        return
    wanted, flag = required
    raise UsageError(
        f"an epoch of the training split is {batches} batch{'es' * (batches != 1)} of {batch_size} "
        f"({images:,} images), fewer than the {wanted} steps per epoch {flag} asks for; give "
        f"{flag} {batches} or less, or more training images (--train-subset) or a smaller --batch-size"
    )


def refuse_pruned_epochs(cfg: TrainConfig, required: tuple[int, str] | None) -> None:
    """UsageError where an experiment counts steps as epochs x N (``required``) and ``cfg`` prunes epochs."""
    if cfg.prunes and required:
        raise UsageError(f"{required[1]} needs epochs of equal length, which --prune changes; drop --prune")


def check_recipe_on_data(
    cfg: TrainConfig, data: Any, steps_per_epoch: tuple[int, str] | None = None
) -> tuple[int, int, int]:
    """Refuse a recipe that cannot train on ``data`` (a loaded :class:`cnnlab.data.DatasetSplits`) the way
    :class:`Trainer` would, without training or writing anything: its settings, the data view it asks for
    (classes, padding, crops), epochs of at least ``steps_per_epoch`` batches (as :class:`Trainer`'s) and
    its model for that view's input shape, built on the meta device (no memory, no arithmetic). Returns
    that input shape (C, H, W).

    An experiment checks every member with it first, so that a bad member fails before any other trains."""
    cfg = cfg.validate()
    run_data = prepare_run_data(cfg, torch.device("cpu"), False, data)
    refuse_short_epochs(len(run_data.train_loader), cfg.batch_size, run_data.train_images, steps_per_epoch)
    refuse_pruned_epochs(cfg, steps_per_epoch)
    with torch.device("meta"):
        build_model_for_data(cfg, len(run_data.classes), run_data.input_shape)
    return run_data.input_shape


#: the share of batch norm's starting statistics (mean 0, variance 1) left in the running estimates at
#: the end of a run above which training warns: at PyTorch's momentum 0.1, runs of fewer than 22 steps
#: (a one-epoch speedrun on 5,000 images, 10 steps, ends with 35% left and scores 10%; recalibrated, 52%)
STALE_BATCH_NORM = 0.1


def batch_norm_start_share(model: nn.Module, steps: int) -> float:
    """How much of their starting values the running statistics of ``model``'s batch-norm layers still
    hold after ``steps`` training steps: ``(1 - momentum) ** steps`` for the layer of the smallest
    momentum; 0 without such layers (or with a cumulative average, ``momentum=None``)."""
    momenta = [
        m.momentum
        for m in model.modules()
        if isinstance(m, BATCH_NORMS) and m.track_running_stats and m.momentum is not None
    ]
    return (1 - min(momenta)) ** steps if momenta else 0.0


# Settings a resumed run may change: where it runs and how long. Everything else is the saved recipe.
RESUME_MAY_CHANGE = ("epochs", "device", "threads")


def saved_config(run_dir: str | Path) -> TrainConfig:
    """The recipe saved in a run directory's ``config.json``, complete and type-checked."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise nothing_to_resume(run_dir, "run")
    fix = "train the run again with --overwrite"
    record = read_run_json(path, fix)
    try:
        return TrainConfig.from_dict(record, complete=True)
    except ValueError as err:  # a JSON object, but not a complete recipe
        raise CheckpointError(f"{path} is damaged ({err}); {fix}") from None


def recipe_changes(
    saved: TrainConfig,
    requested: TrainConfig,
    names: Iterable[str],
    labels: Mapping[str, str] | None = None,
    by_flag: bool = True,
) -> list[str]:
    """``--flag saved -> requested`` for each of ``names`` (settings a user asked for) that --resume would ignore,
    each named by its flag (by its TrainConfig field without ``by_flag``: a Python caller's config); ``labels``
    names a setting by another flag the user set it through (max_steps_per_epoch by --eval-every)."""
    labels = labels or {}
    # compared as config.json stores them: a tuple given anew (--model-option widths=16,32) equals the list saved
    stored = json.loads(json.dumps(saved.to_dict())), json.loads(json.dumps(requested.to_dict()))
    # recipe_fields only records which settings came from the recipe: a flag that changes one of them is
    # named by its own line, and the same values reached another way train the same run
    skipped = {*RESUME_MAY_CHANGE, "model", "recipe_fields"}
    return [
        f"{labels.get(name, flag_for(name) if by_flag else name)} {getattr(saved, name)!r} -> {getattr(requested, name)!r}"
        for name in names
        if name not in skipped and stored[0][name] != stored[1][name]
    ]


class _Stopped(Exception):
    """Raised inside an epoch once a stop request has been honoured and saved."""


class Trainer:
    """Holds the model, data, optimiser and schedule of one run; :meth:`fit` trains it."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        overwrite: bool = False,
        resume: bool = False,
        progress: bool = True,
        data: Any = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        tensorboard: bool = False,
        steps_per_epoch: tuple[int, str] | None = None,
    ) -> None:
        """``steps_per_epoch``: (N, the flag that asks for it) where every epoch must be exactly N steps (an
        experiment that reports steps as epochs x N, with ``max_steps_per_epoch`` N): a training split of
        fewer batches is refused, naming the flag, before anything is written."""
        self.run_dir = Path(run_dir)
        self.required_steps = steps_per_epoch
        if tensorboard:  # a missing package fails before any work
            from cnnlab.inspect.tensorboard import summary_writer_class

            summary_writer_class()
        self.tensorboard: Any = None
        refuse_overwrite_with_resume(overwrite, resume)
        # The data-parallel job this process belongs to (set up by the entry point; rank 0 of 1 without).
        self.dist = distributed.current()
        failure: Exception | None = None
        try:
            self._build(cfg, overwrite, resume, progress, data, on_epoch)
        except Exception as err:  # noqa: BLE001 - every rank learns of it below, then it is re-raised
            failure = err
        self.dist.agree(failure)  # no rank goes on to wait for one that failed
        # DDP starts here (rank 0's initial weights go to every rank).
        self.step = TrainStep(
            self.model, self.optimizer, self.schedule, self.cfg, self.device, self.shards, self.dist
        )
        self.rng_state: dict[str, Any] | None = None  # a resumed run's random streams, restored by fit
        self.history: list[dict[str, Any]] = []
        self.start_epoch, self.skip_steps, self.partial = 0, 0, None
        self.best_accuracy = -1.0
        self.stop_requested = False  # set by request_stop (a signal) on this rank, at any moment
        self.training_done = False  # the last epoch's steps are taken: a stop no longer cuts the run short
        self.stopping = False  # the stop every rank agreed on, after a step or an epoch
        # Only now that data, model and optimiser are valid is an old run replaced (or the folder made),
        # by rank 0 alone; the other ranks read the checkpoint they resume from once it is there.
        self.run_lock: RunLock | None = None
        failure = None
        try:
            if self.dist.is_main:
                # one process per run directory, until fit returns
                self.run_lock = RunLock(self.run_dir).acquire()
                with self.run_lock.released_on_error(), training_storage_errors(self.run_dir):
                    prepare_run_dir(self.run_dir, overwrite=overwrite, resume=resume)
                    if resume:
                        self._restore()
                    else:
                        self.files.write_config(self.config_record())
                    if self.colour_pca is not None:
                        self.files.write_colour_pca(self.colour_pca.to_dict())
                    # an image folder's files, labels and splits; a resumed run keeps its first record
                    if getattr(self.data, "manifest", None) is not None and self.recorded_data is None:
                        self.files.write_data_manifest(self.data.manifest)
                    if tensorboard:  # event files beside metrics.csv, which stays the record
                        from cnnlab.inspect.tensorboard import TensorBoardLog

                        self.tensorboard = TensorBoardLog(self.run_dir)
        except Exception as err:  # noqa: BLE001 - as above
            failure = err
        self.dist.agree(failure)
        if resume and not self.dist.is_main:
            self._restore()

    def _build(
        self,
        cfg: TrainConfig,
        overwrite: bool,
        resume: bool,
        progress: bool,
        data: Any,
        on_epoch: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        """Everything of a run that every rank builds alike: recipe, data, model, optimiser, schedule."""
        if resume:
            cfg = self._resumed_config(cfg)
        self.cfg = cfg.validate()
        distributed.check_world(cfg.batch_size, self.dist.world_size)
        self.progress = progress and self.dist.is_main
        self.on_epoch = on_epoch
        if self.dist.is_main:
            check_run_dir(self.run_dir, overwrite=overwrite, resume=resume)  # fail fast; nothing replaced yet
        self.device = select_device(cfg.device)
        if self.dist.active and self.device.type == "cuda":
            self.device = self.dist.device  # each rank on the GPU of its local rank
        self.amp = cfg.amp
        self.channels_last = True if cfg.channels_last is None else cfg.channels_last

        self.files = RunFiles(self.run_dir)
        saved_pca = self.files.read_colour_pca() if resume else None  # the run's own, not recomputed
        # a resumed run goes on with the files and splits it recorded, or is refused (never other splits)
        self.recorded_data = self.files.read_data_manifest() if resume else None
        run_data = prepare_run_data(
            cfg, self.device, self.channels_last, data, self.dist,
            ColourPCA.from_dict(saved_pca) if saved_pca else None, self.recorded_data,
        )  # fmt: skip
        self.colour_pca = run_data.colour_pca
        self.data, self.classes, self.input_shape = run_data.data, run_data.classes, run_data.input_shape
        self.train_loader, self.val_loader, self.test_loader = (
            run_data.train_loader, run_data.val_loader, run_data.test_loader,
        )  # fmt: skip
        self.train_images = run_data.train_images
        self.loaded_data = run_data.loaded  # before any class subset: what an experiment's members share

        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed alone
            torch.manual_seed(cfg.seed)
            self.model = build_model_for_data(cfg, len(self.classes), self.input_shape).to(self.device)
        if cfg.sync_bn and self.dist.active:
            self.model = distributed.sync_batch_norm(self.model, self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.init_weights: dict[str, str] | None = None
        self.frozen, self.init_notes = self._transfer(resume)
        if cfg.zero_init_residual and not cfg.init:  # say what it did (--init's weights replace it all)
            self.init_notes.append(zero_init_note(cfg.model, len(full_shortcut_units(self.model))))
            if self.progress:
                tqdm.write(self.init_notes[-1])
        self.num_params = count_params(self.model)
        self.steps_per_epoch = self._steps_for(self.train_loader.num_samples)
        if self.steps_per_epoch < 1:
            raise UsageError(
                f"{self.train_images} training image{'s' * (self.train_images != 1)} cannot be shared by "
                f"{self.dist.world_size} processes; "
                "use fewer processes or more images"
            )
        refuse_short_epochs(self.steps_per_epoch, cfg.batch_size, self.train_images, self.required_steps)
        refuse_pruned_epochs(cfg, self.required_steps)
        self.pruning: LossPruning | None = None
        self.epoch_order: torch.Tensor | None = None  # a pruned epoch's images in order (train_epoch)
        if cfg.prunes:
            self.pruning = LossPruning(self.train_loader.num_samples, cfg.prune, cfg.prune_random, cfg.seed)
        # steps of each epoch: all of them the same, but for pruned epochs
        cap = cfg.max_steps_per_epoch
        self.epoch_steps = [
            min(self._steps_for(size), cap or size)
            for size in epoch_sizes(self.train_loader.num_samples, cfg.epochs, cfg.prune)
        ]
        if min(self.epoch_steps, default=1) < 1:
            raise UsageError(
                f"--prune {cfg.prune} leaves too few training images for {self.dist.world_size} processes; "
                "prune less or use fewer processes"
            )
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        total_steps = sum(self.epoch_steps)
        start_share = batch_norm_start_share(self.model, total_steps)
        if start_share > STALE_BATCH_NORM and not cfg.init and self.dist.is_main:
            warnings.warn(
                f"{total_steps} training steps in all: the batch-norm running "
                f"statistics that evaluation uses will still be {start_share:.0%} their starting values "
                "(mean 0, variance 1), so validation and test accuracy can be near chance; train for more "
                "steps (more epochs or images, or a smaller --batch-size), or evaluate the run with "
                f"`cnnlab evaluate {self.run_dir} --bn-recalibrate`",
                stacklevel=3,
            )
        self.optimizer = build_optimizer(self.model, cfg)
        self.schedule = LRSchedule(self.optimizer, cfg, self.steps_per_epoch, total_steps=total_steps)
        self.shards = self._shards()

    def _steps_for(self, samples: int) -> int:
        """Steps of an epoch of ``samples`` images: whole batches and the last part, left out when some rank
        would have no image of it (``max_steps_per_epoch`` not applied)."""
        size, ranks = self.cfg.batch_size, self.dist.world_size
        steps = math.ceil(samples / size)
        if steps and samples - (steps - 1) * size < ranks:
            steps -= 1
        return steps

    def _shards(self) -> CoreShards | None:
        """The CPU batch shards to train with (None: plain operation-level threading, the default)."""
        cfg = self.cfg
        if cfg.cpu_shards < 2:
            return None
        if self.device.type != "cpu":
            raise UsageError(f"cpu_shards applies to CPU training, not {self.device}; leave it at 1")
        blocker = shard_blocker(self.model, cfg.model)
        if blocker:
            raise UsageError(f"{cfg.model} cannot be trained in CPU shards: {blocker}; leave cpu_shards at 1")
        if cfg.compile:
            raise UsageError("cpu_shards and compile do not combine; choose one")
        if self.dist.active:
            raise UsageError(distributed.SHARDS_WITH_RANKS)
        return core_shards(cfg.cpu_shards, max(1, torch.get_num_threads() // cfg.cpu_shards))

    def describe(self) -> str:
        """One line naming what this run computes with: device, precision, threads, batch mode, splits."""
        cfg = self.cfg
        where = cpu_name() if self.device.type == "cpu" else torch.cuda.get_device_name(self.device)
        count = torch.get_num_threads()
        threads = f"{count} thread{'s' * (count != 1)}" if self.device.type == "cpu" else "CUDA"
        mode = f"{self.shards.workers} CPU batch shards" if self.shards else "whole batches"
        if self.dist.active:
            share = cfg.batch_size // self.dist.world_size
            mode = (
                f"{self.dist.world_size} DDP processes ({torch.distributed.get_backend()}), "
                f"{share} image{'s' * (share != 1)} each of every batch"
            )
            threads += " per process" if self.device.type == "cpu" else ""
        val = self.data.val
        selection = (
            f"{len(val):,} val images select the checkpoint"
            if val is not None
            else "no validation split: the last epoch is the result"
        )
        images = f"{self.train_images:,} training images"
        if cfg.max_steps_per_epoch and self.steps_per_epoch == cfg.max_steps_per_epoch:
            images += f" ({self.steps_per_epoch} step{'s' * (self.steps_per_epoch != 1)} of them per epoch)"
        if cfg.prunes:
            images += (
                f" ({100 * cfg.prune:g}% of them in each epoch after the first: the highest-loss, "
                f"{100 * cfg.prune_random:g}% of those drawn at random from the rest)"
            )
        return (
            f"{cfg.model} on {cfg.data}: {self.device} ({where}), {precision_note(self.amp, self.device)}, "
            f"{threads}, {mode}, batch {cfg.batch_size}, {images}, {selection}"
        )

    # -- checkpoints --------------------------------------------------------------------------

    def _resumed_config(self, cfg: TrainConfig) -> TrainConfig:
        """The run's saved recipe, with ``cfg``'s :data:`RESUME_MAY_CHANGE`; any other difference is refused."""
        saved = saved_config(self.run_dir)
        if cfg.model != saved.model:
            raise UsageError(
                f"{self.run_dir} is a run of {saved.model!r}, not {cfg.model!r}; resume it with that model"
            )
        changes = recipe_changes(saved, cfg, [f.name for f in dataclasses.fields(TrainConfig)], by_flag=False)
        if changes:  # the CLI and the experiments refuse these first, in their own words; a script gets this
            raise UsageError(
                f"resume continues {self.run_dir} with its saved recipe, but the config asks for another: "
                f"{'; '.join(changes)}; only {', '.join(RESUME_MAY_CHANGE)} may change. Pass the saved config "
                "(cnnlab.train.engine.saved_config) with those, or start again with overwrite=True"
            )
        # Extending (or cutting short) a run recomputes the schedule for the new length, so only a run
        # interrupted within its original length continues exactly.
        return dataclasses.replace(saved, **{name: getattr(cfg, name) for name in RESUME_MAY_CHANGE})

    def header(self) -> dict[str, Any]:
        """Metadata stored with every checkpoint: enough to rebuild the model and its data."""
        return {
            "model": self.cfg.model,
            "num_classes": len(self.classes),
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "data": self.cfg.data,
            "config": self.cfg.to_dict(),
            **preparation_header(self.data.info),  # an image folder's mean, std and size: said by no registry
        }

    def save(self, name: str, epoch: int, step_in_epoch: int = 0, partial: dict | None = None) -> Path | None:
        """Save checkpoint ``name`` (``last``: with optimiser state; ``best``: weights only).

        Every rank calls it; the ranks' random streams are gathered for ``last`` and rank 0 alone
        writes (the other ranks return None).
        """
        rank_rng = self._rank_rng_states() if name == "last" and self.dist.active else None
        # the loss table, and the epoch's losses so far from every rank (a collective: before rank 0 goes on alone)
        pruning = (
            self.pruning.state_tensors(self.dist) if name == "last" and self.pruning is not None else None
        )
        if not self.dist.is_main:
            return None
        state = {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "partial": partial,
            "schedule": self.schedule.state_dict(),
            "history": self.history,
            "best_accuracy": self.best_accuracy,
            "grad_scaler": self.step.scaler.state_dict() if self.step.scaler is not None else None,
        }
        if pruning is not None:
            state["tensors"] = pruning
        optimizer = self.optimizer if name == "last" else None
        return self.files.save_checkpoint(name, self.model, self.header(), optimizer, state, rank_rng)

    def _rank_rng_states(self) -> dict[str, list[torch.Tensor]]:
        """Every rank's random streams (CPU, and its own GPU's), by rank: each rank resumes its own."""
        states = {"cpu": self.dist.gather_bytes(torch.get_rng_state())}
        if self.device.type == "cuda":
            states["cuda"] = self.dist.gather_bytes(torch.cuda.get_rng_state(self.device))
        return states

    def _restore(self) -> None:
        self.model.model_name = self.cfg.model
        try:
            state = self.files.load_checkpoint("last", self.model, self.optimizer)
        except UsageError as err:
            if self.dist.is_main:
                raise
            raise CheckpointError(
                f"rank {self.dist.rank} cannot read the checkpoint rank 0 resumes from ({err}); every node "
                "must see the run directory at the same path (shared storage) to resume"
            ) from None
        if state["epoch"] > self.cfg.epochs:
            if self.required_steps:  # an experiment that counts steps (batchnorm's --steps, --eval-every)
                steps = state["epoch"] * self.required_steps[0]
                raise UsageError(
                    f"{self.run_dir} has already trained {steps} steps ({state['epoch']} evaluations, one every "
                    f"{self.required_steps[0]}); resume it with {steps} steps or more"
                )
            raise UsageError(
                f"{self.run_dir} has already trained {state['epoch']} epochs; resume it with --epochs "
                f"{state['epoch']} or more"
            )
        self.rng_state = state.pop("rng_state")
        self.schedule.load_state_dict(state["schedule"])
        self.history = state["history"]
        self.best_accuracy = state["best_accuracy"]
        self.start_epoch = state["epoch"]
        self.skip_steps = state["step_in_epoch"]
        self.partial = state["partial"]
        if self.pruning is not None:
            self.pruning.load_state_tensors(
                state.get("tensors", {}), str(self.files.manifest("last")), self.dist
            )
        if self.step.scaler is not None and state.get("grad_scaler"):
            self.step.scaler.load_state_dict(state["grad_scaler"])
        if self.dist.is_main:
            self.files.write_config(self.config_record())

    def _transfer(self, resume: bool) -> tuple[list[str], list[str]]:
        """``--init`` (not when resuming: the checkpoint has the weights), ``--reinit-above`` and
        ``--freeze`` (before the optimiser is built, so frozen parameters are not in it)."""
        from cnnlab.train.transfer import apply_init, freeze

        cfg, notes = self.cfg, []
        if cfg.init and not resume:
            from cnnlab.weights import weight_file_sha256

            notes = apply_init(self.model, cfg.init, cfg.reinit_above, cfg.init_from, classes=self.classes)
            file, sha256 = weight_file_sha256(cfg.init)
            self.init_weights = {"file": str(file), "source": cfg.init_from, "sha256": sha256}
        elif cfg.init and resume:  # the checkpoint holds the weights; keep the record of where they came from
            saved = self.files.read_config_record()
            self.init_weights = saved.get("init_weights")
            notes = [n for n in saved.get("init_notes", []) if n.startswith("init: ")]
        elif cfg.reinit_above is not None and not cfg.init:
            raise UsageError("--reinit-above applies to weights loaded with --weights; give --weights too")
        frozen = freeze(self.model, cfg.freeze)
        if frozen:
            norms = any(
                isinstance(m, BATCH_NORMS)
                for name in frozen
                for m in self.model.get_submodule(name).modules()
            )
            notes.append(
                f"frozen: {', '.join(frozen)}" + (" (batch-norm statistics included)" if norms else "")
            )
        if self.progress:
            for note in notes:
                tqdm.write(note)
        return frozen, notes

    def config_record(self) -> dict[str, Any]:
        """What config.json holds: the recipe, and what --init and --freeze did (read back as the recipe
        alone: :data:`cnnlab.train.config.RECORDED`)."""
        record = self.cfg.to_dict()
        if self.frozen or self.init_notes:
            record.update(frozen=self.frozen, init_notes=self.init_notes)
        if self.init_weights is not None:  # the file the run started from: path, key map, SHA-256
            record["init_weights"] = self.init_weights
        return record

    # -- one epoch ------------------------------------------------------------------------------

    def _batches(self, epoch: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        self.train_loader.set_epoch(epoch)
        for step, (x, y) in enumerate(self.train_loader):
            if step >= self.epoch_steps[epoch]:
                return
            yield step, x, y

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch; returns loss, accuracy and images/s.

        A stop request (Ctrl-C, see :meth:`fit`) ends the epoch after the current batch, saves
        ``last`` with the position inside the epoch and raises :class:`_Stopped`.
        """
        self.model.train()
        hold_frozen_norms(self.model, self.frozen)  # frozen layers keep their batch-norm statistics
        # the learning rate at the epoch's start is its row's "lr" (kept across a mid-epoch resume)
        totals = self.partial or {
            "loss": 0.0,
            "correct": 0,
            "seen": 0,
            "seconds": 0.0,
            "lr": self.schedule.lr,
        }
        skip, self.skip_steps, self.partial = self.skip_steps, 0, None
        # a pruned epoch's images (cnnlab.train.pruning), and where each batch's are: their losses rank them
        self.epoch_order = None
        if self.pruning is not None:
            self.train_loader.subset = self.pruning.subset(epoch)
            self.epoch_order = self.train_loader.epoch_indices(epoch)
        bar = tqdm(
            total=self.epoch_steps[epoch],
            initial=skip,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            unit="batch",
            disable=None if self.progress else True,  # None: off when stderr is not a terminal (logs, CI)
            leave=False,
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        with self.shards.coordinating() if self.shards else contextlib.nullcontext():
            self._train_steps(epoch, skip, totals, bar, start)
        bar.close()
        if self.pruning is not None:
            self.pruning.end_epoch(self.dist)
        seconds = totals["seconds"] + time.perf_counter() - start
        return {
            "lr": totals.get("lr", self.schedule.lr),
            "train_loss": totals["loss"] / max(totals["seen"], 1),
            "train_acc": totals["correct"] / max(totals["seen"], 1),
            "epoch_seconds": seconds,
            "train_images_per_s": totals["seen"] / max(seconds, 1e-9),
        }

    def _train_steps(self, epoch: int, skip: int, totals: dict[str, Any], bar: Any, start: float) -> None:
        batches = self._batches(epoch)
        upcoming = next(batches, None)
        while upcoming is not None:
            step, x, y = upcoming
            if step < skip:  # resuming mid-epoch: same order, these were already trained
                upcoming = next(batches, None)
                continue
            first, stop = self.train_loader.global_batch(step)
            loss_value, correct, upcoming = self.step(x, y, lambda: next(batches, None), total=stop - first)
            stopping = self.stop_requested  # read once: a signal may set it at any moment
            if self.dist.active:  # the global batch's loss and accuracy, and any rank's stop request
                loss_value, correct, votes = self.dist.sum_values([loss_value, correct, stopping])
                correct, stopping = int(round(correct)), votes > 0
            if not math.isfinite(loss_value):
                bar.close()
                kept = (
                    f"the last good checkpoint is kept in {self.run_dir / 'checkpoints'}"
                    if self.files.manifest("last").is_file()
                    else "no checkpoint was saved yet (it diverged in the first epoch)"
                )
                raise TrainingDiverged(
                    f"loss became {loss_value} at epoch {epoch + 1}, step {step + 1}; {kept}. Lower the learning "
                    f"rate (now {self.schedule.lr:.3g}) or set --grad-clip"
                )
            if self.epoch_order is not None and self.step.last_losses is not None:
                lo, hi = rank_part(first, stop, self.dist.rank, self.dist.world_size)
                self.pruning.record(self.epoch_order[lo:hi], self.step.last_losses)
            totals["loss"] += loss_value * (stop - first)
            totals["correct"] += correct
            totals["seen"] += stop - first
            bar.update(1)
            if step % 10 == 0 or step + 1 == self.epoch_steps[epoch]:
                elapsed = totals["seconds"] + time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{totals['loss'] / totals['seen']:.4f}",
                    acc=f"{100 * totals['correct'] / totals['seen']:.2f}%",
                    img_s=f"{totals['seen'] / max(elapsed, 1e-9):.0f}",
                )
            self.stopping = self.stopping or stopping
            if self.stopping and step + 1 < self.epoch_steps[epoch]:
                totals["seconds"] += time.perf_counter() - start
                bar.close()
                self.save("last", epoch, step_in_epoch=step + 1, partial=totals)
                self.dist.barrier()  # every rank ends once the checkpoint is written
                raise _Stopped

    # -- the run --------------------------------------------------------------------------------

    def evaluate(self, loader: Any, tta: str | None = None) -> EvalResult:
        """:func:`evaluate` the model on ``loader`` with this run's device and shards, in fp32, averaging
        the views ``tta`` (default: the run's ``eval_tta``).

        Always fp32, even when training in bf16: the metrics are those of the weights as saved,
        the same figures ``cnnlab evaluate`` gives for the checkpoint.
        """
        # Batch-norm running statistics: rank 0's, as DDP gives every forward and as rank 0 saves.
        self.dist.broadcast_state(self.model, buffers_only=True)
        with self.shards.coordinating() if self.shards else contextlib.nullcontext():
            return evaluate(
                self.model, loader, len(self.classes), self.device, shards=self.shards, dist=self.dist,
                tta=tta or self.cfg.eval_tta,
            )  # fmt: skip

    def _agreed_stop(self) -> bool:
        """Whether the run stops now: a stop was requested on this rank or any other (all ranks agree)."""
        requested = self.stopping or self.stop_requested
        if self.dist.active:
            requested = self.dist.sum_values([requested])[0] > 0
        self.stopping = requested
        return requested

    def request_stop(self) -> None:
        """Ask the run to stop after the current batch, saving a checkpoint (what Ctrl-C does)."""
        self.stop_requested = True

    @contextlib.contextmanager
    def _ctrl_c_stops(self) -> Iterator[None]:
        """First Ctrl-C or SIGTERM: finish the batch, save, stop (every rank, after the same step).
        A second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.stop_requested:
                raise KeyboardInterrupt
            self.request_stop()
            if not self.dist.is_main:  # the ranks stop together (a vote each step): rank 0 speaks for them
                return
            if self.training_done:  # the run ends anyway, complete: say so rather than promise a stop
                tqdm.write("training is done; finishing the run's evaluation (Ctrl-C again to abort at once)")
                return
            tqdm.write("stopping after this batch and saving a checkpoint (Ctrl-C again to abort at once)")

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def fit(self) -> RunResult:
        """Train from the current epoch to ``cfg.epochs``; after a stop request, status ``interrupted``.

        Each epoch is measured on the validation split (when there is one), which alone selects the
        ``best`` checkpoint and drives the plateau schedule; the test split is evaluated once, on the
        selected checkpoint, when the run completes (:meth:`final_report`).
        """
        if self.progress:
            tqdm.write(self.describe())
            if self.start_epoch or self.skip_steps:
                within = (
                    f", step {self.skip_steps} of epoch {self.start_epoch + 1}" if self.skip_steps else ""
                )
                tqdm.write(
                    f"resumed from {self.files.manifest('last')}: {self.start_epoch} of {self.cfg.epochs} "
                    f"epochs done{within}"
                )
        # The run's random stream (dropout, stochastic depth): seeded for a new run, the saved one when
        # resuming, so that a resumed run continues exactly. Set here, when the run starts, not before.
        # Each rank has its own stream (rank 0's is the one-process stream), saved and restored per rank.
        if self.rng_state is not None:
            restore_rng_state(self.rng_state, self.run_dir / "checkpoints", self.dist.rank)
        elif self.start_epoch == 0 and not self.skip_steps:
            torch.manual_seed(distributed.rank_seed(self.cfg.seed, self.dist.rank))
        for row in self.history:  # a completed run extended with --resume: its old report no longer holds
            row.update(test_loss=None, test_acc=None, selected=None)
        lock = self.run_lock if self.run_lock is not None else contextlib.nullcontext()
        # wall time of the run so far (training, validation, checkpoints), continued across a resume:
        # the x axis of time-to-accuracy curves (cnnlab speedrun)
        earlier = float(self.history[-1].get("elapsed_s") or 0.0) if self.history else 0.0
        earlier += (
            self.partial["seconds"] if self.partial else 0.0
        )  # an epoch resumed part-way: its first part
        started = time.perf_counter() - earlier
        with self._ctrl_c_stops(), lock, training_storage_errors(self.run_dir):
            for epoch in range(self.start_epoch, self.cfg.epochs):
                try:
                    row: dict[str, Any] = {"epoch": epoch + 1, **self.train_epoch(epoch)}
                except _Stopped:
                    return self._result("interrupted")
                self.training_done = epoch + 1 == self.cfg.epochs
                if self.val_loader is not None:
                    val = self.evaluate(self.val_loader)
                    row.update(val_loss=val.loss, val_acc=val.accuracy)
                    self.schedule.step_epoch(val.loss)
                row["elapsed_s"] = time.perf_counter() - started
                self.history.append(row)
                if self.val_loader is not None and row["val_acc"] > self.best_accuracy:
                    self.best_accuracy = row["val_acc"]
                    self.save("best", epoch + 1)
                self.save("last", epoch + 1)
                if self.dist.is_main:
                    self.files.record_epochs(self.history, title=f"{self.cfg.model} on {self.cfg.data}")
                    if self.tensorboard:
                        self.tensorboard.epoch(row)
                if self.on_epoch:
                    self.on_epoch(row)
                if self.progress:
                    tqdm.write(_epoch_line(row, self.cfg.epochs))
                if self._agreed_stop() and epoch + 1 < self.cfg.epochs:
                    self.dist.barrier()
                    return self._result("interrupted")
            results = self.final_report()
            self.dist.barrier()  # rank 0 has written the report
            completed = self._result("completed", results)
            completed.stop_requested = self._agreed_stop()
        return completed

    def selected_checkpoint(self) -> tuple[str, int]:
        """(checkpoint name, epoch) that is this run's result: ``best`` by validation accuracy, else ``last``."""
        if self.val_loader is None:
            return "last", len(self.history)
        best = max(self.history, key=lambda row: row["val_acc"])  # the first epoch with the best value
        return "best", int(best["epoch"])

    def final_report(self) -> dict[str, Any]:
        """Evaluate the selected checkpoint on the test split (the only time the test split is touched),
        record it in metrics.csv and results.json, and return what results.json holds."""
        name, epoch = self.selected_checkpoint()
        if name == "best" and epoch != len(self.history):
            if self.dist.is_main:
                self.files.load_checkpoint("best", self.model)  # weights only
            self.dist.broadcast_state(self.model)  # the other ranks evaluate rank 0's weights
        test_tta = self.cfg.views_of("test")
        test = self.evaluate(self.test_loader, test_tta)
        row = self.history[epoch - 1]
        row.update(test_loss=test.loss, test_acc=test.accuracy, selected=1)
        results = {
            "model": self.cfg.model,
            "data": self.cfg.data,
            "checkpoint": name,
            "epoch": epoch,
            "epochs": len(self.history),
            "selection": "best validation accuracy" if name == "best" else "last epoch (no validation split)",
            "val_acc": row.get("val_acc"),
            "test_loss": test.loss,
            "test_acc": test.accuracy,
            "test_images": int(test.confusion.sum()),
            "test_views": test_tta,
            "precision": self.amp,
            "device": str(self.device),
            "cpu": cpu_name(),
            "threads": torch.get_num_threads(),
            "cpu_shards": self.cfg.cpu_shards,
            "processes": self.dist.world_size,
        }
        if not self.dist.is_main:
            return results
        self.files.record_results(self.history, results, title=f"{self.cfg.model} on {self.cfg.data}")
        if self.tensorboard:
            self.tensorboard.final(self.cfg.to_dict(), results, test.confusion, self.classes)
            self.tensorboard.close()
        if self.progress:
            tqdm.write(
                f"test accuracy {100 * test.accuracy:.2f}%{views_said(test_tta)} ({name} checkpoint, epoch {epoch}, "
                f"selected by {results['selection']})"
            )
        return results

    def _result(self, status: str, results: dict[str, Any] | None = None) -> RunResult:
        return RunResult(
            self.run_dir,
            self.cfg,
            list(self.history),
            self.num_params,
            status,
            max(self.best_accuracy, 0.0),
            results or {},
        )


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    parts = [
        f"epoch {int(row['epoch'])}/{epochs}",
        f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%",
    ]
    if row.get("val_acc") is not None:
        parts.append(f"val acc {100 * row['val_acc']:.2f}%")
    parts += [
        f"{row['epoch_seconds']:.1f}s",
        f"{row['train_images_per_s']:.0f} img/s",
    ]
    return " | ".join(parts)


def train(cfg: TrainConfig, run_dir: str | Path, **options: Any) -> RunResult:
    """Train ``cfg`` into ``run_dir``; returns the :class:`RunResult`. ``options`` are :class:`Trainer`'s
    keywords (``overwrite``, ``resume``, ``progress``, ``data``, ``on_epoch``, ``tensorboard``).

    An entry point: it applies the process-wide settings (:func:`configure_process`) for the run and gives
    the caller's back when it returns (:func:`process_settings`).
    """
    with process_settings(cfg.threads):
        return Trainer(cfg, run_dir, **options).fit()
