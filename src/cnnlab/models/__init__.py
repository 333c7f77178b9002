"""The cnnlab model zoo: every network registered by name, built by :func:`create_model`.

Each family lives in its own module and registers its networks on import; the imports below
fill the registry.
"""

from cnnlab.models.layers import (
    ClassifierHead,
    ClassifierModel,
    ConvNormAct,
    NormActConv,
    check_input_size,
    count_params,
    feature_shape,
    smallest_input_size,
)
from cnnlab.models.registry import ModelInfo, create_model, list_models, model_info, register_model

# Families: importing a module registers its models.
from cnnlab.models import lecture  # noqa: E402,F401  isort: skip

__all__ = [
    "ClassifierHead",
    "ClassifierModel",
    "ConvNormAct",
    "ModelInfo",
    "NormActConv",
    "check_input_size",
    "count_params",
    "create_model",
    "feature_shape",
    "list_models",
    "model_info",
    "register_model",
    "smallest_input_size",
]
