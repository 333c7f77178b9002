"""scripts/gpu_check.py on a machine without CUDA: its command line, its plan, and its clear refusal."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    yield importlib.import_module("gpu_check")
    sys.modules.pop("gpu_check", None)


def test_the_plan_lists_every_run_without_a_gpu(gpu_check, capsys):
    assert gpu_check.main(["--plan", "--models", "lecture-simple", "resnet20-cifar"]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if line.startswith("epochs: ")]
    assert len(runs) == 2 * 2 * 2  # models x (fp32, bf16) x channels_last on/off
    assert "epochs: resnet20-cifar, bf16, channels_last off" in runs
    assert any(line.startswith("ddp: ") for line in lines) and any(
        line.startswith("compile: ") for line in lines
    )


def test_no_ddp_and_no_compile_leave_those_out(gpu_check, capsys):
    assert gpu_check.main(["--plan", "--no-ddp", "--no-compile"]) == 0
    out = capsys.readouterr().out
    assert "ddp:" not in out and "compile:" not in out


@pytest.mark.parametrize("argv", [["--models", "lecture-simpel"], ["--epochs", "0"], ["--train-subset", "x"]])
def test_a_wrong_command_line_exits_2_with_one_line(gpu_check, capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_without_cuda_it_refuses_clearly_and_writes_nothing(gpu_check, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this CPU-only machine
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("gpu-check: error: no CUDA GPU is visible")
        and "\n" == err[-1]
        and err.count("\n") == 1
    )
    assert not out.exists()
