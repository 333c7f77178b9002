"""The lectures' experiments, end to end on a tiny generated dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.errors import UsageError
from cnnlab.experiments.degradation import degradation
from cnnlab.train import TrainConfig


def test_degradation_trains_plain_and_residual_twins_and_writes_figure_and_table(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    cfg = TrainConfig(
        data_dir=str(tiny_dataset_dir), epochs=2, batch_size=100, lr=0.1, threads=1, train_subset=300
    )
    result = degradation([8, 14], cfg, tmp_path / "deg", progress=False)
    assert {(r["kind"], r["depth"]) for r in result.rows()} == {
        ("plain", 8),
        ("plain", 14),
        ("residual", 8),
        ("residual", 14),
    }
    plain8, res8 = result.runs[("plain", 8)], result.runs[("residual", 8)]
    assert plain8.num_params == res8.num_params  # identity shortcuts (option A) add no parameters
    assert result.figure.stat().st_size > 1000
    saved = json.loads((tmp_path / "deg" / "degradation.json").read_text())
    assert saved["verdict"].startswith("plain-14 ends with a")
    assert "| resnet14-cifar |" in result.table.read_text()
    with pytest.raises(UsageError, match="already exists"):
        degradation([8], cfg, tmp_path / "deg", progress=False)


def test_degradation_cli_rejects_impossible_depths(capsys) -> None:
    assert main(["experiment", "degradation", "--depths", "21"]) == 2
    err = capsys.readouterr().err
    assert "6n+2" in err and err.count("\n") == 1
