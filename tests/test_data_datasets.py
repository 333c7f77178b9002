"""The dataset registry, lookup order, verification and the user-facing errors of loading and `cnnlab data`."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import time

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.data import (
    DATASETS,
    DataFile,
    catalog,
    dataset_info,
    load_dataset,
    locate_dataset,
    register_dataset,
)
from cnnlab.data import load as data_load
from cnnlab.data.idx import read_raw_bytes, write_idx
from cnnlab.data.load import decoded_cache_path, stamp_path, stat_key
from cnnlab.errors import DataError, UsageError


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """No system dataset directories (this machine has /usr/share/datasets/fashion-mnist)."""
    monkeypatch.setattr(catalog, "SYSTEM_DATA_DIRS", (str(tmp_path / "system"),))
    return tmp_path / "system"


@pytest.fixture
def copy_tiny(tiny_dataset_dir, tmp_path):
    """A private, modifiable copy of the tiny dataset; returns its root."""
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset_dir, root)
    return root


@pytest.fixture
def hashed_tiny(copy_tiny):
    """A registered dataset 'hashed-tiny' whose registry hashes are those of the tiny files."""
    base = dataset_info("fashion-mnist")
    src = copy_tiny / "fashion-mnist"
    (copy_tiny / "hashed-tiny").mkdir()
    files = {}
    for role, f in base.files.items():
        shutil.copy(src / f.gz_name, copy_tiny / "hashed-tiny" / f.gz_name)
        packed = (src / f.gz_name).read_bytes()
        raw = gzip.decompress(packed)
        files[role] = DataFile(f.name, hashlib.sha256(raw).hexdigest(), hashlib.sha256(packed).hexdigest())
    register_dataset(dataclasses.replace(base, name="hashed-tiny", files=files))
    yield copy_tiny
    DATASETS.pop("hashed-tiny", None)


def test_registry_entries_are_complete():
    assert set(DATASETS) >= {"mnist", "fashion-mnist", "kmnist"}
    for name in ("mnist", "fashion-mnist", "kmnist"):
        info = dataset_info(name)
        assert info.num_classes == len(info.classes) == 10
        assert info.input_size == (1, 28, 28) and len(info.mean) == len(info.std) == 1
        for f in info.files.values():
            assert f.gz_sha256 and len(f.gz_sha256) == 64
            assert f.raw_sha256 is None or len(f.raw_sha256) == 64
    assert dataset_info("fashion-mnist").classes[9] == "Ankle boot"
    assert dataset_info("fashion-mnist").debian_package == "dataset-fashion-mnist"


def test_unknown_dataset_name_lists_close_matches():
    with pytest.raises(
        UsageError,
        match=r"unknown dataset 'fashion_mnist'\. Did you mean 'fashion-mnist'.*Valid datasets: cifar10, cifar100, fashion-mnist, kmnist, mnist",
    ):
        load_dataset("fashion_mnist")


def test_missing_dataset_says_how_to_get_it(no_system_data, tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    message = str(err.value)
    assert "not found" in message and "cnnlab data fetch fashion-mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(UsageError, match="does not exist"):
        locate_dataset("mnist", data_dir=tmp_path / "absent")


def test_lookup_order(no_system_data, copy_tiny, tmp_path, monkeypatch):
    env_dir, cache_root = tmp_path / "env", tmp_path / "xdg"
    shutil.copytree(copy_tiny, env_dir)
    shutil.copytree(copy_tiny, cache_root / "cnnlab")
    shutil.copytree(copy_tiny, no_system_data)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_root))
    assert locate_dataset("fashion-mnist") == cache_root / "cnnlab" / "fashion-mnist"
    monkeypatch.setenv("CNNLAB_DATA", str(env_dir))
    assert locate_dataset("fashion-mnist") == env_dir / "fashion-mnist"
    assert locate_dataset("fashion-mnist", copy_tiny) == copy_tiny / "fashion-mnist"
    # An explicit directory may hold the four files directly.
    assert locate_dataset("fashion-mnist", copy_tiny / "fashion-mnist") == copy_tiny / "fashion-mnist"
    shutil.rmtree(cache_root / "cnnlab" / "fashion-mnist")
    monkeypatch.delenv("CNNLAB_DATA")
    assert locate_dataset("fashion-mnist") == no_system_data / "fashion-mnist"


def test_named_place_without_the_dataset_is_an_error_not_a_fallback(
    no_system_data, copy_tiny, tmp_path, monkeypatch
):
    """The dataset is in the user cache and the system location, but the user named another place."""
    cache_root = tmp_path / "xdg"
    shutil.copytree(copy_tiny, cache_root / "cnnlab")
    shutil.copytree(copy_tiny, no_system_data)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_root))
    empty = tmp_path / "empty"
    (empty / "fashion-mnist").mkdir(parents=True)
    (empty / "fashion-mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:
        locate_dataset("fashion-mnist", data_dir=empty)
    message = str(err.value)
    assert f"not found in --data-dir {empty}" in message
    assert (
        "lacks train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
        in message
    )
    assert "train-images-idx3-ubyte[.gz]," not in message.split("lacks")[1].split(";")[0]
    with pytest.raises(DataError, match="not found in --data-dir"):
        load_dataset("fashion-mnist", data_dir=empty, verify=False)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    with pytest.raises(
        DataError, match=rf"not found in \$CNNLAB_DATA={tmp_path / 'env'} \(there is no folder "
    ):
        load_dataset("fashion-mnist", verify=False)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "absent"))
    with pytest.raises(UsageError, match=r"\$CNNLAB_DATA .* does not exist"):
        load_dataset("fashion-mnist", verify=False)


def test_data_dir_naming_a_file_says_so(copy_tiny, capsys):
    path = copy_tiny / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    with pytest.raises(UsageError, match=f"data directory {path} is a file, not a folder") as err:
        locate_dataset("fashion-mnist", data_dir=path)
    assert str(path.parent) in str(err.value)
    assert main(["data", "check", "fashion-mnist", "--data-dir", str(path)]) == 2  # a path to change: exit 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_checksum_mismatch_is_reported_unless_verification_is_off(tiny_dataset_dir, monkeypatch):
    with pytest.raises(DataError, match="checksum mismatch") as err:
        load_dataset("fashion-mnist", data_dir=tiny_dataset_dir)
    assert "train-images-idx3-ubyte.gz" in str(err.value) and "CNNLAB_NO_VERIFY=1" in str(err.value)
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    assert len(load_dataset("fashion-mnist", data_dir=tiny_dataset_dir).train) == 600
    with pytest.raises(DataError, match="checksum mismatch"):  # an explicit verify=True wins
        load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=True)


@pytest.fixture
def no_racy_window(monkeypatch):
    """Stamp files however recently they changed (tests create them just before loading)."""
    monkeypatch.setattr(data_load, "RACY_WINDOW_NS", 0)


def test_verified_load_and_decoded_cache(hashed_tiny, no_racy_window):
    first = load_dataset("hashed-tiny", data_dir=hashed_tiny)
    assert set(first.checks.values()) == {"raw sha256"}
    second = load_dataset("hashed-tiny", data_dir=hashed_tiny)
    assert set(second.checks.values()) == {"raw sha256 (cached)"}
    assert np.array_equal(first.train.images.numpy(), second.train.images.numpy())
    # A tampered cache entry is not trusted: the source is decoded again and the entry rewritten.
    cached = decoded_cache_path(dataset_info("hashed-tiny").files["train_images"].raw_sha256)
    cached.write_bytes(cached.read_bytes()[:-1] + b"\x07")
    third = load_dataset("hashed-tiny", data_dir=hashed_tiny)
    assert third.checks["train_images"] == "raw sha256"
    assert np.array_equal(third.train.images.numpy(), first.train.images.numpy())
    assert load_dataset("hashed-tiny", data_dir=hashed_tiny).checks["train_images"] == "raw sha256 (cached)"


def test_corrupt_dataset_file_is_named(copy_tiny):
    path = copy_tiny / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as err:
        load_dataset("fashion-mnist", data_dir=copy_tiny, verify=False)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "role, array, message",
    [
        ("train_labels", np.full(600, 10, np.uint8), "600 labels outside 0..9"),
        ("train_labels", np.zeros(599, np.uint8), "holds 600 images but .* holds 599 labels"),
        (
            "test_images",
            np.zeros((200, 32, 32), np.uint8),
            "expected uint8 images of 28x28, found uint8 images of 32x32",
        ),
        ("test_labels", np.zeros(200, np.int32), "expected a 1-D uint8 label file"),
    ],
)
def test_inconsistent_files_are_data_errors(copy_tiny, role, array, message):
    f = dataset_info("fashion-mnist").files[role]
    write_idx(copy_tiny / "fashion-mnist" / f.gz_name, array, compress="gzip")
    with pytest.raises(DataError, match=message):
        load_dataset("fashion-mnist", data_dir=copy_tiny, verify=False)


def test_uncompressed_file_is_preferred(copy_tiny):
    f = dataset_info("fashion-mnist").files["test_labels"]
    gz = copy_tiny / "fashion-mnist" / f.gz_name
    (copy_tiny / "fashion-mnist" / f.name).write_bytes(read_raw_bytes(gz))
    gz.write_bytes(b"broken")  # not read: the raw file is used
    assert len(load_dataset("fashion-mnist", data_dir=copy_tiny, verify=False).test) == 200


def test_cli_list_and_check(no_system_data, hashed_tiny, capsys):
    assert main(["data", "list", "--data-dir", str(hashed_tiny)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "verified" in lines["hashed-tiny"] and str(hashed_tiny / "hashed-tiny") in lines["hashed-tiny"]
    assert "FAILED" in lines["fashion-mnist"] and "checksum mismatch" in lines["fashion-mnist"]
    assert "missing" in lines["kmnist"] and "cnnlab data fetch kmnist" in lines["kmnist"]
    assert main(["data", "check", "fashion-mnist", "--data-dir", str(hashed_tiny)]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert main(["data", "check", "kmnist"]) == 1
    assert "cnnlab data fetch kmnist" in capsys.readouterr().err
    assert main(["data", "check", "hashed-tiny", "--data-dir", str(hashed_tiny)]) == 0
    assert "train 600, test 200" in capsys.readouterr().out


def test_recently_changed_file_is_not_cached(hashed_tiny):
    """Within the racy window a later change could keep the stat key: such a file is verified every time."""
    assert set(load_dataset("hashed-tiny", data_dir=hashed_tiny).checks.values()) == {"raw sha256"}
    assert set(load_dataset("hashed-tiny", data_dir=hashed_tiny).checks.values()) == {"raw sha256"}


def _damage(path, how: str) -> None:
    """Change ``path`` after a tick of the clock: corrupt it, truncate it, or replace it by other content of
    the same size with its mtime restored, in place or renamed over it (what a stat key of size and mtime
    alone cannot see)."""
    before = path.stat()
    time.sleep(0.05)  # past the timestamp granularity (a clock tick), so ctime moves
    packed = path.read_bytes()
    if how == "corrupt":
        path.write_bytes(packed[:100] + bytes([packed[100] ^ 0xFF]) + packed[101:])
    elif how == "truncate":
        path.write_bytes(packed[: len(packed) // 2])
    else:
        raw = bytearray(gzip.decompress(packed))
        raw[-1] ^= 0x01  # still a valid IDX file, a different image
        other = gzip.compress(bytes(raw), mtime=0)
        other = (
            other[: len(packed)] if len(other) >= len(packed) else other + b"\0" * (len(packed) - len(other))
        )
        if how == "renamed-over":  # a new inode, as a download tool or `mv` would leave
            tmp = path.with_name("replacement")
            tmp.write_bytes(other)  # zero padding after a gzip member is allowed
            os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
            os.replace(tmp, path)
        else:
            path.write_bytes(other)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert stat_key(path.stat()) != stat_key(before)


@pytest.mark.parametrize("how", ["corrupt", "truncate", "same-size-same-mtime", "renamed-over"])
def test_source_changed_after_a_cached_load_is_detected(
    hashed_tiny, no_racy_window, no_system_data, how, capsys
):
    """The decoded cache was once looked up by the expected hash alone: a damaged or replaced file still
    loaded (the cached copy) and `data check` called it verified."""
    assert set(load_dataset("hashed-tiny", data_dir=hashed_tiny).checks.values()) == {"raw sha256"}
    assert set(load_dataset("hashed-tiny", data_dir=hashed_tiny).checks.values()) == {"raw sha256 (cached)"}
    path = hashed_tiny / "hashed-tiny" / "train-images-idx3-ubyte.gz"
    _damage(path, how)
    with pytest.raises(DataError, match="checksum mismatch|corrupt or truncated gzip") as err:
        load_dataset("hashed-tiny", data_dir=hashed_tiny)
    assert str(path) in str(err.value)
    assert main(["data", "check", "hashed-tiny", "--data-dir", str(hashed_tiny)]) == 1
    assert str(path) in capsys.readouterr().err
    assert main(["data", "list", "--data-dir", str(hashed_tiny), "--format", "json"]) == 0
    row = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["hashed-tiny"]
    assert row["status"].startswith("FAILED") and str(path) in row["status"]


def test_check_and_list_hash_the_bytes_even_when_the_stat_key_matches(hashed_tiny, no_racy_window, capsys):
    """A filesystem whose ctime does not move (simulated: the stamp is rewritten with the damaged file's
    stat key) fools the training load's cache, as documented; `data check` and `data list` read the bytes."""
    load_dataset("hashed-tiny", data_dir=hashed_tiny)
    path = hashed_tiny / "hashed-tiny" / "t10k-labels-idx1-ubyte.gz"
    _damage(path, "same-size-same-mtime")
    stamp = json.loads(stamp_path(path).read_text())
    stamp["stat"] = stat_key(path.stat())
    stamp_path(path).write_text(json.dumps(stamp))
    assert load_dataset("hashed-tiny", data_dir=hashed_tiny).checks["test_labels"] == "raw sha256 (cached)"
    assert main(["data", "check", "hashed-tiny", "--data-dir", str(hashed_tiny)]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert main(["data", "list", "--data-dir", str(hashed_tiny)]) == 0
    assert (
        "FAILED"
        in [line for line in capsys.readouterr().out.splitlines() if line.startswith("hashed-tiny")][0]
    )


def test_data_check_always_verifies_and_does_not_suggest_no_verify(tiny_dataset_dir, monkeypatch, capsys):
    """`data check` ignores CNNLAB_NO_VERIFY (its job is to verify), so its message must not suggest it."""
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    assert main(["data", "check", "fashion-mnist", "--data-dir", str(tiny_dataset_dir)]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "CNNLAB_NO_VERIFY" not in err
    monkeypatch.delenv("CNNLAB_NO_VERIFY")
    with pytest.raises(DataError) as explicit:  # verify=True: the environment would not change anything
        load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=True)
    assert "CNNLAB_NO_VERIFY" not in str(explicit.value)


def test_gz_only_dataset_is_cached_by_its_official_gz_hash(hashed_tiny, no_racy_window):
    """KMNIST has official .gz hashes only: its cache entry is vouched for by the source's own SHA-256."""
    info = dataset_info("hashed-tiny")
    files = {role: dataclasses.replace(f, raw_sha256=None) for role, f in info.files.items()}
    register_dataset(dataclasses.replace(info, files=files), replace=True)
    assert set(load_dataset("hashed-tiny", data_dir=hashed_tiny).checks.values()) == {"official .gz sha256"}
    cached = load_dataset("hashed-tiny", data_dir=hashed_tiny).checks
    assert set(cached.values()) == {"official .gz sha256 (cached)"}
    path = hashed_tiny / "hashed-tiny" / "train-labels-idx1-ubyte.gz"
    _damage(path, "same-size-same-mtime")
    with pytest.raises(DataError, match=r"checksum mismatch \(\.gz SHA-256"):
        load_dataset("hashed-tiny", data_dir=hashed_tiny)
