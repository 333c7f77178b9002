"""Output size, jump and receptive field: the recurrences of the survey slides (004, "Feature map size
and receptive field size"), and a small layer language to evaluate them by hand.

For one axis, a layer with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` maps

* ``n_out = floor((n_in + 2p - d(k - 1) - 1) / s) + 1``  (``d = 1``: ``floor((n_in + 2p - k) / s) + 1``)
* ``j_out = j_in * s``
* ``r_out = r_in + (d(k - 1)) * j_in``

starting from ``j = r = 1`` at the input. Two 3x3 stride-2 pad-1 convolutions give ``r = 3, j = 2`` then
``r = 7, j = 4``, as on the slide.

Layer language (``cnnlab rf "conv3s2p1,pool2s2"``): comma-separated layers, each ``conv`` or ``pool``
followed by the kernel size, then optional ``s<stride>``, ``p<padding>``, ``d<dilation>`` in any order.
Defaults: ``conv``: stride 1, padding 0; ``pool``: stride = kernel, padding 0; dilation 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cnnlab.errors import UsageError


@dataclass(frozen=True)
class Window:
    """One sliding-window layer (convolution or pooling) along one axis."""

    kind: str  # "conv" or "pool"
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1

    @property
    def effective_kernel(self) -> int:
        """Span of the dilated kernel, ``d(k - 1) + 1``."""
        return self.dilation * (self.kernel - 1) + 1

    def spec(self) -> str:
        """The layer written back in the layer language."""
        text = f"{self.kind}{self.kernel}s{self.stride}p{self.padding}"
        return text + (f"d{self.dilation}" if self.dilation != 1 else "")


@dataclass(frozen=True)
class FieldStep:
    """Output size (``None`` when no input size was given), jump and receptive field after one layer."""

    layer: Window
    size: int | None
    jump: int
    receptive_field: int


_TOKEN = re.compile(r"(conv|pool)(\d+)((?:[spd]\d+)*)")
_OPTION = re.compile(r"([spd])(\d+)")


def parse_layers(text: str) -> list[Window]:
    """Parse ``"conv3s2p1,pool2"`` into :class:`Window` records; a malformed layer is a :class:`UsageError`."""
    layers = []
    for raw in text.split(","):
        token = raw.strip().lower()
        match = _TOKEN.fullmatch(token)
        if not match:
            raise UsageError(
                f"cannot read layer {raw.strip()!r}: write conv<k> or pool<k> with optional s<stride>, "
                "p<padding>, d<dilation>, e.g. 'conv3s2p1,pool2s2'"
            )
        kind, kernel = match.group(1), int(match.group(2))
        fields = _OPTION.findall(match.group(3))
        keys = [key for key, _ in fields]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:  # which one was meant is a guess: the layer must say it once
            raise UsageError(f"layer {raw.strip()!r} gives {', '.join(repeated)} twice: give each field once")
        options = {key: int(value) for key, value in fields}
        stride = options.get("s", kernel if kind == "pool" else 1)
        window = Window(kind, kernel, stride, options.get("p", 0), options.get("d", 1))
        if window.kernel < 1 or window.stride < 1 or window.dilation < 1:
            raise UsageError(f"layer {raw.strip()!r}: kernel, stride and dilation must be at least 1")
        if kind == "pool" and 2 * window.padding > window.effective_kernel:
            raise UsageError(
                f"layer {raw.strip()!r}: a pooling's padding can be at most half its kernel "
                f"({window.effective_kernel // 2} here), as PyTorch requires: a window of padding alone has no input"
            )
        layers.append(window)
    return layers


def output_size(n_in: int, layer: Window) -> int:
    """``floor((n_in + 2p - d(k-1) - 1) / s) + 1``; a window larger than the padded input is a :class:`UsageError`."""
    span = n_in + 2 * layer.padding - layer.effective_kernel
    if span < 0:
        raise UsageError(
            f"{layer.spec()} needs an input of at least {layer.effective_kernel - 2 * layer.padding}, got {n_in}"
        )
    return span // layer.stride + 1


def field_step(jump: int, field: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """One layer of the recurrences on one axis: ``(j_in s, r_in + d(k - 1) j_in)``."""
    return jump * stride, field + dilation * (kernel - 1) * jump


def receptive_fields(layers: list[Window], size: int | None = None) -> list[FieldStep]:
    """Apply the recurrences layer by layer from ``j = r = 1`` (and ``n = size`` when given)."""
    steps, jump, field, n = [], 1, 1, size
    for layer in layers:
        jump, field = field_step(jump, field, layer.kernel, layer.stride, layer.dilation)
        n = output_size(n, layer) if n is not None else None
        steps.append(FieldStep(layer, n, jump, field))
    return steps
