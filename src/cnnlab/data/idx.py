"""The IDX file format of the MNIST family, read and written with full validation.

An IDX file is a big-endian header followed by a dense array (LeCun et al., "The MNIST database",
file-format section): two zero bytes, one type code, one byte giving the number of dimensions ``d``,
then ``d`` unsigned 32-bit sizes, then ``prod(sizes)`` elements of the coded type, nothing more.
Files may be gzip-compressed as distributed; compression is detected from the gzip magic bytes,
not from the file name.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
# The longest possible header: 4 bytes, then one uint32 for each of at most 255 dimensions.
MAX_HEADER_LENGTH = 4 + 4 * 255
CHUNK = 4 << 20
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib parses the gzip wrapper itself and checks its CRC-32 and size


@dataclass(frozen=True)
class IdxHeader:
    """The parsed header: element type, shape, and where the data starts."""

    dtype: np.dtype
    shape: tuple[int, ...]
    data_offset: int

    @property
    def expected_length(self) -> int:
        """Total file length (header + data) that this header promises."""
        # Exact Python integers: np.prod in int64 wraps (65536**4 -> 0), and a 20-byte file would pass.
        return self.data_offset + math.prod(self.shape) * self.dtype.itemsize


def declared_length(prefix: bytes | bytearray) -> int | None:
    """The total length (header + data) that a valid IDX header at the start of ``prefix`` promises; None
    while the header is incomplete or invalid (the parser then says what is wrong)."""
    if len(prefix) < 4 or prefix[0] or prefix[1] or prefix[2] not in IDX_TYPES or not prefix[3]:
        return None
    ndim = prefix[3]
    if len(prefix) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", bytes(prefix[4 : 4 + 4 * ndim]))
    return IdxHeader(IDX_TYPES[prefix[2]], shape, 4 + 4 * ndim).expected_length


def gunzip_limited(
    stream: BinaryIO, source: str | os.PathLike, max_size: int | None = None, advice: str = ""
) -> bytes:
    """Decompress the gzip ``stream`` chunk by chunk, never producing more than the IDX content may hold.

    The limit is ``max_size`` (a size the registry knows), and the length the IDX header declares as soon
    as the header is out: one byte more is a DataError, so a gzip bomb costs at most the limit in memory,
    never its full expansion. Decompression stops after :data:`MAX_HEADER_LENGTH` bytes that do not start
    with a valid header; the caller's parser then names the defect. Concatenated members are joined and
    zero padding after a member is ignored, as :func:`gzip.decompress` does. ``advice`` ends every message.
    """
    suffix = f"; {advice}" if advice else ""
    # Pieces joined once at the end: growing one buffer would copy the content again and again.
    pieces: list[bytes] = []
    size, head = 0, b""  # head: the first bytes, enough to hold any header
    decomp = zlib.decompressobj(wbits=GZIP_WBITS)
    pending, declared, hard = b"", None, max_size
    try:
        while True:
            if not pending:
                pending = stream.read(CHUNK)
                if not pending:
                    break
            if decomp.eof:  # a member ended: zero padding, or another member
                pending = pending.lstrip(b"\0")
                if not pending:
                    continue
                decomp = zlib.decompressobj(wbits=GZIP_WBITS)
            cap = (
                hard
                if declared is not None or hard is not None and hard < MAX_HEADER_LENGTH
                else MAX_HEADER_LENGTH
            )
            # One byte past the cap tells that the content is too long; max_length >= 1 here because
            # size <= cap (0 would mean "unlimited" to zlib).
            piece = decomp.decompress(pending, cap + 1 - size)
            pieces.append(piece)
            size += len(piece)
            if declared is None:
                head = (head + piece)[:MAX_HEADER_LENGTH]
                if (declared := declared_length(head)) is not None:
                    hard = declared if max_size is None else min(declared, max_size)
            if hard is not None and size > hard:
                what = (
                    "IDX file has trailing bytes: its gzip content is longer than the "
                    f"{hard} bytes the header declares"
                    if hard == declared
                    else f"gzip content is longer than the {hard} bytes this file has"
                )
                raise DataError(f"{source}: {what} (decompression stopped there){suffix}")
            if declared is None and size >= MAX_HEADER_LENGTH:
                return b"".join(pieces)  # no valid IDX header: the parser names the defect
            pending = decomp.unused_data if decomp.eof else decomp.unconsumed_tail
    except zlib.error as err:
        raise DataError(f"{source}: corrupt or truncated gzip stream ({err}){suffix}") from None
    if not decomp.eof:
        raise DataError(
            f"{source}: corrupt or truncated gzip stream (it ends inside compressed data){suffix}"
        )
    return b"".join(pieces)


def read_raw_bytes(path: str | os.PathLike, max_size: int | None = None) -> bytes:
    """The decompressed content of ``path`` (gzip detected by magic bytes); DataError if unreadable, or if
    the content would be longer than ``max_size`` or than its IDX header declares (see :func:`gunzip_limited`).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(2) == GZIP_MAGIC:
                f.seek(0)
                return gunzip_limited(f, path, max_size, advice="delete it and fetch it again")
            size = os.fstat(f.fileno()).st_size
            if max_size is not None and size > max_size:
                raise DataError(
                    f"{path}: {size} bytes, more than the {max_size} bytes this file has; "
                    "it is not the dataset file it is named after"
                )
            f.seek(0)
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None


def unpack(
    packed: bytes, source: str | os.PathLike = "<bytes>", max_size: int | None = None, advice: str = ""
) -> bytes:
    """In-memory version of :func:`read_raw_bytes`: ``packed`` itself if not gzip, else its bounded
    decompression (see :func:`gunzip_limited` for ``max_size`` and ``advice``)."""
    if packed[:2] != GZIP_MAGIC:
        return packed
    return gunzip_limited(io.BytesIO(packed), source, max_size, advice)


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
    try:
        array = np.frombuffer(content, dtype=header.dtype, offset=header.data_offset).reshape(header.shape)
    except ValueError:  # e.g. 0 x 2**32-1 x 2**32-1 x 2**32-1: empty, yet too big a shape for numpy
        shape = "x".join(map(str, header.shape))
        raise DataError(f"{source}: IDX header declares a shape no array can have ({shape})") from None
    # A private, writable, native-endian copy: frombuffer views are read-only and may be big-endian.
    return array.astype(header.dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array; every defect is a DataError naming the file."""
    return parse_idx(read_raw_bytes(path), path)


def decode_idx(packed: bytes, source: str | os.PathLike = "<bytes>") -> np.ndarray:
    """:func:`read_idx` for bytes in memory (raw or gzip); every defect is a DataError naming ``source``."""
    return parse_idx(unpack(packed, source), source)


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
