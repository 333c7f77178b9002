"""Weights published by torchvision and timm, loaded into cnnlab's models through explicit key maps.

>>> model = cnnlab.from_reference("torchvision", "googlenet", weights="googlenet-1378be20.pth")  # doctest: +SKIP
>>> cnnlab.list_references()[:2]                                                                 # doctest: +SKIP
[('timm', 'inception_resnet_v2'), ('timm', 'inception_v4')]

Each supported reference model (:data:`REFERENCES`) names the cnnlab model and the options that compute
the reference's function (``("torchvision", "googlenet")`` is ``googlenet`` with ``branch5x5_kernel=3,
batch_norm=True, lrn=False, bn_eps=1e-3, pool4_kernel=2, transform_input=True``), and one key map per
family turns the reference's state-dict names into cnnlab's. The maps rename by rule from the
reference's module names and cnnlab's structure (stage names, branch records), never by the position
of a tensor in a list; every name and shape is then checked against the built model, and the first
mismatch is reported with both shapes. A permutation that keeps every shape (Inception-ResNet-v2's
reduction branches) would pass those checks, so the maps are also checked on outputs:
``tests/test_references.py`` compares cnnlab's logits with logits the reference libraries computed
(``scripts/make_reference_fixtures.py``; the fixtures hold names, shapes, a seed and logits, no weights).

:func:`fill_reference_weights` is the deterministic filler that script and tests share.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab import weights as weight_files
from cnnlab.errors import UsageError, unknown_choice
from cnnlab.weights import read_weight_file, register_source

KeyMap = Callable[[str, nn.Module], "str | None"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's transforms, and timm's default
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN_STD = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # timm's Inception-v4 / -ResNet-v2
PARAM = r"(?P<param>weight|bias|running_mean|running_var|num_batches_tracked)"


# --------------------------------------------------------------------------------------------------
# The key maps: reference key -> cnnlab key (None: not a key of this reference)
# --------------------------------------------------------------------------------------------------


def _rename(key: str, rules: Sequence[tuple[str, str | Callable[[re.Match[str]], str]]]) -> str | None:
    """The first rule whose pattern matches ``key`` in full rewrites it; no rule: None."""
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return replacement(match) if callable(replacement) else match.expand(replacement)
    return None


def torchvision_resnet_key(key: str, model: nn.Module) -> str | None:
    """torchvision ``resnet*`` / ``wide_resnet*``: ``layer2.0.conv1`` -> ``layer2.0.branch.conv1``.

    The stem's conv1/bn1 are cnnlab's ``conv1`` unit, ``downsample.0/1`` the projection shortcut's
    conv/BN, ``fc`` the head's.
    """
    return _rename(
        key,
        [
            (rf"conv1\.{PARAM}", r"conv1.conv.\g<param>"),
            (rf"bn1\.{PARAM}", r"conv1.bn.\g<param>"),
            (rf"(layer\d\.\d+)\.(conv\d|bn\d)\.{PARAM}", r"\1.branch.\2.\g<param>"),
            (rf"(layer\d\.\d+)\.downsample\.0\.{PARAM}", r"\1.shortcut.conv.\g<param>"),
            (rf"(layer\d\.\d+)\.downsample\.1\.{PARAM}", r"\1.shortcut.bn.\g<param>"),
            (rf"fc\.{PARAM}", r"head.fc.\g<param>"),
        ],
    )


def _sequential_names(module: nn.Module) -> dict[str, str]:
    """torchvision's index of each layer of a plain ``features`` stack -> cnnlab's name of that layer.

    torchvision's VGG and AlexNet ``features`` are unnamed ``nn.Sequential``s holding the same layers
    in the same order as cnnlab's named ones (conv, [BN], ReLU per row of the paper's table, a pool
    where the table pools), so a layer's index there is its rank here.
    """
    return {str(i): name for i, (name, _) in enumerate(module.named_children())}


def torchvision_vgg_key(key: str, model: nn.Module) -> str | None:
    """torchvision ``vgg*`` / ``vgg*_bn``: ``features.<i>`` -> ``features.conv<s>_<n>`` / ``bn<s>_<n>``.

    The classifier is Linear, ReLU, Dropout three times (indices 0, 3, 6) -> fc6, fc7, fc8.
    """
    names = _sequential_names(model.features)
    match = re.fullmatch(rf"features\.(\d+)\.{PARAM}", key)
    if match:
        name = names.get(match.group(1))
        return f"features.{name}.{match.group('param')}" if name else None
    return _rename(
        key, [(rf"classifier\.{3 * k}\.{PARAM}", rf"classifier.fc{6 + k}.\g<param>") for k in range(3)]
    )


def torchvision_alexnet_key(key: str, model: nn.Module) -> str | None:
    """torchvision ``alexnet`` (one tower): ``features.<i>`` -> ``features.conv<n>``.

    Its classifier puts dropout before each hidden linear layer: Dropout, Linear, ReLU, Dropout,
    Linear, ReLU, Linear (indices 1, 4, 6) -> fc6, fc7, fc8 (cnnlab drops after the ReLU: the same
    function in evaluation, the same masks' effect in training).
    """
    names = _sequential_names(model.features)
    match = re.fullmatch(rf"features\.(\d+)\.{PARAM}", key)
    if match:
        name = names.get(match.group(1))
        return f"features.{name}.{match.group('param')}" if name else None
    fc = {"1": "fc6", "4": "fc7", "6": "fc8"}
    return _rename(
        key, [(rf"classifier\.({i})\.{PARAM}", rf"classifier.{n}.\g<param>") for i, n in fc.items()]
    )


def torchvision_densenet_key(key: str, model: nn.Module) -> str | None:
    """torchvision ``densenet*``: ``denseblock2.denselayer5.norm1`` -> ``denseblock2.layers.4.reduce.bn``.

    Each dense layer is BN-ReLU-conv1x1 (``reduce``) then BN-ReLU-conv3x3 (``conv``); a transition's
    BN/conv are cnnlab's ``unit``; ``norm0/conv0`` the stem, ``norm5`` the final BN. The published
    files still use the old ``norm.1`` spelling, which torchvision renames on load: so do we.
    """
    key = re.sub(r"(denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.)", r"\1\2", key)
    unit = {"norm1": "reduce.bn", "conv1": "reduce.conv", "norm2": "conv.bn", "conv2": "conv.conv"}

    def dense_layer(m: re.Match[str]) -> str:
        index = int(m.group(2)) - 1
        return f"features.{m.group(1)}.layers.{index}.{unit[m.group(3)]}.{m.group('param')}"

    return _rename(
        key,
        [
            (rf"features\.conv0\.{PARAM}", r"features.stem.conv.\g<param>"),
            (rf"features\.norm0\.{PARAM}", r"features.stem.bn.\g<param>"),
            (rf"features\.(denseblock\d)\.denselayer(\d+)\.(norm1|conv1|norm2|conv2)\.{PARAM}", dense_layer),
            (rf"features\.(transition\d)\.norm\.{PARAM}", r"features.\1.unit.bn.\g<param>"),
            (rf"features\.(transition\d)\.conv\.{PARAM}", r"features.\1.unit.conv.\g<param>"),
            (rf"features\.norm5\.{PARAM}", r"features.norm.\g<param>"),
            (rf"classifier\.{PARAM}", r"head.fc.\g<param>"),
        ],
    )


def torchvision_googlenet_key(key: str, model: nn.Module) -> str | None:
    """torchvision ``googlenet``: its conv1/conv2/conv3 are Table 1's conv1, conv2_reduce, conv2.

    Inside each inception module, torchvision numbers the branches 1-4 in Figure 2b's order:
    1x1 | 1x1 -> 3x3 | 1x1 -> "5x5" | pool -> 1x1, which cnnlab names.
    """
    stem = {"conv1": "conv1", "conv2": "conv2_reduce", "conv3": "conv2"}
    branch = {
        "branch1": "branch1x1",
        "branch2.0": "branch3x3.reduce",
        "branch2.1": "branch3x3.conv",
        "branch3.0": "branch5x5.reduce",
        "branch3.1": "branch5x5.conv",
        "branch4.1": "branch_pool.proj",
    }
    return _rename(
        key,
        [
            (
                rf"(conv[123])\.(conv|bn)\.{PARAM}",
                lambda m: f"{stem[m.group(1)]}.{m.group(2)}.{m.group('param')}",
            ),
            (
                rf"(inception\d[a-e])\.(branch1|branch[234]\.[01])\.(conv|bn)\.{PARAM}",
                lambda m: f"{m.group(1)}.{branch.get(m.group(2), '?')}.{m.group(3)}.{m.group('param')}",
            ),
            (rf"fc\.{PARAM}", r"head.fc.\g<param>"),
        ],
    )


def _is_split(model: nn.Module, stage: str, branch: str) -> bool:
    """Whether cnnlab's ``stage.branch`` ends in Figure 7's 1x3 | 3x1 split (a chain, then the split)."""
    module = getattr(model, stage, None)
    return module is not None and branch in module and isinstance(module[branch][-1], nn.ModuleDict)


def torchvision_inception_v3_key(key: str, model: nn.Module) -> str | None:
    """torchvision ``inception_v3``: ``Mixed_6b.branch7x7dbl_3`` -> ``mixed_6b.branch7x7dbl.2``.

    Both name the branches alike (TF-slim's names): the k-th conv of ``branchX`` (``branchX_k``) is
    row k-1 of cnnlab's chain; a trailing ``a``/``b`` is Figure 7's 1x3/3x1 split, whose chain before
    it is cnnlab's ``branchX.0``; the pooling branch's conv follows its pool (``branch_pool.1``).
    The auxiliary head (``AuxLogits``) maps onto cnnlab's when the model has one (``aux_logits=True``).
    """

    def module(m: re.Match[str]) -> str:
        stage, branch, number, split = m.group(1).lower(), m.group(2), m.group(3), m.group(4)
        tail = f"{m.group(5)}.{m.group('param')}"
        if branch == "branch_pool":
            return f"{stage}.branch_pool.1.{tail}"
        row = int(number or 1) - 1
        if split:
            return f"{stage}.{branch}.1.{'1x3' if split == 'a' else '3x1'}.0.{tail}"
        if _is_split(model, stage, branch):
            return f"{stage}.{branch}.0.{row}.{tail}"
        return f"{stage}.{branch}.{row}.{tail}"

    return _rename(
        key,
        [
            (rf"Conv2d_(\d[a-z])_\d+x\d+\.(conv|bn)\.{PARAM}", r"conv_\1.\2.\g<param>"),
            (
                rf"(Mixed_\d[a-e])\.(branch_pool|branch[0-9x]+(?:dbl|x3)?)(?:_(\d)([ab])?)?\.(conv|bn)\.{PARAM}",
                module,
            ),
            (rf"AuxLogits\.(conv[01])\.(conv|bn)\.{PARAM}", r"aux_heads.mixed_6e.\1.\2.\g<param>"),
            (rf"AuxLogits\.fc\.{PARAM}", r"aux_heads.mixed_6e.fc.\g<param>"),
            (rf"fc\.{PARAM}", r"head.fc.\g<param>"),
        ],
    )


# timm's inception_v4 modules number their branches in concatenation order (the released one: pooling
# last); cnnlab names them after the papers' figures. Per module kind: timm branch -> cnnlab branch.
TIMM_V4_BRANCHES: dict[str, dict[str, str]] = {
    "inception_a": {
        "branch0": "branch1x1.0",
        "branch1": "branch3x3",
        "branch2": "branch3x3dbl",
        "branch3": "branch_pool",
    },
    "reduction_a": {"branch0": "branch3x3.0", "branch1": "branch3x3dbl"},
    "inception_b": {
        "branch0": "branch1x1.0",
        "branch1": "branch7x7",
        "branch2": "branch7x7dbl",
        "branch3": "branch_pool",
    },
    "reduction_b": {"branch0": "branch3x3", "branch1": "branch7x7x3"},
    "inception_c": {
        "branch0": "branch1x1.0",
        "branch1_0": "branch3x3.0.0",
        "branch1_1a": "branch3x3.1.1x3.0",
        "branch1_1b": "branch3x3.1.3x1.0",
        "branch2_0": "branch3x3dbl.0.0",
        "branch2_1": "branch3x3dbl.0.1",
        "branch2_2": "branch3x3dbl.0.2",
        "branch2_3a": "branch3x3dbl.1.1x3.0",
        "branch2_3b": "branch3x3dbl.1.3x1.0",
        "branch3": "branch_pool",
    },
}
# timm's Inception-v4 stem: features.0-5 (three convs, Mixed3a, Mixed4a, Mixed5a)
TIMM_V4_STEM = {
    "0": "stem.convs.0",
    "1": "stem.convs.1",
    "2": "stem.convs.2",
    "3.conv": "stem.mixed_3a.conv.0",
    "4.branch0": "stem.mixed_4a.branch3x3",
    "4.branch1": "stem.mixed_4a.branch7x7",
    "5.conv": "stem.mixed_5a.conv.0",
}


def timm_inception_v4_key(key: str, model: nn.Module) -> str | None:
    """timm ``inception_v4``: ``features.<i>`` is the stem (0-5), then Figure 9's modules in order.

    ``features.6`` is cnnlab's first stage after ``stem`` (``inception_a1``) and so on: timm's list
    and cnnlab's stage names both follow Figure 9. Inside a module, :data:`TIMM_V4_BRANCHES` names
    the branches; timm's Sequential index within a branch is the row of cnnlab's chain.
    """
    match = re.fullmatch(rf"features\.(\d+)\.(?:(.+)\.)?(conv|bn)\.{PARAM}", key)
    if match is None:
        return _rename(key, [(rf"last_linear\.{PARAM}", r"head.fc.\g<param>")])
    index, path, layer, param = int(match.group(1)), match.group(2), match.group(3), match.group("param")
    tail = f"{layer}.{param}"
    if index < 6:
        if path is None:  # features.0-2: the stem's three plain convs
            return f"{TIMM_V4_STEM[str(index)]}.{tail}" if str(index) in TIMM_V4_STEM else None
        stem = re.fullmatch(r"(\d\.branch\d|\d\.conv)(?:\.(\d))?", f"{index}.{path}")
        if stem and stem.group(1) in TIMM_V4_STEM:
            return f"{TIMM_V4_STEM[stem.group(1)]}.{stem.group(2) or ''}".rstrip(".") + f".{tail}"
        return None
    stages = model.stage_names[1:]  # after "stem", in Figure 9's order
    if index - 6 >= len(stages):
        return None
    stage = stages[index - 6]
    kind = re.sub(r"\d+$", "", stage)
    branch = re.fullmatch(r"(branch\d(?:_\d[ab]?)?)(?:\.(\d))?", path)
    if branch is None or kind not in TIMM_V4_BRANCHES or branch.group(1) not in TIMM_V4_BRANCHES[kind]:
        return None
    name, row = TIMM_V4_BRANCHES[kind][branch.group(1)], branch.group(2)
    return f"{stage}.{name}.{row}.{tail}" if row is not None else f"{stage}.{name}.{tail}"


# timm's inception_resnet_v2: per module, timm branch -> cnnlab branch (residual blocks' under "branches")
TIMM_IRV2_BRANCHES: dict[str, dict[str, str]] = {
    "mixed_5b": {
        "branch0": "branch1x1.0",
        "branch1": "branch5x5",
        "branch2": "branch3x3dbl",
        "branch3": "branch_pool",
    },
    "block_a": {
        "branch0": "branches.branch1x1.0",
        "branch1": "branches.branch3x3",
        "branch2": "branches.branch3x3dbl",
    },
    "reduction_a": {"branch0": "branch3x3.0", "branch1": "branch3x3dbl"},
    "block_b": {"branch0": "branches.branch1x1.0", "branch1": "branches.branch7x7"},
    "reduction_b": {"branch0": "branch3x3a", "branch1": "branch3x3b", "branch2": "branch3x3dbl"},
    "block_c": {"branch0": "branches.branch1x1.0", "branch1": "branches.branch3x3"},
}


def timm_inception_resnet_v2_key(key: str, model: nn.Module) -> str | None:
    """timm ``inception_resnet_v2``: ``repeat.<i>`` / ``repeat_1`` / ``repeat_2`` are the A/B/C blocks.

    ``mixed_6a``/``mixed_7a`` are Reduction-A/B, ``block8`` the last (plain) C block, ``conv2d``
    inside a block its 1x1 "Linear" conv (cnnlab's ``up``), ``conv2d_7b`` the final 1x1 conv and
    ``classif`` the classifier. Branch names per module: :data:`TIMM_IRV2_BRANCHES`.
    """
    last_c = sum(name.startswith("block_c") for name in model.stage_names)
    simple = _rename(
        key,
        [
            (rf"conv2d_(\d[a-z])\.(conv|bn)\.{PARAM}", r"conv_\1.\2.\g<param>"),
            (rf"classif\.{PARAM}", r"head.fc.\g<param>"),
        ],
    )
    if simple is not None:
        return simple
    match = re.fullmatch(rf"(mixed_\d[ab]|repeat(?:_[12])?\.\d+|block8)\.(.+)\.{PARAM}", key)
    if match is None:
        return None
    where, path, param = match.group(1), match.group(2), match.group("param")
    repeat = re.fullmatch(r"repeat(_[12])?\.(\d+)", where)
    if repeat:
        kind = {None: "block_a", "_1": "block_b", "_2": "block_c"}[repeat.group(1)]
        stage = f"{kind}{int(repeat.group(2)) + 1}"
    elif where == "block8":
        kind, stage = "block_c", f"block_c{last_c}"
    else:
        kind = stage = {"mixed_5b": "mixed_5b", "mixed_6a": "reduction_a", "mixed_7a": "reduction_b"}[where]
    if path == "conv2d" and kind.startswith("block"):
        return f"{stage}.up.{param}"
    branch = re.fullmatch(r"(branch\d)(?:\.(\d))?\.(conv|bn)", path)
    if branch is None or branch.group(1) not in TIMM_IRV2_BRANCHES[kind]:
        return None
    name, row = TIMM_IRV2_BRANCHES[kind][branch.group(1)], branch.group(2)
    row_part = f".{row}" if row is not None else ""
    return f"{stage}.{name}{row_part}.{branch.group(3)}.{param}"


def timm_resnetv2_key(key: str, model: nn.Module) -> str | None:
    """timm ``resnetv2_*`` (pre-activation): ``stages.<s>.blocks.<b>`` -> ``layer<s+1>.<b>``.

    A unit's ``norm1`` is its pre-activation (``preact.bn1``), ``norm2/norm3`` and the convs sit in
    cnnlab's ``branch``, ``downsample.conv`` is the bare 1x1 projection; ``stem.conv`` is ``conv1`` and
    ``norm`` the final BN-ReLU (``final_act``).
    """
    unit = {
        "norm1": "preact.bn1",
        "norm2": "branch.bn2",
        "norm3": "branch.bn3",
        "downsample.conv": "shortcut.conv",
    }

    def block(m: re.Match[str]) -> str:
        part = unit.get(m.group(3), f"branch.{m.group(3)}")
        return f"layer{int(m.group(1)) + 1}.{m.group(2)}.{part}.{m.group('param')}"

    return _rename(
        key,
        [
            (rf"stem\.conv\.{PARAM}", r"conv1.conv.\g<param>"),
            (rf"stages\.(\d)\.blocks\.(\d+)\.(norm[123]|conv[123]|downsample\.conv)\.{PARAM}", block),
            (rf"norm\.{PARAM}", r"final_act.bn1.\g<param>"),
            (rf"head\.fc\.{PARAM}", r"head.fc.\g<param>"),
        ],
    )


def linear_from_1x1_conv(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """timm's resnetv2 classifier is a 1x1 convolution after the global pool: its weight as a linear layer's."""
    if key == "head.fc.weight" and tensor.dim() == 4 and tuple(tensor.shape[2:]) == (1, 1):
        return tensor.flatten(1)
    return tensor


# --------------------------------------------------------------------------------------------------
# The table of supported references
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One reference model: the cnnlab model and options computing its function, and its key map.

    ``convert(reference_key, tensor)`` reshapes a tensor the reference stores in another layout.
    ``aux_prefixes`` are the reference keys of auxiliary heads, dropped (with a message) when the
    cnnlab model is built without them; ``ref_classifier`` and ``classifier`` name the final
    classifier in the reference and in cnnlab: it gives the file's class count, and is dropped and
    left at cnnlab's initialisation when another ``num_classes`` is asked for.
    """

    source: str
    name: str
    model: str
    key_map: KeyMap = field(repr=False)
    options: dict[str, Any] = field(default_factory=dict)
    ref_classifier: str = "fc"  # the classifier's module in the reference
    classifier: str = "head.fc"  # ... and in cnnlab
    aux_prefixes: tuple[str, ...] = ()
    note: str = ""
    convert: Callable[[str, torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    # the normalisation the reference's published weights expect (RGB; predict prepares images with it)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


V15 = {"stride_in": "3x3"}  # torchvision's ResNet v1.5: the stride on the bottleneck's 3x3
TORCHVISION_GOOGLENET = {
    "branch5x5_kernel": 3,
    "batch_norm": True,
    "lrn": False,
    "bn_eps": 1e-3,
    "pool4_kernel": 2,
    "transform_input": True,
    "drop_rate": 0.2,
}
TORCHVISION_INCEPTION_V3 = {"count_include_pad": True, "transform_input": True, "drop_rate": 0.5}


def _table() -> dict[tuple[str, str], Reference]:
    refs = []
    for depth in (18, 34, 50, 101, 152):
        refs.append(Reference("torchvision", f"resnet{depth}", f"resnet{depth}", torchvision_resnet_key, V15))
    refs.append(Reference("torchvision", "wide_resnet50_2", "wide-resnet50-2", torchvision_resnet_key, V15))
    refs.append(
        Reference(
            "torchvision", "wide_resnet101_2", "resnet101", torchvision_resnet_key, {**V15, "inner_factor": 2}
        )
    )
    for depth in (11, 13, 16, 19):
        for bn in ("", "_bn"):
            refs.append(
                Reference(
                    "torchvision",
                    f"vgg{depth}{bn}",
                    f"vgg{depth}{bn.replace('_', '-')}",
                    torchvision_vgg_key,
                    {"adaptive_pool": True},
                    ref_classifier="classifier.6",
                    classifier="classifier.fc8",
                )
            )
    refs.append(
        Reference(
            "torchvision",
            "alexnet",
            "alexnet-owt",
            torchvision_alexnet_key,
            {"adaptive_pool": True},
            ref_classifier="classifier.6",
            classifier="classifier.fc8",
        )
    )
    for depth in (121, 161, 169, 201):
        refs.append(
            Reference(
                "torchvision",
                f"densenet{depth}",
                f"densenet{depth}",
                torchvision_densenet_key,
                ref_classifier="classifier",
            )
        )
    refs.append(
        Reference(
            "torchvision",
            "googlenet",
            "googlenet",
            torchvision_googlenet_key,
            TORCHVISION_GOOGLENET,
            aux_prefixes=("aux1.", "aux2."),
            note="torchvision's auxiliary heads pool adaptively to 4x4, cnnlab's 5x5/3 as the paper: not mapped",
        )
    )
    refs.append(
        Reference(
            "torchvision",
            "inception_v3",
            "inception-v3",
            torchvision_inception_v3_key,
            TORCHVISION_INCEPTION_V3,
            aux_prefixes=("AuxLogits.",),
        )
    )
    refs.append(
        Reference(
            "timm",
            "inception_v4",
            "inception-v4",
            timm_inception_v4_key,
            {"branch_order": "released", "factor_order": "released"},
            ref_classifier="last_linear",
            **INCEPTION_MEAN_STD,
        )
    )
    refs.append(
        Reference(
            "timm",
            "inception_resnet_v2",
            "inception-resnet-v2",
            timm_inception_resnet_v2_key,
            {"branch_order": "released"},
            ref_classifier="classif",
            **INCEPTION_MEAN_STD,
        )
    )
    for depth in (18, 34, 50, 101, 152):
        refs.append(
            Reference(
                "timm",
                f"resnetv2_{depth}",
                f"preact-resnet{depth}",
                timm_resnetv2_key,
                {"stem_norm_act": False, **V15},
                ref_classifier="head.fc",
                convert=linear_from_1x1_conv,
            )
        )
    return {(r.source, r.name): r for r in refs}


REFERENCES: dict[tuple[str, str], Reference] = _table()


def list_references(source: str | None = None) -> list[tuple[str, str]]:
    """The ``(source, name)`` pairs :func:`from_reference` accepts, sorted; ``source`` filters."""
    return sorted(k for k in REFERENCES if source is None or k[0] == source)


def reference(source: str, name: str) -> Reference:
    """The :class:`Reference` of ``(source, name)``; an unknown one is a :class:`UsageError` with close names."""
    sources = sorted({s for s, _ in REFERENCES})
    if source not in sources:
        raise unknown_choice("reference source", source, sources)
    if (source, name) not in REFERENCES:
        raise unknown_choice(f"{source} model", name, [n for s, n in REFERENCES if s == source])
    return REFERENCES[(source, name)]


def parse_reference(spec: str) -> tuple[str, str]:
    """``"torchvision:googlenet"`` -> ``("torchvision", "googlenet")`` (the CLI's ``--weights-from``)."""
    source, sep, name = spec.partition(":")
    if not sep or not source or not name:
        raise UsageError(f"--weights-from takes SOURCE:NAME (e.g. torchvision:googlenet), got {spec!r}")
    reference(source, name)
    return source, name


# --------------------------------------------------------------------------------------------------
# Reading, mapping, checking, loading
# --------------------------------------------------------------------------------------------------


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) if t.dim() else "scalar"


def reference_classes(ref: Reference, state_dict: dict[str, torch.Tensor]) -> int | None:
    """The class count of the file's classifier (the rows of its weight); None if the file has none."""
    weight = state_dict.get(f"{ref.ref_classifier}.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() >= 1 else None


def model_classes(model: nn.Module, ref: Reference) -> int:
    """The class count of the cnnlab model's classifier."""
    return int(model.state_dict()[f"{ref.classifier}.weight"].shape[0])


def _renamed(
    ref: Reference, state_dict: dict[str, torch.Tensor], model: nn.Module, notes: list[str] | None
) -> dict[str, tuple[str, torch.Tensor]]:
    """cnnlab name -> (reference name, tensor) for ``state_dict`` of ``ref``, renamed through its key map
    (and converted); auxiliary heads ``model`` lacks are dropped (``notes`` says so). A tensor with no
    counterpart in ``model``, or two onto one name, is a :class:`UsageError`. Shapes are not checked here."""
    target = model.state_dict()
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    dropped = []
    for key, tensor in state_dict.items():
        new = ref.key_map(key, model)
        tensor = ref.convert(key, tensor) if ref.convert is not None else tensor
        if new is None or new not in target:
            if any(key.startswith(p) for p in ref.aux_prefixes):
                dropped.append(key)
                continue
            raise UsageError(
                f"{key!r} is not a weight of {ref.source}'s {ref.name} (no cnnlab counterpart): is the file another "
                f"model's? cnnlab {ref.model} expects {len(target)} tensors, the file has {len(state_dict)}"
            )
        if new in mapped:
            raise UsageError(f"{key!r} maps onto {new!r} a second time: the file holds duplicate names")
        mapped[new] = (key, tensor)
    if dropped and notes is not None:
        notes.append(
            f"{len(dropped)} tensors of auxiliary heads not loaded ({', '.join(sorted({k.split('.')[0] for k in dropped}))}): "
            + (ref.note or "the model was built without auxiliary heads (aux_logits=True keeps them)")
        )
    return mapped


def map_reference_state_dict(
    source: str,
    name: str,
    state_dict: dict[str, torch.Tensor],
    model: nn.Module | None = None,
    notes: list[str] | None = None,
    allow_missing: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """``state_dict`` of the reference ``(source, name)`` under cnnlab's names, checked against ``model``.

    ``model`` defaults to the reference's cnnlab model built on the meta device. Every reference key
    must map to a key of the model with the same shape, and every key of the model must be filled
    (BN's ``num_batches_tracked``, and keys under the prefixes ``allow_missing``, may be absent); the first mismatch is a :class:`UsageError` naming
    the key and both shapes. Auxiliary heads the model lacks are dropped (``notes`` says so).
    """
    ref = reference(source, name)
    if model is None:
        with torch.device("meta"):
            model = build_reference_model(source, name)
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for new, (key, tensor) in _renamed(ref, state_dict, model, notes).items():
        if tuple(tensor.shape) != tuple(target[new].shape):
            raise UsageError(
                f"{key!r} (cnnlab {new!r}) has shape {_shape(tensor)} in the file but {_shape(target[new])} "
                f"in {ref.model}: the file is not {source}'s {name}, or was saved with other options"
            )
        mapped[new] = tensor
    missing = [
        k
        for k in target
        if k not in mapped
        and not k.endswith("num_batches_tracked")
        and not any(k.startswith(p) for p in allow_missing)
    ]
    if missing:
        raise UsageError(
            f"the file has no weights for {missing[0]!r} of {ref.model}"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: is it {source}'s {name}?"
        )
    return mapped


# Options of a reference that do not change what its weights compute on an image: dropout (training
# only) and torchvision's transform_input (an input convention the user may turn off, see from_reference).
INPUT_OPTIONS = ("drop_rate", "transform_input")


def effective_options(model: nn.Module) -> dict[str, Any]:
    """Every builder option of a registry model as built: the builder's defaults, the registry entry's,
    then those passed to ``create_model``."""
    import inspect

    info = getattr(model, "model_info", None)
    if info is None:
        return dict(getattr(model, "model_options", {}))
    defaults = {
        p.name: p.default
        for p in inspect.signature(info.builder).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **info.default_options, **getattr(model, "model_options", {})}


def reference_mismatch(ref: Reference, model: nn.Module) -> str | None:
    """Why ``model`` does not compute ``ref``'s function (another model, or options that differ); None if it does."""
    name = getattr(model, "model_name", type(model).__name__)
    if name != ref.model:
        return f"{ref.source}'s {ref.name} is cnnlab's {ref.model}, not {name}"
    have = effective_options(model)
    differ = [
        f"{k}={v!r} (not {have.get(k)!r})"
        for k, v in ref.options.items()
        if k not in INPUT_OPTIONS and have.get(k) != v
    ]
    if differ:
        return f"{ref.source}'s {ref.name} computes its function with {ref.model} options {', '.join(differ)}"
    return None


def reference_of_model(source: str, model: nn.Module) -> Reference:
    """The reference of ``source`` whose function ``model`` computes (its registry name and options)."""
    name = getattr(model, "model_name", type(model).__name__)
    candidates = [r for r in REFERENCES.values() if r.source == source and r.model == name]
    if not candidates:
        known = sorted({r.model for r in REFERENCES.values() if r.source == source})
        raise UsageError(
            f"{source} publishes no weights for cnnlab's {name}; {source}'s key maps cover: {', '.join(known)}"
        )
    for ref in candidates:
        if reference_mismatch(ref, model) is None:
            return ref
    raise UsageError(
        f"{reference_mismatch(candidates[0], model)}: build the model with them (cnnlab.from_reference, or "
        f"--weights-from {source}:{candidates[0].name})"
    )


def reference_model_options(spec: str, model: str, options: dict[str, Any]) -> dict[str, Any]:
    """``--weights-from SOURCE:NAME`` on a command that builds ``model``: its ``options`` completed with the
    reference's (those given win; dropout is the recipe's, ``--drop-rate``). ``model`` must be the
    reference's cnnlab model; anything else is a :class:`UsageError` naming it."""
    ref = reference(*parse_reference(spec))
    if model != ref.model:
        raise UsageError(f"{ref.source}'s {ref.name} is cnnlab's {ref.model}, not {model}: name {ref.model}")
    return {**{k: v for k, v in ref.options.items() if k != "drop_rate"}, **options}


def reference_key_map(source: str, name: str | None = None) -> Callable[..., Any]:
    """The key map :func:`cnnlab.weights.load_weights` uses for ``source`` (``"torchvision"``, ``"timm"``),
    or for one reference ``(source, name)`` (``--weights-from torchvision:googlenet``).

    It finds the reference whose cnnlab model and options ``model`` is built with (a model computing
    another function is a :class:`UsageError` naming the options), renames and converts the file's
    tensors, and drops auxiliary heads the model lacks; :func:`~cnnlab.weights.load_weights` then
    checks every name and shape and handles another class count. Returns ``(tensors, notes)``.
    """

    def key_map(
        tensors: dict[str, torch.Tensor], model: nn.Module
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        if name is None:
            ref = reference_of_model(source, model)
        else:
            ref = reference(source, name)
            why = reference_mismatch(ref, model)
            if why is not None:
                raise UsageError(f"{why}: build it with cnnlab.from_reference({source!r}, {name!r}, ...)")
        notes: list[str] = []
        renamed = _renamed(ref, tensors, model, notes)
        return {new: tensor for new, (_, tensor) in renamed.items()}, notes

    return key_map


def build_reference_model(source: str, name: str, **options: Any) -> nn.Module:
    """The cnnlab model computing ``(source, name)``'s function: its registered name and options (``options`` override)."""
    from cnnlab.models import create_model

    ref = reference(source, name)
    return create_model(ref.model, **{**ref.options, **options})


def from_reference(
    source: str,
    name: str,
    weights: str | Path | dict[str, torch.Tensor],
    num_classes: int | None = None,
    notes: list[str] | None = None,
    **options: Any,
) -> nn.Module:
    """Build the cnnlab model computing the reference ``(source, name)``'s function and load its weights.

    ``weights`` is the reference's weight file (safetensors, or ``.pth``/``.pt`` read with
    ``weights_only=True``) or its state dict. ``num_classes`` defaults to the file's; another count
    drops the file's classifier (a note says so) and keeps cnnlab's initialisation of a new one.
    ``options`` override the reference's (``transform_input=False`` for inputs already in [-1, 1],
    ``aux_logits=True`` to keep Inception-v3's auxiliary head). ``notes`` collects what was dropped.
    """
    ref = reference(source, name)
    state = read_weight_file(weights)[0] if not isinstance(weights, dict) else dict(weights)
    notes = notes if notes is not None else []
    file_classes = reference_classes(ref, state)
    num_classes = num_classes or file_classes
    if num_classes is not None:
        options["num_classes"] = num_classes
    if file_classes is None or file_classes != num_classes:
        # a new classifier: build for real (cnnlab's initialisation), load all but the file's classifier
        model = build_reference_model(source, name, **options)
        prefix = f"{ref.ref_classifier}."
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        had = (
            f"the file's classifier ({file_classes} classes) is dropped"
            if file_classes
            else "the file has no classifier"
        )
        notes.append(f"{had}; {ref.classifier} is newly initialised for {model_classes(model, ref)} classes")
        fresh = (f"{ref.classifier}.",)
        mapped = map_reference_state_dict(source, name, state, model=model, notes=notes, allow_missing=fresh)
        model.load_state_dict(_complete(mapped, model, fresh), strict=True)
        return model
    # every tensor comes from the file: build on the meta device (no initialisation to pay for) and
    # take the file's tensors as the parameters
    with torch.device("meta"):
        model = build_reference_model(source, name, **options)
    mapped = map_reference_state_dict(source, name, state, model=model, notes=notes)
    # a state dict passed in stays the caller's: the model gets copies (a file's tensors are its own)
    full = _complete(mapped, model, copy=isinstance(weights, dict))
    model.load_state_dict(full, strict=True, assign=True)
    return model


def _complete(
    mapped: dict[str, torch.Tensor], model: nn.Module, keep: Sequence[str] = (), copy: bool = False
) -> dict[str, torch.Tensor]:
    """``mapped`` in the model's dtypes (copies if ``copy``), with BN batch counters the file lacks (zero)
    and the model's own tensors under the prefixes ``keep``: a full state dict for a strict load."""
    full = {}
    for key, current in model.state_dict().items():
        if key in mapped:
            full[key] = mapped[key].to(dtype=current.dtype, device="cpu", copy=copy)
        elif any(key.startswith(p) for p in keep):
            full[key] = current
        else:  # map_reference_state_dict let only BN's num_batches_tracked be absent
            full[key] = torch.zeros((), dtype=current.dtype)
    return full


# --------------------------------------------------------------------------------------------------
# Deterministic weights and inputs: shared by scripts/make_reference_fixtures.py and the tests
# --------------------------------------------------------------------------------------------------


def fill_reference_weights(
    keys: Sequence[tuple[str, Sequence[int], str]], seed: int
) -> dict[str, torch.Tensor]:
    """Deterministic weights for a state dict given as ``(name, shape, dtype)`` in the reference's order.

    Tensor ``i`` is drawn from its own generator seeded with ``seed * 1_000_003 + i``, so the values
    depend only on the seed and the position in the reference's own state dict (never on cnnlab's
    names): the fixture script fills the reference model, the tests fill the same names, map them
    and compare outputs. Scales keep activations sane through deep nets: convolution and linear
    weights He-normal (std sqrt(2 / fan_in)), BN scales in [0.5, 1.5], biases and running means
    N(0, 0.1), running variances in [0.5, 1.5]; integer tensors (``num_batches_tracked``) zero.
    """
    out = {}
    for index, (key, shape, dtype) in enumerate(keys):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
        shape = tuple(int(s) for s in shape)
        if not dtype.startswith("float"):
            out[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        leaf = key.rsplit(".", 1)[-1]
        if len(shape) >= 2:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            value = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif leaf == "running_var" or leaf == "weight":
            value = torch.rand(shape, generator=gen) + 0.5
        else:  # bias, running_mean
            value = torch.randn(shape, generator=gen) * 0.1
        out[key] = value.to(getattr(torch, dtype))
    return out


def reference_input(shape: Sequence[int], seed: int) -> torch.Tensor:
    """A standard-normal input batch of ``shape`` from its own generator seeded with ``seed``."""
    return torch.randn(tuple(int(s) for s in shape), generator=torch.Generator().manual_seed(seed))


def register_reference_sources() -> None:
    """Register ``"torchvision"`` and ``"timm"`` as :func:`cnnlab.weights.load_weights` sources (idempotent;
    ``load_weights`` calls it, as ``cnnlab.weights`` cannot import this module at its top)."""
    for source in sorted({source for source, _ in REFERENCES}):
        if source not in weight_files.SOURCES:  # looked up now: tests may swap the table
            register_source(source, reference_key_map(source))


__all__ = [
    "REFERENCES",
    "Reference",
    "build_reference_model",
    "fill_reference_weights",
    "from_reference",
    "list_references",
    "map_reference_state_dict",
    "parse_reference",
    "reference",
    "reference_input",
    "reference_key_map",
    "reference_model_options",
    "reference_of_model",
    "register_reference_sources",
]
