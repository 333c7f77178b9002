"""Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision").

Table 1 of the paper, with the exact widths of the released network (TF-slim ``inception_v3``, which
torchvision's ``inception_v3`` reproduces): the paper's table leaves the widths inside each module
implicit and its stem rows disagree with the released model, so the reference implementation is
the widely used definition. 299x299 input.

* Stem: conv 3x3/2 (32, valid), conv 3x3 (32, valid), conv 3x3 (64, padded), max pool 3x3/2,
  conv 1x1 (80), conv 3x3 (192, valid), max pool 3x3/2 -> 35x35x192.
* 3 x module A (Figure 5, 35x35), :class:`ModuleA`. As released, the module keeps one 5x5 branch next
  to the two-3x3 branch that factorises it (section 3.1).
* Grid reduction 35 -> 17 (Figure 10), :class:`GridReductionA`.
* 4 x module B (Figure 6, n = 7: 1x7 / 7x1 factorisation, section 3.2), :class:`ModuleB`.
* Grid reduction 17 -> 8, :class:`GridReductionB`.
* 2 x module C (Figure 7: expanded filter bank, 1x3 and 3x1 in parallel), :class:`ModuleC`.
* Head: global average pool, dropout, linear (2048 -> classes).

Batch norm (eps 0.001, as the reference) follows every convolution, which has no bias. The pooling
branches average "SAME" windows over the pixels inside the map, as TensorFlow; torchvision's variant
counts the padding (``count_include_pad=True``) and, for its published weights, renormalises the input
(``transform_input=True``).
23,834,568 parameters at 1000 classes without the auxiliary head (the torchvision figure).

Auxiliary head (section 4, Figure 8; ``aux_logits=True``): on the last 17x17 module (``mixed_6e``),
5x5/3 average pool, conv 1x1 (128), conv 5x5 (768, valid: a fully connected layer over the 5x5 grid),
BN after both (the "BN-auxiliary" of section 4 and Table 3), then linear to the classes. Its
loss weight is 0.4: the paper gives none; 0.4 is the reference training code's (TF-slim
``train_image_classifier.py``, ``weights=0.4`` on ``AuxLogits``). It needs a 5x5 grid after the
pooling, so ``img_size`` must be large enough (checked at construction).

Initialisation (:func:`init_inception_v3_weights`): the paper does not describe it; the reference
(TF-slim arg scope, reproduced by torchvision) draws every weight from a truncated normal with
std 0.1, the auxiliary 5x5 convolution with std 0.01 and the classifiers with std 0.001; BN starts
at weight 1, bias 0.

Also home of :func:`conv_chain` and :func:`bn_conv`, the BN-conv vocabulary of Inception-v4 and the
Inception-ResNets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.layers import (
    AvgPoolProj,
    Branch,
    BranchRecord,
    ConvRow,
    InceptionNet,
    MaxPoolPass,
    RenormalizeInput,
    bn_conv,
    build_stem,
    check_transform_input,
    convs,
    pair,
)
from cnnlab.models.registry import register_model

INCEPTION_V3_PAPER = "Szegedy et al. 2016, Rethinking the Inception Architecture for Computer Vision"
AUX_WEIGHT = 0.4


@dataclass(frozen=True)
class ModuleA(BranchRecord):
    """Figure 5 (35x35) as released: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    pool_proj: int
    b1x1: int = 64
    b5x5_reduce: int = 48
    b5x5: int = 64
    dbl_reduce: int = 64
    dbl: int = 96
    count_include_pad: bool = False  # the pooling branch's border windows (see avg_pool_proj)

    def branches(self) -> dict[str, Branch]:
        """The four branches, concatenated in this order."""
        return {
            "branch1x1": convs((self.b1x1, 1)),
            "branch5x5": convs((self.b5x5_reduce, 1), (self.b5x5, 5)),
            "branch3x3dbl": convs((self.dbl_reduce, 1), (self.dbl, 3), (self.dbl, 3)),
            "branch_pool": AvgPoolProj(self.pool_proj, self.count_include_pad),
        }


@dataclass(frozen=True)
class GridReductionA(BranchRecord):
    """Figure 10, 35 -> 17: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2 (the input passes through)."""

    b3x3: int = 384
    dbl_reduce: int = 64
    dbl: int = 96

    def branches(self) -> dict[str, Branch]:
        """The three branches, concatenated in this order."""
        return {
            "branch3x3": convs((self.b3x3, 3, 2, 0)),
            "branch3x3dbl": convs((self.dbl_reduce, 1), (self.dbl, 3), (self.dbl, 3, 2, 0)),
            "branch_pool": MaxPoolPass(),
        }


@dataclass(frozen=True)
class ModuleB(BranchRecord):
    """Figure 6 with n = 7 (17x17): 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | avg pool -> 1x1."""

    b7x7_reduce: int  # the width inside both 7x7 branches (128, 160, 160, 192 in the four modules)
    b1x1: int = 192
    b7x7: int = 192
    pool_proj: int = 192
    count_include_pad: bool = False

    def branches(self) -> dict[str, Branch]:
        """The four branches (768 channels), concatenated in this order."""
        mid, out = self.b7x7_reduce, self.b7x7
        return {
            "branch1x1": convs((self.b1x1, 1)),
            "branch7x7": convs((mid, 1), (mid, (1, 7)), (out, (7, 1))),
            "branch7x7dbl": convs((mid, 1), (mid, (7, 1)), (mid, (1, 7)), (mid, (7, 1)), (out, (1, 7))),
            "branch_pool": AvgPoolProj(self.pool_proj, self.count_include_pad),
        }


@dataclass(frozen=True)
class GridReductionB(BranchRecord):
    """17 -> 8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool 3x3/2."""

    b3x3_reduce: int = 192
    b3x3: int = 320
    b7x7x3: int = 192

    def branches(self) -> dict[str, Branch]:
        """The three branches (1280 channels), concatenated in this order."""
        w = self.b7x7x3
        return {
            "branch3x3": convs((self.b3x3_reduce, 1), (self.b3x3, 3, 2, 0)),
            "branch7x7x3": convs((w, 1), (w, (1, 7)), (w, (7, 1)), (w, 3, 2, 0)),
            "branch_pool": MaxPoolPass(),
        }


@dataclass(frozen=True)
class ModuleC(BranchRecord):
    """Figure 7 (8x8): 1x1 | 1x1 -> [1x3, 3x1] | 1x1 -> 3x3 -> [1x3, 3x1] | avg pool -> 1x1."""

    b1x1: int = 320
    b3x3_reduce: int = 384
    b3x3: int = 384
    dbl_reduce: int = 448
    dbl: int = 384
    pool_proj: int = 192
    count_include_pad: bool = False

    def branches(self) -> dict[str, Branch]:
        """The four branches (2048 channels), concatenated in this order."""
        return {
            "branch1x1": convs((self.b1x1, 1)),
            "branch3x3": convs((self.b3x3_reduce, 1), split=self.b3x3),
            "branch3x3dbl": convs((self.dbl_reduce, 1), (self.dbl, 3), split=self.dbl),
            "branch_pool": AvgPoolProj(self.pool_proj, self.count_include_pad),
        }


# Table 1 (as released): stem rows, named as in the reference, (out_chs, kernel, stride, padding) or "pool"
V3_STEM: tuple[tuple[str, ConvRow | str], ...] = (
    ("conv_1a", (32, 3, 2, 0)),  # 299 -> 149
    ("conv_2a", (32, 3, 1, 0)),  # -> 147
    ("conv_2b", (64, 3, 1, None)),  # padded -> 147
    ("pool_3a", "pool"),  # -> 73
    ("conv_3b", (80, 1, 1, 0)),
    ("conv_4a", (192, 3, 1, 0)),  # -> 71
    ("pool_5a", "pool"),  # -> 35
)
V3_MODULES = (
    ("mixed_5b", ModuleA(pool_proj=32)),
    ("mixed_5c", ModuleA(pool_proj=64)),
    ("mixed_5d", ModuleA(pool_proj=64)),
    ("mixed_6a", GridReductionA()),
    ("mixed_6b", ModuleB(b7x7_reduce=128)),
    ("mixed_6c", ModuleB(b7x7_reduce=160)),
    ("mixed_6d", ModuleB(b7x7_reduce=160)),
    ("mixed_6e", ModuleB(b7x7_reduce=192)),
    ("mixed_7a", GridReductionB()),
    ("mixed_7b", ModuleC()),
    ("mixed_7c", ModuleC()),
)
V3_AUX_TAP = "mixed_6e"


class InceptionV3Aux(nn.Module):
    """Figure 8's auxiliary classifier with BN: 5x5/3 avg pool, 1x1 conv 128, 5x5 conv 768, linear."""

    def __init__(self, in_chs: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3)
        self.conv0 = bn_conv(in_chs, 128, 1)
        self.conv1 = bn_conv(128, 768, 5, padding=0)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(self.pool(x)))
        return self.fc(self.flatten(F.adaptive_avg_pool2d(x, 1)))


def truncated_normal_(weight: torch.Tensor, std: float) -> torch.Tensor:
    """N(0, std) truncated to +-2 std, by inverse-CDF sampling (one pass; torch's rejection sampler is slower)."""
    cdf_low = 0.5 * (1.0 + math.erf(-2.0 / math.sqrt(2.0)))  # Phi(-2)
    with torch.no_grad():
        weight.uniform_(2 * cdf_low - 1, 1 - 2 * cdf_low).erfinv_().mul_(std * math.sqrt(2.0))
        return weight.clamp_(-2 * std, 2 * std)


def init_inception_v3_weights(model: nn.Module) -> None:
    """Truncated normal (within 2 std) with std 0.1; 0.01 for the auxiliary 5x5 conv, 0.001 for classifiers."""
    aux_convs = {id(m.conv1.conv) for m in model.modules() if isinstance(m, InceptionV3Aux)}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            std = 0.001 if isinstance(module, nn.Linear) else 0.01 if id(module) in aux_convs else 0.1
            truncated_normal_(module.weight, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


@register_model(
    "inception-v3",
    family="inception-v3",
    paper=INCEPTION_V3_PAPER,
    input_size=(3, 299, 299),
    num_params=23_834_568,
    params_source="torchvision docs (27,161,264 with the aux head); derived by hand: see docs/models/inception_v3.md",
    aux_loss_weights=(AUX_WEIGHT,),
)
def inception_v3(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    img_size: int | tuple[int, int] = 299,
    aux_logits: bool = False,
    count_include_pad: bool = False,
    transform_input: bool = False,
) -> InceptionNet:
    """Inception-v3 as released; ``drop_rate`` 0.2 is the reference's keep probability 0.8.

    torchvision's variant: ``count_include_pad=True`` (its pooling branches divide border windows by
    9) and, for its published weights, ``transform_input=True``; see docs/models/inception_v3.md.
    """
    check_transform_input(transform_input, in_chans)
    stages, in_chs = build_stem(in_chans, V3_STEM)
    if transform_input:
        stages.insert(0, ("transform_input", RenormalizeInput()))
    for name, spec in V3_MODULES:
        if count_include_pad and isinstance(spec, ModuleA | ModuleB | ModuleC):
            spec = replace(spec, count_include_pad=True)
        stages.append((name, spec.build(in_chs)))
        in_chs = spec.out_chs(in_chs)
    model = InceptionNet(stages, in_chs, num_classes, drop_rate)
    model.img_size = pair(img_size)
    model.stage_shape(model.stage_names[-1], in_chans, img_size, what="inception-v3")
    if aux_logits:
        model.aux_heads[V3_AUX_TAP] = InceptionV3Aux(model._modules[V3_AUX_TAP].out_chs, num_classes)
        # the 5x5 valid conv needs a 5x5 grid after pooling: check the size now, with a clear message
        head = model.aux_heads[V3_AUX_TAP]
        model.stage_shape(V3_AUX_TAP, in_chans, img_size, then=head, what="inception-v3's auxiliary head")
    model.aux_loss_weights = (AUX_WEIGHT,) * len(model.aux_heads)
    init_inception_v3_weights(model)
    model.classifier_init = init_inception_v3_weights
    return model


__all__ = [
    "GridReductionA",
    "GridReductionB",
    "InceptionV3Aux",
    "ModuleA",
    "ModuleB",
    "ModuleC",
    "inception_v3",
]
