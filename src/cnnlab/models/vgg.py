"""VGG configurations A to E (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", Table 1).

Each configuration is a list read row by row from Table 1: an int ``n`` is a ``conv3-n`` layer
(3x3, stride 1, padding 1, ReLU), :class:`Conv1x1` a ``conv1-n`` layer (configuration C), ``"LRN"``
the local response normalisation of A-LRN (parameters of Krizhevsky et al., Sec. 2.1) and ``"M"`` a
2x2 stride-2 max-pool. The head is FC-4096, FC-4096, FC-1000 with dropout 0.5 after the first two
(Sec. 3.1); fc6 sees the 7x7x512 pool5 map at 224x224 (102,760,448 weights), and its width is
derived from ``img_size`` so smaller inputs (down to 32x32) work.

Names: ``vgg-a``, ``vgg-a-lrn``, ``vgg-b``, ``vgg-c``, ``vgg-d``, ``vgg-e`` as in the paper, the
common aliases ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19`` (A, B, D, E) and ``vgg11-bn`` ...
``vgg19-bn``.

Named deviations (never on by default):

* ``batch_norm=True`` - batch norm after every convolution (the ``-bn`` names; post-2015, as in
  torchvision, convolution biases kept);
* ``adaptive_pool=True`` - adaptive average pooling to the pool5 map size at ``img_size`` (7x7 at
  224) before fc6, as torchvision does, so one model runs on any input size.

Initialisation (Sec. 3.1): weights N(0, 0.01) and zero biases (``init="gaussian"``); the paper
notes that the Glorot & Bengio (2010) procedure also trains the deep nets without pre-training
(``init="xavier"``, uniform, zero biases). The paper itself initialised D and E from a trained A;
that staged schedule is training, not architecture, and is left to the trainer. :func:`init_vgg`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from torch import nn

from cnnlab.models.layers import PlainConvNet, check_choice, init_gaussian, local_response_norm
from cnnlab.models.registry import register_model

PAPER = "Simonyan & Zisserman 2015, Very Deep Convolutional Networks for Large-Scale Image Recognition"


@dataclass(frozen=True)
class Conv1x1:
    """A ``conv1-n`` row of Table 1 (configuration C): 1x1 convolution, stride 1, ReLU."""

    out_chs: int


VggRow = int | Conv1x1 | str

#: Table 1, column by column ("M": max-pool; "LRN": local response normalisation)
VGG_CONFIGS: dict[str, list[VggRow]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        Conv1x1(256),
        "M",
        512,
        512,
        Conv1x1(512),
        "M",
        512,
        512,
        Conv1x1(512),
        "M",
    ],  # fmt: skip
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],  # fmt: skip
}
VGG_FC = (4096, 4096)
VGG_INITS = ("gaussian", "xavier")


def vgg_features(config: Sequence[VggRow], in_chans: int, batch_norm: bool) -> nn.Sequential:
    """Build ``features`` from a Table 1 column, naming layers Caffe-style: ``conv3_2``, ``relu3_2``, ``pool3``."""
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    chs, stage, index = in_chans, 1, 0
    for row in config:
        if row == "M":
            modules[f"pool{stage}"] = nn.MaxPool2d(2, 2)
            stage, index = stage + 1, 0
        elif row == "LRN":
            modules[f"norm{stage}_{index}"] = local_response_norm()
        else:
            index += 1
            out, kernel = (row.out_chs, 1) if isinstance(row, Conv1x1) else (row, 3)
            modules[f"conv{stage}_{index}"] = nn.Conv2d(chs, out, kernel, padding=kernel // 2)
            if batch_norm:
                modules[f"bn{stage}_{index}"] = nn.BatchNorm2d(out)
            modules[f"relu{stage}_{index}"] = nn.ReLU(inplace=True)
            chs = out
    return nn.Sequential(modules)


def init_vgg(model: nn.Module, init: str = "gaussian") -> None:
    """Sec. 3.1: weights N(0, 0.01), biases 0; ``init="xavier"``: Glorot uniform weights, biases 0."""
    if init == "gaussian":
        init_gaussian(model, 0.01)
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def vgg(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.5,
    config: str = "D",
    batch_norm: bool = False,
    img_size: int | tuple[int, int] = 224,
    adaptive_pool: bool = False,
    init: str = "gaussian",
) -> PlainConvNet:
    """VGG network of Table 1 column ``config`` (A, A-LRN, B, C, D, E)."""
    check_choice("VGG configuration", config, VGG_CONFIGS)
    check_choice("VGG init", init, VGG_INITS)
    name = f"vgg-{config.lower()}" + ("-bn" if batch_norm else "")
    features = vgg_features(VGG_CONFIGS[config], in_chans, batch_norm)
    model = PlainConvNet(
        features, VGG_FC, num_classes, in_chans, img_size, drop_rate, adaptive_pool, name, first_fc=6
    )
    init_vgg(model, init)
    model.classifier_init = partial(init_vgg, init=init)
    return model


#: VGG-16 multiply-accumulates of one 224x224 image, derived by hand in docs/models/vgg.md
VGG16_MACS = 15_470_264_320


def _register(name: str, config: str, num_params: int, source: str, batch_norm: bool = False) -> None:
    weight_layers = sum(not isinstance(r, str) for r in VGG_CONFIGS[config]) + len(VGG_FC) + 1
    register_model(
        name,
        family="vgg",
        paper=PAPER,
        input_size=(3, 224, 224),
        num_params=num_params,
        params_source=source,
        macs=VGG16_MACS if config == "D" and not batch_norm else None,
        description=f"VGG configuration {config} ({weight_layers} weight layers)"
        + (", batch norm" if batch_norm else ""),
        config=config,
        batch_norm=batch_norm,
    )(vgg)


_BY_HAND = "derived by hand from Table 1: see docs/models/vgg.md"
_PARAMS_SOURCE = "torchvision docs; derivation in docs/models/vgg.md"
# (name, Table 1 column, parameters at 1000 classes, source)
for _name, _config, _params, _source in (
    ("vgg-a", "A", 132_863_336, _BY_HAND),
    ("vgg-a-lrn", "A-LRN", 132_863_336, _BY_HAND),
    ("vgg-b", "B", 133_047_848, _BY_HAND),
    ("vgg-c", "C", 133_638_952, _BY_HAND),
    ("vgg-d", "D", 138_357_544, _BY_HAND),
    ("vgg-e", "E", 143_667_240, _BY_HAND),
    ("vgg11", "A", 132_863_336, _PARAMS_SOURCE),
    ("vgg13", "B", 133_047_848, _PARAMS_SOURCE),
    ("vgg16", "D", 138_357_544, _PARAMS_SOURCE),
    ("vgg19", "E", 143_667_240, _PARAMS_SOURCE),
):
    _register(_name, _config, _params, _source)
for _name, _config, _params, _source in (
    ("vgg11-bn", "A", 132_868_840, _PARAMS_SOURCE),
    ("vgg13-bn", "B", 133_053_736, _BY_HAND),
    ("vgg16-bn", "D", 138_365_992, _PARAMS_SOURCE),
    ("vgg19-bn", "E", 143_678_248, _BY_HAND),
):
    _register(_name, _config, _params, _source, batch_norm=True)
