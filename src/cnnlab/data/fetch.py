"""Downloading a dataset's files with a progress bar, checksum verification and atomic replacement.

Each file is streamed into a temporary file in the target directory while its SHA-256 is computed, then
checked (official .gz SHA-256, else the SHA-256 of its decompressed content, plus the IDX structure), and
only then moved into place with ``os.replace``. An interrupted or corrupt download therefore never leaves a
file under the final name; the temporary file is removed on every failure path.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cnnlab.data.catalog import DataFile, DatasetInfo, dataset_info, default_fetch_dir
from cnnlab.data.idx import parse_idx, read_raw_bytes
from cnnlab.errors import DataError
from cnnlab.fileio import sha256_hex

CHUNK = 1 << 16


def _check_download(path: Path, file: DataFile, gz_digest: str, source: str) -> str:
    """Accept a downloaded file by its .gz hash or its raw-content hash; returns what matched."""
    if file.gz_sha256 and gz_digest == file.gz_sha256:
        parse_idx(read_raw_bytes(path), source)  # a genuine file still gets its structure checked
        return "official .gz sha256"
    content = read_raw_bytes(path)  # DataError if the gzip stream is corrupt or truncated
    if file.raw_sha256 and sha256_hex(content) == file.raw_sha256:
        parse_idx(content, source)
        return "raw sha256"
    if file.gz_sha256 or file.raw_sha256:
        expected = file.gz_sha256 or file.raw_sha256
        raise DataError(
            f"{source}: checksum mismatch (SHA-256 {gz_digest[:16]}..., expected {expected[:16]}...): "
            "corrupt or truncated download, or a different file; try another --mirror"
        )
    parse_idx(content, source)
    return "structure only (no known checksum)"


def download_file(
    url: str, dest: Path, file: DataFile, *, progress: bool = True, timeout: float = 60.0
) -> str:
    """Download ``url`` to ``dest`` atomically after verifying it against ``file``; returns what matched."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as err:
        raise DataError(
            f"cannot write to {dest.parent} ({err.strerror}); choose another --data-dir"
        ) from None
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        total, received = None, 0
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=None if progress else True,  # None: off when stderr is not a terminal
                    leave=False,
                ) as bar:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as err:
            raise DataError(f"{url}: HTTP {err.code} {err.reason}") from None
        except urllib.error.URLError as err:
            raise DataError(f"{url}: cannot connect ({err.reason})") from None
        except http.client.IncompleteRead as err:
            raise DataError(
                f"{url}: download truncated (connection closed after {received + len(err.partial)} bytes)"
            ) from None
        except (OSError, http.client.HTTPException) as err:
            raise DataError(f"{url}: download failed ({err})") from None
        if total is not None and received != total:
            raise DataError(f"{url}: download truncated ({received} of {total} bytes)")
        status = _check_download(tmp, file, digest.hexdigest(), url)
        os.replace(tmp, dest)
        return status
    finally:
        tmp.unlink(missing_ok=True)


def existing_file_ok(path: Path, file: DataFile) -> bool:
    """Whether ``path`` already holds a verified copy of ``file`` (so no download is needed)."""
    if not path.is_file():
        return False
    try:
        packed = path.read_bytes()
        if file.gz_sha256 and sha256_hex(packed) == file.gz_sha256:
            return True
        return bool(file.raw_sha256) and sha256_hex(read_raw_bytes(path)) == file.raw_sha256
    except (OSError, DataError):
        return False


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``name``'s four .gz files into ``<data_dir>/<name>/`` (default: $CNNLAB_DATA or the user
    cache), trying ``mirror`` or else each registered mirror in turn; files already valid are kept.
    Returns the dataset directory; DataError naming every failed attempt if a file cannot be had."""
    info: DatasetInfo = dataset_info(name)
    target = Path(data_dir) if data_dir is not None else default_fetch_dir()
    target = target / name
    mirrors = [mirror] if mirror else list(info.mirrors)
    if not mirrors:
        raise DataError(f"dataset {name!r} has no known mirror; pass --mirror URL")
    created = not target.exists()
    try:
        _fetch_files(info, target, mirrors, progress=progress, timeout=timeout)
    except BaseException:
        if created and target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # leave no empty dataset directory behind a failed first fetch
        raise
    return target


def _fetch_files(
    info: DatasetInfo, target: Path, mirrors: list[str], *, progress: bool, timeout: float
) -> None:
    """Fetch each missing or invalid file of ``info`` into ``target`` from the first mirror that works."""
    for file in info.files.values():
        dest = target / file.gz_name
        if existing_file_ok(dest, file):
            continue
        failures = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + file.gz_name
            try:
                download_file(url, dest, file, progress=progress, timeout=timeout)
                break
            except DataError as err:
                failures.append(str(err))
        else:
            raise DataError(f"could not fetch {file.gz_name} of {info.name}: " + "; ".join(failures))
