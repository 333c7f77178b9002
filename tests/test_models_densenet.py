"""DenseNet beyond shapes: the paper's channel arithmetic, named deviations, depth rules, clear errors,
and a memory-efficient mode that computes exactly what the plain one does."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models import count_params, create_model, model_info
from cnnlab.models.densenet import (
    IMAGENET_CONFIGS,
    DenseNet,
    cifar_config,
    expected_num_params,
)
from cnnlab.models.layers import ShapeOnlyNorm, check_input_size, meta_call, smallest_input_size


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: OpenMP barriers, not arithmetic, dominate with 2 threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def meta_model(name: str, **options) -> DenseNet:
    with torch.device("meta"):
        return create_model(name, **options)


def stage_out_channels(model: DenseNet, in_chans: int, size: int) -> dict[str, int]:
    """Output channels of every stage of ``model.features``, measured by a meta-device forward."""
    with torch.device("meta"):
        x = torch.empty(1, in_chans, size, size)
    channels = {}
    with ShapeOnlyNorm():  # meta batch norm's decomposition costs ~25 ms a call
        for name, stage in model.features.named_children():
            x = stage(x)
            channels[name] = x.shape[1]
    return channels


def test_densenet121_batch_norms_stay_exactly_nn_batchnorm2d() -> None:
    # thop and ptflops look modules up by exact class: a swapped __class__ hides every batch norm from them
    model = create_model("densenet121")
    norms = [
        m for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    ]  # 2 per dense layer, stem, 3 transitions, final
    assert len(norms) == 121 and all(type(m) is nn.BatchNorm2d for m in norms)
    check_input_size(model, (3, 224, 224))  # a meta shape probe, and a real one
    model.eval()(torch.zeros(1, 3, 32, 32))
    assert all(type(m) is nn.BatchNorm2d for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_densenet121_channels_follow_the_growth_and_compression_arithmetic() -> None:
    # stem 2k = 64; block i adds n_i * 32; transitions halve: 64+6*32=256 -> 128, 128+12*32=512 -> 256,
    # 256+24*32=1024 -> 512, 512+16*32=1024
    model = meta_model("densenet121")
    assert model.block_out_chs == (256, 512, 1024, 1024)
    assert model.transition_out_chs == (128, 256, 512)
    measured = stage_out_channels(model, 3, 224)
    assert [measured[f"denseblock{i}"] for i in range(1, 5)] == [256, 512, 1024, 1024]
    assert [measured[f"transition{i}"] for i in range(1, 4)] == [128, 256, 512]


@pytest.mark.parametrize("name", ["densenet-40-12", "densenet-bc-100-12", "densenet161"])
def test_exposed_block_channels_equal_the_module_outputs(name: str) -> None:
    model = meta_model(name)
    measured = stage_out_channels(model, 3, model_info(name).input_size[-1])
    blocks = tuple(v for k, v in measured.items() if k.startswith("denseblock"))
    transitions = tuple(v for k, v in measured.items() if k.startswith("transition"))
    assert blocks == model.block_out_chs
    assert transitions == model.transition_out_chs


def test_cifar_channels_plain_and_bc() -> None:
    # plain L=40, k=12: 16 + 12*12 = 160, no compression; BC L=100: 2k = 24 + 16*12 = 216 -> floor(108)
    assert meta_model("densenet-40-12").block_out_chs == (160, 304, 448)
    bc = meta_model("densenet-bc-100-12")
    assert bc.block_out_chs == (216, 300, 342)
    assert bc.transition_out_chs == (108, 150)


@pytest.mark.parametrize(
    "name, millions",
    [  # paper Table 2, parameters at 10 classes
        ("densenet-40-12", 1.0),
        ("densenet-100-12", 7.0),
        ("densenet-100-24", 27.2),
        ("densenet-bc-100-12", 0.8),
        ("densenet-bc-250-24", 15.3),
        ("densenet-bc-190-40", 25.6),
    ],
)
def test_cifar_counts_round_to_the_papers_table_2(name: str, millions: float) -> None:
    info = model_info(name)
    assert round(info.num_params / 1e6, 1) == millions
    assert count_params(meta_model(name)) == info.num_params


def test_closed_form_count_reproduces_the_hand_derived_figures() -> None:
    assert expected_num_params(cifar_config(40, 12), 10) == 1_019_722
    assert expected_num_params(cifar_config(100, 12, "bc"), 10) == 769_162
    pinned = {name: model_info(name).num_params for name in IMAGENET_CONFIGS}
    assert {name: expected_num_params(cfg, 1000) for name, cfg in IMAGENET_CONFIGS.items()} == pinned


@pytest.mark.parametrize(
    "options",
    [
        {"compression": 1.0},
        {"bottleneck": False},
        {"bn_size": 2},
        {"growth_rate": 24},
        {"compression": 0.25, "num_classes": 100, "in_chans": 1},
    ],
)
def test_named_deviations_change_the_count_as_the_rules_say(options: dict) -> None:
    model = meta_model("densenet121", **options)
    expected = expected_num_params(model.config, options.get("num_classes", 1000), options.get("in_chans", 3))
    assert count_params(model) == expected
    assert count_params(model) != model_info("densenet121").num_params


def test_growth_rate_override_keeps_the_2k_stem() -> None:
    assert meta_model("densenet121", growth_rate=24).config.stem_chs == 48


@pytest.mark.parametrize("variant", ["plain", "b", "c", "bc"])
def test_cifar_variants_set_bottleneck_and_compression(variant: str) -> None:
    depth = 40 if variant in ("plain", "c") else 76
    model = meta_model("densenet-40-12", depth=depth, variant=variant)
    cfg = model.config
    assert cfg.bottleneck == ("b" in variant)
    assert cfg.compression == (0.5 if "c" in variant else 1.0)
    assert cfg.block_layers == (12, 12, 12)
    assert cfg.depth == depth
    assert count_params(model) == expected_num_params(cfg, 10)


@pytest.mark.parametrize(
    "name, depth",
    [("densenet121", 121), ("densenet169", 169), ("densenet201", 201), ("densenet-bc-100-12", 100)],
)
def test_depth_counts_weighted_layers(name: str, depth: int) -> None:
    assert meta_model(name).config.depth == depth


def test_densenet264_has_265_weighted_layers() -> None:
    # Table 1's (6, 12, 64, 48) gives 1 + 2*130 + 3 + 1 = 265 layers; the paper names it 264
    assert meta_model("densenet264").config.depth == 265


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("densenet121", {"growth_rate": 0}, r"growth_rate must be a whole number of at least 1"),
        ("densenet-40-12", {"growth_rate": -2}, r"growth_rate must be a whole number of at least 1"),
        ("densenet121", {"compression": 0.0}, r"compression \(theta\) must be in \(0, 1\]"),
        ("densenet121", {"compression": 1.5}, r"compression \(theta\) must be in \(0, 1\]"),
        ("densenet-bc-100-12", {"compression": -0.5}, r"compression \(theta\) must be in \(0, 1\]"),
        ("densenet121", {"bn_size": 0}, r"bn_size must be a whole number of at least 1"),
        ("densenet-40-12", {"variant": "bd"}, r"unknown DenseNet variant 'bd'.*Valid .*b, bc, c, plain"),
        ("densenet-40-12", {"depth": 41}, r"without bottleneck layers has depth L = 3n \+ 4"),
        ("densenet-bc-100-12", {"depth": 43}, r"with bottleneck layers has depth L = 6n \+ 4"),
        ("densenet-40-12", {"depth": 4}, r"L = 3n \+ 4"),
        ("densenet121", {"compression": 0.001}, r"leaves floor.* = 0 channels after dense block 1"),
    ],
)
def test_out_of_range_options_are_one_line_usage_errors(name: str, options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        meta_model(name, **options)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, rule", [("densenet-bc-98-12", "6n + 4"), ("densenet-39-12", "3n + 4")])
def test_a_name_with_an_impossible_depth_names_the_rule(name: str, rule: str) -> None:
    with pytest.raises(UsageError, match=rule.replace("+", r"\+")):
        create_model(name)


def test_unknown_option_names_the_valid_ones() -> None:
    with pytest.raises(UsageError, match="compression.*memory_efficient"):
        create_model("densenet121", theta=0.5)


@pytest.mark.parametrize("name, smallest", [("densenet-40-12", 4), ("densenet121", 29)])
def test_too_small_input_names_the_smallest_size_that_works(name: str, smallest: int) -> None:
    model = meta_model(name, num_classes=5)
    assert model.min_input_size == smallest
    assert smallest_input_size(meta_call(model, model.forward_features), 3) == smallest
    assert check_input_size(model, (3, smallest, smallest)) == (1, 5)
    with pytest.raises(UsageError, match=f"smallest input that works is 3x{smallest}x{smallest}"):
        check_input_size(model, (3, smallest - 1, smallest - 1))


def test_global_pool_head_runs_on_other_sizes() -> None:
    model = create_model("densenet-bc-100-12", depth=16, num_classes=3).eval()
    with torch.no_grad():
        for size in (4, 33, 48):
            assert model(torch.randn(1, 3, size, size)).shape == (1, 3)


def dropout_calls(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Rate of every dropout applied in one forward pass, in order."""
    calls: list[float] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: calls.append(m.p))
        for m in model.modules()
        if isinstance(m, nn.Dropout)
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return calls


def test_dropout_follows_every_convolution_but_the_first() -> None:
    # Sec. 4.2: the 36 dense-layer convs and 2 transition convs of DenseNet-40 get dropout 0.2
    x = torch.randn(2, 3, 8, 8)
    plain = create_model("densenet-40-12")
    assert dropout_calls(plain, x) == []
    dropped = create_model("densenet-40-12", drop_rate=0.2)
    assert sum(isinstance(m, nn.Conv2d) for m in dropped.modules()) == 39
    assert dropout_calls(dropped, x) == [0.2] * 38
    assert not isinstance(dropped.head.drop, nn.Dropout)
    bc = create_model("densenet-bc-100-12", drop_rate=0.2)
    assert len(dropout_calls(bc, x)) == 3 * 16 * 2 + 2


def test_he_initialisation_as_the_authors_code() -> None:
    torch.manual_seed(0)
    model = create_model("densenet-bc-100-12")
    conv = model.features.denseblock3.layers[15].reduce.conv  # 1x1, 48 outputs, 330 inputs
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (1 * 1 * 48)), rel=0.05)
    conv3 = model.features.denseblock1.layers[0].conv.conv  # 3x3, 12 outputs
    assert conv3.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 12)), rel=0.05)
    norms = [
        m for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    ]  # 2 per dense layer, stem, 3 transitions, final
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)
    assert bool((model.head.fc.bias == 0).all())
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward outside checkpointed regions (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return sum(seen.values())


@pytest.mark.parametrize(
    "name, options",
    [("densenet-bc-100-12", {"depth": 28, "drop_rate": 0.2}), ("densenet-40-12", {"depth": 13})],
)
def test_memory_efficient_matches_plain_outputs_gradients_and_running_stats(name: str, options: dict) -> None:
    torch.manual_seed(0)
    plain = create_model(name, **options).train()
    efficient = create_model(name, memory_efficient=True, **options).train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 16, 16)
    outputs = []
    for model in (plain, efficient):
        torch.manual_seed(1)  # same dropout masks
        out = model(x)
        out.logsumexp(1).mean().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-5)
    grads = dict(efficient.named_parameters())
    for n, p in plain.named_parameters():
        torch.testing.assert_close(grads[n].grad, p.grad, atol=1e-5, rtol=1e-5, msg=n)
    # the recomputation in backward must not update BN running statistics a second time
    buffers = dict(efficient.named_buffers())
    for n, b in plain.named_buffers():
        torch.testing.assert_close(buffers[n], b, atol=1e-6, rtol=1e-6, msg=n)


def test_memory_efficient_stores_less_for_backward() -> None:
    torch.manual_seed(0)
    plain = create_model("densenet-bc-100-12", depth=40).train()
    efficient = create_model("densenet-bc-100-12", depth=40, memory_efficient=True).train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(8, 3, 16, 16)
    assert efficient.memory_efficient and not plain.memory_efficient
    assert saved_bytes(efficient, x) < 0.6 * saved_bytes(plain, x)


def test_memory_efficient_eval_and_no_grad_take_the_plain_path() -> None:
    torch.manual_seed(0)
    model = create_model("densenet-bc-100-12", depth=16, memory_efficient=True).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        model.memory_efficient = False
        assert not model.memory_efficient
        torch.testing.assert_close(model(x), expected)
