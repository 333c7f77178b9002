"""Start a run from saved weights, freeze its first layers, re-initialise the ones above (Yosinski et al. 2014).

    cnnlab train alexnet --init runs/baseA --freeze 3 --reinit-above 3     # "A3B": layers 1-3 from A, frozen

Layers are counted as the papers count them: the conv and fc layers in order
(:func:`cnnlab.models.layers.paper_layers`, listed by ``cnnlab summary MODEL --layers``). Freezing
the first N layers freezes everything registered up to the N-th layer and the norm layers that follow
it before the next one; a frozen batch-norm layer keeps its statistics too (it stays in eval mode
while the rest trains). A classifier whose class count differs from the weights' is dropped and
re-initialised, with a message.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CheckpointError, UsageError
from cnnlab.models.layers import paper_layers

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
NORMS = (*BATCH_NORMS, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def read_init_weights(source: str | Path) -> dict[str, torch.Tensor]:
    """The state dict at ``source``: a run directory (its selected checkpoint), a checkpoint manifest or a
    ``.safetensors`` weights file. The one place weights for ``--init`` are read (key maps for other
    libraries' files belong here)."""
    from cnnlab.train.checkpoint import load_weights
    from cnnlab.train.evaluation import resolve_weights

    path, sha256 = resolve_weights(source)
    if path.suffix != ".safetensors" and not path.name.endswith(".safetensors"):
        raise UsageError(
            f"--init takes a run directory, checkpoint manifest or .safetensors file, not {path}"
        )
    state, _ = load_weights(path, sha256)
    return state


def _layer_modules(model: nn.Module, upto: int) -> list[str]:
    """Names of the modules registered up to the ``upto``-th conv/fc layer and the norm layers that
    follow it before the next one (``upto`` 0: none)."""
    layers = [name for name, _ in paper_layers(model)]
    if upto <= 0:
        return []
    # leaves only: a container registered before the N-th layer (AlexNet's ``features``) may hold all of them
    names = [name for name, m in model.named_modules() if name and not any(True for _ in m.children())]
    stop = names.index(layers[upto]) if upto < len(layers) else len(names)
    last = names.index(layers[upto - 1])
    return [
        name
        for position, name in enumerate(names[:stop])
        if position <= last or isinstance(model.get_submodule(name), NORMS)
    ]


def _check_layer_count(model: nn.Module, n: int, what: str) -> None:
    count = len(paper_layers(model))
    if n > count:
        name = getattr(model, "model_name", type(model).__name__)
        raise UsageError(
            f"{what} {n}: {name} has {count} conv and fc layers (cnnlab summary {name} --layers lists them)"
        )


def apply_init(model: nn.Module, source: str | Path, reinit_above: int | None = None) -> list[str]:
    """Load ``source``'s weights into ``model`` (as built, freshly initialised); return what was done.

    A classifier (a layer whose outputs are the classes) whose shape differs is left as initialised,
    with a message; any other difference is a :class:`CheckpointError`. With ``reinit_above`` N, the
    layers above the N-th keep their fresh initialisation (the model's own, as its paper says).
    """
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = read_init_weights(source)
    own = model.state_dict()
    outputs = {name: _out_size(module) for name, module in paper_layers(model, include_aux=True)}
    num_classes = _out_size(paper_layers(model)[-1][1])
    notes, dropped, old_classes = [], [], 0
    for key, value in loaded.items():
        if key in own and own[key].shape != value.shape:
            module = key.rsplit(".", 1)[0]
            if outputs.get(module) == num_classes and value.shape[0] != own[key].shape[0]:
                dropped.append(key)
                old_classes = int(value.shape[0])
                continue
            raise CheckpointError(
                f"{source} does not fit {getattr(model, 'model_name', 'the model')}: {key} is "
                f"{tuple(value.shape)} there, {tuple(own[key].shape)} here"
            )
    for key in dropped:
        loaded.pop(key)
    missing, unexpected = model.load_state_dict(loaded, strict=False)
    missing = [k for k in missing if k not in dropped]
    if missing or unexpected:
        shown = ", ".join((missing or unexpected)[:4])
        raise CheckpointError(
            f"{source} does not fit {getattr(model, 'model_name', 'the model')}: "
            f"{'missing' if missing else 'unexpected'} weights {shown}"
        )
    notes.append(f"init: {len(loaded)} tensors from {source}")
    if dropped:
        heads = sorted({k.rsplit(".", 1)[0] for k in dropped})
        notes.append(
            f"init: classifier {', '.join(heads)} dropped ({old_classes} classes there, "
            f"{num_classes} here) and re-initialised"
        )
    if reinit_above is not None:
        _check_layer_count(model, reinit_above, "--reinit-above")
        kept = set(_layer_modules(model, reinit_above))
        above = [key for key in fresh if not any(key == k or key.startswith(k + ".") for k in kept)]
        model.load_state_dict({key: fresh[key] for key in above}, strict=False)
        layers = paper_layers(model)
        if reinit_above < len(layers):
            notes.append(
                f"init: layers {reinit_above + 1}-{len(layers)} ({layers[reinit_above][0]} ... "
                f"{layers[-1][0]}) re-initialised"
            )
    return notes


def _out_size(module: nn.Module) -> int | None:
    return getattr(module, "out_features", None) or getattr(module, "out_channels", None)


def freeze(model: nn.Module, spec: Sequence[str]) -> list[str]:
    """Freeze ``spec``: ``("N",)`` the first N conv/fc layers (and the norms after them), else module-name
    patterns (``features.*``). Their parameters stop learning; return the frozen modules' names."""
    if not spec:
        return []
    if len(spec) == 1 and spec[0].isdigit():
        n = int(spec[0])
        _check_layer_count(model, n, "--freeze")
        names = _layer_modules(model, n)
    else:
        every = [name for name, _ in model.named_modules() if name]
        names = []
        for pattern in spec:
            matched = [n for n in every if fnmatch.fnmatchcase(n, pattern)]
            if not matched:
                raise UsageError(
                    f"--freeze {pattern!r} matches no layer; names are as cnnlab summary MODEL --layers prints"
                )
            names += [n for n in matched if n not in names]
        names = [n for n in names if not any(n.startswith(k + ".") for k in names)]
    for name in names:
        for param in model.get_submodule(name).parameters():
            param.requires_grad_(False)
    return names


def hold_frozen_norms(model: nn.Module, frozen: Sequence[str]) -> None:
    """Put the norm layers inside ``frozen`` modules in eval mode: their running statistics stay those
    loaded (call after ``model.train()``)."""
    for name in frozen:
        module = model.get_submodule(name)
        for sub in module.modules():
            if isinstance(sub, BATCH_NORMS):
                sub.eval()
