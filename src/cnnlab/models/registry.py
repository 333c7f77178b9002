"""The model registry: one name, one builder, its metadata as data.

Every network in cnnlab is registered here with :func:`register_model` and built with
:func:`create_model`, as in timm. A builder is a function
``builder(num_classes, in_chans, drop_rate, **options) -> nn.Module``; its metadata
(:class:`ModelInfo`) records the paper, default input, pinned parameter count and the
source of that count, so the registry-wide test checks each model against a figure
derived independently of the code.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import InputTooSmallError, UsageError, unknown_choice
from cnnlab.models.layers import FeatureExtractor, SkipFillsOnMeta
from cnnlab.zoo_table import ZOO_TABLE

Builder = Callable[..., nn.Module]
_GLOB = "*?["  # the characters that make a name a shell-style pattern


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered model.

    ``num_params`` is the parameter count at the default ``num_classes`` and ``in_chans``
    (taken from the paper or derived by hand from its table; ``params_source`` says which),
    and ``macs`` the multiply-accumulates of one image at ``input_size``: pinned from the paper where it
    gives them, else the built-in models table's traced figure (:data:`cnnlab.zoo_table.ZOO_TABLE`, checked
    against a fresh trace by tests/test_analysis_registry.py); None for a model outside that table.
    """

    name: str
    builder: Builder = field(repr=False, compare=False)
    family: str
    paper: str
    input_size: tuple[int, int, int]
    num_classes: int
    num_params: int | None = None
    params_source: str = ""
    macs: int | None = None
    aux_loss_weights: tuple[float, ...] = ()
    default_options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: the named training recipe (cnnlab.train.recipes) ``cnnlab train`` uses for this model
    recipe: str = "lecture"

    @property
    def in_chans(self) -> int:
        """Default number of input channels."""
        return self.input_size[0]

    def options(self) -> list[str]:
        """Keyword options the builder accepts beyond num_classes, in_chans and drop_rate."""
        params = inspect.signature(self.builder).parameters
        return [p for p in params if p not in ("num_classes", "in_chans", "drop_rate", "kwargs")]


_REGISTRY: dict[str, ModelInfo] = {}
# Families that accept any valid size by name (``wrn-34-2``, ``resnet74-cifar``): (regex, resolver, example)
_PATTERNS: list[tuple[re.Pattern[str], Callable[[str, re.Match[str]], ModelInfo], str]] = []


def make_model_info(
    name: str,
    builder: Builder,
    *,
    family: str,
    paper: str,
    input_size: tuple[int, int, int],
    num_classes: int = 1000,
    num_params: int | None = None,
    params_source: str = "",
    macs: int | None = None,
    aux_loss_weights: tuple[float, ...] = (),
    description: str = "",
    recipe: str | None = None,
    **default_options: Any,
) -> ModelInfo:
    """A :class:`ModelInfo` record (what :func:`register_model` stores; pattern resolvers return one).

    ``recipe`` defaults to the family's (:data:`cnnlab.train.recipes.FAMILY_RECIPES`)."""
    from cnnlab.train.recipes import RECIPES, family_recipe

    recipe = recipe or family_recipe(family)
    if recipe not in RECIPES:
        raise ValueError(f"model {name!r} names an unknown recipe {recipe!r}")
    return ModelInfo(
        name=name,
        builder=builder,
        family=family,
        paper=paper,
        input_size=tuple(input_size),
        num_classes=num_classes,
        num_params=num_params,
        params_source=params_source,
        macs=macs if macs is not None else ZOO_TABLE.get(name, {}).get("macs"),
        aux_loss_weights=tuple(aux_loss_weights),
        default_options=dict(default_options),
        description=description or (builder.__doc__ or "").strip().split("\n")[0],
        recipe=recipe,
    )


def register_model(name: str, **meta: Any) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name``; a name can be registered only once.

    ``meta`` are :func:`make_model_info`'s keywords (``family``, ``paper``, ``input_size``,
    ``num_params``, ``params_source`` ...); any other keyword becomes a default option passed to
    the builder, so one builder can serve several names (``vgg16`` and ``vgg16-bn`` differ by
    ``batch_norm=True``).
    """

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = make_model_info(name, builder, **meta)
        return builder

    return decorator


def register_model_pattern(pattern: str, example: str) -> Callable:
    """Decorator registering a resolver for a family of names, e.g. ``r"wrn-(\\d+)-(\\d+)"``.

    ``resolver(name, match) -> ModelInfo`` (see :func:`make_model_info`) builds the metadata of
    any name the regex matches in full, or raises a :class:`UsageError` naming the valid rule
    (``wrn-27-10``: "depth must be 6n+4"). Fixed names registered with :func:`register_model`
    take precedence; ``example`` is shown in error messages and ``cnnlab models``.
    """
    compiled = re.compile(pattern)

    def decorator(resolver: Callable[[str, re.Match[str]], ModelInfo]) -> Callable:
        _PATTERNS.append((compiled, resolver, example))
        return resolver

    return decorator


def list_model_patterns() -> list[tuple[str, str]]:
    """``(regex, example)`` of every name family registered with :func:`register_model_pattern`."""
    return [(p.pattern, example) for p, _, example in _PATTERNS]


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style filter such as ``'resnet*'``."""
    import fnmatch

    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if family:
        names = [n for n in names if _REGISTRY[n].family == family]
    return names


def match_models(pattern: str | None) -> list[str]:
    """Registry names matching ``pattern``; a name a family resolves (``wrn-34-2``) matches itself.

    Nothing matching is a :class:`UsageError` naming close matches: an empty table would look like an
    empty registry.
    """
    import difflib
    import fnmatch

    names = list_models(pattern)
    if names or not pattern:
        return names
    if not any(ch in pattern for ch in _GLOB):
        try:
            model_info(pattern)  # a family pattern (resnet74-cifar, densenet-bc-190-40) or a clear error
            return [pattern]
        except UsageError as err:
            if "unknown model" not in str(err):
                raise  # the family's own rule: "wrn-27-10: depth must be 6n+4"
    stem = pattern.strip(_GLOB)
    every = list_models()
    close = (
        difflib.get_close_matches(stem, every, n=3, cutoff=0.5)
        or [n for n in every if stem and fnmatch.fnmatch(n, f"*{stem}*")][:3]
    )
    hint = f"; close matches: {', '.join(close)}" if close else "; 'cnnlab models' lists them all"
    # a pattern cannot list a family's sizes (there is no end to them): point to naming one exactly
    word = re.match(r"[a-z]+", stem.lower())
    families = [
        example
        for regex, _, example in _PATTERNS
        if word and re.search(rf"(^|[(|]){word.group()}", regex.pattern)
    ]
    if families and any(ch in pattern for ch in _GLOB):
        hint += (
            f"; patterns match registered names only, and families such as {', '.join(families)} are built at "
            f"any valid size by exact name (cnnlab models {families[0]})"
        )
    raise UsageError(f"no model matches {pattern!r}{hint}")


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; an unknown name raises a :class:`UsageError` with close matches."""
    if not isinstance(name, str):
        raise UsageError(
            f"a model is named by its registry name (cnnlab models lists them), got {type(name).__name__}; "
            "a network of your own is analysed by cnnlab.analysis.summarize"
        )
    if name in _REGISTRY:
        return _REGISTRY[name]
    for pattern, resolver, _ in _PATTERNS:
        match = pattern.fullmatch(name)
        if match:
            return resolver(name, match)
    if ".py:" in name:  # a user's model file, as the analysis commands read it
        raise UsageError(
            f"{name} is a model file: cnnlab summary and cnnlab rf read those; this command takes a registry model "
            "(cnnlab models lists them)"
        )
    raise unknown_choice("model", name, _REGISTRY)


def checked_option_value(info: ModelInfo, key: str, value: Any) -> Any:
    """``value`` for option ``key`` of ``info``'s builder, checked against the option's annotation where the
    wrong kind would pass unnoticed: a switch (``bool``) takes True, False, 0 or 1, since the text "false" is
    truthy and a builder testing ``if two_tower:`` would build the other model without a word; an option
    that takes no text refuses text (``img_size="32"`` would be read one character at a time)."""
    parameter = inspect.signature(info.builder).parameters.get(key)
    annotation = str(parameter.annotation) if parameter is not None else ""
    kinds = {kind.strip() for kind in annotation.split("|")} if annotation else set()
    if value is None or not kinds or parameter.annotation is inspect.Parameter.empty:
        return value
    if "bool" in kinds and not isinstance(value, bool):
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise UsageError(f"model {info.name!r} option {key} is a switch: give True or False, got {value!r}")
    if isinstance(value, str) and "str" not in kinds:
        wanted = " or ".join(dict.fromkeys(kind_in_words(kind) for kind in sorted(kinds) if kind != "None"))
        default = parameter.default
        if (
            wanted
            and isinstance(default, list | tuple)
            and default
            and all(isinstance(v, int | float) for v in default)
        ):
            wanted += f" (e.g. its default, {','.join(map(str, default))})"
        raise UsageError(
            f"model {info.name!r} option {key} takes {wanted or annotation}, not text: got {value!r}"
        )
    return value


def kind_in_words(kind: str) -> str:
    """An option's annotation as a user types it on the command line (``Sequence[int]`` -> comma-separated whole
    numbers), for errors; an annotation not listed here is said as written."""
    number = {"int": "whole number", "float": "number"}
    if kind in number:
        return f"a {number[kind]}"
    any_length = re.fullmatch(r"(?:Sequence|tuple|list)\[(int|float)(?:, \.\.\.)?\]", kind)
    if any_length:
        return f"comma-separated {number[any_length.group(1)]}s"
    items = re.fullmatch(r"tuple\[(.*)\]", kind)
    parts = items.group(1).split(", ") if items else []
    if len(parts) > 1 and len(set(parts)) == 1 and parts[0] in number:
        return f"{len(parts)} comma-separated {number[parts[0]]}s"
    return kind


def require_registered(name: str, where: str | Path) -> None:
    """A usage error when the model ``name`` that ``where`` (a run or model file) was saved as is not in
    this process's registry: a model of the user's own is registered by their code, in each process."""
    try:
        model_info(name)
    except UsageError:
        raise UsageError(
            f"{where} holds the model {name!r}, which is not registered in this process; register it "
            "(cnnlab.register_model, as the code that trained it did) before loading it"
        ) from None


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    drop_rate: float | None = None,
    features_only: bool = False,
    **options: Any,
) -> nn.Module:
    """Build the registered model ``name``.

    ``features_only=True`` returns it as a backbone, a :class:`~cnnlab.models.layers.FeatureExtractor`
    whose forward gives the feature map at each stride (a list of tensors).

    ``num_classes`` and ``in_chans`` default to the model's own (10 and 1 for the lecture nets,
    1000 and 3 for the ImageNet papers); ``drop_rate`` to the paper's dropout. Further keyword
    options are the family's named deviations and sizes (``img_size``, ``batch_norm`` ...);
    an option the builder does not know is a :class:`UsageError` listing the valid ones.
    """
    info = model_info(name)
    num_classes = info.num_classes if num_classes is None else num_classes
    in_chans = info.in_chans if in_chans is None else in_chans
    for label, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{label} must be a whole number of at least 1, got {value!r}")
    if drop_rate is not None and not 0.0 <= drop_rate < 1.0:
        raise UsageError(f"drop_rate must be in [0, 1), got {drop_rate}")
    valid = info.options()
    accepts_any = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(info.builder).parameters.values()
    )
    for key in options:
        if key not in valid and not accepts_any:
            raise UsageError(
                f"model {name!r} has no option {key!r}; its options are: {', '.join(valid) or 'none'}"
            )
    options = {key: checked_option_value(info, key, value) for key, value in options.items()}
    kwargs = {**info.default_options, **options, "num_classes": num_classes, "in_chans": in_chans}
    if drop_rate is not None:
        kwargs["drop_rate"] = drop_rate
    # built under torch.device("meta") (torch.get_default_device needs torch 2.3): names and shapes only
    on_meta = torch.empty(()).is_meta
    try:
        with SkipFillsOnMeta() if on_meta else contextlib.nullcontext():
            model = info.builder(**kwargs)
    except InputTooSmallError as err:  # a builder names its configuration (vgg-a); the user typed ``name``
        raise err.naming(name) from None
    except UsageError:
        raise
    except (
        TypeError,
        ValueError,
        OverflowError,
    ) as err:  # an option value of the wrong kind, e.g. img_size=abc
        shown = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "its defaults"
        raise UsageError(f"{name} cannot be built with {shown}: {err}") from None
    model.model_info = info  # metadata travels with the module (checkpoints, analysis, aux losses)
    model.model_name = name
    model.model_options = dict(options)  # what rebuilds it (self-describing model files)
    if features_only:
        return FeatureExtractor(model)
    return model
