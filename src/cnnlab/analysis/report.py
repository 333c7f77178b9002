"""The structured result of :func:`cnnlab.analysis.summarize` and its renderings (table, markdown, CSV, JSON)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class LayerRow:
    """One operation of the forward pass (or a group of them, see :meth:`Summary.at_depth`).

    ``macs`` counts multiply-accumulates of convolutions, linear layers and matrix products only;
    ``other_ops`` holds normalisation, activation, pooling and element-wise work. ``activation_*`` is the
    output the operation allocates (0 for views and in-place results). ``jump`` and ``receptive_field``
    are per spatial axis (height, width), ``None`` where the operation loses track of the input grid.
    ``paper_params`` are the weights of convolutions and linear layers only (no biases, no normalisation),
    as GoogLeNet's Table 1 and the VGG slide count them.
    """

    name: str
    type: str
    kind: str
    output_shape: tuple[int, ...]
    weight_params: int = 0
    bias_params: int = 0
    trainable_params: int = 0
    frozen_params: int = 0
    macs: int = 0
    other_ops: int = 0
    activation_elements: int = 0
    activation_bytes: int = 0
    jump: tuple[int, ...] | None = None
    receptive_field: tuple[int, ...] | None = None
    paper_params: int = 0

    @property
    def params(self) -> int:
        """Weights and biases this row uses first."""
        return self.weight_params + self.bias_params

    @property
    def depth(self) -> int:
        """Nesting level of the row's name (``features.conv1`` is 2)."""
        return len(self.name.split("."))


@dataclass
class Totals:
    """Whole-network figures for the batch summarised (``per_image`` divides by the batch size).

    FLOPs are always ``2 x macs`` (one multiply and one add per MAC) and labelled as such. Training memory
    per image is ``2 x activation_bytes / batch`` (every activation kept for backward plus its gradient);
    the fixed part is ``param_bytes x (2 + optimizer_states)`` (weights, gradients, optimiser state).
    """

    params: int
    trainable_params: int
    frozen_params: int
    weight_params: int
    bias_params: int
    unused_params: int
    macs: int
    other_ops: int
    activation_elements: int
    activation_bytes: int
    param_bytes: int
    batch_size: int
    optimizer_states: int = 1

    @property
    def flops(self) -> int:
        """FLOPs = 2 x MACs."""
        return 2 * self.macs

    @property
    def training_bytes_per_image(self) -> int:
        """Activations kept for backward and their gradients, per image."""
        return 2 * self.activation_bytes // self.batch_size

    @property
    def training_fixed_bytes(self) -> int:
        """Weights, their gradients and ``optimizer_states`` copies (1 for SGD momentum, 2 for Adam)."""
        return self.param_bytes * (2 + self.optimizer_states)

    def training_bytes(self, batch_size: int) -> int:
        """Estimated training memory at ``batch_size``: fixed part + batch x per-image part."""
        return self.training_fixed_bytes + batch_size * self.training_bytes_per_image


def _shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(map(str, shape)) if shape else "-"


def per_axis(value: tuple[int, ...] | None) -> str:
    """``(7, 7) -> '7'``, ``(7, 11) -> '7x11'`` (height x width), ``None -> '-'``."""
    if not value:
        return "-"
    return str(value[0]) if len(set(value)) == 1 else "x".join(map(str, value))


def human(value: float, unit: str = "", base: int = 1000) -> str:
    """``1_234_567 -> '1.23M'``; ``base=1024`` for memory, with the binary prefixes that say so
    (``12_845_056, "B", 1024 -> '12.25MiB'``: 12.85 MB in decimal units)."""
    binary = "i" if base == 1024 else ""
    for prefix in ("", "K", "M", "G", "T"):
        if abs(value) < base or prefix == "T":
            return f"{value:.0f}{unit}" if prefix == "" else f"{value:.2f}{prefix}{binary}{unit}"
        value /= base
    return str(value)


SUMMED = (
    "weight_params",
    "bias_params",
    "trainable_params",
    "frozen_params",
    "macs",
    "other_ops",
    "activation_elements",
    "activation_bytes",
    "paper_params",
)

COLUMNS = (
    ("layer", lambda r: r.name),
    ("type", lambda r: r.type),
    ("output", lambda r: _shape(r.output_shape)),
    ("weights", lambda r: f"{r.weight_params:,}"),
    ("biases", lambda r: f"{r.bias_params:,}"),
    ("frozen", lambda r: f"{r.frozen_params:,}"),
    ("MACs", lambda r: f"{r.macs:,}"),
    ("other ops", lambda r: f"{r.other_ops:,}"),
    ("act. elems", lambda r: f"{r.activation_elements:,}"),
    ("act. bytes", lambda r: human(r.activation_bytes, "B", 1024)),
    ("jump", lambda r: per_axis(r.jump)),
    ("RF", lambda r: per_axis(r.receptive_field)),
)


@dataclass
class Summary:
    """Per-operation rows and totals of one model on one input; render with ``to_*``."""

    model: str
    input_size: tuple[int, ...]
    dtype: str
    device: str
    rows: list[LayerRow]
    totals: Totals
    module_types: dict[str, str] = field(default_factory=dict, repr=False)

    def row(self, name: str) -> LayerRow:
        """The row called ``name`` (KeyError if none)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def at_depth(self, depth: int | None) -> list[LayerRow]:
        """Rows grouped to ``depth`` name levels: consecutive rows under one module become one row.

        Counts add up; the output shape, jump and receptive field are those of the group's last row.
        ``None`` keeps every row.
        """
        if depth is None:
            return list(self.rows)
        groups: list[LayerRow] = []
        for r in self.rows:
            key = ".".join(r.name.split(".")[:depth])
            if groups and groups[-1].name == key and r.depth > depth:
                g = groups[-1]
                for f in SUMMED:
                    setattr(g, f, getattr(g, f) + getattr(r, f))
                g.output_shape, g.jump, g.receptive_field = r.output_shape, r.jump, r.receptive_field
                continue
            g = LayerRow(**{f.name: getattr(r, f.name) for f in fields(LayerRow)})
            if r.depth > depth:
                g.name, g.type, g.kind = key, self.module_types.get(key, r.type), "module"
            groups.append(g)
        return groups

    def totals_lines(self) -> list[str]:
        """The totals as ``label: value`` lines, MACs and FLOPs labelled apart."""
        t = self.totals
        return [
            f"parameters: {t.params:,} (weights {t.weight_params:,}, biases {t.bias_params:,}; "
            f"trainable {t.trainable_params:,}, frozen {t.frozen_params:,}; not used by forward {t.unused_params:,})",
            f"MACs (multiply-accumulates, conv + linear): {t.macs:,} ({human(t.macs)})",
            f"FLOPs (= 2 x MACs): {t.flops:,} ({human(t.flops)})",
            f"other ops (norm, activation, pooling, element-wise; not in MACs): {t.other_ops:,}",
            f"forward activations: {t.activation_elements:,} elements, {human(t.activation_bytes, 'B', 1024)}",
            f"parameter memory: {human(t.param_bytes, 'B', 1024)}",
            f"training memory estimate: {human(t.training_fixed_bytes, 'B', 1024)} fixed (weights, grads, "
            f"{t.optimizer_states} optimizer state{'' if t.optimizer_states == 1 else 's'}) + {human(t.training_bytes_per_image, 'B', 1024)} per image",
        ]

    def _header(self) -> str:
        return f"{self.model} on {_shape(self.input_size)} ({self.dtype}, traced on {self.device})"

    def _cells(self, depth: int | None) -> list[list[str]]:
        return [[fmt(r) for _, fmt in COLUMNS] for r in self.at_depth(depth)]

    def to_table(self, depth: int | None = None) -> str:
        """Aligned plain-text table followed by the totals."""
        heads = [h for h, _ in COLUMNS]
        cells = self._cells(depth)
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
        line = lambda cols: "  ".join(  # noqa: E731
            c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))
        )
        out = [self._header(), line(heads), "-" * (sum(widths) + 2 * (len(widths) - 1))]
        out += [line(c) for c in cells]
        return "\n".join(out + [""] + self.totals_lines())

    def to_markdown(self, depth: int | None = None) -> str:
        """GitHub markdown table followed by the totals as a list."""
        heads = [h for h, _ in COLUMNS]
        out = [f"**{self._header()}**", "", "| " + " | ".join(heads) + " |"]
        out.append("| " + " | ".join("---" if i < 3 else "---:" for i in range(len(heads))) + " |")
        out += ["| " + " | ".join(c) + " |" for c in self._cells(depth)]
        return "\n".join(out + [""] + [f"- {t}" for t in self.totals_lines()])

    def to_paper(self, depth: int | None = None) -> str:
        """Paper units: convolution and linear weights only in K = 1024, MACs in M = 10^6 (GoogLeNet Table 1)."""
        rows = [r for r in self.at_depth(depth) if r.paper_params or r.macs]
        width = max([5, *(len(r.name) for r in rows)])
        out = [
            self._header()
            + " - paper units: params = conv/linear weights in K = 1024, ops = MACs in M = 10^6",
            f"{'layer':<{width}}  {'output':<16}  {'params (K)':>11}  {'ops (M)':>9}",
        ]
        for r in rows:
            shape = _shape(r.output_shape[1:])
            out.append(
                f"{r.name:<{width}}  {shape:<16}  {r.paper_params / 1024:>10.1f}K  {r.macs / 1e6:>8.1f}M"
            )
        total_w = sum(r.paper_params for r in self.rows)
        out.append(f"{'total':<{width}}  {'':<16}  {total_w / 1024:>10.1f}K  {self.totals.macs / 1e6:>8.1f}M")
        return "\n".join(out)

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        """Plain data: model, input, rows and totals (with ``flops`` and the training estimates)."""
        t = self.totals
        totals = asdict(t) | {
            "flops": t.flops,
            "training_bytes_per_image": t.training_bytes_per_image,
            "training_fixed_bytes": t.training_fixed_bytes,
        }
        rows = [asdict(r) | {"params": r.params} for r in self.at_depth(depth)]
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "dtype": self.dtype,
            "device": self.device,
            "rows": rows,
            "totals": totals,
        }

    def to_json(self, depth: int | None = None) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(depth), indent=2)

    def to_csv(self, depth: int | None = None) -> str:
        """One CSV line per row with raw numbers (shapes as ``1x64x112x112``), then the network's totals in a
        last line of kind ``total`` (filter on ``kind`` before summing columns: shared weights count once
        there, and unused parameters appear in no row)."""
        buffer = io.StringIO()
        names = [f.name for f in fields(LayerRow)]
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names)
        for r in self.at_depth(depth):
            writer.writerow(
                [
                    _shape(v) if n in ("output_shape", "jump", "receptive_field") else v
                    for n, v in asdict(r).items()
                ]
            )
        totals = asdict(self.totals) | {"paper_params": sum(r.paper_params for r in self.rows)}
        label = {
            "name": "total",
            "type": self.model,
            "kind": "total",
            "output_shape": _shape(self.input_size),
        }
        writer.writerow([label.get(n, totals.get(n, "")) for n in names])
        return buffer.getvalue()

    def render(self, fmt: str, depth: int | None = None) -> str:
        """Render as ``table``, ``markdown``, ``csv``, ``json`` or ``paper`` (weights only, K = 1024)."""
        from cnnlab.errors import unknown_choice

        renderers = {
            "table": self.to_table,
            "markdown": self.to_markdown,
            "csv": self.to_csv,
            "json": self.to_json,
            "paper": self.to_paper,
        }
        if fmt not in renderers:
            raise unknown_choice("format", fmt, renderers)
        return renderers[fmt](depth)
