"""CIFAR-10 and CIFAR-100 in their official binary format: reading, verifying, fetching, unpacking safely.

A binary CIFAR file is a sequence of records: CIFAR-10's are 1 label byte then 3,072 pixel bytes (the red,
green and blue 32x32 planes, row-major); CIFAR-100's are 2 label bytes (coarse, then fine) then the same
pixels. A file whose length is not a whole number of records, or not the registry's length, is refused.
The Python version of CIFAR (``cifar-10-python.tar.gz``: pickles) is refused with a message naming the
binary archive: nothing in cnnlab unpickles data.

Verification: each file must match the registry's SHA-256, or the digest recorded when ``cnnlab data
fetch`` unpacked it from an archive whose own SHA-256 was checked (``cnnlab-unpacked.json`` beside the
files). Unpacking refuses any member that would land outside the target folder, links, devices and any
other special member, members larger than the files they stand for, and stops at a size limit; it writes
into a temporary folder renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from cnnlab.data.catalog import (
    CIFAR_RECORD_PIXELS,
    DataFile,
    DatasetInfo,
    dataset_files,
    locate_dataset,
    search_roots,
)
from cnnlab.errors import DataError
from cnnlab.fileio import atomic_write_text, sha256_file

UNPACKED_RECORD = "cnnlab-unpacked.json"
PICKLE_FOLDERS = ("cifar-10-batches-py", "cifar-100-python")
# Largest member of an archive that is not one of the dataset's files (CIFAR's label-name .txt files).
MAX_OTHER_MEMBER = 1 << 20
PICKLE_MAGIC = b"\x80"  # pickle protocol 2 and above start with PROTO (0x80)


def pickle_message(what: str, info: DatasetInfo) -> str:
    """The refusal of CIFAR's Python (pickle) version, naming the binary archive to use instead."""
    archive = info.archive.name if info.archive else "the binary version"
    return (
        f"{what} is the Python (pickle) version of CIFAR, which cnnlab never unpickles; use the binary "
        f"version, {archive} (`cnnlab data fetch {info.name}`)"
    )


def label_bytes(info: DatasetInfo) -> int:
    """Label bytes per record: 1 (CIFAR-10), 2 (CIFAR-100: coarse, fine)."""
    return 2 if info.coarse_classes else 1


def parse_records(
    content: bytes, path: Path, info: DatasetInfo, expected_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], fine labels uint8 [N]) of one binary CIFAR file, structure checked."""
    if content[:1] == PICKLE_MAGIC:
        raise DataError(pickle_message(str(path), info))
    record = label_bytes(info) + CIFAR_RECORD_PIXELS
    if len(content) == 0 or len(content) % record:
        raise DataError(
            f"{path}: {len(content)} bytes is not a whole number of {record}-byte {info.name} records: the file "
            "is truncated or not CIFAR's binary format; delete it and fetch it again"
        )
    if expected_size is not None and len(content) != expected_size:
        raise DataError(
            f"{path}: {len(content) // record} records, expected {expected_size // record}; the file is "
            "truncated or another file; delete it and fetch it again"
        )
    rows = np.frombuffer(content, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, label_bytes(info) - 1].copy()
    if int(labels.max()) >= info.num_classes:
        raise DataError(
            f"{path}: a label of {int(labels.max())} for the {info.num_classes} classes of {info.name}; "
            "not a CIFAR file of this dataset"
        )
    images = rows[:, label_bytes(info) :].reshape(-1, 3, 32, 32).copy()
    return images, labels


def unpacked_digests(directory: Path) -> dict[str, str]:
    """File name -> SHA-256 as recorded when the files of ``directory`` were unpacked from a verified archive."""
    try:
        record = json.loads((directory / UNPACKED_RECORD).read_text())
        files = record.get("files", {}) if isinstance(record, dict) else {}
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError):
        return {}


def verify_file(path: Path, file: DataFile, recorded: dict[str, str], *, no_verify_hint: bool = False) -> str:
    """Check one file's SHA-256 against the registry or the unpacking record; returns how it was checked.

    ``no_verify_hint``: a mismatch suggests CNNLAB_NO_VERIFY (only where that setting would be honoured)."""
    try:
        digest = sha256_file(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if file.raw_sha256 and digest == file.raw_sha256:
        return "sha256"
    if recorded.get(file.name) == digest:
        return "sha256 (recorded when unpacked from the verified archive)"
    expected = file.raw_sha256 or recorded.get(file.name) or "?"
    from cnnlab.data.load import mismatch_error

    raise mismatch_error(path, "", digest, expected, no_verify_hint)


def refuse_pickle_copy(name: str, info: DatasetInfo, data_dir: str | os.PathLike | None) -> None:
    """DataError if the places searched hold CIFAR's pickle version (and so, probably, not the binary one)."""
    for _, root in search_roots(data_dir):
        for where in (root, root / name):
            for folder in PICKLE_FOLDERS:
                if (where / folder).is_dir():
                    raise DataError(pickle_message(str(where / folder), info))


def load_cifar(
    info: DatasetInfo,
    data_dir: str | os.PathLike | None,
    verify: bool,
    use_cache: bool = True,
    *,
    no_verify_hint: bool = False,
) -> Any:
    """CIFAR's train and test splits as a :class:`~cnnlab.data.load.DatasetSplits` (no validation split);
    ``no_verify_hint`` as :func:`verify_file`'s."""
    from cnnlab.data.load import DatasetSplits, Split

    try:
        directory = locate_dataset(info.name, data_dir)
    except DataError:
        refuse_pickle_copy(info.name, info, data_dir)
        raise
    paths = dataset_files(directory, info)
    assert paths is not None
    recorded = unpacked_digests(directory / info.archive.folder) if info.archive else {}
    splits, checks = {}, {}
    for split in ("train", "test"):
        roles = [r for r in info.files if r == split or r.startswith(f"{split}_")]
        images, labels = [], []
        for role in roles:
            file, path = info.files[role], paths[role]
            checks[role] = (
                verify_file(path, file, recorded, no_verify_hint=no_verify_hint) if verify else "not verified"
            )
            try:
                content = path.read_bytes()
            except OSError as err:
                raise DataError(f"{path}: cannot read ({err.strerror})") from None
            x, y = parse_records(content, path, info, file.raw_size if verify else None)
            images.append(x)
            labels.append(y)
        splits[split] = Split(
            split,
            torch.from_numpy(np.concatenate(images)),
            torch.from_numpy(np.concatenate(labels).astype(np.int64)),
        )
    return DatasetSplits(info, splits["train"], None, splits["test"], directory, checks)


# ------------------------------------------------------------------------------------------- unpacking


def archive_hint(path: Path, info: DatasetInfo) -> str:
    """A note for a checksum mismatch: what the archive holds instead, where that is recognisable."""
    try:
        with tarfile.open(path, "r:*") as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return ""
    if (
        first is not None
        and PurePosixPath(first.name).parts[:1]
        and PurePosixPath(first.name).parts[0] in PICKLE_FOLDERS
    ):
        return "; " + pickle_message("the archive", info)
    return ""


def _member_problem(member: tarfile.TarInfo, info: DatasetInfo, sizes: dict[str, int]) -> str | None:
    """Why ``member`` may not be unpacked, or None."""
    parts = PurePosixPath(member.name).parts
    if parts and parts[0] in PICKLE_FOLDERS:
        return "pickle"
    if member.name.startswith("/") or ".." in parts or not parts:
        return f"member {member.name!r} would be written outside the target folder"
    if member.issym() or member.islnk():
        return f"member {member.name!r} is a link (to {member.linkname!r}); links are not unpacked"
    if not (member.isfile() or member.isdir()):
        return f"member {member.name!r} is a device or special file"
    if member.isfile():
        limit = sizes.get(member.name, MAX_OTHER_MEMBER)
        if member.size > limit:
            return f"member {member.name!r} is {member.size} bytes, more than the {limit} it can be"
    return None


def unpack_archive(archive: Path, target: Path, info: DatasetInfo) -> Path:
    """Unpack ``archive`` (already verified, or a test's) into ``target``/<its folder>, safely (see the module
    docstring); records each dataset file's SHA-256 in ``cnnlab-unpacked.json``. Returns the folder."""
    assert info.archive is not None
    sizes = {f.name: f.raw_size for f in info.files.values() if f.raw_size is not None}
    budget = sum(sizes.values()) + 16 * MAX_OTHER_MEMBER
    final = target / info.archive.folder
    staging = Path(tempfile.mkdtemp(dir=target, prefix=f".{info.archive.folder}.", suffix=".part"))
    written = 0
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    problem = _member_problem(member, info, sizes)
                    if problem == "pickle":
                        raise DataError(pickle_message(str(archive), info))
                    if problem:
                        raise DataError(
                            f"{archive}: {problem}; nothing was unpacked; fetch it again or from another --mirror"
                        )
                    written += member.size
                    if written > budget:
                        raise DataError(
                            f"{archive}: more than {budget} bytes to unpack; refused (not {info.name}?)"
                        )
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, staging, filter="data")
                    else:  # pragma: no cover - Python without extraction filters: our own checks above
                        tar.extract(member, staging)
        except (tarfile.TarError, EOFError, zlib.error) as err:
            raise DataError(f"{archive}: truncated or corrupt archive ({err}); fetch it again") from None
        folder = staging / info.archive.folder
        digests = {}
        for file in info.files.values():
            path = staging / file.name
            if not path.is_file():
                raise DataError(f"{archive}: does not hold {file.name}; not the {info.name} binary archive")
            parse_records(path.read_bytes(), path, info, file.raw_size)
            digests[file.name] = sha256_file(path)
        atomic_write_text(
            folder / UNPACKED_RECORD, json.dumps({"archive": info.archive.name, "files": digests}, indent=2)
        )
        if final.exists():
            shutil.rmtree(final)
        os.replace(folder, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def fetch_cifar(
    info: DatasetInfo, target: Path, mirrors: list[str], *, progress: bool, timeout: float
) -> None:
    """Download ``info``'s archive from the first mirror that works, check its SHA-256 (or, where none is
    known, its MD5 and size), unpack it into ``target`` and delete the archive."""
    from cnnlab.data.fetch import download_file

    archive = info.archive
    assert archive is not None
    dest = target / archive.name
    failures = []

    def check(path: Path, sha256: str, url: str) -> str:
        if archive.sha256:
            if sha256 == archive.sha256:
                return "official archive sha256"
            raise DataError(
                f"{url}: checksum mismatch (SHA-256 {sha256[:16]}..., expected {archive.sha256[:16]}...): corrupt "
                f"or truncated download, or a different file{archive_hint(path, info)}; try again or another --mirror"
            )
        import hashlib

        md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        if md5 != archive.md5 or path.stat().st_size != archive.size:
            raise DataError(
                f"{url}: MD5 or size mismatch; try again or another --mirror{archive_hint(path, info)}"
            )
        return "official archive md5 and size"

    for base in mirrors:
        url = base.rstrip("/") + "/" + archive.name
        try:
            download_file(
                url, dest, None, progress=progress, timeout=timeout, limit=archive.size, check=check
            )
            break
        except DataError as err:
            failures.append(str(err))
    else:
        raise DataError(f"could not fetch {archive.name} of {info.name}: " + "; ".join(failures))
    try:
        unpack_archive(dest, target, info)
    finally:
        dest.unlink(missing_ok=True)
