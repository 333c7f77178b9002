"""Errors that reach the user as one clear line.

Every error raised for something the user can fix derives from :class:`CnnlabError`.
The CLI prints ``cnnlab: error: <message>`` and exits with :attr:`CnnlabError.exit_code`
(2 for usage errors, 1 for failures); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnlabError(Exception):
    """A failure the user can act on (exit status 1)."""

    exit_code = 1


class UsageError(CnnlabError, ValueError):
    """Bad arguments: an unknown name, an out-of-range number, an impossible input size (exit 2)."""

    exit_code = 2


class DataError(CnnlabError):
    """A dataset is missing, corrupt, truncated or fails its checksum (exit 1)."""


class CheckpointError(CnnlabError):
    """A checkpoint or run directory cannot be used (exit 1)."""


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite; the last good checkpoint is kept (exit 1)."""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> UsageError:
    """Build the error for an unknown ``name`` among ``choices``: close matches first, then all names."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(choices) if len(choices) <= 40 else ", ".join(choices[:40]) + ", ..."
    return UsageError(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {shown}")


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
