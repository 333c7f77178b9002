"""``cnnlab report`` and ``cnnlab show filters|activations|cam``: thin wrappers over :mod:`cnnlab.inspect`."""

from __future__ import annotations

import argparse

from cnnlab.cli.common import add_command, add_command_group


def _report(args: argparse.Namespace) -> int:
    from cnnlab.inspect import write_report

    path = write_report(
        args.runs, args.out, overwrite=args.overwrite, device=args.device, data_dir=args.data_dir
    )
    print(path)
    return 0


def _print_paths(paths: list) -> int:
    for path in paths:
        print(path)
    return 0


def _filters(args: argparse.Namespace) -> int:
    from cnnlab.inspect import show_filters

    return _print_paths(
        show_filters(args.target, layer=args.layer, out_dir=args.out, overwrite=args.overwrite)
    )


def _activations(args: argparse.Namespace) -> int:
    from cnnlab.inspect import show_activations

    return _print_paths(
        show_activations(args.run, args.image, layers=args.layers, out_dir=args.out, overwrite=args.overwrite)
    )


def _cam(args: argparse.Namespace) -> int:
    from cnnlab.inspect import show_cam

    return _print_paths(
        show_cam(args.run, args.image, target=args.target_class, out_dir=args.out, overwrite=args.overwrite)
    )


def _out_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", help="folder for the PNG files (default: RUN/inspect/, or ./inspect/ for a model)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace PNG files that exist")


def _run_image_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run directory")
    parser.add_argument("image", metavar="IMAGE", help="image file (PNG, JPEG)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report`` and ``show``."""
    p = add_command(
        subparsers,
        "report",
        _report,
        help="one self-contained HTML page of one or several runs",
        description="Write one HTML file (pictures inline, nothing fetched from the network) showing each RUN: "
        "the recipe, the model summary, the curves, the confusion matrix and per-class accuracy of the selected "
        "checkpoint, the test images it gets most confidently wrong and the first layer's filters; several runs "
        "also side by side. A folder of runs (cnnlab compare's --out) stands for its runs.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory, or a folder of runs")
    p.add_argument("-o", "--out", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--overwrite", action="store_true", help="replace the file if it exists")
    p.add_argument("--data-dir", help="folder holding the dataset files (else where the run found them)")
    p.add_argument("--device", default="auto", help="where the test split is evaluated (default: auto)")

    show = add_command_group(
        subparsers,
        "show",
        help="filters, feature maps and Grad-CAM heat maps as PNG files",
        description="Look inside a network; each command writes PNG files and prints their paths.",
        metavar="VIEW",
        dest="view",
    )
    p = add_command(
        show,
        "filters",
        _filters,
        help="a convolution's filters as a grid of small images",
        description="The filters of a convolution (default: the first) of a run's selected checkpoint, or of a "
        "registered model's initial weights (seed 0).",
    )
    p.add_argument("target", metavar="RUN_OR_MODEL", help="run directory, checkpoint, or model name")
    p.add_argument("--layer", help="the convolution's module name, e.g. features.conv2 (default: the first)")
    _out_args(p)
    p = add_command(
        show,
        "activations",
        _activations,
        help="an image's feature maps, one grid of channels per layer",
        description="The feature maps a run's model computes for IMAGE (a PNG or JPEG, converted to the run's "
        "input), one PNG per layer (default: the network's stages).",
    )
    _run_image_args(p)
    p.add_argument(
        "--layers", nargs="+", metavar="NAME", help="module names, e.g. features.conv1 features.relu2"
    )
    _out_args(p)
    p = add_command(
        show,
        "cam",
        _cam,
        help="Grad-CAM: where in an image the evidence for a class lies",
        description="The Grad-CAM heat map (Selvaraju et al. 2017) of the predicted class, or of --class, over "
        "IMAGE, computed on the network's final feature map.",
    )
    _run_image_args(p)
    p.add_argument(
        "--class", dest="target_class", metavar="C", help="class name or number (default: the predicted)"
    )
    _out_args(p)
