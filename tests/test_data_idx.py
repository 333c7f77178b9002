"""The IDX reader: round trips and one clear DataError, naming the file, for each kind of damage."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from cnnlab.data.idx import encode_idx, read_idx, write_idx
from cnnlab.errors import DataError, UsageError


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("compress", [None, "gzip"])
def test_round_trip(tmp_path, dtype, compress):
    array = (np.arange(60) - 20).astype(dtype).reshape(3, 4, 5)
    path = write_idx(tmp_path / "a.idx", array, compress=compress)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == (3, 4, 5) and np.array_equal(back, array)
    assert back.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (compress == "gzip")


def test_header_layout_matches_the_mnist_format():
    labels = np.array([3, 1, 4], dtype=np.uint8)
    assert encode_idx(labels) == struct.pack(">HBBI", 0, 0x08, 1, 3) + bytes([3, 1, 4])
    images = np.zeros((2, 28, 28), np.uint8)
    assert encode_idx(images)[:16] == bytes.fromhex("00000803000000020000001c0000001c")


def _write(tmp_path, content: bytes, name: str = "bad-idx1-ubyte"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


GOOD = encode_idx(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x01\x00" + GOOD[2:], "magic number"),
        (GOOD[:2] + b"\x07" + GOOD[3:], "unknown IDX element type 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (GOOD[:6], "truncated IDX header"),
        (GOOD[:-1], "truncated"),
        (GOOD + b"\x00", "trailing bytes"),
        (b"\x00\x00", "only 2 bytes"),
    ],
)
def test_damaged_files_raise_data_error_naming_the_file(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(DataError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match=message):  # the same checks apply inside a gzip stream
        read_idx(_write(tmp_path, gzip.compress(content), "bad.gz"))


def test_truncated_gzip_stream(tmp_path):
    packed = gzip.compress(encode_idx(np.zeros((50, 28, 28), np.uint8)))
    path = _write(tmp_path, packed[: len(packed) // 2], "t.gz")
    with pytest.raises(DataError, match="corrupt or truncated gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope")


def test_unsupported_arrays_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="cannot hold"):
        encode_idx(np.zeros(3, np.uint16))
    with pytest.raises(UsageError, match="1 to 255 dimensions"):
        encode_idx(np.array(5, np.uint8))
    with pytest.raises(UsageError, match="compress"):
        write_idx(tmp_path / "x", np.zeros(3, np.uint8), compress="zip")
