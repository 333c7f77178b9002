"""The model zoo as a table: one row per registered model with its parameters and traced MACs.

``cnnlab models`` prints these rows; the counting lives here so the library and the CLI agree.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.analysis.summary import summarize
from cnnlab.errors import CnnlabError
from cnnlab.models import count_params, create_model, model_info
from cnnlab.models.registry import match_models


def traced_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """MACs of one image counted by :func:`cnnlab.analysis.summarize` on the meta device (its errors propagate)."""
    return summarize(model, input_size).totals.macs


def model_rows(pattern: str | None = None) -> list[dict]:
    """One row per matching model: name, family, parameters and MACs (counted on the meta device), input, paper.

    A model whose forward cannot be traced keeps ``macs: None`` and gets ``macs_error``, its one-line reason.
    """
    rows = []
    for name in match_models(pattern):
        info = model_info(name)
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
        }
        try:
            row["macs"] = traced_macs(model, info.input_size)
        except (CnnlabError, RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            # not hidden as "-": the table marks it and the command fails (exit 1) naming the reason
            reason = str(err).strip().splitlines()
            row["macs_error"] = f"{type(err).__name__}: {reason[0] if reason else ''}"
        rows.append(row)
    return rows
