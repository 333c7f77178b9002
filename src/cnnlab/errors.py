"""Errors that reach the user as one clear line, and the one exit-status rule.

Every error raised for something the user can act on derives from :class:`CnnlabError`. The CLI
prints ``cnnlab: error: <message>`` and exits with :attr:`CnnlabError.exit_code`; anything else is a
bug and keeps its traceback. The message says what is wrong and what to do.

Exit statuses (one rule for every command):

* **2** - the command line is wrong: the same command can never succeed, the user must change it
  (:class:`UsageError`). An unknown name, option or value; a number out of range; an input size the
  model cannot take; a path given on the command line that does not exist or is not what the command
  needs; a run directory that exists without ``--overwrite``; resuming a run with another model or a
  directory that holds no run. argparse's own errors exit 2 too.
* **1** - the command was right but something failed while doing it (every other
  :class:`CnnlabError`): corrupt, truncated or missing data (:class:`DataError`), a download or a
  disk that fails, a damaged checkpoint (:class:`CheckpointError`), a loss that diverges
  (:class:`TrainingDiverged`), a user's model file whose code raises.
* **130** - interrupted by Ctrl-C (:class:`Interrupted`, or a bare ``KeyboardInterrupt``), as shells
  expect (128 + SIGINT).

When in doubt, ask "would running the same command again, with nothing else changed but the
environment (files, network, disk), succeed?" Yes: 1. No, the command itself must change: 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnlabError(Exception):
    """A failure the user can act on: the command was right, something failed doing it (exit status 1)."""

    exit_code = 1


class UsageError(CnnlabError, ValueError):
    """The command (or call) itself is wrong and must change: an unknown name, an out-of-range number, an
    impossible input size, a path that does not exist, a run directory it may not use (exit 2)."""

    exit_code = 2


class InputSizeError(UsageError):
    """An input of another size than a model's head was sized for (exit 2); the message names the fix."""


class InputTooSmallError(UsageError):
    """An input smaller than the smallest a network runs on (exit 2).

    Carries the input (C, H, W), the network's name, the layer where it failed (or "") and the smallest
    square side that works, so a caller can name the model as the user typed it (:meth:`naming`) and add
    the fix that fits its own options (--pad-to, --input-size).
    """

    def __init__(self, input_shape: tuple[int, int, int], what: str, smallest: int, where: str = "") -> None:
        self.input_shape, self.what, self.smallest, self.where = tuple(input_shape), what, smallest, where
        c, h, w = self.input_shape
        super().__init__(
            f"input {c}x{h}x{w} is too small for {what}:{f'{where};' if where else ''} the smallest input that "
            f"works is {c}x{smallest}x{smallest}"
        )

    def naming(self, model: str) -> InputTooSmallError:
        """The same error for the network called ``model`` (a registered name in place of the one its builder
        gave): ``what`` names a network, or a part of one as "<network>'s <part>", and the part stays."""
        _, possessive, part = self.what.partition("'s ")
        return InputTooSmallError(
            self.input_shape, f"{model}'s {part}" if possessive else model, self.smallest, self.where
        )


class DataError(CnnlabError):
    """A dataset is not there yet, or is corrupt, truncated or fails its checksum; a download failed (exit 1).

    A ``--data-dir`` the user names that does not exist is a :class:`UsageError`.
    """


class CheckpointError(CnnlabError):
    """A checkpoint is damaged, truncated or unreadable, or cannot be written (exit 1).

    A checkpoint path that does not exist, a directory with no run to resume, or resuming a run with
    another model is a :class:`UsageError`: the command must change.
    """


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite; the last good checkpoint is kept (exit 1)."""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> UsageError:
    """Build the error for an unknown ``name`` among ``choices``: close matches first, then all names."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(choices) if len(choices) <= 40 else ", ".join(choices[:40]) + ", ..."
    plural = f"{kind}es" if kind.endswith("ss") else kind if kind.endswith("s") else f"{kind}s"
    return UsageError(f"unknown {kind} {name!r}.{hint} Valid {plural}: {shown}")


def few(names: Iterable[str], limit: int = 3) -> str:
    """The first ``limit`` of ``names`` for a one-line message, ``...`` marking the rest: what a folder holds."""
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise :class:`UsageError` unless ``value`` > 0 (or >= 0 with ``allow_zero``)."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        need = "at least 0" if allow_zero else "greater than 0"
        raise UsageError(f"{name} must be {need}, got {value}")


class Interrupted(CnnlabError):
    """A run stopped by Ctrl-C after saving its checkpoint (exit 130, as shells expect)."""

    exit_code = 130
