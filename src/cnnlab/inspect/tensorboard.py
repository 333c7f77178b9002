"""TensorBoard event files beside ``metrics.csv`` (``cnnlab train --tensorboard``): a view, not a record.

``metrics.csv`` stays the source of truth; the events hold the same per-epoch scalars, the selected
checkpoint's test confusion matrix as an image, and the recipe as hyper-parameters with the final
metrics. They go to ``<run>/tensorboard/``: ``tensorboard --logdir runs`` shows every run. TensorBoard is
an optional extra (``pip install 'cnnlab[tensorboard]'``).
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import UsageError

#: the folder of a run directory that holds its event files
TENSORBOARD_DIR = "tensorboard"
INSTALL_HINT = "pip install tensorboard (or pip install 'cnnlab[tensorboard]')"
#: metrics.csv columns logged per epoch, and their TensorBoard tags
SCALARS = {
    "train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train", "val_acc": "accuracy/val",
    "lr": "lr", "epoch_seconds": "speed/epoch_seconds", "train_images_per_s": "speed/train_images_per_s",
}  # fmt: skip


def summary_writer_class() -> type:
    """torch's ``SummaryWriter``, or a one-line :class:`UsageError` saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            f"--tensorboard needs the tensorboard package, which is not installed; {INSTALL_HINT}"
        ) from None
    return SummaryWriter


class TensorBoardLog:
    """Writes one run's events; :meth:`epoch` after every epoch, :meth:`final` once the test split is measured."""

    def __init__(self, run_dir: str | Path) -> None:
        self.folder = Path(run_dir) / TENSORBOARD_DIR
        self.writer = summary_writer_class()(log_dir=str(self.folder))

    def epoch(self, row: dict[str, Any]) -> None:
        """The scalars of one row of ``metrics.csv``."""
        step = int(row["epoch"])
        for column, tag in SCALARS.items():
            if row.get(column) is not None:
                self.writer.add_scalar(tag, float(row[column]), step)
        self.writer.flush()

    def final(
        self, config: dict[str, Any], results: dict[str, Any], confusion: Any, classes: list[str]
    ) -> None:
        """The test confusion matrix as an image and the recipe as hyper-parameters with the final metrics."""
        from PIL import Image

        from cnnlab.train.plots import confusion_figure, figure_png

        png = figure_png(confusion_figure(np.asarray(confusion).tolist(), classes, "confusion matrix (test)"))
        image = np.asarray(Image.open(BytesIO(png)).convert("RGB"))
        self.writer.add_image(
            "confusion_matrix/test", image, int(results.get("epoch") or 0), dataformats="HWC"
        )
        hparams = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in config.items()
            if v is not None
        }
        metrics = {
            f"hparam/{k}": float(results[k])
            for k in ("test_acc", "test_loss", "val_acc")
            if results.get(k) is not None
        }
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event files."""
        self.writer.close()
