"""GoogLeNet (Szegedy et al. 2015, "Going deeper with convolutions"), Table 1 row by row.

* Stem (Table 1 rows 1-4 and Figure 3): conv 7x7/2 (64), max pool 3x3/2, LocalRespNorm,
  conv 1x1 (64, the "#3x3 reduce" column), conv 3x3 (192), LocalRespNorm, max pool 3x3/2.
* Inception modules 3a ... 5b (Figure 2b): four branches 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 |
  3x3 max pool -> 1x1, their widths straight from Table 1 (:data:`GOOGLENET_TABLE1`); a 3x3/2 max
  pool after 3b and after 4e. Every convolution, reductions and projections included, has a ReLU.
* Head: 7x7 average pool (here adaptive, so any input size works), dropout 40%, linear.
* Auxiliary classifiers (section 5) on the outputs of 4a and 4d: 5x5/3 average pool, 1x1 conv 128
  + ReLU, FC 1024 + ReLU, dropout 70%, linear; their losses are added with weight 0.3. They exist
  only with ``aux_logits=True`` and are returned by :meth:`InceptionNet.forward_aux`, in training
  and evaluation alike. The FC input follows the input size (4x4x128 = 2048 at 224).

Pooling rounds up (ceil mode), as in the reference Caffe model, so the grid is 112-56-28-14-7 at 224.
The paper has no batch norm; the named deviations are ``batch_norm=True`` (BN after every
convolution, biases dropped), ``lrn=False`` (no LocalRespNorm) and ``branch5x5_kernel=3``
(torchvision's 3x3 in the "5x5" branch). 6,998,552 parameters at 1000 classes without the auxiliary
heads (derivation in docs/models/googlenet.md). Three more make the function torchvision's, not only
its count: ``bn_eps=1e-3``, ``pool4_kernel=2`` (its 2x2/2 max pool after 4e) and ``transform_input=True``
(its published weights expect inputs in [-1, 1]; :class:`~cnnlab.models.layers.RenormalizeInput`).

Initialisation: the paper does not describe one. We follow the reference Caffe model
(bvlc_googlenet): "xavier" filler, i.e. uniform in +-sqrt(3 / fan_in), for every convolution and
linear layer, convolution biases 0.2, linear biases 0 (:func:`init_googlenet_weights`).

What every Inception family of cnnlab shares (:class:`ConcatBranches`, the filter concatenation;
:class:`InceptionNet`, named stages with a global-pool head and auxiliary heads; the branch records)
lives in :mod:`cnnlab.models.layers`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.layers import (
    ConcatBranches,
    ConvNormAct,
    InceptionNet,
    RenormalizeInput,
    SizedFrom,
    check_choice,
    check_transform_input,
    pair,
)
from cnnlab.models.registry import register_model

GOOGLENET_PAPER = "Szegedy et al. 2015, Going deeper with convolutions"


@dataclass(frozen=True)
class InceptionSpec:
    """One inception row of Table 1: the width of each branch of Figure 2b."""

    b1x1: int
    b3x3_reduce: int
    b3x3: int
    b5x5_reduce: int
    b5x5: int
    pool_proj: int

    @property
    def out_chs(self) -> int:
        """Channels after the filter concatenation (Table 1's "depth" of the output size)."""
        return self.b1x1 + self.b3x3 + self.b5x5 + self.pool_proj


# Table 1, columns #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
GOOGLENET_TABLE1: dict[str, InceptionSpec] = {
    "3a": InceptionSpec(64, 96, 128, 16, 32, 32),
    "3b": InceptionSpec(128, 128, 192, 32, 96, 64),
    "4a": InceptionSpec(192, 96, 208, 16, 48, 64),
    "4b": InceptionSpec(160, 112, 224, 24, 64, 64),
    "4c": InceptionSpec(128, 128, 256, 24, 64, 64),
    "4d": InceptionSpec(112, 144, 288, 32, 64, 64),
    "4e": InceptionSpec(256, 160, 320, 32, 128, 128),
    "5a": InceptionSpec(256, 160, 320, 32, 128, 128),
    "5b": InceptionSpec(384, 192, 384, 48, 128, 128),
}
# Table 1's 3x3/2 max pools between the inception groups: (after module, pool name)
GOOGLENET_POOLS = {"3b": "pool3", "4e": "pool4"}
# Section 5: auxiliary classifiers on top of 4a and 4d, loss weight 0.3 each
GOOGLENET_AUX_TAPS = ("inception4a", "inception4d")
GOOGLENET_AUX_WEIGHT = 0.3


def _max_pool_3x3_s2(kernel: int = 3) -> nn.MaxPool2d:
    # ceil mode as Caffe rounds: 112 -> 56 -> 28 (Table 1's output sizes)
    return nn.MaxPool2d(kernel, stride=2, ceil_mode=True)


def _lrn() -> nn.LocalResponseNorm:
    # size 5, alpha 1e-4, beta 0.75: the reference Caffe model (the paper gives no values)
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)


class GoogLeNetInception(ConcatBranches):
    """Figure 2b: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, every convolution followed by ReLU."""

    def __init__(
        self,
        in_chs: int,
        spec: InceptionSpec,
        branch5x5_kernel: int = 5,
        batch_norm: bool = False,
        bn_eps: float = 1e-5,
    ):
        conv = partial(ConvNormAct, norm=batch_norm, bn_eps=bn_eps)
        branches = {
            "branch1x1": conv(in_chs, spec.b1x1, 1),
            "branch3x3": nn.Sequential(
                OrderedDict(
                    reduce=conv(in_chs, spec.b3x3_reduce, 1), conv=conv(spec.b3x3_reduce, spec.b3x3, 3)
                )
            ),
            "branch5x5": nn.Sequential(
                OrderedDict(
                    reduce=conv(in_chs, spec.b5x5_reduce, 1),
                    conv=conv(spec.b5x5_reduce, spec.b5x5, branch5x5_kernel),
                )
            ),
            "branch_pool": nn.Sequential(
                OrderedDict(
                    pool=nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                    proj=conv(in_chs, spec.pool_proj, 1),
                )
            ),
        }
        super().__init__(branches, spec.out_chs)
        self.spec = spec


class GoogLeNetAux(nn.Module):
    """Section 5's auxiliary classifier; ``grid`` is the pooled map's (H, W), 4x4 at 224.

    ``sized_from`` records the input size its fc1 was sized for (set by :func:`googlenet`), checked by
    :meth:`InceptionNet.forward_aux` before the head runs.
    """

    sized_from: SizedFrom | None = None

    def __init__(
        self,
        in_chs: int,
        grid: tuple[int, int],
        num_classes: int,
        batch_norm: bool = False,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3)
        self.conv = ConvNormAct(in_chs, 128, 1, norm=batch_norm, bn_eps=bn_eps)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(128 * grid[0] * grid[1], 1024)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.7)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.conv(self.pool(x)))
        return self.fc2(self.drop(self.act(self.fc1(x))))


def init_googlenet_weights(model: nn.Module, conv_bias: float = 0.2) -> None:
    """Caffe's "xavier" filler (uniform, +-sqrt(3 / fan_in)) as in bvlc_googlenet; conv biases ``conv_bias``.

    Linear biases start at 0; batch norm (only with ``batch_norm=True``) at weight 1, bias 0.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            bound = math.sqrt(3.0 / fan_in)
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.constant_(module.bias, conv_bias if isinstance(module, nn.Conv2d) else 0.0)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


@register_model(
    "googlenet",
    family="googlenet",
    paper=GOOGLENET_PAPER,
    input_size=(3, 224, 224),
    num_params=6_998_552,
    params_source="paper Table 1 widths, 5x5 branch, biases; derived by hand: see docs/models/googlenet.md",
    aux_loss_weights=(GOOGLENET_AUX_WEIGHT, GOOGLENET_AUX_WEIGHT),
)
def googlenet(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.4,
    img_size: int | tuple[int, int] = 224,
    aux_logits: bool = False,
    branch5x5_kernel: int = 5,
    batch_norm: bool = False,
    lrn: bool = True,
    bn_eps: float = 1e-5,
    pool4_kernel: int = 3,
    transform_input: bool = False,
) -> InceptionNet:
    """GoogLeNet as in Table 1; ``aux_logits=True`` adds section 5's auxiliary classifiers on 4a and 4d.

    torchvision's variant is ``branch5x5_kernel=3, batch_norm=True, lrn=False, bn_eps=1e-3,
    pool4_kernel=2`` (and ``transform_input=True`` for its published weights): see docs/models/googlenet.md.
    """
    check_choice("branch5x5_kernel", branch5x5_kernel, (5, 3))
    check_choice("pool4_kernel", pool4_kernel, (3, 2))
    check_transform_input(transform_input, in_chans)
    conv = partial(ConvNormAct, norm=batch_norm, bn_eps=bn_eps)
    norm = _lrn if lrn else nn.Identity
    stages: list[tuple[str, nn.Module]] = [("transform_input", RenormalizeInput())] if transform_input else []
    stages += [
        ("conv1", conv(in_chans, 64, 7, stride=2)),
        ("pool1", _max_pool_3x3_s2()),
        ("lrn1", norm()),
        ("conv2_reduce", conv(64, 64, 1)),
        ("conv2", conv(64, 192, 3)),
        ("lrn2", norm()),
        ("pool2", _max_pool_3x3_s2()),
    ]
    in_chs = 192
    for row, spec in GOOGLENET_TABLE1.items():
        stages.append(
            (f"inception{row}", GoogLeNetInception(in_chs, spec, branch5x5_kernel, batch_norm, bn_eps))
        )
        in_chs = spec.out_chs
        if row in GOOGLENET_POOLS:
            pool = GOOGLENET_POOLS[row]
            stages.append((pool, _max_pool_3x3_s2(pool4_kernel if pool == "pool4" else 3)))
    model = InceptionNet(stages, in_chs, num_classes, drop_rate)
    model.img_size = pair(img_size)
    model.stage_shape(model.stage_names[-1], in_chans, img_size, what="googlenet")  # too small: UsageError
    if aux_logits:
        for tap in GOOGLENET_AUX_TAPS:
            c, h, w = model.stage_shape(
                tap,
                in_chans,
                img_size,
                then=partial(F.avg_pool2d, kernel_size=5, stride=3),
                what="googlenet's auxiliary classifiers",
            )
            head = GoogLeNetAux(c, (h, w), num_classes, batch_norm, bn_eps)
            head.sized_from = SizedFrom(
                model.img_size,
                (c, h, w),
                f"its auxiliary classifier on {tap}",
                window=(head.pool.kernel_size, head.pool.stride),
                name="googlenet",
            )
            model.aux_heads[tap] = head
    model.aux_loss_weights = (GOOGLENET_AUX_WEIGHT,) * len(model.aux_heads)
    init_googlenet_weights(model)
    model.classifier_init = init_googlenet_weights
    return model
