"""CNN-F, CNN-M and CNN-S (Chatfield et al. 2014, "Return of the Devil in the Details: Delving Deep
into Convolutional Nets", Table 1), and CNN-M with a narrower last hidden layer (CNN-M 2048/1024/128).

Table 1 row by row (ReLU after every layer; "xN pool" is max-pooling with stride N; LRN as AlexNet):

=====  ==================  ====================  =========  =========  ==============  =====  =====
arch   conv1               conv2                 conv3      conv4      conv5           full6  full7
=====  ==================  ====================  =========  =========  ==============  =====  =====
F      64x11x11 st4 pad0   256x5x5 st1 pad2      256x3x3    256x3x3    256x3x3 x2pool  4096   4096
       LRN, x2 pool        LRN, x2 pool          st1 pad1   st1 pad1   st1 pad1        drop   drop
M      96x7x7 st2 pad0     256x5x5 st2 pad1      512x3x3    512x3x3    512x3x3 x2pool  4096   4096
       LRN, x2 pool        LRN, x2 pool
S      96x7x7 st2 pad0     256x5x5 st1 pad1      512x3x3    512x3x3    512x3x3 x3pool  4096   4096
       LRN, x3 pool        x2 pool
=====  ==================  ====================  =========  =========  ==============  =====  =====

The table gives each pool's downsampling factor, not its window: the windows here are those of
the authors' released models (3x3 for x2 and x3 pools, 2x2 for CNN-S's pool2), with the ceil-mode
rounding of their Caffe/MatConvNet implementations; at 224x224 every variant then reaches a 6x6
pool5 map (fc6 in = 6x6x256 for F, 6x6x512 for M and S). ``cnn-m-2048``, ``cnn-m-1024`` and
``cnn-m-128`` are CNN-M with full7 narrowed to 2048, 1024 and 128 units (the paper's "CNN-M 2048", "CNN-M 1024", "CNN-M 128").
``fc7_width`` sets that width for any architecture; ``img_size`` sizes full6 for other inputs;
``adaptive_pool=True`` (a deviation) pools any input to the 224x224 map size.

Initialisation: the paper states none of its own for these AlexNet-like networks; the AlexNet
Gaussian N(0, 0.01) is used, with biases 0 (our documented choice). :func:`init_cnn_fms`.
"""

from __future__ import annotations

from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.layers import ConvLayer, MaxPool, PlainConvNet, check_choice, conv_stack, init_gaussian
from cnnlab.models.registry import register_model

PAPER = "Chatfield et al. 2014, Return of the Devil in the Details: Delving Deep into Convolutional Nets"

POOL_X2 = MaxPool(3, 2)
POOL_X3 = MaxPool(3, 3)

#: Table 1, conv1-conv5 of each architecture
CNN_ARCHS: dict[str, tuple[ConvLayer, ...]] = {
    "F": (
        ConvLayer(64, 11, stride=4, padding=0, lrn=True, pool=POOL_X2),
        ConvLayer(256, 5, stride=1, padding=2, lrn=True, pool=POOL_X2),
        ConvLayer(256, 3, padding=1),
        ConvLayer(256, 3, padding=1),
        ConvLayer(256, 3, padding=1, pool=POOL_X2),
    ),
    "M": (
        ConvLayer(96, 7, stride=2, padding=0, lrn=True, pool=POOL_X2),
        ConvLayer(256, 5, stride=2, padding=1, lrn=True, pool=POOL_X2),
        ConvLayer(512, 3, padding=1),
        ConvLayer(512, 3, padding=1),
        ConvLayer(512, 3, padding=1, pool=POOL_X2),
    ),
    "S": (
        ConvLayer(96, 7, stride=2, padding=0, lrn=True, pool=POOL_X3),
        ConvLayer(256, 5, stride=1, padding=1, pool=MaxPool(2, 2)),
        ConvLayer(512, 3, padding=1),
        ConvLayer(512, 3, padding=1),
        ConvLayer(512, 3, padding=1, pool=POOL_X3),
    ),
}
FC6_WIDTH = 4096


def init_cnn_fms(model: nn.Module) -> None:
    """AlexNet's Gaussian (the paper states no initialisation): weights N(0, 0.01), biases 0."""
    init_gaussian(model, 0.01)


def chatfield_cnn(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.5,
    arch: str = "M",
    fc7_width: int = 4096,
    img_size: int | tuple[int, int] = 224,
    adaptive_pool: bool = False,
) -> PlainConvNet:
    """CNN-``arch`` of Table 1 (F, M or S) with ``fc7_width`` units in full7."""
    check_choice("CNN architecture", arch, CNN_ARCHS)
    if not isinstance(fc7_width, int) or fc7_width < 1:
        raise UsageError(f"fc7_width must be a whole number of at least 1, got {fc7_width!r}")
    name = f"cnn-{arch.lower()}" + (f"-{fc7_width}" if fc7_width != FC6_WIDTH else "")
    features = conv_stack(CNN_ARCHS[arch], in_chans, ceil_mode=True)
    model = PlainConvNet(
        features, (FC6_WIDTH, fc7_width), num_classes, in_chans, img_size, drop_rate, adaptive_pool, name
    )
    init_cnn_fms(model)
    model.classifier_init = init_cnn_fms
    return model


# (name, arch, full7 width, parameters at 1000 classes): derivations in docs/models/cnn_fms.md
for _name, _arch, _fc7, _params in (
    ("cnn-f", "F", 4096, 60_834_536),
    ("cnn-m", "M", 4096, 102_908_520),
    ("cnn-s", "S", 4096, 102_908_520),
    ("cnn-m-2048", "M", 2048, 92_469_864),
    ("cnn-m-1024", "M", 1024, 87_250_536),
    ("cnn-m-128", "M", 128, 82_683_624),
):
    register_model(
        _name,
        family="cnn-fms",
        paper=PAPER,
        input_size=(3, 224, 224),
        num_params=_params,
        params_source="derived by hand from Table 1: see docs/models/cnn_fms.md",
        description=f"CNN-{_arch} (Table 1)" + (f", full7 of {_fc7}" if _fc7 != FC6_WIDTH else ""),
        arch=_arch,
        fc7_width=_fc7,
    )(chatfield_cnn)
