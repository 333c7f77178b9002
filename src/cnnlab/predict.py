"""Predict on image files: decode with Pillow, prepare as the run's test-time pipeline, top-k classes.

The pipeline is the one evaluation uses: images are decoded to the dataset's channels and size (an image
of another size is resized, bilinear), then the run's :class:`~cnnlab.data.BatchLoader` (zero-padding to
``pad_to``, grey repeated to the model's channels, the dataset's mean/std) turns them into the model's
input. A model file, a run directory or an exported ONNX file (run by onnxruntime) all predict alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import UsageError, check_positive
from cnnlab.weights import ModelCard

#: what a folder argument contributes: files with these suffixes (case-insensitive), sorted by name
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
OUTPUT_FORMATS = ("table", "json")


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image: ``(class index, class name, probability)``, most probable first."""

    image: Path
    top: list[tuple[int, str, float]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "image": str(self.image),
            "top": [{"index": i, "class": c, "probability": p} for i, c, p in self.top],
        }


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """The image files named, and those in the folders named (sorted); nothing found is a :class:`UsageError`."""
    found: list[Path] = []
    if isinstance(inputs, (str, os.PathLike)):  # one path, not a sequence of one-character names
        inputs = [inputs]
    for item in map(Path, inputs):
        if item.is_dir():
            inside = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise UsageError(f"{item} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(inside)
        elif item.is_file():
            found.append(item)
        else:
            raise UsageError(f"no image file or folder at {item}")
    if not found:
        raise UsageError("no images given")
    return found


def decode_images(paths: Sequence[Path], card: ModelCard) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` at the card's image channels and size, decoded as an image folder decodes
    its files (:func:`cnnlab.data.imagefolder.decode_image`: shorter side resized, centre crop); a file
    that is not a readable image, or of another size for a non-square model input, is a
    :class:`UsageError` naming it."""
    from cnnlab.data.imagefolder import BadImage, decode_image

    height, width = card.image_size
    arrays = []
    for path in paths:
        try:
            array = decode_image(path, height if height == width else None, card.image_chans)
        except BadImage as err:
            raise UsageError(f"{path} cannot be decoded as an image: {err}") from None
        if array.shape[1:] != (height, width):
            raise UsageError(
                f"{path} is {array.shape[2]}x{array.shape[1]}; this model takes {width}x{height} images"
            )
        arrays.append(array)
    return torch.from_numpy(np.stack(arrays))


def prepared_batches(images: torch.Tensor, card: ModelCard, batch_size: int = 64) -> Iterable[torch.Tensor]:
    """The model's input batches for decoded ``images``: the run's test-time :class:`~cnnlab.data.BatchLoader`."""
    from cnnlab.data import BatchLoader, Split

    split = Split("predict", images, torch.zeros(len(images), dtype=torch.int64))
    loader = BatchLoader(
        split, batch_size=batch_size, shuffle=False, augment=None, mean=card.mean, std=card.std,
        pad_to=card.pad_to, out_chans=card.in_chans,
    )  # fmt: skip
    for x, _ in loader:
        yield x


def torch_runner(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits of a PyTorch model (evaluation mode, no gradients)."""
    model.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    return run


def onnx_runner(session: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits of an onnxruntime session; a file exported for batch 1 runs one image at a time."""
    batch = session.get_inputs()[0].shape[0]
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        chunks = x.split(batch) if isinstance(batch, int) else (x,)
        return torch.cat(
            [torch.from_numpy(session.run(None, {name: c.contiguous().numpy()})[0]) for c in chunks]
        )

    return run


@dataclass
class Predictor:
    """What predicts: a logits function, the card saying how images are prepared, and the PyTorch model
    (None for an ONNX file)."""

    run: Callable[[torch.Tensor], torch.Tensor]
    card: ModelCard
    model: torch.nn.Module | None = None
    notes: tuple[str, ...] = ()


def load_predictor(
    path: str | Path,
    weights: str | Path | None = None,
    weights_from: str = "cnnlab",
    model_options: dict[str, Any] | None = None,
    **card_settings: Any,
) -> Predictor:
    """The predictor of a run directory, model file or exported ONNX file; or, with ``weights``, of the
    registry model named ``path`` with that weight file (:func:`cnnlab.weights.build_with_weights`), its
    images prepared as ``card_settings`` say (:func:`cnnlab.weights.card_for_weights`: ``data``,
    ``classes``, ``pad_to``, ``mean``, ``std``, ``class_names``)."""
    from cnnlab.train.checkpoint import read_header
    from cnnlab.weights import (
        MODEL_FORMAT,
        ModelCard,
        build_with_weights,
        card_for_weights,
        load_model,
        resolve_weight_file,
    )

    path = Path(path)
    if weights is not None:
        if path.exists() or path.suffix in (".safetensors", ".onnx", ".json"):
            raise UsageError(f"with --weights, name a model (cnnlab models), not a file or run: {path}")
        options = dict(model_options or {})
        # a cnnlab model file says how its run prepared images (its header alone: the tensors load below)
        file, _ = resolve_weight_file(weights)
        header = read_header(file) if file.suffix == ".safetensors" else {}
        said = ModelCard.from_header(header, weights) if header.get("format") == MODEL_FORMAT else None
        size = _image_size(card_settings.get("data"), card_settings.get("pad_to"))
        if size is None and said is not None:
            size = (said.pad_to, said.pad_to) if said.pad_to else said.image_size
        if size is not None:  # the head of some models is sized from their input: as the run built it
            from cnnlab.train.engine import sized_options

            options = sized_options(str(path), options, size)
        # the file's own classifier: a new one for another class count would predict at random
        model, report = build_with_weights(str(path), weights, weights_from, **options)
        card = card_for_weights(model, weights_from, **card_settings, file_card=said)
        return Predictor(torch_runner(model), card, model, report.messages)
    if model_options or any(v not in (None, ()) for v in card_settings.values()):
        raise UsageError(
            f"{path} says how its images are prepared; the model and image flags apply with --weights"
        )
    if path.suffix == ".onnx":
        from cnnlab.export import onnx_card, onnx_session

        if not path.is_file():
            raise UsageError(f"no ONNX file at {path}")
        session = onnx_session(path)
        return Predictor(onnx_runner(session), onnx_card(session, path))
    model = load_model(path)
    return Predictor(torch_runner(model), model.model_card, model)


def _image_size(data: str | None, pad_to: int | None) -> tuple[int, int] | None:
    """The size of the model's input when ``pad_to`` or a dataset says it (None: the model's own)."""
    if pad_to is not None:
        return (pad_to, pad_to)
    if data is not None:
        from cnnlab.data import dataset_info

        return tuple(dataset_info(data).image_size)
    return None


def predict(
    model_path: str | Path,
    inputs: Iterable[str | Path],
    topk: int = 5,
    batch_size: int = 64,
    *,
    tta: str | None = None,
    scales: Sequence[int] = (),
    weights: str | Path | None = None,
    weights_from: str = "cnnlab",
    model_options: dict[str, Any] | None = None,
    **card_settings: Any,
) -> list[Prediction]:
    """Top-``topk`` classes (softmax probabilities) of each image in ``inputs`` (files and folders) under the
    model at ``model_path`` (run directory, checkpoint, model file or ``.onnx``), or of the model named
    ``model_path`` with the weight file ``weights`` (:func:`load_predictor`).

    ``tta``: a test-time mode of :data:`cnnlab.data.views.TTA_MODES` (``flip``, ``10crop``, ``multiscale``
    with ``scales`` ...): the softmax posteriors of its views are averaged, as ``cnnlab evaluate --tta`` does.
    """
    check_positive("topk", topk)
    paths = collect_images(inputs)
    predictor = load_predictor(model_path, weights, weights_from, model_options, **card_settings)
    card = predictor.card
    if tta is not None:
        from cnnlab.train.tta import averaged_posteriors, check_mode, tta_forward

        size = tuple(card.input_size[1:])
        scales = check_mode(tta, scales, size)
        if tta == "dense" and predictor.model is None:
            raise UsageError(
                "--tta dense turns the model's fully-connected layers into convolutions: not for ONNX files"
            )
        forward = tta_forward(predictor.model, tta) if predictor.model is not None else predictor.run

        def posteriors(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return averaged_posteriors(forward, x, tta, size, scales)
    elif scales:
        raise UsageError("--scales applies to --tta multiscale and --tta dense; add --tta")
    else:

        def posteriors(x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(predictor.run(x).float(), dim=1)

    k = min(topk, card.num_classes)
    images = decode_images(paths, card)
    predictions: list[Prediction] = []
    for x in prepared_batches(images, card, batch_size):
        values, indices = posteriors(x).topk(k, dim=1)
        for v, i in zip(values.tolist(), indices.tolist()):
            path = paths[len(predictions)]
            predictions.append(Prediction(path, [(c, card.classes[c], p) for c, p in zip(i, v)]))
    return predictions


def format_predictions(predictions: Sequence[Prediction], fmt: str = "table") -> str:
    """``table``: one line per image with its top classes and probabilities; ``json``: a list of objects."""
    if fmt == "json":
        return json.dumps([p.as_dict() for p in predictions], indent=2)
    if fmt != "table":
        raise UsageError(f"unknown output format {fmt!r}; choose {' or '.join(OUTPUT_FORMATS)}")
    width = max(len(str(p.image)) for p in predictions)
    lines = []
    for p in predictions:
        shown = "  ".join(f"{name} {100 * prob:5.1f}%" for _, name, prob in p.top)
        lines.append(f"{str(p.image):<{width}}  {shown}")
    return "\n".join(lines)
