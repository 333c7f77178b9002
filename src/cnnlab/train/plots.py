"""Figures of a run: loss and accuracy curves, confusion matrix, accuracy of several runs.

Matplotlib's Agg backend (no display needed); every figure is written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cnnlab.fileio import atomic_write_bytes  # noqa: E402


def figure_png(fig: plt.Figure, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes (tight bounding box); the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically, close it, and return the path."""
    atomic_write_bytes(Path(path), figure_png(fig))
    return Path(path)


def epoch_axis(ax: plt.Axes, epochs: int) -> None:
    """Whole epochs on the x axis (a single epoch centred, not a range of fractions around it)."""
    if epochs <= 1:  # MaxNLocator wants two ticks and falls back to fractions for one
        ax.set_xticks([1])
        ax.set_xlim(0.5, 1.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_curves(rows: Sequence[Mapping[str, float]], path: Path, title: str = "") -> Path:
    """:func:`curves_figure` written to ``path``."""
    return save_figure(curves_figure(rows, title), path)


def curves_figure(
    rows: Sequence[Mapping[str, float]], title: str = "", metrics: Sequence[str] = ("loss", "acc")
) -> plt.Figure:
    """Loss and accuracy per epoch (train, and val where present) side by side, the selected test point
    starred; ``metrics`` picks the panels (``("acc",)``: accuracy alone, for narrow pages)."""
    labels = {"loss": ("loss", "loss", 1), "acc": ("accuracy", "accuracy (%)", 100)}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    epochs = [r["epoch"] for r in rows]
    for ax, metric in zip(axes[0], metrics):
        name, ylabel, factor = labels[metric]
        for split, style in (("train", "-"), ("val", "--")):
            if rows and rows[0].get(f"{split}_loss") not in (None, ""):
                ax.plot(
                    epochs, [factor * r[f"{split}_{metric}"] for r in rows], style, marker="o", label=split
                )
        # The test split is measured once, on the selected checkpoint: one point, not a curve.
        for r in rows:
            if r.get("test_acc") not in (None, ""):
                ax.plot(
                    [r["epoch"]], [factor * r[f"test_{metric}"]], "r*", markersize=12, label="test (selected)"
                )
        ax.set(xlabel="epoch", ylabel=ylabel, title=name)
        epoch_axis(ax, len(rows))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = ""
) -> Path:
    """:func:`confusion_figure` written to ``path``."""
    return save_figure(confusion_figure(matrix, classes, title), path)


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str = "") -> plt.Figure:
    """Confusion matrix (rows: true class, columns: predicted), with counts in the cells."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            value = matrix[i][j]
            ax.text(
                j,
                i,
                str(value),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if value > peak / 2 else "black",
            )
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    return fig


def plot_comparison(
    series: Mapping[str, Sequence[float]],
    path: Path,
    ylabel: str = "validation accuracy (%)",
    title: str = "",
) -> Path:
    """:func:`comparison_figure` written to ``path``."""
    return save_figure(comparison_figure(series, ylabel, title), path)


def comparison_figure(
    series: Mapping[str, Sequence[float]], ylabel: str = "validation accuracy (%)", title: str = ""
) -> plt.Figure:
    """One line per run: a metric per epoch (validation accuracy for ``cnnlab compare``)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    epoch_axis(ax, max((len(v) for v in series.values()), default=0))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_time_to_accuracy(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: Path,
    marks: Sequence[float] = (),
    title: str = "",
    time_limits: Sequence[float] = (),
) -> Path:
    """:func:`time_to_accuracy_figure` written to ``path``."""
    return save_figure(time_to_accuracy_figure(series, marks, title, time_limits), path)


def time_to_accuracy_figure(
    series: Mapping[str, Sequence[tuple[float, float]]],
    marks: Sequence[float] = (),
    title: str = "",
    time_limits: Sequence[float] = (),
) -> plt.Figure:
    """One line per run of ``(wall seconds, accuracy %)`` points, with a dotted line at each accuracy mark
    and a dashed one at each time limit (seconds)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in series.items():
        ax.plot([t for t, _ in points], [a for _, a in points], marker="o", label=name)
    for mark in marks:
        ax.axhline(mark, color="grey", linestyle=":", linewidth=0.8)
    for limit in time_limits:
        ax.axvline(limit, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="wall time (s)", ylabel="accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend()
    return fig
