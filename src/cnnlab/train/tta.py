"""Test-time evaluation: several views of each test image, their softmax posteriors averaged.

Modes (:data:`cnnlab.data.views.TTA_MODES`); ``size`` is the input the network was trained on (its
crop), the images arrive at their stored (padded) size:

* ``center`` - the centre crop; what training validates and tests on.
* ``flip`` - the centre crop and its mirror image.
* ``flip-shift`` - the centre crop, its copies moved one pixel down-right and one up-left (the edge
  rows and columns repeated into the vacated side), and the mirror images of the three: six views.
  airbench (Jordan 2024) evaluates CIFAR-10 with the same one-pixel translations; on the speedrun's
  Fashion-MNIST net they added 0.18 points of validation accuracy to ``flip`` on average over six
  checkpoints, 0.03 to 0.28 (docs/training.md).
* ``5crop`` / ``10crop`` - the four corner crops and the centre crop (Chatfield et al. 2014 Sec. 3.2),
  and their mirror images for ten (Krizhevsky et al. 2012 Sec. 4.1: "the network makes a prediction
  by extracting five 224x224 patches ... as well as their horizontal reflections ... and averaging
  the predictions made by the network's softmax layer on the ten patches").
* ``multiscale`` - at each scale Q of ``scales`` the image is isotropically rescaled so its shorter side
  is Q; its centre crop and mirror image are the views (the multi-scale crops of Szegedy et al. 2015
  Sec. 7 and Chatfield et al., reduced to centre crops).
* ``dense`` - Simonyan & Zisserman 2015 Sec. 3.2: the fully-connected layers as convolutions
  (:func:`cnnlab.models.dense.dense_model`) over the whole image rescaled to each Q (default: as
  stored), the class score map averaged spatially; the posteriors of the image and its mirror image,
  over all scales, are averaged.

Rescaling is bilinear with antialiasing (``F.interpolate``), on the normalised batch; per-channel
normalisation commutes with cropping, flipping and interpolation, so the order does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.augment import five_crop_corners
from cnnlab.data.views import TTA_MODES
from cnnlab.errors import UsageError, unknown_choice
from cnnlab.train.engine import EvalResult

# the modes that crop the input size out of the stored image (no rescaling, so no scales)
CROP_MODES = ("center", "flip", "5crop", "10crop")
#: flip-shift's translations (rows, columns) of the centre crop, the unmoved crop first
SHIFTS = ((0, 0), (1, 1), (-1, -1))


@dataclass
class TTAResult:
    """One test-time mode's result: how many views each image got, and the metrics."""

    mode: str
    views: int
    scales: tuple[int, ...]
    result: EvalResult


def rescale(x: torch.Tensor, shorter: int) -> torch.Tensor:
    """``x`` [B, C, H, W] isotropically rescaled so its shorter side is ``shorter`` (bilinear, antialiased)."""
    h, w = x.shape[-2:]
    if min(h, w) == shorter:
        return x
    size = (round(h * shorter / min(h, w)), round(w * shorter / min(h, w)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def crop_views(x: torch.Tensor, size: tuple[int, int], corners: bool, flips: bool) -> Iterator[torch.Tensor]:
    """The centre crop (or the five crops with ``corners``) of ``size``, each followed by its mirror with ``flips``."""
    height, width = x.shape[-2:]
    places = five_crop_corners((height, width), size).tolist()
    for top, left in places if corners else places[-1:]:
        view = x[..., top : top + size[0], left : left + size[1]]
        yield view
        if flips:
            yield view.flip(-1)


def shifted(view: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``view`` [B, C, H, W] moved ``rows`` down and ``cols`` right (at most one pixel each), the edge
    pixels repeated into the side it leaves."""
    height, width = view.shape[-2:]
    padded = F.pad(view, (1, 1, 1, 1), mode="replicate")
    return padded[..., 1 - rows : 1 - rows + height, 1 - cols : 1 - cols + width]


def check_scales(mode: str, scales: Sequence[int], size: tuple[int, int]) -> None:
    """Scales must be whole numbers no smaller than the input size (a crop of it must fit)."""
    for q in scales:
        if not isinstance(q, int) or q < max(size):
            raise UsageError(
                f"{mode} scales must be whole numbers of at least the input size {max(size)}, got {q}"
            )


def view_count(mode: str, scales: Sequence[int]) -> int:
    """How many views of each image ``mode`` averages."""
    fixed = {"center": 1, "flip": 2, "5crop": 5, "10crop": 10, "flip-shift": 2 * len(SHIFTS)}
    return fixed.get(mode, 2 * max(1, len(scales)))


def check_mode(mode: str, scales: Sequence[int], size: tuple[int, int]) -> tuple[int, ...]:
    """``scales`` as a tuple, after checking they fit ``mode`` and the input ``size`` (a usage error if not)."""
    if mode not in TTA_MODES:
        raise unknown_choice("test-time mode", mode, TTA_MODES)
    scales = tuple(scales)
    if mode == "multiscale" and not scales:
        raise UsageError(
            "multiscale evaluation needs the scales to rescale the images to, e.g. --scales 28 32 36"
        )
    if mode not in ("multiscale", "dense") and scales:
        raise UsageError(f"scales apply to multiscale and dense evaluation, not {mode}")
    check_scales(mode, scales, size)
    return scales


def tta_forward(model: nn.Module, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """What computes a view's logits under ``mode``: the model, or for ``dense`` its convolutional form
    with the class score map averaged spatially."""
    model.eval()
    if mode != "dense":
        return model
    from cnnlab.models.dense import dense_model

    net = dense_model(model).eval()
    return lambda v: net(v).mean((2, 3))


def averaged_posteriors(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    mode: str,
    size: tuple[int, int],
    scales: tuple[int, ...] = (),
) -> torch.Tensor:
    """The softmax posteriors of ``x`` (normalised, at the stored size) averaged over ``mode``'s views."""
    if x.shape[-2] < size[0] or x.shape[-1] < size[1]:
        raise UsageError(f"the images are {x.shape[-2]}x{x.shape[-1]}, smaller than the input size {size}")
    probs, count = None, 0
    for view in tta_views(x, mode, size, scales):
        p = F.softmax(forward(view.contiguous(memory_format=torch.channels_last)).float(), dim=1)
        probs = p if probs is None else probs + p
        count += 1
    return probs / count


@torch.inference_mode()
def evaluate_tta(
    model: nn.Module,
    loader,
    num_classes: int,
    device: torch.device,
    mode: str,
    size: tuple[int, int],
    scales: Sequence[int] = (),
) -> TTAResult:
    """Mean cross-entropy of the averaged posteriors, accuracy and confusion matrix of ``model`` under ``mode``.

    ``loader`` yields normalised images at their stored (padded) size; ``size`` is the model's input.
    ``scales``: shorter sides for ``multiscale`` (required) and ``dense`` (default: the stored size).
    """
    scales = check_mode(mode, scales, size)
    forward = tta_forward(model, mode)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    for x, y in loader:
        probs = averaged_posteriors(forward, x, mode, size, scales)
        loss_sum += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum")
        confusion += torch.bincount(y * num_classes + probs.argmax(1), minlength=num_classes**2)
    confusion = confusion.view(num_classes, num_classes).cpu()
    total = int(confusion.sum())
    result = EvalResult(
        float(loss_sum) / max(total, 1), float(confusion.diag().sum()) / max(total, 1), confusion
    )
    return TTAResult(mode, view_count(mode, scales), scales, result)


def tta_views(
    x: torch.Tensor, mode: str, size: tuple[int, int], scales: tuple[int, ...]
) -> Iterator[torch.Tensor]:
    """The views ``mode`` averages of the batch ``x`` (at its stored size), for input ``size``."""
    if mode in CROP_MODES:
        yield from crop_views(x, size, corners=mode in ("5crop", "10crop"), flips=mode in ("flip", "10crop"))
    elif mode == "flip-shift":
        (center,) = crop_views(x, size, corners=False, flips=False)
        for rows, cols in SHIFTS:
            view = shifted(center, rows, cols) if rows or cols else center
            yield view
            yield view.flip(-1)
    elif mode == "multiscale":
        for q in scales:
            yield from crop_views(rescale(x, q), size, corners=False, flips=True)
    else:  # dense: the whole image and its mirror at each scale
        for q in scales or (min(x.shape[-2:]),):
            whole = rescale(x, q)
            yield whole
            yield whole.flip(-1)
