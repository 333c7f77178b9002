"""Evaluate a saved run or checkpoint: accuracy, per-class accuracy, confusion matrix (printed and plotted)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.errors import CheckpointError
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

    def report(self) -> str:
        """Accuracy, per-class accuracy and the confusion matrix as text."""
        r = self.result
        width = max(len(c) for c in self.classes)
        lines = [
            f"{self.model} on {self.data} ({self.split}, {int(r.confusion.sum())} images, weights {self.weights})",
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
        return "\n".join(lines)


def resolve_weights(path: str | Path, which: str = "best") -> tuple[Path, str | None]:
    """A run directory, a manifest (``.json``) or a weights file -> (weights file, expected SHA-256)."""
    path = Path(path)
    if path.is_dir():
        manifest = path / "checkpoints" / f"{which}.json"
        if not manifest.is_file():
            manifest = path / "checkpoints" / "last.json"
        path = manifest
    if path.suffix == ".json":
        manifest = read_manifest(path)
        return path.parent / manifest["files"]["weights"], manifest["sha256"]["weights"]
    if not path.exists():
        raise CheckpointError(f"no run directory or checkpoint at {path}")
    return path, None


def evaluate_checkpoint(
    path: str | Path,
    *,
    split: str = "test",
    data_dir: str | None = None,
    which: str = "best",
    out_dir: str | Path | None = None,
    device: str = "auto",
) -> CheckpointEvaluation:
    """Rebuild the model saved at ``path`` (run directory, manifest or weights file) and evaluate it.

    The confusion matrix is saved as ``confusion.png`` in ``out_dir`` (default: the run directory).
    """
    from cnnlab.data import BatchLoader, load_dataset

    weights_path, sha = resolve_weights(path, which)
    state, header = load_weights(weights_path, sha)
    if "config" not in header:
        raise CheckpointError(
            f"{weights_path} has no cnnlab training header; it was not saved by cnnlab train"
        )
    cfg = TrainConfig.from_dict(header["config"])
    if data_dir is not None:
        cfg.data_dir = data_dir
    configure_cpu(cfg.threads)
    dev = select_device(device)
    data = load_dataset(cfg.data, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed)
    chosen = {"test": data.test, "val": data.val, "train": data.train}[split]
    if chosen is None:
        raise CheckpointError(f"this run has no {split} split (it was trained with val_fraction 0)")
    loader = BatchLoader(
        chosen, batch_size=cfg.eval_batch_size, shuffle=False, seed=cfg.seed, augment=None,
        mean=data.info.mean, std=data.info.std, device=dev, channels_last=True, pad_to=cfg.pad_to,
        out_chans=cfg.in_chans,
    )  # fmt: skip
    model = build_model_for_data(cfg, header["num_classes"], tuple(header["input_shape"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{weights_path} does not fit {cfg.model}: {str(err).splitlines()[0]}"
        ) from None
    model = model.to(dev, memory_format=torch.channels_last)
    result = evaluate(model, loader, header["num_classes"], dev)
    classes = list(header.get("classes") or data.info.classes)
    run_dir = weights_path.parent.parent if weights_path.parent.name == "checkpoints" else weights_path.parent
    out = Path(out_dir) if out_dir else run_dir
    png = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        png = plot_confusion(
            result.confusion.tolist(), classes, out / "confusion.png", f"{cfg.model} ({split})"
        )
    except OSError as err:
        raise CheckpointError(f"cannot write the confusion matrix to {out}: {err.strerror or err}") from None
    return CheckpointEvaluation(cfg.model, cfg.data, split, classes, result, weights_path, png)
