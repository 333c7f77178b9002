"""VGG configurations A-E against Table 1 and the case-study slides' per-layer figures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models import check_input_size, count_params, create_model
from cnnlab.models.vgg import VGG_CONFIGS


def meta_model(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options)


def test_vgg16_per_layer_parameters_match_the_slides() -> None:
    model = meta_model("vgg16")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    # slides: (3*3*3)*64 = 1,728 ... (3*3*512)*512 = 2,359,296, weights only
    assert [c.weight.numel() for c in convs] == [
        1_728, 36_864, 73_728, 147_456, 294_912, 589_824, 589_824,
        1_179_648, 2_359_296, 2_359_296, 2_359_296, 2_359_296, 2_359_296,
    ]  # fmt: skip
    fcs = [m.weight.numel() for m in model.classifier if isinstance(m, nn.Linear)]
    assert fcs == [102_760_448, 16_777_216, 4_096_000]  # fc6 on the 7x7x512 map at 224


@pytest.mark.parametrize(
    ("name", "weight_layers"),
    [("vgg-a", 11), ("vgg-a-lrn", 11), ("vgg-b", 13), ("vgg-c", 16), ("vgg-d", 16), ("vgg-e", 19)],
)
def test_weight_layers_per_configuration(name: str, weight_layers: int) -> None:
    model = meta_model(name)
    assert sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules()) == weight_layers


def test_configuration_c_has_three_1x1_layers_closing_stages_3_to_5() -> None:
    model = meta_model("vgg-c")
    ones = [
        name
        for name, m in model.features.named_children()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    assert ones == ["conv3_3", "conv4_3", "conv5_3"]


def test_a_lrn_normalises_after_the_first_layer() -> None:
    names = list(meta_model("vgg-a-lrn").features._modules)
    assert names[:4] == ["conv1_1", "relu1_1", "norm1_1", "pool1"]
    assert count_params(meta_model("vgg-a-lrn")) == count_params(meta_model("vgg-a"))


@pytest.mark.parametrize("config", ["A", "B", "D", "E"])
def test_batch_norm_adds_a_scale_and_shift_per_conv_channel(config: str) -> None:
    plain = meta_model("vgg-d", config=config)
    with_bn = meta_model("vgg-d", config=config, batch_norm=True)
    widths = [r for r in VGG_CONFIGS[config] if isinstance(r, int)]
    assert count_params(with_bn) - count_params(plain) == 2 * sum(widths)


def test_aliases_are_the_paper_configurations() -> None:
    for alias, paper_name in (("vgg11", "vgg-a"), ("vgg13", "vgg-b"), ("vgg16", "vgg-d"), ("vgg19", "vgg-e")):
        assert str(meta_model(alias)) == str(meta_model(paper_name))


def test_fc6_is_derived_from_img_size_and_adaptive_pool_is_a_named_option() -> None:
    small = meta_model("vgg-a", img_size=64)
    assert small.classifier.fc6.in_features == 512 * 2 * 2
    assert meta_model("vgg-a", img_size=(32, 96)).classifier.fc6.in_features == 512 * 1 * 3
    with pytest.raises(UsageError, match="img_size=96"):
        check_input_size(small, (3, 96, 96))
    adaptive = meta_model("vgg-a", adaptive_pool=True)
    assert count_params(adaptive) == 132_863_336  # pools to the 7x7 map of 224
    for size in (32, 96, 224, 300):
        assert tuple(check_input_size(adaptive, (3, size, size))) == (1, 1000)


def test_input_below_32_names_the_smallest_size() -> None:
    with pytest.raises(UsageError, match="smallest input that works is 3x32x32"):
        meta_model("vgg16", img_size=31)
    with pytest.raises(UsageError, match="smallest input that works is 1x32x32"):
        check_input_size(meta_model("vgg16", in_chans=1, img_size=32), (1, 16, 16))


def test_gaussian_and_xavier_initialisation() -> None:
    torch.manual_seed(0)
    gaussian = create_model("vgg-a", img_size=32, num_classes=10)
    conv = gaussian.features.conv3_1
    assert abs(conv.weight.std().item() - 0.01) < 0.001 and torch.all(conv.bias == 0)
    xavier = create_model("vgg-a", img_size=32, num_classes=10, init="xavier")
    conv = xavier.features.conv3_1  # 128 -> 256, 3x3: bound sqrt(6 / (fan_in + fan_out))
    bound = (6 / (128 * 9 + 256 * 9)) ** 0.5
    assert conv.weight.abs().max().item() <= bound
    assert abs(conv.weight.std().item() - bound / 3**0.5) < 0.05 * bound


def test_unknown_configuration_and_init_name_the_valid_choices() -> None:
    with pytest.raises(UsageError, match="Valid VGG configurations: A, A-LRN, B, C, D, E"):
        create_model("vgg16", config="F")
    with pytest.raises(UsageError, match="Valid VGG inits: gaussian, xavier"):
        create_model("vgg16", init="he")
    with pytest.raises(UsageError, match="its options are: .*batch_norm"):
        create_model("vgg16", bn=True)


def test_batch_norm_variant_too_small_is_a_usage_error_not_a_batch_norm_error() -> None:
    with pytest.raises(UsageError, match="smallest input that works is 3x32x32"):
        meta_model("vgg16-bn", img_size=16)
    assert meta_model("vgg16-bn", img_size=32).training
