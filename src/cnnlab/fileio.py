"""File I/O that never loses data: atomic writes and SHA-256 digests, in one place.

Every file cnnlab writes (checkpoints, metrics, plots, datasets, caches, reports) goes through
:func:`atomic_write_bytes`: a temporary file in the target's folder, flushed and fsynced, then
``os.replace`` onto the target, so a crash, a full disk or a kill leaves either the old file or the
new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Temporary files end with this, so that a folder's owner can recognise (and remove) those a kill left.
TEMP_SUFFIX = ".part"
_CHUNK = 1 << 24  # bytes per os.write call


def creation_mode(folder: bool = False) -> int:
    """The mode ``open`` (``mkdir`` with ``folder``) gives a new file under the current umask: for what
    mkstemp and mkdtemp create owner-only, before it is renamed into place."""
    umask = os.umask(0o22)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def temp_file_beside(path: Path, suffix: str = TEMP_SUFFIX) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder, open for writing: ``(fd, name)``.

    Its mode is that of a file ``open`` creates (0o666 less the umask), not mkstemp's owner-only
    0o600, so that the file it is renamed onto can be read by whoever the user's umask lets read it.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, creation_mode())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


@contextmanager
def naming_target(path: Path) -> Iterator[None]:
    """Re-raise an ``OSError`` of creating ``path``'s temporary file as one naming ``path``: the user knows
    the file they asked for, not the hidden temporary beside it (a folder that cannot be made keeps its name)."""
    try:
        yield
    except OSError as err:
        if err.filename is not None and Path(err.filename).name.startswith(f".{path.name}."):
            raise OSError(err.errno, err.strerror, str(path)) from None
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` (creating its folder) through a temporary file and an atomic rename.

    On any failure (a full disk, a read-only folder) the temporary file is removed and ``path`` is
    left as it was; the ``OSError`` propagates for the caller to word.
    """
    path = Path(path)
    with naming_target(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file_beside(path)
    try:
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked; one loop, one place to simulate a full disk
                view = view[os.write(fd, view[:_CHUNK]) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        remove_quietly(Path(tmp))
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from None  # say which file could not be written
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name (``np.lib.format.open_memmap``,
    ``tarfile``); when the block ends without error it is fsynced and renamed onto ``path``, else removed.

    For data too large to hold as bytes; :func:`atomic_write_bytes` is the same rule for bytes in memory.
    """
    path = Path(path)
    with naming_target(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file_beside(path)
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(Path(tmp))
        raise
    fsync_dir(path.parent)


def remove_quietly(path: Path) -> None:
    """Remove a temporary file after a failure; an error doing so (storage that turned read-only) must not
    hide the failure being reported."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename or unlink) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text (UTF-8) version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def sha256_hex(content: bytes) -> str:
    """SHA-256 of ``content`` as lowercase hex."""
    return hashlib.sha256(content).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
