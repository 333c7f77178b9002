"""OverFeat (Sermanet et al. 2014, "OverFeat: Integrated Recognition, Localization and Detection
using Convolutional Networks"), the classification networks of Table 1 (fast) and Table 3 (accurate).

Both tables as data (:data:`OVERFEAT_MODELS`): per layer the channels, filter size, stride,
zero-padding and the max-pool after it; ReLU after every layer, no contrast normalisation and
non-overlapping pooling (Sec. 3.1); dropout 0.5 on fc layers 6 and 7 (fast) / 7 and 8 (accurate).

* fast, 231x231 input: conv 96 11x11/4 pool 2/2; conv 256 5x5 pool 2/2; conv 512, 1024, 1024 3x3
  pad 1, pool 2/2; FC 3072, 4096, 1000 -> 6x6x1024 before fc6; 145,920,872 parameters.
* accurate, 221x221 input: conv 96 7x7/2 pool 3/3; conv 256 7x7 pool 2/2; conv 512, 512, 1024, 1024
  3x3 pad 1, pool 3/3; FC 4096, 4096, 1000 -> 5x5x1024 before fc7; 144,656,488 parameters.

Table 1's "spatial input size" for layer 2 (24x24) is the size after conv2, before its pooling
(231 -> 56 -> 28 -> 24 -> 12); Table 3's are true input sizes. Table 4 gives 145M and 144M
parameters, which the counts above match. The paper applies the FC layers convolutionally over
larger images (Sec. 3.5); here they are linear layers sized from ``img_size`` (default the
table's), and ``adaptive_pool=True`` (a deviation) pools any input to the table's map size.

Initialisation (Sec. 3.1): weights N(0, 0.01); the biases are not specified and start at 0.
:func:`init_overfeat`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cnnlab.models.layers import ConvLayer, MaxPool, PlainConvNet, check_choice, conv_stack, init_gaussian
from cnnlab.models.registry import register_model

PAPER = "Sermanet et al. 2014, OverFeat: Integrated Recognition, Localization and Detection using Convolutional Networks"


@dataclass(frozen=True)
class OverFeatSpec:
    """One OverFeat table: its convolution rows, hidden FC widths and input size."""

    convs: tuple[ConvLayer, ...]
    fc: tuple[int, ...]
    img_size: int


OVERFEAT_MODELS: dict[str, OverFeatSpec] = {
    # Table 1: layers 1-5 conv, 6-7 full, 8 output
    "fast": OverFeatSpec(
        convs=(
            ConvLayer(96, 11, stride=4, pool=MaxPool(2, 2)),
            ConvLayer(256, 5, pool=MaxPool(2, 2)),
            ConvLayer(512, 3, padding=1),
            ConvLayer(1024, 3, padding=1),
            ConvLayer(1024, 3, padding=1, pool=MaxPool(2, 2)),
        ),
        fc=(3072, 4096),
        img_size=231,
    ),
    # Table 3: layers 1-6 conv, 7-8 full, 9 output
    "accurate": OverFeatSpec(
        convs=(
            ConvLayer(96, 7, stride=2, pool=MaxPool(3, 3)),
            ConvLayer(256, 7, pool=MaxPool(2, 2)),
            ConvLayer(512, 3, padding=1),
            ConvLayer(512, 3, padding=1),
            ConvLayer(1024, 3, padding=1),
            ConvLayer(1024, 3, padding=1, pool=MaxPool(3, 3)),
        ),
        fc=(4096, 4096),
        img_size=221,
    ),
}


def init_overfeat(model: nn.Module) -> None:
    """Sec. 3.1: weights N(0, 0.01); biases (unspecified) 0."""
    init_gaussian(model, 0.01)


@register_model(
    "overfeat-fast",
    family="overfeat",
    paper=PAPER,
    input_size=(3, 231, 231),
    num_params=145_920_872,
    params_source="derived by hand from Table 1 (Table 4: 145M): see docs/models/overfeat.md",
    description="OverFeat fast model (Table 1): 5 conv, FC 3072-4096",
    model="fast",
    img_size=231,
)
@register_model(
    "overfeat-accurate",
    family="overfeat",
    paper=PAPER,
    input_size=(3, 221, 221),
    num_params=144_656_488,
    params_source="derived by hand from Table 3 (Table 4: 144M): see docs/models/overfeat.md",
    description="OverFeat accurate model (Table 3): 6 conv, FC 4096-4096",
    model="accurate",
    img_size=221,
)
def overfeat(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.5,
    model: str = "fast",
    img_size: int | tuple[int, int] | None = None,
    adaptive_pool: bool = False,
) -> PlainConvNet:
    """OverFeat ``model`` ("fast": Table 1, "accurate": Table 3); ``img_size`` defaults to the table's."""
    check_choice("OverFeat model", model, OVERFEAT_MODELS)
    spec = OVERFEAT_MODELS[model]
    img_size = spec.img_size if img_size is None else img_size
    features = conv_stack(spec.convs, in_chans)
    net = PlainConvNet(
        features, spec.fc, num_classes, in_chans, img_size, drop_rate, adaptive_pool, f"overfeat-{model}"
    )
    init_overfeat(net)
    net.classifier_init = init_overfeat
    return net
