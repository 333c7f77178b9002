"""CIFAR-10 ResNets and their plain twins: He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2.

The network of Sec. 4.2 (its table of output map size 32/16/8 and filters 16/32/64): a 3x3 convolution
of 16 filters, then three stages of n units of two 3x3 convolutions with 16, 32 and 64 filters (the first
convolution of stages 2 and 3 has stride 2), global average pooling and a 10-way FC layer: 6n + 2
weighted layers. Shortcuts are identities everywhere; where the shape changes, option A (zero-padded
identity on the subsampled map) so residual and plain nets have exactly the same parameters.
Registered: ``resnet20/32/44/56/110/1202-cifar`` and ``plain20/32/44/56/110-cifar``; any valid depth by
name (``resnet74-cifar``, ``plain8-cifar``) through a registry name pattern, or with
:func:`cifar_resnet` directly.

Named deviations (options of every name here): ``block="bottleneck"`` (the 9n + 2 bottleneck nets of
He et al. 2016b, e.g. ResNet-164), ``shortcut="B"``/``"C"`` (projection shortcuts), ``activation`` and
``shortcut_variant`` (He et al. 2016b Fig. 4 / Fig. 2, see ``preact_resnet.py``), ``drop_path_rate``
(stochastic depth, Huang et al. 2016, who used these very nets).

Initialisation: He et al. 2015 (Kaiming normal, fan_out) and BN weight 1 / bias 0 (:func:`init_weights`).
"""

from __future__ import annotations

import re

from cnnlab.errors import UsageError
from cnnlab.models.layers import check_choice
from cnnlab.models.registry import ModelInfo, make_model_info, register_model, register_model_pattern
from cnnlab.models.residual import GATE_BIAS_INIT, ResNet, Stage
from cnnlab.models.resnet import RESNET_PAPER

#: Sec. 4.2's table: filters of the three stages (output maps 32x32, 16x16, 8x8) and their strides
CIFAR_WIDTHS = (16, 32, 64)
CIFAR_STRIDES = (1, 2, 2)
#: weighted layers per unit (basic: two 3x3; bottleneck: 1x1, 3x3, 1x1) -> depth = 3 * n * layers + 2
LAYERS_PER_UNIT = {"basic": 2, "bottleneck": 3}


def units_per_stage(depth: int, block: str = "basic", family: str = "resnet") -> int:
    """n such that ``depth = 6n + 2`` (basic) or ``9n + 2`` (bottleneck); a UsageError naming the rule otherwise."""
    check_choice("block", block, list(LAYERS_PER_UNIT))
    step = 3 * LAYERS_PER_UNIT[block]
    if depth < step + 2 or (depth - 2) % step:
        examples = ", ".join(str(step * n + 2) for n in (1, 2, 3, 5, 9, 18))
        name = f"{family}{depth}-cifar" if block == "basic" else f"{block} {family}-{depth}"
        raise UsageError(f"cannot build {name}: depth must be {step}n+2 ({block} units): {examples}, ...")
    return (depth - 2) // step


def cifar_resnet(
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    depth: int = 20,
    block: str = "basic",
    plain: bool = False,
    shortcut: str = "A",
    shortcut_variant: str = "identity",
    activation: str = "original",
    gate_bias_init: float = GATE_BIAS_INIT,
    drop_path_rate: float = 0.0,
    drop_path_mode: str = "original",
) -> ResNet:
    """A CIFAR ResNet of He et al. 2016a Sec. 4.2: 3x3 conv(16), three stages of n units (16/32/64), pool, fc.

    ``plain=True`` removes every shortcut (the plain nets of Fig. 6); the other options are the named
    deviations listed in the module docstring.
    """
    n = units_per_stage(depth, block, "plain" if plain else "resnet")
    if plain and shortcut_variant != "identity":
        raise UsageError("a plain net has no shortcut to vary: leave shortcut_variant at 'identity'")
    stages = [Stage(w, n, s) for w, s in zip(CIFAR_WIDTHS, CIFAR_STRIDES)]
    return ResNet(
        stages,
        block=block,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stem_width=CIFAR_WIDTHS[0],
        stem_kernel=3,
        stem_stride=1,
        stem_pool=False,
        activation=activation,
        variant="none" if plain else shortcut_variant,
        shortcut=shortcut,
        drop_path_rate=drop_path_rate,
        drop_path_mode=drop_path_mode,
        gate_bias_init=gate_bias_init,
    )


def cifar_resnet_params(depth: int, num_classes: int = 10, in_chans: int = 3) -> int:
    """Parameters of ``resnet{depth}-cifar`` (option A; also its plain twin), by the closed form of docs/models/resnet.md.

    Counted from Sec. 4.2's table, independently of the module code: 97,216 per unit triple minus the
    missing in-stage widths of the first units of stages 2 and 3, plus stem and FC.
    """
    n = units_per_stage(depth)
    stem = 9 * in_chans * 16 + 2 * 16
    stage1 = n * 2 * (9 * 16 * 16 + 2 * 16)
    stage2 = (9 * 16 * 32 + 2 * 32) + (2 * n - 1) * (9 * 32 * 32 + 2 * 32)
    stage3 = (9 * 32 * 64 + 2 * 64) + (2 * n - 1) * (9 * 64 * 64 + 2 * 64)
    return stem + stage1 + stage2 + stage3 + 64 * num_classes + num_classes


#: Sec. 4.2 / Table 6: depths with reported results; parameters derived in docs/models/resnet.md
CIFAR_RESNETS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
PLAIN_DEPTHS = (20, 32, 44, 56, 110)
CIFAR_INFO = dict(family="resnet-cifar", paper=RESNET_PAPER, input_size=(3, 32, 32), num_classes=10)
CIFAR_SOURCE = "derived by hand from Sec. 4.2: see docs/models/resnet.md (paper Table 6: {}M)"
PAPER_MILLIONS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}

for _depth, _params in CIFAR_RESNETS.items():
    register_model(
        f"resnet{_depth}-cifar",
        **CIFAR_INFO,
        num_params=_params,
        params_source=CIFAR_SOURCE.format(PAPER_MILLIONS[_depth]),
        description=f"CIFAR ResNet-{_depth} (6n+2, n={(_depth - 2) // 6}, option A shortcuts)",
        depth=_depth,
    )(cifar_resnet)

for _depth in PLAIN_DEPTHS:
    register_model(
        f"plain{_depth}-cifar",
        **CIFAR_INFO,
        num_params=CIFAR_RESNETS[_depth],
        params_source="same layers as the ResNet, option A has no parameters: see docs/models/resnet.md",
        description=f"CIFAR plain-{_depth}: ResNet-{_depth}'s layers without shortcuts (Fig. 6 left)",
        depth=_depth,
        plain=True,
    )(cifar_resnet)


@register_model_pattern(r"(resnet|plain)(\d+)-cifar", "resnet74-cifar")
def _resolve_cifar_name(name: str, match: re.Match[str]) -> ModelInfo:
    """Metadata of ``resnetN-cifar`` / ``plainN-cifar`` for any N = 6n+2 (a UsageError naming the rule otherwise)."""
    family, depth = match.group(1), int(match.group(2))
    units_per_stage(depth, "basic", family)
    plain = family == "plain"
    return make_model_info(
        name,
        cifar_resnet,
        **CIFAR_INFO,
        num_params=cifar_resnet_params(depth),
        params_source="closed form of docs/models/resnet.md (cifar_resnet_params)",
        description=f"CIFAR {family}-{depth} (6n+2, n={(depth - 2) // 6})",
        depth=depth,
        plain=plain,
    )
