"""Small generated datasets in the MNIST layout, for tests and demos that must not need the real files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnlab.data.catalog import dataset_info
from cnnlab.data.idx import write_idx
from cnnlab.fileio import atomic_write_bytes


def synthetic_images(labels: np.ndarray, size: int = 28, noise: int = 40, seed: int = 0) -> np.ndarray:
    """uint8 images [N, size, size]: bright bars whose height and pattern encode the label, plus noise.

    Label k puts a 3-pixel-high bar in band ``k % 5`` (of five, top to bottom), either one centred block
    (k < 5) or two blocks near the edges (k >= 5). Both patterns are mirror-symmetric, so horizontal flips
    keep the label; a small CNN separates the classes within an epoch.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, noise + 1, size=(len(labels), size, size), dtype=np.uint8)
    band = (size - 3) // 5  # 5 px apart at 28: bars stay distinct under a 2-pixel crop shift
    centre, edge = size // 2, size // 4
    for label in np.unique(labels):
        top = 2 + (int(label) % 5) * band
        spans = (
            [(centre - 4, centre + 4)]
            if int(label) % 10 < 5
            else [(edge - 4, edge + 2), (size - edge - 2, size - edge + 4)]
        )
        members = np.flatnonzero(labels == label)
        for left, right in spans:
            bright = rng.integers(180, 256, size=(len(members), 3, right - left), dtype=np.uint8)
            images[members, top : top + 3, left:right] = bright
    return images


def write_synthetic_dataset(
    root: str | os.PathLike,
    name: str = "fashion-mnist",
    train_size: int = 600,
    test_size: int = 200,
    seed: int = 0,
    compress: str | None = "gzip",
) -> Path:
    """Write a learnable stand-in for ``name`` under ``<root>/<name>/`` with the official file names.

    Labels are balanced (cycled) and shuffled. Its checksums are not the official ones: load it with
    ``load_dataset(name, data_dir=root, verify=False)``. Returns ``root``.
    """
    info = dataset_info(name)
    rng = np.random.default_rng(seed)
    directory = Path(root) / name
    for split, count in (("train", train_size), ("test", test_size)):
        labels = rng.permutation(np.arange(count) % info.num_classes).astype(np.uint8)
        images = synthetic_images(labels, info.image_size[0], seed=int(rng.integers(1 << 31)))
        for role, array in ((f"{split}_images", images), (f"{split}_labels", labels)):
            file = info.files[role]
            write_idx(directory / (file.gz_name if compress else file.name), array, compress=compress)
    return Path(root)


def cifar_records(labels: np.ndarray, info_name: str = "cifar10", seed: int = 0) -> bytes:
    """Binary CIFAR records of generated 32x32 colour images for ``labels`` (CIFAR-100: the coarse label
    byte is ``label // 5``), in the official record layout: label byte(s), then the R, G, B planes."""
    grey = synthetic_images(labels, 32, seed=seed)
    planes = np.stack([grey, grey[:, ::-1], 255 - grey], axis=1).reshape(len(labels), -1)
    heads = [labels[:, None] // 5, labels[:, None]] if info_name == "cifar100" else [labels[:, None]]
    return np.concatenate([*(h.astype(np.uint8) for h in heads), planes], axis=1).tobytes()


def write_synthetic_cifar(
    root: str | os.PathLike, name: str = "cifar10", per_file: int = 20, seed: int = 0
) -> Path:
    """Write a small stand-in for CIFAR ``name`` under ``<root>/<name>/<its folder>/`` with the official file
    names and record layout (``per_file`` records each). Load with ``verify=False``. Returns ``root``."""
    info = dataset_info(name)
    rng = np.random.default_rng(seed)
    for i, file in enumerate(info.files.values()):
        labels = rng.integers(0, info.num_classes, per_file).astype(np.uint8)
        atomic_write_bytes(Path(root) / name / file.name, cifar_records(labels, name, seed=seed + i))
    return Path(root)
