"""Shared fixtures. Every test runs with a private user cache and without $CNNLAB_DATA, so that nothing
reads or writes the developer's ~/.cache/cnnlab; tests that need data use ``tiny_dataset_dir``."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from cnnlab.data.synthetic import write_synthetic_dataset

# Tests run as 2 pytest-xdist workers on 2 cores: one torch thread each avoids oversubscription, which
# slows small operations down many times over.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_data_environment(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        mp.delenv("CNNLAB_DATA", raising=False)
        mp.delenv("CNNLAB_NO_VERIFY", raising=False)
        mp.delenv("CNNLAB_SYSTEM_DATA_DIRS", raising=False)
        yield


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``fashion-mnist/`` with 600 train / 200 test generated 28x28 images (gzip IDX,
    official file names) that a small CNN learns in 1-2 epochs. Load with ``verify=False``:
    ``load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False)``."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), "fashion-mnist", 600, 200, seed=0)


@pytest.fixture(scope="module")
def tiny_short_test(tiny_dataset_dir: Path):
    """The tiny dataset with a 64-image test split, for tests that train many short runs."""
    import dataclasses

    from cnnlab.data import load_dataset

    data = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False)
    return dataclasses.replace(data, test=data.test.subset(torch.arange(64)))


MEMORY_DIR_MIN_FREE = 2 << 30  # bytes: the largest ONNX export's two copies, several times over


@pytest.fixture
def memory_dir(tmp_path: Path):
    """A folder in RAM (/dev/shm) where there is one with room, else ``tmp_path``; removed after the test.

    Each export writes the weights twice (the exporter's file, then the atomic, fsynced copy with the card):
    about 2 x 160 MB for VGG-19, whose export took 2.5 s with the file on disk against 1.6 s in RAM here.
    Where the file lies does not change what is checked."""
    shm = Path("/dev/shm")
    # a container's /dev/shm is often 64 MB: too small for one VGG file, so it must have room to spare
    if not (shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > MEMORY_DIR_MIN_FREE):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-onnx-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def no_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    """No curves.png: matplotlib takes most of a tiny run's time (for tests that are not about it)."""
    from cnnlab.train import plots

    monkeypatch.setattr(plots, "plot_curves", lambda *args, **kwargs: None)


def stop_after_steps(trainer, steps: int) -> None:
    """Make ``trainer`` stop as Ctrl-C would once it has taken ``steps`` optimiser steps."""
    step_batch = trainer.schedule.step_batch

    def step_then_maybe_stop() -> None:
        step_batch()
        if trainer.schedule.step == steps:
            trainer.request_stop()

    trainer.schedule.step_batch = step_then_maybe_stop


@pytest.fixture
def interrupt_after():
    """:func:`stop_after_steps`, for tests that stop a run part-way (conftest is not importable as a module)."""
    return stop_after_steps


class RouteHandler(BaseHTTPRequestHandler):
    """Serves ``server.routes``: path -> (status, body, declared length or None)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.server.hits.append(self.path)
        status, body, declared = self.server.routes.get(self.path, (404, b"not here", None))
        self.send_response(status)
        self.send_header("Content-Length", str(declared if declared is not None else len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    """A ThreadingHTTPServer on 127.0.0.1 (port chosen by the OS) in a daemon thread; stops after the test,
    or by itself after 60 s at the latest."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RouteHandler)
    httpd.routes, httpd.hits = {}, []
    httpd.timeout = 1
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, httpd.shutdown)
    watchdog.daemon = True
    watchdog.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    watchdog.cancel()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)
