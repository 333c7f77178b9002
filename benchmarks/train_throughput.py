"""Training throughput of the lecture nets: the cnnlab engine against the lectures' own loop.

The baseline is written the way lectures 10 and 11 write it: ``datasets.MNIST``-style data (each
image handed to the transforms as a PIL image), ``transforms.Compose([ToTensor(), Normalize(...)])``
applied per sample, a DataLoader with batch 64, NCHW tensors, SGD with momentum 0.5,
``loss.item()`` every step. torchvision is not a dependency, so :class:`TorchvisionStyleDataset`
performs the same per-sample operations as torchvision's MNIST ``__getitem__``, ``ToTensor`` and
``Normalize`` (PIL image from the uint8 array; array from the image, HWC view, permute to CHW,
float, divide by 255; clone, mean and std as tensors, zero-std check, subtract, divide).
A second, leaner baseline (:class:`LeanPerSampleDataset`: tensor from the array, scale and
normalise, no PIL) is reported beside it, so the share of the speed-up due to data handling shows.

The engine is :class:`cnnlab.train.Trainer` with its default recipe (whole-dataset uint8 tensors,
batched normalisation, channels_last, batch 128, fp32, one shard, denormals flushed): the ``cnnlab``
column. Every other engine column changes exactly one setting of that default (``COLUMNS``), so the
effect of each lever shows on its own, both against the lectures' loop and against the default:

* ``batch64``: ``batch_size=64``, the lectures' batch size (channels_last still on);
* ``nchw``: ``channels_last=False``, plain NCHW tensors (batch still 128);
* ``shards``: ``cpu_shards=2``: each batch split into two shards trained side by side, one per core
  (not measured with one thread);
* ``bf16``: ``amp="bf16"``: bf16 autocast, measured only on CPUs with bf16 instructions
  (``cpu_bf16_instructions()``: AMX or AVX512-BF16), where it has a fast path; elsewhere recorded as
  not measured.

All loops train the same model for the same number of steps in this one process, interleaved round by
round; images/s are medians over rounds and ratios are medians of per-round ratios. The table prints
images/s with the ratio to the lectures' loop, then each one-change column against the default, and a
legend of what each column changes. The JSON stores, per row and column, ``<column>_settings``,
``<column>_images_per_s``, ``<column>_speedup`` (against the lectures' loop) and ``<column>_vs_default``
(against the ``cnnlab`` column), and under ``"columns"`` what each column changes. Target: the default
engine >= 2.0x against the lectures' loop on every lecture net on 2 CPU cores; the verdict is printed
and stored. The JSON records the CPU model and its AVX2, AVX-512F and AMX-BF16 flags.

    python benchmarks/train_throughput.py [--steps 60] [--rounds 3] [--data-dir DIR] [--save]

Without ``--save`` the JSON goes to a new timestamped file in benchmarks/results/ (see _common.py).
Needs Fashion-MNIST (``cnnlab data check fashion-mnist``); without it, synthetic images of the
same shape are used and the JSON says so.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import add_output_args, cpu_info, verdict, write_results
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cnnlab.data import load_dataset
from cnnlab.errors import DataError
from cnnlab.models import create_model
from cnnlab.train import TrainConfig, Trainer
from cnnlab.train.engine import cpu_bf16_instructions

MODELS = ("lecture-simple", "lecture-inception", "lecture-residual")
TARGET = 2.0
#: engine columns: name -> TrainConfig settings ({} is the engine's default: batch 128, channels_last,
#: fp32, one shard); every other column changes exactly one of them, so its ratio isolates that lever
ENGINES = {
    "cnnlab": {},
    "batch64": {"batch_size": 64},
    "nchw": {"channels_last": False},
    "shards": {"cpu_shards": 2, "amp": "fp32"},
    "bf16": {"amp": "bf16", "cpu_shards": 1},
}
#: what each column changes from the default engine, for the table's legend and the JSON
COLUMNS = {
    "lecture": "the lectures' loop: per-sample PIL + ToTensor + Normalize, batch 64, NCHW, fp32",
    "lean": "the lectures' loop with a lean per-sample tensor transform (no PIL), batch 64, NCHW, fp32",
    "cnnlab": "the engine's default: whole-dataset tensors, batch 128, channels_last, fp32, 1 shard",
    "batch64": "the default engine with batch_size=64 (the lectures' batch size); nothing else changed",
    "nchw": "the default engine with channels_last=False (NCHW); nothing else changed",
    "shards": "the default engine with cpu_shards=2 (one shard per core); nothing else changed",
    "bf16": "the default engine with amp='bf16' (bf16 autocast); nothing else changed",
}
#: the engine columns that each change one lever of the default, in table order
VARIANTS = ("batch64", "nchw", "shards", "bf16")


class TorchvisionStyleDataset(Dataset):
    """Per-sample work of ``datasets.MNIST(transform=Compose([ToTensor(), Normalize(mean, std)]))``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        self.images, self.labels, self.mean, self.std = images, labels, (mean,), (std,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.images[index], int(self.labels[index])
        picture = Image.fromarray(image.numpy(), mode="L")  # the dataset hands out PIL images
        # ToTensor: HWC uint8 array from the picture, CHW float in [0, 1]
        tensor = torch.from_numpy(np.array(picture, np.uint8, copy=True))
        tensor = tensor.view(picture.size[1], picture.size[0], len(picture.getbands()))
        tensor = tensor.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)
        # Normalize: on a copy, with mean and std made tensors and std checked for zeros
        tensor = tensor.clone()
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device)
        if (std == 0).any():
            raise ValueError("std is zero")
        return tensor.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1)), label


class LeanPerSampleDataset(Dataset):
    """A leaner per-sample loop: tensor straight from the array, scaled and normalised, no PIL."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        self.images, self.labels, self.mean, self.std = images.numpy(), labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).float().div(255).unsqueeze(0)
        return (image - self.mean) / self.std, int(self.labels[index])


def lecture_loop(
    model_name: str, data, steps: int, dataset_type: type[Dataset] = TorchvisionStyleDataset
) -> float:
    """Images/s of ``steps`` steps of the lectures' loop (after 3 warm-up steps)."""
    torch.manual_seed(0)
    model = create_model(model_name)
    dataset = dataset_type(data.train.images, data.train.labels, data.info.mean[0], data.info.std[0])
    loader = DataLoader(dataset, batch_size=64, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, 0.0
    for step, (inputs, target) in enumerate(loader):
        if step == 3:
            seen, start = 0, time.perf_counter()
        optimizer.zero_grad()
        loss = criterion(model(inputs), target)
        loss.backward()
        optimizer.step()
        _ = loss.item()
        seen += len(target)
        if step == steps + 2:
            break
    return seen / (time.perf_counter() - start)


def engine_loop(model_name: str, data, steps: int, workdir: Path, settings: dict | None = None) -> dict:
    """Images/s of the cnnlab engine over ``steps`` steps (after a 3-step warm-up epoch), and the
    precision, shards, batch size and memory format it trained with."""
    cfg = TrainConfig(model=model_name, epochs=2, max_steps_per_epoch=steps, **(settings or {}))
    trainer = Trainer(cfg, workdir / model_name, data=data, progress=False, overwrite=True)
    trainer.steps_per_epoch = 3
    trainer.train_epoch(0)  # warm-up: allocator, kernels
    trainer.steps_per_epoch = steps
    speed = trainer.train_epoch(1)["train_images_per_s"]
    shards = getattr(trainer, "shards", None)
    return {
        "images_per_s": speed,
        "amp": trainer.amp,
        "cpu_shards": int(getattr(shards, "workers", 1)) if shards else 1,
        "batch_size": trainer.cfg.batch_size,
        "channels_last": trainer.channels_last,
    }


def median_ratio(tops: list[float], bottoms: list[float]) -> float:
    """Median of per-round ratios, so a slow spell of the machine cancels out of each ratio."""
    return statistics.median(t / b for t, b in zip(tops, bottoms))


#: the table's columns in order: (key in ``COLUMNS``, header, row key of its images/s, row key of its ratio)
TABLE = (
    ("lecture", "lecture loop", "lecture_images_per_s", None),
    ("lean", "lean loop", "lean_loop_images_per_s", None),
    ("cnnlab", "cnnlab", "engine_images_per_s", "speedup"),
    *((v, v, f"{v}_images_per_s", f"{v}_speedup") for v in VARIANTS),
)
CELL = 15


def print_header() -> None:
    """The table's header: one column per loop; engine cells read ``img/s (x vs lecture loop)``."""
    print(f"{'model':<18}" + "".join(f"{header:>{CELL}}" for _, header, _, _ in TABLE), flush=True)


def print_row(row: dict) -> None:
    """One model's row: images/s of each loop, and each engine column's ratio to the lectures' loop."""
    cells = []
    for _, _, speed, ratio in TABLE:
        if row[speed] is None:
            cells.append(f"{'not measured':>{CELL}}")
        elif ratio is None:
            cells.append(f"{row[speed]:>{CELL}.0f}")
        else:
            cells.append(f"{row[speed]:>{CELL - 8}.0f} ({row[ratio]:4.2f}x)")
    print(f"{row['model']:<18}" + "".join(cells), flush=True)


def print_legend(engines: dict) -> None:
    """What each column is and changes, under the table (images/s; ratios are against the lecture loop)."""
    print(
        "training images/s, median over rounds; (Nx): median per-round ratio to the lecture loop", flush=True
    )
    for key, header, _, _ in TABLE:
        note = "" if key in ("lecture", "lean") or key in engines else " [not measured here]"
        print(f"  {header:<13} {COLUMNS[key]}{note}", flush=True)


def print_levers(rows: list[dict]) -> None:
    """Each one-lever column against the default engine, so the worth of each lever reads directly."""
    print("\neach column against the default engine (cnnlab = 1.00x; median per-round ratio):", flush=True)
    print(f"{'model':<18}" + "".join(f"{v:>{CELL}}" for v in VARIANTS), flush=True)
    for row in rows:
        cells = (
            f"{'not measured':>{CELL}}"
            if row[f"{v}_vs_default"] is None
            else f"{row[f'{v}_vs_default']:>{CELL - 1}.2f}x"
            for v in VARIANTS
        )
        print(f"{row['model']:<18}" + "".join(cells), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per loop and round (default: 60)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), metavar="MODEL", help="default: the lecture nets"
    )
    parser.add_argument("--data-dir")
    add_output_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table and the verdicts, write the JSON."""
    args = parse_args(argv)
    torch.set_flush_denormal(True)
    try:
        data, source = load_dataset("fashion-mnist", data_dir=args.data_dir), "fashion-mnist"
    except DataError:
        from cnnlab.data.synthetic import write_synthetic_dataset

        folder = write_synthetic_dataset(Path(tempfile.mkdtemp()), "fashion-mnist", 20000, 1000, seed=0)
        data, source = load_dataset("fashion-mnist", data_dir=folder, verify=False), "synthetic 28x28"
    engines = dict(ENGINES)
    bf16 = cpu_bf16_instructions()
    if bf16 is None:
        del engines["bf16"]
    if torch.get_num_threads() < 2:
        del engines["shards"]
    rows = []
    print_header()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rounds: dict[str, list[float]] = {"lecture": [], "lean": [], **{e: [] for e in engines}}
            used = {}
            for _ in range(args.rounds):  # interleaved, so machine noise hits all alike
                rounds["lecture"].append(lecture_loop(name, data, args.steps))
                rounds["lean"].append(lecture_loop(name, data, args.steps, LeanPerSampleDataset))
                for engine, settings in engines.items():
                    run = engine_loop(name, data, args.steps, Path(tmp), settings)
                    rounds[engine].append(run["images_per_s"])
                    used[engine] = {
                        key: run[key] for key in ("amp", "cpu_shards", "batch_size", "channels_last")
                    }
            row = {
                "model": name,
                "lecture_images_per_s": statistics.median(rounds["lecture"]),
                "lean_loop_images_per_s": statistics.median(rounds["lean"]),
                "engine_images_per_s": statistics.median(rounds["cnnlab"]),
                "speedup": median_ratio(rounds["cnnlab"], rounds["lecture"]),
                "speedup_vs_lean": median_ratio(rounds["cnnlab"], rounds["lean"]),
                "engine_default": used["cnnlab"],
                "rounds": rounds,
            }
            for engine in VARIANTS:
                measured = engine in engines
                row[f"{engine}_settings"] = ENGINES[engine]
                row[f"{engine}_images_per_s"] = statistics.median(rounds[engine]) if measured else None
                row[f"{engine}_speedup"] = (
                    median_ratio(rounds[engine], rounds["lecture"]) if measured else None
                )
                row[f"{engine}_vs_default"] = (
                    median_ratio(rounds[engine], rounds["cnnlab"]) if measured else None
                )
            rows.append(row)
            print_row(row)
    print_legend(engines)
    print_levers(rows)
    verdicts = [
        verdict(
            f"{r['model']}, cnnlab default vs the lectures' loop",
            f">= {TARGET:.2f}x",
            f"{r['speedup']:.2f}x",
            r["speedup"] >= TARGET,
        )
        for r in rows
    ]
    result = {
        "benchmark": "train_throughput",
        "data": source,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        **cpu_info(),
        "bf16_instructions": bf16,
        "not_measured": {
            **(
                {}
                if bf16
                else {"bf16": "no bf16 instructions (AMX or AVX512-BF16) on this CPU: bf16 has no fast path"}
            ),
            **({} if "shards" in engines else {"shards": "one thread: nothing to shard across"}),
        },
        "columns": {key: {"settings": ENGINES.get(key), "changes": text} for key, text in COLUMNS.items()},
        "target_speedup": TARGET,
        "rows": rows,
        "verdicts": verdicts,
        "all_meet_target": all(v["met"] for v in verdicts),
    }
    write_results("train_throughput", result, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
