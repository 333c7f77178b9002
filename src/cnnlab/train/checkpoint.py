"""Checkpoints: safetensors for weights and optimiser tensors, a JSON manifest with SHA-256 of each file.

A checkpoint named ``last`` in ``<run>/checkpoints/`` is three files:

* ``last.weights.safetensors`` - the model's state dict; its header metadata names the model,
  classes, channels and options, so ``cnnlab evaluate`` can rebuild it from this file alone;
* ``last.state.safetensors``   - optimiser tensors and RNG states, with the optimiser's param
  groups, the schedule, the epoch and the partial-epoch counters as JSON in its header;
* ``last.json``                - the manifest: file names and their SHA-256.

Every file is written to a temporary name and renamed, and the manifest last, so an interrupted
save leaves the previous checkpoint intact; a damaged file fails its checksum on load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cnnlab.errors import CheckpointError
from cnnlab.fileio import atomic_write_text, sha256_file


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> str:
    """Save tensors + JSON metadata atomically; return the file's SHA-256."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(cpu, tmp, metadata={"json": json.dumps(metadata)})
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def _load_tensors(path: Path, expected_sha256: str | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"checkpoint file {path} is damaged (SHA-256 does not match its manifest)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = json.loads((f.metadata() or {}).get("json", "{}"))
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint file {path} cannot be read: {err}") from None


def model_header(model: nn.Module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What is needed to rebuild ``model``: registry name, classes, channels, options."""
    return {
        "model": getattr(model, "model_name", type(model).__name__),
        **(extra or {}),
    }


def save_weights(path: Path, model: nn.Module, header: dict[str, Any]) -> str:
    """Save the model's state dict as safetensors with ``header`` as metadata; return its SHA-256."""
    return _save_tensors(Path(path), model.state_dict(), header)


def load_weights(
    path: Path, expected_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and header of a weights file (checksum verified when given)."""
    return _load_tensors(Path(path), expected_sha256)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    folder: Path,
    name: str,
    model: nn.Module,
    header: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Save ``<folder>/<name>.*`` (weights, optional optimiser + training state, manifest); return the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"weights": f"{name}.weights.safetensors"}
    digests = {"weights": save_weights(folder / files["weights"], model, header)}
    if optimizer is not None:
        tensors, opt_meta = _optimizer_tensors(optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        files["state"] = f"{name}.state.safetensors"
        digests["state"] = _save_tensors(
            folder / files["state"], tensors, {"optimizer": opt_meta, **(state or {})}
        )
    manifest = {"format": "cnnlab-checkpoint-1", **header, "files": files, "sha256": digests}
    path = folder / f"{name}.json"
    atomic_write_text(path, json.dumps(manifest, indent=2))
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    """The JSON manifest of a checkpoint, or a :class:`CheckpointError` saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != "cnnlab-checkpoint-1":
            raise ValueError("not a cnnlab checkpoint manifest")
        manifest["files"], manifest["sha256"]  # noqa: B018 - both keys must exist
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint manifest {path} is damaged: {err}") from None
    return manifest


def load_checkpoint(
    manifest_path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load weights (and optimiser + RNG state) into ``model``/``optimizer``; return the training state.

    Raises :class:`CheckpointError` for a missing or damaged file, or weights of another model.
    """
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    folder = manifest_path.parent
    name = getattr(model, "model_name", type(model).__name__)
    if manifest.get("model") != name:
        raise CheckpointError(
            f"checkpoint {manifest_path} holds a {manifest.get('model')!r} model, not {name!r}"
        )
    weights, _ = load_weights(folder / manifest["files"]["weights"], manifest["sha256"]["weights"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {manifest_path} does not fit this {name} model: {str(err).splitlines()[0]}"
        ) from None
    if optimizer is None or "state" not in manifest["files"]:
        return {}
    tensors, meta = _load_tensors(folder / manifest["files"]["state"], manifest["sha256"]["state"])
    try:
        _restore_optimizer(optimizer, tensors, meta.pop("optimizer"))
    except (KeyError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"optimizer state in {manifest_path} does not fit: {err}") from None
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    return meta
