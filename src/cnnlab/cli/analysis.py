"""``cnnlab summary``, ``cnnlab cost``, ``cnnlab rf`` and ``cnnlab paper-tables``: architecture analysis."""

from __future__ import annotations

import argparse

from cnnlab.cli.common import add_command, add_command_group, add_model_option_arg, model_options
from cnnlab.errors import UsageError

CONVENTIONS = """conventions (docs/analysis.md):
  MACs   multiply-accumulates of convolutions, linear layers and matrix products only:
         conv = k_h * k_w * (c_in / groups) * c_out * h_out * w_out, linear = in * out per sample
  FLOPs  always 2 x MACs, labelled as such
  other ops  normalisation, activation, pooling and element-wise work, in their own column, not in MACs
  params weights and biases apart, trainable and frozen apart; shared weights counted once;
         --format paper: conv/linear weights only, in K = 1024 (GoogLeNet Table 1's units)
  RF     receptive field r and jump j per output: r_out = r_in + d(k-1) j_in, j_out = j_in s; through
         concatenation and addition the largest incoming field wins
  memory activation bytes of each newly allocated output (views and in-place results allocate none);
         training per image ~ 2 x forward activations, fixed ~ params x (2 + optimizer states)
"""


def _summary(args: argparse.Namespace) -> int:
    import torch

    from cnnlab.analysis import summarize
    from cnnlab.analysis.loading import load_model, parse_input_size

    if args.depth is not None and args.depth < 1:
        raise UsageError(f"--depth must be at least 1, got {args.depth}")
    options = model_options(args)
    if args.input is not None:
        parse_input_size(args.input)  # a malformed size is refused before a model is built
    # --device cpu runs the arithmetic: the weights must exist there, initialised as the paper says
    model, default_input = load_model(args.model, options, device=args.device)
    if args.layers:  # the conv and fc layers as the papers count them (what --freeze N counts)
        from cnnlab.models.layers import paper_layers

        for index, (name, layer) in enumerate(paper_layers(model), 1):
            print(f"{index:>4}  {name:<40} {layer!r}")
        return 0
    if args.input is None and default_input is None:
        raise UsageError(f"give the input size of {args.model} with --input CxHxW, e.g. --input 3x224x224")
    if args.aux and default_input is not None:  # a registry model: --aux must have heads to trace
        _check_aux_heads(args.model, model)
    input_size = parse_input_size(args.input) if args.input is not None else default_input
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    if args.device == "cpu":
        model = model.to(dtype)  # weights in the traced dtype (a user's model is converted in place)
    summary = summarize(
        model,
        input_size,
        batch_size=args.batch,
        dtype=dtype,
        device=args.device,
        method="forward_aux" if args.aux else "forward",
        optimizer_states=args.optimizer_states,
    )
    print(summary.render(args.format, args.depth))
    return 0


def _check_aux_heads(name: str, model: object) -> None:
    """Refuse ``--aux`` on a registry model built without auxiliary heads: its trace would be the plain one."""
    from cnnlab.models import model_info

    if len(getattr(model, "aux_heads", None) or ()):
        return
    if "aux_logits" in model_info(name).options():
        raise UsageError(
            f"{name} is built without its auxiliary heads by default: add --model-option aux_logits=True "
            "to trace them with --aux"
        )
    raise UsageError(f"{name} has no auxiliary heads for --aux to trace (googlenet and inception-v3 have)")


def _cost(args: argparse.Namespace) -> int:
    from cnnlab.analysis.cost import conv_cost

    print("\n".join(conv_cost(args.in_chs, args.out_chs, args.kernel, args.size, args.reduce).lines()))
    return 0


def names_a_model(spec: str) -> bool:
    """Whether ``spec`` is a registry model's name (``lecture-simple``, ``resnet8-cifar``), not a layer list."""
    from cnnlab.models import model_info

    try:
        model_info(spec)
    except UsageError:
        return False
    return True


def _rf(args: argparse.Namespace) -> int:
    from cnnlab.analysis.receptive import parse_layers, receptive_fields

    spec = args.target
    # a layer list: by its first word, or by what only a layer list takes (--size, commas)
    looks_like_layers = spec.lower().startswith(("conv", "pool")) or args.size is not None or "," in spec
    if looks_like_layers and ".py" not in spec and not names_a_model(spec):
        if args.input is not None:
            raise UsageError("--input is for models; give a layer list the input side with --size N")
        if model_options(args):
            raise UsageError("--model-option is for registry models; a layer list is built as written")
        steps = receptive_fields(parse_layers(spec), args.size)
        print(
            "n_out = floor((n_in + 2p - d(k-1) - 1) / s) + 1;  j_out = j_in * s;  r_out = r_in + d(k-1) * j_in"
        )
        print(f"{'layer':<16} {'output':>7} {'jump':>6} {'RF':>6}")
        print(f"{'input':<16} {args.size if args.size else '-':>7} {1:>6} {1:>6}")
        for step in steps:
            size = step.size if step.size is not None else "-"
            print(f"{step.layer.spec():<16} {size:>7} {step.jump:>6} {step.receptive_field:>6}")
        return 0
    from cnnlab.analysis import summarize
    from cnnlab.analysis.loading import load_model, parse_input_size
    from cnnlab.analysis.report import per_axis

    if args.depth is not None and args.depth < 1:
        raise UsageError(f"--depth must be at least 1, got {args.depth}")
    if args.size is not None:
        raise UsageError("--size is for layer lists; give a model its input with --input CxHxW")
    model, default_input = load_model(spec, model_options(args))
    if args.input is None and default_input is None:
        raise UsageError(f"give the input size of {spec} with --input CxHxW, e.g. --input 3x224x224")
    input_size = parse_input_size(args.input) if args.input is not None else default_input
    summary = summarize(model, input_size)
    print(f"{spec} on {'x'.join(map(str, input_size))}: output size, jump and receptive field per layer")
    print(f"{'layer':<40} {'type':<18} {'output':>18} {'jump':>7} {'RF':>7}")
    for row in summary.at_depth(args.depth):
        if row.kind in ("activation", "norm", "elementwise", "shape") and args.depth is None:
            continue  # these keep the grid: only layers that change it (or end it) are listed
        out = "x".join(map(str, row.output_shape[1:]))
        jump, field = per_axis(row.jump), per_axis(row.receptive_field)
        print(f"{row.name:<40} {row.type:<18} {out:>18} {jump:>7} {field:>7}")
    return 0


def _paper_tables(args: argparse.Namespace) -> int:
    from cnnlab.analysis.papers import paper_tables

    tables = paper_tables(args.names)
    print("\n\n".join(t.render() for t in tables))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``summary``, ``cost``, ``rf`` and ``paper-tables``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = add_command(
        subparsers,
        "summary",
        _summary,
        help="layer-by-layer parameters, MACs, memory and receptive field of a model",
        description="Trace one forward pass (on the meta device: no arithmetic, no memory) and account for "
        "every operation, functional ones included (F.relu, torch.cat, +).",
        epilog=CONVENTIONS,
        formatter_class=fmt,
    )
    p.add_argument("model", help="registry name (see 'cnnlab models') or path/to/file.py:Name")
    p.add_argument("--input", help="input size CxHxW (default: the model's own)")
    p.add_argument(
        "--layers",
        action="store_true",
        help="list the conv and fc layers with their index, as papers count them (train --freeze N counts these)",
    )
    p.add_argument("--depth", type=int, help="group rows to this many name levels (default: every operation)")
    p.add_argument(
        "--format",
        default="table",
        help="table, markdown, csv, json, or paper (conv/linear weights only in K = 1024 and MACs in M, "
        "as GoogLeNet's Table 1) (default: table)",
    )
    p.add_argument("--batch", type=int, default=1, help="batch size traced (default 1)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument(
        "--device",
        choices=("meta", "cpu"),
        default="meta",
        help="meta: shapes only, no memory (default); cpu: builds the model with real weights there and runs "
        "the arithmetic (slow and memory-hungry for ImageNet models)",
    )
    p.add_argument(
        "--aux",
        action="store_true",
        help="trace forward_aux (auxiliary heads included; googlenet and inception-v3 need "
        "--model-option aux_logits=True)",
    )
    p.add_argument(
        "--optimizer-states", type=int, default=1, help="for the training estimate (SGD 1, Adam 2)"
    )
    add_model_option_arg(p)

    kinds = add_command_group(
        subparsers,
        "cost",
        help="the cost arithmetic of a convolution, with and without a 1x1 reduction",
        description="Multiplications of a stride-1 'same' convolution: k^2 x size^2 x c_in x c_out.",
        metavar="KIND",
        dest="kind",
    )
    conv = add_command(kinds, "conv", _cost, help="k x k convolution, optionally after a 1x1 reduction")
    conv.add_argument("--in", dest="in_chs", type=int, required=True, help="input channels")
    conv.add_argument("--out", dest="out_chs", type=int, required=True, help="output channels")
    conv.add_argument("--kernel", type=int, required=True, help="kernel side k")
    conv.add_argument("--size", type=int, required=True, help="feature map side (stride 1, same padding)")
    conv.add_argument("--reduce", type=int, help="channels of a 1x1 reduction before the convolution")

    r = add_command(
        subparsers,
        "rf",
        _rf,
        help="output size, jump and receptive field, layer by layer",
        description="TARGET is a layer list such as 'conv3s2p1,conv3s2p1' (conv|pool, kernel, then optional "
        "s<stride> p<padding> d<dilation>; pool stride defaults to its kernel) or a model (registry name or "
        "path/to/file.py:Name).",
        epilog=CONVENTIONS,
        formatter_class=fmt,
    )
    r.add_argument("target", help="layer list or model")
    r.add_argument("--size", type=int, help="input side for a layer list (prints output sizes)")
    r.add_argument("--input", help="input size CxHxW for a model (default: the model's own)")
    r.add_argument("--depth", type=int, help="group a model's rows to this many name levels")
    add_model_option_arg(r)

    t = add_command(
        subparsers,
        "paper-tables",
        _paper_tables,
        help="the papers' tables reproduced beside our counts",
        description="GoogLeNet Table 1, VGG-16 per layer, ResNet FLOPs, AlexNet neurons, the 1x1 arithmetic "
        "and the receptive-field example, each figure beside the paper's with the difference.",
    )
    t.add_argument("names", nargs="*", help="googlenet, vgg16, resnet, alexnet, 1x1, rf (default: all)")
