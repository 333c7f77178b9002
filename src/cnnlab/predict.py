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

from cnnlab.data.imagefolder import IMAGE_EXTENSIONS
from cnnlab.errors import DataError, UsageError, check_positive
from cnnlab.weights import ModelCard

#: what a folder argument contributes: files with these suffixes (case-insensitive), sorted by name
OUTPUT_FORMATS = ("table", "json")


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image: ``(class index, class name, probability)``, most probable first."""

    image: Path | str  # a file's path, or "image N" for the N-th image given in memory
    top: list[tuple[int, str, float]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "image": str(self.image),
            "top": [{"index": i, "class": c, "probability": p} for i, c, p in self.top],
        }


def in_memory_image(item: Any, index: int) -> Any:
    """A PIL image, or a uint8 tensor or array ([H, W], [C, H, W] with C 1 or 3, or [H, W, C]), as a PIL image;
    None for anything else (a path)."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return item
    if not isinstance(item, (torch.Tensor, np.ndarray)):
        return None
    array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    if array.dtype != np.uint8:
        raise UsageError(
            f"image {index} is a {array.dtype} array; give raw pixels as uint8 (0-255), e.g. "
            "(x * 255).round().to(torch.uint8) for floats in [0, 1]"
        )
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # [C, H, W] -> [H, W, C]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise UsageError(
            f"image {index} has shape {tuple(item.shape)}; give one image as [H, W], [C, H, W] or [H, W, C] "
            "with C 1 or 3, and several as a batch [N, C, H, W] (grey images [N, H, W]: x.unsqueeze(1)) or a list"
        )
    return Image.fromarray(np.ascontiguousarray(array))


def collect_images(inputs: Any) -> list[Any]:
    """The images to predict: image files, the image files in folders (sorted), and images held in memory
    (PIL images, uint8 tensors or arrays: :func:`in_memory_image`, or one uint8 batch [N, C, H, W]); nothing
    found is a :class:`UsageError`. A single 3-D array is one image: [3, H, W] is read as RGB."""
    found: list[Any] = []
    if isinstance(inputs, (torch.Tensor, np.ndarray)) and inputs.ndim == 4:
        inputs = list(inputs)  # a batch [N, C, H, W] (or [N, H, W, C]): its images, in order
    elif isinstance(inputs, (str, os.PathLike)) or in_memory_image(inputs, 0) is not None:
        inputs = [inputs]  # one path or image, not a sequence of one-character names or of rows
    for index, given in enumerate(inputs):
        image = in_memory_image(given, index)
        if image is not None:
            found.append(image)
            continue
        item = Path(given)
        if item.is_dir():
            inside = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not inside:
                raise UsageError(f"{item} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            found.extend(inside)
        elif item.is_file():
            found.append(item)
        else:
            raise UsageError(f"no image file or folder at {item}")
    if not found:
        raise UsageError("no images given")
    return found


def image_names(images: Sequence[Any]) -> list[Path | str]:
    """How predictions name ``images``: a file by its path, an image held in memory as ``image N``."""
    return [item if isinstance(item, Path) else f"image {index}" for index, item in enumerate(images)]


def decode_images(
    images: Sequence[Any], card: ModelCard, bad_images: str = "error"
) -> tuple[torch.Tensor, list[int]]:
    """uint8 ``[N, C, H, W]`` at the card's image channels and size, decoded as an image folder decodes
    its files (:func:`cnnlab.data.imagefolder.decode_image`: shorter side resized, centre crop), and the
    indices in ``images`` (paths or PIL images: :func:`collect_images`) of the images it holds.

    A file that is not a readable image is a :class:`DataError` naming it, or with ``bad_images="skip"`` left
    out, with one warning counting them; an image of another size for a non-square model input is a
    :class:`UsageError` naming it."""
    from cnnlab.data.catalog import check_bad_images
    from cnnlab.data.imagefolder import BadImage, decode_image, image_array, report_bad_images

    check_bad_images(bad_images)
    height, width = card.image_size
    side = height if height == width else None
    arrays, kept, bad = [], [], []
    for index, (name, item) in enumerate(zip(image_names(images), images)):
        try:
            array = (
                decode_image(item, side, card.image_chans)
                if isinstance(item, Path)
                else image_array(item, side, card.image_chans)
            )
        except BadImage as err:
            if bad_images == "error":  # a failure: exit 1
                raise DataError(
                    f"{name} cannot be decoded as an image: {err}; fix or remove it, or pass --bad-images skip"
                ) from None
            bad.append((str(name), str(err)))
            continue
        if array.shape[1:] != (height, width):
            raise UsageError(
                f"{name} is {array.shape[2]}x{array.shape[1]}; this model takes {width}x{height} images"
            )
        arrays.append(array)
        kept.append(index)
    if not arrays:
        raise DataError(f"none of the {len(images)} images can be decoded (first: {bad[0][0]}: {bad[0][1]})")
    report_bad_images(bad, "skip")
    return torch.from_numpy(np.stack(arrays)), kept


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
        from cnnlab.weights import card_dataset_info

        return tuple(card_dataset_info(data).image_size)
    return None


def predict(
    model_path: str | Path,
    inputs: Any,
    topk: int = 5,
    batch_size: int = 64,
    *,
    tta: str | None = None,
    scales: Sequence[int] = (),
    weights: str | Path | None = None,
    weights_from: str = "cnnlab",
    model_options: dict[str, Any] | None = None,
    bad_images: str = "error",
    **card_settings: Any,
) -> list[Prediction]:
    """Top-``topk`` classes (softmax probabilities) of each image in ``inputs`` (files, folders, and images held
    in memory: PIL images, uint8 tensors or arrays; :func:`collect_images`) under the
    model at ``model_path`` (run directory, checkpoint, model file or ``.onnx``), or of the model named
    ``model_path`` with the weight file ``weights`` (:func:`load_predictor`).

    ``tta``: a test-time mode of :data:`cnnlab.data.views.TTA_MODES` (``flip``, ``10crop``, ``multiscale``
    with ``scales`` ...): the softmax posteriors of its views are averaged, as ``cnnlab evaluate --tta`` does.
    ``bad_images="skip"``: a file that is not a readable image is left out (one warning counts them) instead
    of stopping the prediction (:func:`decode_images`).
    """
    check_positive("topk", topk)
    images = collect_images(inputs)
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
    decoded, kept = decode_images(images, card, bad_images)
    every_name = image_names(images)
    names = [every_name[i] for i in kept]
    predictions: list[Prediction] = []
    for x in prepared_batches(decoded, card, batch_size):
        values, indices = posteriors(x).topk(k, dim=1)
        for v, i in zip(values.tolist(), indices.tolist()):
            name = names[len(predictions)]
            predictions.append(Prediction(name, [(c, card.classes[c], p) for c, p in zip(i, v)]))
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
