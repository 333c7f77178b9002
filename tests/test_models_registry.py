"""One parametrised test over the whole registry, as torchvision and timm do.

For every registered model with other class and channel counts the output has the right shape, holds no
NaN, and every parameter receives a gradient. Heavy models run at their smallest valid input, deep CIFAR nets
at the shallowest depth of their own unit (SHALLOW). (That its
parameter count at its defaults equals the figure pinned in its metadata, from the paper or derived by
hand, see docs/models.md, is checked on the meta build that tests/test_analysis_registry.py traces.)
"""

from __future__ import annotations

import re
import traceback

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import InputTooSmallError, UsageError
from cnnlab.models import count_params, create_model, list_models, model_info
from cnnlab.zoo_table import ZOO_TABLE

ALL_MODELS = list_models()
#: Depth and width variants whose runtime checks (shapes, gradients, ONNX export, the fine-tuning API) a
#: model of the same family and the same layer types runs for (test_a_stand_in_has_the_same_family_and_layer_
#: types): the code they exercise is the same, with other numbers; resnet1202-cifar's export alone took two
#: minutes. Every model is still built, counted and traced on the meta device (tests/test_analysis_registry.py),
#: and trained in tests/test_recipes.py.
STAND_INS = {
    "resnet32-cifar": "resnet20-cifar", "resnet44-cifar": "resnet20-cifar", "resnet56-cifar": "resnet20-cifar",
    "resnet1202-cifar": "resnet20-cifar", "plain32-cifar": "plain20-cifar", "plain44-cifar": "plain20-cifar",
    "plain56-cifar": "plain20-cifar", "plain110-cifar": "plain20-cifar",
    "resnet34": "resnet18", "resnet101": "resnet50", "resnet152": "resnet50", "wide-resnet50-2": "resnet50",
    "preact-resnet34": "preact-resnet18", "preact-resnet101": "preact-resnet50", "preact-resnet152": "preact-resnet50",
    "wrn-16-8": "wrn-16-4", "wrn-22-8": "wrn-16-4", "wrn-28-10": "wrn-16-4", "wrn-40-1": "wrn-16-4",
    "wrn-40-2": "wrn-16-4", "wrn-40-4": "wrn-16-4", "wrn-40-10": "wrn-16-4",
    "densenet161": "densenet121", "densenet169": "densenet121", "densenet201": "densenet121",
    "densenet264": "densenet121",
    "vgg13": "vgg11", "vgg16": "vgg11", "vgg19": "vgg11", "vgg13-bn": "vgg11-bn", "vgg16-bn": "vgg11-bn",
    "vgg19-bn": "vgg11-bn", "vgg-b": "vgg-a", "vgg-d": "vgg-a", "vgg-e": "vgg-a",
    "cnn-m-128": "cnn-m", "cnn-m-1024": "cnn-m", "cnn-m-2048": "cnn-m", "overfeat-accurate": "overfeat-fast",
}  # fmt: skip
#: the models the runtime checks run: every registered model but the stood-in variants
RUN_MODELS = [n for n in ALL_MODELS if n not in STAND_INS]
#: Deep CIFAR nets whose runtime checks build them at the shallowest depth of their own unit (the ``depth``
#: option: one unit per stage, or one layer per dense block): the same layer types and the same variant's code
#: (gating, scaling, pre-activation), repeated fewer times (test_a_shallow_build_has_the_layer_types_of_the_
#: full_one). They are traced at their own depth on the meta device (tests/test_analysis_registry.py) and
#: trained at it in tests/test_recipes.py.
SHALLOW = {name: {"depth": 8} for name in RUN_MODELS if re.fullmatch(r"(preact-)?resnet110-cifar.*", name)}
SHALLOW |= {"resnet164-cifar": {"depth": 11}, "preact-resnet164-cifar": {"depth": 11}}
SHALLOW |= {"densenet-bc-100-12": {"depth": 10}, "densenet-40-12": {"depth": 7}}


def smallest_side(name: str) -> int:
    """Smallest square input the features of ``name`` accept: the models table's ``min_side``, which
    tests/test_analysis_registry.py checks against the model."""
    return ZOO_TABLE[name]["min_side"]


def smallest_model(name: str, **kwargs) -> tuple[torch.nn.Module, int]:
    """The model built for its smallest valid square input (and at its :data:`SHALLOW` depth), and that size."""
    size = smallest_side(name)
    options = {"img_size": size} if "img_size" in model_info(name).options() else {}
    return create_model(name, **kwargs, **options, **SHALLOW.get(name, {})), size


def layer_types(model: torch.nn.Module) -> set[str]:
    """The class names of ``model``'s modules."""
    return {type(m).__name__ for m in model.modules()}


@pytest.mark.parametrize("name", SHALLOW)
def test_a_shallow_build_has_the_layer_types_of_the_full_one(name: str) -> None:
    """On the meta device: the shallow build holds every module type of the full one, and is shallower."""
    with torch.device("meta"):
        full, shallow = create_model(name), create_model(name, **SHALLOW[name])
    assert layer_types(shallow) == layer_types(full)
    assert len(list(shallow.modules())) < len(list(full.modules())) / 4


@pytest.mark.parametrize(("name", "stand_in"), STAND_INS.items())
def test_a_stand_in_has_the_same_family_and_layer_types(name: str, stand_in: str) -> None:
    """From the models table (its layers and family are checked against each model's build)."""
    assert stand_in in RUN_MODELS
    assert ZOO_TABLE[name]["family"] == ZOO_TABLE[stand_in]["family"]
    assert ZOO_TABLE[name]["layers"] == ZOO_TABLE[stand_in]["layers"]


def check_shapes_and_gradients(model: torch.nn.Module, x: torch.Tensor) -> None:
    """In training mode the logits have the model's class count, hold no NaN, and every parameter receives
    a gradient; in evaluation mode too the logits have that shape (no auxiliary outputs leak into forward)."""
    model.train()
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    main, aux = model.forward_aux(x)
    loss = main.logsumexp(1).mean() + sum(a.logsumexp(1).mean() for a in aux)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", RUN_MODELS)
def test_every_run_model_runs_exports_and_fine_tunes(name: str, memory_dir) -> None:
    """One build of the model with 7 classes and 1 input channel, at its smallest input, for three checks
    (building took more than half their time): the ONNX export on the weights as built
    (test_export_onnx), then shapes and gradients with other classes and channels (above), then the
    fine-tuning API, which ends by replacing the classifier (test_models_finetune_api). Each check runs
    even if one before it failed; the test fails naming every failed check."""
    from test_export_onnx import check_onnx_export_matches_pytorch
    from test_models_finetune_api import check_head_embedding_classifier_reset_and_features

    torch.manual_seed(0)
    model, size = smallest_model(name, num_classes=7, in_chans=1)
    x = torch.randn(2, 1, size, size)
    checks = [
        (check_onnx_export_matches_pytorch, (model, size, memory_dir)),
        (check_shapes_and_gradients, (model, x)),
        (check_head_embedding_classifier_reset_and_features, (model, x)),
    ]
    failed = []
    for check, args in checks:
        try:
            check(*args)
        except Exception:  # reported below, with the others
            failed.append(f"{check.__name__}:\n{traceback.format_exc()}")
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("name", RUN_MODELS)
def test_three_channel_input_and_channels_last(name: str) -> None:
    model, size = smallest_model(name, num_classes=5, in_chans=3)
    model.eval()
    x = torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert model(x).shape == (2, 5)


def layer_variety_representatives() -> list[str]:
    """The smallest model of each family for each distinct set of layer types in that family: together
    they hold every layer type of the registry (basic and bottleneck ResNets, say), at a fraction of the
    cost of all 84 models."""
    smallest: dict[tuple, str] = {}
    for name in ALL_MODELS:
        key = (model_info(name).family, tuple(ZOO_TABLE[name]["layers"]))  # as the models table holds them
        if key not in smallest or model_info(name).num_params < model_info(smallest[key]).num_params:
            smallest[key] = name
    return sorted(smallest.values())


@pytest.mark.parametrize("name", layer_variety_representatives())
def test_trains_under_cpu_bf16_autocast(name: str) -> None:
    """``--amp bf16`` on a CPU: bf16 activations, fp32 weights and gradients. bf16 is opt-in, and on a
    CPU without AMX its convolutions are emulated (a minute for wrn-40-10), so one model per family
    and layer set stands for the rest, the deep CIFAR nets at their :data:`SHALLOW` depth."""
    torch.manual_seed(0)
    # at least 32x32 and 4 images: at 1x1 with two images, batch norm sees two values per channel
    # that bf16 can round to the same number, so the variance is zero and its gradient overflows
    size = max(smallest_side(name), 32)
    options = {"img_size": size} if "img_size" in model_info(name).options() else {}
    model = create_model(name, num_classes=5, in_chans=3, **options, **SHALLOW.get(name, {}))
    model = model.train().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        main, aux = model.forward_aux(x)
        loss = sum(F.cross_entropy(logits.float(), torch.tensor([0, 3, 1, 4])) for logits in (main, *aux))
    assert main.shape == (4, 5) and torch.isfinite(loss)
    loss.backward()
    grads = [(n, p.grad) for n, p in model.named_parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for _, g in grads)


@pytest.mark.parametrize(
    "bad", [{"num_classes": 0}, {"in_chans": 0}, {"num_classes": -3}, {"drop_rate": 1.5}]
)
def test_invalid_constructor_arguments_are_usage_errors(bad: dict) -> None:
    with pytest.raises(UsageError):
        create_model("lecture-simple", **bad)


def test_unknown_model_and_option_name_the_valid_choices() -> None:
    with pytest.raises(UsageError, match="Did you mean 'lecture-simple'"):
        create_model("lecture-simpel")
    with pytest.raises(UsageError, match="img_size"):
        create_model("lecture-simple", no_such_option=1)


def test_a_switch_option_takes_a_bool_and_refuses_text() -> None:
    """The text "false" is truthy: taken as it is, alexnet would be built with its two towers."""
    merged, towers = (count_params(create_model("alexnet", two_tower=v)) for v in (False, True))
    assert merged != towers
    assert count_params(create_model("alexnet", two_tower=0)) == merged
    for text in ("false", "no"):
        with pytest.raises(UsageError, match="two_tower is a switch: give True or False"):
            create_model("alexnet", two_tower=text)
    # said as one types it on the command line, not as Python's annotation
    with pytest.raises(
        UsageError, match="img_size takes a whole number or 2 comma-separated whole numbers, not text"
    ):
        create_model("lecture-simple", img_size="32")
    with pytest.raises(
        UsageError,
        match=re.escape("widths takes comma-separated whole numbers (e.g. its default, 16,32,64,128)"),
    ):
        create_model("speedrun-fmnist", widths="abc")


def test_switch_words_on_the_command_line_are_bools() -> None:
    from cnnlab.cli.common import parse_model_option

    assert [parse_model_option(f"two_tower={word}") for word in ("false", "No", "OFF", "true", "yes", "on")] == [
        ("two_tower", False), ("two_tower", False), ("two_tower", False),
        ("two_tower", True), ("two_tower", True), ("two_tower", True),
    ]  # fmt: skip
    assert parse_model_option("stride_in=3x3") == ("stride_in", "3x3")


def test_every_built_in_model_carries_its_multiply_accumulates_and_plain_sources() -> None:
    """``model_info(name).macs`` as ``cnnlab models`` shows it (the stored table, traced), and no project-internal
    reference in the sources the metadata cites."""
    for name in ALL_MODELS:
        info = model_info(name)
        assert info.macs == ZOO_TABLE[name]["macs"], name
        assert "issue" not in info.params_source.lower(), (name, info.params_source)


def test_duplicate_registration_is_refused() -> None:
    from cnnlab.models import register_model

    with pytest.raises(ValueError, match="already registered"):
        register_model("lecture-simple", family="x", paper="x", input_size=(1, 28, 28))(lambda **kw: None)


def test_models_doc_lists_every_model_and_is_current() -> None:
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("gen_models_doc", root / "scripts" / "gen_models_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (root / "docs" / "models.md").read_text() == module.render(), "run scripts/gen_models_doc.py"
    for name in ALL_MODELS:
        assert module.family_doc(model_info(name).builder.__module__), (
            f"{name}'s family has no docs/models/*.md"
        )


SIZED = [n for n in ALL_MODELS if "img_size" in model_info(n).options()]


def meta_model(name: str, **options) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, **options).eval()


@pytest.mark.parametrize("name", SIZED)
def test_another_input_size_is_refused_with_the_fix_or_runs(name: str) -> None:
    """A head sized from ``img_size`` refuses another size in one line naming the fix; a pooled head runs."""
    info = model_info(name)
    options = (
        {"aux_logits": True} if "aux_logits" in info.options() else {}
    )  # GoogLeNet's aux fc is sized too
    c, h, w = info.input_size
    other = 2 * h
    model = meta_model(name, **options)
    x = torch.empty(2, c, other, other, device="meta")
    # independent of the check itself: the head is sized from the input iff its parameters depend on img_size
    rebuilt = meta_model(name, img_size=other, **options)
    if count_params(rebuilt) == count_params(model):
        with torch.no_grad():
            assert model.forward_aux(x)[0].shape == (2, info.num_classes)
        return
    with pytest.raises(ValueError) as err, torch.no_grad():
        model.forward_aux(x)
    message = str(err.value)
    assert isinstance(err.value, UsageError) and "\n" not in message
    assert message.startswith(f"{name} was built for {c}x{h}x{w} input and got {c}x{other}x{other}: ")
    assert f"img_size={other}" in message
    assert ("adaptive_pool=True" in message) == ("adaptive_pool" in info.options())
    # the fixes it names work
    with torch.no_grad():
        assert rebuilt.forward_aux(x)[0].shape == (2, info.num_classes)
        if "adaptive_pool" in info.options():
            assert meta_model(name, adaptive_pool=True)(x).shape == (2, info.num_classes)


def test_lazy_package_names() -> None:
    import cnnlab
    import cnnlab.train

    assert cnnlab.create_model is create_model and cnnlab.list_models is list_models
    assert set(cnnlab.__all__) <= set(dir(cnnlab)) and set(cnnlab.train.__all__) <= set(dir(cnnlab.train))
    assert callable(cnnlab.train.train) and cnnlab.train.TrainConfig().model
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cnnlab.nope  # noqa: B018


def test_an_input_too_small_for_an_alias_names_the_alias() -> None:
    """vgg16 is built by VGG's builder as configuration D ("vgg-d"); the error names what was asked for,
    and a part of a network named in the error ("<network>'s <part>") keeps its part."""
    with pytest.raises(InputTooSmallError, match=r"^input 3x16x16 is too small for vgg16: .* 3x32x32$"):
        create_model("vgg16", img_size=16)
    part = InputTooSmallError((3, 48, 48), "googlenet's auxiliary classifiers", 79, " at inception4a")
    assert str(part.naming("my-googlenet")) == (
        "input 3x48x48 is too small for my-googlenet's auxiliary classifiers: at inception4a; the smallest "
        "input that works is 3x79x79"
    )


def test_a_model_file_or_a_module_where_a_registry_name_belongs_is_told_where_it_works() -> None:
    """`cnnlab train mynet.py:Net` (a model file, which the analysis commands read) and
    ``TrainConfig(model=nn.Module)`` are usage errors that say so, not an unknown name or a TypeError."""
    from cnnlab.models import model_info

    with pytest.raises(UsageError, match=r"^mynet.py:Net is a model file: cnnlab summary and cnnlab rf read"):
        create_model("mynet.py:Net")
    with pytest.raises(UsageError, match="named by its registry name .* got Linear"):
        model_info(torch.nn.Linear(2, 2))
