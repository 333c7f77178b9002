"""The model zoo as a table: one row per registered model with its parameters and MACs.

``cnnlab models`` prints these rows; the counting lives here so the library and the CLI agree. Tracing
all of the registry takes tens of seconds, so the built-in models' rows are kept as data in
:mod:`cnnlab.zoo_table` (written by ``scripts/gen_zoo_table.py``, checked against the tracer model by
model in ``tests/test_analysis_registry.py``) and read without importing torch. Models the table does
not hold (a name a family resolves, such as ``wrn-34-2``, or a model a user registered) are traced.
"""

from __future__ import annotations

import fnmatch
import sys
from typing import TYPE_CHECKING, Any

from cnnlab.errors import CnnlabError
from cnnlab.zoo_table import ZOO_TABLE

if TYPE_CHECKING:
    from torch import nn


def traced_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """MACs of one image counted by :func:`cnnlab.analysis.summarize` on the meta device (its errors propagate)."""
    from cnnlab.analysis.summary import summarize

    return summarize(model, input_size).totals.macs


def traced_row(name: str, probe_side: bool = True, model: nn.Module | None = None) -> dict[str, Any]:
    """The row of ``name`` counted now: the model built on the meta device and traced.

    ``min_side`` is the smallest square input its features accept (a bisection on the meta device; its
    head may be built for the input, ``img_size``); ``probe_side=False`` leaves it out. ``layers`` names
    the module classes it is made of. A model whose forward cannot be traced keeps ``macs: None`` and
    gets ``macs_error``, its one-line reason. ``model``: that build, ``create_model(name)`` on the meta
    device, where the caller holds one (the registry test checks it further); it is not changed.
    """
    import torch

    from cnnlab.models import count_params, create_model, model_info
    from cnnlab.models.layers import meta_call, smallest_input_size

    info = model_info(name)
    if model is None:
        with torch.device("meta"):
            model = create_model(name)
    row = {
        "name": name,
        "family": info.family,
        "params": count_params(model),
        "macs": None,
        "input": "x".join(map(str, info.input_size)),
        "classes": info.num_classes,
        "paper": info.paper,
        "layers": sorted({type(m).__name__ for m in model.modules()}),
    }
    if probe_side:
        row["min_side"] = smallest_input_size(meta_call(model, model.forward_features), info.input_size[0])
    try:
        row["macs"] = traced_macs(model, info.input_size)
    except (CnnlabError, RuntimeError, NotImplementedError, TypeError, ValueError) as err:
        # not hidden as "-": the table marks it and the command fails (exit 1) naming the reason
        reason = str(err).strip().splitlines()
        row["macs_error"] = f"{type(err).__name__}: {reason[0] if reason else ''}"
    return row


def table_row(name: str) -> dict[str, Any]:
    """The stored row of a built-in model (a copy)."""
    return {"name": name, **ZOO_TABLE[name]}


def model_rows(pattern: str | None = None, trace: bool = False) -> list[dict[str, Any]]:
    """One row per matching model: name, family, parameters, MACs of one image at its default input, input, paper.

    Built-in models come from the stored table unless ``trace``; anything else is traced. A pattern that
    matches nothing raises the registry's :class:`~cnnlab.errors.UsageError` (with close matches).
    """
    if not trace and "cnnlab.models.registry" not in sys.modules:  # the registry untouched: the table is it
        names = sorted(n for n in ZOO_TABLE if pattern is None or fnmatch.fnmatch(n, pattern))
        if names:
            return [table_row(n) for n in names]
    from cnnlab.models.registry import match_models

    return [table_row(n) if n in ZOO_TABLE and not trace else traced_row(n) for n in match_models(pattern)]
