"""Property-based tests of the IDX reader (hypothesis): whatever the bytes, raw or gzip, whole, truncated or
with flipped bits, reading gives a valid array or a DataError, never another exception; a gzip stream is never
decompressed past what the header declares."""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.data.idx import IDX_TYPES, MAX_HEADER_LENGTH, decode_idx, encode_idx, read_idx, unpack
from cnnlab.errors import DataError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


@st.composite
def idx_files(draw) -> bytes:
    """The IDX encoding of a small random array of any IDX element type and 1-3 dimensions."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
    raw = draw(
        st.binary(
            min_size=int(np.prod(shape)) * dtype.itemsize, max_size=int(np.prod(shape)) * dtype.itemsize
        )
    )
    return encode_idx(np.frombuffer(raw, dtype=dtype).reshape(shape))


def _decode_or_data_error(content: bytes) -> np.ndarray | None:
    """decode_idx's result, or None for a DataError; any other exception fails the test."""
    try:
        array = decode_idx(content, "fuzzed")
    except DataError as err:
        assert str(err).startswith("fuzzed: ")  # every message names its source
        return None
    assert isinstance(array, np.ndarray) and array.flags.writeable
    return array


def _gzip(content: bytes) -> bytes:
    return gzip.compress(content, compresslevel=1, mtime=0)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes(content):
    array = _decode_or_data_error(content)
    if array is not None:  # a decoded array is exactly what the bytes say
        assert encode_idx(array) == content


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_gzip_magic(tail):
    _decode_or_data_error(b"\x1f\x8b" + tail)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_content_gzipped(content):
    array = _decode_or_data_error(_gzip(content))
    if array is not None:
        assert encode_idx(array) == content


@FAST
@given(idx_files(), st.booleans(), st.data())
def test_truncations(content, compress, data):
    packed = _gzip(content) if compress else content
    cut = data.draw(st.integers(0, len(packed) - 1))
    assert _decode_or_data_error(packed[:cut]) is None  # a strict prefix is never a complete file


@FAST
@given(idx_files(), st.booleans(), st.data())
def test_bit_flips(content, compress, data):
    packed = bytearray(_gzip(content) if compress else content)
    for _ in range(data.draw(st.integers(1, 3))):
        bit = data.draw(st.integers(0, 8 * len(packed) - 1))
        packed[bit // 8] ^= 1 << (bit % 8)
    array = _decode_or_data_error(bytes(packed))
    if array is not None and not compress:
        assert encode_idx(array) == bytes(packed)


@FAST
@given(idx_files(), st.binary(min_size=1, max_size=50))
def test_valid_file_round_trips_and_extra_content_is_rejected(content, extra):
    for packed in (content, _gzip(content)):
        assert encode_idx(decode_idx(packed)) == content
    for packed in (content + extra, _gzip(content + extra)):
        assert _decode_or_data_error(packed) is None


@FAST
@given(
    st.sampled_from(sorted(IDX_TYPES)),
    st.lists(
        st.sampled_from([0, 1, 2, 3, 1 << 16, 1 << 31, 2**32 - 1]) | st.integers(0, 2**32 - 1), max_size=6
    ),
    st.binary(max_size=64),
)
def test_arbitrary_headers(code, shape, data):
    content = struct.pack(f">HBB{len(shape)}I", 0, code, len(shape), *shape) + data
    array = _decode_or_data_error(content)
    if array is not None:
        assert encode_idx(array) == content


@pytest.mark.parametrize(
    "shape",
    [(2**32 - 1,) * 3, (1 << 16,) * 4],  # the second product is 2**64: 0 in int64
)
def test_huge_declared_shape_does_not_overflow(shape):
    """np.prod in int64 wraps (2**64 -> 0): the length check must use exact integers, or a 20-byte file
    passes it and numpy fails to reshape with a ValueError."""
    header = struct.pack(f">HBB{len(shape)}I", 0, 0x08, len(shape), *shape)
    with pytest.raises(DataError, match="truncated"):
        decode_idx(header)


def _bomb(prefix: bytes, zeros: int) -> bytes:
    """A gzip stream of ``prefix`` then ``zeros`` zero bytes, compressed in pieces (~1000:1)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [comp.compress(prefix)]
    block = b"\0" * (1 << 20)
    for _ in range(zeros >> 20):
        parts.append(comp.compress(block))
    return b"".join(parts) + comp.flush()


@pytest.mark.parametrize(
    "prefix, limit",
    [
        (b"", MAX_HEADER_LENGTH + 1),  # zeros: no valid header, stops after the longest possible header
        (struct.pack(">HBBI", 0, 0x08, 1, 1000), 1000 + 8 + 1),  # header declares 1000 bytes
    ],
)
def test_gzip_bomb_is_not_decompressed_whole(prefix, limit):
    bomb = _bomb(prefix, 64 << 20)
    assert len(bomb) < 200_000
    content = None
    try:
        content = unpack(bomb, "bomb")
    except DataError as err:
        assert "longer than" in str(err)
    if content is not None:  # stopped early, the parser rejects it
        assert len(content) <= limit
        with pytest.raises(DataError):
            decode_idx(bomb, "bomb")


def test_gzip_bomb_stops_at_max_size():
    header = struct.pack(">HBB3I", 0, 0x08, 3, 1000, 28, 28)  # declares 784 kB
    with pytest.raises(DataError, match="longer than the 5000 bytes this file has"):
        unpack(_bomb(header, 8 << 20), "bomb", max_size=5000)


def test_concatenated_members_and_zero_padding_are_accepted():
    content = encode_idx(np.arange(10, dtype=np.uint8))
    packed = _gzip(content[:7]) + _gzip(content[7:]) + b"\0" * 9
    assert gzip.decompress(packed) == content  # what the standard library accepts
    assert np.array_equal(decode_idx(packed), np.arange(10))


def test_read_idx_of_a_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_idx(tmp_path)


def test_empty_array_of_impossible_shape_is_a_data_error():
    """Found by test_arbitrary_headers: numpy refuses this empty shape with a ValueError."""
    content = struct.pack(">HBB4I", 0, 0x08, 4, 0, 2**32 - 1, 2**32 - 1, 2**32 - 1)
    with pytest.raises(DataError, match="no array can have"):
        decode_idx(content)
