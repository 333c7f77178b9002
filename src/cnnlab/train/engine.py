"""The training engine: one run directory per run, exact resume, clear failures.

    >>> from cnnlab.train import TrainConfig, train
    >>> result = train(TrainConfig(model="lecture-simple", data="fashion-mnist", epochs=10), "runs/simple")

A run directory holds ``config.json``, ``metrics.csv`` (one row per epoch), ``curves.png`` and
``checkpoints/`` (``last`` after every epoch and on Ctrl-C, ``best`` by validation accuracy, or
test accuracy when there is no validation split). Resuming restores weights, optimiser, schedule,
RNG and the partial epoch, so a resumed run ends with the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.errors import CheckpointError, TrainingDiverged, UsageError
from cnnlab.fileio import atomic_write_text
from cnnlab.models import check_input_size, count_params, create_model, model_info
from cnnlab.train.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.train.config import TrainConfig
from cnnlab.train.optim import LRSchedule, build_optimizer
from cnnlab.train.plots import plot_curves
from cnnlab.train.rundir import (
    RunLock,
    check_run_dir,
    prepare_run_dir,
    training_storage_errors,
    write_metrics,
)
from cnnlab.train.rundir import ensure_writable_dir as ensure_writable_dir  # re-exported: it lived here
from cnnlab.train.rundir import holds_run as holds_run  # re-exported: it lived here
from cnnlab.train.rundir import read_metrics as read_metrics  # re-exported: it lived here
from cnnlab.train.shards import CoreShards, auto_shards, core_shards, shard_blocker

# ---------------------------------------------------------------------------------------- device


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. Asking for CUDA on a machine without it is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda was asked for, but no CUDA GPU is available; use --device cpu or auto")
    return device


def configure_cpu(threads: int | None) -> None:
    """Flush denormals (slow paths on x86 once weights get tiny) and set the thread count."""
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)


def cpu_has_bf16_matrix_units() -> bool:
    """True on CPUs with AMX-BF16 tiles (Intel Sapphire Rapids and later), where oneDNN's bf16
    convolutions and matmuls run about twice as fast as fp32 (benchmarks/train_throughput.py)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe() and torch.backends.mkldnn.is_available())


def default_amp(device: torch.device) -> bool:
    """Whether bf16 autocast is on by default: on CUDA, and on CPUs with bf16 matrix units."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_matrix_units())


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast (convolutions and matmuls in bf16, losses in fp32) when enabled, else a no-op."""
    if enabled and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Loss, accuracy and confusion matrix (rows: true class, columns: predicted) of one split."""

    loss: float
    accuracy: float
    confusion: torch.Tensor

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
    amp: bool = False,
    shards: CoreShards | None = None,
) -> EvalResult:
    """Mean cross-entropy, accuracy and confusion matrix of ``model`` over ``loader``.

    With ``shards``, each batch is split across its workers (see :mod:`cnnlab.train.shards`).
    """
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, amp):  # both are per thread
            return model(x)

    for x, y in loader:
        if shards is not None and len(x) >= shards.workers:
            logits = torch.cat(shards.map(forward, [(part,) for part in x.tensor_split(shards.workers)]))
        else:
            logits = forward(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes**2)
    confusion = confusion.view(num_classes, num_classes).cpu()
    count = int(confusion.sum())
    return EvalResult(
        float(loss_sum) / max(count, 1), float(confusion.diag().sum()) / max(count, 1), confusion
    )


# -------------------------------------------------------------------------------------- training


@dataclass
class RunResult:
    """What a finished (or interrupted) run produced."""

    run_dir: Path
    config: TrainConfig
    history: list[dict[str, Any]]
    num_params: int
    status: str = "completed"  # or "interrupted"
    best_accuracy: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, Any]:
        """Metrics of the last completed epoch."""
        return self.history[-1] if self.history else {}


def build_model_for_data(cfg: TrainConfig, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """The registry model for this data: its classes, channels and (where the head depends on it) image size."""
    info = model_info(cfg.model)
    options = dict(cfg.model_options)
    c, h, w = input_shape
    if "img_size" in info.options() and "img_size" not in options and (h, w) != info.input_size[1:]:
        options["img_size"] = h if h == w else (h, w)
    try:
        model = create_model(
            cfg.model, num_classes=num_classes, in_chans=c, drop_rate=cfg.drop_rate, **options
        )
        check_input_size(model, input_shape)
    except UsageError as err:
        if "too small" in str(err) and cfg.pad_to is None:
            raise UsageError(f"{err}; zero-pad the images with --pad-to (pad_to=) that size") from None
        raise
    return model


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
    ) -> None:
        from cnnlab.data import Augment, BatchLoader, load_dataset

        self.run_dir = Path(run_dir)
        if resume:
            cfg = self._resumed_config(cfg)
        self.cfg = cfg.validate()
        self.progress = progress
        self.on_epoch = on_epoch
        check_run_dir(self.run_dir, overwrite=overwrite, resume=resume)  # fail fast; nothing replaced yet
        configure_cpu(cfg.threads)
        self.device = select_device(cfg.device)
        self.amp = cfg.amp if cfg.amp is not None else default_amp(self.device)
        self.channels_last = True if cfg.channels_last is None else cfg.channels_last
        torch.manual_seed(cfg.seed)

        self.data = data or load_dataset(
            cfg.data, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed
        )
        info = self.data.info
        self.classes = list(info.classes)
        train_split = self.data.train
        if cfg.train_subset is not None and cfg.train_subset < len(train_split):
            generator = torch.Generator().manual_seed(cfg.seed)
            train_split = train_split.subset(
                torch.randperm(len(train_split), generator=generator)[: cfg.train_subset]
            )

        def loader(split, train: bool):
            return BatchLoader(
                split,
                batch_size=cfg.batch_size if train else cfg.eval_batch_size,
                shuffle=train,
                seed=cfg.seed,
                augment=Augment(crop_padding=cfg.crop_padding, flip=cfg.flip) if train else None,
                mean=info.mean,
                std=info.std,
                drop_last=False,
                device=self.device,
                channels_last=self.channels_last,
                pad_to=cfg.pad_to,
                out_chans=cfg.in_chans,
            )

        self.train_loader = loader(train_split, True)
        self.val_loader = loader(self.data.val, False) if self.data.val is not None else None
        self.test_loader = loader(self.data.test, False)
        x0, _ = next(iter(loader(self.data.test, False)))
        self.input_shape = tuple(x0.shape[1:])

        torch.manual_seed(cfg.seed)  # the model's initial weights depend on the seed alone
        self.model = build_model_for_data(cfg, len(self.classes), self.input_shape).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.num_params = count_params(self.model)
        self.aux_weights = tuple(getattr(self.model, "aux_loss_weights", ())) if cfg.aux_loss else ()
        self.steps_per_epoch = len(self.train_loader)
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        self.optimizer = build_optimizer(self.model, cfg)
        self.schedule = LRSchedule(self.optimizer, cfg, self.steps_per_epoch)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.shards = self._shards()
        self.history: list[dict[str, Any]] = []
        self.start_epoch, self.skip_steps, self.partial = 0, 0, None
        self.best_accuracy = -1.0
        self.stop_requested = False
        # Only now that data, model and optimiser are valid is an old run replaced (or the folder made).
        self.run_lock = RunLock(self.run_dir).acquire()  # one process per run directory, until fit returns
        with self.run_lock.released_on_error(), training_storage_errors(self.run_dir):
            prepare_run_dir(self.run_dir, overwrite=overwrite, resume=resume)
            if resume:
                self._restore()
            else:
                atomic_write_text(self.run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2))

    def _shards(self) -> CoreShards | None:
        """The CPU batch shards to train with (None: plain operation-level threading)."""
        cfg = self.cfg
        if cfg.cpu_shards is None:
            count = 1 if cfg.compile else auto_shards(self.model, self.device, cfg.batch_size, bf16=self.amp)
        else:
            count = cfg.cpu_shards
            blocker = shard_blocker(self.model) if count > 1 else None
            if count > 1 and self.device.type != "cpu":
                raise UsageError(f"cpu_shards applies to CPU training, not {self.device}; leave it unset")
            if blocker:
                raise UsageError(
                    f"{cfg.model} cannot be trained in CPU shards: {blocker}; leave cpu_shards unset"
                )
            if count > 1 and cfg.compile:
                raise UsageError("cpu_shards and compile do not combine; choose one")
        if count < 2:
            return None
        return core_shards(count, max(1, torch.get_num_threads() // count))

    # -- checkpoints --------------------------------------------------------------------------

    def _resumed_config(self, cfg: TrainConfig) -> TrainConfig:
        """The run's saved recipe; of ``cfg`` only the model (checked) and the number of epochs count."""
        path = self.run_dir / "config.json"
        if not path.is_file():
            raise CheckpointError(f"nothing to resume in {self.run_dir}: no config.json there")
        try:
            saved = TrainConfig.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            raise CheckpointError(
                f"cannot resume {self.run_dir}: config.json is missing or damaged ({err})"
            ) from None
        if cfg.model != saved.model:
            raise CheckpointError(
                f"{self.run_dir} is a run of {saved.model!r}, not {cfg.model!r}; resume it with that model"
            )
        saved.epochs = cfg.epochs  # extend (or cut short) a run; the schedule follows the new length
        return saved

    def header(self) -> dict[str, Any]:
        """Metadata stored with every checkpoint: enough to rebuild the model and its data."""
        return {
            "model": self.cfg.model,
            "num_classes": len(self.classes),
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "data": self.cfg.data,
            "config": self.cfg.to_dict(),
        }

    def save(self, name: str, epoch: int, step_in_epoch: int = 0, partial: dict | None = None) -> Path:
        """Save checkpoint ``name`` (``last``: with optimiser state; ``best``: weights only)."""
        state = {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "partial": partial,
            "schedule": self.schedule.state_dict(),
            "history": self.history,
            "best_accuracy": self.best_accuracy,
        }
        optimizer = self.optimizer if name == "last" else None
        return save_checkpoint(
            self.run_dir / "checkpoints", name, self.model, self.header(), optimizer, state
        )

    def _restore(self) -> None:
        manifest = self.run_dir / "checkpoints" / "last.json"
        self.model.model_name = self.cfg.model
        state = load_checkpoint(manifest, self.model, self.optimizer)
        self.schedule.load_state_dict(state["schedule"])
        self.history = state["history"]
        self.best_accuracy = state["best_accuracy"]
        self.start_epoch = state["epoch"]
        self.skip_steps = state["step_in_epoch"]
        self.partial = state["partial"]
        atomic_write_text(self.run_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=2))

    # -- one epoch ------------------------------------------------------------------------------

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.amp):
            if self.aux_weights:
                logits, aux = self.model.forward_aux(x)
            else:
                logits, aux = self.forward(x), []
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
            for weight, aux_logits in zip(self.aux_weights, aux):
                loss = loss + weight * F.cross_entropy(
                    aux_logits.float(), y, label_smoothing=self.cfg.label_smoothing
                )
        return loss, logits

    def _gradients(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, int, list]:
        """Loss (as this slice's share of the batch mean), correct count and parameter gradients."""
        loss, logits = self._loss(x, y)
        loss = loss * (len(y) / batch)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return loss.item(), int((logits.argmax(1) == y).sum()), list(grads)

    def _step(self, x: torch.Tensor, y: torch.Tensor, meanwhile: Callable[[], Any]) -> tuple[float, int, Any]:
        """Put the batch's gradients in ``.grad``; return its mean loss, correct count and ``meanwhile()``.

        With shards, ``meanwhile`` (fetching the next batch) runs while the workers compute.
        """
        if self.shards is None or len(y) < self.shards.workers:  # a last batch too small to split
            loss_value, correct, grads = self._gradients(x, y, len(y))
            upcoming = meanwhile()
        else:
            pieces = zip(x.tensor_split(self.shards.workers), y.tensor_split(self.shards.workers))
            futures = self.shards.submit(self._gradients, [(xs, ys, len(y)) for xs, ys in pieces])
            upcoming = meanwhile()
            parts = [future.result() for future in futures]
            loss_value, correct = sum(p[0] for p in parts), sum(p[1] for p in parts)
            grads = parts[0][2]
            for part in parts[1:]:  # a fixed order, so the sum is the same on every run
                grads = [g if h is None else (h if g is None else g.add_(h)) for g, h in zip(grads, part[2])]
        for param, grad in zip(self.params, grads):
            param.grad = grad
        return loss_value, correct, upcoming

    def _batches(self, epoch: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        self.train_loader.set_epoch(epoch)
        for step, (x, y) in enumerate(self.train_loader):
            if step >= self.steps_per_epoch:
                return
            yield step, x, y

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch; returns loss, accuracy and images/s.

        A stop request (Ctrl-C, see :meth:`fit`) ends the epoch after the current batch, saves
        ``last`` with the position inside the epoch and raises :class:`_Stopped`.
        """
        self.model.train()
        totals = self.partial or {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        skip, self.skip_steps, self.partial = self.skip_steps, 0, None
        bar = tqdm(
            total=self.steps_per_epoch,
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
        seconds = totals["seconds"] + time.perf_counter() - start
        return {
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
            loss_value, correct, upcoming = self._step(x, y, lambda: next(batches, None))
            if not math.isfinite(loss_value):
                bar.close()
                raise TrainingDiverged(
                    f"loss became {loss_value} at epoch {epoch + 1}, step {step + 1}; the last good checkpoint "
                    f"is kept in {self.run_dir / 'checkpoints'}. Lower the learning rate (now {self.schedule.lr:.3g}) "
                    "or set --grad-clip"
                )
            if self.cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
            self.optimizer.step()
            self.schedule.step_batch()
            totals["loss"] += loss_value * len(y)
            totals["correct"] += correct
            totals["seen"] += len(y)
            bar.update(1)
            if step % 10 == 0 or step + 1 == self.steps_per_epoch:
                elapsed = totals["seconds"] + time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{totals['loss'] / totals['seen']:.4f}",
                    acc=f"{100 * totals['correct'] / totals['seen']:.2f}%",
                    img_s=f"{totals['seen'] / max(elapsed, 1e-9):.0f}",
                )
            if self.stop_requested and step + 1 < self.steps_per_epoch:
                totals["seconds"] += time.perf_counter() - start
                bar.close()
                self.save("last", epoch, step_in_epoch=step + 1, partial=totals)
                raise _Stopped

    # -- the run --------------------------------------------------------------------------------

    def evaluate(self, loader: Any) -> EvalResult:
        """:func:`evaluate` the model on ``loader`` with this run's device and shards, in fp32.

        Always fp32, even when training in bf16: the metrics are those of the weights as saved,
        the same figures ``cnnlab evaluate`` gives for the checkpoint.
        """
        with self.shards.coordinating() if self.shards else contextlib.nullcontext():
            return evaluate(self.model, loader, len(self.classes), self.device, shards=self.shards)

    def request_stop(self) -> None:
        """Ask the run to stop after the current batch, saving a checkpoint (what Ctrl-C does)."""
        self.stop_requested = True

    @contextlib.contextmanager
    def _ctrl_c_stops(self) -> Iterator[None]:
        """First Ctrl-C: finish the batch, save, stop. A second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.stop_requested:
                raise KeyboardInterrupt
            self.request_stop()
            tqdm.write("stopping after this batch and saving a checkpoint (Ctrl-C again to abort at once)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def fit(self) -> RunResult:
        """Train from the current epoch to ``cfg.epochs``; after a stop request, status ``interrupted``."""
        with self._ctrl_c_stops(), self.run_lock, training_storage_errors(self.run_dir):
            for epoch in range(self.start_epoch, self.cfg.epochs):
                lr = self.cfg.lr * self.schedule.factor(epoch * self.steps_per_epoch)  # at the epoch's start
                try:
                    row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, **self.train_epoch(epoch)}
                except _Stopped:
                    return self._result("interrupted")
                if self.val_loader is not None:
                    val = self.evaluate(self.val_loader)
                    row.update(val_loss=val.loss, val_acc=val.accuracy)
                test = self.evaluate(self.test_loader)
                row.update(test_loss=test.loss, test_acc=test.accuracy)
                self.schedule.step_epoch(row.get("val_loss", test.loss))
                self.history.append(row)
                selection = row.get("val_acc", row["test_acc"])
                if selection > self.best_accuracy:
                    self.best_accuracy = selection
                    self.save("best", epoch + 1)
                self.save("last", epoch + 1)
                write_metrics(self.run_dir / "metrics.csv", self.history)
                plot_curves(
                    self.history, self.run_dir / "curves.png", title=f"{self.cfg.model} on {self.cfg.data}"
                )
                if self.on_epoch:
                    self.on_epoch(row)
                if self.progress:
                    tqdm.write(_epoch_line(row, self.cfg.epochs))
                if self.stop_requested and epoch + 1 < self.cfg.epochs:
                    return self._result("interrupted")
        return self._result("completed")

    def _result(self, status: str) -> RunResult:
        return RunResult(
            self.run_dir, self.cfg, list(self.history), self.num_params, status, max(self.best_accuracy, 0.0)
        )


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    parts = [
        f"epoch {int(row['epoch'])}/{epochs}",
        f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%",
    ]
    if row.get("val_acc") is not None:
        parts.append(f"val acc {100 * row['val_acc']:.2f}%")
    parts += [
        f"test acc {100 * row['test_acc']:.2f}%",
        f"{row['epoch_seconds']:.1f}s",
        f"{row['train_images_per_s']:.0f} img/s",
    ]
    return " | ".join(parts)


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    data: Any = None,
) -> RunResult:
    """Train ``cfg`` into ``run_dir`` (see :class:`Trainer`); returns the :class:`RunResult`."""
    return Trainer(cfg, run_dir, overwrite=overwrite, resume=resume, progress=progress, data=data).fit()
