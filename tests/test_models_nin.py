"""Network in Network: mlpconv widths, no FC layer, class maps averaged into logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models import check_input_size, create_model


def meta_model(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options)


def test_cifar_mlpconv_widths_and_map_sizes() -> None:
    model = meta_model("nin-cifar")
    convs = {
        n: (m.out_channels, m.kernel_size[0]) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
    }
    assert convs == {
        "features.conv1": (192, 5), "features.cccp1": (160, 1), "features.cccp2": (96, 1),
        "features.conv2": (192, 5), "features.cccp3": (192, 1), "features.cccp4": (192, 1),
        "features.conv3": (192, 3), "features.cccp5": (192, 1), "head.cccp6": (10, 1),
    }  # fmt: skip
    x = torch.empty(1, 3, 32, 32, device="meta")
    assert model.features[:8](x).shape[2:] == (16, 16)  # through pool1
    assert model.features(x).shape[1:] == (192, 8, 8)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


def test_dropout_follows_every_mlpconv_layer_but_the_last() -> None:
    for name, blocks in (("nin-cifar", 3), ("nin", 4)):
        features = meta_model(name).features
        drops = [n for n, m in features.named_children() if isinstance(m, nn.Dropout)]
        assert drops == [f"drop{b}" for b in range(1, blocks)]
        assert list(features._modules)[-1].startswith("relu_cccp")  # nothing after the last mlpconv


def test_imagenet_nin_reaches_6x6_and_has_1000_class_maps() -> None:
    model = meta_model("nin")
    assert model.features(torch.empty(1, 3, 224, 224, device="meta")).shape[1:] == (1024, 6, 6)
    assert model.head.cccp8.out_channels == 1000


def test_logits_are_the_average_of_the_rectified_class_maps() -> None:
    torch.manual_seed(0)
    model = create_model("nin-cifar", num_classes=4).eval()
    maps = torch.randn(2, 192, 8, 8)
    expected = torch.relu(model.head.cccp6(maps)).mean(dim=(2, 3))
    torch.testing.assert_close(model.forward_head(maps), expected)


def test_runs_on_any_size_above_the_minimum_and_names_it_below() -> None:
    model = meta_model("nin")
    for size in (64, 224, 257):
        assert tuple(check_input_size(model, (3, size, size))) == (1, 1000)
    # 11x11/4 conv then three ceil-mode 3x3/2 pools: 39 -> 8 -> 4 -> 2 -> 1 (docs/models/nin.md)
    with pytest.raises(UsageError, match="smallest input that works is 3x39x39"):
        check_input_size(model, (3, 38, 38))


def test_glorot_initialisation_and_bad_arguments() -> None:
    torch.manual_seed(0)
    model = create_model("nin-cifar")
    conv = (
        model.features.conv2
    )  # Glorot: std sqrt(2 / (fan_in + fan_out)), fan-in 96 * 5 * 5, fan-out 192 * 5 * 5
    assert abs(conv.weight.std().item() - (2 / (96 * 25 + 192 * 25)) ** 0.5) < 0.001
    assert torch.all(conv.bias == 0)
    with pytest.raises(UsageError, match="its options are: none"):
        create_model("nin", img_size=224)
    with pytest.raises(UsageError):
        create_model("nin-cifar", num_classes=0)
