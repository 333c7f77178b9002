"""The residual unit and the network built of it, shared by every residual family.

:class:`ResidualUnit` builds the post-activation units of He et al. 2016a (``resnet.py``,
``resnet_cifar.py``), the pre-activation variants of He et al. 2016b (Fig. 2 shortcut variants, Fig. 4
activation placements; ``preact_resnet.py``) and Wide ResNets (``wide_resnet.py``); its layout is data
(:class:`ActivationPlacement`, ``SHORTCUT_VARIANTS``, :class:`ConvSpec` rows), checked row by row
against the papers in ``docs/models/resnet.md``. :class:`ResNet` is stem, stages of units, final
activation and head; the family files hold only their papers' tables and builders.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.layers import ClassifierHead, ClassifierModel, ConvNormAct, check_choice

# ---------------------------------------------------------------------------------------------
# Stochastic depth (Huang et al. 2016), shared with any residual family (DenseNet, Inception-ResNet)
# ---------------------------------------------------------------------------------------------

DROP_PATH_MODES = ("original", "inverted")


def drop_path(x: torch.Tensor, drop_prob: float, training: bool, mode: str = "original") -> torch.Tensor:
    """Drop the residual branch ``x`` for whole samples with probability ``drop_prob``.

    ``mode="original"`` is Huang et al. 2016 Sec. 3 (Eq. 5): in training a sample's branch is kept (x1) or
    dropped (x0); in evaluation it is scaled by its survival probability. ``"inverted"`` rescales the kept
    branches by 1/survival in training instead, so evaluation is the identity (same expectation).
    """
    if drop_prob == 0.0:
        return x
    survival = 1.0 - drop_prob
    if not training:
        return x * survival if mode == "original" else x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(survival)
    return x * keep if mode == "original" else x * keep / survival


class DropPath(nn.Module):
    """Stochastic depth on a residual branch as a module (see :func:`drop_path`)."""

    def __init__(self, drop_prob: float = 0.0, mode: str = "original") -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise UsageError(f"drop path probability must be in [0, 1), got {drop_prob}")
        check_choice("drop path mode", mode, DROP_PATH_MODES)
        self.drop_prob = drop_prob
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The branch ``x`` kept, dropped or scaled per sample (see :func:`drop_path`)."""
        return drop_path(x, self.drop_prob, self.training, self.mode)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}, mode={self.mode}"


def stochastic_depth_rates(num_units: int, drop_path_rate: float) -> list[float]:
    """Drop probability of each of ``num_units`` residual units, in order.

    Huang et al. 2016 Eq. 4, the linear decay rule: unit l of L survives with p_l = 1 - (l / L)(1 - p_L),
    so it is dropped with probability (l / L) * drop_path_rate where ``drop_path_rate = 1 - p_L``
    (the paper's p_L = 0.5 is ``drop_path_rate=0.5``).
    """
    if not 0.0 <= drop_path_rate < 1.0:
        raise UsageError(
            f"drop_path_rate must be in [0, 1) (1 - p_L in Huang et al. 2016), got {drop_path_rate}"
        )
    return [drop_path_rate * (l + 1) / num_units for l in range(num_units)]


# ---------------------------------------------------------------------------------------------
# The residual unit as data: convolution rows, activation placement (Fig. 4), shortcut (Fig. 2)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvSpec:
    """One row inside a block of Table 1, e.g. ``[1x1, 64]``: output channels, kernel, stride."""

    out_chs: int
    kernel: int
    stride: int = 1


@dataclass(frozen=True)
class ActivationPlacement:
    """Where BN and ReLU sit in a unit (He et al. 2016b Fig. 4); each field a sequence of "bn"/"relu".

    ``before`` precedes the first convolution, ``between`` follows every convolution but the last,
    ``after`` follows the last one (before the addition), ``post`` follows the addition.
    """

    before: tuple[str, ...]
    between: tuple[str, ...]
    after: tuple[str, ...]
    post: tuple[str, ...]


#: He et al. 2016b Fig. 4 (a)-(e)
ACTIVATION_PLACEMENTS: dict[str, ActivationPlacement] = {
    "original": ActivationPlacement((), ("bn", "relu"), ("bn",), ("relu",)),  # (a) He et al. 2016a
    "bn_after_add": ActivationPlacement((), ("bn", "relu"), (), ("bn", "relu")),  # (b)
    "relu_before_add": ActivationPlacement((), ("bn", "relu"), ("bn", "relu"), ()),  # (c)
    "relu_preact": ActivationPlacement(
        ("relu",), ("bn", "relu"), ("bn",), ()
    ),  # (d) ReLU-only pre-activation
    "full_preact": ActivationPlacement(("bn", "relu"), ("bn", "relu"), (), ()),  # (e) full pre-activation
}

#: He et al. 2016b Fig. 2 / Table 1, plus "none" for the plain nets of He et al. 2016a Sec. 4.2
SHORTCUT_VARIANTS = (
    "identity",  # (a) y = F(x) + h(x)
    "scaling",  # (b) y = 0.5 F(x) + 0.5 h(x)
    "exclusive_gating",  # (c) y = g(x) F(x) + (1 - g(x)) h(x), g = sigmoid(1x1 conv)
    "shortcut_gating",  # (d) y = F(x) + (1 - g(x)) h(x)
    "conv",  # (e) h = 1x1 conv on every unit
    "dropout",  # (f) y = F(x) + dropout_0.5(h(x))
    "none",  # plain net: y = F(x)
)
SHORTCUT_TYPES = ("A", "B", "C")
#: variants whose shortcut carries its input on at full strength, so that a unit whose branch is zero passes
#: the signal on: not (b) and (f), which halve it (a deep net of them starts with next to no signal), nor plain
FULL_SHORTCUTS = ("identity", "exclusive_gating", "shortcut_gating", "conv")
#: Fig. 2b's constant and Fig. 2f's drop probability (He et al. 2016b Table 1)
SHORTCUT_SCALE = 0.5
SHORTCUT_DROPOUT = 0.5
#: Initial gate bias b_g: the value Table 1 reports best (cross-validated over 0..-10, Sec. 3.1)
GATE_BIAS_INIT = -6.0


class ZeroPadShortcut(nn.Module):
    """Option A shortcut (He et al. 2016a Sec. 3.3): identity, subsampled by ``stride``, extra channels zero."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.extra_chs = out_chs - in_chs
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` subsampled to the branch's map size and zero-padded to its channels."""
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_chs)) if self.extra_chs else x


def _norm_act(
    ops: Sequence[str], chs: int, counters: dict[str, int], inplace: bool = True
) -> list[tuple[str, nn.Module]]:
    """Named modules for a run of "bn"/"relu" ops; names count up per kind (bn1, relu1, bn2 ...).

    ``inplace=False`` where the input is still needed by the shortcut (a unit's pre-activation).
    """
    layers = []
    for op in ops:
        counters[op] += 1
        module = nn.BatchNorm2d(chs) if op == "bn" else nn.ReLU(inplace=inplace)
        layers.append((f"{op}{counters[op]}", module))
    return layers


class ResidualUnit(nn.Module):
    """One residual unit ``y = post(merge(F(x), h(x)))`` laid out by data.

    ``convs`` are the rows of the block (Table 1); ``placement`` puts BN/ReLU around them (Fig. 4);
    ``variant`` merges branch and shortcut (Fig. 2); ``shortcut`` ("A"/"B"/"C") says what ``h`` is where the
    shape changes (or everywhere for "C"). ``preact=False`` drops the unit's own pre-activation (the first
    unit after a stem ending in BN-ReLU, He et al. 2016b appendix). Where a pre-activated unit has a
    projection shortcut, the projection sees the pre-activated input (the reference code's "both_preact").
    ``block_dropout`` is Wide ResNet's dropout between the convolutions (Zagoruyko & Komodakis Sec. 2.4).
    """

    def __init__(
        self,
        in_chs: int,
        convs: Sequence[ConvSpec],
        placement: ActivationPlacement = ACTIVATION_PLACEMENTS["original"],
        variant: str = "identity",
        shortcut: str = "B",
        projection_norm: bool = True,
        preact: bool = True,
        drop_path_prob: float = 0.0,
        drop_path_mode: str = "original",
        block_dropout: float = 0.0,
        gate_bias_init: float = GATE_BIAS_INIT,
    ) -> None:
        super().__init__()
        self.variant = check_choice("shortcut variant", variant, SHORTCUT_VARIANTS)
        check_choice("shortcut type", shortcut, SHORTCUT_TYPES)
        out_chs, stride = convs[-1].out_chs, max(c.stride for c in convs)
        counters = {"bn": 0, "relu": 0}
        self.preact = nn.Sequential(
            OrderedDict(_norm_act(placement.before if preact else (), in_chs, counters, inplace=False))
        )
        branch: list[tuple[str, nn.Module]] = []
        chs = in_chs
        for index, spec in enumerate(convs, start=1):
            if index > 1:
                branch += _norm_act(placement.between, chs, counters)
                if block_dropout > 0:
                    branch.append((f"drop{index - 1}", nn.Dropout(block_dropout)))
            branch.append(
                (
                    f"conv{index}",
                    nn.Conv2d(chs, spec.out_chs, spec.kernel, spec.stride, spec.kernel // 2, bias=False),
                )
            )
            chs = spec.out_chs
        branch += _norm_act(placement.after, chs, counters)
        self.branch = nn.Sequential(OrderedDict(branch))

        reshapes = stride != 1 or in_chs != out_chs
        project = variant == "conv" or shortcut == "C" or (shortcut == "B" and reshapes)
        if variant == "none":
            self.shortcut = None
        elif project:
            layers = [("conv", nn.Conv2d(in_chs, out_chs, 1, stride, bias=False))]
            if projection_norm:
                layers.append(("bn", nn.BatchNorm2d(out_chs)))
            self.shortcut = nn.Sequential(OrderedDict(layers))
        elif reshapes:
            self.shortcut = ZeroPadShortcut(in_chs, out_chs, stride)
        else:
            self.shortcut = nn.Identity()
        # the projection reads the pre-activated input ("both_preact"); identity and option A read x itself
        self.shared_preact = project and variant != "none"
        if variant in ("exclusive_gating", "shortcut_gating"):
            self.gate = nn.Conv2d(in_chs, out_chs, 1, stride, bias=True)
            self.gate_bias_init = gate_bias_init
            nn.init.constant_(self.gate.bias, gate_bias_init)
        self.shortcut_drop = nn.Dropout(SHORTCUT_DROPOUT) if variant == "dropout" else nn.Identity()
        self.drop_path = DropPath(drop_path_prob, drop_path_mode)
        self.post = nn.Sequential(OrderedDict(_norm_act(placement.post, out_chs, counters)))
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``post(merge(F(x), h(x)))`` for this unit's variant."""
        activated = self.preact(x)
        if self.shared_preact:
            x = activated
        residual = self.drop_path(self.branch(activated))
        if self.shortcut is None:
            return self.post(residual)
        skip = self.shortcut_drop(self.shortcut(x))
        if self.variant == "scaling":
            merged = SHORTCUT_SCALE * residual + SHORTCUT_SCALE * skip
        elif self.variant in ("exclusive_gating", "shortcut_gating"):
            gate = torch.sigmoid(self.gate(x))
            merged = (gate * residual if self.variant == "exclusive_gating" else residual) + (1 - gate) * skip
        else:
            merged = residual + skip
        return self.post(merged)


# ---------------------------------------------------------------------------------------------
# The network: stem, stages of units, final activation, head
# ---------------------------------------------------------------------------------------------

BLOCK_KINDS = ("basic", "bottleneck")
STRIDE_PLACEMENTS = ("1x1", "3x3")


@dataclass(frozen=True)
class Stage:
    """One stage (conv2_x ... conv5_x of Table 1): ``units`` blocks of base ``width``, the first with ``stride``."""

    width: int
    units: int
    stride: int


def block_convs(
    kind: str, width: int, stride: int, expansion: int = 4, inner_factor: float = 1, stride_in: str = "1x1"
) -> list[ConvSpec]:
    """The rows of one block: basic ``[3x3, w] x2`` or bottleneck ``[1x1, w'], [3x3, w'], [1x1, 4w]``.

    ``inner_factor`` widens the bottleneck's inner layers (w' = 2w in wide-resnet50-2); ``stride_in`` puts a
    bottleneck's stride on the first 1x1 (paper) or on the 3x3 (v1.5). Basic blocks stride their first 3x3.
    """
    check_choice("block", kind, BLOCK_KINDS)
    check_choice("stride placement", stride_in, STRIDE_PLACEMENTS)
    if kind == "basic":
        return [ConvSpec(width, 3, stride), ConvSpec(width, 3)]
    inner = int(width * inner_factor)
    first, middle = (stride, 1) if stride_in == "1x1" else (1, stride)
    return [ConvSpec(inner, 1, first), ConvSpec(inner, 3, middle), ConvSpec(width * expansion, 1)]


class ResNet(ClassifierModel):
    """A residual (or plain) network: ``conv1`` [-> ``maxpool``] -> ``layer1`` ... ``layerN`` -> ``final_act`` -> head.

    ``stem_norm_act`` ends the stem in BN-ReLU (post-activation nets, and He et al. 2016b's pre-activation
    nets, whose first unit then has no pre-activation of its own); Wide ResNets keep a bare ``conv1``.
    ``final_act`` is the extra BN-ReLU after the last addition of pre-activation nets (appendix).
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        block: str,
        num_classes: int,
        in_chans: int,
        drop_rate: float,
        stem_width: int = 64,
        stem_kernel: int = 7,
        stem_stride: int = 2,
        stem_pool: bool = True,
        stem_norm_act: bool = True,
        activation: str = "original",
        variant: str = "identity",
        shortcut: str = "B",
        stride_in: str = "1x1",
        expansion: int = 4,
        inner_factor: float = 1,
        block_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_path_mode: str = "original",
        gate_bias_init: float = GATE_BIAS_INIT,
        zero_init_last_bn: bool = False,
    ) -> None:
        super().__init__()
        placement = ACTIVATION_PLACEMENTS[
            check_choice("activation placement", activation, list(ACTIVATION_PLACEMENTS))
        ]
        check_choice("drop path mode", drop_path_mode, DROP_PATH_MODES)
        preactivated = bool(placement.before)
        self.conv1 = ConvNormAct(
            in_chans,
            stem_width,
            stem_kernel,
            stem_stride,
            norm=stem_norm_act,
            act="relu" if stem_norm_act else None,
            bias=False,
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
        rates = iter(stochastic_depth_rates(sum(s.units for s in stages), drop_path_rate))
        chs, first = stem_width, True
        for index, stage in enumerate(stages, start=1):
            units = []
            for u in range(stage.units):
                convs = block_convs(
                    block, stage.width, stage.stride if u == 0 else 1, expansion, inner_factor, stride_in
                )
                units.append(
                    ResidualUnit(
                        chs,
                        convs,
                        placement,
                        variant,
                        shortcut,
                        projection_norm=not preactivated,
                        preact=not (first and stem_norm_act),
                        drop_path_prob=next(rates),
                        drop_path_mode=drop_path_mode,
                        block_dropout=block_dropout,
                        gate_bias_init=gate_bias_init,
                    )
                )
                chs, first = convs[-1].out_chs, False
            self.add_module(f"layer{index}", nn.Sequential(*units))
        self.num_stages = len(stages)
        # pre-activation nets: the last unit's output gets the extra BN-ReLU (He et al. 2016b appendix)
        final = _norm_act(placement.before, chs, {"bn": 0, "relu": 0})
        self.final_act = nn.Sequential(OrderedDict(final))
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, drop_rate)
        init_weights(self, zero_init_last_bn)

    def stages(self) -> list[nn.Sequential]:
        """``layer1`` ... ``layerN`` in order."""
        return [getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1)]

    def units(self) -> list[ResidualUnit]:
        """Every residual unit, input to output."""
        return [unit for stage in self.stages() for unit in stage]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> last stage's feature map (after the final BN-ReLU of pre-activation nets)."""
        x = self.maxpool(self.conv1(x))
        for stage in self.stages():
            x = stage(x)
        return self.final_act(x)

    def feature_stages(self) -> list[tuple[str, nn.Module]]:
        """``conv1``, ``maxpool``, ``layer1`` ... ``layerN``, ``final_act``: what :meth:`forward_features` runs."""
        names = ["conv1", "maxpool", *(f"layer{i}" for i in range(1, self.num_stages + 1)), "final_act"]
        return [(name, getattr(self, name)) for name in names]


def init_weights(model: nn.Module, zero_init_last_bn: bool = False) -> None:
    """He et al. 2015 initialisation as the ResNet papers prescribe; BN gamma 1, beta 0.

    Convolutions: Kaiming normal, fan_out, ReLU gain (He et al. 2016a Sec. 3.4). Gate convolutions of
    Fig. 2c/2d keep that weight and start their bias at ``gate_bias_init`` (He et al. 2016b Sec. 3.1, best
    -6). ``zero_init_last_bn`` (Goyal et al. 2017 Sec. 5.1) zeroes gamma of the BN that ends each residual
    branch; it needs a placement whose branch ends in BN (``original`` or ``relu_preact``).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for unit in (m for m in model.modules() if isinstance(m, ResidualUnit)):
        if hasattr(unit, "gate"):
            nn.init.constant_(unit.gate.bias, unit.gate_bias_init)
        if zero_init_last_bn and not isinstance(unit.branch[-1], nn.BatchNorm2d):
            raise UsageError(
                "zero_init_last_bn needs a residual branch that ends in BN (activation 'original' or "
                f"'relu_preact'); this one ends in {type(unit.branch[-1]).__name__}"
            )
    if zero_init_last_bn:
        zero_init_residual_branches(model)


def full_shortcut_units(model: nn.Module) -> list[ResidualUnit]:
    """The residual units of ``model`` whose shortcut carries the signal at full strength (``FULL_SHORTCUTS``)."""
    return [m for m in model.modules() if isinstance(m, ResidualUnit) and m.variant in FULL_SHORTCUTS]


def zero_init_residual_branches(model: nn.Module) -> int:
    """Start every residual unit of ``model`` that has a full-strength shortcut as (nearly) its shortcut;
    return how many.

    Each branch's last layer gets zero weights: its last batch norm's gamma where one follows its last
    convolution (post-activation units, Goyal et al. 2017 Sec. 5.1), else the last convolution itself
    (pre-activation units, whose branch ends in a convolution, as timm's ``zero_init_last`` does). The
    gradients still reach that layer, so the branch grows from zero; a deep net then starts as a shallow one.
    Units whose shortcut does not carry the signal at full strength (plain units, Fig. 2b's scaling, 2f's
    dropout) are left alone, and so are residual blocks other than :class:`ResidualUnit` (the lecture's
    residual net, the Inception-ResNets): 0 for a model without any.
    """
    units = full_shortcut_units(model)
    for unit in units:
        layers = [m for m in unit.branch if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        nn.init.zeros_(layers[-1].weight)
    return len(units)
