"""Cells of the tables cnnlab writes (experiments, reports): a figure a run did not produce, an accuracy
before evaluation or a time before the first epoch, reads "-", never a made-up 0."""

from __future__ import annotations


def figure(value: float | None, spec: str, unit: str = "") -> str:
    """``value`` formatted with ``spec`` (``".1f"``) and ``unit`` after it; "-" for None."""
    return "-" if value is None else f"{value:{spec}}{unit}"


def percent(fraction: float | None) -> str:
    """A fraction as a percentage with two decimals (0.9312 -> "93.12%"); "-" for None."""
    return "-" if fraction is None else f"{100 * fraction:.2f}%"
