"""ZFNet (Zeiler & Fergus 2013, "Visualizing and Understanding Convolutional Networks", Fig. 3).

The AlexNet layout with the changes the paper's visualisations motivated (its architecture selection): a 7x7
stride-2 first layer instead of 11x11 stride 4, a stride-2 second layer, and dense (single-GPU)
connections in layers 3-5. Fig. 3 row by row, at 224x224x3 input:

* layer 1: 96 filters 7x7 stride 2 -> 110x110, ReLU, max-pool 3x3 stride 2 -> 55x55, contrast norm
* layer 2: 256 filters 5x5 stride 2 -> 26x26, ReLU, max-pool 3x3 stride 2 -> 13x13, contrast norm
* layers 3, 4, 5: 384, 384, 256 filters 3x3 stride 1 (13x13), max-pool 3x3 stride 2 -> 6x6
* layers 6, 7: FC 4096, 4096 (dropout 0.5, Sec. 3); output: C-way softmax.

The figure gives sizes, not paddings; they are derived here: conv1 padding 1 gives 110 from 224,
and Caffe-style ceil-mode pooling gives 110 -> 55, 26 -> 13 and 13 -> 6 (floor mode would give
54, 12). The "contrast normalisation across feature maps" follows the pooling (Fig. 3 caption);
its parameters are not given, so AlexNet's LRN (k=2, n=5, alpha=1e-4, beta=0.75) is used.
62,357,608 parameters at 1000 classes. ``img_size`` sizes fc6 for other inputs;
``adaptive_pool=True`` is torchvision-style adaptive pooling before fc6 (a deviation).

Initialisation (Sec. 3): "all weights are initialized to 10^-2 and biases are set to 0", read as
weights ~ N(0, 0.01) (the paper's AlexNet-derived protocol), biases 0. The paper's renormalisation
of filters whose RMS exceeds 0.1 is a training-time constraint, not part of the model. :func:`init_zfnet`.
"""

from __future__ import annotations

from torch import nn

from cnnlab.models.alexnet import ALEXNET_FC, OVERLAPPING_POOL
from cnnlab.models.layers import ConvLayer, PlainConvNet, conv_stack, init_gaussian
from cnnlab.models.registry import register_model

PAPER = "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks"

#: Fig. 3, layers 1-5
ZFNET_LAYERS = (
    ConvLayer(96, 7, stride=2, padding=1, lrn=True, pool=OVERLAPPING_POOL),
    ConvLayer(256, 5, stride=2, padding=0, lrn=True, pool=OVERLAPPING_POOL),
    ConvLayer(384, 3, padding=1),
    ConvLayer(384, 3, padding=1),
    ConvLayer(256, 3, padding=1, pool=OVERLAPPING_POOL),
)


def init_zfnet(model: nn.Module) -> None:
    """Sec. 3: weights N(0, 0.01), biases 0."""
    init_gaussian(model, 0.01)


@register_model(
    "zfnet",
    family="zfnet",
    paper=PAPER,
    input_size=(3, 224, 224),
    num_params=62_357_608,
    params_source="derived by hand from Fig. 3: see docs/models/zfnet.md",
)
def zfnet(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.5,
    img_size: int | tuple[int, int] = 224,
    adaptive_pool: bool = False,
) -> PlainConvNet:
    """ZFNet of Fig. 3: 7x7/2 and 5x5/2 first layers, 96-256-384-384-256, FC 4096-4096."""
    features = conv_stack(ZFNET_LAYERS, in_chans, lrn_after_pool=True, ceil_mode=True)
    model = PlainConvNet(
        features, ALEXNET_FC, num_classes, in_chans, img_size, drop_rate, adaptive_pool, "zfnet"
    )
    init_zfnet(model)
    model.classifier_init = init_zfnet
    return model
