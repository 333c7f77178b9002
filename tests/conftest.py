"""Shared fixtures. Every test runs with a private user cache and without $CNNLAB_DATA, so that nothing
reads or writes the developer's ~/.cache/cnnlab; tests that need data use ``tiny_dataset_dir``."""

from __future__ import annotations

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
