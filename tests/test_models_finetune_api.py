"""The model API fine-tuning needs, over the registry (heavy models at their smallest input; depth variants
through a stand-in, test_models_registry.STAND_INS):
``forward_features`` / ``forward_head(pre_logits=...)``, ``get_classifier``, ``reset_classifier``,
``feature_info`` and ``create_model(name, features_only=True)``. The per-model check of the head, the embedding
and ``reset_classifier`` runs in test_models_registry.test_every_run_model_runs_exports_and_fine_tunes, on the
one build of each model that its ONNX export and its shapes and gradients check use too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models import create_model, model_info
from cnnlab.models.layers import FeatureExtractor, ShapeOnlyNorm
from test_models_registry import RUN_MODELS, smallest_side


def check_head_embedding_classifier_reset_and_features(model: nn.Module, x: torch.Tensor) -> None:
    """Run by test_models_registry.test_every_run_model_runs_exports_and_fine_tunes, on its one build of the
    model (7 classes, 1 channel; after its training step, whose statistics do not matter here): the head,
    the embedding, ``feature_info`` and ``reset_classifier``."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert torch.equal(model.forward_head(features), logits)
        embedding = model.forward_head(features, pre_logits=True)
        classifier = model.get_classifier()
        assert embedding.dim() == 2 and embedding.shape[0] == 2
        if isinstance(classifier, nn.Linear):  # the embedding is exactly what the final layer takes
            assert embedding.shape[1] == classifier.in_features
            torch.testing.assert_close(classifier(embedding), logits)
        else:  # NIN: a 1x1 conv making one map per class; the embedding is the map it takes, pooled
            assert embedding.shape[1] == classifier.in_channels
        assert model.num_classes == 7

        # feature_info: one entry per stride, increasing; the extractor gives those maps, the last one the features
        info = model.feature_info
        reductions = [entry["reduction"] for entry in info]
        assert reductions == sorted(set(reductions)) and reductions[0] >= 1
        maps = FeatureExtractor(model)(x)
        assert [m.shape[1] for m in maps] == [entry["num_chs"] for entry in info]
        assert all(a.shape[-1] >= b.shape[-1] for a, b in zip(maps, maps[1:]))
        torch.testing.assert_close(maps[-1], features)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_classifier(3)
    assert model.num_classes == 3
    replaced = {f"{n}.{p}" for n in model.classifier_names() for p in ("weight", "bias")}
    after = model.state_dict()
    assert set(after) == set(before)  # same names: a fine-tuned model's file loads like any other
    for key, value in after.items():
        if key not in replaced:
            assert torch.equal(value, before[key]), key
    with torch.no_grad():
        main, aux = model.forward_aux(x)
    assert main.shape == (2, 3) and all(a.shape == (2, 3) for a in aux)


@pytest.mark.parametrize("name", RUN_MODELS)
def test_features_only_builds_a_backbone(name: str) -> None:
    size = smallest_side(name)
    options = {"img_size": size} if "img_size" in model_info(name).options() else {}
    with torch.device("meta"):
        backbone = create_model(name, features_only=True, in_chans=1, **options)
    assert isinstance(backbone, FeatureExtractor) and backbone.model_name == name
    with ShapeOnlyNorm():  # shapes only: meta batch norm is slow in deep nets
        maps = backbone(torch.empty(2, 1, size, size, device="meta"))
    assert [m.shape[1] for m in maps] == [e["num_chs"] for e in backbone.feature_info]


def test_feature_info_of_resnet50_is_the_known_layout() -> None:
    """Independent figures: ResNet-50's stage outputs (He et al. 2016 Table 1) at strides 2..32."""
    with torch.device("meta"):
        model = create_model("resnet50")
    assert [(e["module"], e["num_chs"], e["reduction"]) for e in model.feature_info] == [
        ("conv1", 64, 2),
        ("layer1", 256, 4),
        ("layer2", 512, 8),
        ("layer3", 1024, 16),
        ("layer4", 2048, 32),
    ]


def test_vgg_pre_logits_is_fc7_after_relu_and_dropout() -> None:
    model = create_model("vgg11", num_classes=4, img_size=32, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = model.classifier.drop7(model.classifier.relu7(model.classifier.fc7(
            model.classifier.drop6(model.classifier.relu6(model.classifier.fc6(model.features(x).flatten(1))))
        )))  # fmt: skip
        assert torch.equal(model.forward_head(model.forward_features(x), pre_logits=True), expected)
    assert model.get_classifier() is model.classifier.fc8


def test_reset_classifier_uses_the_family_initialisation() -> None:
    torch.manual_seed(0)
    vgg = create_model("vgg11", img_size=32)  # N(0, 0.01), biases 0 (Sec. 3.1)
    vgg.reset_classifier(500)
    assert abs(vgg.get_classifier().weight.std().item() - 0.01) < 1e-3
    assert not vgg.get_classifier().bias.any()
    v3 = create_model("inception-v3", img_size=75)  # truncated normal within 2 std, std 0.001
    v3.reset_classifier(1000)
    weight = v3.get_classifier().weight
    assert weight.abs().max().item() <= 0.002 + 1e-9 and 0.0008 < weight.std().item() < 0.001
    net = create_model("googlenet", aux_logits=True)  # Caffe's xavier: uniform +-sqrt(3 / fan_in)
    net.reset_classifier(10)
    assert net.classifier_names() == ["head.fc", "aux_heads.inception4a.fc2", "aux_heads.inception4d.fc2"]
    for name in net.classifier_names():
        layer = net.get_submodule(name)
        bound = (3.0 / layer.in_features) ** 0.5
        assert layer.weight.abs().max().item() <= bound and layer.weight.abs().max().item() > 0.9 * bound, (
            name
        )


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_reset_classifier_refuses_a_bad_class_count(bad) -> None:
    model = create_model("lecture-simple")
    with pytest.raises(UsageError, match="num_classes must be a whole number"):
        model.reset_classifier(bad)


def test_out_indices_out_of_range_is_a_usage_error() -> None:
    model = create_model("lecture-simple")
    with pytest.raises(UsageError, match="out_indices"):
        FeatureExtractor(model, out_indices=[0, 7])
    assert len(FeatureExtractor(model, out_indices=[-1]).feature_info) == 1
