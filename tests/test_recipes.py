"""Paper recipes as data: every value has a source, every model names one, and every model learns under it."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from cnnlab.cli import main
from cnnlab.errors import UsageError
from cnnlab.models import list_models, model_info
from cnnlab.train.config import WEIGHT_INITS, TrainConfig
from cnnlab.train.engine import WEIGHT_REDRAWS, build_model_for_data
from cnnlab.train.optim import LRSchedule, build_optimizer
from cnnlab.train.recipes import FAMILY_RECIPES, RECIPES, config_with_recipe, recipe
from cnnlab.train.step import TrainStep
from cnnlab.zoo_table import ZOO_TABLE

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


@pytest.mark.parametrize(
    ("command", "module", "function"),
    [
        (["experiment", "batchnorm"], "cnnlab.experiments.batchnorm", "batchnorm"),
        (["experiment", "degradation"], "cnnlab.experiments.degradation", "degradation"),
    ],
)
def test_recipe_none_in_an_experiment_is_the_defaults_its_help_shows(
    command: list[str], module: str, function: str, monkeypatch
) -> None:
    """``--recipe none`` means "the defaults shown"; an experiment shows its own recipe's values, not
    TrainConfig's, so that is what it trains with (lr, batch size, epochs as ``--help`` lists them)."""
    import importlib

    seen: list[TrainConfig] = []

    def capture(*args, **kwargs):
        seen.append(next(a for a in args if isinstance(a, TrainConfig)))
        raise SystemExit(0)  # the config is all this test needs: nothing trains

    monkeypatch.setattr(importlib.import_module(module), function, capture)
    for extra in ([], ["--recipe", "none"]):
        with pytest.raises(SystemExit):
            main([*command, *extra, "--out", "unused"])
    shown, none = seen
    assert none == shown and none.recipe is None
    assert (none.lr, none.batch_size) != (TrainConfig().lr, TrainConfig().batch_size)


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
    # the recipe's zero-init, said and recorded: resnet8-cifar's 3 units start at zero
    assert saved["zero_init_residual"] and saved["init_notes"] == [
        "zero-init residual: 3 residual branches start at zero"
    ]
    assert main(["train", "resnet8-cifar", "--recipe", "none", "--name", "plain", *common]) == 0
    plain = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert plain["recipe"] is None and plain["lr"] == TrainConfig().lr and plain["recipe_fields"] == []
    assert "init_notes" not in plain
    # asked of a net without ResNet units, it says it zeroed nothing
    assert main(["train", "lecture-simple", "--zero-init-residual", "--name", "flat", *common]) == 0
    flat = json.loads((tmp_path / "flat" / "config.json").read_text())
    assert flat["init_notes"] == [
        "zero-init residual: lecture-simple has no ResNet residual unit with a full-strength shortcut; "
        "no weight was zeroed"
    ]


def test_cli_recipes_lists_and_explains(capsys) -> None:
    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ISSUE_RECIPES)
    assert main(["recipes", "resnet"]) == 0
    assert "slide 003 (Training ResNet in practice): mini-batch size 256" in capsys.readouterr().out
    assert main(["recipes", "--models", "nin*"]) == 0
    assert capsys.readouterr().out.split() == ["nin", "nin", "nin-cifar", "nin"]
    assert main(["recipes", "nope"]) == 2


def test_cli_recipes_models_takes_the_names_models_takes(capsys) -> None:
    assert main(["recipes", "--models", "wrn-34-2"]) == 0  # a family name, as `cnnlab models wrn-34-2`
    assert capsys.readouterr().out.split() == ["wrn-34-2", "wrn"]
    assert main(["recipes", "--models", "zzz"]) == 2
    assert "no model matches 'zzz'" in capsys.readouterr().err
    assert main(["recipes"]) == 0  # the valid recipe `none` is listed, and shown by name
    assert "\nnone " in capsys.readouterr().out
    assert main(["recipes", "none"]) == 0 and "TrainConfig's defaults" in capsys.readouterr().out


# ------------------------------------------------------------------------------ every model learns


# Every registered model at its smallest square input (the models table's min_side, which
# tests/test_analysis_registry.py checks; heads sized from the input are built for it), 8 pixels at
# least: the residual nets run on 1x1 and the left/right halves of the batch below need a width.
FLOOR = 8
SIDE = {name: max(FLOOR, row["min_side"]) for name, row in ZOO_TABLE.items()}


def test_every_registered_model_has_a_side() -> None:
    assert sorted(SIDE) == list_models()


def _batch(side: int, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of two classes any net tells apart: a bright left or right half, plus noise."""
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1] * (n // 2))
    x = 0.3 * torch.randn(n, 1, side, side, generator=g)
    half = side // 2
    x[y == 0, :, :, :half] += 1.5
    x[y == 1, :, :, half:] += 1.5
    return x, y


# Steps per model: a budget of work over the run, between MIN_STEPS and MAX_STEPS. A step's work is taken
# as three passes (forward, backward) over the batch at the zoo table's multiply-accumulates, scaled from
# the default input to the test's side, plus OPTIMIZER_WORK per parameter for the update. Deep BN nets start with
# exploding gradients (plain44-cifar: norm 971 at init, plain20-cifar 20; Yang et al. 2019) and their
# first steps move the loss up and down before batch norm's scale invariance damps them: plain44-cifar
# goes 0.70 -> 0.74 in 4 steps, 0.70 -> 0.76 in 8 and 0.70 -> 0.40 in 12. The small nets get those 12
# steps for little; the large ones, whose steps cost 10-100 times more, the 4 they need.
MIN_STEPS, MAX_STEPS = 4, 12
BATCH = 8
OPTIMIZER_WORK = 10
STEP_BUDGET = 12 * (3 * BATCH * 16_000_000 + OPTIMIZER_WORK * 1_700_000)  # 12 steps of resnet110-cifar at 8x8
MASK_SEED = 1
# Learning, not weight decay: the loss on the batch must fall, to below chance (any constant prediction's
# loss, which weight decay alone approaches from above but does not cross) or by MIN_FALL of its start
# (weight decay alone moves it a hundred times less over a run; with the gradients cut,
# test_the_fixed_batch_protocol_fails_a_model_that_does_not_learn). Nets that start at chance (cnn-m,
# overfeat: logits near 0 from N(0, 0.01) weights) fall slowly at first; those that start well above it
# (inception-v4: 1.42) need more steps to cross it.
CHANCE = math.log(2)
MIN_FALL = 0.01


def steps_for(name: str) -> int:
    """The number of steps :func:`fit_fixed_batch` trains ``name`` for (STEP_BUDGET_MACS, above)."""
    row = ZOO_TABLE[name]
    default_side = int(row["input"].split("x")[-1])
    work = 3 * BATCH * row["macs"] * (SIDE[name] / default_side) ** 2 + OPTIMIZER_WORK * row["params"]
    return int(min(MAX_STEPS, max(MIN_STEPS, STEP_BUDGET // work)))


def fit_fixed_batch(
    name: str, given: dict[str, Any] | None = None, tamper: Callable[[torch.nn.Module], None] | None = None
) -> tuple[float, float, list[float]]:
    """Train ``name`` under its recipe (``given`` overrides it) for :func:`steps_for` steps on one fixed batch;
    return the loss before, the loss after, and the step losses.

    The objective is one function of the weights: the same 8 images every step, and the random number
    generator re-seeded before every forward, so that dropout (and any other random layer) draws the same
    masks each time. The loss moves only because the weights do (with the gradients cut and no weight decay
    it stays exactly where it is, test_the_fixed_batch_protocol_fails_a_model_that_does_not_learn), so a
    fall is learning, not luck in the masks. Batch norm uses the batch's statistics, as in training.
    ``tamper`` (the negative test) edits the model before the optimiser is built.
    """
    cfg = config_with_recipe(
        model_info(name).recipe, {"batch_size": BATCH, **(given or {})}, model=name
    ).validate()
    side, steps = SIDE[name], steps_for(name)
    torch.manual_seed(0)
    model = build_model_for_data(cfg, 2, (1, side, side))  # as training builds it (img_size, weight_init)
    model.train()
    if tamper is not None:
        tamper(model)
    optimizer = build_optimizer(model, cfg)
    # An epoch is the run: warm-ups span it, step and plateau decays never come.
    step = TrainStep(model, optimizer, LRSchedule(optimizer, cfg, steps), cfg, torch.device("cpu"))
    x, y = _batch(side, BATCH)
    losses = []
    for _ in range(steps):
        torch.manual_seed(MASK_SEED)
        losses.append(step(x, y, lambda: None)[0])
    torch.manual_seed(MASK_SEED)
    with torch.no_grad():
        after = float(step.loss(x, y)[0])
    return losses[0], after, losses


def learned(before: float, after: float) -> bool:
    """The loss on the batch fell, to below CHANCE or by at least MIN_FALL of its start."""
    return after < before and (after < CHANCE or after <= (1 - MIN_FALL) * before)


def trains_as(name: str, twin: str) -> bool:
    """``name`` is ``twin`` under another name: the same builder with the same default options, input and
    recipe (vgg11 is VGG-A), so :func:`fit_fixed_batch` gives both the same losses, bit for bit."""
    a, b = model_info(name), model_info(twin)
    same = ("default_options", "input_size", "num_classes", "aux_loss_weights", "recipe")
    return a.builder is b.builder and all(getattr(a, f) == getattr(b, f) for f in same)


#: each model the learning sweep trains: every registered name but the second name of one model
#: (test_a_name_left_out_of_the_sweep_builds_and_trains_as_its_twin)
LEARNING_MODELS = [
    n for i, n in enumerate(list_models()) if not any(trains_as(n, m) for m in list_models()[:i])
]


def test_a_name_left_out_of_the_sweep_builds_and_trains_as_its_twin() -> None:
    """The left-out names are the VGG aliases; each builds its twin's weights and gets its twin's config."""
    left_out = {n: next(m for m in LEARNING_MODELS if trains_as(n, m)) for n in list_models()}
    left_out = {n: m for n, m in left_out.items() if n != m}
    assert left_out == {"vgg11": "vgg-a", "vgg13": "vgg-b", "vgg16": "vgg-d", "vgg19": "vgg-e"}
    assert not trains_as("vgg11-bn", "vgg-a") and not trains_as("vgg-a-lrn", "vgg-a")
    for name, twin in list(left_out.items())[:1]:  # one pair built: the check is the same for each
        configs, states = [], []
        for n in (name, twin):
            cfg = config_with_recipe(model_info(n).recipe, {"batch_size": BATCH}, model=n).validate()
            torch.manual_seed(0)
            states.append(build_model_for_data(cfg, 2, (1, SIDE[n], SIDE[n])).state_dict())
            configs.append(dataclasses.replace(cfg, model=""))
        assert configs[0] == configs[1] and SIDE[name] == SIDE[twin] and steps_for(name) == steps_for(twin)
        assert states[0].keys() == states[1].keys()
        assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("name", LEARNING_MODELS)
def test_every_model_learns_under_its_own_recipe(name: str) -> None:
    """The model's recipe on one fixed batch at its smallest input lowers the loss on that batch
    (:func:`fit_fixed_batch`, :func:`learned`). A second name of one model (:data:`LEARNING_MODELS`) would
    repeat its twin's run exactly.

    The recipe as ``cnnlab train`` applies it (config_with_recipe, build_model_for_data, build_optimizer,
    TrainStep): optimiser, lr, momentum, Nesterov, weight decay, weight init, zero-init of residual branches,
    dropout, clipping, label smoothing, warm-up. Two changes, for time: batch 8 in place of the recipe's (lr
    unscaled), and an epoch of :func:`steps_for` steps, so that a warm-up spans the run and step or plateau
    decays never come."""
    start = time.perf_counter()
    before, after, losses = fit_fixed_batch(name)
    assert all(map(math.isfinite, losses)), losses
    shown = f"{name} ({model_info(name).recipe}): loss {before:.4f} -> {after:.4f}; steps {losses}"
    assert learned(before, after), shown
    assert time.perf_counter() - start < 20


def test_step_budget_gives_small_nets_more_steps() -> None:
    assert steps_for("plain44-cifar") == MAX_STEPS and steps_for("inception-v4") == MIN_STEPS
    assert MIN_STEPS < steps_for("googlenet") < MAX_STEPS


def cut_gradients(model: torch.nn.Module) -> None:
    """Every parameter's gradient replaced by zeros (a model whose loss reaches none of its weights)."""
    for param in model.parameters():
        param.register_hook(torch.zeros_like)


def test_the_fixed_batch_protocol_fails_a_model_that_does_not_learn() -> None:
    """The protocol can fail. With the gradients cut and no weight decay the weights stay, and so does the
    loss, exactly, through nin-cifar's two dropout layers (p 0.5): the masks are fixed. With the recipe's
    weight decay the loss moves, but does not learn."""
    steps = steps_for("nin-cifar")
    before, after, losses = fit_fixed_batch("nin-cifar", {"weight_decay": 0.0}, cut_gradients)
    assert losses == [before] * steps and after == before and not learned(before, after)
    before, after, losses = fit_fixed_batch("nin-cifar", {}, cut_gradients)
    assert after != before and abs(after - before) < MIN_FALL * before / 100 and not learned(before, after)


def test_resume_with_the_same_sequence_model_option_is_not_a_change(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys
) -> None:
    """``--model-option widths=8,16,16,16`` parses to a tuple and config.json saves a list: giving the same flag
    again on ``--resume`` is the same recipe, and another value is still refused."""
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    common = ["--data-dir", str(tiny_dataset_dir), "--max-steps-per-epoch", "1", "--quiet", "--threads", "1"]
    common += ["--out", str(tmp_path), "--train-subset", "64", "--batch-size", "32"]
    widths = ["--model-option", "widths=8,16,16,16"]
    assert main(["train", "speedrun-fmnist", "--epochs", "1", *widths, *common]) == 0
    assert main(["train", "speedrun-fmnist", "--epochs", "2", *widths, *common, "--resume"]) == 0
    capsys.readouterr()
    other = ["--model-option", "widths=8,16,16,32"]
    assert main(["train", "speedrun-fmnist", "--epochs", "3", *other, *common, "--resume"]) == 2
    assert "--model-option {" in capsys.readouterr().err
