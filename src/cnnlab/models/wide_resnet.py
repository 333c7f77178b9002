"""Wide Residual Networks for CIFAR: Zagoruyko & Komodakis 2016, "Wide Residual Networks", Table 1.

WRN-d-k (Table 1): a 3x3 convolution of 16 filters, then three groups of N pre-activation basic blocks
(BN-ReLU-conv3x3-BN-ReLU-conv3x3, He et al. 2016b Fig. 4e) of widths 16k, 32k and 64k (groups 2 and 3
start with stride 2), a final BN-ReLU, global average pooling and the classifier; d = 6N + 4. Where the
shape changes, the shortcut is a 1x1 convolution reading the block's pre-activated input (the authors'
code); all convolutions are bias-free. ``wrn-28-10`` has 36,479,194 parameters (paper: 36.5M) and
``wrn-40-4`` 8,949,210 (8.9M); every count is derived in docs/models/resnet.md.

Named options: ``block_dropout`` (Sec. 2.4, dropout between the two convolutions of each block, after the
ReLU; the paper uses 0.3 on CIFAR, off by default here as in its Table 4 baselines), ``drop_path_rate``
(stochastic depth). Any valid d and k by name (``create_model("wrn-34-2")``) through a registry name
pattern, or :func:`wide_resnet_cifar` directly.

Initialisation: He et al. 2015 (Kaiming normal, fan_out), BN weight 1 / bias 0 (the authors' code).
"""

from __future__ import annotations

import re

from cnnlab.errors import UsageError
from cnnlab.models.registry import ModelInfo, make_model_info, register_model, register_model_pattern
from cnnlab.models.residual import ResNet, Stage
from cnnlab.models.resnet import WRN_PAPER

#: Table 1: group widths as multiples of k (conv2, conv3, conv4) and the stride of each group's first block
WRN_WIDTHS = (16, 32, 64)
WRN_STRIDES = (1, 2, 2)
WRN_STEM = 16


def wrn_blocks_per_group(depth: int, widen_factor: int) -> int:
    """N such that ``depth = 6N + 4``; a UsageError naming the rule otherwise (``wrn-27-10``)."""
    if isinstance(widen_factor, bool) or not isinstance(widen_factor, int) or widen_factor < 1:
        raise UsageError(
            f"cannot build wrn-{depth}-{widen_factor}: the widening factor k must be a whole number >= 1"
        )
    if depth < 10 or (depth - 4) % 6:
        raise UsageError(
            f"cannot build wrn-{depth}-{widen_factor}: depth must be 6n+4: 10, 16, 22, 28, 40, 52, ..."
        )
    return (depth - 4) // 6


def wide_resnet_cifar(
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    depth: int = 28,
    widen_factor: int = 10,
    block_dropout: float = 0.0,
    drop_path_rate: float = 0.0,
    drop_path_mode: str = "original",
) -> ResNet:
    """WRN-``depth``-``widen_factor`` of Zagoruyko & Komodakis 2016 Table 1 (pre-activation basic blocks)."""
    n = wrn_blocks_per_group(depth, widen_factor)
    if not 0.0 <= block_dropout < 1.0:
        raise UsageError(f"block_dropout must be in [0, 1) (the paper uses 0.3), got {block_dropout}")
    stages = [Stage(w * widen_factor, n, s) for w, s in zip(WRN_WIDTHS, WRN_STRIDES)]
    return ResNet(
        stages,
        block="basic",
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stem_width=WRN_STEM,
        stem_kernel=3,
        stem_stride=1,
        stem_pool=False,
        stem_norm_act=False,  # every block pre-activates its own input, the first one included
        activation="full_preact",
        shortcut="B",
        block_dropout=block_dropout,
        drop_path_rate=drop_path_rate,
        drop_path_mode=drop_path_mode,
    )


def wide_resnet_params(depth: int, widen_factor: int, num_classes: int = 10, in_chans: int = 3) -> int:
    """Parameters of WRN-d-k by the closed form of docs/models/resnet.md (independent of the module code)."""
    n, k = wrn_blocks_per_group(depth, widen_factor), widen_factor
    total, c_in = 9 * in_chans * WRN_STEM, WRN_STEM
    for width in (w * k for w in WRN_WIDTHS):
        # first block: BN(c_in), 3x3 c_in->w, BN(w), 3x3 w->w, 1x1 projection if the width changes
        total += (
            2 * c_in
            + 9 * c_in * width
            + 2 * width
            + 9 * width * width
            + (c_in * width if c_in != width else 0)
        )
        # every stride-2 group changes width (16k -> 32k -> 64k), so only group 1 with k = 1 has no projection
        total += (n - 1) * (4 * width + 18 * width * width)
        c_in = width
    return total + 2 * c_in + c_in * num_classes + num_classes


#: (d, k) -> parameters at 10 classes, derived in docs/models/resnet.md; paper Table 4/6 figure in millions
WIDE_RESNETS = {
    (16, 4): (2_748_890, 2.7),
    (16, 8): (10_961_370, 11.0),
    (22, 8): (17_158_106, 17.2),
    (28, 10): (36_479_194, 36.5),
    (40, 1): (563_930, 0.6),
    (40, 2): (2_243_546, 2.2),
    (40, 4): (8_949_210, 8.9),
    (40, 10): (55_841_754, None),
}
WRN_INFO = dict(family="wide-resnet", paper=WRN_PAPER, input_size=(3, 32, 32), num_classes=10)

for (_depth, _k), (_params, _millions) in WIDE_RESNETS.items():
    register_model(
        f"wrn-{_depth}-{_k}",
        **WRN_INFO,
        num_params=_params,
        params_source="derived by hand: see docs/models/resnet.md"
        + (f" (paper: {_millions}M)" if _millions else " (not in the paper's tables)"),
        description=f"Wide ResNet WRN-{_depth}-{_k} (N={(_depth - 4) // 6} blocks per group, widths x{_k})",
        depth=_depth,
        widen_factor=_k,
    )(wide_resnet_cifar)


@register_model_pattern(r"wrn-(\d+)-(\d+)", "wrn-34-2")
def _resolve_wrn_name(name: str, match: re.Match[str]) -> ModelInfo:
    """Metadata of ``wrn-D-K`` for any D = 6n+4 and K >= 1 (a UsageError naming the rule otherwise)."""
    depth, k = int(match.group(1)), int(match.group(2))
    return make_model_info(
        name,
        wide_resnet_cifar,
        **WRN_INFO,
        num_params=wide_resnet_params(depth, k),
        params_source="closed form of docs/models/resnet.md (wide_resnet_params)",
        description=f"Wide ResNet WRN-{depth}-{k}",
        depth=depth,
        widen_factor=k,
    )
