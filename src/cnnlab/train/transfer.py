"""Start a run from saved weights (``--weights``/``--init``), freeze its first layers, re-initialise the ones above (Yosinski et al. 2014).

    cnnlab train alexnet --init runs/baseA --freeze 3 --reinit-above 3     # "A3B": layers 1-3 from A, frozen

Layers are counted as the papers count them: the conv and fc layers in order
(:func:`cnnlab.models.layers.paper_layers`, listed by ``cnnlab summary MODEL --layers``). Freezing
the first N layers freezes everything registered up to the N-th layer and the norm layers that follow
it before the next one; a frozen batch-norm layer keeps its statistics too (it stays in eval mode
while the rest trains). The weights are read by :func:`cnnlab.weights.load_weights` (any weight file,
through its source's key map); a classifier whose class count differs from the weights' is dropped and
re-initialised, with a message.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.layers import paper_layers

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
NORMS = (*BATCH_NORMS, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


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


def apply_init(
    model: nn.Module,
    source: str | Path,
    reinit_above: int | None = None,
    weights_from: str = "cnnlab",
    classes: Sequence[str] | None = None,
) -> list[str]:
    """Load the weights at ``source`` into ``model`` (as built, freshly initialised); return what was done.

    ``source`` is a weight file read through ``weights_from``'s key map (:func:`cnnlab.weights.load_weights`:
    cnnlab's own files, torchvision's or timm's), a run directory or a checkpoint manifest. A classifier with
    another class count is left as initialised, with a message; any other difference is a
    :class:`UsageError` naming the key and both shapes. With ``reinit_above`` N, the layers above the N-th
    keep their fresh initialisation (the model's own, as its paper says). ``classes``: the data's class
    names; a kept classifier whose file names other classes (or the same in another order) is warned of.
    """
    from cnnlab.weights import load_weights

    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    # the model's own class count: a file's classifier of another count is dropped, not refused
    report = load_weights(model, source, weights_from, num_classes=getattr(model, "num_classes", None))
    shown = source if weights_from == "cnnlab" else f"{source} ({weights_from})"
    notes = [f"init: {report.loaded} tensors from {shown}"]
    notes += [f"init: {message}" for message in report.messages]
    layer_count = len(paper_layers(model))
    file_classes = report.header.get("classes")
    classifier_kept = not report.dropped and (reinit_above is None or reinit_above >= layer_count)
    if (
        classifier_kept
        and classes is not None
        and isinstance(file_classes, list)
        and len(file_classes) == len(classes)
        and [str(c) for c in file_classes] != list(classes)
    ):
        # same count, other names or order: output k would be read as the data's class k without a word
        mismatch = next(i for i, (a, b) in enumerate(zip(file_classes, classes)) if str(a) != b)
        message = (
            f"the file's classifier was trained on other classes (its class {mismatch} is "
            f"{file_classes[mismatch]!r}, the data's is {classes[mismatch]!r}); output k is read as the data's "
            f"class k: re-initialise the classifier with --reinit-above {layer_count - 1} unless that is meant"
        )
        warnings.warn(message, stacklevel=2)
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
