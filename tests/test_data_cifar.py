"""CIFAR-10/100 binary files: reading, record checks, the pickle version refused, and `cnnlab data fetch`
of generated archives from a loopback HTTP server (good, truncated, wrong checksum, traversal, link, pickle)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import DATASETS, DataFile, dataset_info, load_dataset, register_dataset
from cnnlab.data.catalog import Archive
from cnnlab.data.cifar import unpack_archive
from cnnlab.data.fetch import fetch_dataset
from cnnlab.data.synthetic import cifar_records, write_synthetic_cifar
from cnnlab.errors import DataError

NAME = "loopback-cifar10"
PER_FILE = 6


def test_registry_entries_name_the_official_archives_and_classes() -> None:
    c10, c100 = dataset_info("cifar10"), dataset_info("cifar100")
    assert c10.archive.name == "cifar-10-binary.tar.gz" and c100.archive.name == "cifar-100-binary.tar.gz"
    assert len(c10.archive.sha256) == 64 and c10.archive.md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert c100.archive.md5 == "03b5dce01913d631647c71ecec9e9cb8"
    assert c10.num_classes == 10 and c100.num_classes == 100 and len(c100.coarse_classes) == 20
    assert c10.input_size == (3, 32, 32) and len(c10.mean) == len(c100.std) == 3
    assert sum(f.raw_size for f in c10.files.values()) == 60_000 * 3073


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_generated_binary_files_load_with_their_labels_and_planes(tmp_path: Path, name: str) -> None:
    write_synthetic_cifar(tmp_path, name, per_file=5)
    data = load_dataset(name, data_dir=tmp_path, verify=False, val_fraction=0.2, seed=1)
    files = len(dataset_info(name).files)
    assert len(data.train) + len(data.val) == 5 * (files - 1) and len(data.test) == 5
    assert data.train.images.shape[1:] == (3, 32, 32) and data.train.images.dtype == torch.uint8
    first = (tmp_path / name / dataset_info(name).files["test"].name).read_bytes()
    head = 2 if name == "cifar100" else 1
    assert int(data.test.labels[0]) == first[head - 1]
    assert data.test.images[0].flatten().tolist() == list(first[head : head + 3072])  # R, G, B planes


def test_a_record_file_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    write_synthetic_cifar(tmp_path, "cifar10", per_file=4)
    path = tmp_path / "cifar10" / dataset_info("cifar10").files["test"].name
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"test_batch\.bin: 12192 bytes is not a whole number of 3073-byte"):
        load_dataset("cifar10", data_dir=tmp_path, verify=False)


def test_verified_loading_refuses_a_file_that_matches_no_checksum(tmp_path: Path) -> None:
    write_synthetic_cifar(tmp_path, "cifar10", per_file=4)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("cifar10", data_dir=tmp_path, verify=True)


def test_cifar_mismatch_suggests_no_verify_only_where_it_is_honoured(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """As for the IDX datasets: loading (verify from the environment) names CNNLAB_NO_VERIFY, `data check`
    and an explicit verify=True (which ignore it) do not."""
    write_synthetic_cifar(tmp_path, "cifar10", per_file=4)
    with pytest.raises(DataError, match=r"checksum mismatch \(SHA-256 .*CNNLAB_NO_VERIFY=1"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(DataError) as explicit:
        load_dataset("cifar10", data_dir=tmp_path, verify=True)
    assert "CNNLAB_NO_VERIFY" not in str(explicit.value)
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    assert main(["data", "check", "cifar10", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "CNNLAB_NO_VERIFY" not in err


def test_the_pickle_version_on_disk_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(DataError, match=r"pickle\) version of CIFAR.*cifar-10-binary\.tar\.gz"):
        load_dataset("cifar10", data_dir=tmp_path, verify=False)


def _tar(members: list[tuple[str, bytes | None, str]]) -> bytes:
    """A .tar.gz of (name, content, kind) members: kind 'file', 'symlink' (content: target) or 'dir'."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content, kind in members:
            member = tarfile.TarInfo(name)
            if kind == "symlink":
                member.type, member.linkname = tarfile.SYMTYPE, content.decode()
                tar.addfile(member)
            elif kind == "dir":
                member.type = tarfile.DIRTYPE
                tar.addfile(member)
            else:
                member.size = len(content)
                tar.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


def _good_members() -> list[tuple[str, bytes, str]]:
    rng = np.random.default_rng(0)
    info = dataset_info("cifar10")
    return [(f.name, cifar_records(rng.integers(0, 10, PER_FILE).astype(np.uint8), seed=i), "file")
            for i, f in enumerate(info.files.values())] + [("cifar-10-batches-bin/batches.meta.txt", b"airplane\n", "file")]  # fmt: skip


def _register(archive: bytes) -> None:
    """NAME: CIFAR-10 with the test archive's SHA-256 and PER_FILE records per file (no per-file hashes)."""
    base = dataset_info("cifar10")
    files = {r: DataFile(f.name, None, raw_size=PER_FILE * 3073) for r, f in base.files.items()}
    arch = Archive(
        base.archive.name, hashlib.sha256(archive).hexdigest(), None, len(archive), base.archive.folder
    )
    register_dataset(dataclasses.replace(base, name=NAME, files=files, archive=arch), replace=True)


@pytest.fixture
def cleanup():
    yield
    DATASETS.pop(NAME, None)


def test_fetch_verifies_unpacks_and_loads_verified(server, tmp_path: Path, cleanup, capsys) -> None:
    archive = _tar(_good_members())
    _register(archive)
    server.routes["/c/cifar-10-binary.tar.gz"] = (200, archive, None)
    assert (
        main(["data", "fetch", NAME, "--mirror", server.base + "/c", "--data-dir", str(tmp_path), "--quiet"])
        == 0
    )
    folder = tmp_path / NAME / "cifar-10-batches-bin"
    assert (folder / "cnnlab-unpacked.json").is_file() and not (
        tmp_path / NAME / "cifar-10-binary.tar.gz"
    ).exists()
    data = load_dataset(NAME, data_dir=tmp_path, verify=True)
    assert len(data.train) == 5 * PER_FILE and set(data.checks.values()) == {
        "sha256 (recorded when unpacked from the verified archive)"
    }
    capsys.readouterr()
    assert main(["data", "fetch", NAME, "--mirror", server.base + "/c", "--data-dir", str(tmp_path)]) == 0
    assert "already present and verified" in capsys.readouterr().out and len(server.hits) == 1


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("../evil.bin", b"x", "file")], "outside the target folder"),
        ([("/abs.bin", b"x", "file")], "outside the target folder"),
        ([("cifar-10-batches-bin/link", b"/etc/passwd", "symlink")], "is a link"),
        ([("cifar-10-batches-bin/huge.txt", b"x" * (2 << 20), "file")], "more than the"),
        ([("cifar-10-batches-bin/data_batch_1.bin", b"x" * 3073, "file")], "records, expected 6"),
        ([("cifar-10-batches-py/data_batch_1", b"\x80\x02.", "file")], r"pickle\) version"),
    ],
)
def test_unsafe_or_wrong_archives_are_refused_and_nothing_is_left(
    server, tmp_path: Path, cleanup, members, message
) -> None:
    good = [m for m in _good_members() if not any(m[0] == b[0] for b in members)]
    archive = _tar(members + good)
    _register(archive)  # the archive passes its checksum: the unpacking checks alone must refuse it
    server.routes["/c/cifar-10-binary.tar.gz"] = (200, archive, None)
    with pytest.raises(DataError, match=message):
        fetch_dataset(NAME, tmp_path, server.base + "/c", progress=False)
    assert not (tmp_path / "evil.bin").exists() and not (tmp_path / NAME / "cifar-10-batches-bin").exists()
    leftovers = list((tmp_path / NAME).iterdir()) if (tmp_path / NAME).exists() else []
    assert leftovers == []  # no archive, staging folder or partial download


def test_wrong_checksum_truncation_and_the_pickle_archive_under_the_binary_name(
    server, tmp_path: Path, cleanup
) -> None:
    archive = _tar(_good_members())
    _register(archive)
    flipped = bytearray(archive)
    flipped[len(archive) // 2] ^= 0xFF
    server.routes["/bad/cifar-10-binary.tar.gz"] = (200, bytes(flipped), None)
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_dataset(NAME, tmp_path, server.base + "/bad", progress=False)
    server.routes["/cut/cifar-10-binary.tar.gz"] = (200, archive[: len(archive) // 2], len(archive))
    with pytest.raises(DataError, match="truncated"):
        fetch_dataset(NAME, tmp_path, server.base + "/cut", progress=False)
    pickled = _tar([("cifar-10-batches-py/data_batch_1", b"\x80\x02.", "file")])
    server.routes["/py/cifar-10-binary.tar.gz"] = (200, pickled, None)
    with pytest.raises(
        DataError, match=r"checksum mismatch.*pickle\) version of CIFAR.*cifar-10-binary\.tar\.gz"
    ):
        fetch_dataset(NAME, tmp_path, server.base + "/py", progress=False)
    corrupt = b"\x1f\x8b" + bytes(200)
    with pytest.raises(DataError, match="truncated or corrupt archive"):
        unpack_archive(_write(tmp_path / "x.tar.gz", corrupt), tmp_path, dataset_info(NAME))


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path
