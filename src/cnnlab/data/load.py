"""Loading a dataset into memory: verified, validated, held as uint8 tensors, optionally split for validation.

Verification (``verify=True``, the default unless ``CNNLAB_NO_VERIFY=1`` is set): each file's decompressed
content must match the registry's ``raw_sha256``; where that hash is unknown (KMNIST), a .gz file must
match the official ``gz_sha256``; an uncompressed file with no known hash is only validated structurally,
with a warning. Structural checks always run: IDX header and length, uint8 images of the registry's size,
as many labels as images, labels below the number of classes.

Decoded cache: decompressing the 26 MB training .gz costs about a quarter of a second at every start. A
verified file's raw IDX bytes are kept in ``<user cache>/decoded/<raw_sha256>.idx`` (written atomically);
the name is the content's own hash, so a cached copy is re-hashed on use and ignored if it does not match.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.catalog import (
    DataFile,
    DatasetInfo,
    dataset_files,
    dataset_info,
    locate_dataset,
    user_cache_dir,
)
from cnnlab.data.idx import GZIP_MAGIC, parse_idx, read_raw_bytes
from cnnlab.errors import DataError, UsageError
from cnnlab.fileio import atomic_write_bytes, sha256_hex

NO_VERIFY_ENV = "CNNLAB_NO_VERIFY"


@dataclass
class Split:
    """One split held in memory: uint8 images [N, H, W] (or [N, C, H, W]) and int64 labels [N]."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: torch.Tensor, name: str | None = None) -> Split:
        """The samples at ``indices`` (a copy), e.g. for a validation split."""
        return Split(name or self.name, self.images[indices], self.labels[indices])


@dataclass
class DatasetSplits:
    """A loaded dataset: its registry entry, train / val (None without val_fraction) / test, provenance."""

    info: DatasetInfo
    train: Split
    val: Split | None
    test: Split
    directory: Path
    checks: dict[str, str]


def verification_enabled(verify: bool | None) -> bool:
    """``verify`` if given, else True unless the environment sets ``CNNLAB_NO_VERIFY=1``."""
    if verify is not None:
        return bool(verify)
    return os.environ.get(NO_VERIFY_ENV, "").strip().lower() not in ("1", "true", "yes")


def decoded_cache_path(raw_sha256: str) -> Path:
    """Where the verified raw IDX bytes with this hash are cached."""
    return user_cache_dir() / "decoded" / f"{raw_sha256}.idx"


def _mismatch(path: Path, kind: str, actual: str, expected: str) -> DataError:
    return DataError(
        f"{path}: checksum mismatch ({kind} SHA-256 {actual[:16]}..., expected {expected[:16]}...): the file is "
        f"corrupt, truncated or not the dataset it claims to be; delete it and fetch it again "
        f"(or set {NO_VERIFY_ENV}=1 to load unverified data)"
    )


def read_verified(
    path: Path, file: DataFile, *, verify: bool, use_cache: bool = True
) -> tuple[np.ndarray, str]:
    """Decode one dataset file, checking it against ``file``'s hashes; returns (array, how it was checked)."""
    if verify and use_cache and file.raw_sha256 and path.name.endswith(".gz"):
        cached = decoded_cache_path(file.raw_sha256)
        try:
            content = cached.read_bytes()
        except OSError:
            content = b""
        if content and sha256_hex(content) == file.raw_sha256:
            return parse_idx(content, path), "raw sha256 (cached)"
    try:
        packed = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    is_gzip = packed[:2] == GZIP_MAGIC
    if verify and is_gzip and not file.raw_sha256 and file.gz_sha256:
        # No known raw hash (KMNIST): only the official .gz bytes can vouch for the content.
        actual = sha256_hex(packed)
        if actual != file.gz_sha256:
            raise _mismatch(path, ".gz", actual, file.gz_sha256)
    content = read_raw_bytes(path) if is_gzip else packed
    status = "not verified"
    if verify and file.raw_sha256:
        actual = sha256_hex(content)
        if actual != file.raw_sha256:
            raise _mismatch(path, "raw content", actual, file.raw_sha256)
        status = "raw sha256"
        if use_cache and is_gzip:
            try:
                atomic_write_bytes(decoded_cache_path(file.raw_sha256), content)
            except OSError:
                pass  # a read-only cache only costs speed
    elif verify and is_gzip and file.gz_sha256:
        status = "official .gz sha256"
    elif verify:
        warnings.warn(f"{path}: no known checksum for this file; validated structurally only", stacklevel=3)
        status = "structure only (no known checksum)"
    return parse_idx(content, path), status


def _check_pair(info: DatasetInfo, images: np.ndarray, labels: np.ndarray, paths: tuple[Path, Path]) -> None:
    """Images and labels of one split agree with each other and with the registry entry."""
    image_path, label_path = paths
    expected = info.image_size if info.in_chans == 1 else (info.in_chans, *info.image_size)
    if images.dtype != np.uint8 or tuple(images.shape[1:]) != tuple(expected):
        shape = "x".join(map(str, images.shape[1:]))
        raise DataError(
            f"{image_path}: expected uint8 images of {'x'.join(map(str, expected))}, "
            f"found {images.dtype} images of {shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{label_path}: expected a 1-D uint8 label file, found {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= info.num_classes:
        bad = int((labels >= info.num_classes).sum())
        raise DataError(
            f"{label_path}: {bad} labels outside 0..{info.num_classes - 1} (largest {int(labels.max())}) "
            f"for the {info.num_classes} classes of {info.name}"
        )


def validation_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of a reproducible random split of ``n`` samples, both sorted and disjoint."""
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n_val >= n:
        raise UsageError(f"val_fraction {val_fraction} leaves no training samples out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:].sort().values, order[:n_val].sort().values


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    verify: bool | None = None,
    use_cache: bool = True,
) -> DatasetSplits:
    """Load ``name`` into memory as uint8 tensors, verified (see module docstring) and split.

    ``val_fraction`` of the training set (chosen by ``seed``) becomes ``val``; ``data_dir`` is searched first,
    either as ``<data_dir>/<name>/`` or holding the four files directly.
    """
    info = dataset_info(name)
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    verify = verification_enabled(verify)
    directory = locate_dataset(name, data_dir)
    paths = dataset_files(directory, info)
    assert paths is not None  # locate_dataset found all four
    arrays, checks = {}, {}
    for role, path in paths.items():
        arrays[role], checks[role] = read_verified(path, info.files[role], verify=verify, use_cache=use_cache)
    splits = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        _check_pair(info, images, labels, (paths[f"{split}_images"], paths[f"{split}_labels"]))
        splits[split] = Split(split, torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))
    train, val = splits["train"], None
    if val_fraction > 0:
        train_idx, val_idx = validation_indices(len(train), val_fraction, seed)
        train, val = train.subset(train_idx, "train"), train.subset(val_idx, "val")
    return DatasetSplits(info, train, val, splits["test"], directory, checks)
