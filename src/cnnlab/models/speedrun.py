"""``speedrun-fmnist``: the net behind ``cnnlab speedrun``, built for time to accuracy on 28x28 grey images.

Not a paper's network. Its shape follows Keller Jordan's airbench (2024), which set CIFAR-10 speed
records with a stem and three conv groups and no residual connections, scaled down to Fashion-MNIST's
28x28 single-channel images and a CPU:

* stem: 3x3 conv to ``widths[0]`` channels, batch norm, activation (28x28);
* three groups, each ``conv 3x3 -> max pool 2 -> BN -> act -> conv 3x3 -> BN -> act``
  (28 -> 14 -> 7 -> 3): the pool right after each group's first convolution makes every layer behind
  it a quarter of the cost;
* head: global max pool, a linear layer without bias, its logits scaled by ``logit_scale`` (airbench's
  1/9 keeps the first logits small, which suits the label-smoothed loss of the speedrun recipe).

Every choice (widths, activation, pooling) was measured against time to validation accuracy on
Fashion-MNIST; the measurements are in docs/training.md ("Speedrun").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.layers import ClassifierModel, ConvNormAct, make_activation
from cnnlab.models.registry import register_model

SPEEDRUN = "cnnlab speedrun, after K. Jordan 2024, airbench (94% on CIFAR-10 in 3.29 s on one A100)"


class SpeedrunGroup(nn.Sequential):
    """airbench's conv group: conv 3x3 -> max pool 2 -> BN -> act -> conv 3x3 -> BN -> act."""

    def __init__(self, in_chs: int, out_chs: int, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)  # pooling before batch norm: BN and act run on a quarter of the map
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = make_activation(act)
        self.unit = ConvNormAct(out_chs, out_chs, 3, norm=True, act=act)


class SpeedrunNet(ClassifierModel):
    """Stem, three conv groups, global max pool, a scaled bias-free linear classifier."""

    classifier_name = "fc"

    def __init__(
        self,
        widths: Sequence[int],
        num_classes: int,
        in_chans: int,
        act: str,
        logit_scale: float,
        drop_rate: float,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 4 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise UsageError(
                f"widths must be 4 positive whole numbers (the stem's and groups 1-3's channels), got {widths!r}"
            )
        self.stem = ConvNormAct(in_chans, widths[0], 3, norm=True, act=act)
        self.group1 = SpeedrunGroup(widths[0], widths[1], act)
        self.group2 = SpeedrunGroup(widths[1], widths[2], act)
        self.group3 = SpeedrunGroup(widths[2], widths[3], act)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(widths[3], num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.group3(self.group2(self.group1(self.stem(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # the scale on the embedding: the bias-free fc makes it the same logits, and the final layer
        # alone then maps the embedding to the logits (the fine-tuning API's contract)
        x = self.logit_scale * self.drop(self.pool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def feature_stages(self) -> list[tuple[str, nn.Module]]:
        """The stem and the three groups, in order."""
        return [(name, getattr(self, name)) for name in ("stem", "group1", "group2", "group3")]


@register_model(
    "speedrun-fmnist",
    family="speedrun",
    paper=SPEEDRUN,
    input_size=(1, 28, 28),
    num_classes=10,
    num_params=292_656,
    params_source="counted by hand in docs/models/speedrun.md",
    description="the speedrun's net: a stem and three airbench-style conv groups for 28x28 grey images",
)
def speedrun_fmnist(
    num_classes: int = 10,
    in_chans: int = 1,
    drop_rate: float = 0.0,
    widths: Sequence[int] = (16, 32, 64, 128),
    act: str = "relu",
    logit_scale: float = 1 / 9,
) -> SpeedrunNet:
    """The speedrun net; ``widths`` are the stem's and the three groups' channels.

    The stem's 16 (24 until measured otherwise): channels_last batch norm, pooling and ReLU vectorise over
    the channels, and at 28x28 they cost more than the convolutions; 16 fill whole AVX2 and AVX-512
    registers (docs/training.md, "Speedrun")."""
    return SpeedrunNet(widths, num_classes, in_chans, act, logit_scale, drop_rate)
