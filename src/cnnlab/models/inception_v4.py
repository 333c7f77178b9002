"""Inception-v4, Inception-ResNet-v1 and -v2 (Szegedy et al. 2017, "Inception-v4, Inception-ResNet and
the Impact of Residual Connections on Learning"), figure by figure. 299x299 input.

* ``inception-v4`` (Figure 9): stem (Figure 3), 4 x Inception-A (Figure 4), Reduction-A (Figure 7 with
  Table 1's k=192, l=224, m=256, n=384), 7 x Inception-B (Figure 5), Reduction-B (Figure 8),
  3 x Inception-C (Figure 6), average pool, dropout (keep 0.8), linear. 42,679,816 parameters.
* ``inception-resnet-v1`` (Figure 15 with the v1 blocks): stem (Figure 14), 5 x Inception-ResNet-A
  (Figure 10), Reduction-A (k=192, l=192, m=256, n=384), 10 x Inception-ResNet-B (Figure 11),
  Reduction-B (Figure 12), 5 x Inception-ResNet-C (Figure 13), average pool, dropout, linear
  (1792 -> classes). The paper's figures are self-consistent; the count is derived in the doc.
* ``inception-resnet-v2``: the released network (TF-slim ``inception_resnet_v2``, which timm and
  Cadene's pretrainedmodels reproduce; 55,843,464 parameters). It differs from the paper's Figures 15-19,
  whose widths do not add up (Reduction-B of Figure 18 yields 2146 channels, the C block of Figure 19
  projects back to 2048): the released stem is Inception-v3's plus a 35x35 module (``mixed_5b``,
  320 channels), the A/B/C blocks project to 320/1088/2080 channels, Reduction-A uses k=l=256,
  m=n=384 (Table 1), and a 1x1 conv (1536) precedes the pooling. Its last C block is, as released,
  unscaled and without ReLU.

Residual blocks (section 3.2, Figure 20): ``relu(x + scale * conv1x1(concat(branches)))``; the 1x1
"Linear" convolution has a bias and no batch norm, since batch norm sits "only on top of the
traditional layers, but not on top of the summations" (section 3.2). ``residual_scale`` is the
factor of section 3.3 ("between 0.1 and 0.3"): one float for every block, or one per block type
(A, B, C); the default (0.17, 0.10, 0.20) is the released v2's, also used for v1 (the paper gives
no per-model value).

Branch order (``branch_order``, ``factor_order``): the figures' order by default; ``"released"`` is the
order of the TF-slim checkpoints (and timm): pooling branches concatenated last, and in Inception-v4
some 7x1/1x7 and 1x3/3x1 pairs swapped (:func:`factor_pair`).

Every other convolution: no bias, batch norm (eps 0.001, as the reference), ReLU. "V" in the
figures is valid padding, other convolutions keep the size.

Initialisation (:func:`init_inception_v4_weights`): the paper does not describe it; the reference
TF-slim scope uses He et al. 2015's variance scaling (normal, fan-in, gain sqrt(2)) for convolutions
and Glorot (Xavier) uniform for the final linear layer, zero biases, BN weight 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.inception_v3 import ModuleA
from cnnlab.models.layers import (
    AvgPoolProj,
    Branch,
    BranchRecord,
    ConcatBranches,
    ConvRow,
    InceptionNet,
    MaxPoolPass,
    bn_conv,
    build_stem,
    check_choice,
    conv_chain,
    convs,
    max_pool_3x3_s2,
)
from cnnlab.models.registry import register_model

INCEPTION_V4_PAPER = (
    "Szegedy et al. 2017, Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning"
)
V = 0  # "V" in the figures: valid padding
# Named orders (options of inception-v4 and inception-resnet-v2): the paper's figures, or the released
# TF-slim checkpoints that timm reproduces
ORDERS = ("paper", "released")


def factor_pair(first: int, released: bool, pair_of: int = 7) -> tuple[tuple[int, int], tuple[int, int]]:
    """A factorised n x n convolution as two kernels, ``first`` the orientation the paper's figure draws first.

    ``first`` is ``(1, n)`` or ``(n, 1)``; ``released`` swaps the pair, the order of TF-slim's checkpoints
    (and timm's) where it differs from the figures: the stem's 7x1/1x7 (Figure 3), Inception-B's
    double 7x7 branch (Figure 5) and Inception-C's 1x3/3x1 (Figure 6).
    """
    wide, tall = (1, pair_of), (pair_of, 1)
    a, b = (wide, tall) if first == wide else (tall, wide)
    return (b, a) if released else (a, b)


# ---------------------------------------------------------------- Inception-v4 (Figures 3-9)
class InceptionV4Stem(nn.Sequential):
    """Figure 3: three convs, then [max pool | conv 3x3/2 96], [1x1 64 -> 3x3 96 V | 1x1 64 -> 7x1 -> 1x7 -> 3x3 96 V],
    [conv 3x3/2 192 V | max pool] -> 35x35x384."""

    def __init__(self, in_chans: int, factor_order: str = "paper") -> None:
        super().__init__()
        k1, k2 = factor_pair((7, 1), factor_order == "released")
        self.convs = conv_chain(in_chans, (32, 3, 2, V), (32, 3, 1, V), (64, 3))  # 299 -> 149 -> 147 -> 147
        self.mixed_3a = ConcatBranches(
            {"pool": max_pool_3x3_s2(), "conv": conv_chain(64, (96, 3, 2, V))}, 160
        )
        self.mixed_4a = ConcatBranches(
            {
                "branch3x3": conv_chain(160, (64, 1), (96, 3, 1, V)),
                "branch7x7": conv_chain(160, (64, 1), (64, k1), (64, k2), (96, 3, 1, V)),
            },
            192,
        )
        self.mixed_5a = ConcatBranches(
            {"conv": conv_chain(192, (192, 3, 2, V)), "pool": max_pool_3x3_s2()}, 384
        )
        self.out_chs = 384


@dataclass(frozen=True)
class InceptionA(BranchRecord):
    """Figure 4 (35x35): avg pool -> 1x1 96 | 1x1 96 | 1x1 64 -> 3x3 96 | 1x1 64 -> 3x3 96 -> 3x3 96."""

    pool_proj: int = 96
    b1x1: int = 96
    b3x3_reduce: int = 64
    b3x3: int = 96
    dbl_reduce: int = 64
    dbl: int = 96

    def branches(self) -> dict[str, Branch]:
        """The four branches (384 channels), concatenated in this order."""
        return {
            "branch_pool": AvgPoolProj(self.pool_proj),
            "branch1x1": convs((self.b1x1, 1)),
            "branch3x3": convs((self.b3x3_reduce, 1), (self.b3x3, 3)),
            "branch3x3dbl": convs((self.dbl_reduce, 1), (self.dbl, 3), (self.dbl, 3)),
        }


@dataclass(frozen=True)
class ReductionA(BranchRecord):
    """Figure 7, 35 -> 17: max pool 3x3/2 V | 3x3/2 n V | 1x1 k -> 3x3 l -> 3x3/2 m V (k, l, m, n: Table 1)."""

    k: int
    l: int  # noqa: E741 (the paper's name)
    m: int
    n: int

    def branches(self) -> dict[str, Branch]:
        """The pooled input, n and m, concatenated in this order."""
        return {
            "branch_pool": MaxPoolPass(),
            "branch3x3": convs((self.n, 3, 2, V)),
            "branch3x3dbl": convs((self.k, 1), (self.l, 3), (self.m, 3, 2, V)),
        }


@dataclass(frozen=True)
class InceptionB(BranchRecord):
    """Figure 5 (17x17): avg pool -> 1x1 128 | 1x1 384 | 1x1 192 -> 1x7 224 -> 7x1 256 |
    1x1 192 -> 1x7 192 -> 7x1 224 -> 1x7 224 -> 7x1 256."""

    pool_proj: int = 128
    b1x1: int = 384
    b7x7_reduce: int = 192
    b7x7_mid: int = 224
    b7x7: int = 256
    dbl_reduce: int = 192
    dbl_mid: int = 224
    dbl: int = 256
    factor_order: str = "paper"  # "released": the double branch starts with 7x1 (see factor_pair)

    def branches(self) -> dict[str, Branch]:
        """The four branches (1024 channels), concatenated in this order."""
        r, d = self.dbl_reduce, self.dbl_mid
        k1, k2 = factor_pair((1, 7), self.factor_order == "released")
        return {
            "branch_pool": AvgPoolProj(self.pool_proj),
            "branch1x1": convs((self.b1x1, 1)),
            "branch7x7": convs((self.b7x7_reduce, 1), (self.b7x7_mid, (1, 7)), (self.b7x7, (7, 1))),
            "branch7x7dbl": convs((r, 1), (r, k1), (d, k2), (d, k1), (self.dbl, k2)),
        }


@dataclass(frozen=True)
class ReductionB(BranchRecord):
    """Figure 8, 17 -> 8: max pool 3x3/2 V | 1x1 192 -> 3x3/2 192 V | 1x1 256 -> 1x7 256 -> 7x1 320 -> 3x3/2 320 V."""

    b3x3_reduce: int = 192
    b3x3: int = 192
    b7x7_reduce: int = 256
    b7x7_mid: int = 256
    b7x7: int = 320

    def branches(self) -> dict[str, Branch]:
        """The three branches (1536 channels), concatenated in this order."""
        return {
            "branch_pool": MaxPoolPass(),
            "branch3x3": convs((self.b3x3_reduce, 1), (self.b3x3, 3, 2, V)),
            "branch7x7x3": convs(
                (self.b7x7_reduce, 1), (self.b7x7_mid, (1, 7)), (self.b7x7, (7, 1)), (self.b7x7, 3, 2, V)
            ),
        }


@dataclass(frozen=True)
class InceptionC(BranchRecord):
    """Figure 6 (8x8): avg pool -> 1x1 256 | 1x1 256 | 1x1 384 -> [1x3 256, 3x1 256] |
    1x1 384 -> 1x3 448 -> 3x1 512 -> [1x3 256, 3x1 256]."""

    pool_proj: int = 256
    b1x1: int = 256
    b3x3_reduce: int = 384
    b3x3: int = 256
    dbl_reduce: int = 384
    dbl_1x3: int = 448
    dbl_3x1: int = 512
    dbl: int = 256
    factor_order: str = "paper"  # "released": 3x1 (448) before 1x3 (512), see factor_pair

    def branches(self) -> dict[str, Branch]:
        """The four branches (1536 channels), concatenated in this order."""
        k1, k2 = factor_pair((1, 3), self.factor_order == "released", pair_of=3)
        return {
            "branch_pool": AvgPoolProj(self.pool_proj),
            "branch1x1": convs((self.b1x1, 1)),
            "branch3x3": convs((self.b3x3_reduce, 1), split=self.b3x3),
            "branch3x3dbl": convs(
                (self.dbl_reduce, 1), (self.dbl_1x3, k1), (self.dbl_3x1, k2), split=self.dbl
            ),
        }


# Figure 9: (stage name prefix, module, repeats)
V4_LAYOUT = (
    ("inception_a", InceptionA(), 4),
    ("reduction_a", ReductionA(k=192, l=224, m=256, n=384), 1),
    ("inception_b", InceptionB(), 7),
    ("reduction_b", ReductionB(), 1),
    ("inception_c", InceptionC(), 3),
)


# ---------------------------------------------------------------- Inception-ResNets (Figures 10-20)
class ResidualInception(nn.Module):
    """Figure 20: ``act(x + scale * up(concat(branches(x))))``; ``up`` is the 1x1 "Linear" conv, with bias, no BN."""

    def __init__(self, branches: ConcatBranches, out_chs: int, scale: float, activate: bool = True) -> None:
        super().__init__()
        self.branches = branches
        self.up = nn.Conv2d(branches.out_chs, out_chs, kernel_size=1)
        self.scale = scale
        self.act = nn.ReLU(inplace=True) if activate else nn.Identity()
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.scale * self.up(self.branches(x)))


class ResidualRecord(BranchRecord):
    """An Inception-ResNet block's record: its branches, concatenated, then Figure 20's residual unit around them."""

    def build_block(self, in_chs: int, scale: float, activate: bool = True) -> ResidualInception:
        """The block for ``in_chs`` channels (the residual keeps that width)."""
        return ResidualInception(self.build(in_chs), in_chs, scale, activate)


@dataclass(frozen=True)
class ResidualA(ResidualRecord):
    """Inception-ResNet-A (Figure 10 / 16, 35x35): 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3, then 1x1 linear."""

    b1x1: int
    b3x3_reduce: int
    b3x3: int
    dbl_reduce: int
    dbl_mid: int
    dbl: int

    def branches(self) -> dict[str, Branch]:
        """The three branches, concatenated in this order."""
        return {
            "branch1x1": convs((self.b1x1, 1)),
            "branch3x3": convs((self.b3x3_reduce, 1), (self.b3x3, 3)),
            "branch3x3dbl": convs((self.dbl_reduce, 1), (self.dbl_mid, 3), (self.dbl, 3)),
        }


@dataclass(frozen=True)
class ResidualB(ResidualRecord):
    """Inception-ResNet-B (Figure 11 / 17, 17x17): 1x1 | 1x1 -> 1x7 -> 7x1, then 1x1 linear."""

    b1x1: int
    b7x7_reduce: int
    b1x7: int
    b7x1: int

    def branches(self) -> dict[str, Branch]:
        """The two branches, concatenated in this order."""
        return {
            "branch1x1": convs((self.b1x1, 1)),
            "branch7x7": convs((self.b7x7_reduce, 1), (self.b1x7, (1, 7)), (self.b7x1, (7, 1))),
        }


@dataclass(frozen=True)
class ResidualC(ResidualRecord):
    """Inception-ResNet-C (Figure 13 / 19, 8x8): 1x1 | 1x1 -> 1x3 -> 3x1, then 1x1 linear."""

    b1x1: int
    b3x3_reduce: int
    b1x3: int
    b3x1: int

    def branches(self) -> dict[str, Branch]:
        """The two branches, concatenated in this order."""
        return {
            "branch1x1": convs((self.b1x1, 1)),
            "branch3x3": convs((self.b3x3_reduce, 1), (self.b1x3, (1, 3)), (self.b3x1, (3, 1))),
        }


@dataclass(frozen=True)
class ResNetReductionB(BranchRecord):
    """Figure 12 / 18, 17 -> 8: max pool 3x3/2 V | 1x1 -> 3x3/2 V | 1x1 -> 3x3/2 V | 1x1 -> 3x3 -> 3x3/2 V."""

    b3x3a_reduce: int
    b3x3a: int
    b3x3b_reduce: int
    b3x3b: int
    dbl_reduce: int
    dbl_mid: int
    dbl: int

    def branches(self) -> dict[str, Branch]:
        """The four branches, concatenated in this order."""
        return {
            "branch_pool": MaxPoolPass(),
            "branch3x3a": convs((self.b3x3a_reduce, 1), (self.b3x3a, 3, 2, V)),
            "branch3x3b": convs((self.b3x3b_reduce, 1), (self.b3x3b, 3, 2, V)),
            "branch3x3dbl": convs((self.dbl_reduce, 1), (self.dbl_mid, 3), (self.dbl, 3, 2, V)),
        }


@dataclass(frozen=True)
class InceptionResNetSpec:
    """One Inception-ResNet: stem rows, (block, repeats) per grid, the reductions, and the released extras."""

    stem: tuple[tuple[str, ConvRow | str], ...]
    stem_module: ModuleA | None  # v2 as released: a 35x35 Inception-v3-style module after the stem
    block_a: ResidualA
    repeats_a: int
    reduction_a: ReductionA
    block_b: ResidualB
    repeats_b: int
    reduction_b: ResNetReductionB
    block_c: ResidualC
    repeats_c: int
    final_conv: int | None = None  # v2 as released: 1x1 conv before pooling
    last_block_plain: bool = False  # v2 as released: last C block unscaled, no ReLU


# Figure 14 (stem) and Figures 10-13; Reduction-A with Table 1's k, l, m, n
RESNET_V1 = InceptionResNetSpec(
    stem=(
        ("conv_1a", (32, 3, 2, V)),  # 299 -> 149
        ("conv_2a", (32, 3, 1, V)),  # -> 147
        ("conv_2b", (64, 3, 1, None)),  # -> 147
        ("pool_3a", "pool"),  # -> 73
        ("conv_3b", (80, 1, 1, V)),
        ("conv_4a", (192, 3, 1, V)),  # -> 71
        ("conv_4b", (256, 3, 2, V)),  # -> 35x35x256
    ),
    stem_module=None,
    block_a=ResidualA(32, 32, 32, 32, 32, 32),
    repeats_a=5,
    reduction_a=ReductionA(k=192, l=192, m=256, n=384),
    block_b=ResidualB(128, 128, 128, 128),
    repeats_b=10,
    reduction_b=ResNetReductionB(256, 384, 256, 256, 256, 256, 256),
    block_c=ResidualC(192, 192, 192, 192),
    repeats_c=5,
)
# The released v2 (TF-slim inception_resnet_v2): Inception-v3's stem, mixed_5b, blocks as below
RESNET_V2 = InceptionResNetSpec(
    stem=(
        ("conv_1a", (32, 3, 2, V)),
        ("conv_2a", (32, 3, 1, V)),
        ("conv_2b", (64, 3, 1, None)),
        ("pool_3a", "pool"),
        ("conv_3b", (80, 1, 1, V)),
        ("conv_4a", (192, 3, 1, V)),
        ("pool_5a", "pool"),  # -> 35x35x192
    ),
    stem_module=ModuleA(pool_proj=64, b1x1=96, b5x5_reduce=48, b5x5=64, dbl_reduce=64, dbl=96),  # -> 320
    block_a=ResidualA(32, 32, 32, 32, 48, 64),
    repeats_a=10,
    reduction_a=ReductionA(k=256, l=256, m=384, n=384),
    block_b=ResidualB(192, 128, 160, 192),
    repeats_b=20,
    reduction_b=ResNetReductionB(256, 384, 256, 288, 256, 288, 320),
    block_c=ResidualC(192, 192, 224, 256),
    repeats_c=10,
    final_conv=1536,
    last_block_plain=True,
)
DEFAULT_RESIDUAL_SCALE = (0.17, 0.10, 0.20)  # A, B, C blocks of the released v2 (section 3.3: 0.1 to 0.3)


def _residual_scales(residual_scale: float | Sequence[float]) -> tuple[float, float, float]:
    """One factor per block type (A, B, C); a single number applies to all three."""
    scales = (residual_scale,) * 3 if isinstance(residual_scale, (int, float)) else tuple(residual_scale)
    if len(scales) != 3 or not all(isinstance(s, (int, float)) and 0 < s <= 1 for s in scales):
        raise UsageError(
            f"residual_scale must be a number in (0, 1] or three of them (A, B, C blocks), got {residual_scale!r}; "
            "the paper (section 3.3) uses 0.1 to 0.3"
        )
    return scales


def inception_resnet_stages(
    spec: InceptionResNetSpec, in_chans: int, scales: Sequence[float], pool_last: bool = False
) -> tuple[list, int]:
    """The named stages of an Inception-ResNet and its final width (``pool_last``: the reductions' max-pool branch last)."""
    stages, in_chs = build_stem(in_chans, spec.stem)
    if spec.stem_module is not None:
        stages.append(("mixed_5b", spec.stem_module.build(in_chs)))
        in_chs = spec.stem_module.out_chs(in_chs)
    groups = (
        ("block_a", spec.block_a, spec.repeats_a, spec.reduction_a, "reduction_a"),
        ("block_b", spec.block_b, spec.repeats_b, spec.reduction_b, "reduction_b"),
        ("block_c", spec.block_c, spec.repeats_c, None, None),
    )
    for (prefix, block, repeats, reduction, reduction_name), scale in zip(groups, scales):
        for i in range(1, repeats + 1):
            plain = spec.last_block_plain and reduction is None and i == repeats
            stages.append(
                (f"{prefix}{i}", block.build_block(in_chs, 1.0 if plain else scale, activate=not plain))
            )
        if reduction is not None:
            stages.append((reduction_name, reduction.build(in_chs, pool_last=pool_last)))
            in_chs = reduction.out_chs(in_chs)
    if spec.final_conv:
        stages.append(("conv_7b", bn_conv(in_chs, spec.final_conv, 1)))
        in_chs = spec.final_conv
    return stages, in_chs


def init_inception_v4_weights(model: nn.Module) -> None:
    """He (fan-in, normal) for convolutions, Glorot uniform for linear layers, zero biases, BN at (1, 0)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and module.bias is not None:
            nn.init.zeros_(module.bias)


def _register(name: str, num_params: int, params_source: str):
    return register_model(
        name,
        family="inception-v4",
        paper=INCEPTION_V4_PAPER,
        input_size=(3, 299, 299),
        num_params=num_params,
        params_source=params_source,
    )


@_register(
    "inception-v4",
    42_679_816,
    "timm inception_v4; derived by hand: see docs/models/inception_v4.md",
)
def inception_v4(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    branch_order: str = "paper",
    factor_order: str = "paper",
) -> InceptionNet:
    """Inception-v4 (Figure 9); ``drop_rate`` 0.2 is the figure's "keep 0.8".

    ``branch_order="released"`` concatenates the pooling branch last and ``factor_order="released"``
    swaps the 7x1/1x7 and 1x3/3x1 pairs where the figures and the released checkpoints differ; both
    together compute timm's ``inception_v4`` (see docs/models/inception_v4.md).
    """
    check_choice("branch_order", branch_order, ORDERS)
    check_choice("factor_order", factor_order, ORDERS)
    stem = InceptionV4Stem(in_chans, factor_order)
    stages: list[tuple[str, nn.Module]] = [("stem", stem)]
    in_chs = stem.out_chs
    for prefix, module, repeats in V4_LAYOUT:
        if isinstance(module, InceptionB | InceptionC):
            module = replace(module, factor_order=factor_order)
        for i in range(1, repeats + 1):
            name = f"{prefix}{i}" if repeats > 1 else prefix
            stages.append((name, module.build(in_chs, pool_last=branch_order == "released")))
        in_chs = module.out_chs(in_chs)
    model = InceptionNet(stages, in_chs, num_classes, drop_rate)
    init_inception_v4_weights(model)
    model.classifier_init = init_inception_v4_weights
    return model


def _inception_resnet(
    spec: InceptionResNetSpec,
    num_classes: int,
    in_chans: int,
    drop_rate: float,
    residual_scale,
    branch_order: str = "paper",
) -> InceptionNet:
    check_choice("branch_order", branch_order, ORDERS)
    scales = _residual_scales(residual_scale)
    stages, in_chs = inception_resnet_stages(spec, in_chans, scales, pool_last=branch_order == "released")
    model = InceptionNet(stages, in_chs, num_classes, drop_rate)
    init_inception_v4_weights(model)
    model.classifier_init = init_inception_v4_weights
    return model


@_register(
    "inception-resnet-v1",
    22_756_328,
    "derived by hand from the paper's Figures 10-14: see docs/models/inception_v4.md",
)
def inception_resnet_v1(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    residual_scale: float | tuple[float, float, float] = DEFAULT_RESIDUAL_SCALE,
) -> InceptionNet:
    """Inception-ResNet-v1 as the paper's figures draw it (1792 features)."""
    return _inception_resnet(RESNET_V1, num_classes, in_chans, drop_rate, residual_scale)


@_register(
    "inception-resnet-v2",
    55_843_464,
    "timm inception_resnet_v2 (TF-slim release); derived by hand: see docs/models/inception_v4.md",
)
def inception_resnet_v2(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    residual_scale: float | tuple[float, float, float] = DEFAULT_RESIDUAL_SCALE,
    branch_order: str = "paper",
) -> InceptionNet:
    """Inception-ResNet-v2 as released (TF-slim); see the module docstring for the paper's figures.

    ``branch_order="released"`` concatenates Reduction-A/B's max-pool branch last, as the released
    checkpoints and timm's ``inception_resnet_v2`` do (the figures draw it first). Every tensor keeps
    its shape either way, so only the outputs tell the two apart.
    """
    return _inception_resnet(RESNET_V2, num_classes, in_chans, drop_rate, residual_scale, branch_order)
