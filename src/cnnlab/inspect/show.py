"""``cnnlab show``: the views of :mod:`cnnlab.inspect.views` for a saved run (or a fresh model), as PNG files.

    >>> from cnnlab.inspect import show_cam
    >>> show_cam("runs/lecture-residual", "shoe.png")          # [Path('runs/lecture-residual/inspect/cam-shoe.png')]

Each function returns the paths it wrote; the pictures default to ``<run>/inspect/`` (``inspect/`` in
the current folder for a model name) and an existing file is replaced only with ``overwrite``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.data.catalog import run_dataset_info
from cnnlab.errors import UsageError
from cnnlab.fileio import atomic_write_bytes
from cnnlab.inspect.images import load_image
from cnnlab.inspect.views import (
    activations,
    enlargement,
    filter_tiles,
    filters,
    grad_cam,
    map_tiles,
    overlay_heatmap,
    png_bytes,
    tile_grid,
)
from cnnlab.train.rundir import output_storage_errors, refuse_file_in_the_way


@dataclass
class Subject:
    """The model a view looks at, where its pictures go, and (for a run) its recipe and classes."""

    model: nn.Module
    out_dir: Path
    config: object | None = None  # cnnlab.train.TrainConfig of a run
    classes: list[str] | None = None
    header: dict | None = None  # the run's checkpoint header: how it prepared its images, among others

    def data_info(self) -> object:
        """How the run prepared its images (a :class:`cnnlab.data.DatasetInfo`), for reading an image file."""
        return run_dataset_info(self.config.data, self.header or {})


def subject(run_or_model: str | Path, out_dir: str | Path | None = None, device: str = "cpu") -> Subject:
    """A run directory (or checkpoint) with its saved weights, or a registered model name (initial weights,
    seed 0)."""
    from cnnlab.models import create_model, list_models
    from cnnlab.train.evaluation import load_saved_model

    path = Path(run_or_model)
    if path.exists():
        loaded = load_saved_model(path, device=device, with_data=False)
        where = Path(out_dir) if out_dir else loaded.choice.run_dir / "inspect"
        return Subject(loaded.model, where, loaded.cfg, loaded.classes, loaded.header)
    if str(run_or_model) in list_models():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create_model(str(run_or_model)).eval()
        return Subject(model, Path(out_dir) if out_dir else Path("inspect"))
    raise UsageError(f"{run_or_model} is neither a run directory nor a model name (cnnlab models lists them)")


def run_subject(run: str | Path, out_dir: str | Path | None = None, device: str = "cpu") -> Subject:
    """:func:`subject` for views that need an image in the run's input form: a run directory only."""
    found = subject(run, out_dir, device)
    if found.config is None:
        raise UsageError(
            f"{run} is a model name; this view needs a trained run directory (its data and weights)"
        )
    return found


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def _check_writable(path: Path, overwrite: bool) -> None:
    refuse_file_in_the_way(path.parent)  # --out naming a file: a usage error, not a traceback
    if path.exists() and not overwrite:
        raise UsageError(f"{path} already exists; use --overwrite to replace it (or --out another folder)")


def _write(path: Path, data: bytes, overwrite: bool) -> Path:
    _check_writable(path, overwrite)
    with output_storage_errors("the picture", "--out"):
        atomic_write_bytes(path, data)  # makes the folder too
    return path


def show_filters(
    run_or_model: str | Path,
    *,
    layer: str | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """``filters-<layer>.png``: the filters of convolution ``layer`` (default: the first)."""
    found = subject(run_or_model, out_dir)
    name, weights = filters(found.model, layer)
    tiles, columns = filter_tiles(weights)
    grid = tile_grid(tiles, columns)
    out, chans, kh, kw = weights.shape
    caption = (
        f"{Path(run_or_model).name}, {name}: {out} filters of {chans}x{kh}x{kw}"
        + (f" (the first {min(chans, 16)} inputs of each, a row per filter)" if chans not in (1, 3) else "")
        + "; mid-grey is zero weight"
    )
    return [
        _write(
            found.out_dir / f"filters-{_safe(name)}.png",
            png_bytes(grid, enlargement(grid.shape[1], 320), caption=caption),
            overwrite,
        )
    ]


def show_activations(
    run: str | Path,
    image: str | Path,
    *,
    layers: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """``act-<image>-<layer>.png`` per layer: the feature maps of ``image`` (a file) as a grid of channels."""
    found = run_subject(run, out_dir)
    x, _ = load_image(image, found.config, found.data_info())
    pngs = {}
    for name, feature_map in activations(found.model, x, layers).items():
        tiles, columns = map_tiles(feature_map)
        grid = tile_grid(tiles, columns)
        path = found.out_dir / f"act-{_safe(Path(image).stem)}-{_safe(name)}.png"
        chans, height, width = feature_map.shape
        caption = (
            f"{Path(image).name}, {name}: {len(tiles)} of {chans} feature maps of {height}x{width}, "
            "each scaled to its own range"
        )
        pngs[path] = png_bytes(grid, enlargement(grid.shape[1], 480), caption=caption)
    for path in pngs:  # every file checked before any is written: a refusal leaves the folder as it was
        _check_writable(path, overwrite)
    return [_write(path, png, overwrite) for path, png in pngs.items()]


def class_index(name: str | int | None, classes: Sequence[str]) -> int | None:
    """A class given by number or name -> its index (None stays None: the predicted class)."""
    if name is None or isinstance(name, int):
        return name
    if name.isdigit():
        return int(name)
    if name in classes:
        return list(classes).index(name)
    from cnnlab.errors import unknown_choice

    raise unknown_choice("class", name, classes)


def show_cam(
    run: str | Path,
    image: str | Path,
    *,
    target: str | int | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """``cam-<image>-<class>.png``: the image, and beside it the Grad-CAM heat map of ``target`` (default:
    the predicted class) over it."""
    found = run_subject(run, out_dir)
    x, picture = load_image(image, found.config, found.data_info())
    cam = grad_cam(found.model, x, class_index(target, found.classes))
    overlay = overlay_heatmap(picture, cam.heatmap)
    label = _safe(found.classes[cam.class_index])
    plain = overlay_heatmap(picture, np.zeros_like(cam.heatmap))  # the picture alone, for comparison
    pair = tile_grid(np.stack([plain, overlay]), columns=2, gap=2)
    predicted = int(cam.probabilities.argmax())
    caption = f"{Path(image).name}: Grad-CAM of {found.classes[cam.class_index]} (p = {cam.probabilities[cam.class_index]:.2f})"
    if predicted != cam.class_index:
        caption += f"; predicted {found.classes[predicted]} (p = {cam.probabilities[predicted]:.2f})"
    png = png_bytes(pair, enlargement(overlay.shape[1], 320), caption=caption)
    return [_write(found.out_dir / f"cam-{_safe(Path(image).stem)}-{label}.png", png, overwrite)]
