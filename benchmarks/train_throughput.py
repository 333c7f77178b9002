"""Training throughput of the lecture nets: the cnnlab engine against the lectures' own loop.

The baseline is written the way lectures 10 and 11 write it: a per-sample Dataset whose
``__getitem__`` turns one image into a tensor and normalises it (ToTensor + Normalize), a
DataLoader with batch 64, NCHW tensors, SGD with momentum 0.5, ``loss.item()`` every step.
The engine is :class:`cnnlab.train.Trainer` with its default recipe (whole-dataset uint8 tensors,
batched normalisation, channels_last, batch 128, denormals flushed). Both train the same model
for the same number of steps in this one process, interleaved round by round, and the table
reports images/s and their ratio (target: >= 2.0x on every lecture net on 2 CPU cores).

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

import torch
from torch.utils.data import DataLoader, Dataset

from cnnlab.data import load_dataset
from cnnlab.errors import DataError
from cnnlab.models import create_model
from cnnlab.train import TrainConfig, Trainer

MODELS = ("lecture-simple", "lecture-inception", "lecture-residual")
RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"


class LectureStyleDataset(Dataset):
    """One sample at a time, converted and normalised per sample, as torchvision's ToTensor + Normalize do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        self.images, self.labels, self.mean, self.std = images.numpy(), labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).float().div(255).unsqueeze(0)  # ToTensor
        return (image - self.mean) / self.std, int(self.labels[index])  # Normalize


def lecture_loop(model_name: str, data, steps: int) -> float:
    """Images/s of ``steps`` steps of the lectures' loop (after 3 warm-up steps)."""
    torch.manual_seed(0)
    model = create_model(model_name)
    dataset = LectureStyleDataset(data.train.images, data.train.labels, data.info.mean[0], data.info.std[0])
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


def engine_loop(model_name: str, data, steps: int, workdir: Path) -> float:
    """Images/s of the cnnlab engine over ``steps`` steps (after a 3-step warm-up epoch)."""
    cfg = TrainConfig(model=model_name, epochs=2, max_steps_per_epoch=steps)
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
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            lecture, engine = [], []
            for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
                lecture.append(lecture_loop(name, data, args.steps))
                engine.append(engine_loop(name, data, args.steps, Path(tmp)))
            row = {
                "model": name,
                "lecture_images_per_s": statistics.median(lecture),
                "engine_images_per_s": statistics.median(engine),
            }
            row["speedup"] = row["engine_images_per_s"] / row["lecture_images_per_s"]
            rows.append(row)
            print(
                f"{name:<18} lecture loop {row['lecture_images_per_s']:8.0f} img/s   "
                f"cnnlab {row['engine_images_per_s']:8.0f} img/s   {row['speedup']:.2f}x",
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
        "target_speedup": 2.0,
        "rows": rows,
        "all_meet_target": all(r["speedup"] >= 2.0 for r in rows),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
