"""The ``cnnlab`` command: a thin layer over the library.

Each module of this package adds its subcommands with ``register(subparsers)`` and handles them
with one library call. Errors the user can fix (:class:`cnnlab.errors.CnnlabError`) print one line,
``cnnlab: error: ...``, and exit with the status of the rule in :mod:`cnnlab.errors`: 2 when the
command must change, 1 when it was right but something failed, 130 when interrupted; argparse's own
usage errors exit 2 as well.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cnnlab.cli.common import flag_actions, named_as_flags
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:  # torch-free at import: `cnnlab --help` and `cnnlab models` never load torch
    from cnnlab.train.distributed import DeferredError

# Subcommand modules, in the order `cnnlab --help` lists them.
COMMAND_MODULES = (
    "cnnlab.cli.models",
    "cnnlab.cli.train",
    "cnnlab.cli.data",
    "cnnlab.cli.analysis",
    "cnnlab.cli.experiments",
    "cnnlab.cli.deploy",
    "cnnlab.cli.inspect",
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``cnnlab <cmd>: error: ...`` and exit status 2."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's signature
        # no prefixes of long flags: `--epoch` or `--ep` silently meaning `--epochs` hides typos, and a flag
        # added later would change what an old command line means
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        # the innermost (sub)command parsed sets this last, so it is the one to report arguments it lacks
        self.set_defaults(command_parser=self)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand registered."""
    from cnnlab import __version__

    parser = _Parser(
        prog="cnnlab",
        description="Classic CNNs faithful to their papers: models, analysis, training, experiments.",
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        # every listed module must import: one that fails is a bug to see, not a command to hide
        importlib.import_module(module_name).register(subparsers)
    return parser


def one_line_warnings() -> None:
    """Print cnnlab's own warnings as one line, ``cnnlab: warning: ...``, like its errors (without Python's
    file, line and source); other packages' warnings keep Python's format. Process-wide: for entry points."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    python_format = warnings.showwarning
    if getattr(python_format, "one_line", False):  # installed already (main called again in one process)
        return

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - stdlib's signature
        if os.path.abspath(filename).startswith(package):
            (file or sys.stderr).write(f"cnnlab: warning: {message}\n")
        else:
            python_format(message, category, filename, lineno, file, line)

    show.one_line = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def unrecognized(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> str:
    """argparse's ``unrecognized arguments: ...``, and for a flag that begins one of the command's own (flags
    are never abbreviated), which one it is not short for: ``--form is not short for --format``."""
    flags = [
        flag for action in flag_actions(parser) for flag in action.option_strings if flag.startswith("--")
    ]
    meant = {
        token: [flag for flag in flags if flag.startswith(token)]
        for token in unknown
        if token.startswith("--") and "=" not in token
    }
    hints = [f"{token} is not short for {' or '.join(found)}" for token, found in meant.items() if found]
    said = f"unrecognized arguments: {' '.join(unknown)}"
    return said if not hints else f"{said}; {'; '.join(hints)}: flags are never abbreviated"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnlab`` console script; returns the exit status (a rank of a data-parallel job
    exits with it instead: :func:`cnnlab.train.distributed.leave_process_group`)."""
    one_line_warnings()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command_parser = vars(args).pop("command_parser", parser)
    if unknown:  # named by the command that does not take them: `cnnlab evaluate: error: ...`
        command_parser.error(unrecognized(command_parser, unknown))
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc hands on to its processes
    args.command_parser = command_parser  # the flags it declares (an experiment's resume reads them)
    status, deferred = run_command(args)
    if "cnnlab.train.distributed" in sys.modules:  # leave the process group this entry point joined, and exit
        sys.modules["cnnlab.train.distributed"].leave_process_group(status, deferred)
    return status


def run_command(args: argparse.Namespace) -> tuple[int, DeferredError | None]:
    """Run the parsed command: its exit status, and the error line a rank of a data-parallel job holds
    back until the launcher has had time to stop it (else None). A user's mistake or a failure is
    one line on stderr."""
    try:
        if getattr(args, "joins_process_group", False) and "WORLD_SIZE" in os.environ:
            # A rank of a torchrun (or --nproc) job: process-wide setup belongs here, the entry point.
            from cnnlab.train.distributed import setup_process

            setup_process(getattr(args, "device", None) or "auto", getattr(args, "threads", None))
        return int(args.func(args) or 0), None
    except CnnlabError as err:
        # one write per line: the ranks of a data-parallel job share stderr, and print() writes the
        # newline separately, so two ranks' lines could interleave
        line = f"cnnlab: error: {named_as_flags(str(err), args)}\n"
        if "cnnlab.train.distributed" in sys.modules:
            deferred = sys.modules["cnnlab.train.distributed"].deferred_error(line, err)
            if deferred is not None:  # said later, unless the launcher stops this rank first
                return err.exit_code, deferred
        sys.stderr.write(line)
        return err.exit_code, None
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130, None
    except BrokenPipeError:  # `cnnlab models | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0, None


if __name__ == "__main__":
    sys.exit(main())
