"""Looking inside a network: its filters, its feature maps and where its class evidence lies (Grad-CAM).

Every view is a function returning numpy arrays; :func:`tile_grid`, :func:`overlay_heatmap` and
:func:`png_bytes` turn them into pictures. ZFNet (Zeiler & Fergus 2014, Fig. 2) and AlexNet
(Krizhevsky et al. 2012, Fig. 3) showed the first layer's filters as images; Grad-CAM is
Selvaraju et al. 2017, Sec. 3 (Eq. 1-2).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UsageError, unknown_choice

# --------------------------------------------------------------------------------------- filters


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The 2-D convolutions of ``model`` with their names, in the order they were declared."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def filters(model: nn.Module, layer: str | None = None) -> tuple[str, np.ndarray]:
    """(name, weights [out, in, kh, kw] as float32) of convolution ``layer`` (default: the first one)."""
    convs = conv_layers(model)
    if not convs:
        raise UsageError(f"{type(model).__name__} has no 2-D convolution whose filters could be shown")
    if layer is None:
        name, conv = convs[0]
    else:
        named = dict(convs)
        if layer not in named:
            raise unknown_choice("convolution layer", layer, named)
        name, conv = layer, named[layer]
    return name, conv.weight.detach().float().cpu().numpy()


def filter_tiles(weights: np.ndarray, max_inputs: int = 16) -> tuple[np.ndarray, int]:
    """Tiles [n, kh, kw, 1 or 3] in [0, 1] of filter weights [out, in, kh, kw], and the columns to lay them in.

    Each filter is scaled by its own largest magnitude around grey 0.5 (so zero weight is mid-grey, as
    in ZFNet's figure). Filters over 3 input channels are shown in colour; others as one grey tile per
    (output, input) pair, one row per output filter, at most ``max_inputs`` inputs of each.
    """
    out, chans = weights.shape[:2]
    scale = np.abs(weights).reshape(out, -1).max(1).clip(min=1e-12)[:, None, None, None]
    scaled = 0.5 + 0.5 * weights / scale
    if chans == 3:
        return scaled.transpose(0, 2, 3, 1), math.ceil(math.sqrt(out))
    if chans == 1:
        return scaled[:, 0, :, :, None], math.ceil(math.sqrt(out))
    shown = min(chans, max_inputs)
    return scaled[:, :shown].reshape(out * shown, *weights.shape[2:], 1), shown


# ----------------------------------------------------------------------------------- activations


def feature_map_modules(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Name -> output shape of every module that produces a 4-D feature map when ``model`` sees ``x``
    (in its ``forward_features`` where it has one: the head's pooling is not a stage)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        m.register_forward_hook(
            lambda mod, inp, out, name=name: (
                shapes.__setitem__(name, tuple(out.shape))
                if isinstance(out, torch.Tensor) and out.dim() == 4
                else None
            )
        )
        for name, m in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            getattr(model, "forward_features", model)(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def default_layers(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The stages to show by default: the modules at the shallowest nesting level where at least two
    produce feature maps (``features.conv1 ...`` of the lecture nets, ``layer1 ...`` of a ResNet)."""
    for depth in range(1, 1 + max((n.count(".") + 1 for n in shapes), default=0)):
        names = [n for n in shapes if n.count(".") + 1 == depth]
        if len(names) >= 2:
            return names
    return list(shapes)


def activations(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Feature maps [C, H, W] (float32) of the first image of ``x`` at each of ``layers`` (module names;
    default :func:`default_layers`), in the order the forward pass produces them."""
    model.eval()
    shapes = feature_map_modules(model, x[:1])
    wanted = default_layers(shapes) if not layers else list(layers)
    named = dict(model.named_modules())
    for name in wanted:
        if name not in named:
            raise unknown_choice("layer", name, shapes)
        if name not in shapes:
            raise UsageError(
                f"layer {name} does not produce a feature map (a 4-D output); choose one of: "
                f"{', '.join(shapes)}"
            )
    maps: dict[str, np.ndarray] = {}
    handles = [
        named[name].register_forward_hook(
            lambda mod, inp, out, name=name: maps.__setitem__(name, out[0].detach().float().cpu().numpy())
        )
        for name in wanted
    ]
    try:
        with torch.no_grad():
            getattr(model, "forward_features", model)(x[:1])
    finally:
        for h in handles:
            h.remove()
    return {name: maps[name] for name in shapes if name in maps}


def map_tiles(feature_map: np.ndarray, max_channels: int = 64) -> tuple[np.ndarray, int]:
    """Tiles [n, H, W, 1] in [0, 1] of a feature map [C, H, W] (each channel scaled by its own range, at
    most ``max_channels``), and the columns to lay them in."""
    shown = feature_map[:max_channels]
    low = shown.min(axis=(1, 2), keepdims=True)
    span = (shown.max(axis=(1, 2), keepdims=True) - low).clip(min=1e-12)
    return ((shown - low) / span)[..., None], math.ceil(math.sqrt(len(shown)))


# -------------------------------------------------------------------------------------- Grad-CAM


@dataclass
class ClassActivation:
    """A Grad-CAM heat map: [H, W] in [0, 1] at the input's size, for class ``class_index``."""

    heatmap: np.ndarray
    class_index: int
    probabilities: np.ndarray  # the model's softmax output for the image
    feature_shape: tuple[int, ...]  # the final feature map the map was computed on (C, h, w)


def grad_cam(model: nn.Module, x: torch.Tensor, class_index: int | None = None) -> ClassActivation:
    """Grad-CAM (Selvaraju et al. 2017, Eq. 1-2) of the first image of ``x`` for ``class_index``
    (default: the predicted class).

    The target is the final feature map A (the output of ``forward_features``, the last convolutional
    stage before the head pools or flattens it): the class score's gradient is averaged over each
    channel's positions to a weight a_k, and the map is ReLU(sum_k a_k A_k), upsampled bilinearly to the
    input's size and scaled to [0, 1] (all zeros when no position has positive evidence).
    """
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise UsageError(
            f"Grad-CAM needs a cnnlab model (forward_features and forward_head); {type(model).__name__} is not one"
        )
    model.eval()
    x = x[:1].detach()
    with torch.enable_grad():
        features = model.forward_features(x)
        if features.dim() != 4:
            raise UsageError(
                f"{type(model).__name__}'s features are not a feature map ({tuple(features.shape)}); "
                "Grad-CAM needs a final convolutional stage"
            )
        features = features.detach().requires_grad_(True)
        logits = model.forward_head(features)
        num_classes = logits.shape[1]
        target = int(logits[0].argmax()) if class_index is None else int(class_index)
        if not 0 <= target < num_classes:
            raise UsageError(f"class {target} is out of range: this model has classes 0 to {num_classes - 1}")
        (gradient,) = torch.autograd.grad(logits[0, target], features)
    weights = gradient[0].mean(dim=(1, 2))  # Eq. 1: global average pooling of the gradients
    cam = F.relu((weights[:, None, None] * features[0].detach()).sum(0))  # Eq. 2
    cam = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    heatmap = (cam / peak if peak > 0 else cam).float().cpu().numpy()
    probabilities = logits[0].detach().float().softmax(0).cpu().numpy()
    return ClassActivation(heatmap, target, probabilities, tuple(features.shape[1:]))


# -------------------------------------------------------------------------------------- pictures


def tile_grid(tiles: np.ndarray, columns: int, gap: int = 1, background: float = 1.0) -> np.ndarray:
    """Tiles [n, h, w, c] in [0, 1] laid out ``columns`` wide with ``gap`` pixels between -> [H, W, c]."""
    n, h, w, c = tiles.shape
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, c), background, dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, col = divmod(i, columns)
        grid[r * (h + gap) : r * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = tile
    return grid


def overlay_heatmap(picture: np.ndarray, heatmap: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """RGB [H, W, 3] in [0, 1]: the uint8 picture [C, H, W] in grey or colour under the heat map (jet),
    the heat map cropped to the picture where the model's input was padded around it.

    The colour covers each pixel in proportion to its heat (at most ``alpha``): where there is no
    evidence the picture shows as it is.
    """
    from matplotlib import colormaps

    c, h, w = picture.shape
    top, left = (heatmap.shape[0] - h) // 2, (heatmap.shape[1] - w) // 2
    heat = heatmap[top : top + h, left : left + w]
    base = picture.transpose(1, 2, 0).astype(np.float32) / 255.0
    base = np.repeat(base, 3, axis=2) if c == 1 else base[..., :3]
    colour = colormaps["jet"](heat)[..., :3].astype(np.float32)
    cover = alpha * heat[..., None].astype(np.float32)
    return (1 - cover) * base + cover * colour


#: Pixel height of the text of a picture's caption (a PNG for a slide or a lab sheet).
CAPTION_TEXT_HEIGHT = 14


def png_bytes(image: np.ndarray, scale: int = 1, caption: str | None = None) -> bytes:
    """PNG of an image [H, W] or [H, W, 1 or 3] in [0, 1] (or uint8), enlarged ``scale`` times with
    nearest-neighbour sampling (pixels stay sharp squares).

    ``caption``: drawn in a white strip above the picture (lines wrapped to its width) and stored as the
    PNG's ``Title`` text, so that a file shown on its own still says what it is."""
    from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    info = None
    if caption:
        font = ImageFont.load_default(size=CAPTION_TEXT_HEIGHT)
        lines = wrapped(caption, lambda text: font.getlength(text) <= picture.width - 8)
        line_height = CAPTION_TEXT_HEIGHT + 4
        framed = Image.new(
            picture.mode, (picture.width, picture.height + line_height * len(lines) + 6), "white"
        )
        framed.paste(picture, (0, line_height * len(lines) + 6))
        draw = ImageDraw.Draw(framed)
        for row, line in enumerate(lines):
            draw.text((4, 3 + row * line_height), line, fill="black", font=font)
        picture = framed
        info = PngImagePlugin.PngInfo()
        info.add_text("Title", caption)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def wrapped(text: str, fits: Callable[[str], bool]) -> list[str]:
    """``text`` in lines of whole words, each as long as ``fits`` allows (a word too long for a line stays
    whole on its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and fits(f"{lines[-1]} {word}"):
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def enlargement(size: int, target: int = 256) -> int:
    """The whole-number scale that brings a picture ``size`` pixels wide closest to ``target`` (at least 1)."""
    return max(1, round(target / max(size, 1)))
