"""What several commands share: how a (sub)command is declared, ``--model-option KEY=VALUE`` parsed in
one place, and how an experiment's outcome is printed.

Torch-free, so that ``cnnlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from collections.abc import Callable
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def add_command(
    subparsers: argparse._SubParsersAction, name: str, func: Handler, help: str, **kwargs: object
) -> argparse.ArgumentParser:
    """Declare subcommand ``name``, handled by ``func`` (its arguments are added to the parser returned);
    ``kwargs`` go to ``add_parser`` (description, epilog, formatter_class)."""
    parser = subparsers.add_parser(name, help=help, **kwargs)
    parser.set_defaults(func=func)
    return parser


def add_command_group(
    subparsers: argparse._SubParsersAction, name: str, help: str, description: str, metavar: str, dest: str
) -> argparse._SubParsersAction:
    """Declare ``name`` as a command with required subcommands (``cnnlab data list``); returns the
    subparsers to declare them in, their name in ``args.<dest>``."""
    parser = subparsers.add_parser(name, help=help, description=description)
    return parser.add_subparsers(dest=dest, metavar=metavar, required=True)


MODEL_OPTION_HELP = "model builder option, e.g. stride_in=3x3 or img_size=32 (repeatable)"


#: the words a command line may spell a switch's value with (Python's True and False read as literals)
SWITCH_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def parse_model_option(text: str) -> tuple[str, object]:
    """``"img_size=32" -> ("img_size", 32)``: the value read as a Python literal where it is one
    (ints, floats, True, tuples), a switch word as a bool (``false``, ``no``, ``off``: :data:`SWITCH_WORDS`),
    else kept as text (``stride_in=3x3``).

    Used as an argparse ``type``: a pair without ``=`` or without a key is argparse's one-line error, exit 2.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"model options are KEY=VALUE, got {text!r}")
    if (
        value.strip().lower() in SWITCH_WORDS
    ):  # two_tower=false: the switch off, not the (truthy) text "false"
        return key.strip(), SWITCH_WORDS[value.strip().lower()]
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value  # a plain string such as stride_in=3x3


def class_list(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``: class indices (argparse type of ``--classes``)."""
    parts = [v.strip() for v in text.split(",")] if "," in text else text.split()
    try:
        if not parts or any(not v for v in parts):  # "" or "0,,1": a class left out by mistake?
            raise ValueError
        return tuple(int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected class indices such as '0,1,2,3,4', got {text!r}"
        ) from None


def add_model_option_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--model-option KEY=VALUE`` (repeatable) into ``args.model_options``, a list of (key, value) pairs.

    ``--opt`` is the same flag under its old name (``cnnlab summary`` had it), kept so that no command
    line breaks, and left out of ``--help``.
    """
    common = dict(dest="model_options", type=parse_model_option, action="append", metavar="KEY=VALUE")
    parser.add_argument("--model-option", help=MODEL_OPTION_HELP, **common)
    parser.add_argument("--opt", help=argparse.SUPPRESS, **common)


def add_weights_from_arg(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, dest: str = "weights_from"
) -> None:
    """``--weights-from SOURCE``: the key map a ``--weights`` file is read through (one declaration for
    train, evaluate, predict and export; unset means cnnlab's own names)."""
    parser.add_argument(
        "--weights-from",
        dest=dest,
        metavar="SOURCE",
        help="key map of --weights: cnnlab (default), torchvision, timm, or SOURCE:NAME (e.g. torchvision:googlenet: "
        "the model built with the options that compute that reference's function; docs/references.md lists them, "
        "as does cnnlab.list_references())",
    )


def model_options(args: argparse.Namespace) -> dict[str, object]:
    """The ``--model-option`` pairs given, as keyword options (a repeated key: the last one wins)."""
    return dict(getattr(args, "model_options", None) or [])


def report_experiment(markdown: str, files: dict[str, Path], status: str) -> int:
    """Print an experiment's table and the files it wrote; the exit status: 0, or 130 after an interruption
    (the partial table is printed and saved, and the line after it says how to continue)."""
    from cnnlab.experiments.runner import RESUME_HINT

    width = max(map(len, files)) + 1
    print(f"\n{markdown}\n")
    for what, path in files.items():
        print(f"{what + ':':<{width}} {path}")
    if status != "completed":
        print(RESUME_HINT)
        return 130
    return 0


#: The flags an experiment (``compare``, ``experiment NAME``) started with, written beside its table: its
#: ``--resume`` takes each flag the command leaves out from there, so "the same command" may be just --resume.
FLAGS_FILE = "flags.json"
#: flags that say how to run this command, not what the experiment is
UNRECORDED_FLAGS = frozenset({"help", "out", "resume", "overwrite", "quiet", "report"})


def flag_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's flags (its arguments with option strings, ``--epochs``), not its positionals."""
    return [a for a in parser._actions if a.option_strings]  # argparse keeps its arguments in this list only


# A snake_case name standing alone: not part of a path or of a longer name.
SNAKE_NAME = re.compile(r"(?<![\w/.-])[a-z]+(?:_[a-z0-9]+)+(?![\w/])")


def named_as_flags(message: str, args: argparse.Namespace) -> str:
    """An error message in the command's terms: each snake_case setting the library names as Python
    callers write it (``pad_to``) becomes the command's flag for it (``--pad-to``), unless the message
    names that flag already (it then speaks to both: ``build it with in_chans=3 (--in-chans 3)``)."""
    parser = getattr(args, "command_parser", None)
    if parser is None:
        return message
    flags = {a.dest: a.option_strings[0] for a in flag_actions(parser) if a.option_strings[0] not in message}
    return SNAKE_NAME.sub(lambda m: flags.get(m.group(), m.group()), message)


def experiment_flags(args: argparse.Namespace) -> dict[str, object]:
    """The values of the command's own flags (``args.command_parser``'s), but :data:`UNRECORDED_FLAGS`."""
    return {
        a.dest: getattr(args, a.dest)
        for a in flag_actions(args.command_parser)
        if a.dest not in UNRECORDED_FLAGS and hasattr(args, a.dest)
    }


def save_experiment_flags(args: argparse.Namespace, out: str | Path) -> None:
    """Write :data:`FLAGS_FILE` in the experiment folder ``out`` (after the experiment ran, completed or not);
    in a data-parallel job rank 0 alone writes."""
    from cnnlab.cli.train import on_rank_zero
    from cnnlab.fileio import atomic_write_text

    if on_rank_zero() and Path(out).is_dir():
        atomic_write_text(
            Path(out) / FLAGS_FILE, json.dumps({"flags": experiment_flags(args)}, indent=2) + "\n"
        )


def resume_with_saved_flags(args: argparse.Namespace, out: str | Path) -> None:
    """With ``--resume``, each flag of the command not on its command line (``args.argv``) takes the value the
    experiment in ``out`` was given (:data:`FLAGS_FILE`; one without that file needs the whole command again).
    A flag given anew keeps its value, and the experiment refuses it where it changes a member's recipe."""
    from cnnlab.train.rundir import read_run_json

    path = Path(out) / FLAGS_FILE
    if not getattr(args, "resume", False) or not path.is_file():
        return
    saved = read_run_json(path, "delete it and give the whole command again with --resume").get("flags", {})
    words = getattr(args, "argv", [])
    given = {
        a.dest
        for a in flag_actions(args.command_parser)
        if any(w == flag or w.startswith(flag + "=") for w in words for flag in a.option_strings)
    }
    for dest, value in saved.items() if isinstance(saved, dict) else ():
        if dest not in UNRECORDED_FLAGS and dest not in given and hasattr(args, dest):
            setattr(args, dest, value)
