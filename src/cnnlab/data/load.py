"""Loading a dataset into memory: verified, validated, held as uint8 tensors, optionally split for validation.

Verification (``verify=True``, the default unless ``CNNLAB_NO_VERIFY=1`` is set): each file's decompressed
content must match the registry's ``raw_sha256``; where that hash is unknown (KMNIST), a .gz file must
match the official ``gz_sha256``; an uncompressed file with no known hash is only validated structurally,
with a warning. Structural checks always run: IDX header and length, uint8 images of the registry's size,
as many labels as images, labels below the number of classes.

The mismatch message suggests ``CNNLAB_NO_VERIFY=1`` only where it would change anything: when ``verify``
was not given. ``cnnlab data check`` and ``cnnlab data list`` always verify, and always hash the bytes.

Decoded cache (loading only): decompressing the 26 MB training .gz costs most of a load. Once a .gz file is
verified, its raw IDX bytes are kept in ``<user cache>/decoded/<raw_sha256>.idx`` and a stamp,
``<user cache>/decoded/sources/<hash of the source's path>.json``, records the source's path, its own
SHA-256, the raw SHA-256 and its stat key (size, mtime_ns, ctime_ns, inode, device) taken before it was read.
A later load uses the cached bytes only if the source's stat key is unchanged and the stamp vouches for the
hash the registry expects; the cached bytes are re-hashed on use. Any write to the source, a replacement
(new inode) or a ``touch``/``os.utime`` restoring the old mtime changes its ctime, which no user program can
set back, so such a file is read and verified again. A source changed less than :data:`RACY_WINDOW_NS` ago
is not stamped: timestamps are coarse (a clock tick, or seconds on some filesystems), so a later change
within the same tick could keep the key (git's "racy clean" problem).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from cnnlab.data.idx import GZIP_MAGIC, parse_idx, read_raw_bytes, unpack
from cnnlab.errors import DataError, UsageError
from cnnlab.fileio import atomic_write_bytes, atomic_write_text, sha256_hex

NO_VERIFY_ENV = "CNNLAB_NO_VERIFY"
# A source whose mtime or ctime is this recent is not stamped (see the module docstring).
RACY_WINDOW_NS = 2_000_000_000
#: the ``data`` name prefix of a dataset a script hands in (:func:`tensor_splits`); no file holds it
MEMORY_PREFIX = "memory:"


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
    manifest: dict | None = None  # an image folder's files, labels and splits (saved in a run directory)


def verification_enabled(verify: bool | None) -> bool:
    """``verify`` if given, else True unless the environment sets ``CNNLAB_NO_VERIFY=1``."""
    if verify is not None:
        return bool(verify)
    return os.environ.get(NO_VERIFY_ENV, "").strip().lower() not in ("1", "true", "yes")


def decoded_cache_path(raw_sha256: str) -> Path:
    """Where the verified raw IDX bytes with this hash are cached."""
    return user_cache_dir() / "decoded" / f"{raw_sha256}.idx"


def stamp_path(source: Path) -> Path:
    """Where the stamp of the source file ``source`` (see the module docstring) is kept."""
    key = sha256_hex(str(source.resolve()).encode())[:32]
    return user_cache_dir() / "decoded" / "sources" / f"{key}.json"


def stat_key(st: os.stat_result) -> list[int]:
    """What identifies an unchanged file: size, mtime_ns, ctime_ns, inode, device."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def read_cached(path: Path, file: DataFile) -> tuple[bytes, str] | None:
    """The decoded content of ``path`` and how it was checked, if its stamp says it was verified against
    ``file``'s hashes and its stat key has not changed since; else None (the caller reads it again)."""
    try:
        stamp = json.loads(stamp_path(path).read_text())
        current = stat_key(os.stat(path))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(stamp, dict)
        or stamp.get("path") != str(path.resolve())
        or stamp.get("stat") != current
    ):
        return None
    raw_sha256 = stamp.get("raw_sha256")
    if file.raw_sha256:
        if raw_sha256 != file.raw_sha256:
            return None
        status = "raw sha256 (cached)"
    elif file.gz_sha256 and stamp.get("source_sha256") == file.gz_sha256:
        status = "official .gz sha256 (cached)"
    else:
        return None
    if not (
        isinstance(raw_sha256, str) and len(raw_sha256) == 64 and set(raw_sha256) <= set("0123456789abcdef")
    ):
        return None  # a damaged or forged stamp must not name an arbitrary file to read
    cached = decoded_cache_path(raw_sha256)
    try:
        content = cached.read_bytes()
    except OSError:
        return None
    if sha256_hex(content) != raw_sha256:
        cached.unlink(missing_ok=True)  # damaged: the source is decoded again, which rewrites it
        return None
    return content, status


def remember(path: Path, before: os.stat_result, source_sha256: str, content: bytes, raw_sha256: str) -> None:
    """Cache the verified ``content`` of ``path`` and stamp it with ``before``, its stat taken before it was
    read (``raw_sha256`` is the content's); nothing if the source changed too recently to trust its
    timestamps, or the cache is unwritable."""
    if time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) < RACY_WINDOW_NS:
        return
    cached = decoded_cache_path(raw_sha256)
    stamp = {
        "path": str(path.resolve()),
        "stat": stat_key(before),
        "source_sha256": source_sha256,
        "raw_sha256": raw_sha256,
    }
    try:
        if not (cached.is_file() and cached.stat().st_size == len(content)):
            atomic_write_bytes(cached, content)  # content-addressed: one copy for every source of it
        atomic_write_text(stamp_path(path), json.dumps(stamp))
    except OSError:
        pass  # a read-only cache only costs speed


def mismatch_error(path: Path, kind: str, actual: str, expected: str, no_verify_hint: bool) -> DataError:
    """The DataError for a file whose ``kind`` SHA-256 is not the expected one; ``no_verify_hint``: suggest
    CNNLAB_NO_VERIFY (only where that setting would be honoured: ``data check`` always verifies)."""
    hint = f" (or set {NO_VERIFY_ENV}=1 to load unverified data)" if no_verify_hint else ""
    kind = f"{kind} " if kind else ""
    return DataError(
        f"{path}: checksum mismatch ({kind}SHA-256 {actual[:16]}..., expected {expected[:16]}...): the file is "
        f"corrupt, truncated or not the dataset it claims to be; delete it and fetch it again{hint}"
    )


def read_verified(
    path: Path, file: DataFile, *, verify: bool, use_cache: bool = True, no_verify_hint: bool = False
) -> tuple[np.ndarray, str]:
    """Decode one dataset file, checking it against ``file``'s hashes; returns (array, how it was checked).

    ``use_cache``: take the decoded bytes from the stat-keyed cache when the file is unchanged since it was
    verified, and fill the cache; without it the file's bytes are always read and hashed. ``no_verify_hint``:
    a mismatch suggests setting CNNLAB_NO_VERIFY (only where that setting would be honoured).
    """
    if not verify:
        return parse_idx(read_raw_bytes(path), path), "not verified"
    if use_cache:
        hit = read_cached(path, file)
        if hit is not None:
            return parse_idx(hit[0], path), hit[1]
    try:
        before = os.stat(path)
        packed = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    is_gzip = packed[:2] == GZIP_MAGIC
    source_sha256 = sha256_hex(packed) if is_gzip and (use_cache or not file.raw_sha256) else ""
    if is_gzip and not file.raw_sha256 and file.gz_sha256 and source_sha256 != file.gz_sha256:
        # No known raw hash (KMNIST): only the official .gz bytes can vouch for the content.
        raise mismatch_error(path, ".gz", source_sha256, file.gz_sha256, no_verify_hint)
    content = unpack(packed, path, file.raw_size, advice="delete it and fetch it again")
    actual = sha256_hex(content)
    if file.raw_sha256:
        if actual != file.raw_sha256:
            raise mismatch_error(path, "raw content", actual, file.raw_sha256, no_verify_hint)
        status = "raw sha256"
    elif is_gzip and file.gz_sha256:
        status = "official .gz sha256"
    else:
        warnings.warn(f"{path}: no known checksum for this file; validated structurally only", stacklevel=3)
        return parse_idx(content, path), "structure only (no known checksum)"
    array = parse_idx(content, path)
    if use_cache and is_gzip:
        remember(path, before, source_sha256, content, actual)
    return array, status


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
    *,
    image_size: int | None = None,
    in_chans: int | None = None,
    bad_images: str = "error",
    progress: bool = True,
    recorded: dict | None = None,
) -> DatasetSplits:
    """Load ``name`` into memory as uint8 tensors, verified (see module docstring) and split.

    ``val_fraction`` of the training set (chosen by ``seed``) becomes ``val``; ``data_dir``, if given, is the
    only place searched, either as ``<data_dir>/<name>/`` or holding the four files directly. ``use_cache``:
    see the module docstring; pass False to read and hash every byte (as ``cnnlab data check`` does).

    ``name`` may also be an image folder (``imagefolder:PATH`` or a path; see :mod:`cnnlab.data.imagefolder`),
    decoded at ``image_size`` into ``in_chans`` channels with the ``bad_images`` policy; those three apply
    to image folders only; so does ``recorded``, a saved run's ``data_manifest.json``, whose files and
    splits are then loaded exactly (see :func:`cnnlab.data.imagefolder.restrict_to_record`). CIFAR-10/100
    are read from their binary files (:mod:`cnnlab.data.cifar`).
    """
    from cnnlab.data.imagefolder import is_folder_spec, load_image_folder

    if name.startswith(MEMORY_PREFIX):
        raise UsageError(
            f"{name} is data a script handed in (cnnlab.data.tensor_splits); no file holds it: pass the same "
            "data again (data=...: train with resume=True, evaluate_checkpoint, load_saved_model)"
        )
    if is_folder_spec(name):
        return load_image_folder(
            name, image_size=image_size, in_chans=in_chans, bad_images=bad_images, val_fraction=val_fraction,
            seed=seed, progress=progress, use_cache=use_cache, recorded=recorded,
        )  # fmt: skip
    if image_size is not None:
        raise UsageError(f"--image-size applies to image folders; {name} has a fixed size (use --pad-to)")
    info = dataset_info(name)
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    no_verify_hint = verify is None  # the environment decides: setting CNNLAB_NO_VERIFY would change this
    verify = verification_enabled(verify)
    if info.format == "cifar":
        from cnnlab.data.cifar import load_cifar

        data = load_cifar(info, data_dir, verify, no_verify_hint=no_verify_hint)
        if val_fraction > 0:
            train_idx, val_idx = validation_indices(len(data.train), val_fraction, seed)
            data.train, data.val = data.train.subset(train_idx, "train"), data.train.subset(val_idx, "val")
        return data
    directory = locate_dataset(name, data_dir)
    paths = dataset_files(directory, info)
    assert paths is not None  # locate_dataset found all four
    arrays, checks = {}, {}
    for role, path in paths.items():
        arrays[role], checks[role] = read_verified(
            path, info.files[role], verify=verify, use_cache=use_cache, no_verify_hint=no_verify_hint
        )
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


def class_subset(data: DatasetSplits, classes: Sequence[int]) -> DatasetSplits:
    """The samples of ``classes`` only, relabelled ``0 .. k-1`` in the order given (class ``classes[i]``
    becomes ``i``), in every split; the info's class names and count follow. For transfer experiments
    (Yosinski et al. 2014: tasks A and B are two halves of one dataset's classes)."""
    count = data.info.num_classes
    bad = [c for c in classes if not 0 <= c < count]
    if bad:
        raise UsageError(f"class indices {bad} are outside {data.info.name}'s 0..{count - 1}")
    order = torch.tensor(list(classes), dtype=torch.int64)
    relabel = torch.full((count,), -1, dtype=torch.int64)
    relabel[order] = torch.arange(len(order))

    def view(split: Split | None) -> Split | None:
        if split is None:
            return None
        keep = torch.nonzero(relabel[split.labels] >= 0).flatten()
        return Split(split.name, split.images[keep], relabel[split.labels[keep]])

    info = dataclasses.replace(data.info, classes=tuple(data.info.classes[c] for c in classes))
    return dataclasses.replace(
        data, info=info, train=view(data.train), val=view(data.val), test=view(data.test)
    )


def as_labelled_images(what: str, pair: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` checked: uint8 images [N, H, W] or [N, C, H, W], integer labels [N]."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise UsageError(f"{what} must be a pair (images, labels), got {type(pair).__name__}")
    images, labels = (torch.as_tensor(v) for v in pair)
    if images.dtype != torch.uint8:
        raise UsageError(
            f"{what} images must be uint8 (raw pixels 0-255), got {images.dtype}; convert floats in [0, 1] "
            "with (x * 255).round().to(torch.uint8)"
        )
    if images.dim() not in (3, 4) or labels.dim() != 1 or len(images) != len(labels) or not len(labels):
        raise UsageError(
            f"{what} needs images [N, H, W] or [N, C, H, W] and labels [N] of the same N > 0, got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.min() < 0:
        raise UsageError(f"{what} labels must be class indices 0, 1, ... (integers), got {labels.dtype}")
    return images.contiguous(), labels.long()


def tensor_splits(
    name: str,
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    classes: Sequence[str] | None = None,
) -> DatasetSplits:
    """A dataset a script holds in memory, as training takes it: ``train(TrainConfig(data="memory:NAME"), run,
    data=tensor_splits("NAME", (x, y), (x_test, y_test)))``.

    Images are uint8 [N, H, W] or [N, C, H, W], labels class indices; ``classes`` names them (default "0",
    "1", ...). The normalisation's mean and standard deviation are measured on the training images. The
    run records ``memory:NAME`` as its data, and its checkpoints how the images were prepared, so predict,
    export and show work from the run alone; evaluating or resuming it takes the same data again
    (``evaluate_checkpoint(run, data=...)``, ``train(..., resume=True, data=...)``).
    """
    from cnnlab.data.imagefolder import channel_stats

    train_images, train_labels = as_labelled_images("train", train)
    test_images, test_labels = as_labelled_images("test", test)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise UsageError(
            f"train and test images differ in shape: {tuple(train_images.shape[1:])} and "
            f"{tuple(test_images.shape[1:])}"
        )
    count = int(max(train_labels.max(), test_labels.max())) + 1
    classes = tuple(str(c) for c in classes) if classes is not None else tuple(str(i) for i in range(count))
    if len(classes) < count:
        raise UsageError(f"the labels go up to {count - 1} but {len(classes)} class names were given")
    mean, std = channel_stats(train_images)
    info = DatasetInfo(
        name=f"{MEMORY_PREFIX}{name}", title=f"{name} (held in memory)", classes=classes,
        mean=tuple(mean), std=tuple(max(s, 1e-6) for s in std), image_size=tuple(train_images.shape[-2:]),
        train_size=len(train_labels), test_size=len(test_labels), files={},
        in_chans=1 if train_images.dim() == 3 else int(train_images.shape[1]),
        stats_source="measured on the training images handed in",
    )  # fmt: skip
    return DatasetSplits(
        info, Split("train", train_images, train_labels), None, Split("test", test_images, test_labels),
        Path("."), {},
    )  # fmt: skip


def same_data(spec: str, name: str) -> bool:
    """Whether the data spec ``spec`` (a run's ``data``) names the dataset loaded as ``name`` (its info's)."""
    from cnnlab.data.imagefolder import folder_path, is_folder_spec

    if spec == name:
        return True
    if is_folder_spec(spec) and is_folder_spec(name):
        return folder_path(spec).resolve() == folder_path(name).resolve()
    return False
