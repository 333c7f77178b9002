"""What distinguishes the ResNet family beyond shapes (shapes and pinned counts: test_models_registry.py).

Expected numbers here are hand arithmetic from the papers' tables (docs/models/resnet.md), not outputs
of the code pasted back.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models import count_params, create_model, model_info
from cnnlab.models.residual import (
    ACTIVATION_PLACEMENTS,
    GATE_BIAS_INIT,
    ConvSpec,
    DropPath,
    ResidualUnit,
    ZeroPadShortcut,
    init_weights,
    stochastic_depth_rates,
    zero_init_residual_branches,
)
from cnnlab.models.resnet_cifar import CIFAR_RESNETS, cifar_resnet_params
from cnnlab.models.wide_resnet import WIDE_RESNETS, wide_resnet_params


def meta_model(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options)


def macs_at(model: nn.Module, size: int) -> int:
    """Multiply-accumulates of convolutions and FC layers for one image (meta device)."""
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * module.in_channels // module.groups * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.device("meta"):
        model.eval()(torch.empty(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return total


def unit(variant: str = "identity", activation: str = "original", chs: int = 8, **kwargs) -> ResidualUnit:
    """A basic unit with its residual branch silenced (last BN or last conv zero), in eval mode."""
    torch.manual_seed(0)
    block = ResidualUnit(
        chs, [ConvSpec(chs, 3), ConvSpec(chs, 3)], ACTIVATION_PLACEMENTS[activation], variant, **kwargs
    )
    last = [m for m in block.branch if hasattr(m, "weight")][-1]
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()
    return block.eval()


# --- ImageNet ResNets (He et al. 2016a Table 1) ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "paper_gflops", "v15_gmacs"),
    [
        ("resnet18", 1.8, 1.8),
        ("resnet34", 3.6, 3.7),
        ("resnet50", 3.8, 4.1),
        ("resnet101", 7.6, 7.8),
        ("resnet152", 11.3, 11.5),
    ],
)
def test_table1_multiply_adds_with_the_papers_stride_placement(
    name: str, paper_gflops: float, v15_gmacs: float
) -> None:
    original = macs_at(meta_model(name), 224) / 1e9
    v15 = macs_at(meta_model(name, stride_in="3x3"), 224) / 1e9
    assert abs(original - paper_gflops) < 0.1
    assert abs(v15 - v15_gmacs) < 0.1
    assert count_params(meta_model(name, stride_in="3x3")) == model_info(name).num_params


def test_standard_layer_names_for_the_analysis_tools() -> None:
    model = meta_model("resnet50")
    names = dict(model.named_modules())
    for name in ("conv1", "layer1", "layer2", "layer3", "layer4", "head.fc"):
        assert name in names
    assert names["layer2.0.branch.conv1"].stride == (2, 2)  # paper: the 1x1 reduces with stride 2
    assert meta_model("resnet50", stride_in="3x3").layer2[0].branch.conv2.stride == (2, 2)
    assert names["head.fc"].in_features == 2048


def test_shortcut_options_change_the_count_by_the_projections() -> None:
    b = model_info("resnet18").num_params
    # option C adds 1x1 conv + BN on the 2 + 1 + 1 + 1 identity units: 2*(64*64+128) + (128^2+256) + (256^2+512) + (512^2+1024)
    assert count_params(meta_model("resnet18", shortcut="C")) - b == 354_304
    # option A drops the three projections: (64*128+256) + (128*256+512) + (256*512+1024)
    assert b - count_params(meta_model("resnet18", shortcut="A")) == 173_824
    shortcut = meta_model("resnet18", shortcut="A").layer2[0].shortcut
    assert isinstance(shortcut, ZeroPadShortcut)
    x = torch.randn(2, 64, 8, 8)
    y = ZeroPadShortcut(64, 128, 2)(x)
    assert y.shape == (2, 128, 4, 4)
    assert torch.equal(y[:, :64], x[:, :, ::2, ::2]) and not y[:, 64:].any()


def test_zero_init_last_bn_and_he_initialisation() -> None:
    model = create_model("resnet18", zero_init_last_bn=True)
    assert all(not u.branch.bn2.weight.any() for u in model.units())
    assert all(u.branch.bn1.weight.eq(1).all() for u in model.units())
    assert create_model("resnet18").layer1[0].branch.bn2.weight.eq(1).all()
    conv = model.layer4[0].branch.conv2  # fan_out = 512 * 3 * 3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.05)
    with pytest.raises(UsageError, match="ends in BN"):
        init_weights(meta_model("preact-resnet18"), zero_init_last_bn=True)


@pytest.mark.parametrize(
    ("name", "zeroed", "last"),
    [
        ("resnet20-cifar", 9, "bn2"),  # post-activation: the branch's last BN
        ("resnet110-cifar-relu-before-add", 54, "bn2"),  # BN-ReLU after the last conv: that BN
        ("preact-resnet164-cifar", 54, "conv3"),  # pre-activation: the branch ends in its convolution
        ("plain20-cifar", 0, None),  # no shortcut to start as
        ("resnet110-cifar-scaling", 0, None),  # the shortcut halves the signal
    ],
)
def test_zero_init_residual_branches_starts_each_unit_as_its_shortcut(name: str, zeroed: int, last) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, in_chans=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert zero_init_residual_branches(model) == zeroed
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert len(changed) == zeroed and all(k.endswith(f"branch.{last}.weight") for k in changed)
    if zeroed:  # whatever reaches it, the branch adds nothing
        unit = model.eval().units()[1]
        assert not unit.branch(torch.randn(2, unit.in_chs, 4, 4)).any()


def test_wide_resnet50_2_doubles_only_the_inner_width() -> None:
    unit0 = meta_model("wide-resnet50-2").layer1[0].branch
    assert (unit0.conv1.out_channels, unit0.conv2.out_channels, unit0.conv3.out_channels) == (128, 128, 256)


# --- CIFAR ResNets, plain nets and name patterns ---------------------------------------------------


def test_cifar_counts_follow_the_closed_form_and_the_papers_millions() -> None:
    millions = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
    for depth, params in CIFAR_RESNETS.items():
        assert cifar_resnet_params(depth) == params == 97_216 * ((depth - 2) // 6) - 21_926
        assert round(params / 1e6, 2 if depth < 100 else 1) == millions[depth]
    by_pattern = {(16, 10): 17_116_634, (22, 10): 26_797_914, (28, 12): 52_517_850, (40, 8): 35_748_314}
    for (depth, k), params in by_pattern.items():
        assert wide_resnet_params(depth, k) == model_info(f"wrn-{depth}-{k}").num_params == params
    for (depth, k), (params, paper) in WIDE_RESNETS.items():
        assert wide_resnet_params(depth, k) == params
        if paper is not None:
            assert round(params / 1e6, 1) == paper


@pytest.mark.parametrize(("name", "units"), [("resnet74-cifar", 12), ("plain14-cifar", 2), ("wrn-34-2", 5)])
def test_any_valid_depth_by_name(name: str, units: int) -> None:
    model = meta_model(name)
    assert [len(s) for s in model.stages()] == [units] * 3
    assert count_params(model) == model_info(name).num_params
    widths = [s[0].out_chs for s in model.stages()]
    assert widths == ([32, 64, 128] if name.startswith("wrn") else [16, 32, 64])


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("resnet21-cifar", "depth must be 6n\\+2"),
        ("plain9-cifar", "6n\\+2"),
        ("wrn-27-10", "depth must be 6n\\+4"),
        ("wrn-28-0", "widening factor"),
    ],
)
def test_impossible_depths_name_the_rule(name: str, rule: str) -> None:
    with pytest.raises(UsageError, match=rule):
        create_model(name)


@pytest.mark.parametrize(
    ("name", "option", "message"),
    [
        ("resnet20-cifar", {"shortcut_variant": "gated"}, "exclusive_gating"),
        ("resnet20-cifar", {"activation": "preact"}, "full_preact"),
        ("resnet18", {"shortcut": "D"}, "Valid shortcut types: A, B, C"),
        ("resnet50", {"stride_in": "7x7"}, "1x1, 3x3"),
        ("resnet20-cifar", {"block": "dense"}, "basic, bottleneck"),
        ("resnet20-cifar", {"drop_path_mode": "scaled"}, "inverted"),
        ("resnet20-cifar", {"drop_path_rate": 1.0}, "\\[0, 1\\)"),
        ("resnet20-cifar", {"no_such": 1}, "options are"),
        ("resnet18", {"inner_factor": 2}, "basic blocks"),
        ("resnet20-cifar", {"in_chans": 0}, "in_chans"),
        ("resnet18", {"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_options_are_one_line_usage_errors(name: str, option: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        with torch.device("meta"):
            create_model(name, **option)
    assert "\n" not in str(err.value)


def test_plain_net_has_no_shortcut_and_same_layers() -> None:
    plain, residual = meta_model("plain20-cifar"), meta_model("resnet20-cifar")
    assert all(u.shortcut is None for u in plain.units())
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in residual.named_parameters()]
    block = unit("none")
    assert not block(torch.randn(2, 8, 6, 6)).any()  # silenced branch, no shortcut: nothing passes


def test_cifar_resnet_uses_option_a_and_bottleneck_option() -> None:
    model = meta_model("resnet20-cifar")
    assert sum(isinstance(u.shortcut, ZeroPadShortcut) for u in model.units()) == 2
    r164 = meta_model("preact-resnet164-cifar")
    assert [len(s) for s in r164.stages()] == [18, 18, 18]
    assert [s[0].out_chs for s in r164.stages()] == [64, 128, 256]
    with pytest.raises(UsageError, match="9n\\+2"):
        create_model("resnet32-cifar", block="bottleneck")


# --- He et al. 2016b: shortcut variants (Fig. 2) and activation placements (Fig. 4) ---------------


def test_constant_scaling_halves_the_shortcut() -> None:
    x = torch.rand(2, 8, 6, 6)  # non-negative, so the after-addition ReLU keeps it
    assert torch.allclose(unit("scaling")(x), 0.5 * x)
    assert torch.allclose(unit("identity")(x), x)


@pytest.mark.parametrize("variant", ["exclusive_gating", "shortcut_gating"])
def test_gates_start_nearly_closed_with_the_papers_bias(variant: str) -> None:
    block = unit(variant)
    assert block.gate.bias.eq(GATE_BIAS_INIT).all() and GATE_BIAS_INIT == -6.0
    with torch.no_grad():
        block.gate.weight.zero_()
    x = torch.rand(2, 8, 6, 6)
    closed = 1 - torch.sigmoid(torch.tensor(-6.0))  # 1 - g on the shortcut
    assert torch.allclose(block(x), closed * x)
    model = create_model("resnet110-cifar-exclusive-gating", gate_bias_init=0.0)
    assert model.layer1[0].gate.bias.eq(0).all()


def test_exclusive_gating_scales_the_branch_and_shortcut_gating_does_not() -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 8, 6, 6)
    exclusive, shortcut_only = unit("exclusive_gating"), unit("shortcut_gating")
    for block in (exclusive, shortcut_only):
        with torch.no_grad():
            block.gate.weight.zero_()
            block.gate.bias.zero_()  # g = 0.5
            block.branch[-1].bias.fill_(1.0)  # F(x) = 1 everywhere
    assert torch.allclose(exclusive(x), 0.5 * 1.0 + 0.5 * x)
    assert torch.allclose(shortcut_only(x), 1.0 + 0.5 * x)


def test_dropout_shortcut_drops_in_training_only() -> None:
    block = unit("dropout")
    x = torch.rand(4, 8, 6, 6) + 0.1
    assert torch.allclose(block(x), x)
    torch.manual_seed(0)
    y = block.train()(x)
    dropped, kept = y == 0, torch.isclose(y, 2 * x)  # inverted dropout p = 0.5
    assert (dropped | kept).all() and 0.3 < dropped.float().mean() < 0.7


def test_conv_shortcut_projects_every_unit() -> None:
    model = meta_model("resnet110-cifar-conv-shortcut")
    assert all(
        isinstance(u.shortcut, nn.Sequential) and u.shortcut.conv.kernel_size == (1, 1) for u in model.units()
    )


@pytest.mark.parametrize(
    ("activation", "branch_starts", "post"),
    [
        ("original", "conv1", ["relu2"]),
        ("bn_after_add", "conv1", ["bn2", "relu2"]),
        ("relu_before_add", "conv1", []),
        ("relu_preact", "relu1", []),
        ("full_preact", "bn1", []),
    ],
)
def test_activation_placements_follow_figure_4(activation: str, branch_starts: str, post: list[str]) -> None:
    block = ResidualUnit(8, [ConvSpec(8, 3), ConvSpec(8, 3)], ACTIVATION_PLACEMENTS[activation])
    first = (list(block.preact.named_children()) + list(block.branch.named_children()))[0][0]
    assert first == branch_starts
    assert [n for n, _ in block.post.named_children()] == post
    assert (activation == "relu_before_add") == isinstance(block.branch[-1], nn.ReLU)


def test_full_preactivation_passes_negative_values_through_the_addition() -> None:
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(unit(activation="full_preact")(x), x)  # nothing after the addition
    assert (unit(activation="original")(x) >= 0).all()  # ReLU after the addition
    assert (unit(activation="relu_before_add")(x) == x).all()  # branch is ReLU(0) = 0; identity passes
    assert torch.equal(unit(activation="relu_preact")(x), x)  # the pre-activation ReLU leaves h(x) alone


def test_preact_networks_follow_the_appendix() -> None:
    model = meta_model("preact-resnet110-cifar")
    assert isinstance(model.conv1.bn, nn.BatchNorm2d)  # first activation right after conv1
    assert len(model.layer1[0].preact) == 0 and len(model.layer1[1].preact) == 2
    assert [type(m) for m in model.final_act] == [nn.BatchNorm2d, nn.ReLU]  # extra activation at the end
    r164 = meta_model("preact-resnet164-cifar")
    proj = r164.layer2[0]
    assert proj.shared_preact and not hasattr(proj.shortcut, "bn")  # bare 1x1 conv on the activated input
    assert len(meta_model("resnet110-cifar").final_act) == 0


def test_wide_resnet_blocks() -> None:
    model = meta_model("wrn-28-10", block_dropout=0.3)
    assert [len(s) for s in model.stages()] == [4, 4, 4]
    assert [s[0].out_chs for s in model.stages()] == [160, 320, 640]
    block = model.layer1[0]
    assert [n for n, _ in block.branch.named_children()] == ["conv1", "bn2", "relu2", "drop1", "conv2"]
    assert [n for n, _ in block.preact.named_children()] == ["bn1", "relu1"] and block.shared_preact
    assert not hasattr(model.conv1, "bn")  # WRN's stem is a bare convolution
    assert not meta_model("wrn-40-1").layer1[0].shared_preact  # 16 -> 16: identity shortcut


# --- Stochastic depth (Huang et al. 2016) -----------------------------------------------------------


def test_linear_decay_rule_reaches_p_l() -> None:
    assert stochastic_depth_rates(4, 0.5) == [0.125, 0.25, 0.375, 0.5]
    model = meta_model("resnet110-cifar", drop_path_rate=0.5)
    probs = [u.drop_path.drop_prob for u in model.units()]
    assert len(probs) == 54 and probs[-1] == pytest.approx(0.5) and probs[0] == pytest.approx(0.5 / 54)
    assert probs == sorted(probs)


@pytest.mark.parametrize("mode", ["original", "inverted"])
def test_drop_path_drops_whole_samples(mode: str) -> None:
    layer = DropPath(0.5, mode)
    x = torch.ones(512, 3, 2, 2)
    torch.manual_seed(0)
    y = layer.train()(x)
    per_sample = y.flatten(1)
    assert (per_sample == per_sample[:, :1]).all()  # one decision per sample
    scale = 1.0 if mode == "original" else 2.0
    assert set(per_sample[:, 0].unique().tolist()) == {0.0, scale}
    expected_eval = 0.5 if mode == "original" else 1.0  # paper: scale by survival at test time
    assert torch.allclose(layer.eval()(x), expected_eval * x)


def test_drop_path_trains_the_cifar_net() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20-cifar", drop_path_rate=0.5, num_classes=3)
    out = model(torch.randn(4, 3, 8, 8))
    out.sum().backward()
    assert out.shape == (4, 3) and torch.isfinite(out).all()
