"""Architecture analysis: parameters, MACs, memory, output sizes and receptive fields, exactly.

* :func:`summarize` - trace a forward pass (meta device by default) into per-operation rows and totals.
* :mod:`cnnlab.analysis.receptive` - the output-size, jump and receptive-field recurrences and a layer language.
* :mod:`cnnlab.analysis.cost` - the slides' convolution cost arithmetic (the 1x1 reduction).
* :mod:`cnnlab.analysis.papers` - the papers' tables reproduced beside our counts.
* :mod:`cnnlab.analysis.zoo` - the registry as rows (parameters, MACs, input, paper) for ``cnnlab models``.

Conventions (MACs vs FLOPs, what is counted where) are in docs/analysis.md.

The names below are imported on first use (PEP 562), so that torch-free parts (``cnnlab models``'s
table) do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnlab.analysis.receptive import FieldStep, Window, parse_layers, receptive_fields
    from cnnlab.analysis.report import LayerRow, Summary, Totals
    from cnnlab.analysis.summary import summarize

_HOMES = {
    "FieldStep": "cnnlab.analysis.receptive",
    "Window": "cnnlab.analysis.receptive",
    "parse_layers": "cnnlab.analysis.receptive",
    "receptive_fields": "cnnlab.analysis.receptive",
    "LayerRow": "cnnlab.analysis.report",
    "Summary": "cnnlab.analysis.report",
    "Totals": "cnnlab.analysis.report",
    "summarize": "cnnlab.analysis.summary",
}
__all__ = [
    "FieldStep",
    "LayerRow",
    "Summary",
    "Totals",
    "Window",
    "parse_layers",
    "receptive_fields",
    "summarize",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'cnnlab.analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
