"""One image file -> the tensor a run's model takes.

The file is decoded as image folders are (:func:`cnnlab.data.imagefolder.decode_image`), converted to
the dataset's channels (``L`` for grey datasets, ``RGB`` otherwise) and resized to the dataset's image size where it differs, then goes through the same
:class:`cnnlab.data.BatchLoader` as training and evaluation (``pad_to``, repeated channels, mean/std),
so a picture is normalised exactly as the run's test images were.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.data.catalog import DatasetInfo
from cnnlab.errors import DataError, UsageError
from cnnlab.train.config import TrainConfig


def read_image(path: str | Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 array [channels, H, W] of the image file at ``path``, decoded as image folders are
    (:func:`cnnlab.data.imagefolder.decode_image`), resized to ``size`` (H, W) where it differs.

    A missing file is a one-line :class:`UsageError` (exit 2), one that is not a readable image a
    :class:`DataError` (exit 1, as for a file that is not what it claims).
    """
    from PIL import Image

    from cnnlab.data.imagefolder import IMAGE_EXTENSIONS, BadImage, decode_image

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no image file at {path}")
    try:
        array = decode_image(path, None, channels)
    except BadImage as err:
        kinds = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise DataError(
            f"cannot read {path} as an image ({err}); give an intact image file ({kinds})"
        ) from None
    if array.shape[1:] != tuple(size):
        mode = "L" if channels == 1 else "RGB"
        image = Image.fromarray(array[0] if channels == 1 else array.transpose(1, 2, 0), mode)
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        resized = np.asarray(image, dtype=np.uint8)
        array = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def image_to_tensor(
    image: np.ndarray | torch.Tensor, cfg: TrainConfig, info: DatasetInfo | None = None
) -> torch.Tensor:
    """uint8 images [C, H, W] or [N, C, H, W] of ``cfg.data``'s size -> the float batch [N, C', H', W'] the
    run's model takes (padding, channels and normalisation of :class:`cnnlab.data.BatchLoader`). ``info``:
    how the run prepared its images (``SavedModel.data_info``; needed for image-folder runs), by default
    the registry's entry for ``cfg.data``."""
    from cnnlab.data import BatchLoader
    from cnnlab.data.catalog import dataset_info
    from cnnlab.data.load import Split

    info = info or dataset_info(cfg.data)
    images = torch.tensor(np.asarray(image, dtype=np.uint8))  # a copy, whatever the array was
    if images.dim() == 3:
        images = images.unsqueeze(0)
    split = Split("image", images, torch.zeros(len(images), dtype=torch.int64))
    loader = BatchLoader(
        split, batch_size=len(images), mean=info.mean, std=info.std, pad_to=cfg.pad_to, out_chans=cfg.in_chans
    )
    x, _ = next(iter(loader))
    return x


def load_image(
    path: str | Path, cfg: TrainConfig, info: DatasetInfo | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """The image file at ``path`` as the run's model input [1, C, H, W], and the uint8 picture it came
    from [C, H, W] (for drawing over); ``info`` as for :func:`image_to_tensor`."""
    from cnnlab.data.catalog import dataset_info

    info = info or dataset_info(cfg.data)
    picture = read_image(path, info.in_chans, info.image_size)
    return image_to_tensor(picture, cfg, info), picture
