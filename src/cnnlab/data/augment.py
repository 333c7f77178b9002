"""The papers' training-time augmentation as named pipelines, batched on tensors.

Every pipeline draws one box per image (where, in the padded canvas, the crop the network sees comes
from), a flip per image and, for AlexNet, a colour shift per image. All draws for an epoch are made up
front from the loader's ``(seed, epoch)`` generator, per position in the epoch's order, so resuming a
run reproduces them exactly. Applying them is one ``torch.take`` gather on the uint8 batch when every
box is the output size (integer crops: ``none``, ``flip``, ``crops``, ``cifar``, ``alexnet``), and
one ``F.affine_grid`` + ``F.grid_sample`` (bilinear) on the whole batch when boxes are rescaled
(``vgg``, ``inception``); no per-image Python loop.

Pipelines (``input_size`` is the crop the network sees; by default the stored, padded size):

* ``none`` - the image as stored (centre crop of ``input_size``). With ``crop_padding``/``flip`` it is
  the custom path: random crop after zero padding by ``crop_padding`` pixels, random horizontal flip.
* ``flip`` and ``crops`` - Chatfield et al. 2014, Sec. 3.2: "flip" mirrors the (centre) image at
  random; "crops" takes one of the four corner crops or the centre crop, mirrored at random (their
  224 crops of a 256 image: give ``input_size`` below the stored size).
* ``cifar`` - He et al. 2016, Sec. 4.2: "4 pixels are padded on each side, and a 32x32 crop is
  randomly sampled from the padded image or its horizontal flip". Generalised to any stored size:
  pad by ``crop_padding`` (4 when 0), crop the stored (or ``input_size``) size anywhere.
* ``alexnet`` - Krizhevsky et al. 2012, Sec. 4.1: random ``input_size`` crops (224 of 256) anywhere in
  the stored image and their mirror images, plus PCA colour noise: to each image's pixels add
  ``sum_i alpha_i lambda_i p_i`` with ``alpha_i ~ N(0, 0.1)`` drawn once per image, where ``p_i`` and
  ``lambda_i`` are the eigenvectors and eigenvalues of the training set's RGB pixel covariance
  (:func:`colour_pca`). The formula is not unit-free; pixels are taken in [0, 1], as common
  reimplementations do, so the shift is a few grey levels.
* ``vgg`` - Simonyan & Zisserman 2015, Sec. 3.1, scale jittering: each image is isotropically
  rescaled so its shorter side is ``S ~ U[Smin, Smax]`` (their [256, 512] for 224 crops; default
  the same ratios of ``input_size``), then an ``input_size`` crop is taken anywhere and mirrored at
  random.
* ``inception`` - Szegedy et al. 2015, Sec. 6 ("patches of various sizes ... between 8% and 100% of
  the image area with aspect ratio constrained to [3/4, 4/3]"), the common random-resized-crop: area
  fraction ``U[0.08, 1]``, log aspect ratio uniform in ``[log 3/4, log 4/3]``, up to 10 tries per image
  (the whole image when none fits), rescaled to ``input_size``, mirrored at random.

Rescaling is bilinear without antialiasing (``grid_sample``); the boxes are continuous, not rounded
to whole pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.data.views import AUGMENTATIONS
from cnnlab.errors import UsageError, check_positive, unknown_choice

CIFAR_PADDING = 4  # He et al. 2016 Sec. 4.2
PCA_STD = 0.1  # Krizhevsky et al. 2012 Sec. 4.1: alpha ~ N(0, 0.1)
VGG_SCALE_RATIO = (256 / 224, 512 / 224)  # Simonyan & Zisserman 2015 Sec. 3.1: S in [256, 512], 224 crops
AREA_RANGE = (0.08, 1.0)  # Szegedy et al. 2015 Sec. 6
ASPECT_RANGE = (3 / 4, 4 / 3)
RESIZED_CROP_TRIES = 10
# crops of at least this many pixels are copied image by image rather than gathered (gather_crops)
SLICE_CROP_PIXELS = 64 * 64
# float64 sums of integer pixel products are exact (hence independent of order) below 2**53
EXACT_CHUNK_PIXELS = 2**26


@dataclass(frozen=True)
class ColourPCA:
    """Eigenvalues (descending) and eigenvectors (columns) of the pixel covariance, pixels in [0, 1]."""

    eigenvalues: tuple[float, ...]
    eigenvectors: tuple[tuple[float, ...], ...]  # row c: channel c of every eigenvector

    def to_dict(self) -> dict[str, list]:
        """JSON-ready form (saved in the run directory)."""
        return {"eigenvalues": list(self.eigenvalues), "eigenvectors": [list(r) for r in self.eigenvectors]}

    @classmethod
    def from_dict(cls, values: dict) -> ColourPCA:
        """Inverse of :meth:`to_dict`."""
        try:
            eigenvalues = tuple(float(v) for v in values["eigenvalues"])
            eigenvectors = tuple(tuple(float(v) for v in row) for row in values["eigenvectors"])
        except (KeyError, TypeError, ValueError) as err:
            raise UsageError(f"damaged colour PCA record: {err}") from None
        if any(len(row) != len(eigenvalues) for row in eigenvectors) or len(eigenvectors) != len(eigenvalues):
            raise UsageError("damaged colour PCA record: eigenvectors do not match the eigenvalues")
        return cls(eigenvalues, eigenvectors)


def colour_pca(images: torch.Tensor) -> ColourPCA:
    """PCA of the pixel values of ``images`` (uint8 [N, C, H, W] or [N, H, W]) over every pixel of the split.

    The covariance comes from float64 sums of integer products, which are exact, so the result does not
    depend on the thread count or the chunking (a resumed run gets the same numbers).
    """
    if images.dtype != torch.uint8:
        raise UsageError(f"colour_pca expects uint8 images, got {images.dtype}")
    images = images if images.ndim == 4 else images.unsqueeze(1)
    n, c, h, w = images.shape
    if n == 0:
        raise UsageError("colour_pca needs at least one image")
    sums = torch.zeros(c, dtype=torch.float64)
    products = torch.zeros(c, c, dtype=torch.float64)
    step = max(1, EXACT_CHUNK_PIXELS // (h * w))
    for start in range(0, n, step):
        chunk = images[start : start + step].transpose(0, 1).reshape(c, -1).to(torch.float64)
        sums += chunk.sum(1)
        products += chunk @ chunk.T
    count = n * h * w
    mean = sums / count
    cov = (products / count - torch.outer(mean, mean)) / 255.0**2
    values, vectors = torch.linalg.eigh(cov)  # ascending
    order = torch.arange(c - 1, -1, -1)
    values, vectors = values[order].clamp(min=0.0), vectors[:, order]
    return ColourPCA(tuple(values.tolist()), tuple(tuple(row) for row in vectors.tolist()))


@dataclass(frozen=True)
class Augment:
    """A training pipeline (:data:`~cnnlab.data.views.AUGMENTATIONS`) and its settings; ``Augment()`` leaves images as stored.

    ``crop_padding``: zero padding before a random crop (the custom path with ``pipeline="none"``, and
    the pad of ``cifar``); ``flip``: random horizontal flips (custom path). ``input_size``: the square
    crop the network sees, at most the stored (padded) size; evaluation takes its centre crop.
    ``scale_range``: ``vgg``'s [Smin, Smax]. ``pca``: ``alexnet``'s eigen-decomposition (from the training
    split, :func:`colour_pca`); ``pca_std``: the std of its weights alpha (0: no colour noise). Padding
    is with raw 0 (the background of the MNIST family).
    """

    crop_padding: int = 0
    flip: bool = False
    pipeline: str = "none"
    input_size: int | None = None
    scale_range: tuple[int, int] | None = None
    pca: ColourPCA | None = None
    pca_std: float = PCA_STD

    def __post_init__(self) -> None:
        check_positive("crop_padding", self.crop_padding, allow_zero=True)
        check_positive("input_size", self.input_size)
        if self.pipeline not in AUGMENTATIONS:
            raise unknown_choice("augmentation", str(self.pipeline), AUGMENTATIONS)
        if self.crop_padding and self.pipeline not in ("none", "cifar"):
            raise UsageError(
                f"crop_padding applies to the none (custom) and cifar augmentations, not {self.pipeline}; "
                "leave it at 0"
            )
        if self.scale_range is not None:
            lo, hi = self.scale_range
            if self.pipeline != "vgg":
                raise UsageError(f"scale_range applies to the vgg augmentation, not {self.pipeline}")
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 < lo <= hi):
                raise UsageError(
                    f"scale_range must be two whole numbers Smin <= Smax, got {self.scale_range}"
                )

    @property
    def active(self) -> bool:
        """Whether this draws anything at random."""
        return self.pipeline != "none" or self.crop_padding > 0 or self.flip

    @property
    def padding(self) -> int:
        """Zero padding on each side before cropping."""
        if self.pipeline == "cifar":
            return self.crop_padding or CIFAR_PADDING
        return self.crop_padding

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) the network sees from (padded) stored images of ``height`` x ``width``."""
        if self.input_size is None:
            if self.pipeline == "crops":
                raise UsageError(
                    "the crops augmentation needs an input size below the stored image size (Chatfield et al.: "
                    "224 crops of 256 images); set input_size"
                )
            return (height, width)
        if self.input_size > min(height, width):
            raise UsageError(
                f"input_size {self.input_size} is larger than the {height}x{width} images; use at most "
                f"{min(height, width)} (or pad them with pad_to)"
            )
        return (self.input_size, self.input_size)

    def scales(self, out: int) -> tuple[float, float]:
        """``vgg``'s [Smin, Smax] for ``out`` crops: ``scale_range``, else the paper's ratios to 224."""
        if self.scale_range is not None:
            lo, hi = self.scale_range
        else:
            lo, hi = (round(out * r) for r in VGG_SCALE_RATIO)
        if lo < out:
            raise UsageError(f"vgg scale jittering needs Smin >= the input size {out}, got Smin {lo}")
        return float(lo), float(hi)


@dataclass
class Draws:
    """One epoch's random choices, per position in its order (None: that part is off).

    ``boxes``: float [N, 4] (top, left, height, width) in canvas pixels; ``flips``: bool [N];
    ``colour``: float [N, C] raw-pixel shifts. ``rescaled``: the boxes are not all output-sized crops at
    whole pixels (they are resampled, not gathered).
    """

    boxes: torch.Tensor | None
    flips: torch.Tensor | None
    colour: torch.Tensor | None
    rescaled: bool = False

    def take(self, start: int, stop: int) -> Draws:
        """The draws of positions ``start:stop``."""

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[start:stop]

        return Draws(cut(self.boxes), cut(self.flips), cut(self.colour), self.rescaled)


def _uniform(
    n: int, lo: float | torch.Tensor, hi: float | torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def _anywhere(
    n: int, canvas: tuple[int, int], out: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """Integer (top, left) of ``out`` crops placed uniformly in ``canvas``: [N, 2]."""
    room_h, room_w = canvas[0] - out[0], canvas[1] - out[1]
    if room_h == room_w:  # one draw, the same stream as the loader has always used
        return torch.randint(0, room_h + 1, (n, 2), generator=generator)
    return torch.stack(
        [
            torch.randint(0, room_h + 1, (n,), generator=generator),
            torch.randint(0, room_w + 1, (n,), generator=generator),
        ],
        1,
    )


def _boxes(corners: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
    n = len(corners)
    sizes = torch.tensor(out, dtype=torch.float64).expand(n, 2)
    return torch.cat([corners.to(torch.float64), sizes], 1)


def five_crop_corners(canvas: tuple[int, int], out: tuple[int, int]) -> torch.Tensor:
    """(top, left) of the four corner crops and the centre crop (Chatfield et al. 2014 Sec. 3.2): [5, 2]."""
    dh, dw = canvas[0] - out[0], canvas[1] - out[1]
    return torch.tensor([[0, 0], [0, dw], [dh, 0], [dh, dw], [dh // 2, dw // 2]])


def draw(
    augment: Augment, n: int, canvas: tuple[int, int], generator: torch.Generator, channels: int
) -> Draws:
    """All of an epoch's choices for ``n`` images on a canvas of (H, W) (stored size plus padding)."""
    p = augment.padding
    image = (canvas[0] - 2 * p, canvas[1] - 2 * p)  # the stored (pad_to) image inside the crop padding
    out = augment.output_size(*image)
    pipeline = augment.pipeline
    boxes = colour = None
    if pipeline in ("none", "cifar", "alexnet"):
        if canvas != out and (p or pipeline == "alexnet"):
            boxes = _boxes(_anywhere(n, canvas, out, generator), out)
    elif pipeline == "crops":
        choice = torch.randint(0, 5, (n,), generator=generator)
        boxes = _boxes(five_crop_corners(canvas, out)[choice], out)
    elif pipeline == "vgg":
        lo, hi = augment.scales(out[0])
        # rescaling the shorter side to S and cropping `out` == cropping out * short / S and rescaling that
        side = min(image) / _uniform(n, lo, hi, generator)
        heights, widths = out[0] * side, out[1] * side
        boxes = _place(heights, widths, image, generator)
    elif pipeline == "inception":
        boxes = _place(*_resized_crop_sizes(n, image, generator), image, generator)
    flip = augment.flip or pipeline != "none"
    flips = torch.rand(n, generator=generator) < 0.5 if flip else None
    if pipeline == "alexnet" and augment.pca_std > 0:  # pca_std=0: the crops and flips alone
        colour = _colour_shift(augment, n, channels, generator)
    if boxes is None and canvas != out:  # the centre crop
        boxes = _boxes(
            torch.tensor([[(canvas[0] - out[0]) // 2, (canvas[1] - out[1]) // 2]]).expand(n, 2), out
        )
    return Draws(boxes, flips, colour, rescaled=pipeline in ("vgg", "inception"))


def _place(
    heights: torch.Tensor, widths: torch.Tensor, image: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """Boxes of the given sizes placed uniformly inside ``image`` (no crop padding here)."""
    n = len(heights)
    top = _uniform(n, 0.0, image[0] - heights, generator)
    left = _uniform(n, 0.0, image[1] - widths, generator)
    return torch.stack([top, left, heights, widths], 1)


def _resized_crop_sizes(
    n: int, image: tuple[int, int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heights and widths of random-resized crops: the first of 10 tries per image that fits, else the whole image."""
    h, w = image
    area = h * w * _uniform(n * RESIZED_CROP_TRIES, *AREA_RANGE, generator)
    log_ratio = _uniform(
        n * RESIZED_CROP_TRIES, math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1]), generator
    )
    ratio = torch.exp(log_ratio)  # width / height
    widths = torch.sqrt(area * ratio).view(n, RESIZED_CROP_TRIES)
    heights = torch.sqrt(area / ratio).view(n, RESIZED_CROP_TRIES)
    fits = (widths <= w) & (heights <= h)
    first = fits.to(torch.int8).argmax(1)  # the first fitting try (0 where none fits: overridden below)
    picked_h = heights.gather(1, first[:, None]).squeeze(1)
    picked_w = widths.gather(1, first[:, None]).squeeze(1)
    none_fit = ~fits.any(1)
    picked_h = torch.where(none_fit, torch.full_like(picked_h, h), picked_h)
    picked_w = torch.where(none_fit, torch.full_like(picked_w, w), picked_w)
    return picked_h, picked_w


def _colour_shift(augment: Augment, n: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    """AlexNet's per-image colour shift ``P (alpha * lambda)`` in raw pixel units: [N, C]."""
    if augment.pca is None:
        raise UsageError("the alexnet augmentation needs the training set's colour PCA (colour_pca)")
    values = torch.tensor(augment.pca.eigenvalues, dtype=torch.float64)
    vectors = torch.tensor(augment.pca.eigenvectors, dtype=torch.float64)
    if len(values) != channels:
        raise UsageError(f"the colour PCA has {len(values)} channels, the images {channels}")
    alpha = torch.randn(n, channels, generator=generator, dtype=torch.float64) * augment.pca_std
    return ((alpha * values) @ vectors.T * 255.0).to(torch.float32)


def gather_crops(
    batch: torch.Tensor, boxes: torch.Tensor | None, flips: torch.Tensor | None, out: tuple[int, int]
) -> torch.Tensor:
    """Crop ``out`` at each box's (top, left) and mirror where ``flips``: one ``torch.take`` on the batch, or
    for large crops (:data:`SLICE_CROP_PIXELS`) one slice copy per image (:func:`slice_crops`)."""
    if boxes is None and flips is None:
        return batch
    n, c, height, width = batch.shape
    out_h, out_w = out
    if out_h * out_w >= SLICE_CROP_PIXELS:
        return slice_crops(batch, boxes, flips, out)
    rows = torch.arange(out_h).expand(n, out_h)
    cols = torch.arange(out_w).expand(n, out_w)
    if boxes is not None:
        corners = boxes[:, :2].to(torch.int64)
        rows = rows + corners[:, :1]
        cols = cols + corners[:, 1:]
    if flips is not None:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    # Flat indices into the contiguous batch: one gather crops and flips every image.
    flat = (
        (torch.arange(n) * (c * height * width))[:, None, None, None]
        + (torch.arange(c) * (height * width))[None, :, None, None]
        + (rows * width)[:, None, :, None]
        + cols[:, None, None, :]
    )
    return torch.take(batch.contiguous(), flat)


def slice_crops(
    batch: torch.Tensor, boxes: torch.Tensor | None, flips: torch.Tensor | None, out: tuple[int, int]
) -> torch.Tensor:
    """What :func:`gather_crops` computes, by one slice copy per image: for crops of thousands of pixels
    (AlexNet's 224 of 256) the gather's index tensor (8 bytes per output element) costs more than copying."""
    n, c = batch.shape[:2]
    out_h, out_w = out
    result = batch.new_empty((n, c, out_h, out_w))
    corners = boxes[:, :2].to(torch.int64).tolist() if boxes is not None else [(0, 0)] * n
    mirrored = flips.tolist() if flips is not None else [False] * n
    for i, ((top, left), flip) in enumerate(zip(corners, mirrored)):
        window = batch[i, :, top : top + out_h, left : left + out_w]
        result[i] = window.flip(-1) if flip else window
    return result


def resample_crops(
    batch: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor | None, out: tuple[int, int]
) -> torch.Tensor:
    """Rescale each box (continuous pixels) to ``out``, mirrored where ``flips``: one ``grid_sample``, float32."""
    n, _, height, width = batch.shape
    top, left, box_h, box_w = boxes.to(torch.float64).unbind(1)
    sign = torch.ones(n, dtype=torch.float64) if flips is None else 1.0 - 2.0 * flips.to(torch.float64)
    # normalised coordinates (align_corners=False): input x = centre + half-extent * output x
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = sign * box_w / width
    theta[:, 0, 2] = 2 * (left + box_w / 2) / width - 1
    theta[:, 1, 1] = box_h / height
    theta[:, 1, 2] = 2 * (top + box_h / 2) / height - 1
    grid = F.affine_grid(theta.to(torch.float32), [n, 1, *out], align_corners=False)
    return F.grid_sample(
        batch.float(), grid.to(batch.device), mode="bilinear", padding_mode="border", align_corners=False
    )


def apply(batch: torch.Tensor, draws: Draws, out: tuple[int, int]) -> torch.Tensor:
    """``batch`` (uint8 canvas) cropped, rescaled and mirrored as ``draws`` say: uint8 where only whole-pixel
    crops and flips were asked, float32 (raw pixel units) otherwise. The colour shift is left to the caller,
    which fuses it into normalisation."""
    if draws.rescaled:
        return resample_crops(batch, draws.boxes, draws.flips, out)
    return gather_crops(batch, draws.boxes, draws.flips, out)
