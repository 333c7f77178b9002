"""AlexNet (Krizhevsky et al. 2012) and its one-tower variant (Krizhevsky 2014), plus the plain
"conv stack + FC stack" machinery the AlexNet-era families share (ZFNet, OverFeat, CNN-F/M/S, VGG).

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

from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import UsageError, unknown_choice
from cnnlab.models.layers import ClassifierModel, SizedFrom, feature_shape, pair
from cnnlab.models.registry import register_model

ALEXNET_PAPER = "Krizhevsky et al. 2012, ImageNet Classification with Deep Convolutional Neural Networks"
OWT_PAPER = "Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks"


# --------------------------------------------------------------------------------------------------
# Shared machinery: a layer table as data, built into `features` + `classifier`
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaxPool:
    """A max-pooling row: window and stride (AlexNet's overlapping pool is ``MaxPool(3, 2)``)."""

    kernel: int
    stride: int


@dataclass(frozen=True)
class ConvLayer:
    """One convolution row of a paper's layer table, followed by its ReLU, optional LRN and pooling.

    ``groups=2`` expresses AlexNet's two GPU towers; ``pool=None`` means no pooling after this layer.
    """

    out_chs: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    lrn: bool = False
    pool: MaxPool | None = None


OVERLAPPING_POOL = MaxPool(3, 2)  # AlexNet Sec. 3.4: z=3, s=2


def local_response_norm() -> nn.LocalResponseNorm:
    """AlexNet's LRN (Sec. 3.3: k=2, n=5, alpha=1e-4, beta=0.75).

    The paper divides by ``(k + alpha * sum a^2) ** beta``; torch divides by
    ``(k + alpha / n * sum a^2) ** beta``, so torch's alpha is the paper's times n.
    """
    size = 5
    return nn.LocalResponseNorm(size, alpha=1e-4 * size, beta=0.75, k=2.0)


def conv_stack(
    layers: Sequence[ConvLayer], in_chans: int, lrn_after_pool: bool = False, ceil_mode: bool = False
) -> nn.Sequential:
    """Build ``features`` from table rows, naming modules ``conv1, relu1, norm1, pool1, conv2 ...``.

    AlexNet normalises then pools (Sec. 3.5); ZFNet pools then normalises (Zeiler & Fergus Fig. 3):
    ``lrn_after_pool`` picks the latter. ``ceil_mode`` rounds pooled sizes up, as Caffe and
    MatConvNet do (the convention behind the published map sizes of ZFNet, CNN-F/M/S and NIN).
    """
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    chs = in_chans
    for i, row in enumerate(layers, start=1):
        if row.groups > 1 and (chs % row.groups or row.out_chs % row.groups):
            raise UsageError(
                f"conv{i} cannot be split into {row.groups} towers: {chs} -> {row.out_chs} channels "
                f"must both be divisible by {row.groups}"
            )
        modules[f"conv{i}"] = nn.Conv2d(
            chs, row.out_chs, row.kernel, row.stride, row.padding, groups=row.groups
        )
        modules[f"relu{i}"] = nn.ReLU(inplace=True)
        norm = {f"norm{i}": local_response_norm()} if row.lrn else {}
        pool = {}
        if row.pool is not None:
            pool[f"pool{i}"] = nn.MaxPool2d(row.pool.kernel, row.pool.stride, ceil_mode=ceil_mode)
        modules.update({**pool, **norm} if lrn_after_pool else {**norm, **pool})
        chs = row.out_chs
    return nn.Sequential(modules)


def fc_stack(
    in_features: int, hidden: Sequence[int], num_classes: int, drop_rate: float, first: int
) -> nn.Sequential:
    """The FC classifier ``fc{first}, relu, drop, ..., fc{last}``: dropout after each hidden ReLU.

    Dropout sits on the outputs of the hidden FC layers, as in AlexNet Sec. 4.2 ("dropout in the first
    two fully-connected layers") and VGG Sec. 3.1 ("dropout ... for the first two FC layers").
    """
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_features
    for i, out in enumerate(hidden, start=first):
        modules[f"fc{i}"] = nn.Linear(width, out)
        modules[f"relu{i}"] = nn.ReLU(inplace=True)
        modules[f"drop{i}"] = nn.Dropout(drop_rate)
        width = out
    modules[f"fc{first + len(hidden)}"] = nn.Linear(width, num_classes)
    return nn.Sequential(modules)


class PlainConvNet(ClassifierModel):
    """``features`` (convolutions) -> [adaptive pool] -> flatten -> ``classifier`` (FC stack).

    The first FC layer's width is derived from the feature map at ``img_size`` (``feature_shape``),
    so any input above the minimum works once the model is built for it; ``adaptive_pool=True``
    pools every input to that map size instead (torchvision's layout), so one model runs on any size.
    FC layers are numbered after the convolutions (conv1-5 -> fc6-8, OverFeat-accurate's conv1-6 ->
    fc7-9), as the papers name them, or from ``first_fc`` (VGG's released models: always fc6-8).
    """

    def __init__(
        self,
        features: nn.Sequential,
        hidden: Sequence[int],
        num_classes: int,
        in_chans: int,
        img_size: int | tuple[int, int],
        drop_rate: float,
        adaptive_pool: bool,
        name: str,
        first_fc: int | None = None,
    ) -> None:
        super().__init__()
        self.img_size = pair(img_size)
        self.features = features
        # evaluation mode: batch norm in training mode refuses a 1x1 map of one image (ValueError),
        # which would hide the "smallest input" message of an img_size that is too small
        features.eval()
        try:
            c, h, w = feature_shape(features, in_chans, self.img_size, what=name)
        finally:
            features.train()
        self.avgpool = nn.AdaptiveAvgPool2d((h, w)) if adaptive_pool else nn.Identity()
        if not adaptive_pool:  # fc{first} flattens the map as it is: refuse other sizes before it runs
            self.head_sized_from = SizedFrom(
                self.img_size,
                (c, h, w),
                "its first FC layer",
                any_size_option="adaptive_pool=True",
                name=name,
            )
        num_convs = sum(isinstance(m, nn.Conv2d) for m in features.modules())
        first_fc = num_convs + 1 if first_fc is None else first_fc
        self.classifier = fc_stack(c * h * w, hidden, num_classes, drop_rate, first=first_fc)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def init_gaussian(model: nn.Module, std: float = 0.01, bias_one: Collection[str] = ()) -> None:
    """Weights of every conv and linear layer ~ N(0, std), biases 0, or 1 for modules named in ``bias_one``.

    Batch-norm layers start at scale 1, shift 0. The initialisation AlexNet, ZFNet, OverFeat and VGG
    describe; CNN-F/M/S, whose paper states none, reuse it.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.constant_(module.bias, 1.0 if name.rsplit(".", 1)[-1] in bias_one else 0.0)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


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
    if widths not in ALEXNET_WIDTHS:
        raise unknown_choice("AlexNet widths", widths, ALEXNET_WIDTHS)
    if conv1_padding < 0:
        raise UsageError(f"conv1_padding must be at least 0, got {conv1_padding}")
    name = "alexnet" if widths == "2012" else "alexnet-owt"
    layers = alexnet_layers(ALEXNET_WIDTHS[widths], conv1_padding, two_tower, lrn)
    features = conv_stack(layers, in_chans)
    model = PlainConvNet(
        features, ALEXNET_FC, num_classes, in_chans, img_size, drop_rate, adaptive_pool, name
    )
    init_alexnet(model)
    return model
