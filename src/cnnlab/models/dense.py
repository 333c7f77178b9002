"""Dense evaluation: a network's fully-connected layers turned into convolutions, so that it runs over a
whole image larger than it was trained on and returns a map of class scores.

Simonyan & Zisserman 2015, Sec. 3.2: "the fully-connected layers are first converted to convolutional
layers (the first FC layer to a 7x7 conv. layer, the last two FC layers to 1x1 conv. layers). The
resulting fully-convolutional net is then applied to the whole (uncropped) image. The result is a class
score map ... spatially averaged (sum-pooled)". OverFeat (Sermanet et al. 2014, Sec. 3.5) evaluates
the same way. The first FC layer, which flattens a C x h x w map, becomes an h x w convolution with the
same weights (the flatten order of an NCHW map is C, h, w); the others become 1x1 convolutions. At the
training size the map is 1x1 and equals the network's logits.

It applies to networks whose head flattens a feature map of fixed size (``flat_classifier``): VGG,
AlexNet, ZFNet, OverFeat, CNN-F/M/S and the lecture nets. Networks that pool globally before their
classifier (ResNets, GoogLeNet, DenseNet, NIN ...) or were built with ``adaptive_pool=True`` have
nothing to convert and are refused with a one-line error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.layers import ClassifierModel

DENSE_FAMILIES = "VGG, AlexNet, ZFNet, OverFeat, CNN-F/M/S and the lecture nets"


def conv_from_linear(linear: nn.Linear, in_shape: Sequence[int]) -> nn.Conv2d:
    """A convolution computing ``linear`` at every h x w window of a C x h x w map (``in_shape``), same weights."""
    c, h, w = in_shape
    if linear.in_features != c * h * w:
        raise UsageError(f"a linear layer of {linear.in_features} inputs cannot read a {c}x{h}x{w} map")
    conv = nn.Conv2d(c, linear.out_features, (h, w), bias=linear.bias is not None)
    conv = conv.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, c, h, w))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def convolutional_head(layers: Sequence[nn.Module], feature_shape: Sequence[int]) -> nn.Sequential:
    """The layers of a flattened-map classifier with every Linear made a convolution (the first h x w, the rest 1x1)."""
    converted, shape = [], tuple(feature_shape)
    for layer in layers:
        if isinstance(layer, nn.Linear):
            converted.append(conv_from_linear(layer, shape))
            shape = (layer.out_features, 1, 1)
        elif isinstance(layer, nn.ReLU | nn.Dropout | nn.Identity):
            converted.append(layer)  # elementwise: the same on a map as on a vector (dropout: off in eval)
        else:
            raise UsageError(f"dense evaluation cannot convert a {type(layer).__name__} in the classifier")
    return nn.Sequential(*converted)


class ScoreMapNet(nn.Module):
    """A network's features followed by its classifier as convolutions: image -> class score map [B, K, h, w]."""

    def __init__(self, model: ClassifierModel, head: nn.Sequential) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.forward_features(x))


def dense_model(model: nn.Module) -> ScoreMapNet:
    """``model`` with its fully-connected classifier converted to convolutions (see the module docstring).

    Raises :class:`UsageError` for networks without such a classifier, naming the families that have one.
    """
    name = getattr(model, "model_name", None) or type(model).__name__
    layers = model.flat_classifier() if isinstance(model, ClassifierModel) else None
    sized = getattr(model, "head_sized_from", None)
    if layers is None or sized is None or sized.window != (1, 1):
        raise UsageError(
            f"dense evaluation converts fully-connected layers over a flattened feature map into convolutions "
            f"({DENSE_FAMILIES}); {name} has no such classifier (it pools before it), so evaluate it with "
            "center, 5crop, 10crop or multiscale"
        )
    return ScoreMapNet(model, convolutional_head(layers, sized.feature_shape))
