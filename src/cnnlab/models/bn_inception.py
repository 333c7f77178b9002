"""BN-Inception (Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by
Reducing Internal Covariate Shift"), the appendix's Figure 5 table row by row.

* Stem: conv 7x7/2 (64), max pool 3x3/2, conv 1x1 (64, "#3x3 reduce"), conv 3x3 (192), max pool 3x3/2.
* Inception modules 3a ... 5b (:data:`BN_INCEPTION_FIGURE5`): 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3
  (the 5x5 of GoogLeNet replaced by two 3x3, section 4.2 / appendix) | pool -> 1x1 projection, with
  the table's pooling type per module (average, max in 5b). 3c and 4e reduce the grid: no 1x1 branch,
  the last 3x3 of both 3x3 branches has stride 2, and the input passes through a 3x3/2 max pool
  ("pass through") instead of being projected.
* Head: 7x7 average pool (adaptive here), linear 1024 -> classes. No dropout by default: section
  4.2.1 removes it from the BN networks ("Remove Dropout"); ``drop_rate`` brings it back.

Every convolution is followed by batch norm and ReLU and has no bias: "the bias b can be ignored
since its effect will be canceled by the subsequent mean subtraction" (section 3.2). (The Caffe model
converted by Cadene's pretrainedmodels keeps the biases: 10,016 more parameters, 11,295,240 in all.) Pooling rounds up
(ceil mode) as in the reference Caffe model, so the grid is 112-56-28-14-7 at 224.

The widths give 11,285,224 parameters at 1000 classes (derivation in docs/models/bn_inception.md; note
that Figure 5 prints 576 as the output depth of 4c and 4d, while their widths add to 608, and the
appendix quotes 13.6M parameters, which the table does not reproduce).

Initialisation: the paper describes none. We use He et al. 2015 (normal, fan-in, gain sqrt(2)) for
the convolutions, the usual choice for ReLU networks with batch norm, and a N(0, 0.01) linear layer;
BN starts at weight 1, bias 0 (:func:`init_bn_inception_weights`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from cnnlab.models.layers import ConcatBranches, ConvNormAct, InceptionNet, check_choice
from cnnlab.models.registry import register_model

BN_INCEPTION_PAPER = (
    "Ioffe & Szegedy 2015, Batch Normalization: Accelerating Deep Network Training by Reducing Internal "
    "Covariate Shift"
)
POOL_TYPES = ("avg", "max")


def bn_relu_conv(in_chs: int, out_chs: int, kernel: int, stride: int = 1) -> ConvNormAct:
    """conv (no bias, "same" padding) -> batch norm -> ReLU."""
    return ConvNormAct(in_chs, out_chs, kernel, stride, norm=True)


@dataclass(frozen=True)
class BNInceptionSpec:
    """One inception row of Figure 5: #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool + proj.

    ``pool_proj=0`` is the table's "pass through"; ``stride=2`` marks the grid reductions 3c and 4e.
    """

    b1x1: int
    b3x3_reduce: int
    b3x3: int
    dbl_reduce: int
    dbl: int
    pool: str
    pool_proj: int
    stride: int = 1

    def __post_init__(self) -> None:
        check_choice("pooling", self.pool, POOL_TYPES)

    def out_chs(self, in_chs: int) -> int:
        """Channels after concatenation (a pass-through pool keeps the input's width)."""
        return self.b1x1 + self.b3x3 + self.dbl + (self.pool_proj or in_chs)


# Figure 5: #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj (0 = pass through), stride
BN_INCEPTION_FIGURE5: dict[str, BNInceptionSpec] = {
    "3a": BNInceptionSpec(64, 64, 64, 64, 96, "avg", 32),
    "3b": BNInceptionSpec(64, 64, 96, 64, 96, "avg", 64),
    "3c": BNInceptionSpec(0, 128, 160, 64, 96, "max", 0, stride=2),
    "4a": BNInceptionSpec(224, 64, 96, 96, 128, "avg", 128),
    "4b": BNInceptionSpec(192, 96, 128, 96, 128, "avg", 128),
    "4c": BNInceptionSpec(160, 128, 160, 128, 160, "avg", 128),
    "4d": BNInceptionSpec(96, 128, 192, 160, 192, "avg", 128),
    "4e": BNInceptionSpec(0, 128, 192, 192, 256, "max", 0, stride=2),
    "5a": BNInceptionSpec(352, 192, 320, 160, 224, "avg", 128),
    "5b": BNInceptionSpec(352, 192, 320, 192, 224, "max", 128),
}


class BNInceptionModule(ConcatBranches):
    """A Figure 5 module: [1x1] | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | pool -> [1x1 projection]."""

    def __init__(self, in_chs: int, spec: BNInceptionSpec) -> None:
        s = spec.stride
        branches: dict[str, nn.Module] = {}
        if spec.b1x1:
            branches["branch1x1"] = bn_relu_conv(in_chs, spec.b1x1, 1)
        branches["branch3x3"] = nn.Sequential(
            OrderedDict(
                reduce=bn_relu_conv(in_chs, spec.b3x3_reduce, 1),
                conv=bn_relu_conv(spec.b3x3_reduce, spec.b3x3, 3, s),
            )
        )
        branches["branch3x3dbl"] = nn.Sequential(
            OrderedDict(
                reduce=bn_relu_conv(in_chs, spec.dbl_reduce, 1),
                conv1=bn_relu_conv(spec.dbl_reduce, spec.dbl, 3),
                conv2=bn_relu_conv(spec.dbl, spec.dbl, 3, s),
            )
        )
        if spec.stride == 1:
            pool_cls = nn.AvgPool2d if spec.pool == "avg" else nn.MaxPool2d
            pool = pool_cls(3, stride=1, padding=1, ceil_mode=True)
        else:
            pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        layers = OrderedDict(pool=pool)
        if spec.pool_proj:
            layers["proj"] = bn_relu_conv(in_chs, spec.pool_proj, 1)
        branches["branch_pool"] = nn.Sequential(layers)
        super().__init__(branches, spec.out_chs(in_chs))
        self.spec = spec


def init_bn_inception_weights(model: nn.Module) -> None:
    """He normal (fan-in) convolutions, N(0, 0.01) linear layers, zero biases, BN at weight 1 and bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and module.bias is not None:
            nn.init.zeros_(module.bias)


@register_model(
    "bn-inception",
    family="bn-inception",
    paper=BN_INCEPTION_PAPER,
    input_size=(3, 224, 224),
    num_params=11_285_224,
    params_source="derived by hand from the paper's Figure 5: see docs/models/bn_inception.md",
)
def bn_inception(num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0) -> InceptionNet:
    """BN-Inception as in Figure 5, batch norm after every convolution."""
    stages: list[tuple[str, nn.Module]] = [
        ("conv1", bn_relu_conv(in_chans, 64, 7, 2)),
        ("pool1", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
        ("conv2_reduce", bn_relu_conv(64, 64, 1)),
        ("conv2", bn_relu_conv(64, 192, 3)),
        ("pool2", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
    ]
    in_chs = 192
    for row, spec in BN_INCEPTION_FIGURE5.items():
        stages.append((f"inception{row}", BNInceptionModule(in_chs, spec)))
        in_chs = spec.out_chs(in_chs)
    model = InceptionNet(stages, in_chs, num_classes, drop_rate)
    init_bn_inception_weights(model)
    model.classifier_init = init_bn_inception_weights
    return model
