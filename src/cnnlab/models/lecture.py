"""The three networks of the PyTorch lectures 10 and 11 (Hongpu Liu), exactly as the slides write them.

* ``lecture-simple``    - lecture 10: conv 1->10 k5, max-pool, ReLU, conv 10->20 k5, max-pool, ReLU,
  fc 320->10 (8,490 parameters at 1x28x28).
* ``lecture-inception`` - lecture 11: conv 1->10 k5, max-pool, ReLU, InceptionA(10), conv 88->20 k5,
  max-pool, ReLU, InceptionA(20), fc 1408->10 (97,298 parameters). The module has no activation
  inside its branches, as in the slides' code.
* ``lecture-residual``  - lecture 11: conv 1->16 k5, ReLU, max-pool, ResidualBlock(16), conv 16->32 k5,
  ReLU, max-pool, ResidualBlock(32), fc 512->10 (41,514 parameters); the block is
  ``relu(x + conv2(relu(conv1(x))))`` with two 3x3 convolutions.

The slides hard-code the first FC layer's width for 1x28x28 MNIST (320, 1408, 512); here it is
derived from ``in_chans`` and ``img_size``, so 3x32x32 input works too.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.layers import (
    ClassifierHead,
    ClassifierModel,
    SizedFrom,
    feature_shape,
    make_activation,
    pair,
)
from cnnlab.models.registry import register_model

LECTURES = "Hongpu Liu, PyTorch Tutorial, lectures 10 (Basic CNN) and 11 (Advanced CNN)"


@dataclass(frozen=True)
class InceptionABranches:
    """Branch widths of the lecture's InceptionA module (lecture 11, 'Implementation of Inception Module')."""

    b1x1: int = 16  # 1x1
    b5x5_reduce: int = 16  # 1x1 -> 5x5
    b5x5: int = 24
    b3x3dbl_reduce: int = 16  # 1x1 -> 3x3 -> 3x3
    b3x3dbl: int = 24
    pool_proj: int = 24  # 3x3 average pool -> 1x1

    @property
    def out_chs(self) -> int:
        """Channels after concatenation (88 for the lecture's widths)."""
        return self.b1x1 + self.b5x5 + self.b3x3dbl + self.pool_proj


class InceptionA(nn.Module):
    """The lecture's Inception module: four branches concatenated on channels, no activations inside."""

    def __init__(
        self, in_chs: int, widths: InceptionABranches = InceptionABranches(), batch_norm: bool = False
    ) -> None:
        super().__init__()
        self.widths = widths
        conv = lambda i, o, k: _conv(i, o, k, batch_norm)  # noqa: E731
        self.branch1x1 = conv(in_chs, widths.b1x1, 1)
        self.branch5x5_1 = conv(in_chs, widths.b5x5_reduce, 1)
        self.branch5x5_2 = conv(widths.b5x5_reduce, widths.b5x5, 5)
        self.branch3x3_1 = conv(in_chs, widths.b3x3dbl_reduce, 1)
        self.branch3x3_2 = conv(widths.b3x3dbl_reduce, widths.b3x3dbl, 3)
        self.branch3x3_3 = conv(widths.b3x3dbl, widths.b3x3dbl, 3)
        self.branch_pool = conv(in_chs, widths.pool_proj, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3 = self.branch3x3_3(self.branch3x3_2(self.branch3x3_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([branch1x1, branch5x5, branch3x3, branch_pool], dim=1)


def _conv(in_chs: int, out_chs: int, kernel: int, batch_norm: bool, padding: int | None = None) -> nn.Module:
    """A convolution ("same" padding unless given), followed by batch norm where ``batch_norm`` (the
    BN-Inception variant: BN after every convolution, Ioffe & Szegedy 2015 section 4.2)."""
    conv = nn.Conv2d(in_chs, out_chs, kernel_size=kernel, padding=kernel // 2 if padding is None else padding)
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out_chs))) if batch_norm else conv


class ResidualBlock(nn.Module):
    """The lecture's residual block: ``relu(x + conv2(relu(conv1(x))))``, two 3x3 convolutions, same width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        y = self.conv2(y)
        return F.relu(x + y)


class LectureNet(ClassifierModel):
    """A lecture network: a feature stack and one FC layer whose width is derived from the input size."""

    def __init__(
        self,
        features: nn.Sequential,
        num_classes: int,
        in_chans: int,
        img_size: int | tuple[int, int],
        drop_rate: float,
        name: str,
    ) -> None:
        super().__init__()
        self.img_size = pair(img_size)
        self.features = features
        c, h, w = feature_shape(features, in_chans, self.img_size, what=name)
        self.head = ClassifierHead(c * h * w, num_classes, drop_rate, pool=False)
        # the slides' fc flattens the map as it is: another input size must be refused before it runs
        self.head_sized_from = SizedFrom(self.img_size, (c, h, w), name=name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def flat_classifier(self) -> list[nn.Module] | None:
        """The slides' fc (after its dropout)."""
        return self.head.flat_layers()


def _register_lecture(name: str, num_params: int, description: str):
    return register_model(
        name,
        family="lecture",
        paper=LECTURES,
        input_size=(1, 28, 28),
        num_classes=10,
        num_params=num_params,
        params_source="lecture slides; counted by hand in docs/models/lecture.md",
        description=description,
    )


@_register_lecture("lecture-simple", 8_490, "Lecture 10's two-conv net")
def lecture_simple(
    num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.0, img_size: int | tuple[int, int] = 28
) -> LectureNet:
    """Lecture 10's simple CNN: conv5(10) - pool - relu - conv5(20) - pool - relu - fc."""
    features = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_chans, 10, kernel_size=5),
            pool1=nn.MaxPool2d(2),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(10, 20, kernel_size=5),
            pool2=nn.MaxPool2d(2),
            relu2=nn.ReLU(),
        )
    )
    return LectureNet(features, num_classes, in_chans, img_size, drop_rate, "lecture-simple")


@_register_lecture("lecture-inception", 97_298, "Lecture 11's net with two InceptionA modules")
def lecture_inception(
    num_classes: int = 10,
    in_chans: int = 1,
    drop_rate: float = 0.0,
    img_size: int | tuple[int, int] = 28,
    batch_norm: bool = False,
    activation: str = "relu",
) -> LectureNet:
    """Lecture 11's Inception net: conv5(10) - pool - relu - InceptionA - conv5(20) - pool - relu - InceptionA - fc.

    Named deviations for the batch-norm experiment (Ioffe & Szegedy 2015 section 4.2): ``batch_norm``
    puts BN after every convolution (BN-Baseline), ``activation="sigmoid"`` replaces the ReLUs
    (BN-x5-Sigmoid)."""
    widths = InceptionABranches()
    features = nn.Sequential(
        OrderedDict(
            conv1=_conv(in_chans, 10, 5, batch_norm, padding=0),
            pool1=nn.MaxPool2d(2),
            relu1=make_activation(activation),
            incep1=InceptionA(10, widths, batch_norm),
            conv2=_conv(widths.out_chs, 20, 5, batch_norm, padding=0),
            pool2=nn.MaxPool2d(2),
            relu2=make_activation(activation),
            incep2=InceptionA(20, widths, batch_norm),
        )
    )
    return LectureNet(features, num_classes, in_chans, img_size, drop_rate, "lecture-inception")


@_register_lecture("lecture-residual", 41_514, "Lecture 11's net with two residual blocks")
def lecture_residual(
    num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.0, img_size: int | tuple[int, int] = 28
) -> LectureNet:
    """Lecture 11's residual net: conv5(16) - relu - pool - block - conv5(32) - relu - pool - block - fc."""
    features = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_chans, 16, kernel_size=5),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            rblock1=ResidualBlock(16),
            conv2=nn.Conv2d(16, 32, kernel_size=5),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            rblock2=ResidualBlock(32),
        )
    )
    return LectureNet(features, num_classes, in_chans, img_size, drop_rate, "lecture-residual")
