"""Downloading a dataset's files with a progress bar, checksum verification and atomic replacement.

Each file is streamed into a temporary file in the target directory while its SHA-256 is computed, then
checked (official .gz SHA-256, else the SHA-256 of its decompressed content, plus the IDX structure), and
only then moved into place with ``os.replace``. An interrupted or corrupt download therefore never leaves a
file under the final name; the temporary file is removed on every failure path, and temporary files left
by a killed fetch (``.<file>.gz.*.part``) are removed by the next fetch of that directory, which holds an
exclusive lock on it meanwhile.

Nothing is ever decompressed or downloaded past what the file can be: a download stops at the largest
gzip size its known raw size allows (or :data:`MAX_DOWNLOAD_BYTES`), and decompression stops one byte past
the raw size (or the length the IDX header declares), so a gzip bomb from a bad mirror costs kilobytes.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from cnnlab.data.catalog import DataFile, DatasetInfo, dataset_info, default_fetch_dir
from cnnlab.data.idx import parse_idx, read_raw_bytes
from cnnlab.errors import DataError, UsageError
from cnnlab.fileio import sha256_hex, temp_file_beside

try:  # POSIX; elsewhere fetches are not locked and leftover .part files are not cleaned
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

CHUNK = 1 << 16
# Cap on a download whose raw size the registry does not know (the MNIST family's largest .gz is 26 MB).
MAX_DOWNLOAD_BYTES = 1 << 30


def max_gz_size(file: DataFile) -> int:
    """The largest a gzip of ``file`` can honestly be: its raw size plus deflate's worst-case overhead
    (5 bytes per 64 KiB stored block) and room for the gzip header; :data:`MAX_DOWNLOAD_BYTES` if unknown."""
    if file.raw_size is None:
        return MAX_DOWNLOAD_BYTES
    return file.raw_size + file.raw_size // 1000 + (1 << 16)


def part_files(dest: Path) -> list[Path]:
    """The temporary files a download of ``dest`` makes (``.<name>.<random>.part``), left by a killed fetch."""
    prefix = f".{dest.name}."
    try:
        return [p for p in dest.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".part")]
    except OSError:
        return []


def _check_download(path: Path, file: DataFile, gz_digest: str, url: str, dest: Path) -> str:
    """Accept a downloaded file by its .gz hash or its raw-content hash; returns what matched. Errors name
    the URL and ``dest`` (the temporary ``path`` is deleted by then)."""
    advice = f"{dest} was not written; try again or another --mirror"
    try:
        if file.gz_sha256 and gz_digest == file.gz_sha256:
            parse_idx(
                read_raw_bytes(path, file.raw_size), path
            )  # a genuine file still gets its structure checked
            return "official .gz sha256"
        content = read_raw_bytes(path, file.raw_size)  # DataError if corrupt, truncated or too long
        if file.raw_sha256 and sha256_hex(content) == file.raw_sha256:
            parse_idx(content, path)
            return "raw sha256"
        if file.gz_sha256 or file.raw_sha256:
            expected = file.gz_sha256 or file.raw_sha256
            raise DataError(
                f"{url}: checksum mismatch (SHA-256 {gz_digest[:16]}..., expected {expected[:16]}...): "
                f"corrupt or truncated download, or a different file; {advice}"
            )
        parse_idx(content, path)
        return "structure only (no known checksum)"
    except DataError as err:
        # read_raw_bytes and parse_idx name the temporary file and advise deleting it: say what applies.
        message = str(err)
        if message.startswith(f"{path}: "):
            reason = message[len(f"{path}: ") :].split("; delete it and fetch it again")[0]
            raise DataError(f"{url}: {reason}; {advice}") from None
        raise


def download_file(
    url: str,
    dest: Path,
    file: DataFile | None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    limit: int | None = None,
    check: Callable[[Path, str, str], str] | None = None,
) -> str:
    """Download ``url`` to ``dest`` atomically after verifying it against ``file``; returns what matched.

    ``check(temporary path, sha256, url)``, if given, verifies instead (returning what matched, raising
    DataError otherwise), and ``limit`` caps the size instead of ``file``'s (an archive, for CIFAR).
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = temp_file_beside(dest)
    except OSError as err:
        raise DataError(
            f"cannot write to {dest.parent} ({err.strerror}); choose another --data-dir"
        ) from None
    tmp = Path(tmp_name)
    if limit is None:
        assert file is not None
        limit = max_gz_size(file)
    try:
        digest = hashlib.sha256()
        total, received = None, 0
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                if total is not None and total > limit:
                    raise DataError(
                        f"{url}: the server announces {total} bytes, more than {dest.name} can be "
                        f"({limit}); not downloaded, try another --mirror"
                    )
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=None if progress else True,  # None: off when stderr is not a terminal
                    leave=False,
                ) as bar:
                    while chunk := response.read(CHUNK):
                        received += len(chunk)
                        if received > limit:
                            raise DataError(
                                f"{url}: more than the {limit} bytes {dest.name} can be; download stopped, "
                                f"{dest} was not written; try another --mirror"
                            )
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as err:
            raise DataError(f"{url}: HTTP {err.code} {err.reason}; {dest} was not written") from None
        except urllib.error.URLError as err:
            raise DataError(f"{url}: cannot connect ({err.reason}); {dest} was not written") from None
        except http.client.IncompleteRead as err:
            raise DataError(
                f"{url}: download truncated (connection closed after {received + len(err.partial)} bytes); "
                f"{dest} was not written"
            ) from None
        except (OSError, http.client.HTTPException) as err:
            raise DataError(f"{url}: download failed ({err}); {dest} was not written") from None
        if total is not None and received != total:
            raise DataError(
                f"{url}: download truncated ({received} of {total} bytes); {dest} was not written"
            )
        if check is not None:
            status = check(tmp, digest.hexdigest(), url)
        else:
            assert file is not None
            status = _check_download(tmp, file, digest.hexdigest(), url, dest)
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
        return bool(file.raw_sha256) and sha256_hex(read_raw_bytes(path, file.raw_size)) == file.raw_sha256
    except (OSError, DataError):
        return False


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    force: bool = False,
) -> Path:
    """Download ``name``'s four .gz files into ``<data_dir>/<name>/`` (default: $CNNLAB_DATA or the user
    cache), trying ``mirror`` or else each registered mirror in turn; files already valid there are kept
    unless ``force``. Returns the dataset directory; DataError naming every failed attempt if a file cannot
    be had. (Whether the dataset is present elsewhere is the caller's business: see ``cnnlab data fetch``.)"""
    info: DatasetInfo = dataset_info(name)
    target = Path(data_dir) if data_dir is not None else default_fetch_dir()
    target = target / name
    if mirror and urllib.parse.urlsplit(mirror).scheme not in ("http", "https", "file"):
        raise UsageError(f"--mirror must be an http://, https:// or file:// URL, got {mirror!r}")
    mirrors = [mirror] if mirror else list(info.mirrors)
    if not mirrors:
        raise UsageError(f"dataset {name!r} has no known mirror; pass --mirror URL")
    created = not target.exists()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot write to {target} ({err.strerror}); choose another --data-dir") from None
    try:
        with _locked(target):
            for file in info.files.values():
                for stale in part_files(target / file.gz_name):
                    stale.unlink(missing_ok=True)  # left by a killed fetch: we hold the lock, none is live
            if info.format == "cifar":
                from cnnlab.data.cifar import fetch_cifar

                for stale in part_files(target / info.archive.name):  # type: ignore[union-attr]
                    stale.unlink(missing_ok=True)
                fetch_cifar(info, target, mirrors, progress=progress, timeout=timeout)
            else:
                _fetch_files(info, target, mirrors, progress=progress, timeout=timeout, force=force)
    except BaseException:
        if created and target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # leave no empty dataset directory behind a failed first fetch
        raise
    return target


class _locked:
    """An exclusive, non-blocking flock on a directory for the duration of a ``with`` block."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.fd = directory, None

    def __enter__(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        self.fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise DataError(
                f"another `cnnlab data fetch` is writing to {self.directory}; wait for it to finish"
            ) from None

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock


def _fetch_files(
    info: DatasetInfo, target: Path, mirrors: list[str], *, progress: bool, timeout: float, force: bool
) -> None:
    """Fetch each missing or invalid file of ``info`` (each file, with ``force``) into ``target`` from the
    first mirror that works."""
    for file in info.files.values():
        dest = target / file.gz_name
        if not force and existing_file_ok(dest, file):
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
