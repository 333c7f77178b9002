"""``cnnlab export`` and ``cnnlab predict``: thin wrappers over :mod:`cnnlab.export` and :mod:`cnnlab.predict`."""

from __future__ import annotations

import argparse

from cnnlab.cli.common import add_command, add_model_option_arg, model_options

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
        overwrite=args.overwrite, weights=args.weights, weights_from=args.weights_from, **options,
    )  # fmt: skip
    print(result.report())
    return 0


def _predict(args: argparse.Namespace) -> int:
    from cnnlab.predict import format_predictions, predict

    predictions = predict(args.model, args.images, topk=args.topk, batch_size=args.batch_size)
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
    p.add_argument("--weights-from", default="cnnlab", help="key map of --weights (default: cnnlab)")
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
        "model", metavar="RUN_OR_MODEL_FILE", help="run directory, checkpoint, model file or .onnx"
    )
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--topk", type=_positive, default=5, help="classes shown per image (default: 5)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="table", help="output (default: table)")
    p.add_argument("--batch-size", type=_positive, default=64, help="images per forward pass (default: 64)")
