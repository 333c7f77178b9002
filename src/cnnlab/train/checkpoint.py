"""Checkpoints: safetensors for weights and optimiser tensors, a JSON manifest with SHA-256 of each file.

A checkpoint named ``last`` in ``<run>/checkpoints/`` is three files:

* ``last.<n>.weights.safetensors`` - the model's state dict; its header metadata names the model,
  classes, channels and options, so ``cnnlab evaluate`` can rebuild it from this file alone;
* ``last.<n>.state.safetensors``   - optimiser tensors and RNG states, with the optimiser's param
  groups, the schedule, the epoch and the partial-epoch counters as JSON in its header;
* ``last.json``                    - the manifest: the names of those two files and their SHA-256.

``<n>`` grows with every save. A save writes the new files under new names (each through a
temporary file, see :mod:`cnnlab.fileio`), then replaces the manifest atomically, and only then
removes the files the previous manifest named. A full disk or a kill at any moment therefore
leaves the previous checkpoint whole: either the old manifest and its files, or the new ones.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as serialize
from torch import nn

from cnnlab.errors import CheckpointError, UsageError
from cnnlab.fileio import (
    TEMP_SUFFIX,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
    sha256_hex,
)

FORMAT = "cnnlab-checkpoint-1"
FILE_KINDS = ("weights", "state")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# What the engine stores in a ``last`` checkpoint's state header, and the JSON type of each.
TRAINING_STATE = {
    "epoch": int,
    "step_in_epoch": int,
    "partial": (dict, type(None)),
    "schedule": dict,
    "history": list,
    "best_accuracy": (int, float),
}


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> str:
    """Save tensors + JSON metadata atomically; return the file's SHA-256."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    data = serialize(cpu, metadata={"json": json.dumps(metadata)})
    atomic_write_bytes(path, data)
    return sha256_hex(data)


def _json_metadata(path: Path) -> Any:
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("json", "{}"))


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file cnnlab wrote (``{}`` without one), read without its tensors;
    a file that is not safetensors, or is damaged, is a :class:`CheckpointError`."""
    try:
        metadata = _json_metadata(Path(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"weight file {path} cannot be read: {err}") from None
    return metadata if isinstance(metadata, dict) else {}


def _load_tensors(path: Path, expected_sha256: str | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        if expected_sha256 is not None and sha256_file(path) != expected_sha256:
            raise CheckpointError(f"checkpoint file {path} is damaged (SHA-256 does not match its manifest)")
        metadata = _json_metadata(path)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {path} cannot be read: {err}") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"checkpoint file {path} is damaged: its JSON header is not an object")
    return tensors, metadata


def model_header(model: nn.Module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What is needed to rebuild ``model``: registry name, classes, channels, options."""
    return {
        "model": getattr(model, "model_name", type(model).__name__),
        **(extra or {}),
    }


def save_weights(path: Path, model: nn.Module, header: dict[str, Any]) -> str:
    """Save the model's state dict as safetensors with ``header`` as metadata; return its SHA-256."""
    return _write_tensors(Path(path), model.state_dict(), header)


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


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: Any) -> None:
    """Load the saved state into ``optimizer``, refusing (ValueError) anything that does not fit its
    parameters: torch would accept a wrongly shaped momentum buffer and fail steps later."""
    if not isinstance(meta, dict) or not isinstance(meta.get("param_groups"), list):
        raise ValueError("the optimizer's param_groups are missing")
    if not isinstance(meta.get("scalars"), dict):
        raise ValueError("the optimizer's scalars are missing")
    params: dict[int, torch.Tensor] = {}
    if len(meta["param_groups"]) != len(optimizer.param_groups):
        raise ValueError(
            f"{len(meta['param_groups'])} parameter groups, expected {len(optimizer.param_groups)}"
        )
    for saved, group in zip(meta["param_groups"], optimizer.param_groups):
        if not isinstance(saved, dict) or not isinstance(saved.get("params"), list):
            raise ValueError("a parameter group without its parameter list")
        if len(saved["params"]) != len(group["params"]):
            raise ValueError("a parameter group of another size")
        params.update(zip(saved["params"], group["params"]))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        if not isinstance(values, dict):
            raise ValueError(f"scalars of parameter {index} are not an object")
        state.setdefault(int(index), {}).update(values)
    for index, values in state.items():
        if index not in params:
            raise ValueError(f"state for parameter {index}, which the optimizer does not have")
        shape = tuple(params[index].shape)
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != shape:
                raise ValueError(
                    f"{name} of parameter {index} has shape {tuple(value.shape)}, the parameter {shape}"
                )
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    # Saved tensors come back contiguous; a channels_last weight's momentum buffer must get its
    # weight's strides again, as torch 2.13's fused CPU kernels assume a buffer laid out as its weight.
    for param, values in optimizer.state.items():
        for name, value in values.items():
            if (
                isinstance(value, torch.Tensor)
                and value.shape == param.shape
                and value.stride() != param.stride()
            ):
                values[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _files_of(folder: Path, name: str) -> list[tuple[Path, int]]:
    """Every file checkpoint ``name`` owns in ``folder``, with the number in its name (0: none):
    numbered (or older, unnumbered) data files, and temporary files an interrupted save left."""
    kinds, temp, plain = "|".join(FILE_KINDS), re.escape(TEMP_SUFFIX), re.escape(name)
    data = re.compile(rf"{plain}(?:\.(\d+))?\.(?:{kinds})\.safetensors")
    leftover = re.compile(
        rf"\.{plain}(?:\.\d+)?\.(?:{kinds})\.safetensors\..*{temp}|\.{plain}\.json\..*{temp}"
    )
    found = []
    for path in folder.iterdir():
        if match := data.fullmatch(path.name):
            found.append((path, int(match.group(1) or 0)))
        elif leftover.fullmatch(path.name):
            found.append((path, 0))
    return found


def _storage_error(folder: Path, err: OSError | SafetensorError, had_checkpoint: bool) -> CheckpointError:
    reason = getattr(err, "strerror", None) or str(err)
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space"
    elif getattr(err, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "make it writable"
    else:
        fix = "fix the storage"
    then = "resume with --resume (the previous checkpoint is intact)" if had_checkpoint else "start again"
    return CheckpointError(f"cannot write checkpoint to {folder}: {reason}; {fix} and {then}")


def save_checkpoint(
    folder: Path,
    name: str,
    model: nn.Module,
    header: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    state: dict[str, Any] | None = None,
    rank_rng: dict[str, list[torch.Tensor]] | None = None,
) -> Path:
    """Save checkpoint ``name`` in ``folder`` (weights, optional optimiser + training state, manifest
    ``<name>.json``); return the manifest's path.

    The previous checkpoint of that name stays whole until the new manifest replaces it; a failure to
    write (full disk, read-only storage) is a :class:`CheckpointError` saying so. ``rank_rng``: the
    random streams of every rank of a data-parallel run (``{"cpu": [...], "cuda": [...]}``, by rank),
    saved beside this process's so that each rank resumes its own. ``state["tensors"]``: the run's own
    tensors by name (data pruning's loss table), saved in the state file, not its JSON header, and
    returned by :func:`load_checkpoint` under the same key.
    """
    folder = Path(folder)
    manifest_path = folder / f"{name}.json"
    had_checkpoint = manifest_path.is_file()
    files: dict[str, str] = {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # One more than any number in use, so that new files never replace old ones.
        number = max((n for _, n in _files_of(folder, name)), default=0) + 1
        files = {"weights": f"{name}.{number}.weights.safetensors"}
        digests = {"weights": save_weights(folder / files["weights"], model, header)}
        if optimizer is not None:
            tensors, opt_meta = _optimizer_tensors(optimizer)
            tensors["rng.torch"] = torch.get_rng_state()
            if torch.cuda.is_available():
                for i, s in enumerate(torch.cuda.get_rng_state_all()):
                    tensors[f"rng.cuda.{i}"] = s
            for kind, states in (rank_rng or {}).items():
                for rank, rng in enumerate(states):
                    if rank:  # rank 0's are this process's, saved above
                        tensors[f"rng.{kind}.rank{rank}"] = rng
            header_state = dict(state or {})
            for extra, tensor in header_state.pop("tensors", {}).items():  # a run's own, e.g. data pruning's
                tensors[f"extra.{extra}"] = tensor.contiguous()
            files["state"] = f"{name}.{number}.state.safetensors"
            digests["state"] = _write_tensors(
                folder / files["state"], tensors, {"optimizer": opt_meta, **header_state}
            )
        manifest = {"format": FORMAT, **header, "files": files, "sha256": digests}
        if state and isinstance(state.get("epoch"), int):
            manifest["epoch"] = state["epoch"]
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2))  # the switch to the new files
    except (OSError, SafetensorError) as err:
        # The new files are unusable without their manifest: remove them, giving a full disk its space back.
        for file_name in files.values():
            with contextlib.suppress(OSError):
                (folder / file_name).unlink(missing_ok=True)
        raise _storage_error(folder, err, had_checkpoint) from None
    # Now the old files (and any a kill left behind) are garbage; failing to remove them loses nothing.
    for path, _ in _files_of(folder, name):
        if path.name not in files.values():
            path.unlink(missing_ok=True)
    return manifest_path


def _check_file_name(manifest_path: Path, kind: str, file_name: Any) -> None:
    """A manifest may only name plain files beside it: never ``..``, an absolute path or a subfolder."""
    if (
        not isinstance(file_name, str)
        or file_name in ("", ".", "..")
        or "/" in file_name
        or "\\" in file_name
        or "\0" in file_name
        or Path(file_name).name != file_name
    ):
        raise CheckpointError(
            f"checkpoint manifest {manifest_path} is refused: its {kind} file {file_name!r} is not a plain "
            "file name in the manifest's folder"
        )


def read_manifest(path: Path) -> dict[str, Any]:
    """The JSON manifest of a checkpoint, checked, or a :class:`CheckpointError` saying what is wrong.

    Every file it names must be a plain file name (in the manifest's folder) with a SHA-256.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint manifest {path} is damaged: {err}") from None

    def damaged(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint manifest {path} is damaged: {what}")

    if not isinstance(manifest, dict):
        raise damaged(f"a JSON {type(manifest).__name__}, not an object")
    if "format" not in manifest:  # another JSON file (a run's config.json, say), not a damaged manifest
        raise UsageError(
            f"{path} is not a checkpoint manifest; name a run directory or its checkpoints/best.json (or last.json)"
        )
    if manifest.get("format") != FORMAT:
        raise damaged(f"not a cnnlab checkpoint manifest (format {manifest.get('format')!r})")
    if not isinstance(manifest.get("model"), str):
        raise damaged("no model name")
    files, digests = manifest.get("files"), manifest.get("sha256")
    if not isinstance(files, dict) or not isinstance(files.get("weights"), str):
        raise damaged("'files' does not name a weights file")
    if not isinstance(digests, dict):
        raise damaged("no 'sha256' object")
    for kind, file_name in files.items():
        if kind not in FILE_KINDS:
            raise damaged(f"unknown file kind {kind!r}")
        _check_file_name(path, kind, file_name)
        if not isinstance(digests.get(kind), str) or not _SHA256.fullmatch(digests[kind]):
            raise CheckpointError(
                f"checkpoint manifest {path} is refused: its {kind} file has no valid SHA-256"
            )
    if "epoch" in manifest and (
        not isinstance(manifest["epoch"], int) or isinstance(manifest["epoch"], bool)
    ):
        raise damaged("'epoch' is not a whole number")
    return manifest


def _check_training_state(path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """The engine's keys in a state file's header, with their types, and the RNG state tensor."""
    for key, kind in TRAINING_STATE.items():
        if key not in meta:
            raise CheckpointError(f"checkpoint file {path} is damaged: its header has no {key!r}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise CheckpointError(f"checkpoint file {path} is damaged: {key!r} has the wrong type")
    if not all(isinstance(row, dict) for row in meta["history"]):
        raise CheckpointError(f"checkpoint file {path} is damaged: 'history' holds a non-object")
    schedule = meta["schedule"]
    if not isinstance(schedule.get("step"), int) or not isinstance(schedule.get("per_step"), dict):
        raise CheckpointError(f"checkpoint file {path} is damaged: the schedule state is incomplete")
    rng = tensors.get("rng.torch")
    if rng is None or rng.dtype != torch.uint8 or rng.dim() != 1:
        raise CheckpointError(f"checkpoint file {path} is damaged: no valid random-number-generator state")


def load_checkpoint(
    manifest_path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load weights (and optimiser state) into ``model``/``optimizer``; return the training state, with the
    saved random streams as ``rng_state`` (see :func:`restore_rng_state`).

    Raises :class:`CheckpointError` for a missing or damaged file, a manifest naming files outside its
    folder, weights of another model or optimiser state that does not fit the parameters.
    """
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    folder = manifest_path.parent
    name = getattr(model, "model_name", type(model).__name__)
    if manifest["model"] != name:
        raise UsageError(f"checkpoint {manifest_path} holds a {manifest['model']!r} model, not {name!r}")
    weights, _ = load_weights(folder / manifest["files"]["weights"], manifest["sha256"]["weights"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {manifest_path} does not fit this {name} model: {str(err).splitlines()[0]}"
        ) from None
    if optimizer is None:
        return {}
    if "state" not in manifest["files"]:
        raise CheckpointError(f"checkpoint {manifest_path} holds weights only, no training state to resume")
    state_path = folder / manifest["files"]["state"]
    tensors, meta = _load_tensors(state_path, manifest["sha256"]["state"])
    _check_training_state(state_path, meta, tensors)
    try:
        _restore_optimizer(optimizer, tensors, meta.pop("optimizer", None))
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"optimizer state in {state_path} does not fit this run: {err}") from None
    # The random streams are process-wide: returned for the caller to restore when the run resumes,
    # after a trial restore on a forked stream, so that a damaged state fails here, not later.
    try:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(tensors["rng.torch"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint file {state_path} is damaged: {err}") from None
    meta["tensors"] = {
        key.removeprefix("extra."): t for key, t in tensors.items() if key.startswith("extra.")
    }
    meta["rng_state"] = {
        "cpu": tensors["rng.torch"],
        "cuda": [tensors[k] for k in sorted(tensors) if re.fullmatch(r"rng\.cuda\.\d+", k)],
        # other ranks' streams of a data-parallel run: {rank: tensor} per kind
        "ranks": {
            kind: {
                int(m.group(1)): tensors[k]
                for k in tensors
                if (m := re.fullmatch(rf"rng\.{kind}\.rank(\d+)", k))
            }
            for kind in ("cpu", "cuda")
        },
    }
    return meta


def restore_rng_state(
    rng_state: dict[str, Any], source: str | Path = "the checkpoint", rank: int = 0
) -> None:
    """Set the process's random streams to those :func:`load_checkpoint` returned (``meta["rng_state"]``).

    ``rank`` > 0 (a data-parallel run): that rank's own saved streams. A rank the checkpoint has no
    stream for (the run is resumed with more processes) is seeded from (the saved rank 0 stream, rank),
    the same on every resume.
    """
    ranks = rng_state.get("ranks", {})
    try:
        if rank == 0:
            torch.set_rng_state(rng_state["cpu"])
        elif rank in ranks.get("cpu", {}):
            torch.set_rng_state(ranks["cpu"][rank])
        else:
            torch.set_rng_state(rng_state["cpu"])
            torch.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) + rank)
    except RuntimeError as err:
        raise CheckpointError(f"the random-number state in {source} is damaged: {err}") from None
    if torch.cuda.is_available():
        if rank == 0 and rng_state["cuda"]:
            torch.cuda.set_rng_state_all(rng_state["cuda"])
        elif rank in ranks.get("cuda", {}):
            torch.cuda.set_rng_state(ranks["cuda"][rank])
