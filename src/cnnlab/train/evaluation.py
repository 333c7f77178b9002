"""Evaluate a saved run or checkpoint: accuracy, per-class accuracy, confusion matrix (printed and plotted)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.errors import CheckpointError, UsageError
from cnnlab.train.checkpoint import load_weights, read_manifest
from cnnlab.train.config import TrainConfig
from cnnlab.train.engine import EvalResult, build_model_for_data, configure_cpu, evaluate, select_device
from cnnlab.train.plots import plot_confusion


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
        lines += [f"warning: {w}" for w in self.warnings]
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


def resolve_checkpoint(path: str | Path, which: str | None = None) -> CheckpointChoice:
    """A run directory, a manifest (``.json``) or a weights file -> the checkpoint to evaluate.

    In a run directory ``which`` None (or ``best``, the CLI's default) picks the run's selected
    checkpoint: ``best`` where there is one (runs with a validation split), else ``last``.
    """
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
                raise UsageError(f"{path} is {kind} of runs, not a run; evaluate one of its runs: {listed}")
            raise UsageError(f"no run in {path}: it has no checkpoints/{name}.json; name a run directory")
        choice = resolve_checkpoint(folder / f"{name}.json")
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
    return CheckpointChoice(path, None, path.name, None, _run_dir_of(path.parent))


def resolve_weights(path: str | Path, which: str | None = None) -> tuple[Path, str | None]:
    """A run directory, a manifest (``.json``) or a weights file -> (weights file, expected SHA-256)."""
    choice = resolve_checkpoint(path, which)
    return choice.weights, choice.sha256


def _check_header(weights_path: Path, header: dict) -> TrainConfig:
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
        return TrainConfig.from_dict(header["config"])
    except (UsageError, TypeError, ValueError) as err:
        raise CheckpointError(f"{weights_path} has a damaged training config in its header: {err}") from None


@dataclass
class LoadedModel:
    """A saved model rebuilt with its weights (see :func:`load_model`), and what it was trained on."""

    model: torch.nn.Module
    config: TrainConfig
    classes: list[str]
    input_shape: tuple[int, int, int]
    choice: CheckpointChoice
    device: torch.device


def load_model(path: str | Path, which: str | None = None, device: str = "auto") -> LoadedModel:
    """Rebuild the model saved at ``path`` (run directory, manifest or weights file) with its weights, on
    ``device``, in evaluation mode; the SHA-256 of the weights is checked against the manifest."""
    from cnnlab.data.catalog import dataset_info

    choice = resolve_checkpoint(path, which)
    weights_path = choice.weights
    state, header = load_weights(weights_path, choice.sha256)
    cfg = _check_header(weights_path, header)
    dev = select_device(device)
    model = build_model_for_data(cfg, header["num_classes"], tuple(header["input_shape"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{weights_path} does not fit {cfg.model}: {str(err).splitlines()[0]}"
        ) from None
    classes = [str(c) for c in header.get("classes") or dataset_info(cfg.data).classes]
    model = model.to(dev, memory_format=torch.channels_last).eval()
    return LoadedModel(model, cfg, classes, tuple(header["input_shape"]), choice, dev)


def evaluate_checkpoint(
    path: str | Path,
    *,
    split: str = "test",
    data_dir: str | None = None,
    which: str | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
    plot: bool = True,
    keep_outputs: bool = False,
) -> CheckpointEvaluation:
    """Rebuild the model saved at ``path`` (run directory, manifest or weights file) and evaluate it.

    The confusion matrix is saved as ``confusion.png`` in ``out_dir`` (default: the run directory)
    unless ``plot`` is False; failing to save it (a full disk, read-only storage) is a warning in the
    report, not an error. ``keep_outputs``: the result also holds each image's probabilities (see
    :func:`cnnlab.train.engine.evaluate`) and :attr:`CheckpointEvaluation.images` the split's images.
    """
    from cnnlab.data import BatchLoader, load_dataset

    loaded = load_model(path, which, device)
    cfg, choice, dev = loaded.config, loaded.choice, loaded.device
    if data_dir is not None:
        cfg.data_dir = data_dir
    configure_cpu(cfg.threads)
    data = load_dataset(cfg.data, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed)
    chosen = {"test": data.test, "val": data.val, "train": data.train}[split]
    if chosen is None:
        raise UsageError(f"this run has no {split} split (it was trained with val_fraction 0)")
    loader = BatchLoader(
        chosen, batch_size=cfg.eval_batch_size, shuffle=False, seed=cfg.seed, augment=None,
        mean=data.info.mean, std=data.info.std, device=dev, channels_last=True, pad_to=cfg.pad_to,
        out_chans=cfg.in_chans,
    )  # fmt: skip
    result = evaluate(loaded.model, loader, len(loaded.classes), dev, keep_outputs=keep_outputs)
    classes = loaded.classes
    out = Path(out_dir) if out_dir else choice.run_dir
    png, warnings = None, []
    if plot:
        try:
            out.mkdir(parents=True, exist_ok=True)
            png = plot_confusion(
                result.confusion.tolist(), classes, out / "confusion.png", f"{cfg.model} ({split})"
            )
        except OSError as err:  # the report matters more than the picture: print it anyway
            warnings.append(f"could not save the confusion matrix plot in {out}: {err.strerror or err}")
    return CheckpointEvaluation(
        cfg.model, cfg.data, split, classes, result, choice.weights, png,
        checkpoint=choice.name, epoch=choice.epoch, note=choice.note, warnings=warnings,
        images=chosen.images if keep_outputs else None, network=loaded.model, input_shape=loaded.input_shape,
    )  # fmt: skip
