"""BN-Inception, Inception-v3, Inception-v4 and the Inception-ResNets beyond shapes.

Grid sizes and widths against the papers' tables and figures (meta device), the auxiliary head of
Inception-v3, the residual scaling of the Inception-ResNets, and the errors for bad options and inputs.
"""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import UsageError
from cnnlab.models import check_input_size, count_params, create_model, model_info
from cnnlab.models.bn_inception import BNInceptionSpec
from cnnlab.models.inception_v4 import ResidualA, ResidualInception


def meta_model(name: str, **options) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, **options)


def shapes(model: torch.nn.Module, stages: list[str], size: int) -> list[tuple[int, int, int]]:
    return [tuple(model.stage_shape(stage, 3, size)) for stage in stages]


def test_bn_inception_follows_figure5() -> None:
    model = meta_model("bn-inception")
    stages = ["inception3b", "inception3c", "inception4b", "inception4c", "inception4e", "inception5b"]
    # 3c and 4e halve the grid and pass their input through (320 -> 576, 608 -> 1056); 4c's widths
    # add to 608 although the figure prints 576
    expected = [(320, 28, 28), (576, 14, 14), (576, 14, 14), (608, 14, 14), (1056, 7, 7), (1024, 7, 7)]
    assert shapes(model, stages, 224) == expected
    assert "branch1x1" not in model.inception3c and "proj" not in model.inception4e["branch_pool"]
    assert isinstance(model.inception5b["branch_pool"].pool, torch.nn.MaxPool2d)
    assert isinstance(model.inception5a["branch_pool"].pool, torch.nn.AvgPool2d)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == sum(
        isinstance(m, torch.nn.Conv2d) for m in model.modules()
    )
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_bn_inception_pool_type_must_be_avg_or_max() -> None:
    with pytest.raises(UsageError, match="Valid poolings: avg, max"):
        BNInceptionSpec(64, 64, 64, 64, 96, "min", 32)


def test_inception_v3_grids_follow_table1() -> None:
    model = meta_model("inception-v3")
    stages = ["pool_5a", "mixed_5d", "mixed_6a", "mixed_6e", "mixed_7a", "mixed_7c"]
    expected = [(192, 35, 35), (288, 35, 35), (768, 17, 17), (768, 17, 17), (1280, 8, 8), (2048, 8, 8)]
    assert shapes(model, stages, 299) == expected


def test_inception_v3_aux_head_matches_torchvision_count_and_weight() -> None:
    model = meta_model("inception-v3", aux_logits=True)
    assert count_params(model) == 27_161_264  # torchvision's inception_v3 with AuxLogits
    assert list(model.aux_heads) == ["mixed_6e"]
    assert model.aux_loss_weights == (0.4,) == model_info("inception-v3").aux_loss_weights
    assert meta_model("inception-v3").aux_loss_weights == ()


def test_inception_v3_aux_head_needs_a_5x5_grid() -> None:
    with pytest.raises(UsageError, match="auxiliary head: the smallest input that works is 3x299x299"):
        meta_model("inception-v3", aux_logits=True, img_size=224)
    with pytest.raises(
        UsageError, match="too small for inception-v3: the smallest input that works is 3x75x75"
    ):
        meta_model("inception-v3", img_size=64)


def test_inception_v4_grids_and_widths_follow_figure9() -> None:
    model = meta_model("inception-v4")
    stages = ["stem", "inception_a4", "reduction_a", "inception_b7", "reduction_b", "inception_c3"]
    expected = [(384, 35, 35), (384, 35, 35), (1024, 17, 17), (1024, 17, 17), (1536, 8, 8), (1536, 8, 8)]
    assert shapes(model, stages, 299) == expected
    assert model.head.drop.p == pytest.approx(0.2)  # "Dropout (keep 0.8)"


@pytest.mark.parametrize(
    ("name", "widths"),
    [
        ("inception-resnet-v1", [(256, 35), (896, 17), (1792, 8)]),  # Figures 14, 7, 12
        ("inception-resnet-v2", [(320, 35), (1088, 17), (2080, 8)]),  # the released network
    ],
)
def test_inception_resnet_grids_and_widths(name: str, widths: list[tuple[int, int]]) -> None:
    model = meta_model(name)
    got = shapes(model, ["block_a1", "block_b1", "block_c1"], 299)
    assert got == [(c, g, g) for c, g in widths]


def test_residual_scale_sets_every_block_and_v2_last_block_is_plain() -> None:
    model = meta_model("inception-resnet-v2", residual_scale=0.3)
    blocks = [m for m in model.modules() if isinstance(m, ResidualInception)]
    assert len(blocks) == 10 + 20 + 10
    assert {b.scale for b in blocks[:-1]} == {0.3}
    assert blocks[-1].scale == 1.0 and isinstance(blocks[-1].act, torch.nn.Identity)
    v1 = meta_model("inception-resnet-v1", residual_scale=(0.1, 0.2, 0.3))
    scales = [m.scale for m in v1.modules() if isinstance(m, ResidualInception)]
    assert scales == [0.1] * 5 + [0.2] * 10 + [0.3] * 5


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, (0.1, 0.2), "0.1"])
def test_residual_scale_out_of_range_is_a_usage_error(bad) -> None:
    # text is refused for every option that takes none (create_model), numbers out of range by the family
    expected = (
        "residual_scale takes a number or 3 comma-separated numbers .*, not text"
        if isinstance(bad, str)
        else r"residual_scale must be a number in \(0, 1\]"
    )
    with pytest.raises(UsageError, match=expected):
        meta_model("inception-resnet-v1", residual_scale=bad)


def test_residual_block_adds_the_scaled_branch_to_its_input() -> None:
    torch.manual_seed(0)
    block = ResidualA(4, 4, 4, 4, 4, 4).build_block(8, scale=0.25).eval()
    x = torch.randn(2, 8, 5, 5)
    residual = block.up(block.branches(x))
    torch.testing.assert_close(block(x), torch.relu(x + 0.25 * residual))
    torch.nn.init.zeros_(block.up.weight)
    torch.nn.init.zeros_(block.up.bias)
    torch.testing.assert_close(block(x), torch.relu(x))


# each check bisects the input size on the meta device (seconds for the big nets): two suffice
@pytest.mark.parametrize("name", ["bn-inception", "inception-v4"])
def test_input_too_small_names_the_smallest_size(name: str) -> None:
    model = meta_model(name).eval()
    with pytest.raises(UsageError, match=r"the smallest input that works is 3x\d+x\d+"):
        check_input_size(model, (3, 16, 16))


def test_unknown_option_names_the_valid_ones() -> None:
    with pytest.raises(UsageError, match="residual_scale"):
        meta_model("inception-resnet-v2", residual_scaling=0.1)
    with pytest.raises(UsageError, match="aux_logits"):
        meta_model("inception-v3", aux=True)
