"""Pre-activation ResNets and the unit variants studied by He et al. 2016, "Identity Mappings in Deep Residual Networks".

The paper writes a unit as ``y = h(x) + F(x)``, ``x' = f(y)`` and varies each part on ResNet-110 (CIFAR):

* the shortcut ``h`` (Fig. 2, Table 1): original identity, constant scaling (both paths x0.5),
  exclusive gating (``g F + (1 - g) h`` with ``g = sigmoid(1x1 conv)``), shortcut-only gating
  (``F + (1 - g) h``), 1x1 conv shortcut, dropout shortcut (p = 0.5);
* the placement of BN/ReLU (Fig. 4, Table 2): original, BN after addition, ReLU before addition,
  ReLU-only pre-activation, full pre-activation (the proposed unit, BN-ReLU-conv-BN-ReLU-conv).

Every variant is a registered name (``resnet110-cifar-scaling``, ``resnet110-cifar-bn-after-add`` ...;
the table ``CIFAR_VARIANTS`` below) and also an option of every CIFAR name (``shortcut_variant=``,
``activation=``): ``create_model("resnet56-cifar", activation="full_preact")``. Variants apply to every unit;
where the shape changes the shortcut ``h`` stays the option-A zero-padded identity of the ResNet-110 they
modify, except the 1x1 conv variant, whose shortcuts are all projections (conv + BN, the post-activation
projection of He et al. 2016a).

Gates start with bias b_g = -6 (``gate_bias_init``), the value Table 1 reports best after the paper's
search over 0 .. -10 (Sec. 3.1): the gate is then nearly closed (g ~ 0.0025), so the shortcut is nearly the
identity and exclusive gating nearly suppresses F at the start.

Full pre-activation networks (appendix): the first unit's pre-activation is the BN-ReLU right after
``conv1`` (before the split), and the last unit is followed by an extra BN-ReLU. ``preact-resnet110-cifar``
(Table 2, 6.37%) keeps ResNet-110's option A shortcuts; ``preact-resnet164-cifar`` (bottleneck, Table 3)
uses option B, a bare 1x1 conv projection that reads the pre-activated input, as the authors' code.
``preact-resnet18 .. 152`` are Table 1 of He et al. 2016a with full pre-activation units (option B, bare
1x1 projections, stride on the first 1x1 as in the original ResNet; ``stride_in="3x3"`` is available).

Initialisation: He et al. 2015 Kaiming normal (fan_out), BN weight 1 / bias 0, gate bias b_g
(``cnnlab.models.resnet.init_weights``).
"""

from __future__ import annotations

from cnnlab.models.layers import check_choice
from cnnlab.models.registry import register_model
from cnnlab.models.residual import SHORTCUT_TYPES, STRIDE_PLACEMENTS, ResNet
from cnnlab.models.resnet import imagenet_stages
from cnnlab.models.resnet_cifar import CIFAR_INFO, CIFAR_RESNETS, cifar_resnet

PREACT_PAPER = "He et al. 2016, Identity Mappings in Deep Residual Networks"


def preact_resnet(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    depth: int = 18,
    stride_in: str = "1x1",
    shortcut: str = "B",
    drop_path_rate: float = 0.0,
    drop_path_mode: str = "original",
    stem_norm_act: bool = True,
) -> ResNet:
    """ImageNet pre-activation ResNet-``depth``: Table 1 of He et al. 2016a with Fig. 4e units.

    ``stem_norm_act=False`` is timm's ``resnetv2_*`` layout: the stem is the bare 7x7 conv and max pool,
    and the first unit pre-activates the max-pooled map itself, so its identity shortcut (ResNet-18/34)
    adds the raw pooled map, where the paper's appendix (the default) adds the stem's BN-ReLU output
    (and BN-ReLU precedes the max pool). Same parameter count.
    """
    check_choice("shortcut type", shortcut, SHORTCUT_TYPES)
    check_choice("stride placement", stride_in, STRIDE_PLACEMENTS)
    kind, stages = imagenet_stages(depth)
    return ResNet(
        stages,
        block=kind,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        activation="full_preact",
        shortcut=shortcut,
        stride_in=stride_in,
        drop_path_rate=drop_path_rate,
        drop_path_mode=drop_path_mode,
        stem_norm_act=stem_norm_act,
    )


#: parameters at 1000 classes, derived in docs/models/resnet.md ("Pre-activation ResNets")
PREACT_IMAGENET = {
    18: 11_687_720,
    34: 21_795_880,
    50: 25_549_352,
    101: 44_541_480,
    152: 60_185_128,
}
for _depth, _params in PREACT_IMAGENET.items():
    register_model(
        f"preact-resnet{_depth}",
        family="preact-resnet",
        paper=PREACT_PAPER,
        input_size=(3, 224, 224),
        num_params=_params,
        params_source="derived by hand from He et al. 2016a Table 1: see docs/models/resnet.md",
        description=f"Pre-activation ResNet-{_depth} (full pre-activation units, Fig. 4e)",
        depth=_depth,
    )(preact_resnet)


#: name -> (options over resnet110-cifar, parameters derived in docs/models/resnet.md, figure)
_R110 = CIFAR_RESNETS[110]
CIFAR_VARIANTS: dict[str, tuple[dict, int, str]] = {
    "resnet110-cifar-scaling": ({"shortcut_variant": "scaling"}, _R110, "Fig. 2b constant scaling 0.5"),
    "resnet110-cifar-exclusive-gating": (
        {"shortcut_variant": "exclusive_gating"},
        1_824_186,
        "Fig. 2c exclusive gating",
    ),
    "resnet110-cifar-shortcut-gating": (
        {"shortcut_variant": "shortcut_gating"},
        1_824_186,
        "Fig. 2d shortcut-only gating",
    ),
    "resnet110-cifar-conv-shortcut": ({"shortcut_variant": "conv"}, 1_826_202, "Fig. 2e 1x1 conv shortcut"),
    "resnet110-cifar-dropout-shortcut": ({"shortcut_variant": "dropout"}, _R110, "Fig. 2f dropout shortcut"),
    "resnet110-cifar-bn-after-add": ({"activation": "bn_after_add"}, _R110, "Fig. 4b BN after addition"),
    "resnet110-cifar-relu-before-add": (
        {"activation": "relu_before_add"},
        _R110,
        "Fig. 4c ReLU before addition",
    ),
    "resnet110-cifar-relu-preact": ({"activation": "relu_preact"}, _R110, "Fig. 4d ReLU-only pre-activation"),
    "preact-resnet110-cifar": ({"activation": "full_preact"}, _R110, "Fig. 4e full pre-activation"),
    "resnet164-cifar": (
        {"depth": 164, "block": "bottleneck", "shortcut": "B"},
        1_704_154,
        "Table 3 original",
    ),
    "preact-resnet164-cifar": (
        {"depth": 164, "block": "bottleneck", "shortcut": "B", "activation": "full_preact"},
        1_703_258,
        "Table 3 full pre-activation",
    ),
}
for _name, (_options, _params, _figure) in CIFAR_VARIANTS.items():
    register_model(
        _name,
        **{**CIFAR_INFO, "family": "preact-resnet", "paper": PREACT_PAPER},
        num_params=_params,
        params_source="derived by hand: see docs/models/resnet.md (pre-activation section)",
        description=f"CIFAR ResNet-{_options.get('depth', 110)}, {_figure} (He et al. 2016b)",
        **{"depth": 110, **_options},
    )(cifar_resnet)
