"""The data of one training run: the splits the recipe asks for, and their batch loaders.

The validation split is held out of the training set by the seed (the same split whether the
dataset is loaded here or handed in whole); ``train_subset`` trains on a seeded sample of what is
left; a batch that could not fit in memory (a huge ``pad_to`` or ``in_chans``) is refused before
anything is allocated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from cnnlab.errors import UsageError
from cnnlab.train.config import TrainConfig

# A run may not ask for input batches larger than this share of the machine's memory.
MAX_BATCH_MEMORY_SHARE = 0.5


def memory_bytes() -> int | None:
    """Physical memory of this machine in bytes, where the OS says."""
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_batch_fits(batch: int, shape: tuple[int, int, int], what: str) -> None:
    """Refuse an input batch that cannot fit in memory (fp32), before anything allocates it."""
    total = memory_bytes()
    need = 4 * batch * shape[0] * shape[1] * shape[2]
    if total and need > MAX_BATCH_MEMORY_SHARE * total:
        c, h, w = shape
        raise UsageError(
            f"one {what} batch of {batch} images of {c}x{h}x{w} would take {need / 2**30:.1f} GiB, more than "
            f"half of this machine's {total / 2**30:.1f} GiB; lower the batch size, --pad-to, --crop-padding or --in-chans"
        )


@dataclass
class RunData:
    """A run's dataset (with its validation split) and the loaders the loop and the evaluations read."""

    data: Any  # cnnlab.data.DatasetSplits
    classes: list[str]
    train_loader: Any
    val_loader: Any | None
    test_loader: Any
    train_images: int
    input_shape: tuple[int, int, int]
    colour_pca: Any = None  # the alexnet augmentation's cnnlab.data.augment.ColourPCA of the training split
    loaded: Any = None  # the dataset as loaded (before a class subset): what experiments share


def load_config_data(
    cfg: TrainConfig, data_dir: str | None = None, progress: bool = True, recorded: dict | None = None
) -> Any:
    """The dataset ``cfg`` trains on, split as the run splits it: a registry dataset, CIFAR, or an image
    folder decoded with the run's ``image_size``, ``in_chans`` and ``bad_images`` (the one place that maps
    a recipe to :func:`cnnlab.data.load_dataset`, for training and for evaluating a saved run).

    ``recorded``: a saved run's ``data_manifest.json`` (:meth:`cnnlab.train.rundir.RunFiles.read_data_manifest`);
    the image folder's files and splits are then the run's, exactly, or a DataError says what changed."""
    from cnnlab.data import load_dataset
    from cnnlab.data.imagefolder import is_folder_spec

    folder = is_folder_spec(cfg.data)
    return load_dataset(
        cfg.data,
        data_dir=data_dir if data_dir is not None else cfg.data_dir,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        image_size=cfg.image_size,
        in_chans=cfg.in_chans if folder else None,
        bad_images=cfg.bad_images,
        progress=progress,
        recorded=recorded,
    )


def handed_in_data(cfg: TrainConfig, data: Any, recorded: dict | None = None) -> Any:
    """``data`` (a :class:`cnnlab.data.DatasetSplits` loaded or built by the caller) checked to be the dataset
    ``cfg`` names, with the run's validation split held out if it came whole; an image folder's files and
    splits checked against ``recorded`` (a saved run's ``data_manifest.json``) where given."""
    from cnnlab.data.imagefolder import check_recorded_split
    from cnnlab.data.load import same_data, validation_indices

    if not same_data(cfg.data, data.info.name):  # the run's record, evaluation and resume go by cfg.data
        raise UsageError(
            f"the data handed in is {data.info.name!r} but the run's config names {cfg.data!r}, which its record, "
            f"evaluation and resume would load; set TrainConfig(data={data.info.name!r})"
        )
    if recorded is not None and getattr(data, "manifest", None) is not None:
        check_recorded_split(data.manifest, recorded, f"the data handed in ({data.info.name})")
    if data.val is None and cfg.val_fraction > 0:  # handed in whole: hold out the same split
        train_idx, val_idx = validation_indices(len(data.train), cfg.val_fraction, cfg.seed)
        data = dataclasses.replace(
            data, train=data.train.subset(train_idx, "train"), val=data.train.subset(val_idx, "val")
        )
    return data


def prepare_run_data(
    cfg: TrainConfig,
    device: torch.device,
    channels_last: bool,
    data: Any = None,
    dist: Any = None,
    colour_pca: Any = None,
    recorded: dict | None = None,
) -> RunData:
    """Load (or take) ``cfg.data``, hold out the validation split, and build the three loaders.

    The alexnet augmentation's colour PCA is ``colour_pca`` (a resumed run's saved one) or computed
    from the training split (before ``train_subset``); evaluation loaders take the centre crop of
    ``cfg.input_size``. ``dist`` (a :class:`cnnlab.train.distributed.DistContext`): the loaders yield
    this rank's part of every batch; the batch sizes stay global. ``recorded``: a resumed run's
    ``data_manifest.json``, which its image folder must still match (:func:`load_config_data`).
    """
    from cnnlab.data import Augment, BatchLoader
    from cnnlab.data.augment import colour_pca as compute_colour_pca

    if data is None:
        data = load_config_data(cfg, recorded=recorded)
    else:
        data = handed_in_data(cfg, data, recorded)
    loaded = data
    if cfg.classes:  # a class-subset view, relabelled 0..k-1 (transfer experiments)
        from cnnlab.data.load import class_subset

        data = class_subset(data, cfg.classes)
    if len(data.info.classes) < 2:  # every prediction right by construction: nothing to learn or measure
        only = f" ({data.info.classes[0]})" if data.info.classes else ""
        raise UsageError(
            f"{data.info.name} gives one class{only}; a classifier needs at least two (an image folder: one "
            "subfolder per class; --classes: name two or more)"
        )
    images = data.train.images
    chans = cfg.in_chans or (1 if images.dim() == 3 else int(images.shape[1]))
    h, w = (cfg.pad_to, cfg.pad_to) if cfg.pad_to else tuple(int(v) for v in images.shape[-2:])
    check_batch_fits(cfg.eval_batch_size, (chans, h, w), "evaluation")
    pad = 2 * cfg.augmentation().padding  # the training batch is padded before its random crop
    check_batch_fits(cfg.batch_size, (chans, h + pad, w + pad), "training")
    if cfg.augment == "alexnet" and colour_pca is None:
        colour_pca = compute_colour_pca(data.train.images)
    train_augment, eval_augment = cfg.augmentation(colour_pca), Augment(input_size=cfg.input_size)
    train_split = data.train
    if cfg.train_subset is not None and cfg.train_subset < len(train_split):
        generator = torch.Generator().manual_seed(cfg.seed)
        train_split = train_split.subset(
            torch.randperm(len(train_split), generator=generator)[: cfg.train_subset]
        )

    def loader(split: Any, train: bool) -> Any:
        return BatchLoader(
            split,
            batch_size=cfg.batch_size if train else cfg.eval_batch_size,
            shuffle=train,
            seed=cfg.seed,
            augment=train_augment if train else eval_augment,
            mean=data.info.mean,
            std=data.info.std,
            drop_last=False,
            device=device,
            channels_last=channels_last,
            pad_to=cfg.pad_to,
            out_chans=cfg.in_chans,
            rank=dist.rank if dist is not None else 0,
            world_size=dist.world_size if dist is not None else 1,
        )

    test_loader = loader(data.test, False)
    x0, _ = next(iter(loader(data.test, False)))
    return RunData(
        data=data,
        classes=list(data.info.classes),
        train_loader=loader(train_split, True),
        val_loader=loader(data.val, False) if data.val is not None else None,
        test_loader=test_loader,
        train_images=len(train_split),
        input_shape=tuple(x0.shape[1:]),
        colour_pca=colour_pca,
        loaded=loaded,
    )
