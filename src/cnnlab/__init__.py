"""cnnlab: classic convolutional networks, faithful to their papers.

>>> import cnnlab
>>> model = cnnlab.create_model("lecture-simple")          # 10 classes, 1x28x28 input
>>> cnnlab.list_models("lecture-*")
['lecture-inception', 'lecture-residual', 'lecture-simple']

The model functions are imported on first use (PEP 562), so ``import cnnlab`` and ``cnnlab --help``
do not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab.errors import CnnlabError, UsageError

if TYPE_CHECKING:
    from cnnlab.models import create_model, list_models, model_info, register_model
    from cnnlab.references import from_reference, list_references
    from cnnlab.weights import load_model, load_weights

__version__ = "0.1.0"

__all__ = [
    "CnnlabError",
    "UsageError",
    "create_model",
    "from_reference",
    "list_models",
    "list_references",
    "load_model",
    "load_weights",
    "model_info",
    "register_model",
]

_FROM_MODELS = ("create_model", "list_models", "model_info", "register_model")
_FROM_WEIGHTS = ("load_model", "load_weights")
_FROM_REFERENCES = ("from_reference", "list_references")


def __getattr__(name: str) -> Any:
    if name in _FROM_MODELS:
        import cnnlab.models

        return getattr(cnnlab.models, name)
    if name in _FROM_WEIGHTS:
        import cnnlab.weights

        return getattr(cnnlab.weights, name)
    if name in _FROM_REFERENCES:
        import cnnlab.references

        return getattr(cnnlab.references, name)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
