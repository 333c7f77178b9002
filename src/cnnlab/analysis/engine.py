"""The tracing engine behind :func:`cnnlab.analysis.summarize`.

One forward pass runs under a :class:`torch.overrides.TorchFunctionMode`, so every tensor operation is
seen, whether a module calls it (``nn.Conv2d`` -> ``conv2d``) or the forward writes it (``F.relu``,
``torch.cat``, ``x + y``). Module forward hooks keep a stack of the modules being run, which names each
operation. By default the pass runs on the meta device: shapes propagate, no arithmetic is done, and the
caller's weights are neither read nor touched (a meta copy of each parameter stands in for it).

Each operation becomes one :class:`~cnnlab.analysis.report.LayerRow`: its output shape, the parameters
it consumes (first use only, so shared weights count once), its multiply-accumulates (convolution,
linear, matrix products), its other operations (normalisation, activation, pooling, element-wise), the
activation memory it allocates (views and in-place results allocate nothing), and the jump and
receptive field of its output, carried from tensor to tensor along the real graph (through a
concatenation or an addition the largest incoming field wins).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnlab.analysis.receptive import field_step
from cnnlab.analysis.report import LayerRow
from cnnlab.models.layers import NORM_OPS, ShapeOnlyNorm

# Operation names (as ``func.__name__``, in-place "_" and dunder underscores stripped) by category.
CONV = {"conv1d", "conv2d", "conv3d"}
CONV_TRANSPOSE = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
MATMUL = {"matmul", "mm", "bmm", "addmm", "baddbmm"}
POOL = {"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "lp_pool2d"}
ADAPTIVE_POOL = {
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
}
NORM = NORM_OPS
ACTIVATION = {
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "gelu",
    "silu",
    "mish",
    "sigmoid",
    "tanh",
    "hardtanh",
    "hardswish",
    "hardsigmoid",
    "softmax",
    "log_softmax",
    "prelu",
}
ELEMENTWISE = {"add", "sub", "mul", "div", "radd", "rsub", "rmul", "truediv", "rtruediv", "iadd", "imul"}
NORM_MODULES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
# Bookkeeping that is not computation: no row.
IGNORED = {
    "get",
    "set",
    "dim",
    "size",
    "numel",
    "detach",
    "requires_grad",
    "is_contiguous",
    "len",
    "ndimension",
}
# Positional parameter names of the sliding-window builtins (their signatures are not introspectable).
WINDOW_ARGS = {
    "conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "max_pool": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    "lp_pool": ("input", "norm_type", "kernel_size", "stride", "ceil_mode"),
}


def op_name(func: Callable) -> str:
    """``F.relu``, ``Tensor.relu_`` and ``Tensor.__add__`` -> ``relu``, ``relu``, ``add``."""
    return getattr(func, "__name__", type(func).__name__).strip("_")


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _per_axis(value: Any, axes: int, default: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * axes
    if isinstance(value, int):
        return (value,) * axes
    values = tuple(int(v) for v in value)
    return values * axes if len(values) == 1 else values


@dataclass
class Field:
    """Jump and receptive field of one tensor, per spatial axis (``global_`` once the axes are flattened)."""

    jump: tuple[int, ...]
    field: tuple[int, ...]

    @staticmethod
    def widest(fields: Sequence[Field]) -> Field | None:
        """The rule through concatenation and addition: per axis, the largest incoming field and jump."""
        if not fields:
            return None
        axes = min(len(f.field) for f in fields)
        return Field(
            tuple(max(f.jump[a] for f in fields) for a in range(axes)),
            tuple(max(f.field[a] for f in fields) for a in range(axes)),
        )

    def through(self, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> Field:
        """``r_out = r_in + d(k - 1) j_in``, ``j_out = j_in s`` on each axis (:func:`field_step`)."""
        steps = [field_step(*axis) for axis in zip(self.jump, self.field, kernel, stride, dilation)]
        return Field(tuple(j for j, _ in steps), tuple(r for _, r in steps))


@dataclass
class Attempt:
    """The operation being run, kept so a failure can say where and on what it happened."""

    module_path: str
    module_type: str
    op: str
    inputs: list[tuple[int, ...]]
    weight: tuple[int, ...] | None
    groups: int = 1


@dataclass
class _Frame:
    path: str
    module: nn.Module  # the module whose forward runs (the model itself for the root)
    leaf: bool
    key: int  # id of the object whose __call__ pushed this frame
    ops: int = 0


class Tracer(TorchFunctionMode):
    """Records one :class:`LayerRow` per tensor operation run inside the traced model's forward."""

    def __init__(self, model: nn.Module, params: dict[int, tuple[str, bool]]) -> None:
        super().__init__()
        self.modules = {id(m): (name, m) for name, m in model.named_modules()}
        self.params = params  # id(tensor) -> (parameter name, trainable)
        self.seen_params: set[int] = set()
        self.stack: list[_Frame] = []
        self.fields: dict[int, tuple[torch.Tensor, Field]] = {}
        self.rows: list[LayerRow] = []
        self.used_names: dict[str, int] = {}
        self.attempt: Attempt | None = None
        # set for meta tracing: normalisation need not run its kernels (no batch check: probes use batch 1)
        self.shapes_only: ShapeOnlyNorm | None = None
        self.depth_types: dict[str, str] = {name: type(m).__name__ for name, m in model.named_modules()}

    # --- module stack -------------------------------------------------------------------------------
    def add_root(self, wrapper: nn.Module, model: nn.Module) -> None:
        """A wrapper that calls one of ``model``'s methods stands for the model itself (the root, "")."""
        self.modules[id(wrapper)] = ("", model)

    def _pre_hook(self, module: nn.Module, args: Any) -> None:
        entry = self.modules.get(id(module))
        if entry is not None:
            name, owner = entry
            self.stack.append(_Frame(name, owner, not any(True for _ in owner.children()), id(module)))

    def _post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self.stack or self.stack[-1].key != id(module):
            return
        frame = self.stack.pop()
        if frame.leaf and frame.ops and self.rows:
            # A leaf module that skipped its own computation (e.g. a batch norm returning empty_like on
            # meta): its parameters and its normalisation work still belong to its (last) row.
            row = self.rows[-1]
            missed = [t for t in module.parameters(recurse=False) if id(t) in self.params]
            counts = self._take_params(missed)
            for attr, n in zip(("weight_params", "bias_params", "trainable_params", "frozen_params"), counts):
                setattr(row, attr, getattr(row, attr) + n)
            if isinstance(frame.module, NORM_MODULES) and row.kind == "shape":
                row.kind, row.other_ops = "norm", row.other_ops + 2 * math.prod(row.output_shape)

    def hooks(self) -> list[Any]:
        """Install the global module hooks (the caller removes the returned handles)."""
        return [
            nn.modules.module.register_module_forward_pre_hook(self._pre_hook),
            nn.modules.module.register_module_forward_hook(self._post_hook),
        ]

    def start(self, x: torch.Tensor) -> None:
        """The network input: ``j = r = 1`` on each spatial axis."""
        axes = x.dim() - 2
        self.fields[id(x)] = (x, Field((1,) * axes, (1,) * axes))

    # --- operations ---------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D401 - torch protocol
        kwargs = kwargs or {}
        name = op_name(func)
        inputs = [t for t in _tensors(args) if t is not None] + list(_tensors(kwargs))
        if not self.stack or name in IGNORED or not inputs:
            return func(*args, **kwargs)
        frame = self.stack[-1]
        weight = next((t for t in inputs if id(t) in self.params), None)
        self.attempt = Attempt(
            frame.path,
            type(frame.module).__name__,
            name,
            [tuple(t.shape) for t in inputs if id(t) not in self.params],
            tuple(weight.shape) if weight is not None else None,
            int((dict(zip(WINDOW_ARGS["conv"], args)) | kwargs).get("groups", 1)) if name in CONV else 1,
        )
        out = self.shapes_only.stand_in(func, args, kwargs) if self.shapes_only is not None else None
        if out is None:
            out = func(*args, **kwargs)
        result = next(_tensors(out), None)
        if isinstance(result, torch.Tensor):
            self._record(frame, name, args, kwargs, inputs, result)
        return out

    def _row_name(self, frame: _Frame, op: str) -> tuple[str, str]:
        """A leaf module's first operation is named after the module; others ``module.op``; repeats ``#2``."""
        frame.ops += 1
        if frame.leaf and frame.ops == 1:
            base, kind = frame.path or op, type(frame.module).__name__
        else:
            base, kind = (f"{frame.path}.{op}" if frame.path else op), op
        count = self.used_names.get(base, 0) + 1
        self.used_names[base] = count
        return (base if count == 1 else f"{base}#{count}"), kind

    def _take_params(self, tensors: Sequence[torch.Tensor]) -> tuple[int, int, int, int]:
        """(weights, biases, trainable, frozen) elements of the parameters among ``tensors`` not counted yet."""
        weights = biases = trainable = frozen = 0
        for t in tensors:
            if id(t) in self.params and id(t) not in self.seen_params:
                self.seen_params.add(id(t))
                pname, requires_grad = self.params[id(t)]
                n = t.numel()
                if pname.rsplit(".", 1)[-1].startswith("bias"):
                    biases += n
                else:
                    weights += n
                if requires_grad:
                    trainable += n
                else:
                    frozen += n
        return weights, biases, trainable, frozen

    def _record(self, frame, name, args, kwargs, inputs, out) -> None:
        row_name, row_type = self._row_name(frame, name)
        weights, biases, trainable, frozen = self._take_params(inputs)
        data = [t for t in inputs if id(t) not in self.params]
        macs, other, kind, fld = self._cost_and_field(name, args, kwargs, data, out)
        allocates = not any(out is t for t in inputs) and out._base is None
        elements = out.numel() if allocates else 0
        if fld is not None:
            self.fields[id(out)] = (out, fld)
        self.rows.append(
            LayerRow(
                name=row_name,
                type=row_type,
                kind=kind,
                output_shape=tuple(out.shape),
                weight_params=weights,
                bias_params=biases,
                trainable_params=trainable,
                frozen_params=frozen,
                macs=macs,
                other_ops=other,
                activation_elements=elements,
                activation_bytes=elements * out.element_size(),
                jump=fld.jump if fld is not None and fld.jump else None,
                receptive_field=fld.field if fld is not None and fld.field else None,
                paper_params=weights if kind in ("conv", "linear") else 0,
            )
        )

    def _field_of(self, tensors: Sequence[torch.Tensor]) -> Field | None:
        return Field.widest([self.fields[id(t)][1] for t in tensors if id(t) in self.fields])

    def _cost_and_field(self, name, args, kwargs, data, out) -> tuple[int, int, str, Field | None]:
        """(MACs, other operations, kind, output field) of one operation; conventions in docs/analysis.md."""
        x = data[0] if data else out
        incoming = self._field_of(data)
        axes = max(out.dim() - 2, 0)
        if name in CONV or name in POOL:
            family = "conv" if name in CONV else name.split("_pool")[0] + "_pool"
            bound = dict(zip(WINDOW_ARGS[family], args)) | kwargs
            if name in CONV:
                weight = bound["weight"]
                kernel = tuple(weight.shape[2:])
                stride = _per_axis(bound.get("stride"), axes, 1)
                dilation = _per_axis(bound.get("dilation"), axes, 1)
                # k_h k_w (c_in / groups) c_out h_out w_out: the weight holds the first four factors
                macs = weight.numel() * out.numel() // out.shape[1]
                fld = incoming.through(kernel, stride, dilation) if incoming else None
                return macs, 0, "conv", fld
            kernel = _per_axis(bound["kernel_size"], axes, 1)
            stride = _per_axis(bound.get("stride") or bound["kernel_size"], axes, 1)
            dilation = _per_axis(bound.get("dilation"), axes, 1)
            fld = incoming.through(kernel, stride, dilation) if incoming else None
            return 0, math.prod(kernel) * out.numel(), "pool", fld
        if name in ADAPTIVE_POOL:
            # an adaptive window over n_in -> n_out positions spans ceil(n_in / n_out), steps floor(n_in / n_out)
            n_in, n_out = x.shape[2:], out.shape[2:]
            kernel = tuple(-(-a // b) for a, b in zip(n_in, n_out))
            stride = tuple(max(a // b, 1) for a, b in zip(n_in, n_out))
            fld = incoming.through(kernel, stride, (1,) * axes) if incoming else None
            return 0, x.numel(), "pool", fld
        if name in CONV_TRANSPOSE:
            weight = next(t for t in _tensors(args) if id(t) in self.params or t is not x)
            return weight.numel() * x.numel() // x.shape[1], 0, "conv", None
        if name == "linear":
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            return weight.numel() * (out.numel() // out.shape[-1]), 0, "linear", self._flattened(incoming, x)
        if name in MATMUL:
            inner = data[-1].shape[-2] if data[-1].dim() > 1 else data[-1].shape[0]
            return out.numel() * inner, 0, "linear", self._flattened(incoming, x)
        if name in NORM:
            per_element = int(args[1]) if name == "local_response_norm" else 2  # window sum, or scale+shift
            return 0, per_element * out.numel(), "norm", incoming
        if name in ACTIVATION:
            return 0, out.numel(), "activation", incoming
        if name in ELEMENTWISE:
            return 0, out.numel(), "elementwise", incoming
        # shape operations (cat, view, flatten, dropout ...): no arithmetic counted
        if out.dim() < x.dim() and x.dim() > 2 and incoming is not None:
            return 0, 0, "shape", self._flattened(incoming, x)
        same_grid = out.dim() == x.dim() and out.shape[2:] == x.shape[2:]
        return 0, 0, "shape", incoming if same_grid or name == "cat" else None

    @staticmethod
    def _flattened(incoming: Field | None, x: torch.Tensor) -> Field | None:
        """Flattening the spatial axes: every output sees the whole map, a window ``k = s = n_in``."""
        if incoming is None or x.dim() < 3 or len(incoming.field) != x.dim() - 2:
            return incoming
        n = tuple(x.shape[2:])
        return incoming.through(n, n, (1,) * len(n))
