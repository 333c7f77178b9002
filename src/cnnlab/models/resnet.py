"""Residual networks: the shared residual unit, and the ImageNet ResNets of He et al. 2016.

Paper: He, Zhang, Ren, Sun 2016, "Deep Residual Learning for Image Recognition" (CVPR), Table 1:
``resnet18/34`` stack basic blocks (two 3x3 convolutions), ``resnet50/101/152`` bottleneck blocks
(1x1 reduce, 3x3, 1x1 expand x4) in four stages of 64, 128, 256, 512 filters after a 7x7/2 convolution
and a 3x3/2 max-pool; global average pooling and one FC layer. ``wide-resnet50-2`` is the ImageNet
wide bottleneck network of Zagoruyko & Komodakis 2016 (inner 3x3 width doubled, outputs unchanged).

Named options (faithful defaults first):

* ``stride_in="1x1"`` puts a bottleneck's stride 2 on its first 1x1 convolution, as the paper
  (Sec. 3.3, Table 1's 3.8/7.6/11.3 GFLOPs); ``"3x3"`` is the widespread "ResNet v1.5" placement
  (torchvision, Goyal et al. 2017), same parameters, more multiply-adds (ResNet-50: ~4.1 G).
* ``shortcut="B"`` (paper's ImageNet choice, Sec. 3.3/4.1): identity shortcuts, 1x1 projections only
  where the shape changes; ``"A"``: zero-padded identity with stride-2 subsampling (no parameters);
  ``"C"``: every shortcut a projection. Projections are 1x1 conv + BN in these post-activation nets.
* ``zero_init_last_bn`` (Goyal et al. 2017, Sec. 5.1): the last BN of every residual branch starts at
  gamma = 0, so each unit starts as the identity.
* ``drop_path_rate`` (stochastic depth, Huang et al. 2016): see :class:`DropPath`.

The shared :class:`~cnnlab.models.residual.ResidualUnit` (``residual.py``) also builds the pre-activation variants of He et al. 2016b (Fig. 2
shortcut variants, Fig. 4 activation placements; ``preact_resnet.py``), the CIFAR ResNets and plain nets
(``resnet_cifar.py``) and Wide ResNets (``wide_resnet.py``); its layout is data
(:class:`ActivationPlacement`, ``SHORTCUT_VARIANTS``, :class:`ConvSpec` rows), checked row by row
against the papers in ``docs/models/resnet.md``.

Initialisation (He et al. 2016a Sec. 3.4 cites He et al. 2015): convolutions Kaiming-normal with
fan_out and ReLU gain, BN weight 1 and bias 0, the FC layer PyTorch's default; see :func:`cnnlab.models.residual.init_weights`.
"""

from __future__ import annotations

from cnnlab.errors import UsageError
from cnnlab.models.layers import check_choice
from cnnlab.models.registry import register_model
from cnnlab.models.residual import (
    SHORTCUT_TYPES,
    STRIDE_PLACEMENTS,
    ResNet,
    Stage,
)

RESNET_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition"
WRN_PAPER = "Zagoruyko & Komodakis 2016, Wide Residual Networks"


# ---------------------------------------------------------------------------------------------
# ImageNet ResNets, He et al. 2016a Table 1
# ---------------------------------------------------------------------------------------------

#: Table 1 columns: block kind and units per stage (conv2_x .. conv5_x)
RESNET_LAYERS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
#: Table 1 rows: base filters per stage, with the stride of each stage's first unit
IMAGENET_WIDTHS = (64, 128, 256, 512)
IMAGENET_STRIDES = (1, 2, 2, 2)


def imagenet_stages(depth: int) -> tuple[str, list[Stage]]:
    """Block kind and stages of the ``depth``-layer column of Table 1, or a UsageError naming the depths."""
    if depth not in RESNET_LAYERS:
        raise UsageError(
            f"ImageNet ResNet depth must be one of {', '.join(map(str, RESNET_LAYERS))}, got {depth}"
        )
    kind, units = RESNET_LAYERS[depth]
    return kind, [Stage(w, n, s) for w, n, s in zip(IMAGENET_WIDTHS, units, IMAGENET_STRIDES)]


def resnet(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    depth: int = 50,
    stride_in: str = "1x1",
    shortcut: str = "B",
    zero_init_last_bn: bool = False,
    inner_factor: float = 1,
    drop_path_rate: float = 0.0,
    drop_path_mode: str = "original",
) -> ResNet:
    """ImageNet ResNet-``depth`` of He et al. 2016a Table 1 (post-activation units)."""
    check_choice("shortcut type", shortcut, SHORTCUT_TYPES)
    check_choice("stride placement", stride_in, STRIDE_PLACEMENTS)
    kind, stages = imagenet_stages(depth)
    if kind == "basic" and inner_factor != 1:
        raise UsageError(
            f"inner_factor widens bottleneck blocks; ResNet-{depth} has basic blocks (use depth 50+)"
        )
    return ResNet(
        stages,
        block=kind,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        shortcut=shortcut,
        stride_in=stride_in,
        inner_factor=inner_factor,
        drop_path_rate=drop_path_rate,
        drop_path_mode=drop_path_mode,
        zero_init_last_bn=zero_init_last_bn,
    )


#: name -> (depth, parameters at 1000 classes with option B, Table 1's FLOPs = multiply-adds, in G)
IMAGENET_RESNETS = {
    "resnet18": (18, 11_689_512, 1.8),
    "resnet34": (34, 21_797_672, 3.6),
    "resnet50": (50, 25_557_032, 3.8),
    "resnet101": (101, 44_549_160, 7.6),
    "resnet152": (152, 60_192_808, 11.3),
}

for _name, (_depth, _params, _gmacs) in IMAGENET_RESNETS.items():
    register_model(
        _name,
        family="resnet",
        paper=RESNET_PAPER,
        input_size=(3, 224, 224),
        num_params=_params,
        params_source="torchvision docs (option B); derived by hand in docs/models/resnet.md",
        description=f"ResNet-{_depth}, He et al. 2016a Table 1 ({_gmacs} GFLOPs at 224 with stride on the 1x1)",
        depth=_depth,
    )(resnet)

register_model(
    "wide-resnet50-2",
    family="resnet",
    paper=WRN_PAPER,
    input_size=(3, 224, 224),
    num_params=68_883_240,
    params_source="torchvision docs; derived by hand in docs/models/resnet.md",
    description="Wide ResNet-50-2: ResNet-50 with the bottleneck's inner 1x1/3x3 width doubled",
    depth=50,
    inner_factor=2,
)(resnet)
