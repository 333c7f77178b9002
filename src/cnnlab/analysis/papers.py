"""The papers' and slides' figures reproduced from our models, each beside the published number.

``cnnlab paper-tables [NAME]`` prints them; tests/test_analysis_papers.py checks each row within its
tolerance. The figures come from the course slides (/work/shared/seeds 000, 002, 003, 004):

* ``googlenet`` - Szegedy et al. 2015, Table 1: parameters (weights only, K = 1024) and ops (MACs, M = 10^6)
  of inception 3a to 5b, within 1% of the paper's rounded figures.
* ``vgg16`` - the case-study slide's per-layer memory (activation elements) and parameters (weights only),
  and the totals: 138,357,544 parameters with biases, about 15.5G MACs.
* ``resnet`` - He et al. 2016, Table 1 FLOPs row (which counts multiply-adds) for 18 to 152 layers, with the
  paper's stride placement (``stride_in="1x1"``) and the later "v1.5" placement beside it.
* ``alexnet`` - neurons per layer from the survey slide (Krizhevsky et al. 2012, Section 3).
* ``1x1`` - lecture 11's and the case-study slides' 1x1 reduction arithmetic.
* ``rf`` - the survey slide's receptive-field example: two 3x3 stride-2 pad-1 convolutions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cnnlab.analysis.cost import conv_cost
from cnnlab.analysis.receptive import parse_layers, receptive_fields
from cnnlab.analysis.report import Summary
from cnnlab.analysis.summary import summarize
from cnnlab.errors import unknown_choice

K = 1024  # GoogLeNet's Table 1 counts parameters in units of 1024
M = 10**6
G = 10**9


@dataclass(frozen=True)
class Figure:
    """One reproduced number: ours and the paper's, in raw units, shown divided by ``scale``.

    ``tolerance`` is the relative difference allowed (0 for exact figures); ``None`` marks a row shown
    for comparison only (a known inconsistency of the source, explained in ``note``).
    """

    label: str
    ours: float
    paper: float | None
    scale: float = 1
    unit: str = ""
    tolerance: float | None = 0.0
    note: str = ""

    @property
    def difference(self) -> float | None:
        """Relative difference ``ours / paper - 1``."""
        return None if not self.paper else self.ours / self.paper - 1

    @property
    def ok(self) -> bool:
        """Within tolerance (always true for comparison-only rows)."""
        if self.tolerance is None or self.paper is None:
            return True
        return abs(self.ours - self.paper) <= self.tolerance * abs(self.paper)

    def text(self, value: float | None) -> str:
        """``value`` in this row's unit (exact integers with thousands separators)."""
        if value is None:
            return "-"
        if self.scale == 1:
            return f"{value:,.0f}{self.unit}"
        return f"{value / self.scale:,.1f}{self.unit}"


@dataclass
class PaperTable:
    """A titled list of :class:`Figure` rows, with its source and notes."""

    name: str
    title: str
    source: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """Aligned text: label, ours, paper, difference, tolerance, note."""
        out = [f"== {self.title}", f"   source: {self.source}"]
        label_w = max(len(f.label) for f in self.figures)
        out.append(f"   {'':<{label_w}}  {'ours':>16}  {'paper':>16}  {'diff':>7}  check")
        for f in self.figures:
            diff = f"{100 * f.difference:+.1f}%" if f.difference is not None else "-"
            check = "shown" if f.tolerance is None else ("ok" if f.ok else "MISMATCH")
            row = f"   {f.label:<{label_w}}  {f.text(f.ours):>16}  {f.text(f.paper):>16}  {diff:>7}  {check}"
            out.append(row + (f"  ({f.note})" if f.note else ""))
        return "\n".join(out + [f"   note: {n}" for n in self.notes])


def _model_summary(name: str, **options) -> Summary:
    """The summary of registered model ``name`` at its default input (an unregistered name is an error)."""
    from cnnlab.models import create_model, model_info

    with torch.device("meta"):
        model = create_model(name, **options)
    return summarize(model, model_info(name).input_size)


def _paper_weights(summary: Summary, prefix: str) -> tuple[int, int]:
    """Convolution and linear weights (no biases, no norm) and MACs of rows under ``prefix``."""
    rows = [
        r for r in summary.rows if (r.name + ".").startswith(prefix + ".") and r.kind in ("conv", "linear")
    ]
    return sum(r.weight_params for r in rows), sum(r.macs for r in rows)


# Table 1 of Szegedy et al. 2015: (row, our module names, params in K, ops in M)
GOOGLENET_TABLE1 = (
    ("inception (3a)", ("inception3a",), 159, 128),
    ("inception (3b)", ("inception3b",), 380, 304),
    ("inception (4a)", ("inception4a",), 364, 73),
    ("inception (4b)", ("inception4b",), 437, 88),
    ("inception (4c)", ("inception4c",), 463, 100),
    ("inception (4d)", ("inception4d",), 580, 119),
    ("inception (4e)", ("inception4e",), 840, 170),
    ("inception (5a)", ("inception5a",), 1072, 54),
    ("inception (5b)", ("inception5b",), 1388, 71),
    ("convolution 3x3/1 (with its 1x1 reduce)", ("conv2_reduce", "conv2"), 112, 360),
    ("linear", ("head",), 1000, 1),
)
# Printed figures that disagree with Table 1's own branch widths (our counts are those widths, summed):
# 4c's 463K, 4d's 580K and 5b's 1388K params sit beside ops that agree with the widths (100M, 119M, 71M);
# 5a's 1072K and 54M agree with each other but not with its widths (1018K, 51.1M).
GOOGLENET_INCONSISTENT = {
    ("inception (4c)", "params"),
    ("inception (4d)", "params"),
    ("inception (5a)", "params"),
    ("inception (5a)", "ops"),
    ("inception (5b)", "params"),
}


def googlenet_table() -> PaperTable:
    """GoogLeNet Table 1: parameters (weights only, K = 1024) and ops (MACs, M = 10^6) per row."""
    table = PaperTable(
        "googlenet", "GoogLeNet Table 1 (Szegedy et al. 2015)", "slides 002 'Table'; paper Table 1"
    )
    summary = _model_summary("googlenet")
    for label, modules, params_k, ops_m in GOOGLENET_TABLE1:
        params = sum(_paper_weights(summary, m)[0] for m in modules)
        macs = sum(_paper_weights(summary, m)[1] for m in modules)
        # the paper rounds to whole K and M: allow 1% (and at least the rounding of the last digit)
        for what, ours, paper, unit, scale in (
            ("params", params, params_k, "K", K),
            ("ops", macs, ops_m, "M", M),
        ):
            tolerance = max(0.01, 0.5 / paper)
            note = ""
            if (label, what) in GOOGLENET_INCONSISTENT:
                tolerance, note = None, "the paper's figure disagrees with its own branch widths"
            table.figures.append(Figure(f"{label} {what}", ours, paper * scale, scale, unit, tolerance, note))
    conv1_params, conv1_macs = _paper_weights(summary, "conv1")
    note = "the paper's 2.7K/34M do not match a 7x7x3x64 convolution (known inconsistency of Table 1)"
    table.figures.append(Figure("convolution 7x7/2 params", conv1_params, 2.7 * K, K, "K", None, note))
    table.figures.append(Figure("convolution 7x7/2 ops", conv1_macs, 34 * M, M, "M", None, note))
    table.notes.append(
        "params count convolution and linear weights only (no biases), in K = 1024, as the paper"
    )
    table.notes.append("ops are multiply-accumulates in M = 10^6")
    return table


# The case-study slide (003), one row per layer: (layer, memory as printed, params as printed)
VGG16_SLIDE = (
    ("CONV3-64", 3.2 * M, 1_728),
    ("CONV3-64", 3.2 * M, 36_864),
    ("POOL2", 800e3, 0),
    ("CONV3-128", 1.6 * M, 73_728),
    ("CONV3-128", 1.6 * M, 147_456),
    ("POOL2", 400e3, 0),
    ("CONV3-256", 800e3, 294_912),
    ("CONV3-256", 800e3, 589_824),
    ("CONV3-256", 800e3, 589_824),
    ("POOL2", 200e3, 0),
    ("CONV3-512", 400e3, 1_179_648),
    ("CONV3-512", 400e3, 2_359_296),
    ("CONV3-512", 400e3, 2_359_296),
    ("POOL2", 100e3, 0),
    ("CONV3-512", 100e3, 2_359_296),
    ("CONV3-512", 100e3, 2_359_296),
    ("CONV3-512", 100e3, 2_359_296),
    ("POOL2", 25e3, 0),
    ("FC", 4096, 102_760_448),
    ("FC", 4096, 16_777_216),
    ("FC", 1000, 4_096_000),
)


def vgg16_table() -> PaperTable:
    """VGG-16 layer by layer as the case-study slide lists it, and its totals."""
    table = PaperTable(
        "vgg16", "VGG-16 per layer (Simonyan & Zisserman 2015)", "slides 003 'Case Study: VGGNet'"
    )
    summary = _model_summary("vgg16")
    layers = [r for r in summary.rows if r.kind in ("conv", "pool", "linear")]
    if len(layers) != len(VGG16_SLIDE):
        table.notes.append(f"vgg16 has {len(layers)} conv/pool/fc layers, the slide {len(VGG16_SLIDE)}")
    for (label, memory, params), row in zip(VGG16_SLIDE, layers):
        shape = "x".join(map(str, row.output_shape[1:]))
        elements = 1
        for s in row.output_shape[1:]:
            elements *= s
        # the slide rounds memory to 2 significant figures (3.2M for 3,211,264): allow that rounding
        tol = 0.0 if memory < 10_000 else 0.035
        table.figures.append(Figure(f"{label} [{shape}] memory", elements, memory, 1, "", tol))
        table.figures.append(Figure(f"{label} [{shape}] params", row.weight_params, params, 1, "", 0.0))
    t = summary.totals
    table.figures.append(Figure("total parameters (with biases)", t.params, 138_357_544, 1, "", 0.0))
    table.figures.append(Figure("total MACs", t.macs, 15.5 * G, G, "G", 0.01))
    table.notes.append("params per layer are weights only, as the slide ('not counting biases')")
    table.notes.append("memory counts output elements per image (multiply by 4 for float32 bytes)")
    return table


# He et al. 2016, Table 1, "FLOPs" row (multiply-adds) at 224x224
RESNET_TABLE1 = ((18, 1.8), (34, 3.6), (50, 3.8), (101, 7.6), (152, 11.3))


def resnet_table() -> PaperTable:
    """ResNet Table 1 MACs with the paper's stride placement, and the v1.5 placement beside it."""
    table = PaperTable("resnet", "ResNet Table 1 FLOPs (He et al. 2016)", "slides 003 ResNet table")
    for depth, paper_g in RESNET_TABLE1:
        name = f"resnet{depth}"
        summary = _model_summary(name, stride_in="1x1")
        # the paper prints one decimal of 10^9; 2% covers its rounding of 3.66 to 3.6 and 3.86 to 3.8
        table.figures.append(
            Figure(f"{name} MACs (paper stride, 1x1)", summary.totals.macs, paper_g * G, G, "G", 0.02)
        )
        if depth >= 50:
            v15 = _model_summary(name, stride_in="3x3")
            ref = 4.1 * G if depth == 50 else None
            table.figures.append(
                Figure(
                    f"{name} MACs (v1.5, stride on 3x3)",
                    v15.totals.macs,
                    ref,
                    G,
                    "G",
                    None,
                    "later placement",
                )
            )
    table.notes.append("the table's 'FLOPs' are multiply-adds (MACs); FLOPs = 2 x MACs")
    table.notes.append("ResNet-18/34 have no bottleneck, so the stride placement does not apply to them")
    return table


ALEXNET_NEURONS = (
    ("conv1", 253_440),
    ("conv2", 186_624),
    ("conv3", 64_896),
    ("conv4", 64_896),
    ("conv5", 43_264),
    ("fc6", 4_096),
    ("fc7", 4_096),
    ("fc8", 1_000),
)


def alexnet_table() -> PaperTable:
    """Neurons per layer of AlexNet (the survey slide, from Krizhevsky et al. 2012 Section 3)."""
    table = PaperTable(
        "alexnet",
        "AlexNet neurons per layer (Krizhevsky et al. 2012)",
        "slides 004 'Model architecture-AlexNet'",
    )
    summary = _model_summary("alexnet")
    layers = [r for r in summary.rows if r.kind in ("conv", "linear")]
    for (label, paper), row in zip(ALEXNET_NEURONS, layers):
        neurons = 1
        for s in row.output_shape[1:]:
            neurons *= s
        shape = "x".join(map(str, row.output_shape[1:]))
        if label == "conv1":
            note = (
                "55x55x96 = 290,400; the paper's 253,440 is a known inconsistency (no 227/224 input gives it)"
            )
            table.figures.append(Figure(f"{label} [{shape}]", neurons, paper, 1, "", None, note))
        else:
            table.figures.append(Figure(f"{label} [{shape}]", neurons, paper, 1, "", 0.0))
    return table


def one_by_one_table() -> PaperTable:
    """The 1x1 reduction arithmetic of lecture 11 and the case-study slides."""
    table = PaperTable("1x1", "1x1 convolution saving", "slides 000 'Why is 1x1 convolution?', 003")
    lecture = conv_cost(192, 32, 5, 28, reduce=16)
    table.figures.append(Figure("5x5 conv 192->32 on 28x28", lecture.direct.mults, 120_422_400))
    table.figures.append(
        Figure(
            "  with 1x1 reduction to 16",
            lecture.reduced_mults,
            12_433_648,
            tolerance=None,
            note="slide typo: 12,433,648",
        )
    )
    survey = conv_cost(480, 48, 5, 14, reduce=16)
    table.figures.append(Figure("5x5 conv 480->48 on 14x14", survey.direct.mults, 112.9 * M, M, "M", 0.0005))
    table.figures.append(Figure("  with 1x1 reduction to 16", survey.reduced_mults, 5.3 * M, M, "M", 0.01))
    table.notes.append(
        f"ours: 1^2 x 28^2 x 192 x 16 + 5^2 x 28^2 x 16 x 32 = {lecture.reduced_mults:,} (ratio {lecture.ratio:.2f}x)"
    )
    return table


def receptive_field_table() -> PaperTable:
    """The survey slide's example: two 3x3 stride-2 pad-1 convolutions."""
    table = PaperTable(
        "rf",
        "Receptive field of two 3x3/2 pad-1 convolutions",
        "slides 004 'Feature map size and receptive field size'",
    )
    first, second = receptive_fields(parse_layers("conv3s2p1,conv3s2p1"))
    table.figures += [
        Figure("layer 1 receptive field r1", first.receptive_field, 3),
        Figure("layer 1 jump j1", first.jump, 2),
        Figure("layer 2 receptive field r2", second.receptive_field, 7),
        Figure("layer 2 jump j2", second.jump, 4),
    ]
    return table


TABLES: dict[str, Callable[[], PaperTable]] = {
    "googlenet": googlenet_table,
    "vgg16": vgg16_table,
    "resnet": resnet_table,
    "alexnet": alexnet_table,
    "1x1": one_by_one_table,
    "rf": receptive_field_table,
}


def paper_tables(names: list[str] | None = None) -> list[PaperTable]:
    """The named reproductions (all by default); an unknown name is a :class:`UsageError`."""
    for name in names or []:
        if name not in TABLES:
            raise unknown_choice("paper table", name, TABLES)
    return [TABLES[name]() for name in (names or TABLES)]
