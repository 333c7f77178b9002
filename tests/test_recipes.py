"""Paper recipes as data: every value has a source, every model names one, and every model learns under it."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab.cli import main
from cnnlab.errors import UsageError
from cnnlab.models import create_model, list_models, model_info
from cnnlab.models.layers import check_input_size
from cnnlab.train.config import WEIGHT_INITS, TrainConfig
from cnnlab.train.engine import WEIGHT_REDRAWS, build_model_for_data
from cnnlab.train.optim import LRSchedule, build_optimizer
from cnnlab.train.recipes import FAMILY_RECIPES, RECIPES, config_with_recipe, recipe
from cnnlab.train.step import TrainStep

ISSUE_RECIPES = ("alexnet", "zfnet", "vgg", "nin", "googlenet", "bn-inception", "inception-v3", "resnet")
ISSUE_RECIPES += ("resnet-cifar", "preact", "wrn", "densenet", "lecture")


def test_every_recipe_the_issue_names_exists_and_every_value_is_a_setting_with_a_source() -> None:
    assert set(ISSUE_RECIPES) <= set(RECIPES)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for r in RECIPES.values():
        for key, (_, source) in r.values.items():
            assert key in fields, (r.name, key)
            assert isinstance(source, str) and len(source) > 10, (r.name, key)
        TrainConfig(**r.settings()).validate()  # each recipe is a valid config as it stands


def test_slide_figures_are_the_recipes_values() -> None:
    """Slide 003's AlexNet and ResNet lists; slide 004's BN-x5 learning rate; the issue's wd 1e-4 for ResNet."""
    alexnet = recipe("alexnet").settings()
    assert (alexnet["lr"], alexnet["momentum"], alexnet["weight_decay"], alexnet["batch_size"]) == (
        0.01, 0.9, 5e-4, 128,
    )  # fmt: skip
    assert alexnet["drop_rate"] == 0.5 and alexnet["schedule"] == "plateau" and alexnet["gamma"] == 0.1
    # the one deviation, named: He-normal weights; alexnet-paper keeps section 5's init (the model's own)
    assert alexnet["weight_init"] == "he" and "cnnlab deviation" in recipe("alexnet").values["weight_init"][1]
    assert recipe("alexnet-paper").settings() == {**alexnet, "weight_init": "model"}
    resnet = recipe("resnet").settings()
    assert (resnet["lr"], resnet["batch_size"], resnet["weight_decay"], resnet["drop_rate"]) == (
        0.1,
        256,
        1e-4,
        0,
    )
    assert "slide prints 1e-5" in recipe("resnet").values["weight_decay"][1]
    assert recipe("bn-inception").settings()["lr"] == 0.0075


def test_every_registered_model_names_a_known_recipe() -> None:
    for name in list_models():
        assert model_info(name).recipe in RECIPES, name
    assert set(FAMILY_RECIPES.values()) <= set(RECIPES)
    assert model_info("alexnet").recipe == "alexnet" and model_info("nin-cifar").recipe == "nin"
    assert model_info("wrn-34-2").recipe == "wrn"  # names a family pattern resolves get theirs too


def test_alexnet_recipe_redraws_he_weights_and_alexnet_paper_keeps_section_5() -> None:
    torch.manual_seed(0)
    he = build_model_for_data(config_with_recipe("alexnet", {}, model="alexnet"), 10, (1, 67, 67))
    paper = build_model_for_data(config_with_recipe("alexnet-paper", {}, model="alexnet"), 10, (1, 67, 67))
    assert (
        float(paper.classifier.fc6.bias.detach().min()) == 1.0
        and abs(float(paper.features.conv1.weight.detach().std()) - 0.01) < 1e-3
    )
    assert float(he.classifier.fc6.bias.detach().abs().max()) == 0.0
    assert (
        abs(float(he.features.conv1.weight.detach().std()) - (2 / 121) ** 0.5) < 0.02
    )  # He: sqrt(2 / fan_in)
    with pytest.raises(UsageError, match="unknown weight initialisation 'orthogonal'"):
        TrainConfig(weight_init="orthogonal").validate()


def test_zfnet_recipe_redraws_he_weights_and_zfnet_paper_keeps_section_3() -> None:
    zfnet = recipe("zfnet").settings()
    assert zfnet["weight_init"] == "he" and "cnnlab deviation" in recipe("zfnet").values["weight_init"][1]
    assert recipe("zfnet-paper").settings() == {**zfnet, "weight_init": "model"}
    assert (zfnet["lr"], zfnet["momentum"], zfnet["batch_size"], zfnet["drop_rate"]) == (0.01, 0.9, 128, 0.5)
    torch.manual_seed(0)
    he = build_model_for_data(config_with_recipe("zfnet", {}, model="zfnet"), 10, (1, 47, 47))
    paper = build_model_for_data(config_with_recipe("zfnet-paper", {}, model="zfnet"), 10, (1, 47, 47))
    assert abs(float(paper.features.conv1.weight.detach().std()) - 0.01) < 1e-3
    assert abs(float(he.features.conv1.weight.detach().std()) - (2 / 49) ** 0.5) < 0.02  # sqrt(2 / fan_in)


def test_weight_init_glorot_redraws_every_conv_and_linear_layer_uniform_with_zero_biases() -> None:
    assert set(WEIGHT_REDRAWS) == set(WEIGHT_INITS) - {"model"}
    torch.manual_seed(0)
    cfg = config_with_recipe("vgg", {"weight_init": "glorot"}, model="vgg11")
    model = build_model_for_data(cfg, 10, (1, 32, 32))
    conv = model.features.conv2_1  # fan_in 64 x 9, fan_out 128 x 9: bound sqrt(6 / 1728)
    bound = (6 / (576 + 1152)) ** 0.5
    weight = conv.weight.detach()
    assert float(weight.abs().max()) <= bound and float(weight.std()) > 0.5 * bound
    assert float(model.classifier.fc6.bias.detach().abs().max()) == 0.0
    assert model.classifier_init is WEIGHT_REDRAWS["glorot"]  # a replaced classifier is drawn the same way


def test_explicit_settings_override_the_recipe_and_the_config_says_which_came_from_it() -> None:
    cfg = config_with_recipe("alexnet", {"lr": 0.005}, model="alexnet")
    assert cfg.lr == 0.005 and cfg.weight_decay == 5e-4 and cfg.recipe == "alexnet"
    assert "lr" not in cfg.recipe_fields and "weight_decay" in cfg.recipe_fields
    plain = config_with_recipe("none", {}, model="alexnet")
    assert plain.recipe is None and plain.lr == TrainConfig().lr
    with pytest.raises(UsageError, match="unknown recipe 'alexnte'"):
        config_with_recipe("alexnte", {})


def test_cli_train_uses_the_models_recipe_and_records_it(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    common = ["--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--max-steps-per-epoch", "1", "--quiet"]
    common += ["--threads", "1", "--out", str(tmp_path), "--train-subset", "64"]
    assert main(["train", "resnet8-cifar", "--batch-size", "32", *common]) == 0
    saved = json.loads((tmp_path / "resnet8-cifar" / "config.json").read_text())
    assert saved["recipe"] == "resnet-cifar" and saved["lr"] == 0.1 and saved["weight_decay"] == 1e-4
    assert "batch_size" not in saved["recipe_fields"] and "lr" in saved["recipe_fields"]
    assert saved["batch_size"] == 32
    assert main(["train", "resnet8-cifar", "--recipe", "none", "--name", "plain", *common]) == 0
    plain = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert plain["recipe"] is None and plain["lr"] == TrainConfig().lr and plain["recipe_fields"] == []


def test_cli_recipes_lists_and_explains(capsys) -> None:
    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ISSUE_RECIPES)
    assert main(["recipes", "resnet"]) == 0
    assert "slide 003 (Training ResNet in practice): mini-batch size 256" in capsys.readouterr().out
    assert main(["recipes", "--models", "nin*"]) == 0
    assert capsys.readouterr().out.split() == ["nin", "nin", "nin-cifar", "nin"]
    assert main(["recipes", "nope"]) == 2


# ------------------------------------------------------------------------------ every model learns


# One net per family (its smallest member) at its smallest 1-channel input, found with
# cnnlab.models.layers.smallest_input_size / check_input_size (heads sized from the input are built for
# it); 8 pixels at least, so that batch norm sees more than one value per channel.
REPRESENTATIVES = {
    "lecture-simple": 28, "lecture-inception": 28, "lecture-residual": 28, "alexnet": 67, "zfnet": 47,
    "overfeat-fast": 71, "cnn-s": 19, "vgg11": 32, "vgg11-bn": 32, "nin-cifar": 8, "googlenet": 31,
    "bn-inception": 31, "inception-v3": 75, "inception-resnet-v1": 75, "resnet18": 8, "resnet20-cifar": 8,
    "preact-resnet110-cifar": 8, "wrn-16-4": 8, "densenet-40-12": 8, "speedrun-fmnist": 8,
}  # fmt: skip
# Measured (docs/training.md, Paper recipes): the papers' N(0, 0.01) initialisation without batch norm
# leaves AlexNet, ZFNet and VGG at chance (ZFNet's and VGG's signal vanishes: logits of std 4e-6 and
# 2e-7 at init), so recipes alexnet and zfnet re-draw He-normal weights and vgg Glorot's (VGG section
# 3.1), each a named value of the recipe (alexnet-paper and zfnet-paper keep the papers' init).
# GoogLeNet (built without section 5's auxiliary heads) starts from bvlc_googlenet's init, whose conv
# biases 0.2 leave 1.4% of the spread of its 5b features image-dependent: over 6 steps of batch 8 the
# loss moves with the dropout (40%) masks more than with learning (lr 1e-3 and 1e-2 give nearly the same
# losses; without dropout it falls every step), so its loss under a fixed mask rises by step 6. It
# learns on real data (63.99% on Fashion-MNIST after 313 steps of batch 32). Strict: the day it passes,
# the test says so.
STUCK_AT_FIRST = {"googlenet"}


def test_representatives_cover_every_family_at_a_size_that_runs() -> None:
    families = {model_info(n).family for n in list_models()}
    assert {model_info(n).family for n in REPRESENTATIVES} == families
    for name, side in REPRESENTATIVES.items():
        options = {"img_size": side} if "img_size" in model_info(name).options() else {}
        with torch.device("meta"):
            check_input_size(create_model(name, num_classes=2, in_chans=1, **options), (1, side, side))


def _batch(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8 images of two classes any net tells apart: a bright left or right half, plus noise."""
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1] * 4)
    x = 0.3 * torch.randn(8, 1, side, side, generator=g)
    half = side // 2
    x[y == 0, :, :, :half] += 1.5
    x[y == 1, :, :, half:] += 1.5
    return x, y


def _main_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(1)  # the same dropout masks before and after
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


STEPS = 6


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="dropout noise over 6 steps; see above"))
        if n in STUCK_AT_FIRST
        else n
        for n in REPRESENTATIVES
    ],
)
def test_each_family_learns_under_its_own_recipe(name: str) -> None:
    """A few steps of the model's recipe (optimiser, lr, momentum, wd, schedule, clipping, dropout) on one
    batch at the model's smallest input lower the training loss: no recipe leaves a model stuck or diverging."""
    start = time.perf_counter()
    side = REPRESENTATIVES[name]
    cfg = config_with_recipe(model_info(name).recipe, {"batch_size": 8}, model=name).validate()
    torch.manual_seed(0)
    model = build_model_for_data(cfg, 2, (1, side, side))  # as training builds it (img_size, weight_init)
    model.train()
    optimizer = build_optimizer(model, cfg)
    step = TrainStep(model, optimizer, LRSchedule(optimizer, cfg, STEPS), cfg, torch.device("cpu"))
    x, y = _batch(side)
    before = _main_loss(model, x, y)
    losses = [step(x, y, lambda: None)[0] for _ in range(STEPS)]
    after = _main_loss(model, x, y)
    assert all(map(torch.isfinite, torch.tensor(losses))), losses
    assert after < before, f"{name} ({cfg.recipe}): loss {before:.4f} -> {after:.4f}; steps {losses}"
    assert time.perf_counter() - start < 20
