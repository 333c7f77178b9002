"""``cnnlab export`` and ``cnnlab predict``: thin wrappers over :mod:`cnnlab.export` and :mod:`cnnlab.predict`."""

from __future__ import annotations

import argparse

from cnnlab.cli.common import (
    add_command,
    add_model_option_arg,
    add_weights_from_arg,
    class_list,
    model_options,
)
from cnnlab.data.views import TTA_MODES

# Torch-free copies of cnnlab.export.FORMATS / DEFAULT_OPSET and cnnlab.predict.OUTPUT_FORMATS, so that
# `cnnlab --help` does not import torch (tests/test_predict.py checks they agree).
EXPORT_FORMATS = ("onnx", "safetensors")
DEFAULT_OPSET = 17
OUTPUT_FORMATS = ("table", "json")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _export(args: argparse.Namespace) -> int:
    from cnnlab.export import export_model

    options = model_options(args)
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    result = export_model(
        args.model, args.format, out=args.output, opset=args.opset, dynamic_batch=args.dynamic_batch,
        overwrite=args.overwrite, weights=args.weights, weights_from=args.weights_from or "cnnlab", **options,
    )  # fmt: skip
    print(result.report())
    return 0


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"expected numbers such as '0.485,0.456,0.406', got {text!r}")
    return values


def _predict(args: argparse.Namespace) -> int:
    from cnnlab.errors import UsageError
    from cnnlab.predict import format_predictions, predict

    if args.weights_from is not None and args.weights is None:
        raise UsageError("--weights-from says how to read --weights; give --weights FILE too")
    class_names = None
    if args.class_names is not None:
        try:
            class_names = [line.strip() for line in open(args.class_names, encoding="utf-8") if line.strip()]
        except OSError as err:
            raise UsageError(f"cannot read --class-names {args.class_names}: {err.strerror or err}") from None
    card = dict(data=args.data, classes=args.classes or (), pad_to=args.pad_to, mean=args.mean, std=args.std,
                class_names=class_names)  # fmt: skip
    predictions = predict(
        args.model, args.images, topk=args.topk, batch_size=args.batch_size, tta=args.tta,
        scales=args.scales or (), weights=args.weights, weights_from=args.weights_from or "cnnlab",
        model_options={**model_options(args), **({"in_chans": args.in_chans} if args.in_chans else {})},
        bad_images=args.bad_images, **card,
    )  # fmt: skip
    print(format_predictions(predictions, args.format))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` and ``predict``."""
    p = add_command(
        subparsers,
        "export",
        _export,
        help="export a run or model as ONNX or a self-describing safetensors file",
        description="Export RUN_OR_MODEL (a run directory, checkpoint, model file, or a model name built fresh or "
        "with --weights) as ONNX (checked against PyTorch with onnxruntime; needs pip install 'cnnlab[export]') or "
        "as a safetensors model file whose header names the model, its options, classes, mean/std and input "
        "size, which predict, evaluate and cnnlab.load_model read.",
    )
    p.add_argument(
        "model", metavar="RUN_OR_MODEL", help="run directory, checkpoint, model file or model name"
    )
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    p.add_argument("-o", "--output", help="file to write (default: MODEL.onnx / MODEL.safetensors here)")
    p.add_argument(
        "--opset", type=_positive, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})"
    )
    p.add_argument("--dynamic-batch", action="store_true", help="ONNX: any batch size (default: batch 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--weights", help="with a model name: a weight file to load (.safetensors, .pth, .pt)")
    add_weights_from_arg(p)
    p.add_argument("--num-classes", type=_positive, help="with a model name: its number of classes")
    add_model_option_arg(p)

    p = add_command(
        subparsers,
        "predict",
        _predict,
        help="top-k classes of image files under a run, model file or ONNX file",
        description="Decode each image (files, or every image in a folder) with Pillow, prepare it as the run's "
        "test-time pipeline does (channels, size, padding, mean/std) and print its top-k classes with "
        "probabilities. An .onnx file exported by cnnlab runs through onnxruntime.",
    )
    p.add_argument(
        "model",
        metavar="RUN_OR_MODEL_FILE",
        help="run directory, checkpoint, model file or .onnx; with --weights, a model name",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--topk", type=_positive, default=5, help="classes shown per image (default: 5)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="table", help="output (default: table)")
    p.add_argument("--batch-size", type=_positive, default=64, help="images per forward pass (default: 64)")
    p.add_argument(
        "--bad-images",
        choices=("error", "skip"),
        default="error",
        help="a file that is not a readable image: stop with an error, or leave it out with one warning "
        "(default: error)",
    )
    p.add_argument(
        "--tta",
        choices=tuple(TTA_MODES),
        metavar="MODE",
        help="average the softmax over test-time views, as evaluate --tta: " + ", ".join(TTA_MODES),
    )
    p.add_argument(
        "--scales", nargs="+", type=_positive, metavar="Q", help="shorter sides for --tta multiscale/dense"
    )
    w = p.add_argument_group(
        "a weight file that does not say which model it is (RUN_OR_MODEL_FILE is then a model name)",
        "Images are prepared for it with numbered classes, mean 0 and std 1 at the model's input size, except: "
        "torchvision and timm weights take their normalisation (ImageNet's mean/std), --data a dataset's "
        "classes, mean/std, channels and size (--classes: the classes it was trained on, in order), and the "
        "flags below replace any of them.",
    )
    w.add_argument("--weights", metavar="FILE", help="weight file (.safetensors, .pth, .pt)")
    add_weights_from_arg(w)
    w.add_argument(
        "--data", help="dataset the weights were trained on (cnnlab data list): classes, mean/std, size"
    )
    w.add_argument("--classes", type=class_list, help="with --data: the classes trained on, e.g. 5,6,7,8,9")
    w.add_argument("--pad-to", type=_positive, help="zero-pad the images to this size, as the run did")
    w.add_argument(
        "--in-chans", type=_positive, help="repeat grey images to this many channels, as the run did"
    )
    w.add_argument(
        "--mean", type=_floats, help="per-channel mean of the normalisation, e.g. 0.485,0.456,0.406"
    )
    w.add_argument("--std", type=_floats, help="per-channel standard deviation of the normalisation")
    w.add_argument("--class-names", metavar="FILE", help="a text file with one class name per line")
    add_model_option_arg(w)
