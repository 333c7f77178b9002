"""`cnnlab data fetch` against a loopback HTTP server in this process: success, truncation, wrong checksum,
server errors. Nothing here contacts any address other than 127.0.0.1."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.data import DATASETS, DataFile, dataset_info, load_dataset, register_dataset
from cnnlab.data.fetch import fetch_dataset, max_gz_size
from cnnlab.data.idx import encode_idx
from cnnlab.data.synthetic import synthetic_images
from cnnlab.errors import DataError

NAME = "loopback-mnist"


def _files() -> dict[str, bytes]:
    """Generated raw IDX content of the four files, by file name."""
    rng = np.random.default_rng(1)
    out = {}
    for prefix, n in (("train", 40), ("t10k", 20)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        out[f"{prefix}-images-idx3-ubyte"] = encode_idx(synthetic_images(labels, seed=n))
        out[f"{prefix}-labels-idx1-ubyte"] = encode_idx(labels)
    return out


@pytest.fixture
def loopback_dataset(monkeypatch):
    """Register NAME with the generated files' real checksums; serve gzip content under /good/."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    raw = _files()
    packed = {name: gzip.compress(content, mtime=0) for name, content in raw.items()}
    base = dataset_info("mnist")
    files = {
        role: DataFile(
            f.name, hashlib.sha256(raw[f.name]).hexdigest(), hashlib.sha256(packed[f.name]).hexdigest(), None
        )
        for role, f in base.files.items()
    }
    info = dataclasses.replace(base, name=NAME, files=files, mirrors=(), train_size=40, test_size=20)
    register_dataset(info)
    yield info, packed
    DATASETS.pop(NAME, None)


def _serve(server, packed: dict[str, bytes], prefix: str = "/good") -> None:
    for name, body in packed.items():
        server.routes[f"{prefix}/{name}.gz"] = (200, body, None)


def test_fetch_downloads_verifies_and_loads(server, loopback_dataset, tmp_path):
    info, packed = loopback_dataset
    _serve(server, packed)
    directory = fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)
    assert directory == tmp_path / NAME
    assert sorted(p.name for p in directory.iterdir()) == sorted(n + ".gz" for n in packed)  # no .part left
    for name, body in packed.items():
        assert (directory / f"{name}.gz").read_bytes() == body  # kept as downloaded
    data = load_dataset(NAME, data_dir=tmp_path, verify=True, use_cache=False)
    assert len(data.train) == 40 and len(data.test) == 20
    assert set(data.checks.values()) == {"raw sha256"}
    # A second fetch finds valid files and downloads nothing.
    hits = len(server.hits)
    fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)
    assert len(server.hits) == hits


def test_fetch_accepts_regzipped_file_by_raw_content(server, loopback_dataset, tmp_path):
    info, packed = loopback_dataset
    regzipped = {
        n: gzip.compress(gzip.decompress(b), compresslevel=1, mtime=12345) for n, b in packed.items()
    }
    assert regzipped != packed
    _serve(server, regzipped)
    fetch_dataset(NAME, tmp_path, server.base + "/good", progress=False, timeout=5)
    checks = load_dataset(NAME, data_dir=tmp_path, use_cache=False).checks
    assert set(checks.values()) == {"raw sha256"}


@pytest.mark.parametrize(
    "defect, message",
    [
        ("truncated", "truncated"),
        ("wrong-checksum", "checksum mismatch"),
        ("server-error", "HTTP 500"),
        ("not-found", "HTTP 404"),
    ],
)
def test_failed_download_leaves_no_file(server, loopback_dataset, tmp_path, defect, message):
    info, packed = loopback_dataset
    _serve(server, packed)
    target = info.files["train_images"].gz_name
    body = packed[info.files["train_images"].name]
    route = f"/good/{target}"
    if defect == "truncated":  # the server promises the full length, sends half, closes
        server.routes[route] = (200, body[: len(body) // 2], len(body))
    elif defect == "wrong-checksum":  # a well-formed gzip of different content
        server.routes[route] = (200, gzip.compress(b"\0" * 100, mtime=0), None)
    elif defect == "server-error":
        server.routes[route] = (500, b"boom", None)
    else:
        del server.routes[route]
    with pytest.raises(DataError, match=message) as err:
        fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)
    assert target in str(err.value) and "was not written" in str(err.value)  # names what is not there
    directory = tmp_path / NAME
    leftovers = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    assert target not in leftovers and not [n for n in leftovers if n.endswith(".part")]


def test_corrupt_download_never_replaces_a_valid_file(server, loopback_dataset, tmp_path):
    info, packed = loopback_dataset
    _serve(server, packed)
    fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)
    name = info.files["test_labels"].name
    good = tmp_path / NAME / f"{name}.gz"
    good.write_bytes(good.read_bytes()[:-9])  # damage the local copy so fetch tries again
    server.routes[f"/good/{name}.gz"] = (200, b"\x1f\x8b garbage", None)
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)
    assert [p.name for p in good.parent.iterdir() if p.name.endswith(".part")] == []


def test_cli_fetch_reports_server_error_in_one_line(server, loopback_dataset, tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "fetch",
                NAME,
                "--mirror",
                server.base + "/missing/",
                "--data-dir",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: could not fetch") and "HTTP 404" in err and err.count("\n") == 1
    assert not (tmp_path / NAME).exists()  # no empty directory left behind


@pytest.mark.parametrize("mirror", ["not-a-url", "ftp://example.org/data/"])
def test_cli_fetch_refuses_a_mirror_that_is_no_http_or_file_url(loopback_dataset, tmp_path, capsys, mirror):
    argv = ["data", "fetch", NAME, "--mirror", mirror, "--data-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"cnnlab: error: --mirror must be an http://, https:// or file:// URL, got {mirror!r}\n"
    assert not any(tmp_path.iterdir())


def test_cli_fetch_then_check(server, loopback_dataset, tmp_path, capsys):
    _serve(server, loopback_dataset[1])
    assert (
        main(
            ["data", "fetch", NAME, "--mirror", server.base + "/good", "--data-dir", str(tmp_path), "--quiet"]
        )
        == 0
    )
    assert main(["data", "check", NAME, "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "raw sha256" in out and "train 40, test 20" in out


def test_unwritable_target_is_a_data_error(server, loopback_dataset, tmp_path):
    _serve(server, loopback_dataset[1])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="cannot write to"):
        fetch_dataset(NAME, blocker, server.base + "/good/", progress=False, timeout=5)


def test_truncated_download_names_the_url_and_destination_not_the_temp_file(
    server, loopback_dataset, tmp_path
):
    """The server declares the truncated length, so only the gzip check sees it; its message once named the
    .part file, already deleted when the user read it."""
    info, packed = loopback_dataset
    _serve(server, packed)
    name = info.files["train_images"].name
    body = packed[name]
    server.routes[f"/good/{name}.gz"] = (200, body[: len(body) // 2], None)
    with pytest.raises(DataError, match="corrupt or truncated gzip") as err:
        fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)
    message = str(err.value)
    assert ".part" not in message and "delete it" not in message
    assert f"{server.base}/good/{name}.gz" in message and str(tmp_path / NAME / f"{name}.gz") in message


def test_stale_part_files_of_a_killed_fetch_are_removed(server, loopback_dataset, tmp_path):
    info, packed = loopback_dataset
    _serve(server, packed)
    directory = tmp_path / NAME
    directory.mkdir()
    ours = [directory / f".{f.gz_name}.k1ll3d.part" for f in info.files.values()]
    others = [directory / "notes.part", directory / ".unrelated.gz.x.part", directory / "keep.txt"]
    for path in ours + others:
        path.write_bytes(b"partial")
    fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in others)  # only our own temporary files are touched


def test_a_second_fetch_into_the_same_directory_is_refused_while_one_runs(server, loopback_dataset, tmp_path):
    import fcntl
    import os

    _serve(server, loopback_dataset[1])
    directory = tmp_path / NAME
    directory.mkdir()
    (directory / f".{loopback_dataset[0].files['train_images'].gz_name}.live.part").write_bytes(b"busy")
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running fetch holds it
        with pytest.raises(DataError, match="another `cnnlab data fetch` is writing to"):
            fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)
        assert len(list(directory.glob("*.part"))) == 1  # the running fetch's file is left alone
    finally:
        os.close(fd)


@pytest.mark.parametrize("valid_header", [False, True])
def test_gzip_bomb_from_a_mirror_is_rejected_without_decompressing_it(
    server, loopback_dataset, tmp_path, valid_header
):
    """32 MB of zeros, 32 kB compressed, served as the training images: rejected after at most a known raw
    size (31 kB here) is decompressed. The whole stream used to be decompressed at once (2.4 GB for a
    bomb the size of the real file)."""
    import struct
    import tracemalloc
    import zlib

    info, packed = loopback_dataset
    file = info.files["train_images"]
    bounded = dataclasses.replace(file, raw_size=16 + 40 * 28 * 28)
    register_dataset(dataclasses.replace(info, files={**info.files, "train_images": bounded}), replace=True)
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    header = struct.pack(">HBB3I", 0, 0x08, 3, 100_000, 28, 28) if valid_header else b""
    block = b"\0" * (1 << 20)
    bomb = comp.compress(header) + b"".join(comp.compress(block) for _ in range(32)) + comp.flush()
    assert len(bomb) < max_gz_size(bounded)  # not refused for its size: decompressed
    _serve(server, packed)
    server.routes[f"/good/{file.gz_name}"] = (200, bomb, None)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert file.gz_name in str(err.value) and ".part" not in str(err.value)
    assert peak < 8 << 20, f"peak {peak} bytes: the bomb was decompressed"
    assert not (tmp_path / NAME / file.gz_name).exists()


def test_download_larger_than_the_file_can_be_is_stopped(server, loopback_dataset, tmp_path):
    info, packed = loopback_dataset
    file = info.files["train_labels"]
    small = dataclasses.replace(file, raw_size=48)  # 40 labels + 8 header bytes
    register_dataset(dataclasses.replace(info, files={**info.files, "train_labels": small}), replace=True)
    _serve(server, packed)
    noise = np.random.default_rng(0).bytes(200_000)  # incompressible: far more than any gzip of 48 bytes
    server.routes[f"/good/{file.gz_name}"] = (200, noise, None)
    with pytest.raises(DataError, match="the server announces 200000 bytes, more than"):
        fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)


def test_cli_fetch_skips_a_present_verified_dataset_unless_forced(server, loopback_dataset, tmp_path, capsys):
    _serve(server, loopback_dataset[1])
    fetch_dataset(NAME, tmp_path, server.base + "/good/", progress=False, timeout=5)
    hits = len(server.hits)
    args = ["data", "fetch", NAME, "--data-dir", str(tmp_path), "--quiet", "--mirror", server.base + "/good/"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"already present and verified in {tmp_path / NAME}" in out and "--force" in out
    assert len(server.hits) == hits  # nothing downloaded
    assert main([*args, "--force"]) == 0
    assert len(server.hits) == hits + 4  # every file downloaded again
    assert "verified files in" in capsys.readouterr().out


def test_cli_fetch_finds_the_dataset_where_loading_would_offline(
    loopback_dataset, tmp_path, monkeypatch, capsys
):
    """No --data-dir: a verified copy in a system location is enough, even with no mirror reachable."""
    info, packed = loopback_dataset
    system = tmp_path / "system"
    (system / NAME).mkdir(parents=True)
    for name, body in packed.items():
        (system / NAME / f"{name}.gz").write_bytes(body)
    monkeypatch.setenv("CNNLAB_SYSTEM_DATA_DIRS", str(system))
    args = [
        "data",
        "fetch",
        NAME,
        "--quiet",
        "--mirror",
        "http://127.0.0.1:9/",
    ]  # discard port: nothing there
    assert main(args) == 0
    assert f"already present and verified in {system / NAME} (system)" in capsys.readouterr().out
    (system / NAME / f"{info.files['test_labels'].name}.gz").write_bytes(b"\x1f\x8b broken")
    assert main(args) == 1  # does not verify: a download is attempted (and fails here)
    captured = capsys.readouterr()
    assert "does not verify" in captured.err and "could not fetch" in captured.err
