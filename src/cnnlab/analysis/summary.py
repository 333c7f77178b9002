"""``summarize(model, input_size)``: the layer-by-layer account of a network, and clear failures.

A forward pass that fails on the given input is reported as the layer it failed in, the shape that
arrived there, the shape that layer expects, and input sizes that would fit (lecture 10's
"size mismatch, m1: [64 x 320], m2: [100 x 10]" becomes one readable line).
"""

from __future__ import annotations

import inspect
import math
import os
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from cnnlab.analysis.engine import NORM, Attempt, Tracer
from cnnlab.analysis.report import Summary, Totals
from cnnlab.errors import CnnlabError, InputSizeError, UsageError, check_positive
from cnnlab.models.layers import (
    BoundCall,
    ShapeOnlyNorm,
    first_conv_in_channels,
    pair,
    smallest_input_size,
    too_small_error,
)

DEVICES = ("meta", "cpu")


def _model_label(model: nn.Module) -> str:
    return getattr(model, "model_name", type(model).__name__)


#: the most bytes one tensor can hold: torch computes storage sizes in signed 64-bit integers
MAX_TENSOR_BYTES = 2**63 - 1


def _input_shape(input_size: Sequence[int], batch_size: int, dtype: torch.dtype) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_size)
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"input size must be three positive numbers C, H, W, got {input_size!r}")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    nbytes = math.prod((batch_size, *shape)) * torch.empty((), dtype=dtype).element_size()
    if nbytes > MAX_TENSOR_BYTES:
        raise UsageError(
            f"input {'x'.join(map(str, shape))} is too large: a batch of {batch_size} needs {nbytes:.3g} bytes, "
            f"more than one tensor can hold (2^63 - 1); give a smaller input size"
        )
    return (batch_size, *shape)


def _too_large(model: nn.Module, shape: Sequence[int], attempt: Attempt | None) -> UsageError:
    """The error for an input whose activations overflow torch's 64-bit storage size on the way."""
    where = f" at layer {attempt.module_path or '<top>'} ({attempt.op})" if attempt is not None else ""
    return UsageError(
        f"input {'x'.join(map(str, shape[1:]))} is too large for {_model_label(model)}: an activation{where} "
        f"would need more than 2^63 - 1 bytes; give a smaller input size"
    )


def _check_fits_in_memory(model: nn.Module, shape: tuple[int, ...], method: str, dtype: torch.dtype) -> None:
    """On cpu, refuse an input whose largest single activation exceeds the memory available now.

    The meta trace gives every activation's size for free; the largest one must exist at some point of
    the real pass, so a run that cannot hold it cannot finish (the rest may be freed as it goes). A
    forward that needs values (``if x.sum() > 0``) cannot run on meta, which is why it is traced on cpu:
    then the input itself is the one size known beforehand.
    """
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux-like: nothing to check against
        return
    largest = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    tracer = Tracer(model, {})
    try:
        _trace(model, torch.zeros(shape, dtype=dtype, device="meta"), "meta", method, tracer, dtype, False)
    except Exception:  # noqa: BLE001 - any failure on meta: the real pass on cpu will say what it is
        pass
    else:
        largest = max([largest, *(r.activation_bytes for r in tracer.rows)])
    if largest > available:
        raise UsageError(
            f"input {'x'.join(map(str, shape[1:]))} is too large to run on cpu: one activation needs "
            f"{largest / 2**30:,.1f} GiB and {available / 2**30:,.1f} GiB of memory is available; "
            f"give a smaller input or trace it on the meta device"
        )


def _check_one_input(model: nn.Module, method: str) -> None:
    """Refuse a ``method`` that cannot take one tensor (``forward(self, x, y)``): the trace passes the image alone."""
    try:
        signature = inspect.signature(getattr(model, method))
    except (TypeError, ValueError):  # no signature to read (a builtin): the call itself will say
        return
    try:
        signature.bind(None)
    except TypeError:
        raise CnnlabError(
            f"{_model_label(model)}'s {method}{signature} needs more than one input, and the trace passes one "
            f"image batch; analyse a module whose {method} takes the image alone (wrap this one in it)"
        ) from None


def _materialize_lazy(model: nn.Module, input_size: Sequence[int], method: str) -> None:
    """Give lazy layers (``nn.LazyLinear``, ``nn.LazyConv2d``, as d2l.ai's AlexNet and VGG use) their sizes.

    They take their shapes from a first forward pass, which a meta trace cannot be: one real pass where
    their parameters live (batch 1, zeros of ``input_size``, no grad, evaluation mode, so that no running
    statistics move), as the user's own training code would do before anything else.
    """
    lazy = [(n, t) for n, t in (*model.named_parameters(), *model.named_buffers()) if is_lazy(t)]
    if not lazy:
        return
    layers = sorted({type(m).__name__ for m in model.modules() if isinstance(m, LazyModuleMixin)})
    x = torch.zeros((1, *input_size), dtype=lazy[0][1].dtype, device=lazy[0][1].device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            getattr(model, method)(x)
    except MemoryError:
        raise
    except Exception as err:  # the pass that sizes them failed: there are no shapes to trace with
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        error = UsageError if isinstance(err, SHAPE_ERRORS) else CnnlabError
        raise error(
            f"{_model_label(model)} has lazy layers ({', '.join(layers)}), sized by a first forward pass, and "
            f"that pass failed on input {'x'.join(map(str, input_size))}: {type(err).__name__}{raised_at(err)}: "
            f"{detail}; give an input size the model takes, or write those layers with their sizes "
            f"(nn.Conv2d, nn.Linear)"
        ) from err
    finally:
        for m, training in modes:
            m.training = training


def _stand_ins(
    model: nn.Module, device: str, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], dict[int, tuple[str, bool]]]:
    """Meta copies of parameters and buffers (``device="meta"``), or the real ones, with their names."""
    state: dict[str, torch.Tensor] = {}
    params: dict[int, tuple[str, bool]] = {}
    for name, p in model.named_parameters():
        t = (
            torch.empty_like(p, device="meta", dtype=dtype if p.is_floating_point() else p.dtype)
            if device == "meta"
            else p
        )
        state[name] = t
        params[id(t)] = (name, p.requires_grad)
    if device == "meta":
        for name, b in model.named_buffers():
            state[name] = torch.empty_like(
                b, device="meta", dtype=dtype if b.is_floating_point() else b.dtype
            )
    return state, params


def _shapes_only() -> ShapeOnlyNorm:
    """Every normalisation shape-only on meta, without batch norm's batch check: the probes use batch 1."""
    return ShapeOnlyNorm(NORM, verify_batch=False)


def _run(
    model: nn.Module, x: torch.Tensor, device: str, method: str, tracer: Tracer | None, dtype: torch.dtype
):
    state, params = _stand_ins(model, device, dtype)
    wrapper = BoundCall(model, getattr(model, method))
    if tracer is not None:
        tracer.params = params
        tracer.shapes_only = _shapes_only() if device == "meta" else None
        tracer.add_root(wrapper, model)
    if device == "meta":
        state = {f"inner.{k}": v for k, v in state.items()}
        call = lambda: torch.func.functional_call(wrapper, state, (x,), strict=False)  # noqa: E731
    else:
        call = lambda: wrapper(x)  # noqa: E731
    if tracer is None:
        with _shapes_only(), torch.no_grad():
            return call()
    handles = tracer.hooks()
    try:
        with tracer, torch.no_grad():
            return call()
    finally:
        for h in handles:
            h.remove()


def _trace(
    model: nn.Module,
    x: torch.Tensor,
    device: str,
    method: str,
    tracer: Tracer,
    dtype: torch.dtype,
    train_mode: bool,
) -> None:
    """One traced pass of ``model`` on ``x`` into ``tracer``, in ``train_mode``; the model's modes restored."""
    tracer.start(x)
    modes = [(m, m.training) for m in model.modules()]
    model.train(train_mode)
    try:
        _run(model, x, device, method, tracer, dtype)
    finally:
        for m, training in modes:
            m.training = training


def summarize(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    batch_size: int = 1,
    dtype: torch.dtype = torch.float32,
    device: str = "meta",
    method: str = "forward",
    optimizer_states: int = 1,
    train_mode: bool = False,
) -> Summary:
    """Trace one forward pass of ``model`` on a ``batch_size x C x H x W`` input and account for every operation.

    ``device="meta"`` (default) propagates shapes without arithmetic and without reading the weights;
    ``"cpu"`` runs for real (for models whose forward needs values). ``method`` is the bound method to
    trace (``"forward_aux"`` includes auxiliary heads). ``optimizer_states`` sizes the training-memory
    estimate (1 for SGD with momentum, 2 for Adam). A forward pass that fails raises a
    :class:`UsageError` naming the layer, the shape that arrived, what it expects and the inputs that fit.
    """
    if device not in DEVICES:
        from cnnlab.errors import unknown_choice

        raise unknown_choice("device", device, DEVICES)
    if not hasattr(model, method):
        raise UsageError(f"{_model_label(model)} has no method {method!r} to trace")
    shape = _input_shape(input_size, batch_size, dtype)
    check_positive("optimizer states (--optimizer-states)", optimizer_states, allow_zero=True)
    _check_one_input(model, method)
    _materialize_lazy(model, shape[1:], method)
    if device == "cpu":
        own = next((t for t in model.parameters() if t.is_floating_point()), None)
        if own is not None and own.is_meta:
            raise UsageError(
                "this model's weights are on the meta device: build it on cpu to trace it there "
                "(the CLI's --device cpu does), or trace it with device='meta'"
            )
        if own is not None and own.dtype != dtype:
            raise UsageError(
                f"the model's weights are {own.dtype}; on cpu trace with that dtype (or on meta)"
            )
        _check_fits_in_memory(model, shape, method, dtype)
    x = torch.zeros(shape, dtype=dtype, device=device)
    tracer = Tracer(model, {})
    try:
        _trace(model, x, device, method, tracer, dtype, train_mode)
    except InputSizeError as err:  # the model's own check: add the sizes that fit as built
        raise UsageError(f"{err}{_fitting_as_built(model, shape[1:], method)}") from err
    except CnnlabError:
        raise
    except MemoryError:
        raise
    except (
        Exception
    ) as err:  # the model's code raised (AttributeError, TypeError ... too): one line saying where
        if "overflow" in str(err).lower():  # torch: "Storage size calculation overflowed with sizes=..."
            raise _too_large(model, shape, tracer.attempt) from err
        raise explain_failure(model, shape[1:], tracer.attempt, err) from err
    rows = tracer.rows
    all_params = list(model.parameters())
    used = sum(r.params for r in rows)
    total = sum(p.numel() for p in all_params)
    totals = Totals(
        params=total,
        trainable_params=sum(p.numel() for p in all_params if p.requires_grad),
        frozen_params=sum(p.numel() for p in all_params if not p.requires_grad),
        weight_params=sum(r.weight_params for r in rows),
        bias_params=sum(r.bias_params for r in rows),
        unused_params=total - used,
        macs=sum(r.macs for r in rows),
        other_ops=sum(r.other_ops for r in rows),
        activation_elements=sum(r.activation_elements for r in rows),
        activation_bytes=sum(r.activation_bytes for r in rows),
        param_bytes=sum(
            p.numel() * (x.element_size() if p.is_floating_point() else p.element_size()) for p in all_params
        ),
        batch_size=batch_size,
        optimizer_states=optimizer_states,
    )
    return Summary(
        model=_model_label(model),
        input_size=tuple(shape[1:]),
        dtype=str(dtype).replace("torch.", ""),
        device=device,
        rows=rows,
        totals=totals,
        module_types=tracer.depth_types,
    )


def _runs(model: nn.Module, shape: tuple[int, ...], method: str = "forward") -> bool:
    try:
        _probe(model, method)(torch.zeros((1, *shape), device="meta"))
        return True
    except RuntimeError:
        return False


def _probe(model: nn.Module, method: str = "forward") -> Callable[[torch.Tensor], torch.Tensor]:
    """One untraced meta pass of ``model``'s ``method``, for the size probes: whatever the model's code raises
    (a TypeError as well as torch's RuntimeError) is a :class:`RuntimeError`, which they read as "does not run"."""
    wrapper = BoundCall(model, getattr(model, method))

    def run(x: torch.Tensor) -> torch.Tensor:
        try:
            return _run(wrapper, x, "meta", "forward", None, x.dtype)
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - the probe's answer is only "it did not run"
            raise RuntimeError(f"{type(err).__name__}: {err}") from err

    return run


def fitting_sizes(
    model: nn.Module,
    in_chans: int,
    start: int,
    limit: int,
    around: int | None = None,
    max_run: int = 64,
    method: str = "forward",
) -> tuple[int, int, bool] | None:
    """The first run of square sides in ``[start, limit]`` on which ``model`` runs (meta device).

    Returns ``(first, last, open_ended)``; ``open_ended`` when the run goes on past ``max_run`` sides
    (networks with global pooling fit every size above their smallest). ``around`` (the size a head
    was built for) is tried first, and the run grown from it. ``None`` if nothing fits.
    """

    def fits(side: int) -> bool:
        return _runs(model, (in_chans, side, side), method)

    if around is not None and fits(around):
        first = around
        while first - 1 >= max(start, 1) and fits(first - 1):
            first -= 1
    else:
        first = next((side for side in range(max(start, 1), limit + 1) if fits(side)), None)
    if first is None:
        return None
    last = max(first, around or first)
    while last + 1 <= limit and last - first < max_run and fits(last + 1):
        last += 1
    return first, last, last - first >= max_run


def _through_features(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A probe for :func:`smallest_input_size` that passes where ``model`` gets through its features: it runs,
    or fails only at a linear layer given at least the features it expects (a hard-coded head past its band).

    Monotone in the input side where "runs" alone is not: a hard-coded head fits a band of sizes, which
    the probe's doubling sizes can step over (lecture 10's fc 320 runs on 28 to 31 only).
    """

    def run(x: torch.Tensor) -> torch.Tensor:
        tracer = Tracer(model, {})
        try:
            _trace(model, x, "meta", "forward", tracer, x.dtype, False)
        except Exception as err:  # noqa: BLE001 - whatever stopped it, the probe asks only where
            got = tracer.attempt
            if got is None or got.op != "linear" or not got.weight or not got.inputs:
                raise RuntimeError(f"not through the features: {err}") from err
            if got.inputs[0][-1] < got.weight[-1]:
                raise RuntimeError(f"the head gets fewer features than it takes: {err}") from err
        return x

    return run


def _fitting_as_built(model: nn.Module, input_size: Sequence[int], method: str) -> str:
    """``"; inputs that fit as built: 1x28x28 to 1x31x31"`` for a head sized from the input, or ``""``."""
    built = getattr(model, "img_size", None)
    if built is None:
        return ""
    c, side = input_size[0], pair(built)[0]
    found = fitting_sizes(model, c, 1, 2 * side, around=side, method=method)
    if found is None:
        return ""
    first, last, _ = found
    return f"; inputs that fit as built: {c}x{first}x{first}" + (
        f" to {c}x{last}x{last}" if last > first else ""
    )


def _expected(attempt: Attempt) -> str | None:
    w = attempt.weight
    if w is None:
        return None
    if attempt.op == "linear":
        return f"{w[1]} input features"
    if attempt.op.startswith("conv") and len(w) > 2:
        channels = attempt.inputs[0][1] if attempt.inputs and len(attempt.inputs[0]) > 1 else None
        if channels == w[1] * attempt.groups:  # channels fit: the map is smaller than the kernel
            return f"a map no smaller than its {'x'.join(map(str, w[2:]))} kernel after padding"
        return f"{w[1] * attempt.groups} input channels (weight {'x'.join(map(str, w))}, groups {attempt.groups})"
    return f"a shape compatible with weight {'x'.join(map(str, w))}"


#: what torch raises for an input that does not fit (a size, the channels); other exceptions are the code's own
SHAPE_ERRORS = (RuntimeError, ValueError, IndexError)


def raised_at(err: BaseException) -> str:
    """``" at mynet.py:45"``: the innermost line of ``err``'s traceback in neither torch, cnnlab nor Python's
    own library (the user's model file), or ``""`` when every line is in those (a registry model)."""
    libraries = [
        Path(torch.__file__).parent,
        Path(__file__).parents[1],
        Path(sysconfig.get_paths()["stdlib"]),
    ]
    libraries = [lib.resolve() for lib in libraries]
    for frame, line in reversed(list(traceback.walk_tb(err.__traceback__))):
        filename = frame.f_code.co_filename
        path = Path(filename).resolve()
        if not filename.startswith("<") and not any(path.is_relative_to(lib) for lib in libraries):
            shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
            return f" at {shown}:{line}"
    return ""


def explain_failure(
    model: nn.Module, input_size: Sequence[int], attempt: Attempt | None, err: Exception
) -> CnnlabError:
    """The one-line error for a forward pass that failed on ``input_size`` (C, H, W): a :class:`UsageError`
    when the input does not fit (its size or channels), else a :class:`CnnlabError` (exit 1) saying that the
    model's own code raised, whatever the size."""
    c, h, w = input_size
    name = _model_label(model)
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "meta tensor" in detail:  # a value read on meta (Tensor.item()): no input size would help
        return UsageError(
            f"{name}'s forward reads tensor values{raised_at(err)} ({detail}), which the meta trace does not "
            f"compute; trace it for real with --device cpu (device='cpu')"
        )
    if not isinstance(err, SHAPE_ERRORS):  # AttributeError, TypeError, NameError ...: not about the input
        return CnnlabError(
            f"{name}'s forward raised {type(err).__name__}{raised_at(err)}: {detail}; the error is in the model's code"
        )
    where = ""
    if attempt is not None:
        arrived = ", ".join("x".join(map(str, s)) for s in attempt.inputs) or "?"
        layer = f"{attempt.module_path or '<top>'} ({attempt.module_type}, {attempt.op})"
        expected = _expected(attempt)
        where = f" layer {layer} received {arrived}" + (f" but expects {expected}" if expected else "")
    features = getattr(model, "forward_features", None)
    probe = BoundCall(model, features) if features is not None else model
    smallest = smallest_input_size(_probe(probe), c)
    built_for = getattr(model, "img_size", None)
    built = pair(built_for) if built_for is not None else (0, 0)
    limit = max(2 * max(h, w), 2 * max(built), 64)
    band = smallest is None
    if band:  # a head with a hard-coded width (lecture 10's fc 320 -> 10) fits a band of sizes only
        smallest = smallest_input_size(_through_features(model), c)
    if smallest is None:
        takes = first_conv_in_channels(model)
        if takes is None or takes == c:  # neither the size nor the channels: the model's code itself
            return CnnlabError(
                f"{name}'s forward raised {type(err).__name__}{raised_at(err)} on input {c}x{h}x{w}, and on every "
                f"other size tried, so not because of the input: {detail}; the error is in the model's code"
            )
        return UsageError(f"{name} cannot run on input {c}x{h}x{w}:{where} ({detail})")
    found = fitting_sizes(model, c, smallest, max(limit, smallest + 64), around=built[0] or None)
    if found is None and band:  # through the features, but no size gives the head its width
        return UsageError(
            f"{name} cannot run on input {c}x{h}x{w}:{where}; no square input up to {limit} fits"
        )
    first = found[0] if found else smallest  # heads sized from the input can need more than the features
    rebuild = ""
    if built_for is not None:
        rebuild = f" (it was built for {'x'.join(map(str, built))}; build it with img_size={h if h == w else (h, w)})"
    if first > min(h, w):
        also = ""
        if built_for is not None and smallest < first:
            also = f" ({c}x{smallest}x{smallest} if built with img_size={smallest})"
        too_small = too_small_error(input_size, name, first, where)
        return UsageError(f"{too_small}{rebuild if smallest <= min(h, w) else also}")
    if found is None:
        return UsageError(
            f"{name} cannot run on input {c}x{h}x{w}:{where}; no square input up to {limit} fits"
        )
    first, last, open_ended = found
    hint = f"inputs that fit: {c}x{first}x{first}"
    if open_ended:
        hint += " and larger"
    elif last > first:
        hint += f" to {c}x{last}x{last}"
    return UsageError(f"{name} cannot run on input {c}x{h}x{w}:{where}; {hint}{rebuild}")
