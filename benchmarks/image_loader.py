"""Images/s of the cnnlab image-folder loader against a per-sample Pillow ``Dataset`` with a DataLoader.

Two generated folders: 20,000 PNG images of 32x32 (CIFAR's shape) with the CIFAR recipe's augmentation
(zero-pad 4, random 32x32 crop, random flip: ``Augment(crop_padding=4, flip=True)``), and 2,000 JPEG images
of 256x256 with AlexNet's random 224x224 crop and flip (the ``alexnet`` pipeline without its colour PCA:
``Augment(pipeline="alexnet", input_size=224, pca_std=0)``). The cnnlab side loads the folder (decoded once into the
cached uint8 array; that first load is timed and reported on its own) and iterates
:class:`cnnlab.data.BatchLoader`. The baseline is the usual per-sample pipeline: a ``Dataset`` whose
``__getitem__`` opens the file with Pillow, converts it to a float tensor, pads, crops, flips and
normalises it, batched by ``DataLoader(num_workers=2)``. Both are timed over whole epochs after a first
untimed epoch (cache built, workers started, files in the page cache), in this one process, interleaved
round by round; the table reports the median images/s. Targets: >= 3x on the PNG folder, >= 1.5x on the
JPEG folder.

    python benchmarks/image_loader.py [--png 20000] [--jpeg 2000] [--rounds 3] [--work-dir DIR] [--save]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import add_output_args, cpu_info, verdict, write_results
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cnnlab.data import Augment, BatchLoader, load_dataset
from cnnlab.data.load import Split
from cnnlab.data.synthetic import synthetic_images

TARGETS = {"png32": 3.0, "jpeg256": 1.5}


def make_folder(root: Path, count: int, size: int, ext: str, classes: int = 10) -> Path:
    """``count`` generated colour images of ``size`` in ``classes`` class folders (kept if already there)."""
    done = root / ".complete"
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    classes = min(classes, count)  # no empty class folder (an error) in a tiny trial run
    labels = np.arange(count) % classes
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True)
    for start in range(0, count, 500):
        chunk = labels[start : start + 500]
        grey = synthetic_images(chunk.astype(np.uint8), size, seed=start)
        for i, (image, label) in enumerate(zip(grey, chunk)):
            rgb = np.stack([image, image[::-1], 255 - image], axis=-1)
            Image.fromarray(rgb).save(root / f"class{label}" / f"{start + i:06d}.{ext}", quality=90)
    done.write_text("")
    return root


class PillowFolderDataset(Dataset):
    """The usual per-sample pipeline: open with Pillow, to a float tensor, pad, random crop, flip, normalise."""

    def __init__(self, root: Path, crop: int, padding: int, mean: list[float], std: list[float]) -> None:
        self.items = sorted((p, int(p.parent.name[5:])) for p in root.glob("class*/*.*"))
        self.crop, self.padding = crop, padding
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        with Image.open(path) as image:
            x = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float().div(255)
        if self.padding:
            x = F.pad(x, [self.padding] * 4)
        top = int(torch.randint(0, x.shape[1] - self.crop + 1, ()))
        left = int(torch.randint(0, x.shape[2] - self.crop + 1, ()))
        x = x[:, top : top + self.crop, left : left + self.crop]
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        return (x - self.mean) / self.std, label


def epoch_rate(batches: object, count: int) -> float:
    """Images/s of one pass over ``batches``."""
    start = time.perf_counter()
    seen = 0
    for x, _ in batches:  # type: ignore[attr-defined]
        seen += x.shape[0]
    elapsed = time.perf_counter() - start
    assert seen == count, (seen, count)
    return count / elapsed


def measure(
    name: str, root: Path, args: argparse.Namespace, *, image_size: int | None, crop: int, padding: int
) -> dict:
    """Both loaders on one folder: first load, then ``args.rounds`` timed epochs each, interleaved."""
    start = time.perf_counter()
    data = load_dataset(str(root), image_size=image_size, progress=False)
    first_load = time.perf_counter() - start
    start = time.perf_counter()
    load_dataset(str(root), image_size=image_size, progress=False)
    cached_load = time.perf_counter() - start
    everything = Split(
        "all",
        torch.cat([data.train.images, data.test.images]),
        torch.cat([data.train.labels, data.test.labels]),
    )
    augment = (
        Augment(crop_padding=padding, flip=True)
        if crop == everything.images.shape[-1]
        else Augment(pipeline="alexnet", input_size=crop, pca_std=0)  # random crops and flips; no colour PCA
    )
    ours = BatchLoader(
        everything, args.batch_size, shuffle=True, augment=augment, mean=data.info.mean, std=data.info.std
    )
    dataset = PillowFolderDataset(root, crop, padding, list(data.info.mean), list(data.info.std))
    theirs = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=2, persistent_workers=True
    )
    n = len(everything)
    epoch_rate(ours, n), epoch_rate(theirs, n)  # first epoch: untimed
    rates: dict[str, list[float]] = {"cnnlab": [], "baseline": []}
    for _ in range(args.rounds):
        rates["cnnlab"].append(epoch_rate(ours, n))
        rates["baseline"].append(epoch_rate(theirs, n))
    del theirs
    row = {
        "folder": name,
        "images": n,
        "first_load_s": round(first_load, 2),
        "cached_load_s": round(cached_load, 2),
        "cnnlab_images_per_s": round(statistics.median(rates["cnnlab"]), 1),
        "baseline_images_per_s": round(statistics.median(rates["baseline"]), 1),
        "rounds": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
    }
    row["speedup"] = round(row["cnnlab_images_per_s"] / row["baseline_images_per_s"], 2)
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--png", type=int, default=20_000, help="images in the 32x32 PNG folder (default: 20000)"
    )
    parser.add_argument(
        "--jpeg", type=int, default=2_000, help="images in the 256x256 JPEG folder (default: 2000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per loader (default: 3)")
    parser.add_argument("--batch-size", type=int, default=128, help="(default: 128)")
    parser.add_argument(
        "--work-dir", type=Path, help="where the generated folders are kept (default: a temporary folder)"
    )
    add_output_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table and the verdicts, write the JSON."""
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cnnlab-image-bench-"))
    old_cache = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # a fresh decoded cache: the first load is measured
    try:
        rows = [
            measure("png32", make_folder(work / f"png32-{args.png}", args.png, 32, "png"), args,
                    image_size=None, crop=32, padding=4),
            measure("jpeg256", make_folder(work / f"jpeg256-{args.jpeg}", args.jpeg, 256, "jpg"), args,
                    image_size=256, crop=224, padding=0),
        ]  # fmt: skip
    finally:
        if old_cache is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old_cache
        shutil.rmtree(work / "cache", ignore_errors=True)
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'folder':<9} {'images':>7} {'first load s':>13} {'cached load s':>14} {'cnnlab img/s':>13} "
          f"{'baseline img/s':>15} {'speed-up':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['folder']:<9} {r['images']:>7} {r['first_load_s']:>13} {r['cached_load_s']:>14} "
              f"{r['cnnlab_images_per_s']:>13} {r['baseline_images_per_s']:>15} {r['speedup']:>8}x")  # fmt: skip
    verdicts = [
        verdict(f"{r['folder']}, cnnlab loader vs per-sample Pillow DataLoader(num_workers=2)",
                f">= {TARGETS[r['folder']]:.2f}x", f"{r['speedup']:.2f}x", r["speedup"] >= TARGETS[r["folder"]])
        for r in rows
    ]  # fmt: skip
    result = {
        **cpu_info(),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "rows": rows,
        "verdicts": verdicts,
        "all_meet_target": all(v["met"] for v in verdicts),
    }
    write_results("image_loader", result, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
