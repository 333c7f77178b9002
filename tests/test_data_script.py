"""scripts/get_fashion_mnist.sh: the order of its attempts, with a stand-in for PYTHON."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "get_fashion_mnist.sh"
BASH = shutil.which("bash") or "bash"  # make and the get script need it; a missing bash must fail, not skip


def _fake_python(tmp_path: Path, check_status: int, fetch_status: int) -> Path:
    """An executable that logs its arguments and answers `-m cnnlab data check|fetch` with fixed statuses."""
    fake = tmp_path / "fakepy"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{tmp_path}/calls"\n'
        f'case "$4" in check) exit {check_status};; fetch) exit {fetch_status};; esac\n'
        "exit 3\n"
    )
    fake.chmod(0o755)
    return fake


def _run(tmp_path: Path, fake: Path) -> subprocess.CompletedProcess:
    # A PATH with no apt-get or sudo: step 3 is unavailable, as on a machine without Debian tooling.
    env = {"PATH": str(tmp_path / "empty-bin"), "HOME": str(tmp_path)}
    return subprocess.run([BASH, str(SCRIPT), str(fake)], env=env, capture_output=True, text=True, timeout=30)


def test_present_dataset_needs_nothing(tmp_path):
    result = _run(tmp_path, _fake_python(tmp_path, check_status=0, fetch_status=1))
    assert result.returncode == 0
    assert (tmp_path / "calls").read_text().splitlines() == ["-m cnnlab data check fashion-mnist"]


def test_all_failures_end_with_advice_and_status_1(tmp_path):
    result = _run(tmp_path, _fake_python(tmp_path, check_status=1, fetch_status=1))
    assert result.returncode == 1
    assert "apt-get install dataset-fashion-mnist" in result.stderr and "cnnlab data fetch" in result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["-m cnnlab data check fashion-mnist", "-m cnnlab data fetch fashion-mnist"]
    assert os.access(SCRIPT, os.X_OK)
