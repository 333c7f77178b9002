"""`cnnlab compare --seeds N` (mean ± std) and `cnnlab ensemble` (softmax averaging) on tiny generated data."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.errors import UsageError
from cnnlab.train.ensemble import ensemble, parse_weights
from cnnlab.train.evaluation import load_saved_model


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, tiny_dataset_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("seeds")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_NO_VERIFY", "1")
        argv = [
            "compare",
            "lecture-simple",
            "--seeds",
            "2",
            "--out",
            str(out),
            "--data-dir",
            str(tiny_dataset_dir),
        ]
        argv += [
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--threads",
            "1",
            "--max-steps-per-epoch",
            "3",
            "--quiet",
        ]
        assert main(argv) == 0
    return out


def test_compare_seeds_reports_mean_and_std_of_the_runs(two_seeds: Path) -> None:
    saved = json.loads((two_seeds / "comparison.json").read_text())
    tests = [
        json.loads((two_seeds / f"lecture-simple-seed{s}" / "results.json").read_text())["test_acc"]
        for s in (0, 1)
    ]
    (row,) = saved["seed_rows"]
    assert row["runs"] == 2 and row["test_acc_mean"] == statistics.fmean(tests)
    assert row["test_acc_std"] == statistics.stdev(tests)
    assert [r["seed"] for r in saved["rows"]] == [0, 1]
    table = (two_seeds / "comparison.md").read_text()
    assert "± " in table and "| lecture-simple (seed 0) |" in table and "| lecture-simple (seed 1) |" in table


def test_ensemble_averages_softmax_outputs_and_reports_each_member(
    two_seeds: Path, tiny_dataset_dir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    runs = [two_seeds / f"lecture-simple-seed{s}" for s in (0, 1)]
    result = ensemble(runs, parse_weights("1,3", 2))
    assert result.weights == [0.25, 0.75]
    for run, acc in zip(runs, result.member_accuracy):
        assert acc == pytest.approx(json.loads((run / "results.json").read_text())["test_acc"], abs=1e-6)
    # the ensemble's accuracy, recomputed by hand from the two models' softmax outputs
    probs, labels = [], None
    for run in runs:
        saved = load_saved_model(run)
        batches = list(saved.loader(saved.data.test))
        probs.append(torch.cat([torch.softmax(saved.model(x), 1) for x, _ in batches]))
        labels = torch.cat([y for _, y in batches])
    mixed = 0.25 * probs[0] + 0.75 * probs[1]
    assert result.accuracy == pytest.approx(float((mixed.argmax(1) == labels).float().mean()))
    assert main(["ensemble", *map(str, runs), "--weights", "1,1"]) == 0
    assert "ensemble" in capsys.readouterr().out
    assert main(["ensemble", *map(str, runs), "--weights", "1"]) == 2
    with pytest.raises(UsageError, match="at least two runs"):
        ensemble(runs[:1])
    # the comparison's folder stands for its runs
    assert ensemble([two_seeds]).accuracy == ensemble(runs).accuracy
    assert main(["ensemble", str(two_seeds), "--weights", "1,3"]) == 0


def test_ensemble_refuses_a_run_named_twice_and_a_folder_of_runs_beside_runs(
    two_seeds: Path, monkeypatch, capsys
) -> None:
    """The same run twice is not a 2-member ensemble (by any path to it); a folder of runs stands for its
    runs only when given alone."""
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    run = two_seeds / "lecture-simple-seed0"
    assert main(["ensemble", str(run), str(run)]) == 2
    assert f"run {run} is named twice; an ensemble averages different runs" in capsys.readouterr().err
    monkeypatch.chdir(two_seeds)
    assert main(["ensemble", str(run), "./lecture-simple-seed0/"]) == 2
    assert f"run {run} is named twice (again as lecture-simple-seed0)" in capsys.readouterr().err
    assert main(["ensemble", str(two_seeds), str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{two_seeds} is a folder of runs, not a run; give it alone to ensemble all its runs" in err
