"""The summary engine on small reference networks: counts against hand formulas and FlopCounterMode."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.analysis import summarize
from cnnlab.errors import UsageError


class Branching(nn.Module):
    """Two paths (3x3 then 3x3, and 5x5) concatenated, a residual +, functional relu and pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.a1 = nn.Conv2d(8, 8, 3, padding=1)
        self.a2 = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 5, padding=2)
        self.fuse = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        y = torch.cat([self.a2(F.relu(self.a1(x))), self.b(x)], dim=1)
        x = x + self.fuse(y)
        x = F.avg_pool2d(x, 2)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Grouped(nn.Module):
    """Grouped and depthwise convolutions with batch norm, dilation and a frozen, shared layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 16, 3, padding=1, groups=2, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.pw.requires_grad_(False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pw(self.dw(x))
        x = self.pw(x)  # the same weights used twice: counted once
        return self.head(x.mean((2, 3)))


def flop_counter_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Independent count: FlopCounterMode's FLOPs (2 per MAC) of a real forward, halved."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize(
    "make, shape",
    [
        (Branching, (3, 32, 32)),
        (Grouped, (4, 20, 20)),
        (lambda: cnnlab.create_model("lecture-inception"), (1, 28, 28)),
        (lambda: cnnlab.create_model("lecture-residual"), (1, 28, 28)),
    ],
)
def test_macs_agree_with_flop_counter(make, shape) -> None:
    torch.manual_seed(0)
    model = make().eval()
    assert summarize(model, shape).totals.macs == flop_counter_macs(model, shape)


def test_hand_derived_counts_of_the_grouped_net() -> None:
    s = summarize(Grouped(), (4, 20, 20))
    # conv: k_h k_w (c_in / groups) c_out h_out w_out
    assert s.row("conv1").macs == 3 * 3 * (4 // 2) * 16 * 20 * 20
    assert s.row("dw").macs == 3 * 3 * 1 * 16 * 20 * 20
    assert s.row("pw").macs == 16 * 16 * 20 * 20
    assert s.row("head").macs == 16 * 3
    # the shared pointwise layer: its parameters once, its MACs twice
    assert s.row("pw").params == 16 * 16 + 16 and s.row("pw#2").params == 0
    assert s.row("pw#2").macs == 16 * 16 * 20 * 20
    t = s.totals
    assert t.params == sum(p.numel() for p in Grouped().parameters())
    assert t.frozen_params == 16 * 16 + 16 and t.trainable_params == t.params - t.frozen_params
    assert t.bias_params == 16 + 16 + 16 + 3  # bn1, dw, pw, head
    assert t.flops == 2 * t.macs
    # batch norm and activations are counted apart from MACs
    assert s.row("bn1").macs == 0 and s.row("bn1").other_ops == 2 * 16 * 20 * 20
    assert s.row("relu").other_ops == 16 * 20 * 20


def test_functional_operations_are_rows() -> None:
    s = summarize(Branching(), (3, 32, 32))
    names = [r.name for r in s.rows]
    for op in ("relu", "cat", "add", "avg_pool2d", "adaptive_avg_pool2d", "flatten"):
        assert op in names, names
    assert s.row("add").other_ops == 8 * 16 * 16
    assert s.row("avg_pool2d").other_ops == 4 * 8 * 8 * 8
    assert s.row("cat").output_shape == (1, 16, 16, 16)


def test_receptive_field_through_branches_is_the_largest_path() -> None:
    s = summarize(Branching(), (3, 32, 32))
    assert s.row("stem").receptive_field == (3, 3) and s.row("stem").jump == (2, 2)
    assert s.row("a2").receptive_field == (3 + 2 * 2 + 2 * 2,) * 2  # 11
    assert s.row("b").receptive_field == (3 + 4 * 2,) * 2  # 11
    assert s.row("cat").receptive_field == (11, 11)
    assert s.row("add").receptive_field == (11, 11)  # max(3 through the identity, 11 through the branches)
    assert s.row("avg_pool2d").receptive_field == (13, 13) and s.row("avg_pool2d").jump == (4, 4)
    # global pooling: every output sees the whole 8x8 map, 13 + 7 * 4 = 41
    assert s.row("adaptive_avg_pool2d").receptive_field == (41, 41)


def test_dilated_depthwise_receptive_field() -> None:
    s = summarize(Grouped(), (4, 20, 20))
    assert s.row("dw").receptive_field == (3 + 2 * 2, 3 + 2 * 2)


def test_activation_memory_skips_views_and_in_place_results() -> None:
    s = summarize(cnnlab.create_model("lecture-residual"), (1, 28, 28))
    assert s.row("head.flatten").activation_elements == 0
    conv1 = s.row("features.conv1")
    assert conv1.activation_elements == 16 * 24 * 24 and conv1.activation_bytes == 4 * 16 * 24 * 24
    t = s.totals
    assert t.activation_bytes == 4 * t.activation_elements
    assert t.training_bytes_per_image == 2 * t.activation_bytes
    assert t.training_fixed_bytes == 3 * 4 * t.params
    half = summarize(cnnlab.create_model("lecture-residual"), (1, 28, 28), dtype=torch.float16)
    assert half.totals.activation_bytes == 2 * t.activation_elements


def test_meta_and_cpu_tracing_agree_and_leave_the_model_alone() -> None:
    model = Grouped().train()
    before = {n: (p.device, p.requires_grad) for n, p in model.named_parameters()}
    meta = summarize(model, (4, 20, 20))
    cpu = summarize(model, (4, 20, 20), device="cpu")
    assert [(r.name, r.macs, r.params, r.output_shape) for r in meta.rows] == [
        (r.name, r.macs, r.params, r.output_shape) for r in cpu.rows
    ]
    assert {n: (p.device, p.requires_grad) for n, p in model.named_parameters()} == before
    assert model.training and model.bn1.training


def test_batch_scales_counts_but_not_parameters() -> None:
    one = summarize(Branching(), (3, 32, 32))
    four = summarize(Branching(), (3, 32, 32), batch_size=4)
    assert four.totals.macs == 4 * one.totals.macs and four.totals.params == one.totals.params
    assert four.totals.training_bytes_per_image == one.totals.training_bytes_per_image


def test_depth_groups_rows_and_keeps_totals() -> None:
    s = summarize(cnnlab.create_model("lecture-inception"), (1, 28, 28))
    grouped = s.at_depth(2)
    incep = next(r for r in grouped if r.name == "features.incep1")
    assert incep.type == "InceptionA" and incep.output_shape == (1, 88, 12, 12)
    assert incep.receptive_field == (14, 14)
    assert sum(r.macs for r in grouped) == s.totals.macs
    assert sum(r.params for r in s.at_depth(1)) == s.totals.params
    assert [r.name for r in s.at_depth(1)] == ["features", "head"]


def test_renderings() -> None:
    s = summarize(Branching(), (3, 32, 32))
    data = json.loads(s.to_json())
    assert data["totals"]["macs"] == s.totals.macs and data["totals"]["flops"] == 2 * s.totals.macs
    assert len(data["rows"]) == len(s.rows)
    rows = list(csv.DictReader(io.StringIO(s.to_csv())))
    assert rows[0]["name"] == "stem" and int(rows[0]["macs"]) == s.rows[0].macs
    assert rows[0]["output_shape"] == "1x8x16x16"
    # the last line is the network's totals, marked as such, with the same numbers as the JSON's
    total = rows[-1]
    assert (total["name"], total["kind"], total["output_shape"]) == ("total", "total", "3x32x32")
    assert len(rows) == len(s.rows) + 1
    for key in ("weight_params", "bias_params", "trainable_params", "macs", "other_ops", "activation_bytes"):
        assert int(total[key]) == data["totals"][key]
    table = s.to_table()
    assert "FLOPs (= 2 x MACs)" in table and "stem" in table
    markdown = s.to_markdown(depth=1)
    assert markdown.count("\n| ") == len(s.at_depth(1)) + 2  # header, rule, rows
    with pytest.raises(UsageError, match="unknown format 'xml'"):
        s.render("xml")


def test_aux_heads_are_traced_only_through_forward_aux() -> None:
    class WithAux(cnnlab.models.layers.ClassifierModel):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(1, 4, 3)
            self.aux = nn.Linear(4, 2)
            self.fc = nn.Linear(4, 2)

        def forward_features(self, x):
            return self.body(x).mean((2, 3))

        def forward_head(self, x):
            return self.fc(x)

        def forward_aux(self, x):
            f = self.forward_features(x)
            return self.forward_head(f), [self.aux(f)]

    plain = summarize(WithAux(), (1, 8, 8))
    assert plain.totals.unused_params == 4 * 2 + 2
    aux = summarize(WithAux(), (1, 8, 8), method="forward_aux")
    assert aux.totals.unused_params == 0 and aux.totals.macs == plain.totals.macs + 8


def test_size_mismatch_of_a_head_sized_from_the_input_names_both_sizes_and_the_fix() -> None:
    model = cnnlab.create_model("lecture-simple")
    with pytest.raises(UsageError) as err:
        summarize(model, (1, 32, 32))
    message = str(err.value)  # the model's own check, passed through (a plain module: see SlidesNet below)
    assert message.startswith("lecture-simple was built for 1x28x28 input and got 1x32x32")
    assert "takes a 20x4x4 map, got 20x5x5" in message and "img_size=32" in message
    assert message.endswith("; inputs that fit as built: 1x28x28 to 1x31x31")  # summarize adds the band
    with torch.device("meta"):
        googlenet = cnnlab.create_model("googlenet", aux_logits=True)
    with pytest.raises(UsageError, match=r"auxiliary classifier on inception4a .* 3x223x223 to 3x270x270$"):
        summarize(googlenet, (3, 448, 448), method="forward_aux")  # the band of the traced method


def test_too_small_input_names_the_smallest_that_works() -> None:
    with pytest.raises(
        UsageError, match=r"too small for lecture-simple: .*smallest input that works is 1x28x28"
    ):
        summarize(cnnlab.create_model("lecture-simple"), (1, 8, 8))
    with torch.device("meta"):
        vgg = cnnlab.create_model("vgg16")
    # the FC head was sized for 224: 224 is the smallest that runs, 32 once rebuilt for it
    with pytest.raises(
        UsageError, match=r"smallest input that works is 3x224x224 \(3x32x32 if built with img_size=32\)"
    ):
        summarize(vgg, (3, 16, 16))


def test_wrong_channel_count_names_the_expected_channels() -> None:
    with pytest.raises(UsageError, match="features.conv1 .* expects 1 input channels"):
        summarize(cnnlab.create_model("lecture-simple"), (3, 28, 28))


@pytest.mark.parametrize("bad", [(3, 32), (0, 32, 32), (3, -1, 32)])
def test_bad_input_sizes(bad) -> None:
    with pytest.raises(UsageError, match="C, H, W"):
        summarize(Branching(), bad)


def test_the_macs_pinned_in_the_registry_are_the_traced_figures() -> None:
    """Every built-in model's MACs (pinned from a paper, or read from the models table) equal the table's
    traced figure; tests/test_analysis_registry.py traces each model afresh against that table, so no
    second trace is needed here."""
    from cnnlab.zoo_table import ZOO_TABLE

    pinned = {n: cnnlab.model_info(n).macs for n in cnnlab.list_models()}
    assert None not in pinned.values(), [n for n, m in pinned.items() if m is None]
    assert {n: ZOO_TABLE[n]["macs"] for n in pinned} == pinned


def test_paper_mode_counts_conv_and_linear_weights_in_units_of_1024() -> None:
    s = summarize(Grouped(), (4, 20, 20))
    assert s.row("conv1").paper_params == 3 * 3 * 2 * 16 and s.row("bn1").paper_params == 0
    assert s.row("bn1").weight_params == 16  # batch norm's scale is a weight, but not a paper weight
    text = s.render("paper")
    total = (3 * 3 * 2 * 16 + 3 * 3 * 16 + 16 * 16 + 16 * 3) / 1024
    assert text.splitlines()[-1].split()[1] == f"{total:.1f}K"


class SlidesNet(nn.Module):
    """Lecture 10's net as the slide writes it, FC width hard-coded (320 for 28x28, or the slide's wrong 100)."""

    def __init__(self, fc_in: int = 320) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.pooling = nn.MaxPool2d(2)
        self.fc = nn.Linear(fc_in, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.size(0)
        x = F.relu(self.pooling(self.conv1(x)))
        x = F.relu(self.pooling(self.conv2(x)))
        return self.fc(x.view(batch, -1))


def test_hard_coded_head_reports_the_band_of_sizes_that_fit() -> None:
    assert summarize(SlidesNet(), (1, 28, 28)).totals.params == 8_490
    with pytest.raises(UsageError) as err:
        summarize(SlidesNet(), (1, 32, 32))
    assert "layer fc (Linear, linear) received 1x500 but expects 320 input features" in str(err.value)
    assert "inputs that fit: 1x28x28 to 1x31x31" in str(err.value)
    # the slide's first attempt, fc 100 -> 10: 20 x h x w is never 100
    with pytest.raises(UsageError, match="received 1x320 but expects 100 input features; no square input"):
        summarize(SlidesNet(100), (1, 28, 28))


def test_asymmetric_kernels_keep_height_and_width_apart() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, (1, 7), padding=(0, 3)), nn.Conv2d(2, 2, (3, 1), stride=(2, 1)))
    s = summarize(model, (1, 16, 16))
    assert s.row("0").receptive_field == (1, 7) and s.row("1").receptive_field == (3, 7)
    assert s.row("1").jump == (2, 1) and "3x7" in s.to_table()


def test_cpu_tracing_needs_real_weights_of_the_traced_dtype() -> None:
    with torch.device("meta"):
        meta = cnnlab.create_model("lecture-simple")
    with pytest.raises(UsageError, match="device='meta'"):
        summarize(meta, (1, 28, 28), device="cpu")
    with pytest.raises(UsageError, match="float32"):
        summarize(cnnlab.create_model("lecture-simple"), (1, 28, 28), device="cpu", dtype=torch.float16)
    with pytest.raises(UsageError, match="unknown device 'gpu'"):
        summarize(meta, (1, 28, 28), device="gpu")


class ReadsValues(nn.Module):
    """A forward that branches on a value: it cannot run on meta, which is what device="cpu" is for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() >= 0:
            return self.conv(x)
        return x


def test_cpu_tracing_runs_a_forward_that_needs_values() -> None:
    s = summarize(ReadsValues(), (1, 8, 8), device="cpu")
    assert s.row("conv").output_shape == (1, 4, 6, 6) and s.totals.macs == 3 * 3 * 4 * 6 * 6


def test_hard_coded_head_on_a_too_small_input_names_the_band_it_fits() -> None:
    # 8x8 fails in conv2, long before the head: the doubling probe (1, 2, 4, ... 32) steps over 28..31
    with pytest.raises(UsageError, match=r"too small for SlidesNet: layer conv2 .* works is 1x28x28$"):
        summarize(SlidesNet(), (1, 8, 8))
    with pytest.raises(UsageError, match="no square input up to 64 fits"):
        summarize(SlidesNet(100), (1, 8, 8))


def lazy_net() -> nn.Module:
    """d2l.ai's style: the layers take their input sizes from the first forward pass."""
    return nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))


def test_lazy_layers_are_sized_by_one_real_pass_then_traced() -> None:
    s = summarize(lazy_net(), (3, 8, 8))
    assert s.totals.params == 3 * 3 * 3 * 4 + 4 + 4 * 6 * 6 * 10 + 10 and s.totals.unused_params == 0
    with pytest.raises(
        UsageError, match=r"lazy layers \(LazyConv2d, LazyLinear\), .* on input 3x2x2: RuntimeError"
    ):
        summarize(lazy_net(), (3, 2, 2))


def test_a_forward_that_needs_values_on_meta_is_told_to_trace_on_cpu() -> None:
    with pytest.raises(
        UsageError, match=r"reads tensor values at .*test_analysis_summary.py:\d+ .*--device cpu"
    ):
        summarize(ReadsValues(), (1, 8, 8))


def test_memory_is_shown_in_binary_units_named_as_such() -> None:
    """3,211,264 float32 values are 12,845,056 bytes: 12.25 MiB, which a "12.25MB" label would misstate
    (12.85 MB); counts stay decimal."""
    from cnnlab.analysis.report import human

    assert human(3_211_264 * 4, "B", 1024) == "12.25MiB"
    assert human(1_234_567) == "1.23M" and human(512, "B", 1024) == "512B"
    assert "MiB" in summarize(cnnlab.create_model("vgg16"), (3, 224, 224)).to_table()
