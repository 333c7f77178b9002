"""Folders of images as datasets: scanned, decoded once by worker processes, cached on disk, verified.

Layout: one subfolder per class (class names: the folder names, sorted; label k is the k-th), either
directly under the root or under ``train/`` with optional ``val/`` and ``test/`` beside it. A ``val/``
folder is the validation split (no seeded hold-out then); without ``test/``, a seeded
:data:`TEST_FRACTION` of the images (fixed seed :data:`TEST_SPLIT_SEED`, so the test split is a property of
the folder, not of a run's seed) is held out as the test split. Samples are ordered by their path inside
their class folder, then by class, so that a folder written by ``cnnlab data export`` (zero-padded index
file names) comes back in the order it was written.

Files: JPEG, PNG, BMP, WebP and GIF (its first frame), by extension; other files are ignored and counted,
hidden files (``.name``) are ignored. Any mode is converted to the requested channels: 1 (grey, ``L``) or 3
(``RGB``); 16- and 32-bit grey keep their top 8 bits; alpha is dropped. The default channel count is 1 if
every image is grey (modes 1, L, LA, I, I;16, F), else 3. Images are stored at one size: ``image_size`` S
resizes the shorter side to S (bilinear, antialiased) and crops the centre SxS; without it every image must
already share one size.

Cache: the decoded images of a folder are one uint8 array [N, C, H, W] in
``<user cache>/images/<key>.npy``, memory-mapped on use. The key hashes every file's identity (path
relative to the root, size, mtime_ns, inode) and the decode settings; the array's SHA-256 is stored beside
it (``<key>.json``) and checked on every load, so a damaged cache is decoded again, never trusted.

Datasets too large for a share (:data:`MEMORY_SHARE`) of physical memory are not decoded up front: their
splits hold :class:`LazyImages`, which decode the images of each batch in worker processes when the batch
loader asks for them (no disk cache).

Bad input is a one-line :class:`DataError` naming the file (``bad_images="error"``, the default), or
skipped with a warning giving the count (``bad_images="skip"``): a corrupt or truncated file, one over
:data:`MAX_IMAGE_PIXELS` (a decompression bomb), a broken link. An empty class folder, a folder with no
images, a class whose every image is unreadable, a symbolic-link loop and images of several sizes
without ``image_size`` are errors either way.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.catalog import DatasetInfo, check_bad_images, user_cache_dir
from cnnlab.errors import DataError, UsageError
from cnnlab.fileio import atomic_file, atomic_write_text, sha256_file, sha256_hex

#: the image files of a folder, for training as for predicting (torchvision's list, with GIF)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".pgm", ".ppm")
SPLIT_FOLDERS = ("train", "val", "test")
TEST_FRACTION = 0.2  # held out as the test split of a folder without test/
TEST_SPLIT_SEED = 0
# Larger images are refused before decoding (a decompression bomb): 8k x 8k, far above any CNN's input.
MAX_IMAGE_PIXELS = 64_000_000
# A decoded dataset larger than this share of physical memory is streamed, not held in memory.
MEMORY_SHARE = 0.25
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# Bumped whenever decoding changes, so that no cache made by another decoder is used.
DECODER_VERSION = 1
# Folders of fewer images are decoded in this process: starting workers costs more than it saves.
MIN_PARALLEL = 512
CHUNK = 64  # images per worker task
METADATA_FILE = "cnnlab-dataset.json"  # written by `cnnlab data export`: class names and mean/std


class BadImage(Exception):
    """An image that cannot be decoded; the message says why (the caller names the file)."""


@dataclass(frozen=True)
class ImageFile:
    """One image of a folder: its path relative to the root, label, split folder and identity."""

    relpath: str
    label: int
    split: str  # "train", "val", "test" (its folder) or "" (no split folders)
    size: int
    mtime_ns: int
    inode: int


@dataclass
class FolderScan:
    """What a folder holds: its classes, its images in dataset order, and what was ignored."""

    root: Path
    classes: list[str]
    files: list[ImageFile]
    ignored: int = 0  # non-image files
    split_folders: bool = False

    def paths(self) -> list[str]:
        """Every image's full path, in dataset order."""
        base = os.path.join(str(self.root), "")
        return [base + f.relpath for f in self.files]

    def identity(self) -> list[list[Any]]:
        """Everything the decoded cache depends on, file by file."""
        return [[f.relpath, f.size, f.mtime_ns, f.inode] for f in self.files]


def is_folder_spec(data: str) -> bool:
    """Whether ``--data`` names an image folder (``imagefolder:PATH``, or a path) rather than a registry name."""
    from cnnlab.data.catalog import DATASETS

    if data.startswith("imagefolder:"):
        return True
    return data not in DATASETS and ("/" in data or os.sep in data or Path(data).is_dir())


def folder_path(data: str) -> Path:
    """The folder an image-folder ``--data`` names."""
    return Path(data.removeprefix("imagefolder:")).expanduser()


# ---------------------------------------------------------------------------------------------- scanning


def _walk_images(folder: Path, root: Path) -> tuple[list[tuple[str, os.stat_result | None]], int]:
    """Image files under ``folder`` (links followed, loops refused): (path relative to root, stat), ignored.

    Plain strings, not pathlib: a folder of 70,000 images is scanned at every load.
    """
    found: list[tuple[str, os.stat_result | None]] = []
    ignored = 0
    seen: set[tuple[int, int]] = set()
    prefix = len(str(root).rstrip(os.sep)) + 1
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        try:
            st = os.stat(current)
        except OSError as err:
            raise DataError(
                f"{current}: cannot read the folder ({err.strerror}); fix the link or remove it"
            ) from None
        if (st.st_dev, st.st_ino) in seen:
            raise DataError(f"{current}: a symbolic-link loop (this folder contains itself); remove the link")
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as err:
            raise DataError(f"{current}: cannot list the folder ({err.strerror})") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(entry.path)
                continue
            if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                ignored += 1
                continue
            try:
                fst: os.stat_result | None = entry.stat()  # follows links
            except OSError as err:  # a broken link, or a link loop (ELOOP)
                if err.errno == errno.ELOOP:
                    raise DataError(f"{entry.path}: a symbolic-link loop; remove the link") from None
                fst = None  # decoding reports it under the bad-images policy
            found.append((entry.path[prefix:].replace(os.sep, "/"), fst))
    return found, ignored


def _class_folders(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".") and e.is_dir())
    except OSError as err:
        raise DataError(f"{folder}: cannot list the folder ({err.strerror})") from None


def scan_folder(root: str | os.PathLike) -> FolderScan:
    """The classes and images of an image folder (see the module docstring), in dataset order."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"image folder {root} does not exist; name a folder with one subfolder per class")
    if not root.is_dir():
        raise UsageError(f"{root} is a file, not an image folder; name a folder with one subfolder per class")
    splits = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if splits and "train" not in splits:
        raise DataError(
            f"{root} has {'/ '.join(splits)}/ but no train/ folder; add train/ with one folder per class"
        )
    groups = [(s, root / s) for s in splits] if splits else [("", root)]
    classes = _class_folders(groups[0][1])
    if not classes:
        raise DataError(
            f"{groups[0][1]} has no class folders; put each class's images in a subfolder named after it"
        )
    index = {c: i for i, c in enumerate(classes)}
    files: list[ImageFile] = []
    ignored = 0
    empty: list[Path] = []
    for split, folder in groups:
        rows = []
        for name in _class_folders(folder):
            if name not in index:
                raise DataError(
                    f"{folder / name}: class {name!r} is not among the train/ classes; add it to train/ or remove it"
                )
            found, skipped = _walk_images(folder / name, root)
            ignored += skipped
            if not found and split in ("", "train"):
                empty.append(folder / name)
            prefix = len((folder / name).relative_to(root).as_posix()) + 1
            for relpath, st in found:
                rows.append((relpath[prefix:], index[name], relpath, st))
        rows.sort(key=lambda r: (r[0], r[1]))  # path inside the class folder, then class
        for _, label, relpath, st in rows:
            files.append(
                ImageFile(relpath, label, split, st.st_size if st else -1, st.st_mtime_ns if st else -1,
                          st.st_ino if st else -1)
            )  # fmt: skip
    if not files:
        raise DataError(
            f"{root}: no images found ({', '.join(IMAGE_EXTENSIONS)}); {ignored} other files ignored"
        )
    if empty:
        raise DataError(f"{empty[0]}: empty class folder (no images); add images or remove the folder")
    return FolderScan(root, classes, files, ignored, bool(splits))


# --------------------------------------------------------------------------------------------- decoding


def to_eight_bit(image: Any) -> Any:
    """16/32-bit integer and float grey images as 8-bit ``L`` (integers: their top 8 of 16 bits)."""
    from PIL import Image

    array = np.asarray(image)
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L")
    return Image.fromarray((np.clip(array.astype(np.int64), 0, 65535) >> 8).astype(np.uint8), "L")


@contextlib.contextmanager
def pil_warnings_ignored() -> Iterator[None]:
    """Pillow's own warnings silenced while an image is read: they concern metadata cnnlab does not read
    ("Corrupt EXIF data" from a truncated TIFF's tags); an image whose pixels cannot be read is a BadImage,
    which every reader (training, predict, show) reports in its own one line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def probe_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int, str]:
    """(width, height, mode) from the header; BadImage if unreadable or over ``max_pixels``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with pil_warnings_ignored(), Image.open(path) as image:
            width, height = image.size
            mode = image.mode
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise BadImage(f"not a readable image ({err})") from None
    if width * height > max_pixels:
        raise BadImage(
            f"{width}x{height} pixels, over the limit of {max_pixels:,} (a decompression bomb is refused)"
        )
    return width, height, mode


def decode_image(
    path: str | os.PathLike, size: int | None, chans: int, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """One image as uint8 [chans, H, W]: converted, and with ``size`` resized (shorter side) and centre-cropped.

    BadImage for a corrupt, truncated or unreadable file, or one over ``max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with pil_warnings_ignored(), Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(
                    f"{width}x{height} pixels, over the limit of {max_pixels:,} (a decompression bomb is refused)"
                )
            image.seek(0)  # a GIF's (or any animation's) first frame
            image.load()
            return image_array(image, size, chans)
    except BadImage:
        raise
    except UnidentifiedImageError as err:  # no header Pillow knows: worded as probe_image words it
        raise BadImage(f"not a readable image ({err})") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImage(f"corrupt or truncated image ({err})") from None


def image_array(image: Any, size: int | None, chans: int) -> np.ndarray:
    """A loaded PIL image as uint8 [chans, H, W]: converted to 8 bits and to ``chans`` channels, and with
    ``size`` its shorter side resized to ``size`` (bilinear) and centre-cropped to a square."""
    from PIL import Image

    width, height = image.size
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = to_eight_bit(image)
    image = image.convert("L" if chans == 1 else "RGB")
    if size is not None and (width, height) != (size, size):
        scale = size / min(width, height)
        new = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = image.resize(new, Image.Resampling.BILINEAR)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _probe_chunk(paths: Sequence[str], max_pixels: int) -> list[tuple[int, int, str] | str]:
    out: list[tuple[int, int, str] | str] = []
    for p in paths:
        try:
            out.append(probe_image(p, max_pixels))
        except BadImage as err:
            out.append(str(err))
    return out


def _decode_chunk(
    paths: Sequence[str], size: tuple[int, int] | int | None, chans: int, max_pixels: int
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode ``paths`` into one array [k, C, H, W]; the failures as (position, reason), their rows zero.

    ``size``: an int resizes; a (height, width) pair is the size every image must already have.
    """
    resize = size if isinstance(size, int) else None
    h, w = (size, size) if isinstance(size, int) else size  # type: ignore[misc]
    out = np.zeros((len(paths), chans, h, w), dtype=np.uint8)
    bad = []
    for i, p in enumerate(paths):
        try:
            image = decode_image(p, resize, chans, max_pixels)
            if image.shape[1:] != (h, w):
                raise BadImage(
                    f"{image.shape[2]}x{image.shape[1]} pixels, unlike the other images' {w}x{h}; "
                    "pass --image-size S to resize them all"
                )
            out[i] = image
        except BadImage as err:
            bad.append((i, str(err)))
    return out, bad


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _run_chunks(
    func: Any, chunks: list[Any], args: tuple, workers: int, progress: bool, what: str
) -> Iterator[Any]:
    """``func(chunk, *args)`` for each chunk, in order, in worker processes (or here, for ``workers`` 0)."""
    from tqdm import tqdm

    total = sum(len(c) for c in chunks)
    with tqdm(total=total, unit="img", desc=what, disable=None if progress else True, leave=False) as bar:
        if workers <= 0 or len(chunks) < 2:
            for chunk in chunks:
                result = func(chunk, *args)
                bar.update(len(chunk))
                yield result
            return
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(func, chunk, *args) for chunk in chunks]
            for chunk, future in zip(chunks, futures):
                yield future.result()
                bar.update(len(chunk))


def probe_sizes(scan: FolderScan, *, workers: int | None = None, progress: bool = True) -> Counter[str]:
    """How many images of each size (``"WxH"``) the folder holds, from their headers (unreadable: ``"?"``)."""
    paths = scan.paths()
    workers = default_workers(len(paths)) if workers is None else workers
    chunks = _run_chunks(
        _probe_chunk, _chunks(paths, CHUNK * 4), (MAX_IMAGE_PIXELS,), workers, progress, "reading headers"
    )
    return Counter("?" if isinstance(r, str) else f"{r[0]}x{r[1]}" for chunk in chunks for r in chunk)


def default_workers(n: int) -> int:
    """Worker processes for decoding ``n`` images: none for a few, else one per core (at most 8)."""
    return 0 if n < MIN_PARALLEL else min(8, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------------ loading


@dataclass
class DecodeSettings:
    """How a folder's images are stored: their size (H, W), channel count and the resize asked for."""

    height: int
    width: int
    chans: int
    image_size: int | None


def report_bad_images(bad: Sequence[tuple[str, str]], policy: str) -> None:
    """The one report of unreadable images ``bad`` (path, reason): a DataError naming the first under
    ``policy`` "error", else one warning with their count."""
    if not bad:
        return
    if policy == "error":
        path, reason = bad[0]
        more = f" ({len(bad) - 1} more bad images)" if len(bad) > 1 else ""
        raise DataError(f"{path}: {reason}{more}; fix or remove it, or pass --bad-images skip")
    warnings.warn(
        f"skipped {len(bad)} unreadable image{'s' * (len(bad) != 1)} (first: {bad[0][0]}: {bad[0][1]})",
        stacklevel=3,
    )


def resolve_settings(
    scan: FolderScan,
    image_size: int | None,
    in_chans: int | None,
    *,
    bad_images: str = "error",
    max_pixels: int = MAX_IMAGE_PIXELS,
    workers: int | None = None,
    progress: bool = True,
    warn: bool = True,
) -> tuple[DecodeSettings, list[tuple[str, str]]]:
    """The decode settings (the defaults from the images' headers where not given) and the unreadable files.

    Only headers are read, and only where a default needs them: the size (without ``image_size``) and the
    channels (without ``in_chans``). An unreadable header is an error under ``bad_images="error"``, else a
    warning unless ``warn`` is False (a caller that decodes next warns once for every bad image).
    """
    if in_chans is not None and in_chans not in (1, 3):
        raise UsageError(
            f"an image folder is decoded to 1 or 3 channels, not {in_chans}; pass --in-chans 1 or 3"
        )
    paths = scan.paths()
    workers = default_workers(len(paths)) if workers is None else workers
    bad: list[tuple[str, str]] = []
    sizes: dict[tuple[int, int], str] = {}
    grey = True
    if image_size is None or in_chans is None:
        results = _run_chunks(
            _probe_chunk, _chunks(paths, CHUNK * 4), (max_pixels,), workers, progress, "reading headers"
        )
        flat = [r for chunk in results for r in chunk]
        for path, r in zip(paths, flat):
            if isinstance(r, str):
                bad.append((path, r))
                continue
            sizes.setdefault((r[1], r[0]), path)
            grey = grey and r[2] in GREY_MODES
        if warn or bad_images == "error":
            report_bad_images(bad, bad_images)
    if image_size is None:
        if len(sizes) > 1:
            (s1, p1), (s2, p2) = list(sizes.items())[:2]
            raise UsageError(
                f"the images of {scan.root} differ in size ({p1}: {s1[1]}x{s1[0]}, {p2}: {s2[1]}x{s2[0]}); "
                "pass --image-size S to resize the shorter side to S and crop the centre SxS"
            )
        if not sizes:
            raise DataError(f"{scan.root}: none of its {len(paths)} images can be read")
        ((height, width),) = sizes
    else:
        height = width = image_size
    chans = in_chans if in_chans is not None else (1 if grey else 3)
    return DecodeSettings(height, width, chans, image_size), bad


def cache_key(scan: FolderScan, image_size: int | None, in_chans: int | None) -> str:
    """The decoded cache's key: the root, every file's identity, the settings asked for, the decoder."""
    record = [str(scan.root.resolve()), scan.identity(), image_size, in_chans, DECODER_VERSION]
    return sha256_hex(json.dumps(record).encode())[:40]


def image_cache_dir() -> Path:
    """Where decoded image folders are cached."""
    return user_cache_dir() / "images"


def _read_cache(key: str, n: int) -> tuple[np.ndarray, dict] | None:
    """The verified cached array of ``key`` and its record, or None (absent, damaged: decode again)."""
    npy, meta_path = image_cache_dir() / f"{key}.npy", image_cache_dir() / f"{key}.json"
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or sha256_file(npy) != meta.get("sha256"):
            return None
        array = np.load(npy, mmap_mode="c", allow_pickle=False)  # copy-on-write: never writes the file
    except (OSError, ValueError):
        return None
    if array.dtype != np.uint8 or array.ndim != 4 or len(array) != n:
        return None
    return array, meta


def decode_folder(
    scan: FolderScan,
    image_size: int | None = None,
    in_chans: int | None = None,
    *,
    bad_images: str = "error",
    max_pixels: int = MAX_IMAGE_PIXELS,
    workers: int | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> tuple[np.ndarray, DecodeSettings, list[tuple[str, str]]]:
    """Every image of ``scan`` as one uint8 array [N, C, H, W] (a bad image's row is zero), the settings
    and the bad images (path, reason); from the verified cache where it holds this folder, else decoded
    by worker processes and cached."""
    check_bad_images(bad_images)
    key = cache_key(scan, image_size, in_chans)
    hit = _read_cache(key, len(scan.files)) if use_cache else None
    if hit is not None:
        array, meta = hit
        bad = [tuple(b) for b in meta.get("bad", [])]
        report_bad_images(bad, bad_images)  # type: ignore[arg-type]
        s = meta["settings"]
        return array, DecodeSettings(s["height"], s["width"], s["chans"], s["image_size"]), bad  # type: ignore[return-value]
    settings, bad = resolve_settings(
        scan,
        image_size,
        in_chans,
        bad_images=bad_images,
        max_pixels=max_pixels,
        workers=workers,
        progress=progress,
        warn=False,
    )
    paths = scan.paths()
    workers = default_workers(len(paths)) if workers is None else workers
    size = image_size if image_size is not None else (settings.height, settings.width)
    shape = (len(paths), settings.chans, settings.height, settings.width)
    known_bad = {p for p, _ in bad}
    bad = []
    npy = image_cache_dir() / f"{key}.npy"
    with atomic_file(npy) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        chunks = _chunks(paths, CHUNK)
        for start, (decoded, failures) in zip(
            range(0, len(paths), CHUNK),
            _run_chunks(
                _decode_chunk,
                chunks,
                (size, settings.chans, max_pixels),
                workers,
                progress,
                "decoding images",
            ),
        ):
            out[start : start + len(decoded)] = decoded
            bad.extend((paths[start + i], reason) for i, reason in failures)
            if bad_images == "error" and bad:
                report_bad_images(bad, "error")  # before decoding the rest; the temporary file is removed
        out.flush()
        del out
        digest = sha256_file(tmp)
    bad.extend((p, "unreadable header") for p in known_bad if p not in {b[0] for b in bad})
    record = {"sha256": digest, "settings": settings.__dict__, "bad": bad, "root": str(scan.root.resolve())}
    atomic_write_text(image_cache_dir() / f"{key}.json", json.dumps(record))
    report_bad_images(bad, bad_images)
    array = np.load(npy, mmap_mode="c", allow_pickle=False)
    return array, settings, bad


def folder_metadata(root: Path) -> dict | None:
    """The export record of a folder written by ``cnnlab data export`` (class names, mean/std), if any."""
    path = root / METADATA_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(
            f"{path}: unreadable ({err}); delete it (it only names classes and mean/std)"
        ) from None
    return meta if isinstance(meta, dict) else None


def channel_stats(images: np.ndarray | torch.Tensor) -> tuple[list[float], list[float]]:
    """Mean and standard deviation per channel of uint8 images [N, C, H, W] (or [N, H, W]), in [0, 1]."""
    array = images.numpy() if isinstance(images, torch.Tensor) else images
    if array.ndim == 3:
        array = array[:, None]
    c = array.shape[1]
    chunk = max(1, (1 << 23) // max(1, int(np.prod(array.shape[1:]))))  # ~64 MB of float64 at a time
    total = np.zeros(c, dtype=np.float64)
    squares = np.zeros(c, dtype=np.float64)
    count = 0
    for i in range(0, len(array), chunk):
        block = np.asarray(array[i : i + chunk], dtype=np.float64)
        total += block.sum(axis=(0, 2, 3))
        squares += np.square(block).sum(axis=(0, 2, 3))
        count += block.shape[0] * block.shape[2] * block.shape[3]
    if count == 0:
        return [0.0] * c, [1.0] * c
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return [float(v) / 255 for v in mean], [max(float(v) / 255, 1e-6) for v in std]


def pool_stats(key: str, images: torch.Tensor, rows: torch.Tensor) -> tuple[list[float], list[float]]:
    """:func:`channel_stats` of ``images[rows]``, kept beside the decoded cache ``key`` (they cost more than
    loading the cache): recomputed when the rows or the cache change."""
    path = image_cache_dir() / f"{key}.stats.json"
    rows_hash = sha256_hex(rows.numpy().tobytes())
    try:
        record = json.loads(path.read_text())
        if record.get("rows") == rows_hash and record.get("meta") == sha256_file(
            image_cache_dir() / f"{key}.json"
        ):
            return [float(v) for v in record["mean"]], [float(v) for v in record["std"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    mean, std = channel_stats(images.index_select(0, rows) if len(rows) < len(images) else images)
    try:
        meta_hash = sha256_file(image_cache_dir() / f"{key}.json")
        atomic_write_text(path, json.dumps({"rows": rows_hash, "meta": meta_hash, "mean": mean, "std": std}))
    except OSError:
        pass  # a read-only cache only costs time
    return mean, std


@dataclass
class LazyImages:
    """Images of a folder decoded on demand (in worker processes), for datasets too large to hold.

    Looks to :class:`~cnnlab.data.loader.BatchLoader` like a uint8 tensor [N, C, H, W]: indexing with a
    slice or index tensor selects files (nothing decoded), ``index_select`` decodes the images of a batch.
    """

    paths: list[str]
    chans: int
    height: int
    width: int
    image_size: int | None
    max_pixels: int = MAX_IMAGE_PIXELS
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))
    dtype: torch.dtype = torch.uint8

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), self.chans, self.height, self.width))

    @property
    def ndim(self) -> int:
        return 4

    def dim(self) -> int:
        """Number of dimensions (4), as a tensor's."""
        return 4

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: Any) -> Any:
        """An index tensor (or list) selects files: a lazy subset, nothing decoded (``Split.subset``); a slice
        or an int decodes, as the batch loader's unshuffled batches ask."""
        if isinstance(index, slice):
            return self.decode(self.paths[index])
        if isinstance(index, int):
            return self.decode([self.paths[index]])[0]
        chosen = [self.paths[int(i)] for i in torch.as_tensor(index).reshape(-1)]
        return replace(self, paths=chosen)

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        """Decode the images at ``index`` (dim 0) into a uint8 tensor, split among the workers."""
        if dim != 0:
            raise UsageError("LazyImages selects along the first dimension only")
        return self.decode([self.paths[int(i)] for i in index])

    def decode(self, paths: Sequence[str]) -> torch.Tensor:
        """Decode ``paths`` (a bad image is an error: a streamed dataset was checked when it was scanned)."""
        size = self.image_size if self.image_size is not None else (self.height, self.width)
        per = max(1, -(-len(paths) // max(1, self.workers)))
        chunks = _chunks(list(paths), per)
        workers = self.workers if len(paths) >= 2 * per and self.workers > 1 else 0
        parts = list(
            _run_chunks(_decode_chunk, chunks, (size, self.chans, self.max_pixels), workers, False, "")
        )
        for chunk, (_, bad) in zip(chunks, parts):
            if bad:
                raise DataError(f"{chunk[bad[0][0]]}: {bad[0][1]}; fix or remove it")
        return (
            torch.from_numpy(np.concatenate([p[0] for p in parts]))
            if parts
            else torch.zeros((0, self.chans, self.height, self.width), dtype=torch.uint8)
        )

    def numpy(self) -> np.ndarray:
        """All images decoded (for statistics of a small sample)."""
        return self.decode(self.paths).numpy()


def estimate_settings(
    scan: FolderScan, image_size: int | None, in_chans: int | None, max_pixels: int = MAX_IMAGE_PIXELS
) -> DecodeSettings:
    """The stored size and channels, for the memory estimate only, without reading every header: those
    asked for, else those of the decoded cache, else the first readable image's size and 3 channels."""
    meta_path = image_cache_dir() / f"{cache_key(scan, image_size, in_chans)}.json"
    try:
        s = json.loads(meta_path.read_text())["settings"]
        return DecodeSettings(int(s["height"]), int(s["width"]), int(s["chans"]), image_size)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    chans = in_chans or 3
    if image_size is not None:
        return DecodeSettings(image_size, image_size, chans, image_size)
    for path in scan.paths()[:16]:
        try:
            width, height, _ = probe_image(path, max_pixels)
            return DecodeSettings(height, width, chans, None)
        except BadImage:
            continue
    return DecodeSettings(1, 1, chans, None)  # nothing readable: decoding will say so


def fits_in_memory(n: int, settings: DecodeSettings, share: float = MEMORY_SHARE) -> bool:
    """Whether ``n`` decoded images take at most ``share`` of physical memory (True where unknown)."""
    from cnnlab.train.rundata import memory_bytes

    total = memory_bytes()
    return not total or n * settings.chans * settings.height * settings.width <= share * total


# ------------------------------------------------------------------------------------ a run's record

MANIFEST_FILE = "data_manifest.json"  # in a run's directory: the folder's files and splits as it trained


def recorded_rows(manifest: dict[str, Any], where: str = MANIFEST_FILE) -> dict[str, tuple[int, str, int]]:
    """A data manifest's rows as ``{path: (label, split, size)}``, or a :class:`DataError` if it is damaged."""
    try:
        columns = manifest["columns"]
        at = [columns.index(name) for name in ("path", "label", "split", "size")]
        rows = {str(r[at[0]]): (int(r[at[1]]), str(r[at[2]]), int(r[at[3]])) for r in manifest["files"]}
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise DataError(
            f"{where} is damaged ({type(err).__name__}: {err}); the run's record of its image folder's files and "
            "splits cannot be read"
        ) from None
    return rows


def _differences(
    recorded: dict[str, tuple[int, str, int]], current: dict[str, tuple[int, str, int]]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Paths added, removed, changed in size, and in another class or split, between two sets of rows."""
    added = [p for p in current if p not in recorded]
    removed = [p for p in recorded if p not in current]
    common = [p for p in recorded if p in current]
    resized = [p for p in common if recorded[p][2] != current[p][2]]
    moved = [p for p in common if recorded[p][:2] != current[p][:2]]
    return added, removed, resized, moved


def _describe(added: list[str], removed: list[str], resized: list[str], moved: list[str]) -> str:
    counts = [f"{len(added)} added", f"{len(removed)} removed"]
    counts += [f"{len(resized)} changed in size"] if resized else []
    counts += [f"{len(moved)} in another class or split"] if moved else []
    first = (removed or resized or moved or added)[0]
    return f"{', '.join(counts)} (first: {first})"


def restrict_to_record(scan: FolderScan, manifest: dict[str, Any]) -> FolderScan:
    """``scan`` cut down to the files a run recorded (``manifest``, its ``data_manifest.json``), so that the
    run's splits are rebuilt exactly; images added since are left out, with a warning.

    A recorded file that is gone or has another size, or other class folders, cannot give the run's
    splits back: a :class:`DataError` says what changed. Only names and sizes are compared (the manifest
    holds no content hashes; modification times change on any copy of the folder)."""
    root = scan.root
    if list(manifest.get("classes") or []) != scan.classes:
        raise DataError(
            f"{root} changed since the run was trained: its classes are now {', '.join(scan.classes)}, the run's "
            f"were {', '.join(map(str, manifest.get('classes') or []))}; the run's splits cannot be rebuilt. Restore "
            "the folder, or train a new run on it"
        )
    recorded = recorded_rows(manifest)
    # unreadable when the run trained (so not in its rows): neither added nor kept
    skipped = set(manifest.get("skipped_images") or [])
    # A file's split is the run's (held out by seed), not compared here; its path names its split folder.
    then = {p: (label, "", size) for p, (label, _, size) in recorded.items()}
    now = {
        f.relpath: (f.label, "", f.size) for f, path in zip(scan.files, scan.paths()) if path not in skipped
    }
    added, removed, resized, moved = _differences(then, now)
    if removed or resized or moved:
        raise DataError(
            f"{root} changed since the run was trained: {_describe(added, removed, resized, moved)}; the run's "
            f"train/val/test splits cannot be rebuilt, and using the folder as it is would score (or train on) "
            f"other splits. Restore the files the run's {MANIFEST_FILE} lists, or train a new run on the folder"
        )
    if added:
        warnings.warn(
            f"{root}: {len(added)} image{'s' * (len(added) != 1)} added since the run was trained "
            f"(first: {added[0]}) left out; the run's recorded splits are used",
            stacklevel=3,
        )
    return replace(scan, files=[f for f in scan.files if f.relpath in recorded])


def check_recorded_split(manifest: dict[str, Any], recorded: dict[str, Any], what: str) -> None:
    """A :class:`DataError` unless ``manifest`` (data as loaded now) has the files, classes and splits a run
    recorded (``recorded``, its ``data_manifest.json``); ``what`` names the data in the message."""
    now, then = recorded_rows(manifest, what), recorded_rows(recorded)
    differences = _differences(then, now)
    if manifest.get("classes") != recorded.get("classes") or any(differences):
        detail = _describe(*differences) if any(differences) else "other classes"
        raise DataError(
            f"{what} is not the data the run recorded in its {MANIFEST_FILE}: {detail}; its splits would differ "
            "from the run's. Restore the folder, or load it with the run's record (no data handed in)"
        )


def load_image_folder(
    data: str | os.PathLike,
    *,
    image_size: int | None = None,
    in_chans: int | None = None,
    bad_images: str = "error",
    val_fraction: float = 0.0,
    seed: int = 0,
    max_pixels: int = MAX_IMAGE_PIXELS,
    workers: int | None = None,
    progress: bool = True,
    stream: bool | None = None,
    use_cache: bool = True,
    recorded: dict[str, Any] | None = None,
) -> Any:
    """An image folder as a :class:`~cnnlab.data.load.DatasetSplits` of uint8 [N, C, H, W] splits.

    ``data``: the folder, or ``imagefolder:PATH``. ``val_fraction`` of the training images (by ``seed``)
    is the validation split unless the folder has ``val/``. ``stream``: None decides by memory
    (:func:`fits_in_memory`); True keeps the images on disk and decodes each batch (see :class:`LazyImages`).
    The result's ``manifest`` lists every file with its label and split (saved in a run's directory).
    ``recorded``: a saved run's manifest; its files and splits are loaded exactly
    (:func:`restrict_to_record`), or a :class:`DataError` says why they cannot be.
    """
    from cnnlab.data.load import DatasetSplits, Split, validation_indices

    check_bad_images(bad_images)
    if image_size is not None and image_size < 1:
        raise UsageError(f"--image-size must be at least 1, got {image_size}")
    root = folder_path(str(data))
    scan = scan_folder(root)
    if recorded is not None:
        scan = restrict_to_record(scan, recorded)
    n = len(scan.files)
    if stream is None:
        stream = not fits_in_memory(n, estimate_settings(scan, image_size, in_chans, max_pixels))
    if stream:
        settings, bad = resolve_settings(scan, image_size, in_chans, bad_images=bad_images,
                                         max_pixels=max_pixels, workers=workers, progress=progress)  # fmt: skip
        paths = scan.paths()
        images: Any = LazyImages(
            paths, settings.chans, settings.height, settings.width, settings.image_size, max_pixels
        )
    else:
        array, settings, bad = decode_folder(scan, image_size, in_chans, bad_images=bad_images,
                                             max_pixels=max_pixels, workers=workers, progress=progress,
                                             use_cache=use_cache)  # fmt: skip
        images = torch.from_numpy(array)
    bad_paths = {p for p, _ in bad}
    keep = [i for i, p in enumerate(scan.paths()) if p not in bad_paths] if bad_paths else list(range(n))
    files = [scan.files[i] for i in keep]
    if not files:
        raise DataError(f"{root}: none of its {n} images can be read")
    readable = {f.label for f in files}
    lost = [name for label, name in enumerate(scan.classes) if label not in readable]
    if lost:  # as an empty class folder: a class the model would have to predict but never sees
        raise DataError(
            f"{root}: class {lost[0]} has no readable image (each was skipped as unreadable); add readable "
            "images or remove its folder"
        )
    labels = torch.tensor([f.label for f in files], dtype=torch.int64)
    kept = torch.tensor(keep, dtype=torch.int64)

    def split_of(name: str) -> torch.Tensor:
        return torch.tensor([i for i, f in enumerate(files) if f.split == name], dtype=torch.int64)

    def take(indices: torch.Tensor, name: str) -> Split:
        rows = kept[indices]
        chosen = images[rows] if not isinstance(images, torch.Tensor) else images.index_select(0, rows)
        return Split(name, chosen, labels[indices])

    split_names = ["" for _ in files]
    if scan.split_folders:
        train_idx, val_idx, test_idx = split_of("train"), split_of("val"), split_of("test")
    else:
        train_idx, val_idx, test_idx = torch.arange(len(files)), torch.zeros(0, dtype=torch.int64), None
    if test_idx is None or len(test_idx) == 0:
        if len(train_idx) < 2:
            raise DataError(f"{root}: {len(train_idx)} training image; a test split needs at least 2")
        keep_idx, held = validation_indices(len(train_idx), TEST_FRACTION, TEST_SPLIT_SEED)
        train_idx, test_idx = train_idx[keep_idx], train_idx[held]
    train_pool = train_idx
    if len(val_idx) == 0 and val_fraction > 0:
        keep_idx, held = validation_indices(len(train_idx), val_fraction, seed)
        train_idx, val_idx = train_idx[keep_idx], train_idx[held]
    for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
        for i in idx.tolist():
            split_names[i] = name
    meta = folder_metadata(root) or {}
    class_names = list(scan.classes)
    if isinstance(meta.get("classes"), list) and len(meta["classes"]) == len(class_names):
        class_names = [str(c) for c in meta["classes"]]
    mean, std = meta.get("mean"), meta.get("std")
    if not (
        isinstance(mean, list)
        and isinstance(std, list)
        and len(mean) in (1, settings.chans)
        and len(mean) == len(std)
    ):
        pool_rows = kept[train_pool]
        if isinstance(images, LazyImages):
            mean, std = channel_stats(images[pool_rows[:2000]].numpy())
        else:
            mean, std = pool_stats(cache_key(scan, image_size, in_chans), images, pool_rows)
        stats_source = "measured on the folder's training images" + (" (a sample of 2000)" if stream else "")
    else:
        stats_source = f"recorded in {METADATA_FILE}"
        if len(mean) != settings.chans:
            mean, std = mean * settings.chans, std * settings.chans
    train, val, test = take(train_idx, "train"), take(val_idx, "val"), take(test_idx, "test")
    info = DatasetInfo(
        name=f"imagefolder:{root}",
        title=f"image folder {root}",
        classes=tuple(class_names),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        image_size=(settings.height, settings.width),
        train_size=len(train_pool),
        test_size=len(test_idx),
        files={},
        in_chans=settings.chans,
        stats_source=stats_source,
    )
    manifest = {
        "root": str(root.resolve()),
        "classes": list(scan.classes),
        "settings": settings.__dict__,
        "streamed": bool(stream),
        "ignored_files": scan.ignored,
        "skipped_images": [p for p, _ in bad],
        "columns": ["path", "label", "split", "size", "mtime_ns"],
        "files": [[f.relpath, f.label, s, f.size, f.mtime_ns] for f, s in zip(files, split_names)],
    }
    if recorded is not None:  # the same files must give the same splits; never a silent other split
        check_recorded_split(manifest, recorded, str(root))
    return DatasetSplits(info, train, val if len(val_idx) else None, test, root, {"images": "decoded cache, sha256"},
                         manifest=manifest)  # fmt: skip
