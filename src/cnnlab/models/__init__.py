"""The cnnlab model zoo: every network registered by name, built by :func:`create_model`.

Each family lives in its own module and registers its networks on import; the imports below
fill the registry.
"""

from cnnlab.models.layers import (
    ClassifierHead,
    ClassifierModel,
    ConvNormAct,
    NormActConv,
    SizedFrom,
    check_input_size,
    count_params,
    feature_shape,
    smallest_input_size,
)
from cnnlab.models.registry import (
    ModelInfo,
    create_model,
    list_model_patterns,
    list_models,
    make_model_info,
    model_info,
    register_model,
    register_model_pattern,
)


def _import_families() -> None:
    """Import every family module of this package; each registers its models on import."""
    import importlib
    import pkgutil

    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name not in ("layers", "registry", "residual") and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_families()

__all__ = [
    "ClassifierHead",
    "ClassifierModel",
    "ConvNormAct",
    "ModelInfo",
    "NormActConv",
    "SizedFrom",
    "check_input_size",
    "count_params",
    "create_model",
    "feature_shape",
    "list_model_patterns",
    "list_models",
    "make_model_info",
    "model_info",
    "register_model",
    "register_model_pattern",
    "smallest_input_size",
]
