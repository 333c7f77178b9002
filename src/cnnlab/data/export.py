"""A dataset written out as an image folder, and the statistics of any dataset (registry, CIFAR or folder).

Export layout: ``DIR/train/<k>_<class>/<index>.png`` and ``DIR/test/...``: the class folder names start
with the zero-padded label, so that their sorted order is the registry's label order, and the file names
are the zero-padded position in the split, so that loading the folder gives back the same samples in the
same order (the seeded validation split and the batches of a run are then those of the original). A
``cnnlab-dataset.json`` beside them records the registry's class names and mean/std, which loading uses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import DataError, UsageError, few
from cnnlab.fileio import atomic_write_text, creation_mode

EXPORT_FORMATS = ("imagefolder",)
#: what an export folder holds (module docstring); --overwrite replaces a folder of these alone
EXPORT_ENTRIES = ("train", "test", "cnnlab-dataset.json")


def class_folder_name(label: int, name: str, num_classes: int) -> str:
    """``"3_Dress"``: the label zero-padded to the width of the largest, then the name made safe for a path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "class"
    return f"{label:0{len(str(num_classes - 1))}d}_{safe}"


def _write_split(
    images: np.ndarray, labels: np.ndarray, folder: Path, folders: list[str], progress: bool
) -> None:
    from PIL import Image
    from tqdm import tqdm

    for name in folders:
        (folder / name).mkdir(parents=True)
    width = len(str(max(len(labels) - 1, 0)))
    for i in tqdm(
        range(len(labels)), desc=folder.name, unit="img", disable=None if progress else True, leave=False
    ):
        image = images[i]
        image = image[0] if image.ndim == 3 and image.shape[0] == 1 else image
        pil = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0) if image.ndim == 3 else image))
        pil.save(folder / folders[int(labels[i])] / f"{i:0{width}d}.png", compress_level=1)


def export_imagefolder(
    name: str,
    out_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write dataset ``name``'s train and test splits as PNG files under ``out_dir`` (see the module docstring).

    An existing non-empty ``out_dir`` is refused unless ``overwrite``; the folder is written beside it and
    swapped in only when complete, so a failure leaves the old one as it was. Returns ``out_dir``.
    """
    from cnnlab.data.imagefolder import is_folder_spec
    from cnnlab.data.load import load_dataset

    if is_folder_spec(name):
        raise UsageError(f"export writes a registry dataset (cnnlab data list); {name!r} is a folder already")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; name a folder to export into")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out} exists and is not empty; pass --overwrite to replace it")
        # --overwrite replaces an earlier export, never a folder holding anything else
        foreign = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_ENTRIES)
        if foreign or not (out / "cnnlab-dataset.json").is_file():
            shown = few(foreign) if foreign else "no cnnlab-dataset.json"
            raise UsageError(
                f"{out} is not an image folder cnnlab exported ({shown}); --overwrite replaces only such a "
                "folder: choose a new or empty one"
            )
    data = load_dataset(name, data_dir=data_dir)
    info = data.info
    folders = [class_folder_name(k, c, info.num_classes) for k, c in enumerate(info.classes)]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part"))
        staging.chmod(creation_mode(folder=True))  # mkdtemp's is owner-only; the export is a plain folder
    except OSError as err:
        raise DataError(f"cannot write beside {out} ({err.strerror}); choose another folder") from None
    try:
        for split in (data.train, data.test):
            _write_split(split.images.numpy(), split.labels.numpy(), staging / split.name, folders, progress)
        record = {
            "source": info.name,
            "classes": list(info.classes),
            "folders": folders,
            "mean": list(info.mean),
            "std": list(info.std),
            "stats_source": info.stats_source,
            "train_size": len(data.train),
            "test_size": len(data.test),
        }
        atomic_write_text(staging / "cnnlab-dataset.json", json.dumps(record, indent=2))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        raise DataError(f"cannot write the image folder {out} ({err.strerror or err})") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def dataset_stats(
    data: str,
    *,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    in_chans: int | None = None,
    bad_images: str = "error",
    progress: bool = True,
) -> dict[str, Any]:
    """Mean and std per channel (over the training images, in [0, 1]), images per class and split, and the
    image sizes (for a folder: the sizes found on disk, with counts, before resizing) of ``data``."""
    from cnnlab.data.imagefolder import (
        LazyImages,
        channel_stats,
        folder_path,
        is_folder_spec,
        probe_sizes,
        scan_folder,
    )
    from cnnlab.data.load import load_dataset

    splits = load_dataset(data, data_dir=data_dir, image_size=image_size, in_chans=in_chans,
                          bad_images=bad_images, progress=progress)  # fmt: skip
    info = splits.info
    train = splits.train.images
    mean, std = channel_stats(train[:2000].numpy() if isinstance(train, LazyImages) else train)
    counts = {}
    for split in (splits.train, splits.val, splits.test):
        if split is not None:
            counts[split.name] = np.bincount(split.labels.numpy(), minlength=info.num_classes).tolist()
    if is_folder_spec(data):
        on_disk = probe_sizes(scan_folder(folder_path(data)), progress=progress)
    else:
        on_disk = Counter(
            {f"{info.image_size[1]}x{info.image_size[0]}": len(splits.train) + len(splits.test)}
        )
    return {
        "data": data if is_folder_spec(data) else info.name,
        "classes": list(info.classes),
        "channels": int(train.shape[1]) if len(train.shape) == 4 else 1,
        "stored_size": list(info.image_size),
        "mean": mean,
        "std": std,
        "counts": counts,
        "image_sizes": dict(on_disk.most_common()),
    }
