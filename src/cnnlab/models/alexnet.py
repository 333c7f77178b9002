"""AlexNet (Krizhevsky et al. 2012) and its one-tower variant (Krizhevsky 2014); the plain
"conv stack + FC stack" machinery the AlexNet-era families share (ZFNet, OverFeat, CNN-F/M/S, VGG)
is :class:`cnnlab.models.layers.PlainConvNet`.

``alexnet`` follows Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep
Convolutional Neural Networks", Section 3 and Fig. 2: five convolutions 96-256-384-384-256, the first
11x11 stride 4; ReLU after every layer; local response normalisation (Sec. 3.3: k=2, n=5,
alpha=1e-4, beta=0.75) after the ReLU of conv1 and conv2; overlapping 3x3 stride-2 max-pooling
(Sec. 3.4) after both normalisations and after conv5 (Sec. 3.5); FC 4096-4096 with dropout 0.5
(Sec. 4.2); 62,378,344 parameters at 1000 classes.

* ``two_tower=True`` is the paper's two-GPU layout (Fig. 2): conv2, conv4 and conv5 see only the
  kernel maps of their own GPU (``groups=2``), conv3 and the FC layers connect across both
  (60,965,224 parameters, the paper's "60 million").
* Input size: the paper says 224x224, but 11x11 stride-4 filters give its 55x55 conv1 maps only from
  227x227 ((227 - 11) / 4 + 1 = 55). The default is therefore ``img_size=227`` with no padding;
  ``img_size=224, conv1_padding=2`` gives the same 55x55 maps (torchvision's choice) and the same
  parameter count. Any other size works: fc6 is sized from ``img_size``.
* ``lrn=False`` drops the normalisation layers (common in re-implementations);
  ``adaptive_pool=True`` adds torchvision's adaptive average pooling before fc6, to the pool5 map
  size at ``img_size``, so the network then runs on any input above its minimum.

``alexnet-owt`` is the one-tower network of Krizhevsky 2014, "One weird trick for parallelizing
convolutional neural networks": 64-192-384-256-256 convolutions, no LRN, 224x224 input with conv1
padding 2; 61,100,840 parameters at 1000 classes (torchvision's ``alexnet``, whose adaptive 6x6
pooling is ``adaptive_pool=True`` here: at 224 it is the identity and the count is the same).

Initialisation (Sec. 5): weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC
layers (to give the ReLUs positive inputs early on), 0 elsewhere. :func:`init_alexnet`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.layers import ConvLayer, MaxPool, PlainConvNet, check_choice, conv_stack, init_gaussian
from cnnlab.models.registry import register_model

ALEXNET_PAPER = "Krizhevsky et al. 2012, ImageNet Classification with Deep Convolutional Neural Networks"
OWT_PAPER = "Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks"


OVERLAPPING_POOL = MaxPool(3, 2)  # AlexNet Sec. 3.4: z=3, s=2


# --------------------------------------------------------------------------------------------------
# AlexNet
# --------------------------------------------------------------------------------------------------

#: conv1-conv5 widths: the 2012 paper (Fig. 2, both towers together) and "one weird trick" (2014)
ALEXNET_WIDTHS: dict[str, tuple[int, int, int, int, int]] = {
    "2012": (96, 256, 384, 384, 256),
    "owt": (64, 192, 384, 256, 256),
}
ALEXNET_FC = (4096, 4096)


def alexnet_layers(
    widths: Sequence[int], conv1_padding: int, two_tower: bool, lrn: bool
) -> tuple[ConvLayer, ...]:
    """AlexNet's five convolution rows (Sec. 3.5, Fig. 2) for the given widths and options."""
    towers = 2 if two_tower else 1  # conv2, conv4, conv5 stay within their GPU; conv3 crosses (Fig. 2)
    c1, c2, c3, c4, c5 = widths
    return (
        ConvLayer(c1, 11, stride=4, padding=conv1_padding, lrn=lrn, pool=OVERLAPPING_POOL),
        ConvLayer(c2, 5, padding=2, groups=towers, lrn=lrn, pool=OVERLAPPING_POOL),
        ConvLayer(c3, 3, padding=1),
        ConvLayer(c4, 3, padding=1, groups=towers),
        ConvLayer(c5, 3, padding=1, groups=towers, pool=OVERLAPPING_POOL),
    )


def init_alexnet(model: nn.Module) -> None:
    """AlexNet Sec. 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7; 0 elsewhere."""
    init_gaussian(model, 0.01, bias_one=("conv2", "conv4", "conv5", "fc6", "fc7"))


@register_model(
    "alexnet",
    family="alexnet",
    paper=ALEXNET_PAPER,
    input_size=(3, 227, 227),
    num_params=62_378_344,
    params_source="derived by hand from Sec. 3.5 / Fig. 2: see docs/models/alexnet.md",
    macs=1_135_256_096,
    description="AlexNet 2012: 96-256-384-384-256 convs, LRN, overlapping pooling, FC 4096-4096",
)
@register_model(
    "alexnet-owt",
    family="alexnet",
    paper=OWT_PAPER,
    input_size=(3, 224, 224),
    num_params=61_100_840,
    params_source="torchvision docs (alexnet: 61,100,840); derivation in docs/models/alexnet.md",
    macs=714_188_480,
    description="One-tower AlexNet (one weird trick): 64-192-384-256-256 convs, no LRN",
    widths="owt",
    img_size=224,
    conv1_padding=2,
    lrn=False,
)
def alexnet(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.5,
    widths: str = "2012",
    img_size: int | tuple[int, int] = 227,
    conv1_padding: int = 0,
    lrn: bool = True,
    two_tower: bool = False,
    adaptive_pool: bool = False,
) -> PlainConvNet:
    """AlexNet with the paper's layer table; ``widths`` picks the 2012 or the one-weird-trick convolutions."""
    check_choice("AlexNet widths", widths, ALEXNET_WIDTHS)
    if conv1_padding < 0:
        raise UsageError(f"conv1_padding must be at least 0, got {conv1_padding}")
    name = "alexnet" if widths == "2012" else "alexnet-owt"
    layers = alexnet_layers(ALEXNET_WIDTHS[widths], conv1_padding, two_tower, lrn)
    features = conv_stack(layers, in_chans)
    model = PlainConvNet(
        features, ALEXNET_FC, num_classes, in_chans, img_size, drop_rate, adaptive_pool, name
    )
    init_alexnet(model)
    model.classifier_init = init_alexnet
    return model
