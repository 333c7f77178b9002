"""Architecture analysis: parameters, MACs, memory, output sizes and receptive fields, exactly.

* :func:`summarize` - trace a forward pass (meta device by default) into per-operation rows and totals.
* :mod:`cnnlab.analysis.receptive` - the output-size, jump and receptive-field recurrences and a layer language.
* :mod:`cnnlab.analysis.cost` - the slides' convolution cost arithmetic (the 1x1 reduction).
* :mod:`cnnlab.analysis.papers` - the papers' tables reproduced beside our counts.
* :mod:`cnnlab.analysis.zoo` - the registry as rows (parameters, traced MACs, input, paper) for ``cnnlab models``.

Conventions (MACs vs FLOPs, what is counted where) are in docs/analysis.md.
"""

from cnnlab.analysis.receptive import FieldStep, Window, parse_layers, receptive_fields
from cnnlab.analysis.report import LayerRow, Summary, Totals
from cnnlab.analysis.summary import summarize

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
