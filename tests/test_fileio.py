"""cnnlab.fileio: what its atomic writes leave on disk."""

from __future__ import annotations

import os
import stat
import sys
import warnings
from pathlib import Path

import pytest

from cnnlab.fileio import atomic_file, atomic_write_bytes


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_of_the_umask_not_mkstemps_owner_only(tmp_path: Path, umask: int) -> None:
    """A run's files are renamed from mkstemp's temporary files, which are 0o600: shared runs and served
    reports need the mode any other new file gets (0o644 under the usual umask 022)."""
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        with atomic_file(tmp_path / "b.npy") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for name in ("a.json", "b.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.npy"]


def test_the_cli_prints_cnnlab_warnings_as_one_line(capsys) -> None:
    """cnnlab's own warnings come out as ``cnnlab: warning: ...``, without Python's file, line and source."""
    from cnnlab.cli import one_line_warnings

    with warnings.catch_warnings():  # restores Python's printer when the test ends
        warnings.simplefilter("always")
        # Python's own printer (pytest records warnings in its place while a test runs)
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: (
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        )
        one_line_warnings()
        one_line_warnings()  # a second entry point call in the same process changes nothing
        import cnnlab.data.imagefolder as imagefolder

        warnings.warn_explicit("skipped 1 unreadable image", UserWarning, imagefolder.__file__, 1)
        warnings.warn_explicit("from elsewhere", UserWarning, "/elsewhere/module.py", 7)
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: warning: skipped 1 unreadable image\n")
    assert "/elsewhere/module.py:7: UserWarning: from elsewhere" in err
