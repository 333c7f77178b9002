"""Evaluate a saved run or checkpoint: accuracy, per-class accuracy, confusion matrix (printed and plotted)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.data.catalog import DatasetInfo
from cnnlab.errors import CheckpointError, UsageError, unknown_choice
from cnnlab.models.registry import require_registered
from cnnlab.train.checkpoint import load_weights, read_manifest
from cnnlab.train.config import TrainConfig
from cnnlab.train.engine import EvalResult, build_model_for_data, configure_process, evaluate, select_device
from cnnlab.train.plots import plot_confusion
from cnnlab.train.rundir import RunFiles, holds_run, read_run_json
from cnnlab.train.transfer import BATCH_NORMS


@dataclass
class CheckpointEvaluation:
    """The result of :func:`evaluate_checkpoint`."""

    model: str
    data: str
    split: str
    classes: list[str]
    result: EvalResult
    weights: Path
    confusion_png: Path | None
    checkpoint: str = ""  # "best", "last", or the file's name
    epoch: int | None = None
    note: str = ""  # why this checkpoint, when it is not the one asked for
    warnings: list[str] = field(default_factory=list)
    #: the split's uint8 images, in the order of ``result.probabilities`` (with ``keep_outputs`` only)
    images: torch.Tensor | None = None
    #: the model evaluated, with its weights, and its input shape (C, H, W)
    network: torch.nn.Module | None = None
    input_shape: tuple[int, int, int] | None = None

    def report(self) -> str:
        """Which checkpoint, accuracy, per-class accuracy and the confusion matrix as text."""
        r = self.result
        width = max(len(c) for c in self.classes)
        epoch = f"epoch {self.epoch}" if self.epoch is not None else "epoch not recorded"
        lines = [
            f"{self.model} on {self.data} ({self.split} split, {int(r.confusion.sum())} images)",
            f"checkpoint {self.checkpoint} ({epoch}): {self.weights}"
            + (f"; {self.note}" if self.note else ""),
            f"accuracy {100 * r.accuracy:.2f}%   loss {r.loss:.4f}",
            "",
            "per-class accuracy:",
        ]
        lines += [f"  {c:<{width}}  {100 * a:6.2f}%" for c, a in zip(self.classes, r.per_class_accuracy)]
        lines += ["", "confusion matrix (rows: true, columns: predicted):"]
        cell = max(5, len(str(int(r.confusion.max()))) + 1)
        lines.append(" " * (width + 2) + "".join(f"{i:>{cell}}" for i in range(len(self.classes))))
        for i, (c, row) in enumerate(zip(self.classes, r.confusion.tolist())):
            lines.append(f"{c:<{width}}{i:>2}" + "".join(f"{v:>{cell}}" for v in row))
        if self.confusion_png:
            lines += ["", f"confusion matrix plot: {self.confusion_png}"]
        lines += [f"cnnlab: warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass
class CheckpointChoice:
    """The weights file :func:`resolve_checkpoint` picked, and what to say about it."""

    weights: Path
    sha256: str | None  # None: a bare weights file, no manifest to check it against
    name: str
    epoch: int | None
    run_dir: Path  # where evaluate's outputs go unless --out says otherwise
    note: str = ""


def _run_dir_of(folder: Path) -> Path:
    return folder.parent if folder.name == "checkpoints" else folder


def runs_in(folder: Path) -> list[Path]:
    """Subfolders of ``folder`` holding a run with a checkpoint (the runs of a comparison)."""
    return sorted(
        sub
        for sub in folder.iterdir()
        if sub.is_dir() and any((sub / "checkpoints" / f"{n}.json").is_file() for n in ("best", "last"))
    )


#: a run directory's checkpoints by name (None: the run's selected one)
CHECKPOINT_CHOICES = (None, "best", "last")


def resolve_checkpoint(path: str | Path, which: str | None = None) -> CheckpointChoice:
    """A run directory, a manifest (``.json``) or a weights file -> the checkpoint to evaluate.

    In a run directory ``which`` None (or ``best``, the CLI's default) picks the run's selected
    checkpoint: ``best`` where there is one (runs with a validation split), else ``last``.
    """
    if which not in CHECKPOINT_CHOICES:
        raise unknown_choice("checkpoint", str(which), [c for c in CHECKPOINT_CHOICES if c])
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no run directory or checkpoint at {path}")
    if path.is_dir():
        folder = path / "checkpoints"
        note = ""
        if which == "last":
            name = "last"
        elif (folder / "best.json").is_file():
            name = "best"
        else:
            name = "last"
            note = "the run has no best checkpoint (no validation split), so its result is its last epoch"
        if not (folder / f"{name}.json").is_file():
            runs = [] if folder.exists() else runs_in(path)
            if (path / "comparison.json").is_file() or runs:
                kind = (
                    "a comparison folder (cnnlab compare)"
                    if (path / "comparison.json").is_file()
                    else "a folder"
                )
                listed = ", ".join(str(r) for r in runs) or "none has a checkpoint yet"
                raise UsageError(f"{path} is {kind} of runs, not a run; name one of its runs: {listed}")
            raise UsageError(f"no run in {path}: it has no checkpoints/{name}.json; name a run directory")
        choice = resolve_checkpoint(folder / f"{name}.json")
        config = path / "config.json"
        if note and choice.epoch == 0 and config.is_file():  # stopped before its first epoch ended
            if read_run_json(config, "fix or delete it").get("val_fraction", 0) > 0:
                note = (
                    "the run has no best checkpoint yet: it stopped in its first epoch, before its first "
                    "validation, so this is a mid-epoch checkpoint; finish the run with --resume"
                )
        choice.note = note
        return choice
    if path.suffix == ".json":
        manifest = read_manifest(path)  # refuses names outside the manifest's folder
        return CheckpointChoice(
            path.parent / manifest["files"]["weights"],
            manifest["sha256"]["weights"],
            path.stem,
            manifest.get("epoch"),
            _run_dir_of(path.parent),
        )
    if path.suffix != ".safetensors":
        from cnnlab.weights import TORCH_SUFFIXES, check_torch_file_start

        suffix = path.suffix.lower()
        if suffix in TORCH_SUFFIXES and path.is_file():
            check_torch_file_start(path)  # a web page saved as .pth: what it is, not a usage hint
        hint = (
            "; an ONNX model runs with cnnlab predict"
            if suffix == ".onnx"
            else "; a bare state dict is evaluated as MODEL --weights FILE"
            if suffix in TORCH_SUFFIXES
            else ""
        )
        raise UsageError(
            f"{path} is not a checkpoint: name a run directory, a checkpoint manifest (.json) or a "
            f".safetensors file cnnlab wrote{hint}"
        )
    manifest_path = manifest_beside(path)
    if manifest_path is not None:
        return resolve_checkpoint(manifest_path)
    return CheckpointChoice(path, None, path.name, None, _run_dir_of(path.parent))


def manifest_beside(weights: Path) -> Path | None:
    """The checkpoint manifest in ``weights``' folder that names it (a run's weights file named directly),
    or None: that manifest vouches for the file's bytes, as when the run or the manifest is named."""
    for manifest_path in sorted(weights.parent.glob("*.json")):
        try:
            manifest = read_manifest(manifest_path)
        except (CheckpointError, UsageError):
            continue  # not a checkpoint manifest: other JSON files may sit beside a model file
        if manifest["files"].get("weights") == weights.name:
            return manifest_path
    return None


def resolve_weights(path: str | Path, which: str | None = None) -> tuple[Path, str | None]:
    """A run directory, a manifest (``.json``) or a weights file -> (weights file, expected SHA-256)."""
    choice = resolve_checkpoint(path, which)
    return choice.weights, choice.sha256


def check_training_header(weights_path: Path, header: dict) -> TrainConfig:
    """The training config of a weights file's header, or a CheckpointError saying what is missing."""
    if "config" not in header:
        raise CheckpointError(
            f"{weights_path} has no cnnlab training header; it was not saved by cnnlab train"
        )
    shape = header.get("input_shape")
    if (
        not isinstance(header.get("num_classes"), int)
        or header["num_classes"] < 1
        or not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(v, int) and v > 0 for v in shape)
        or not isinstance(header.get("classes", []), list)
    ):
        raise CheckpointError(f"{weights_path} has a damaged header (num_classes, input_shape or classes)")
    try:
        if not isinstance(header["config"], dict):
            raise TypeError("not an object")
        config = TrainConfig.from_dict(header["config"])
    except (UsageError, TypeError, ValueError) as err:
        raise CheckpointError(f"{weights_path} has a damaged training config in its header: {err}") from None
    require_registered(config.model, weights_path)
    return config


@dataclass
class SavedModel:
    """A saved run's model rebuilt on its device, with the dataset it was trained on (its class subset)."""

    model: nn.Module
    cfg: TrainConfig
    header: dict
    data: Any  # cnnlab.data.DatasetSplits (None: loaded without its data)
    device: torch.device
    choice: CheckpointChoice

    @property
    def data_info(self) -> DatasetInfo:
        """How the run prepared its images (mean, std, size, channels): its checkpoint's record, else the
        registry's entry for its dataset (:func:`cnnlab.data.catalog.run_dataset_info`)."""
        from cnnlab.data.catalog import run_dataset_info

        return run_dataset_info(self.cfg.data, self.header)

    @property
    def classes(self) -> list[str]:
        """The class names the model predicts, in order."""
        from cnnlab.data.catalog import dataset_info

        named = self.header.get("classes") or (self.data or dataset_info(self.cfg.data)).info.classes
        return [str(c) for c in named]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) the model takes."""
        return tuple(self.header["input_shape"])

    def split(self, name: str) -> Any:
        """The run's ``test``, ``val`` or ``train`` split (a usage error where the run has none)."""
        splits = {"test": self.data.test, "val": self.data.val, "train": self.data.train}
        if name not in splits:
            raise unknown_choice("split", str(name), splits)
        chosen = splits[name]
        if chosen is None:
            raise UsageError(f"this run has no {name} split (it was trained with val_fraction 0)")
        return chosen

    def loader(self, split: Any, centre_crop: bool = True) -> Any:
        """An unshuffled loader of ``split`` as the run evaluated its images (padding, channels and, with
        ``centre_crop``, the centre crop of its input size), or at their stored (padded) size for test-time
        views."""
        from cnnlab.data import Augment, BatchLoader

        cfg = self.cfg
        return BatchLoader(
            split, batch_size=cfg.eval_batch_size, shuffle=False, seed=cfg.seed,
            augment=Augment(input_size=cfg.input_size) if centre_crop else None, mean=self.data.info.mean,
            std=self.data.info.std, device=self.device, channels_last=True, pad_to=cfg.pad_to,
            out_chans=cfg.in_chans,
        )  # fmt: skip


def model_with_weights(
    model: str,
    weights: str | Path,
    weights_from: str = "cnnlab",
    *,
    settings: dict[str, Any] | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    data: Any = None,
) -> SavedModel:
    """Registry model ``model`` with the weight file ``weights`` (read through ``weights_from``'s key map,
    :func:`cnnlab.weights.load_weights`), and the dataset to evaluate it on: for weights no run produced.

    ``settings`` are the training settings that say what the model takes: ``data`` (default
    fashion-mnist), ``classes``, ``pad_to``, ``in_chans``, ``image_size`` and ``model_options``. The model is
    built for that data (classes, channels, size) and must fit the file exactly: a classifier of another
    class count is refused, as evaluating a new classifier means nothing. ``weights_from`` ``SOURCE:NAME``
    also builds ``model`` with the options that compute that reference's function.
    """
    from cnnlab.data import class_subset
    from cnnlab.train.rundata import load_config_data
    from cnnlab.weights import ClassCountMismatch, load_weights, parse_weights_from, weight_file_sha256

    settings = dict(settings or {})
    parse_weights_from(weights_from)
    if ":" in weights_from:
        from cnnlab.references import reference_model_options

        settings["model_options"] = reference_model_options(
            weights_from, model, dict(settings.get("model_options") or {})
        )
    cfg = TrainConfig(model=model, **settings).validate()
    if data_dir is not None:
        cfg.data_dir = data_dir
    file, sha256 = weight_file_sha256(weights)
    configure_process(cfg.threads)
    dev = select_device(device)
    if data is None:
        data = load_config_data(cfg)
    available = len(data.info.classes)  # before any --classes subset: what --classes can choose from
    if cfg.classes:
        data = class_subset(data, cfg.classes)
    images = data.test.images
    chans = cfg.in_chans or (1 if images.dim() == 3 else int(images.shape[1]))
    h, w = (cfg.pad_to, cfg.pad_to) if cfg.pad_to else tuple(int(v) for v in images.shape[-2:])
    classes = [str(c) for c in data.info.classes]
    net = build_model_for_data(cfg, len(classes), (chans, h, w))
    try:
        load_weights(net, weights, weights_from)
    except ClassCountMismatch as err:  # the fix here is the data's classes, not a new classifier
        wanted = err.file_classes
        if wanted == available and cfg.classes:
            fix = f"evaluate it on all {available} classes of the data (drop --classes), or evaluate "
        elif wanted <= available:  # a subset of this data's classes can match the classifier
            example = ",".join(map(str, range(wanted))) if wanted <= 10 else f"{wanted} indices"
            fix = (
                f"choose {wanted} of the data's {available} classes (--classes, e.g. {example}), or evaluate "
            )
        else:
            fix = (
                f"the data has only {available} classes, so fine-tune it on them first (cnnlab train "
                f"{cfg.model} --weights {weights} --data ...), or evaluate "
            )
        raise UsageError(
            f"{weights} has a {wanted}-class classifier and the data has {err.model_classes} classes: {fix}it "
            "on the dataset it was trained on (--data)"
        ) from None
    net = net.to(dev, memory_format=torch.channels_last).eval()
    header = {"num_classes": len(classes), "input_shape": [chans, h, w], "classes": classes}
    # its plot goes beside the file, but never into a run whose checkpoint it is: evaluated on other data
    # here, it would replace the run's own confusion.png
    where = Path.cwd() if file.parent.name == "checkpoints" and holds_run(file.parent.parent) else file.parent
    beside = manifest_beside(file)  # a run's weights file: its manifest records the epoch
    epoch = read_manifest(beside).get("epoch") if beside is not None else None
    choice = CheckpointChoice(file, sha256, file.name, epoch, where)
    return SavedModel(net, cfg, header, data, dev, choice)


def load_saved_model(
    path: str | Path,
    *,
    which: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    data: Any = None,
    with_data: bool = True,
    weights: str | Path | None = None,
    weights_from: str = "cnnlab",
    settings: dict[str, Any] | None = None,
) -> SavedModel:
    """Rebuild the model saved at ``path`` (run directory, manifest or weights file) with its weights, on
    ``device`` in evaluation mode (the SHA-256 of the weights checked against the manifest), and load its
    dataset as its run split it (or take ``data``, the same dataset already loaded; ``with_data=False``:
    none, for looking at the model alone).

    With ``weights``, ``path`` is a model name instead: :func:`model_with_weights` (``settings``: its data,
    which it loads: the data says what the model takes)."""
    from cnnlab.data import class_subset
    from cnnlab.train.rundata import handed_in_data, load_config_data

    if weights is not None:
        return model_with_weights(
            str(path), weights, weights_from, settings=settings, data_dir=data_dir, device=device, data=data
        )
    if settings:
        flags = ", ".join(
            "--" + name.replace("_", "-").replace("model-options", "model-option")
            for name in sorted(settings)
        )
        raise UsageError(
            f"{flags} only {'applies' if len(settings) == 1 else 'apply'} with --weights (a model name and a "
            f"weight file); the run {path} carries its own settings, so leave {'it' if len(settings) == 1 else 'them'} out"
        )
    choice = resolve_checkpoint(path, which)
    state, header = load_weights(choice.weights, choice.sha256)
    cfg = check_training_header(choice.weights, header)
    if data_dir is not None:
        cfg.data_dir = data_dir
    configure_process(cfg.threads)
    dev = select_device(device)
    # an image folder must still hold the files the run recorded: its splits are the run's, or refused
    recorded = RunFiles(choice.run_dir).read_data_manifest() if with_data or data is not None else None
    if data is None and with_data:
        data = load_config_data(cfg, recorded=recorded)
    elif data is not None:
        data = handed_in_data(cfg, data, recorded)
    if cfg.classes and data is not None:  # the run's class-subset view (transfer experiments)
        data = class_subset(data, cfg.classes)
    model = build_model_for_data(cfg, header["num_classes"], tuple(header["input_shape"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{choice.weights} does not fit {cfg.model}: {str(err).splitlines()[0]}"
        ) from None
    model = model.to(dev, memory_format=torch.channels_last).eval()
    return SavedModel(model, cfg, header, data, dev, choice)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Any) -> int:
    """Replace every batch-norm layer's running mean and variance by the statistics of the whole of
    ``loader`` (a cumulative average over its batches: ``momentum=None``); the rest of the model stays
    in eval mode (no dropout). Returns how many layers were recomputed."""
    norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS)]
    model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for x, _ in loader:
        model(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
        m.eval()
    return len(norms)


def evaluate_checkpoint(
    path: str | Path,
    *,
    split: str = "test",
    data_dir: str | None = None,
    which: str | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
    bn_recalibrate: bool = False,
    plot: bool = True,
    keep_outputs: bool = False,
    weights: str | Path | None = None,
    weights_from: str = "cnnlab",
    settings: dict[str, Any] | None = None,
    data: Any = None,
) -> CheckpointEvaluation:
    """Rebuild the model saved at ``path`` (run directory, manifest or weights file) and evaluate it.

    ``bn_recalibrate``: recompute the batch-norm statistics over the whole training split first (as
    BN-Inception is tested, Ioffe & Szegedy 2015 section 3.1; slide 004) instead of the running averages.
    The confusion matrix is saved as ``confusion.png`` in ``out_dir`` (default: the run directory)
    unless ``plot`` is False; failing to save it (a full disk, read-only storage) is a warning in the
    report, not an error. ``keep_outputs``: the result also holds each image's probabilities (see
    :func:`cnnlab.train.engine.evaluate`) and :attr:`CheckpointEvaluation.images` the split's images.
    With ``weights`` (a weight file no run produced), ``path`` is a model name: :func:`model_with_weights`.
    ``data``: the run's dataset already in memory (:func:`cnnlab.data.tensor_splits` for data a script
    handed in), split as the run split it.
    """
    saved = load_saved_model(
        path, which=which, data_dir=data_dir, device=device, weights=weights, weights_from=weights_from,
        settings=settings, data=data,
    )  # fmt: skip
    cfg, data, dev, model, header, choice = (
        saved.cfg, saved.data, saved.device, saved.model, saved.header, saved.choice
    )  # fmt: skip
    weights_path = choice.weights
    chosen = saved.split(split)
    loader_of = saved.loader
    loader = loader_of(chosen)
    note = choice.note
    if bn_recalibrate:
        layers = recalibrate_batchnorm(model, loader_of(data.train))
        if not layers:
            raise UsageError(f"--bn-recalibrate: {cfg.model} has no batch-norm layers")
        recalibrated = (
            f"batch-norm statistics of {layers} layers recomputed over {len(data.train):,} training images"
        )
        note = f"{note}; {recalibrated}" if note else recalibrated
    result = evaluate(model, loader, header["num_classes"], dev, keep_outputs=keep_outputs)
    if weights is None and (views := cfg.views_of(split)) != "center":
        # the run measured this split on other views: say so, rather than differ from its figures silently
        other = f"centre crop; the run measured its {split} split on {views} views (--tta {views} does too)"
        note = f"{note}; {other}" if note else other
    classes = saved.classes
    out = Path(out_dir) if out_dir else choice.run_dir
    png, warnings = None, []
    if plot and (out / "confusion.png").exists() and not holds_run(out):
        # a run's confusion.png is its own to refresh; any other folder's is the user's file, kept
        warnings.append(
            f"{out / 'confusion.png'} exists and is not a run's file, so it was kept; choose another folder "
            "with --out to save the plot"
        )
        plot = False
    if plot:
        try:
            out.mkdir(parents=True, exist_ok=True)
            png = plot_confusion(
                result.confusion.tolist(), classes, out / "confusion.png", f"{cfg.model} ({split})"
            )
        except OSError as err:  # the report matters more than the picture: print it anyway
            warnings.append(f"could not save the confusion matrix plot in {out}: {err.strerror or err}")
    return CheckpointEvaluation(
        cfg.model, cfg.data, split, classes, result, weights_path, png,
        checkpoint=choice.name, epoch=choice.epoch, note=note, warnings=warnings,
        images=chosen.images if keep_outputs else None, network=model, input_shape=saved.input_shape,
    )  # fmt: skip


@dataclass
class TTAEvaluation:
    """The result of :func:`evaluate_tta_checkpoint`: one row per test-time mode."""

    model: str
    data: str
    split: str
    checkpoint: str
    weights: Path
    input_shape: tuple[int, int, int]
    stored_size: tuple[int, int]
    rows: list[Any]  # cnnlab.train.tta.TTAResult
    epoch: int | None = None

    def report(self) -> str:
        """A table: mode, views per image, accuracy, loss."""
        c, h, w = self.input_shape
        epoch = f" (epoch {self.epoch})" if self.epoch is not None else ""
        lines = [
            f"{self.model} on {self.data} ({self.split} split, {int(self.rows[0].result.confusion.sum())} images), "
            f"checkpoint {self.checkpoint}{epoch}: {self.weights}",
            f"input {h}x{w} from images stored at {self.stored_size[0]}x{self.stored_size[1]}; posteriors averaged over views",
            "",
            f"{'mode':<11} {'views':>5} {'scales':<12} {'accuracy':>9} {'loss':>8}",
        ]
        for row in self.rows:
            scales = ",".join(map(str, row.scales)) or "-"
            lines.append(
                f"{row.mode:<11} {row.views:>5} {scales:<12} {100 * row.result.accuracy:>8.2f}% {row.result.loss:>8.4f}"
            )
        return "\n".join(lines)


def evaluate_tta_checkpoint(
    path: str | Path,
    modes: Sequence[str],
    *,
    scales: Sequence[int] = (),
    split: str = "test",
    data_dir: str | None = None,
    which: str | None = None,
    device: str = "auto",
    weights: str | Path | None = None,
    weights_from: str = "cnnlab",
    settings: dict[str, Any] | None = None,
) -> TTAEvaluation:
    """Evaluate the model saved at ``path`` under each test-time mode of ``modes`` (:mod:`cnnlab.train.tta`).

    ``scales`` (shorter sides) apply to ``multiscale`` and ``dense``; the other modes ignore them.
    ``weights``, ``weights_from``, ``settings``: as for :func:`evaluate_checkpoint`.
    """
    from cnnlab.train.tta import evaluate_tta

    if not modes:
        raise UsageError("name at least one test-time mode")
    loaded = load_saved_model(
        path, which=which, data_dir=data_dir, device=device, weights=weights, weights_from=weights_from,
        settings=settings,
    )  # fmt: skip
    header, cfg = loaded.header, loaded.cfg
    shape = tuple(header["input_shape"])
    loader = loaded.loader(loaded.split(split), centre_crop=False)
    rows = [
        evaluate_tta(
            loaded.model,
            loader,
            header["num_classes"],
            loaded.device,
            mode,
            shape[1:],
            scales if mode in ("multiscale", "dense") else (),
        )  # fmt: skip
        for mode in modes
    ]
    return TTAEvaluation(
        cfg.model, cfg.data, split, loaded.choice.name, loaded.choice.weights, shape, loader.stored_size, rows,
        epoch=loaded.choice.epoch,
    )  # fmt: skip
