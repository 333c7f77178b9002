"""AlexNet-era plain networks (AlexNet, AlexNet-OWT, ZFNet, OverFeat, CNN-F/M/S) against their papers' tables."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models import check_input_size, count_params, create_model, model_info
from cnnlab.models.layers import local_response_norm


def meta_model(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options)


def conv_output_shapes(model: nn.Module, img_size: int, in_chans: int = 3) -> dict[str, tuple[int, ...]]:
    """(C, H, W) after every named layer of ``model.features`` on one meta image."""
    shapes: dict[str, tuple[int, ...]] = {}
    x = torch.empty(1, in_chans, img_size, img_size, device="meta")
    for name, layer in model.features.named_children():
        x = layer(x)
        shapes[name] = tuple(x.shape[1:])
    return shapes


def test_alexnet_neurons_per_layer_at_227() -> None:
    # survey slides: 290,400 (55x55x96) / 186,624 / 64,896 / 64,896 / 43,264 / 4096 / 4096 / 1000
    model = meta_model("alexnet")
    shapes = conv_output_shapes(model, 227)
    neurons = [torch.Size(shapes[f"conv{i}"]).numel() for i in range(1, 6)]
    assert shapes["conv1"] == (96, 55, 55)
    assert neurons == [290_400, 186_624, 64_896, 64_896, 43_264]
    assert [getattr(model.classifier, f"fc{i}").out_features for i in (6, 7, 8)] == [4096, 4096, 1000]
    assert model.classifier.fc6.in_features == 6 * 6 * 256


def test_alexnet_224_with_padding_matches_227_and_224_without_padding_derives_fc6() -> None:
    padded = meta_model("alexnet", img_size=224, conv1_padding=2)
    assert conv_output_shapes(padded, 224)["conv1"] == (96, 55, 55)
    assert count_params(padded) == 62_378_344
    unpadded = meta_model("alexnet", img_size=224)
    assert unpadded.classifier.fc6.in_features == 5 * 5 * 256  # 54 -> 26 -> 12 -> 5


def test_two_tower_halves_the_weights_of_conv2_conv4_conv5() -> None:
    one, two = meta_model("alexnet"), meta_model("alexnet", two_tower=True)
    assert count_params(two) == 60_965_224
    halved = sum(getattr(one.features, f"conv{i}").weight.numel() // 2 for i in (2, 4, 5))
    assert count_params(one) - count_params(two) == halved
    assert [getattr(two.features, f"conv{i}").groups for i in range(1, 6)] == [
        1,
        2,
        1,
        2,
        2,
    ]  # conv3 crosses (Fig. 2)


def test_lrn_matches_the_paper_formula() -> None:
    # b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2) ** beta, k=2, n=5, alpha=1e-4, beta=0.75
    torch.manual_seed(0)
    a = torch.randn(2, 9, 4, 4) * 30
    sq = a.pow(2)
    window = torch.stack([sq[:, max(0, i - 2) : i + 3].sum(1) for i in range(9)], dim=1)
    expected = a / (2 + 1e-4 * window).pow(0.75)
    torch.testing.assert_close(local_response_norm()(a), expected)


def test_alexnet_init_follows_section_5() -> None:
    torch.manual_seed(0)
    model = create_model("alexnet", img_size=67)  # smallest input: small fc6, fast
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            short = name.rsplit(".", 1)[-1]
            expected_bias = 1.0 if short in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
            assert torch.all(module.bias == expected_bias), short
            assert abs(module.weight.std().item() - 0.01) < 0.002, short


def test_alexnet_owt_is_torchvision_layout() -> None:
    model = meta_model("alexnet-owt")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (64, 11, 4, 2),
        (192, 5, 1, 2),
        (384, 3, 1, 1),
        (256, 3, 1, 1),
        (256, 3, 1, 1),
    ]
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in model.modules())
    assert count_params(meta_model("alexnet-owt", adaptive_pool=True)) == 61_100_840


def test_adaptive_pool_runs_on_other_sizes_without_rebuilding() -> None:
    model = meta_model("alexnet-owt", adaptive_pool=True)
    for size in (100, 224, 320):
        assert tuple(check_input_size(model, (3, size, size))) == (1, 1000)
    fixed = meta_model("alexnet-owt")
    with pytest.raises(UsageError, match="img_size=320"):
        check_input_size(fixed, (3, 320, 320))


# derived by hand backwards from the last pool (docs/models/*.md); ceil-mode pools accept a
# 2-pixel map under a 3x3 window, hence ZFNet's 47
@pytest.mark.parametrize(
    ("name", "smallest"),
    [
        ("alexnet", 67),
        ("zfnet", 47),
        ("overfeat-fast", 71),
        ("overfeat-accurate", 77),
        ("cnn-f", 39),
        ("cnn-m", 41),
        ("cnn-s", 19),  # conv2 (5x5, pad 1) needs 3 = pool1 (3/3) out -> 7 = conv1 (7x7/2) out -> 19
    ],
)
def test_too_small_img_size_names_the_smallest_that_works(name: str, smallest: int) -> None:
    with pytest.raises(UsageError, match=f"smallest input that works is 3x{smallest}x{smallest}"):
        meta_model(name, img_size=smallest - 1)
    meta_model(name, img_size=smallest)


def test_zfnet_map_sizes_follow_fig_3() -> None:
    shapes = conv_output_shapes(meta_model("zfnet"), 224)
    assert shapes["conv1"] == (96, 110, 110) and shapes["pool1"] == (96, 55, 55)
    assert shapes["conv2"] == (256, 26, 26) and shapes["pool2"] == (256, 13, 13)
    assert shapes["conv5"] == (256, 13, 13) and shapes["pool5"] == (256, 6, 6)
    names = list(shapes)
    assert names.index("norm1") == names.index("pool1") + 1  # pooled, then contrast-normalised


def test_overfeat_tables_1_and_3() -> None:
    fast = conv_output_shapes(meta_model("overfeat-fast"), 231)
    assert fast["pool1"][1:] == (28, 28) and fast["conv2"][1:] == (24, 24) and fast["pool5"] == (1024, 6, 6)
    accurate_model = meta_model("overfeat-accurate")
    accurate = conv_output_shapes(accurate_model, 221)
    assert accurate["pool1"][1:] == (36, 36) and accurate["pool2"][1:] == (15, 15)
    assert accurate["pool6"] == (1024, 5, 5)
    assert [m.out_features for m in accurate_model.classifier if isinstance(m, nn.Linear)] == [
        4096,
        4096,
        1000,
    ]
    assert list(accurate_model.classifier)[0] is accurate_model.classifier.fc7  # layers 7-9 are full
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in accurate_model.modules())


@pytest.mark.parametrize("name", ["cnn-f", "cnn-m", "cnn-s"])
def test_cnn_fms_reach_6x6_at_224(name: str) -> None:
    shapes = conv_output_shapes(meta_model(name), 224)
    assert shapes["pool5"][1:] == (6, 6)


@pytest.mark.parametrize("width", [2048, 1024, 128])
def test_narrow_full7_changes_only_full7_and_full8(width: int) -> None:
    narrow = meta_model(f"cnn-m-{width}")
    assert narrow.classifier.fc7.out_features == width
    # full7 loses (4096 - w) rows of 4096 weights + 1 bias; full8 loses (4096 - w) columns of 1000
    assert count_params(meta_model("cnn-m")) - count_params(narrow) == (4096 - width) * (4096 + 1 + 1000)


def test_unknown_variants_and_bad_options_are_one_line_usage_errors() -> None:
    with pytest.raises(UsageError, match="Valid OverFeat models: accurate, fast"):
        create_model("overfeat-fast", model="medium")
    with pytest.raises(UsageError, match="Valid CNN architectures: F, M, S"):
        create_model("cnn-m", arch="L")
    with pytest.raises(UsageError, match="Valid AlexNet widths: 2012, owt"):
        create_model("alexnet", widths="2013")
    with pytest.raises(UsageError, match="fc7_width must be"):
        create_model("cnn-m", fc7_width=0)
    with pytest.raises(UsageError, match="conv1_padding"):
        create_model("alexnet", conv1_padding=-1)
    with pytest.raises(UsageError, match="its options are: .*two_tower"):
        create_model("alexnet", towers=2)
    for bad in ({"num_classes": 0}, {"in_chans": 0}):
        with pytest.raises(UsageError):
            create_model("zfnet", **bad)


@pytest.mark.parametrize("name", ["alexnet", "alexnet-owt", "vgg16", "vgg-d"])
def test_pinned_macs_equal_the_layers_multiply_accumulates(name: str) -> None:
    """conv: output elements x (k*k*C_in/groups); linear: in x out (biases, pools, LRN not counted)."""
    info = model_info(name)
    model = meta_model(name)
    macs = []

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs.append(output[0].numel() * k)
        elif isinstance(module, nn.Linear):
            macs.append(module.in_features * module.out_features)

    for m in model.modules():
        m.register_forward_hook(count)
    model(torch.empty(1, *info.input_size, device="meta"))
    assert info.macs is not None and sum(macs) == info.macs
