"""Datasets of the MNIST family: registry, IDX reading, verified loading, fast in-memory batches.

>>> from cnnlab.data import dataset_info, load_dataset, BatchLoader, Augment
>>> info = dataset_info("fashion-mnist")
>>> data = load_dataset("fashion-mnist", val_fraction=0.1, seed=0)          # doctest: +SKIP
>>> loader = BatchLoader(data.train, 128, shuffle=True, augment=Augment(flip=True),
...                      mean=info.mean, std=info.std)                        # doctest: +SKIP

Tests with synthetic files pass ``verify=False`` (or set ``CNNLAB_NO_VERIFY=1``), or register their own
:class:`DatasetInfo` with :func:`register_dataset`.
"""

from typing import TYPE_CHECKING, Any

from cnnlab.data.catalog import (
    DATASETS,
    ROLES,
    DataFile,
    DatasetInfo,
    dataset_info,
    locate_dataset,
    register_dataset,
    user_cache_dir,
)

if TYPE_CHECKING:
    from cnnlab.data.augment import Augment, ColourPCA, colour_pca
    from cnnlab.data.idx import read_idx, write_idx
    from cnnlab.data.load import DatasetSplits, Split, class_subset, load_dataset, tensor_splits
    from cnnlab.data.loader import BatchLoader

# Imported on first use (PEP 562): these need numpy or torch, the registry does not.
_LAZY = {
    "read_idx": "cnnlab.data.idx",
    "write_idx": "cnnlab.data.idx",
    "DatasetSplits": "cnnlab.data.load",
    "Split": "cnnlab.data.load",
    "load_dataset": "cnnlab.data.load",
    "class_subset": "cnnlab.data.load",
    "tensor_splits": "cnnlab.data.load",
    "Augment": "cnnlab.data.augment",
    "ColourPCA": "cnnlab.data.augment",
    "colour_pca": "cnnlab.data.augment",
    "BatchLoader": "cnnlab.data.loader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnlab.data' has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "ROLES",
    "Augment",
    "BatchLoader",
    "ColourPCA",
    "DataFile",
    "DatasetInfo",
    "DatasetSplits",
    "Split",
    "colour_pca",
    "dataset_info",
    "class_subset",
    "load_dataset",
    "locate_dataset",
    "read_idx",
    "register_dataset",
    "tensor_splits",
    "user_cache_dir",
    "write_idx",
]
