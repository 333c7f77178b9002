"""Weights of torchvision and timm through cnnlab's key maps: golden outputs, names and shapes, errors.

The fixtures (tests/fixtures/references/, written by scripts/make_reference_fixtures.py with the
reference libraries, which the tests never import) hold each reference's state-dict names and shapes,
a seed and the reference's logits on a seeded input. The tests regenerate the weights under the
reference's names (:func:`fill_reference_weights`), load them with :func:`cnnlab.from_reference` and
compare logits: equal shapes are not enough (Inception-ResNet-v2's reduction branches permute
without changing any shape), so every map is checked on outputs.
"""

from __future__ import annotations

import json
import pickle
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import cnnlab
from cnnlab.errors import CheckpointError, UsageError
from cnnlab.references import (
    fill_reference_weights,
    from_reference,
    map_reference_state_dict,
    parse_reference,
    reference,
    reference_input,
)

FIXTURES = Path(__file__).parent / "fixtures" / "references"
TOLERANCE = 1e-4  # of the logit scale (the largest |logit| of the reference)
# One reference per family and per variant with its own options (all names and shapes: below)
GOLDEN = [
    "torchvision_resnet18",
    "torchvision_resnet50",
    "torchvision_wide_resnet50_2",
    "torchvision_vgg11",
    "torchvision_vgg11_bn",
    "torchvision_alexnet",
    "torchvision_densenet121",
    "torchvision_googlenet",
    "torchvision_inception_v3",
    "timm_inception_v4",
    "timm_inception_resnet_v2",
    "timm_resnetv2_18",  # basic units: the first unit's identity shortcut adds the raw pooled map
    "timm_resnetv2_50",
]


@cache
def fixture(stem: str) -> dict:
    return json.loads((FIXTURES / f"{stem}.json").read_text())


@cache
def weights(stem: str) -> dict[str, torch.Tensor]:
    data = fixture(stem)
    return fill_reference_weights(data["keys"], data["seed"])


def logits(stem: str, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """cnnlab's logits on the fixture's input after loading its weights, and the reference's."""
    data = fixture(stem)
    model = from_reference(data["source"], data["name"], weights(stem), **options).eval()
    with torch.no_grad():
        out = model(reference_input(data["input"]["shape"], data["input"]["seed"]))
    return out, torch.tensor(data["logits"])


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).abs().max() / ref.abs().max()).item()


def test_every_reference_has_a_fixture_and_every_fixture_a_reference():
    stems = {p.stem for p in FIXTURES.glob("*.json")}
    assert stems == {f"{s}_{n}" for s, n in cnnlab.list_references()}
    assert set(GOLDEN) <= stems


def test_the_issues_families_are_supported():
    names = {n for _, n in cnnlab.list_references("torchvision")}
    for depth in (18, 34, 50, 101, 152):
        assert f"resnet{depth}" in names
    for depth in (11, 13, 16, 19):
        assert {f"vgg{depth}", f"vgg{depth}_bn"} <= names
    assert {"wide_resnet50_2", "wide_resnet101_2", "alexnet", "googlenet", "inception_v3"} <= names
    assert {f"densenet{d}" for d in (121, 161, 169, 201)} <= names
    timm = {n for _, n in cnnlab.list_references("timm")}
    assert timm == {"inception_v4", "inception_resnet_v2", *(f"resnetv2_{d}" for d in (18, 34, 50, 101, 152))}


@pytest.mark.parametrize("stem", GOLDEN)
def test_golden_logits(stem):
    out, ref = logits(stem)
    assert out.shape == ref.shape
    assert relative_error(out, ref) <= TOLERANCE


@pytest.mark.parametrize("stem", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_names_and_shapes_map_onto_the_model(stem):
    """Every depth: each reference tensor has a cnnlab counterpart of its shape, and none is left out (meta device)."""
    data = fixture(stem)
    state = {k: torch.empty(shape, device="meta") for k, shape, _ in data["keys"]}
    with torch.device("meta"):
        model = cnnlab.references.build_reference_model(data["source"], data["name"], num_classes=10)
    notes: list[str] = []
    mapped = map_reference_state_dict(data["source"], data["name"], state, model=model, notes=notes)
    target = model.state_dict()
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in mapped)
    aux = len(data["keys"]) - len(mapped)
    assert aux == 0 or (notes and str(aux) in notes[0])  # only auxiliary heads are ever dropped


# Each named option is needed: the reference's weights under the paper's variant compute something else
@pytest.mark.parametrize(
    "stem, paper",
    [
        ("timm_inception_resnet_v2", {"branch_order": "paper"}),  # every shape fits: only outputs tell
        ("timm_inception_v4", {"branch_order": "paper"}),
        ("torchvision_googlenet", {"bn_eps": 1e-5}),
        ("torchvision_googlenet", {"pool4_kernel": 3}),
        ("torchvision_googlenet", {"transform_input": False}),
        ("torchvision_inception_v3", {"count_include_pad": False}),
        ("torchvision_resnet50", {"stride_in": "1x1"}),
    ],
)
def test_the_papers_variant_computes_another_function(stem, paper):
    out, ref = logits(stem, **paper)
    assert relative_error(out, ref) > 10 * TOLERANCE  # at least 10x what the golden test allows


def test_inception_v4s_factor_order_is_caught_by_shapes():
    with pytest.raises(UsageError, match=r"'features\.4\.branch1\.1\.conv\.weight'.*64x64x1x7.*64x64x7x1"):
        logits("timm_inception_v4", factor_order="paper")


def test_resnetv2s_stem_is_not_the_papers():
    """With the paper's stem (BN-ReLU before the max pool), timm's resnetv2 weights have nowhere to go."""
    with pytest.raises(UsageError, match=r"'stages\.0\.blocks\.0\.norm1\.weight' is not a weight"):
        logits("timm_resnetv2_18", stem_norm_act=True)


def test_inception_v3_auxiliary_head_maps_when_kept():
    data = fixture("torchvision_inception_v3")
    model = from_reference(
        "torchvision", "inception_v3", weights("torchvision_inception_v3"), aux_logits=True
    )
    torch.testing.assert_close(
        model.aux_heads["mixed_6e"].fc.weight, weights("torchvision_inception_v3")["AuxLogits.fc.weight"]
    )
    notes: list[str] = []
    from_reference(data["source"], data["name"], weights("torchvision_inception_v3"), notes=notes)
    assert "AuxLogits" in notes[0] and "aux_logits=True" in notes[0]


def test_files_safetensors_and_torch(tmp_path):
    state = weights("torchvision_resnet18")
    save_file(state, tmp_path / "r18.safetensors")
    torch.save(state, tmp_path / "r18.pth")
    data = fixture("torchvision_resnet18")
    x = reference_input(data["input"]["shape"], data["input"]["seed"])
    ref = torch.tensor(data["logits"])
    for path in (tmp_path / "r18.safetensors", tmp_path / "r18.pth"):
        model = cnnlab.from_reference("torchvision", "resnet18", weights=path).eval()
        with torch.no_grad():
            assert relative_error(model(x), ref) <= TOLERANCE


def test_another_class_count_drops_the_classifier_only():
    notes: list[str] = []
    model = from_reference(
        "torchvision", "resnet18", weights("torchvision_resnet18"), num_classes=5, notes=notes
    )
    assert model.head.fc.out_features == 5
    assert "10 classes" in notes[0] and "5 classes" in notes[0]
    torch.testing.assert_close(
        model.layer4[1].branch.conv2.weight, weights("torchvision_resnet18")["layer4.1.conv2.weight"]
    )
    assert model.head.fc.weight.device.type == "cpu" and model.head.fc.weight.abs().sum() > 0
    headless = {k: v for k, v in weights("torchvision_resnet18").items() if not k.startswith("fc.")}
    notes.clear()
    model = from_reference("torchvision", "resnet18", headless, notes=notes)
    assert model.head.fc.out_features == 1000 and notes == [
        "the file has no classifier; head.fc is newly initialised for 1000 classes"
    ]


def test_a_file_of_another_architecture_names_the_first_mismatch():
    with pytest.raises(UsageError, match=r"no weights for 'layer1\.2\.branch\.conv1\.weight' of resnet34"):
        from_reference("torchvision", "resnet34", weights("torchvision_resnet18"))
    # same names, other shapes: the key and both shapes
    with pytest.raises(
        UsageError, match=r"'layer1\.0\.conv1\.weight' .* 64x64x1x1 in the file but 128x64x1x1"
    ):
        from_reference("torchvision", "wide_resnet50_2", weights("torchvision_resnet50"))
    with pytest.raises(
        UsageError, match=r"'features\.conv0\.weight' is not a weight of torchvision's resnet18"
    ):
        from_reference("torchvision", "resnet18", weights("torchvision_densenet121"))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_carrying_code_and_damaged_files_are_refused(tmp_path, capsys):
    bad = tmp_path / "evil.pth"
    with bad.open("wb") as f:
        pickle.dump({"conv1.weight": Payload()}, f)
    with pytest.raises(CheckpointError, match="refused.*nothing was unpickled"):
        from_reference("torchvision", "resnet18", bad)
    assert "must never run" not in capsys.readouterr().out
    good = tmp_path / "r18.pth"
    torch.save(weights("torchvision_resnet18"), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        from_reference("torchvision", "resnet18", cut)
    cut_st = tmp_path / "cut.safetensors"
    from safetensors.torch import save_file

    save_file(weights("torchvision_resnet18"), tmp_path / "r18.safetensors")
    cut_st.write_bytes((tmp_path / "r18.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        from_reference("torchvision", "resnet18", cut_st)
    with pytest.raises(UsageError, match="no weight file"):
        from_reference("torchvision", "resnet18", tmp_path / "missing.pth")


def test_unknown_references_and_specs():
    with pytest.raises(UsageError, match="Did you mean 'resnet50'"):
        reference("torchvision", "resnet05")
    with pytest.raises(UsageError, match="unknown reference source 'tv'"):
        reference("tv", "resnet50")
    assert parse_reference("torchvision:googlenet") == ("torchvision", "googlenet")
    with pytest.raises(UsageError, match="SOURCE:NAME"):
        parse_reference("googlenet")


def test_transform_input_is_torchvisions_renormalisation():
    """transform_input maps ImageNet-normalised inputs to (x - 0.5) / 0.5, as torchvision's _transform_input."""
    from cnnlab.models.layers import IMAGENET_MEAN, IMAGENET_STD, RenormalizeInput

    pixels = torch.rand(2, 3, 4, 4)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(RenormalizeInput()((pixels - mean) / std), (pixels - 0.5) / 0.5)
    with pytest.raises(UsageError, match="in_chans=1"):
        cnnlab.create_model("googlenet", in_chans=1, transform_input=True)


def test_the_loaded_model_is_trainable_and_owns_its_tensors():
    state = weights("torchvision_resnet18")
    model = from_reference("torchvision", "resnet18", state)
    assert model.training and all(p.requires_grad and p.device.type == "cpu" for p in model.parameters())
    with torch.no_grad():
        model.conv1.conv.weight.add_(1.0)
    assert not torch.equal(model.conv1.conv.weight, state["conv1.weight"])  # the caller's dict is untouched


# load_weights(model, path, source="torchvision" | "timm"): the same key maps for a model the user built
SOURCE_MAPS = [
    "torchvision_resnet18",
    "torchvision_googlenet",  # its auxiliary heads are not mapped: dropped, with a message
    "torchvision_densenet121",  # the published files' old norm.1 spelling
    "timm_inception_resnet_v2",
    "timm_resnetv2_18",  # its 1x1-conv classifier is converted
]


@pytest.mark.parametrize("stem", SOURCE_MAPS)
def test_load_weights_reads_a_reference_file_through_its_source(stem, tmp_path):
    data = fixture(stem)
    ref = reference(data["source"], data["name"])
    path = tmp_path / "w.pth"
    torch.save(weights(stem), path)
    model = cnnlab.create_model(ref.model, num_classes=10, **ref.options).eval()
    report = cnnlab.load_weights(model, path, source=data["source"])
    assert report.loaded == len(model.state_dict()) or report.messages
    x = reference_input(data["input"]["shape"], data["input"]["seed"])
    with torch.no_grad():
        expected = from_reference(data["source"], data["name"], weights(stem)).eval()(x)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
        assert relative_error(model(x), torch.tensor(data["logits"])) <= TOLERANCE
    if ref.aux_prefixes:
        assert "auxiliary heads not loaded" in report.messages[0]


def test_load_weights_source_checks_the_model_and_its_options(tmp_path):
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in weights("torchvision_resnet18").items()}, str(path))
    paper = cnnlab.create_model("resnet18", num_classes=10)  # stride_in 1x1: not torchvision's v1.5
    with pytest.raises(
        UsageError, match=r"stride_in='3x3' \(not '1x1'\).*--weights-from torchvision:resnet18"
    ):
        cnnlab.load_weights(paper, path, source="torchvision")
    with pytest.raises(UsageError, match="torchvision publishes no weights for cnnlab's lecture-simple"):
        cnnlab.load_weights(cnnlab.create_model("lecture-simple"), path, source="torchvision")
    with pytest.raises(UsageError, match="torchvision's resnet34 is cnnlab's resnet34, not resnet18"):
        cnnlab.load_weights(
            cnnlab.create_model("resnet18", stride_in="3x3"), path, source="torchvision:resnet34"
        )
    # one reference named (SOURCE:NAME), another class count: refused with the fix, or dropped on request
    five = cnnlab.create_model("resnet18", num_classes=5, stride_in="3x3")
    with pytest.raises(UsageError, match="10-class classifier"):
        cnnlab.load_weights(five, path, source="torchvision:resnet18")
    report = cnnlab.load_weights(five, path, source="torchvision:resnet18", num_classes=5)
    assert (
        report.dropped == ("head.fc.weight", "head.fc.bias")
        and "newly initialised for 5" in report.messages[0]
    )
    torch.testing.assert_close(
        five.layer4[1].branch.conv2.weight, weights("torchvision_resnet18")["layer4.1.conv2.weight"]
    )
    # a cnnlab file read as torchvision's: the first name with no counterpart
    torch.save(five.state_dict(), tmp_path / "own.pth")
    with pytest.raises(UsageError, match="is not a weight of torchvision's resnet18"):
        cnnlab.load_weights(five, tmp_path / "own.pth", source="torchvision")
    with pytest.raises(UsageError, match="unknown weight source 'torchvison'"):
        cnnlab.load_weights(five, path, source="torchvison")
