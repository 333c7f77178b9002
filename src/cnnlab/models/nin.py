"""Network in Network (Lin, Chen & Yan 2014, "Network In Network", ICLR).

An mlpconv layer (Sec. 3.1, Eq. 2) is a convolution followed by 1x1 convolutions ("cascaded
cross-channel parametric pooling", cccp), each with a ReLU. The last mlpconv layer produces one
map per class, which global average pooling turns into the logits (Sec. 3.2): no FC layer. As in
Sec. 4.1, every mlpconv layer but the last is followed by a spatial max-pool that halves the map,
and dropout is applied on the outputs of all but the last mlpconv layers. Blocks as data
(:class:`MlpConv`: kernel and widths of the conv and its 1x1 layers).

* ``nin-cifar`` - the paper's CIFAR-10 network (Sec. 4.2, the authors' released configuration):
  mlpconv 5x5 192-160-96, 5x5 192-192-192, 3x3 192-192-10; 3x3 stride-2 max-pools; 3x32x32,
  10 classes, 966,986 parameters. The released model uses average pooling for its second pool;
  the paper's text says max-pooling after every mlpconv layer, which is followed here.
* ``nin`` - the authors' ImageNet model (Caffe Model Zoo; the slides' "remove fc6, fc7 of AlexNet
  but add NIN"): mlpconv 11x11/4 96-96-96, 5x5 256-256-256, 3x3 384-384-384, 3x3 1024-1024-1000;
  3x3 stride-2 max-pools; 224x224; 7,595,176 parameters (the "7.5 million" of the slides).

Pooling rounds up (Caffe's ceil mode), so 32 -> 16 -> 8 and 224 -> 54 -> 27 -> 13 -> 6 as in the
released models. The ReLU on the class maps before the average is Eq. 2 applied to the last layer,
as in the released models; logits are therefore non-negative.

Initialisation: the paper gives none ("we manually set proper initializations", Sec. 4.1). Glorot &
Bengio (2010) uniform weights, zero biases, is used as a documented choice, measured on Fashion-MNIST
(docs/training.md, "Paper recipes"): with He et al. (2015) normal weights the class maps start large and
the same for every image (loss 3.8 at 10 classes), the first updates drive every class map below zero,
and the ReLU before the average (Eq. 2) then passes no gradient: the net stays at ln 10 for good, at lr
1e-2 or 1e-3. Glorot's smaller start keeps about half the class maps alive and learns at lr 0.1 (the
recipe ``nin``). AlexNet's N(0, 0.01) shrinks the signal of the 9-12 stacked ReLU layers by orders of
magnitude. :func:`init_nin`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.layers import ClassifierModel, MaxPool
from cnnlab.models.registry import register_model

PAPER = "Lin et al. 2014, Network In Network"


@dataclass(frozen=True)
class MlpConv:
    """One mlpconv layer: a ``kernel`` x ``kernel`` convolution to ``widths[0]`` maps, then 1x1 to each further width."""

    kernel: int
    widths: tuple[int, ...]
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class NinSpec:
    """A NIN: its mlpconv layers (the last one's final width is the number of classes) and pooling."""

    blocks: tuple[MlpConv, ...]
    pool: MaxPool


NIN_MODELS: dict[str, NinSpec] = {
    "imagenet": NinSpec(
        blocks=(
            MlpConv(11, (96, 96, 96), stride=4),
            MlpConv(5, (256, 256, 256), padding=2),
            MlpConv(3, (384, 384, 384), padding=1),
            MlpConv(3, (1024, 1024, 1000), padding=1),
        ),
        pool=MaxPool(3, 2),
    ),
    "cifar": NinSpec(
        blocks=(
            MlpConv(5, (192, 160, 96), padding=2),
            MlpConv(5, (192, 192, 192), padding=2),
            MlpConv(3, (192, 192, 10), padding=1),
        ),
        pool=MaxPool(3, 2),
    ),
}


class NetworkInNetwork(ClassifierModel):
    """mlpconv layers with pooling and dropout between them (``features``); the class maps and their
    global average (``head``).

    Module names follow the released Caffe models: ``conv1, relu1, cccp1, relu_cccp1, ..., pool1,
    drop1``; the final 1x1 layer (one map per class) is ``head.cccp8`` (ImageNet) / ``head.cccp6`` (CIFAR).
    """

    def __init__(self, spec: NinSpec, num_classes: int, in_chans: int, drop_rate: float) -> None:
        super().__init__()
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        chs, cccp, last = in_chans, 0, len(spec.blocks)
        for b, block in enumerate(spec.blocks, start=1):
            widths = block.widths[:-1] if b == last else block.widths  # the class maps belong to the head
            modules[f"conv{b}"] = nn.Conv2d(chs, widths[0], block.kernel, block.stride, block.padding)
            modules[f"relu{b}"] = nn.ReLU(inplace=True)
            for width_in, width in zip(widths, widths[1:]):
                cccp += 1
                modules[f"cccp{cccp}"] = nn.Conv2d(width_in, width, 1)
                modules[f"relu_cccp{cccp}"] = nn.ReLU(inplace=True)
            chs = widths[-1]
            if b < last:
                modules[f"pool{b}"] = nn.MaxPool2d(spec.pool.kernel, spec.pool.stride, ceil_mode=True)
                modules[f"drop{b}"] = nn.Dropout(drop_rate)
        self.features = nn.Sequential(modules)
        self.head = nn.Sequential(
            OrderedDict(
                **{f"cccp{cccp + 1}": nn.Conv2d(chs, num_classes, 1)},
                relu=nn.ReLU(inplace=True),
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
            )
        )
        self.classifier_name = f"head.cccp{cccp + 1}"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits; with ``pre_logits`` the global average of the map the class-map layer takes (NIN has
        no FC layer: its classifier is that 1x1 convolution, Lin et al. 2014 Sec. 3.2)."""
        if pre_logits:
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.head(x)


def init_nin(model: nn.Module) -> None:
    """The paper states no initialisation (Sec. 4.1): Glorot uniform weights, zero biases (see the module notes)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)


def _build(spec: NinSpec, num_classes: int, in_chans: int, drop_rate: float) -> NetworkInNetwork:
    model = NetworkInNetwork(spec, num_classes, in_chans, drop_rate)
    init_nin(model)
    model.classifier_init = init_nin
    return model


@register_model(
    "nin",
    family="nin",
    paper=PAPER,
    input_size=(3, 224, 224),
    num_params=7_595_176,
    params_source="derived by hand from the authors' ImageNet model: see docs/models/nin.md",
    description="Network in Network, ImageNet: four mlpconv layers, global average pooling",
)
def nin(num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5) -> NetworkInNetwork:
    """The ImageNet NIN: mlpconv 11x11/4 96-96-96, 5x5 256-256-256, 3x3 384-384-384, 3x3 1024-1024-classes."""
    return _build(NIN_MODELS["imagenet"], num_classes, in_chans, drop_rate)


@register_model(
    "nin-cifar",
    family="nin",
    paper=PAPER,
    input_size=(3, 32, 32),
    num_classes=10,
    num_params=966_986,
    params_source="derived by hand from Sec. 4.2 / the released CIFAR-10 model: see docs/models/nin.md",
    description="Network in Network, CIFAR-10: three mlpconv layers, global average pooling",
)
def nin_cifar(num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.5) -> NetworkInNetwork:
    """The CIFAR-10 NIN: mlpconv 5x5 192-160-96, 5x5 192-192-192, 3x3 192-192-classes."""
    return _build(NIN_MODELS["cifar"], num_classes, in_chans, drop_rate)
