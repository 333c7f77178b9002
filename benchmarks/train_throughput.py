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
batched normalisation, channels_last, batch 128, denormals flushed, one batch shard per core for
the BN-free, dropout-free lecture nets, and bf16 autocast on CPUs with AMX bf16 units). Where that
default is bf16, the engine in fp32 (``amp=False``) is measured too, so the share of the speed-up
due to the lower precision shows. All train the same model for the same number of steps in this
one process, interleaved round by round, and the table reports images/s and the ratios (target:
>= 2.0x against the lectures' loop on every lecture net on 2 CPU cores).

    python benchmarks/train_throughput.py [--steps 60] [--rounds 3] [--data-dir DIR]

Needs Fashion-MNIST (``cnnlab data check fashion-mnist``); without it, synthetic images of the
same shape are used and the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cnnlab.data import load_dataset
from cnnlab.errors import DataError
from cnnlab.models import create_model
from cnnlab.train import TrainConfig, Trainer
from cnnlab.train.engine import default_amp

MODELS = ("lecture-simple", "lecture-inception", "lecture-residual")
RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"


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


def engine_loop(model_name: str, data, steps: int, workdir: Path, amp: bool | None = None) -> float:
    """Images/s of the cnnlab engine over ``steps`` steps (after a 3-step warm-up epoch)."""
    cfg = TrainConfig(model=model_name, epochs=2, max_steps_per_epoch=steps, amp=amp)
    trainer = Trainer(cfg, workdir / model_name, data=data, progress=False, overwrite=True)
    trainer.steps_per_epoch = 3
    trainer.train_epoch(0)  # warm-up: allocator, kernels
    trainer.steps_per_epoch = steps
    return trainer.train_epoch(1)["train_images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    try:
        data, source = load_dataset("fashion-mnist", data_dir=args.data_dir), "fashion-mnist"
    except DataError:
        from cnnlab.data.synthetic import write_synthetic_dataset

        folder = write_synthetic_dataset(Path(tempfile.mkdtemp()), "fashion-mnist", 20000, 1000, seed=0)
        data, source = load_dataset("fashion-mnist", data_dir=folder, verify=False), "synthetic 28x28"
    bf16 = default_amp(torch.device("cpu"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            lecture, lean, engine, fp32 = [], [], [], []
            for _ in range(args.rounds):  # interleaved, so machine noise hits all alike
                lecture.append(lecture_loop(name, data, args.steps))
                lean.append(lecture_loop(name, data, args.steps, LeanPerSampleDataset))
                engine.append(engine_loop(name, data, args.steps, Path(tmp)))
                fp32.append(engine_loop(name, data, args.steps, Path(tmp), amp=False) if bf16 else engine[-1])
            row = {
                "model": name,
                "lecture_images_per_s": statistics.median(lecture),
                "lean_loop_images_per_s": statistics.median(lean),
                "engine_images_per_s": statistics.median(engine),
                # per round, so a slow spell of the machine cancels out of each ratio
                "speedup": statistics.median(e / b for e, b in zip(engine, lecture)),
                "speedup_vs_lean": statistics.median(e / b for e, b in zip(engine, lean)),
                "engine_fp32_images_per_s": statistics.median(fp32),
                "speedup_fp32": statistics.median(e / b for e, b in zip(fp32, lecture)),
                "rounds": {"lecture": lecture, "lean": lean, "engine": engine, "engine_fp32": fp32},
            }
            rows.append(row)
            print(
                f"{name:<18} lecture loop {row['lecture_images_per_s']:7.0f} img/s   "
                f"lean loop {row['lean_loop_images_per_s']:7.0f}   cnnlab {row['engine_images_per_s']:7.0f}   "
                f"{row['speedup']:.2f}x ({row['speedup_vs_lean']:.2f}x vs lean)"
                + (
                    f"   fp32 {row['engine_fp32_images_per_s']:7.0f} {row['speedup_fp32']:.2f}x"
                    if bf16
                    else ""
                ),
                flush=True,
            )
    result = {
        "benchmark": "train_throughput",
        "data": source,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "engine_precision": "bf16 autocast (AMX)" if bf16 else "fp32",
        "target_speedup": 2.0,
        "rows": rows,
        "all_meet_target": all(r["speedup"] >= 2.0 for r in rows),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
