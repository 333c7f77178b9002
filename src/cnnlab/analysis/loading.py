"""What ``cnnlab summary`` and ``cnnlab rf`` analyse: a registry name or ``path/to/file.py:Name``, and an input size."""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CnnlabError, UsageError

_SIZE = re.compile(r"\d+(x\d+){2}")


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``"3x224x224" -> (3, 224, 224)``; anything else is a :class:`UsageError` showing the expected form."""
    cleaned = text.strip().lower().replace("×", "x").replace(",", "x")
    if not _SIZE.fullmatch(cleaned):
        raise UsageError(f"--input must be CxHxW, three whole numbers such as 3x224x224; got {text!r}")
    c, h, w = (int(v) for v in cleaned.split("x"))
    if min(c, h, w) < 1:
        raise UsageError(f"--input must have C, H and W of at least 1, got {text!r}")
    return c, h, w


def _failure(err: BaseException) -> str:
    """``sys.exit(3)`` -> "it called sys.exit(3)"; other exceptions -> ``Type: message``."""
    if isinstance(err, SystemExit):
        return f"it called sys.exit({err.code!r})"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _load_from_file(spec: str) -> nn.Module:
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"no such Python file: {path_text!r} (write path/to/file.py:Name)")
    module_name = f"_cnnlab_user_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UsageError(f"cannot import {path_text!r} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    saved_path = list(sys.path)
    sys.path.insert(0, str(path.resolve().parent))  # as `python file.py` does: its neighbours import
    try:
        loader_spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:  # the user's file: its first line of failure, not our traceback
        raise CnnlabError(f"importing {path_text!r} failed: {_failure(err)}") from err
    finally:
        sys.path[:] = saved_path
    candidates = sorted(
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and getattr(v, "__module__", None) == module_name
        and (
            (inspect.isclass(v) and issubclass(v, nn.Module))
            or inspect.isfunction(v)
            or isinstance(v, nn.Module)
        )
    )
    if not hasattr(module, name):
        raise UsageError(
            f"{path_text!r} defines no {name!r}; modules and functions it defines: {', '.join(candidates) or 'none'}"
        )
    target = getattr(module, name)
    if isinstance(target, nn.Module):
        model = target
    elif callable(target):
        try:
            inspect.signature(target).bind()
        except TypeError as err:  # the command names something that needs arguments: change the command
            raise UsageError(f"{name} must be constructible without arguments to be analysed: {err}") from err
        except ValueError:  # no signature to inspect (a builtin): let the call say
            pass
        try:
            model = target()
        except (Exception, SystemExit) as err:  # the user's code failed: one line naming it and the file
            raise CnnlabError(f"{name}() in {path_text!r} failed: {_failure(err)}") from err
    else:
        raise UsageError(f"{name} in {path_text!r} is not an nn.Module class, instance or factory function")
    if not isinstance(model, nn.Module):
        raise UsageError(f"{name}() returned {type(model).__name__}, not an nn.Module")
    return model


def load_model(
    spec: str, options: dict[str, object] | None = None, device: str = "meta"
) -> tuple[nn.Module, tuple[int, int, int] | None]:
    """The model named by ``spec`` and its default input size (``None`` for a user's file).

    ``spec`` is a registry name (built on ``device``: on "meta" without memory or arithmetic, on "cpu"
    with real, initialised weights) or ``path/to/file.py:Name`` naming an ``nn.Module`` class, instance
    or factory function (built as its code says); ``options`` go to the registry builder.
    """
    from cnnlab.models import create_model, model_info

    if ".py:" in spec or spec.endswith(".py"):
        if ":" not in spec:
            raise UsageError(f"name the module inside the file: {spec}:ClassName")
        if options:
            raise UsageError("--model-option applies to registry models; set options in your own file")
        return _load_from_file(spec), None
    info = model_info(spec)  # unknown names: close matches and the valid ones
    options = options or {}
    with torch.device(device):
        model = create_model(spec, **options)
    return model, default_input(info.input_size, options)


def default_input(input_size: tuple[int, int, int], options: dict[str, object]) -> tuple[int, int, int]:
    """A registry model's default input (C, H, W) as its builder ``options`` change it: ``in_chans`` sets C,
    ``img_size`` H and W (a model built with ``img_size=32`` takes 32x32, not its paper's size)."""
    from cnnlab.models.layers import pair

    c, h, w = input_size
    if "in_chans" in options:
        c = int(options["in_chans"])
    if "img_size" in options:
        h, w = pair(options["img_size"])
    return c, h, w
