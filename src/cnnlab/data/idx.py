"""The IDX file format of the MNIST family, read and written with full validation.

An IDX file is a big-endian header followed by a dense array (LeCun et al., "The MNIST database",
file-format section): two zero bytes, one type code, one byte giving the number of dimensions ``d``,
then ``d`` unsigned 32-bit sizes, then ``prod(sizes)`` elements of the coded type, nothing more.
Files may be gzip-compressed as distributed; compression is detected from the gzip magic bytes,
not from the file name.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError, UsageError
from cnnlab.fileio import atomic_write_bytes

# Type codes of the IDX format, each with its big-endian numpy element type.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_DTYPE = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class IdxHeader:
    """The parsed header: element type, shape, and where the data starts."""

    dtype: np.dtype
    shape: tuple[int, ...]
    data_offset: int

    @property
    def expected_length(self) -> int:
        """Total file length (header + data) that this header promises."""
        return self.data_offset + int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_raw_bytes(path: str | os.PathLike) -> bytes:
    """The decompressed content of ``path`` (gzip detected by magic bytes); DataError if unreadable."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if content[:2] != GZIP_MAGIC:
        return content
    try:
        return gzip.decompress(content)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(
            f"{path}: corrupt or truncated gzip stream ({err}); delete it and fetch it again"
        ) from None


def parse_header(content: bytes, source: str | os.PathLike = "<bytes>") -> IdxHeader:
    """Validate the magic number, type code and dimensions of IDX ``content``; DataError naming ``source``."""
    if len(content) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(content)} bytes, the header alone needs 4)")
    zero, type_code, ndim = struct.unpack(">HBB", content[:4])
    if zero != 0:
        raise DataError(
            f"{source}: not an IDX file (magic number 0x{content[:4].hex()} does not start with two zero bytes)"
        )
    if type_code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise DataError(f"{source}: unknown IDX element type 0x{type_code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    data_offset = 4 + 4 * ndim
    if len(content) < data_offset:
        raise DataError(
            f"{source}: truncated IDX header ({len(content)} bytes, {ndim} dimensions need {data_offset})"
        )
    shape = struct.unpack(f">{ndim}I", content[4:data_offset])
    return IdxHeader(IDX_TYPES[type_code], tuple(shape), data_offset)


def parse_idx(content: bytes, source: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decode IDX ``content`` into a native-endian array, checking the length against the header."""
    header = parse_header(content, source)
    if len(content) != header.expected_length:
        what = "truncated" if len(content) < header.expected_length else "has trailing bytes"
        shape = "x".join(map(str, header.shape))
        raise DataError(
            f"{source}: IDX file {what}: the header promises {shape} elements of {header.dtype.name} "
            f"({header.expected_length} bytes with header), the content has {len(content)} bytes"
        )
    array = np.frombuffer(content, dtype=header.dtype, offset=header.data_offset).reshape(header.shape)
    # A private, writable, native-endian copy: frombuffer views are read-only and may be big-endian.
    return array.astype(header.dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array; every defect is a DataError naming the file."""
    return parse_idx(read_raw_bytes(path), path)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array`` (header + big-endian data)."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    code = _CODE_OF_DTYPE.get(array.dtype.newbyteorder("="))
    if code is None:
        raise UsageError(
            f"IDX cannot hold elements of type {array.dtype}; use uint8, int8/16/32 or float32/64"
        )
    if array.ndim == 0 or array.ndim > 255:
        raise UsageError(f"IDX holds arrays of 1 to 255 dimensions, got {array.ndim}")
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: str | None = None) -> Path:
    """Write ``array`` as an IDX file (``compress="gzip"`` for a .gz stream), atomically; returns the path."""
    if compress not in (None, "gzip"):
        raise UsageError(f"compress must be None or 'gzip', got {compress!r}")
    content = encode_idx(array)
    if compress == "gzip":
        # mtime=0: the same array always gives the same bytes (and the same checksum).
        content = gzip.compress(content, compresslevel=6, mtime=0)
    atomic_write_bytes(path, content)
    return Path(path)
