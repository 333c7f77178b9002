"""The lecture nets exactly as the slides write them."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import UsageError
from cnnlab.models import check_input_size, count_params, create_model
from cnnlab.models.lecture import InceptionA, InceptionABranches, ResidualBlock


def test_slide_layer_widths() -> None:
    simple = create_model("lecture-simple")
    assert simple.head.fc.in_features == 320  # the slides' fc 320 -> 10
    assert create_model("lecture-inception").head.fc.in_features == 1408
    assert create_model("lecture-residual").head.fc.in_features == 512


def test_flatten_size_is_derived_for_other_inputs() -> None:
    model = create_model("lecture-simple", in_chans=3, img_size=32)
    assert model.head.fc.in_features == 20 * 5 * 5
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)


def test_inception_module_concatenates_to_88_channels() -> None:
    module = InceptionA(10)
    assert InceptionABranches().out_chs == 88
    assert module(torch.randn(2, 10, 12, 12)).shape == (2, 88, 12, 12)


def test_residual_block_adds_identity_before_relu() -> None:
    block = ResidualBlock(4)
    for conv in (block.conv1, block.conv2):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    x = torch.randn(1, 4, 5, 5)
    assert torch.equal(block(x), torch.relu(x))  # F(x) = 0 leaves relu(x)


def test_size_errors_name_what_works() -> None:
    model = create_model("lecture-simple")
    with pytest.raises(UsageError, match="smallest input that works is 1x16x16"):
        check_input_size(model, (1, 8, 8))
    with pytest.raises(UsageError, match="img_size=32"):
        check_input_size(model, (1, 32, 32))
    with pytest.raises(UsageError, match="1-channel"):
        check_input_size(model, (3, 28, 28))
    with pytest.raises(UsageError, match="too small"):
        create_model("lecture-residual", img_size=10)
    assert count_params(model) == 8490


def test_shape_checks_leave_the_weights_untouched() -> None:
    model = create_model("lecture-residual")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_input_size(model, (1, 28, 28))
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_another_input_size_is_a_clear_error_even_when_the_flattened_width_agrees() -> None:
    model = create_model("lecture-simple")
    with pytest.raises(
        UsageError, match=r"^lecture-simple was built for 1x28x28 input and got 1x32x32: .*img_size=32"
    ):
        model(torch.zeros(2, 1, 32, 32))
    # 1x20x44 gives a 20x2x8 map: 320 values like the 20x4x4 the fc was sized for, so torch ran it silently
    with pytest.raises(UsageError, match=r"got 1x20x44: .*got 20x2x8\); build it with img_size=\(20, 44\)"):
        model(torch.zeros(2, 1, 20, 44))
    assert model(torch.zeros(2, 1, 31, 31)).shape == (2, 10)  # every size giving the 20x4x4 map still runs
