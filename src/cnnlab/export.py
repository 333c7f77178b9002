"""Export a model: a self-describing safetensors model file, or ONNX for other runtimes.

``cnnlab export RUN_OR_MODEL --format onnx|safetensors`` is :func:`export_model`. ONNX goes through
``torch.onnx.export`` with the TorchScript exporter (``dynamo=False``): measured on this project's models
it exports 2-4x faster than the dynamo exporter and needs no onnxscript, and both give the same
onnxruntime outputs. The model's :class:`~cnnlab.weights.ModelCard` is stored in the ONNX file's metadata
(``metadata_props["cnnlab"]``), so ``cnnlab predict`` prepares images for an ONNX file as for its run.
onnx and onnxruntime are the optional extra ``cnnlab[export]``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnlab.errors import CnnlabError, UsageError
from cnnlab.fileio import atomic_file
from cnnlab.train.rundir import STORAGE_ERRNOS, output_storage_errors
from cnnlab.weights import ModelCard, card_for_model, load_model, save_model_file

FORMATS = ("onnx", "safetensors")
#: the opset ``--opset`` defaults to: supported by the TorchScript exporter and current onnxruntime
DEFAULT_OPSET = 17
#: the opsets torch.onnx.export's TorchScript exporter (dynamo=False) writes, lowest and highest
ONNX_OPSETS = (7, 20)
#: key of the model card in an ONNX file's metadata_props
ONNX_CARD_KEY = "cnnlab"


def require_onnx(what: str = "ONNX export") -> None:
    """A clear :class:`UsageError` when the optional ``export`` extra is not installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise UsageError(
            f"{what} needs onnx and onnxruntime ({err.name} is missing): pip install 'cnnlab[export]'"
        ) from None


def resolve_model(
    spec: str | Path, weights: str | Path | None = None, weights_from: str = "cnnlab", **options: Any
) -> nn.Module:
    """A run directory, checkpoint or model file (loaded), or a registry name (built with ``options``,
    with ``weights`` loaded through ``weights_from``'s key map when given, else fresh weights). The model
    carries its card as ``model_card``."""
    from cnnlab.models import create_model, model_info
    from cnnlab.weights import build_with_weights, card_for_weights

    path = Path(spec)
    if path.exists():
        if options or weights:
            raise UsageError(f"{spec} is a saved model: --model-option and --weights apply to a model name")
        return load_model(path)
    if "/" in str(spec) or str(spec).endswith((".safetensors", ".json", ".onnx")):
        raise UsageError(f"no run directory or model file at {spec}")
    model_info(str(spec))  # an unknown name: close matches
    if weights is not None:
        model, _ = build_with_weights(str(spec), weights, weights_from, **options)
        model.model_card = card_for_weights(model, weights_from)  # a reference's normalisation
    else:
        model = create_model(str(spec), **options)
        model.model_card = card_for_model(model)
    return model.eval()


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote, how long it took and, for ONNX, how far onnxruntime is from PyTorch."""

    path: Path
    format: str
    seconds: float
    max_abs_diff: float | None = None
    logit_scale: float | None = (
        None  # max |PyTorch logit| on the check input: what the difference compares to
    )

    def report(self) -> str:
        """One line for the CLI."""
        check = (
            f"; onnxruntime vs PyTorch max |difference| {self.max_abs_diff:.2e}"
            if self.max_abs_diff is not None
            else ""
        )
        return f"wrote {self.path} ({self.format}, {self.seconds:.2f} s){check}"


class _OpFinder(TorchDispatchMode):
    """Records the innermost module that runs each aten op: to name the layer behind an unsupported op."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.first: dict[str, str] = {}
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self.enter(name)))
            self.handles.append(module.register_forward_hook(self.leave))

    def enter(self, name: str) -> Callable[..., None]:
        """A forward pre-hook pushing ``name`` (hooks must return None, or they replace inputs and outputs)."""

        def hook(module: nn.Module, args: Any) -> None:
            self.stack.append(name)

        return hook

    def leave(self, module: nn.Module, args: Any, output: Any) -> None:
        """A forward hook popping the module's name."""
        self.stack.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105 - torch protocol
        op = func.name().split(".")[0]  # "aten::adaptive_max_pool2d.default" -> "aten::adaptive_max_pool2d"
        self.first.setdefault(op, self.stack[-1] if self.stack else "")
        return func(*args, **(kwargs or {}))

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


def layer_using(model: nn.Module, example: torch.Tensor, op: str) -> tuple[str, str] | None:
    """``(dotted module name, class name)`` of the first layer whose forward runs aten op ``op``."""
    finder = _OpFinder(model)
    try:
        with torch.no_grad(), finder:
            model(example)
    finally:
        finder.close()
    for qualified in (op, op.replace("aten::", "aten::_")):  # the exporter may name the public op
        if qualified in finder.first:
            where = finder.first[qualified]
            return where or "(top level)", type(model.get_submodule(where)).__name__
    return None


def _onnx_failure(model: nn.Module, example: torch.Tensor, err: Exception, opset: int) -> UsageError:
    """The exporter's error as one line naming the layer, where an unsupported op is to blame."""
    text = str(err).strip()
    first = text.splitlines()[0].split(". ")[0] if text else type(err).__name__
    match = re.search(r"operator '?(?:aten::)?(\w+)", first) or re.search(r"aten::(\w+)", first)
    name = getattr(model, "model_name", type(model).__name__)
    if match:
        op = f"aten::{match.group(1)}"
        found = layer_using(model, example, op)
        where = f"layer {found[0]!r} ({found[1]})" if found else "a layer"
        return UsageError(
            f"cannot export {name} to ONNX opset {opset}: {where} uses {op}, which the exporter cannot convert "
            f"({first}); try another --opset, or replace that layer"
        )
    return UsageError(f"cannot export {name} to ONNX opset {opset}: {first}")


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime CPU session of the ONNX file at ``path``."""
    require_onnx("running an ONNX model")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for a bad file
        raise CnnlabError(f"{path} is not a loadable ONNX model: {str(err).splitlines()[0]}") from None


def onnx_card(session: Any, where: str | Path) -> ModelCard:
    """The model card an exported ONNX file carries in its metadata."""
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_CARD_KEY)
    if text is None:
        raise UsageError(
            f"{where} was not exported by cnnlab (no {ONNX_CARD_KEY!r} metadata): it does not say how to prepare images"
        )
    return ModelCard.from_header(json.loads(text), where)


def refuse_folder(out: Path, example: str, kind: str = "file") -> None:
    """A usage error when ``out``, the ``kind`` of file to write, is a folder; it suggests ``example`` in it."""
    if out.is_dir():
        raise UsageError(f"{out} is a folder; name the {kind} to write, e.g. {out / example}")


def export_onnx(
    model: nn.Module,
    out: str | Path,
    card: ModelCard | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    overwrite: bool = False,
    check: bool = True,
) -> ExportResult:
    """Export ``model`` (evaluation mode, fp32, CPU) to ONNX at ``out`` with its card in the metadata.

    The example input is one image of the card's input size (two with ``dynamic_batch``, which also
    makes the batch dimension symbolic). With ``check``, onnxruntime runs the file on that input and
    :attr:`ExportResult.max_abs_diff` is its largest difference from PyTorch's logits
    (:attr:`ExportResult.logit_scale` their largest magnitude).
    """
    require_onnx()
    out = Path(out)
    if not ONNX_OPSETS[0] <= opset <= ONNX_OPSETS[1]:
        raise UsageError(
            f"ONNX opset {opset} is not one the exporter writes; choose {ONNX_OPSETS[0]} to {ONNX_OPSETS[1]} "
            f"(default {DEFAULT_OPSET})"
        )
    refuse_folder(out, "model.onnx", "ONNX file")
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    card = card or getattr(model, "model_card", None) or card_for_model(model)
    with as_exported(model) as model:
        return run_export(model, out, card, opset, dynamic_batch, check)


@contextlib.contextmanager
def as_exported(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in evaluation mode, fp32, on the CPU, as ONNX export needs it, without changing the caller's
    model for good: one already in fp32 on the CPU gets its training mode back afterwards, any other is copied
    (so a fine-tuning run goes on with its dropout and batch norm, in its dtype, on its device)."""
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float32) for t in tensors):
        model = copy.deepcopy(model)
    was_training = model.training
    try:
        yield model.eval().float().to("cpu")
    finally:
        model.train(was_training)


def run_export(
    model: nn.Module, out: Path, card: ModelCard, opset: int, dynamic_batch: bool, check: bool
) -> ExportResult:
    """:func:`export_onnx`'s work on a model already in evaluation mode, fp32, on the CPU."""
    import onnx

    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2 if dynamic_batch else 1, *card.input_size, generator=generator)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    start = time.perf_counter()
    # the exporter writes to a file name: the temporary one atomic_file makes beside ``out``, renamed onto it
    # once the card is appended, so read-only storage is worded as such before the exporter runs
    with output_storage_errors("the ONNX file", "-o"), atomic_file(out) as temporary:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore"
                )  # the TorchScript exporter's deprecation notice and tracer hints
                torch.onnx.export(
                    model, (example,), str(temporary), dynamo=False, opset_version=opset,
                    input_names=["input"], output_names=["logits"], dynamic_axes=axes,
                )  # fmt: skip
        except CnnlabError:
            raise
        except Exception as err:  # the exporter raises many types (RuntimeError, SymbolicValueError, ...)
            if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
                raise  # the storage's failure (a full disk), not the exporter's: worded as such above
            raise _onnx_failure(model, example, err, opset) from None
        # the card as metadata_props: a serialized message followed by another one is their merge (protobuf's
        # rule for concatenation), so the field is appended without parsing the file's weights again
        extra = onnx.ModelProto()
        extra.metadata_props.add(key=ONNX_CARD_KEY, value=json.dumps(card.header()))
        with open(temporary, "ab") as f:
            f.write(extra.SerializeToString())
    seconds = time.perf_counter() - start
    diff = scale = None
    if check:
        session = onnx_session(out)
        got = session.run(None, {"input": example.numpy()})[0]
        with torch.no_grad():
            want = model(example)
        diff = float((torch.from_numpy(got) - want).abs().max())
        scale = float(want.abs().max())
    return ExportResult(out, "onnx", seconds, diff, scale)


def export_model(
    spec: str | Path,
    format: str,
    out: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    overwrite: bool = False,
    weights: str | Path | None = None,
    weights_from: str = "cnnlab",
    **options: Any,
) -> ExportResult:
    """``cnnlab export``: the model at ``spec`` (see :func:`resolve_model`) as ``format`` at ``out``
    (default: ``<model>.onnx`` / ``<model>.safetensors`` in the current folder)."""
    format = format.lower() if isinstance(format, str) else format
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}; choose {' or '.join(FORMATS)}")
    model = resolve_model(spec, weights, weights_from, **options)
    card: ModelCard = model.model_card
    out = Path(out) if out else Path(f"{card.model}.{format}")
    if out.suffix.lower() in {f".{f}" for f in FORMATS} and out.suffix.lower() != f".{format}":
        raise UsageError(f"{out} names a .{out.suffix[1:]} file but --format is {format}; match the two")
    if format == "onnx":
        return export_onnx(model, out, card, opset, dynamic_batch, overwrite)
    refuse_folder(out, f"{card.model}.safetensors")
    start = time.perf_counter()
    save_model_file(model, card, out, overwrite)
    return ExportResult(out, "safetensors", time.perf_counter() - start)
