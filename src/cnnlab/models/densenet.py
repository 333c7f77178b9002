"""DenseNet: Huang, Liu, van der Maaten and Weinberger 2017, "Densely Connected Convolutional Networks" (CVPR).

Layer ``l`` of a dense block sees the concatenation of every earlier feature map of the block,
``x_l = H_l([x_0, ..., x_{l-1}])`` (Sec. 3, eq. 2), and adds ``k`` (the growth rate) channels.
``H_l`` is BN-ReLU-Conv(3x3) (Sec. 3 "Composite function"); DenseNet-B puts a BN-ReLU-Conv(1x1)
bottleneck to ``bn_size * k = 4k`` channels in front of it; between blocks a transition
(BN-ReLU-Conv(1x1)-AvgPool(2x2)) keeps ``floor(theta * m)`` of its ``m`` channels, theta < 1 being
DenseNet-C (Sec. 3 "Bottleneck layers", "Compression").

* ImageNet, Table 1: ``densenet121/161/169/201/264``, DenseNet-BC (k = 32, 48 for 161; theta = 0.5),
  stem 7x7/2 conv with 2k channels, BN, ReLU, 3x3/2 max pool; four blocks; BN-ReLU, global average
  pool, fully connected layer.
* CIFAR/SVHN, Sec. 4.1 and Table 2: three blocks of equal size on 32x32, 16x16, 8x8 maps; stem 3x3
  conv with 16 channels (2k for DenseNet-BC) and no pooling. ``densenet-40-12`` (plain, (L-4)/3
  layers per block) and ``densenet-bc-100-12`` ((L-4)/6 bottleneck layers per block) are registered;
  any depth the rule allows is a name: ``densenet-L-k``, ``densenet-bc-L-k`` (also ``-b-``, ``-c-``).

Options (named deviations): ``growth_rate``, ``compression`` (theta in (0, 1]), ``bottleneck`` and
``bn_size``; ``memory_efficient=True`` recomputes the concatenation and the first BN-ReLU-Conv of
every dense layer in the backward pass instead of storing it (Pleiss et al. 2017, "Memory-Efficient
Implementation of DenseNets"), giving the same outputs and gradients. ``drop_rate`` is the paper's
dropout "after each convolutional layer (except the first one)" (Sec. 4.2), 0.2 for the runs
without data augmentation; the classifier itself has no dropout.

Convolutions have no bias (each is followed by batch norm in the next layer, and the authors' Torch
code removes it). Initialisation (:func:`init_weights`): He et al. 2015 normal for convolutions,
std sqrt(2 / (k*k*out_channels)) as in the authors' code, BN weight 1 and bias 0, linear bias 0.
Parameter counts are derived by hand in docs/models/densenet.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cnnlab.errors import UsageError
from cnnlab.models.layers import ClassifierHead, ClassifierModel, ConvNormAct, NormActConv, check_choice
from cnnlab.models.registry import ModelInfo, make_model_info, register_model, register_model_pattern

PAPER = "Huang et al. 2017, Densely Connected Convolutional Networks"
STEMS = ("imagenet", "cifar")
# CIFAR variants (Sec. 3): plain DenseNet, DenseNet-B (bottleneck), DenseNet-C (theta < 1), both.
CIFAR_VARIANTS: dict[str, tuple[bool, float]] = {
    "plain": (False, 1.0),
    "b": (True, 1.0),
    "c": (False, 0.5),
    "bc": (True, 0.5),
}


@dataclass(frozen=True)
class DenseNetConfig:
    """A DenseNet as the paper's Table 1 describes it: growth rate, layers per dense block, stem width."""

    growth_rate: int  # k: channels each dense layer adds
    block_layers: tuple[int, ...]  # dense layers in each block, e.g. (6, 12, 24, 16) for DenseNet-121
    stem_chs: int  # output channels of the first convolution (2k for DenseNet-BC)
    bottleneck: bool = True  # DenseNet-B: BN-ReLU-Conv(1x1, bn_size*k) before the 3x3 conv
    bn_size: int = 4  # the bottleneck's width in units of k ("4k feature-maps", Sec. 3)
    compression: float = 0.5  # theta: a transition keeps floor(theta*m) of m channels
    stem: str = "imagenet"  # "imagenet": 7x7/2 conv-BN-ReLU + 3x3/2 max pool; "cifar": 3x3 conv

    def __post_init__(self) -> None:
        _check_whole("growth_rate", self.growth_rate, "it is the number of channels each layer adds")
        _check_whole("stem_chs", self.stem_chs, "it is the width of the first convolution")
        _check_whole("bn_size", self.bn_size, "the bottleneck outputs bn_size * growth_rate channels")
        if not self.block_layers or any(not isinstance(n, int) or n < 1 for n in self.block_layers):
            raise UsageError(f"block_layers must be whole numbers of at least 1, got {self.block_layers!r}")
        if isinstance(self.compression, bool) or not 0.0 < self.compression <= 1.0:
            raise UsageError(
                f"compression (theta) must be in (0, 1] (1 keeps every channel, the paper uses 0.5), "
                f"got {self.compression!r}"
            )
        check_choice("DenseNet stem", self.stem, STEMS)
        for i, (_, block_out, trans_out) in enumerate(self.channel_plan()):
            if trans_out is not None and trans_out < 1:
                raise UsageError(
                    f"compression {self.compression} leaves floor({self.compression} * {block_out}) = 0 "
                    f"channels after dense block {i + 1}; use a larger compression"
                )

    def channel_plan(self) -> list[tuple[int, int, int | None]]:
        """``(input, output, after-transition)`` channels of each dense block (``None`` after the last).

        A block of ``n`` layers turns ``m`` channels into ``m + n*k``; a transition keeps
        ``floor(theta * m)`` (Sec. 3 "Growth rate", "Compression").
        """
        plan = []
        chs = self.stem_chs
        for i, layers in enumerate(self.block_layers):
            block_out = chs + layers * self.growth_rate
            last = i == len(self.block_layers) - 1
            chs = None if last else math.floor(self.compression * block_out)
            plan.append((block_out - layers * self.growth_rate, block_out, chs))
        return plan

    @property
    def block_out_chs(self) -> tuple[int, ...]:
        """Channels at the output of each dense block (DenseNet-121: 256, 512, 1024, 1024)."""
        return tuple(out for _, out, _ in self.channel_plan())

    @property
    def transition_out_chs(self) -> tuple[int, ...]:
        """Channels after each transition layer (DenseNet-121: 128, 256, 512)."""
        return tuple(t for _, _, t in self.channel_plan() if t is not None)

    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        return self.block_out_chs[-1]

    @property
    def depth(self) -> int:
        """The paper's L: weighted layers (convolutions and the FC layer); the ImageNet stem counts one."""
        convs_per_layer = 2 if self.bottleneck else 1
        return 1 + convs_per_layer * sum(self.block_layers) + len(self.block_layers) - 1 + 1

    @property
    def min_input_size(self) -> int:
        """Smallest square input side: every 2x2 average pool of the transitions needs at least 2x2.

        Derived by inverting the stride arithmetic (``out = floor((in + 2p - k) / s) + 1``): the
        ImageNet stem's 7x7/2 conv and 3x3/2 max pool need ``in >= 2 * out - 1`` each.
        """
        size = 2 ** (len(self.block_layers) - 1)
        if self.stem == "imagenet":
            size = 2 * (2 * size - 1) - 1
        return size


def _check_whole(name: str, value: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a whole number of at least 1 ({why}), got {value!r}")


# Table 1 (k = 32 except DenseNet-161, k = 48; the stem has 2k channels).
IMAGENET_CONFIGS: dict[str, DenseNetConfig] = {
    "densenet121": DenseNetConfig(growth_rate=32, block_layers=(6, 12, 24, 16), stem_chs=64),
    "densenet161": DenseNetConfig(growth_rate=48, block_layers=(6, 12, 36, 24), stem_chs=96),
    "densenet169": DenseNetConfig(growth_rate=32, block_layers=(6, 12, 32, 32), stem_chs=64),
    "densenet201": DenseNetConfig(growth_rate=32, block_layers=(6, 12, 48, 32), stem_chs=64),
    "densenet264": DenseNetConfig(growth_rate=32, block_layers=(6, 12, 64, 48), stem_chs=64),
}


def cifar_config(
    depth: int,
    growth_rate: int,
    variant: str = "plain",
    compression: float | None = None,
    bottleneck: bool | None = None,
    bn_size: int = 4,
) -> DenseNetConfig:
    """The CIFAR DenseNet of depth ``L`` (Sec. 4.1): three equal blocks of (L-4)/3 plain or (L-4)/6 bottleneck layers.

    ``variant`` (plain, b, c, bc) sets the default bottleneck and compression; ``compression`` and
    ``bottleneck`` override them. The stem has 16 channels, 2k for DenseNet-BC.
    """
    check_choice("DenseNet variant", variant, CIFAR_VARIANTS)
    default_bottleneck, default_compression = CIFAR_VARIANTS[variant]
    bottleneck = default_bottleneck if bottleneck is None else bottleneck
    compression = default_compression if compression is None else compression
    _check_whole("growth_rate", growth_rate, "it is the number of channels each layer adds")
    # L = stem conv + 3 blocks of n layers (1 or 2 convs each) + 2 transition convs + FC layer
    convs_per_layer = 2 if bottleneck else 1
    step = 3 * convs_per_layer
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < step + 4 or (depth - 4) % step:
        kind = "with bottleneck layers" if bottleneck else "without bottleneck layers"
        raise UsageError(
            f"a CIFAR DenseNet {kind} has depth L = {step}n + 4 ((L-4)/{step} layers per dense block, n >= 1), "
            f"e.g. {step * 12 + 4} or {step * 16 + 4}; got {depth!r}"
        )
    layers = (depth - 4) // step
    stem_chs = 2 * growth_rate if bottleneck and compression < 1 else 16
    return DenseNetConfig(
        growth_rate=growth_rate,
        block_layers=(layers,) * 3,
        stem_chs=stem_chs,
        bottleneck=bottleneck,
        bn_size=bn_size,
        compression=compression,
        stem="cifar",
    )


def expected_num_params(config: DenseNetConfig, num_classes: int, in_chans: int = 3) -> int:
    """Parameter count of ``config`` by the closed-form rules of docs/models/densenet.md (no module is built).

    A BN over ``c`` channels has ``2c`` parameters, a ``k x k`` conv ``c_in * c_out * k^2`` (no bias),
    the classifier ``c * classes + classes``.
    """
    k, width = config.growth_rate, config.bn_size * config.growth_rate
    kernel = 7 if config.stem == "imagenet" else 3
    total = in_chans * config.stem_chs * kernel**2 + (2 * config.stem_chs if config.stem == "imagenet" else 0)
    for block_in, block_out, trans_out in config.channel_plan():
        for chs in range(block_in, block_out, k):  # layer inputs m, m+k, ..., m+(n-1)k
            if config.bottleneck:
                total += 2 * chs + chs * width + 2 * width + 9 * width * k
            else:
                total += 2 * chs + 9 * chs * k
        if trans_out is not None:
            total += 2 * block_out + block_out * trans_out
    return total + 2 * config.num_features + config.num_features * num_classes + num_classes


# Set while torch.utils.checkpoint recomputes a dense layer's bottleneck in the backward pass, so the
# recomputation normalises with batch statistics without updating the running ones a second time.
_RECOMPUTING: contextvars.ContextVar[bool] = contextvars.ContextVar("densenet_recomputing", default=False)


@contextlib.contextmanager
def _recomputing() -> Iterator[None]:
    token = _RECOMPUTING.set(True)
    try:
        yield
    finally:
        _RECOMPUTING.reset(token)


def _checkpoint_contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    return contextlib.nullcontext(), _recomputing()


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)``, except that a recomputation in training mode leaves the running statistics alone."""
    if _RECOMPUTING.get() and bn.training and not x.is_meta:
        # momentum 0 keeps the running statistics exactly; passing them keeps the saved tensors the
        # same as in the forward pass, which non-reentrant checkpointing checks
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, 0.0, bn.eps)
    return bn(x)


class DenseLayer(nn.Module):
    """``H_l``: [BN-ReLU-Conv(1x1, bn_size*k)] - BN-ReLU-Conv(3x3, k) on the concatenated inputs (Sec. 3).

    Takes the list of all earlier feature maps of the block and returns its ``k`` new channels.
    """

    def __init__(
        self, in_chs: int, config: DenseNetConfig, drop_rate: float = 0.0, memory_efficient: bool = False
    ) -> None:
        super().__init__()
        k = config.growth_rate
        width = config.bn_size * k
        self.reduce = NormActConv(in_chs, width, 1) if config.bottleneck else None
        self.conv = NormActConv(width if config.bottleneck else in_chs, k, 3)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.memory_efficient = memory_efficient

    def concat_unit(self, *features: torch.Tensor) -> torch.Tensor:
        """Concatenation and the first BN-ReLU-Conv: the part whose output is large and cheap to recompute."""
        unit = self.reduce if self.reduce is not None else self.conv
        x = _batch_norm(unit.bn, torch.cat(features, 1))
        return unit.conv(unit.act(x))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            # Pleiss et al. 2017: store only the inputs (already kept by the block) and recompute the
            # O(l * k) channel concatenation and its BN-ReLU in the backward pass.
            x = checkpoint(self.concat_unit, *features, use_reentrant=False, context_fn=_checkpoint_contexts)
        else:
            x = self.concat_unit(*features)
        x = self.drop(x)
        if self.reduce is not None:
            x = self.drop(self.conv(x))
        return x


class DenseBlock(nn.Module):
    """``n`` dense layers; the output concatenates the block's input and every layer's ``k`` channels."""

    def __init__(
        self,
        in_chs: int,
        num_layers: int,
        config: DenseNetConfig,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        k = config.growth_rate
        self.layers = nn.ModuleList(
            DenseLayer(in_chs + i * k, config, drop_rate, memory_efficient) for i in range(num_layers)
        )
        self.out_chs = in_chs + num_layers * k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv(1x1, floor(theta*m)) [- dropout] - AvgPool(2x2, stride 2) between dense blocks (Sec. 3)."""

    def __init__(self, in_chs: int, out_chs: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.unit = NormActConv(in_chs, out_chs, 1)
        if drop_rate > 0:
            self.drop = nn.Dropout(drop_rate)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNet(ClassifierModel):
    """A DenseNet built from a :class:`DenseNetConfig`: stem, dense blocks and transitions, BN-ReLU, global-pool head.

    ``block_out_chs`` / ``transition_out_chs`` give the channels after each block and transition, so
    analyses can check the paper's table; the head runs on any input of at least ``min_input_size``.
    """

    def __init__(
        self,
        config: DenseNetConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.block_out_chs = config.block_out_chs
        self.transition_out_chs = config.transition_out_chs
        self.min_input_size = config.min_input_size
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        if config.stem == "imagenet":  # Table 1: 7x7 conv, stride 2; 3x3 max pool, stride 2
            stages["stem"] = ConvNormAct(in_chans, config.stem_chs, 7, stride=2, norm=True)
            stages["pool"] = nn.MaxPool2d(3, stride=2, padding=1)
        else:  # Sec. 4.1: one 3x3 conv, its BN-ReLU being the first dense layer's
            stages["stem"] = ConvNormAct(in_chans, config.stem_chs, 3, act=None, bias=False)
        for i, ((block_in, _, trans_out), layers) in enumerate(
            zip(config.channel_plan(), config.block_layers)
        ):
            block = DenseBlock(block_in, layers, config, drop_rate, memory_efficient)
            stages[f"denseblock{i + 1}"] = block
            if trans_out is not None:
                stages[f"transition{i + 1}"] = Transition(block.out_chs, trans_out, drop_rate)
        # the blocks end with raw concatenations: the final BN-ReLU precedes global pooling (Table 1)
        stages["norm"] = nn.BatchNorm2d(config.num_features)
        stages["act"] = nn.ReLU(inplace=True)
        self.features = nn.Sequential(stages)
        self.head = ClassifierHead(config.num_features, num_classes, drop_rate=0.0)
        init_weights(self)
        self.classifier_init = init_weights

    @property
    def memory_efficient(self) -> bool:
        """Whether dense layers recompute their concatenation in the backward pass."""
        return any(layer.memory_efficient for layer in self.modules() if isinstance(layer, DenseLayer))

    @memory_efficient.setter
    def memory_efficient(self, value: bool) -> None:
        for layer in self.modules():
            if isinstance(layer, DenseLayer):
                layer.memory_efficient = bool(value)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def init_weights(model: nn.Module) -> None:
    """He et al. 2015 initialisation, as DenseNet Sec. 4.2 and the authors' code use it.

    Convolutions: normal with std sqrt(2 / (kernel_h * kernel_w * out_channels)) ("fan_out"); batch
    norm weight 1, bias 0; linear bias 0 (its weight keeps PyTorch's default uniform).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)


def _imagenet_builder(name: str, base: DenseNetConfig) -> Callable[..., DenseNet]:
    """Builder of the Table 1 network ``name``; its options are the paper's named hyper-parameters."""

    def build(
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        growth_rate: int = base.growth_rate,
        compression: float = base.compression,
        bottleneck: bool = base.bottleneck,
        bn_size: int = base.bn_size,
        memory_efficient: bool = False,
    ) -> DenseNet:
        _check_whole("growth_rate", growth_rate, "it is the number of channels each layer adds")
        config = DenseNetConfig(
            growth_rate=growth_rate,
            block_layers=base.block_layers,
            stem_chs=2 * growth_rate,  # "the initial convolution layer comprises 2k convolutions" (Sec. 3)
            bottleneck=bottleneck,
            bn_size=bn_size,
            compression=compression,
        )
        return DenseNet(config, num_classes, in_chans, drop_rate, memory_efficient)

    build.__name__ = name
    build.__doc__ = (
        f"{name}: DenseNet-BC of Table 1, k={base.growth_rate}, blocks {base.block_layers}, theta=0.5."
    )
    return build


_IMAGENET_PARAMS = {  # torchvision's published counts; densenet264 derived in docs/models/densenet.md
    "densenet121": (7_978_856, "torchvision docs"),
    "densenet161": (28_681_000, "torchvision docs"),
    "densenet169": (14_149_480, "torchvision docs"),
    "densenet201": (20_013_928, "torchvision docs"),
    "densenet264": (33_337_704, "derived by hand: see docs/models/densenet.md"),
}

for _name, _config in IMAGENET_CONFIGS.items():
    register_model(
        _name,
        family="densenet",
        paper=PAPER,
        input_size=(3, 224, 224),
        num_params=_IMAGENET_PARAMS[_name][0],
        params_source=_IMAGENET_PARAMS[_name][1],
    )(_imagenet_builder(_name, _config))


def densenet_cifar(
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    depth: int = 40,
    growth_rate: int = 12,
    variant: str = "plain",
    compression: float | None = None,
    bottleneck: bool | None = None,
    bn_size: int = 4,
    memory_efficient: bool = False,
) -> DenseNet:
    """CIFAR DenseNet of depth L and growth rate k (Sec. 4.1); ``drop_rate=0.2`` for runs without augmentation."""
    config = cifar_config(depth, growth_rate, variant, compression, bottleneck, bn_size)
    return DenseNet(config, num_classes, in_chans, drop_rate, memory_efficient)


_CIFAR_SOURCE = "derived by hand: see docs/models/densenet.md (paper Table 2: {})"

register_model(
    "densenet-40-12",
    family="densenet",
    paper=PAPER,
    input_size=(3, 32, 32),
    num_classes=10,
    num_params=1_019_722,
    params_source=_CIFAR_SOURCE.format("1.0M"),
    description="CIFAR DenseNet, L=40, k=12, no bottleneck, no compression",
    depth=40,
    growth_rate=12,
    variant="plain",
)(densenet_cifar)
register_model(
    "densenet-bc-100-12",
    family="densenet",
    paper=PAPER,
    input_size=(3, 32, 32),
    num_classes=10,
    num_params=769_162,
    params_source=_CIFAR_SOURCE.format("0.8M"),
    description="CIFAR DenseNet-BC, L=100, k=12, bottleneck 4k, theta=0.5",
    depth=100,
    growth_rate=12,
    variant="bc",
)(densenet_cifar)


@register_model_pattern(r"densenet-(?:(b|c|bc)-)?(\d+)-(\d+)", example="densenet-bc-190-40")
def _resolve_cifar_name(name: str, match: re.Match[str]) -> ModelInfo:
    """``densenet[-b|-c|-bc]-L-k``: any depth the paper's rule allows, counted by :func:`expected_num_params`."""
    variant, depth, growth = match.group(1) or "plain", int(match.group(2)), int(match.group(3))
    config = cifar_config(depth, growth, variant)
    return make_model_info(
        name,
        densenet_cifar,
        family="densenet",
        paper=PAPER,
        input_size=(3, 32, 32),
        num_classes=10,
        num_params=expected_num_params(config, num_classes=10),
        params_source="closed-form count from the paper's rules: see docs/models/densenet.md",
        description=f"CIFAR DenseNet{'-' + variant.upper() if variant != 'plain' else ''}, L={depth}, k={growth}",
        depth=depth,
        growth_rate=growth,
        variant=variant,
    )
